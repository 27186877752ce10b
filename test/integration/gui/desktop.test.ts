// The gui tool against the real thing: sandboxd's /v1/gui in a real bwrap sandbox on the built rootfs, with Xvfb,
// openbox, xterm, xdotool and scrot. The desktop starts on first use; screenshots are PNGs of the screen; windows
// have absolute geometry that matches the pixels; typing into an xterm runs a command; the shell's programs share the
// display; bad input gets errors that say what to fix, and the desktop keeps working after them.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { SandboxdError } from '../../../src/runtimes/sandboxd-client.ts';
import type { GuiRequest, GuiResponse, GuiWindow } from '../../../src/sandboxd/gui/gui-request.ts';
import { decodePng } from '../../helpers/png.ts';
import { useSandbox, waitUntil } from '../../helpers/sandbox.ts';

describe('the gui tool in a real sandbox', () => {
  const fixture = useSandbox();
  const gui = (request: GuiRequest): Promise<GuiResponse> => fixture().sandbox.client.call('gui', request);
  const failure = async (request: unknown): Promise<SandboxdError> => {
    const error = await fixture().sandbox.client.call('gui', request as GuiRequest).then(
      () => undefined,
      (caught: unknown) => caught,
    );
    if (!(error instanceof SandboxdError)) throw new Error(`expected ${JSON.stringify(request)} to fail, got ${JSON.stringify(error)}`);
    return error;
  };
  const timings: Record<string, number> = {};

  it('starts the desktop on the first gui call only, and takes a PNG of the whole screen', async () => {
    // A sandbox that has not used the GUI runs none of it.
    const before = await fixture().sh('ps -eo comm= | sort -u');
    expect(before.output).not.toMatch(/Xvfb|openbox|x11vnc|websockify/);
    let started = performance.now();
    const first = await gui({ action: 'screenshot' });
    timings.desktop_cold_start_to_first_screenshot_ms = Math.round(performance.now() - started);
    expect(first.screen).toEqual({ width: 1280, height: 800 });
    expect(first.screenshot).toMatchObject({ media_type: 'image/png', width: 1280, height: 800 });
    const png = decodePng(Buffer.from(first.screenshot!.data, 'base64'));
    expect([png.width, png.height]).toEqual([1280, 800]);
    expect(first.output).toMatch(/The screen is 1280x800 pixels/);
    expect(first.output).toMatch(/No windows are open/);
    const running = await fixture().sh('ps -eo comm= | sort -u');
    expect(running.output).toMatch(/Xvfb/);
    expect(running.output).toMatch(/openbox/);
    // People's viewer is not started for the agent.
    expect(running.output).not.toMatch(/x11vnc|websockify/);
    started = performance.now();
    await gui({ action: 'screenshot' });
    timings.screenshot_ms = Math.round(performance.now() - started);
  });

  let xterm: GuiWindow | undefined;

  it('launches xterm and lists it with absolute geometry that matches the screenshot', async () => {
    const launched = await gui({ action: 'launch', command: 'xterm -geometry 80x24+200+150' });
    expect(launched.output).toMatch(/^Started "xterm -geometry 80x24\+200\+150" \(pid \d+\) in \/workspace; its output goes to \/tmp\/workcell-desktop\/launch-\d+-xterm\.log\.\nNew window:\n- "xterm" \(XTerm, pid \d+\)/);
    expect(launched.windows).toHaveLength(1);
    const { windows } = await gui({ action: 'windows' });
    expect(windows).toHaveLength(1);
    xterm = windows![0]!;
    expect(xterm).toMatchObject({ title: 'xterm', class: 'XTerm', active: true, minimized: false, id: expect.stringMatching(/^0x[0-9a-f]+$/) });
    // 80x24 characters of the fixed font, placed with its frame at +200+150: the content sits below the title bar.
    expect(xterm.frame.x).toBe(200);
    expect(xterm.frame.y).toBe(150);
    expect(xterm.width).toBeGreaterThan(400);
    expect(xterm.height).toBeGreaterThan(250);
    expect(xterm.y - xterm.frame.y).toBeGreaterThanOrEqual(15); // the title bar
    expect(xterm.frame.width).toBeGreaterThanOrEqual(xterm.width);
    // The pixels agree: xterm's content is white, its title bar neither white nor the black root window, and just
    // outside the frame is the root window.
    const shot = decodePng(Buffer.from((await gui({ action: 'screenshot' })).screenshot!.data, 'base64'));
    const white = [255, 255, 255];
    const black = [0, 0, 0];
    expect(shot.pixel(xterm.x + xterm.width - 5, xterm.y + xterm.height - 5)).toEqual(white);
    expect(shot.pixel(xterm.x + 2, xterm.y + Math.floor(xterm.height / 2))).toEqual(white);
    const titleBar = shot.pixel(xterm.x + Math.floor(xterm.width / 2) - 60, xterm.frame.y + 4);
    expect(titleBar).not.toEqual(white);
    expect(titleBar).not.toEqual(black);
    expect(shot.pixel(xterm.frame.x - 1, xterm.y + 10)).toEqual(black);
    expect(shot.pixel(xterm.x + 10, xterm.frame.y - 1)).toEqual(black);
    expect(shot.pixel(xterm.frame.x + xterm.frame.width, xterm.y + 10)).toEqual(black);
    // Not a blank screen: black, white and the title bar's colours at least.
    expect(shot.histogram().size).toBeGreaterThan(3);
  });

  it('types a command into the xterm and presses Return: the command runs', async () => {
    let started = performance.now();
    const typed = await gui({ action: 'type', text: 'echo hi > /workspace/from-gui.txt' });
    timings.type_33_chars_with_screenshot_ms = Math.round(performance.now() - started);
    expect(typed.output).toBe('Typed 33 characters. The text went to the active window, "xterm".');
    expect(typed.screenshot?.width).toBe(1280);
    started = performance.now();
    const pressed = await gui({ action: 'key', keys: 'Return', screenshot: false });
    timings.key_without_screenshot_ms = Math.round(performance.now() - started);
    expect(pressed.output).toBe('Pressed Return. The keys went to the active window, "xterm".');
    expect(pressed.screenshot).toBeUndefined();
    const file = join(fixture().workspace, 'from-gui.txt');
    await waitUntil(async () => existsSync(file) && readFileSync(file, 'utf8') === 'hi\n', undefined, 'from-gui.txt to hold "hi"');
    started = performance.now();
    await gui({ action: 'type', text: 'x', screenshot: false });
    timings.type_1_char_without_screenshot_ms = Math.round(performance.now() - started);
    await gui({ action: 'key', keys: 'BackSpace', screenshot: false });
  });

  it('clicks, drags, scrolls and runs xdotool scripts', async () => {
    const { x, y, width, height } = xterm!;
    const clicked = await gui({ action: 'click', x: x + 20, y: y + 20 });
    expect(clicked.output).toBe(`Clicked the left button at (${x + 20}, ${y + 20}). The active window is now "xterm".`);
    expect(clicked.screenshot).toBeDefined();
    expect((await gui({ action: 'double_click', x: x + 30, y: y + 30, screenshot: false })).output).toMatch(/^Double-clicked the left button/);
    expect((await gui({ action: 'move', x: 5, y: 6 })).screenshot).toBeUndefined();
    expect((await gui({ action: 'drag', x: x + 10, y: y + 10, to_x: x + width - 10, to_y: y + height - 10, screenshot: false })).output).toMatch(/^Dragged with the left button held/);
    expect((await gui({ action: 'scroll', x: x + 10, y: y + 10, direction: 'up', amount: 2, screenshot: false })).output).toBe(`Scrolled up by 2 steps at (${x + 10}, ${y + 10}).`);
    const script = await gui({ action: 'script', script: `# a comment\nmousemove ${x + 40} ${y + 50}\ngetmouselocation\nsearch --name "^xterm$" getwindowname %1`, screenshot: false });
    expect(script.output).toMatch(
      new RegExp(
        [
          '^Ran 3 xdotool commands:',
          `line 2 \\(mousemove ${x + 40} ${y + 50}\\): ok`,
          `line 3 \\(getmouselocation\\): ok, printed: x:${x + 40} y:${y + 50} screen:0 window:\\d+`,
          'line 4 \\(search --name "\\^xterm\\$" getwindowname %1\\): ok, printed: xterm$',
        ].join('\n'),
      ),
    );
    const failed = await failure({ action: 'script', script: 'mousemove 1 1\nsearch --name "no such window here"' });
    expect(failed.code).toBe('gui_failed');
    expect(failed.message).toMatch(/^line 2 \(search --name "no such window here"\) failed: xdotool search failed \(exit code 1\)/);
    expect(failed.message).toMatch(/the lines before it ran:\nline 1 \(mousemove 1 1\): ok$/);
  });

  it('shares the display with the shell: DISPLAY is set, and a program started there shows up', async () => {
    const { sh } = fixture();
    const display = await sh('echo "$DISPLAY"; xdotool getdisplaygeometry');
    expect(display.output.trim().split('\n')).toEqual([':1', '1280 800']);
    await sh('xterm -title from-the-shell >/dev/null 2>&1 &');
    let windows: GuiWindow[] = [];
    await waitUntil(async () => {
      windows = (await gui({ action: 'windows' })).windows ?? [];
      return windows.some((window) => window.title === 'from-the-shell');
    }, undefined, 'the xterm started from the shell to appear');
    expect(windows.map((window) => window.title).sort()).toEqual(['from-the-shell', 'xterm']);
  });

  it('refuses bad input with errors that say what to fix, and keeps working', async () => {
    const cases: Array<[unknown, RegExp]> = [
      [{ action: 'zoom' }, /action: Invalid option: expected one of "screenshot"\|"windows"\|"launch"\|"click"/],
      [{}, /action: /],
      [{ action: 'click', x: 10 }, /y: click needs y: click \{x, y, button\?, screenshot\?\}/],
      [{ action: 'type', text: 'a', x: 1 }, /x: type does not take x: type \{text, screenshot\?\}/],
      [{ action: 'click', x: 1280, y: 10 }, /^x 1280 is off the screen: the screen is 1280x800 pixels, so x goes from 0 to 1279 and y from 0 to 799$/],
      [{ action: 'drag', x: 1, y: 1, to_x: 5, to_y: 9000 }, /^to_y 9000 is off the screen/],
      [{ action: 'click', x: -3, y: 10 }, /x: coordinates are screen pixels counted from 0 at the left edge/],
      [{ action: 'script', script: 'exec sh -c "rm -rf /workspace"' }, /script: line 1: the xdotool command "exec" is not allowed in scripts/],
      [{ action: 'script', script: 'key a exec touch /workspace/pwned' }, /xdotool would chain it after key/],
      [{ action: 'script', script: 'mousemove 1 1 && touch /workspace/pwned' }, /"&" outside quotes: a script is not a shell/],
      [{ action: 'script', script: 'type $(touch /workspace/pwned)' }, /"\$" outside quotes/],
      [{ action: 'launch', command: '' }, /command: launch needs a command to run/],
      [{ action: 'key', keys: 'ctrl+s; reboot' }, /"ctrl\+s;" is not a key in xdotool syntax/],
      [{ action: 'key', keys: 'NoSuchKeyName' }, /unknown key name "NoSuchKeyName": use X keysym names/],
    ];
    for (const [request, message] of cases) {
      const error = await failure(request);
      expect(error.code, JSON.stringify(request)).toBe('invalid_request');
      expect(error.message, JSON.stringify(request)).toMatch(message);
    }
    expect(existsSync(join(fixture().workspace, 'pwned'))).toBe(false);
    const exited = await failure({ action: 'launch', command: 'echo "no display for me" >&2; exit 3' });
    expect(exited.code).toBe('gui_failed');
    expect(exited.message).toMatch(/It exited with code 3 without opening a window\. Its output ends:\nno display for me$/);
    expect((await gui({ action: 'screenshot' })).screenshot?.width).toBe(1280);
  });

  it('starts the desktop again when its X server was killed', async () => {
    const { sh } = fixture();
    const killed = await sh('kill -9 $(pgrep -x Xvfb)');
    expect(killed.exit_code, killed.output).toBe(0);
    const again = await gui({ action: 'screenshot' });
    expect(again.screenshot?.width).toBe(1280);
    expect(again.output).toMatch(/No windows are open/);
    console.info(`gui timings: ${JSON.stringify(timings)}`);
  });
});
