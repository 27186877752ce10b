// The `gui` tool's backend: drives the sandbox's X desktop (desktop.ts) with xdotool, lists its windows and takes
// screenshots with scrot, each a process run without a shell. Calls run one at a time, in order. Every call starts
// the desktop if it is not running. Input actions (click, type, key, ...) return a screenshot taken once the screen
// has stopped changing (two captures in a row are identical), so the model sees the result of what it did.
//
// Window geometry is absolute and correct under openbox: `xdotool getwindowgeometry` reports a reparented window's
// position off by the title bar, so positions come from xwininfo's "Absolute upper-left" (the window's content) and
// the frame from _NET_FRAME_EXTENTS (border and title bar around it).
//
// Errors are SandboxdToolErrors: invalid_request for what the caller can fix (off-screen coordinates, unknown keys,
// a bad script), gui_failed for what went wrong on the desktop (a command that failed, a desktop that cannot start).
import { readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { SandboxdToolError } from '../errors.ts';
import type { Desktop } from './desktop.ts';
import { logTail } from './desktop.ts';
import { launchWindowWaitMs, maxKeys, scriptTimeoutMs, type GuiRequest, type GuiResponse, type GuiScreenshot, type GuiWindow } from './gui-request.ts';
import { parseScript, ScriptError, xdotoolCommands } from './xdotool-script.ts';

const buttonNumbers = { left: '1', middle: '2', right: '3' } as const;
const scrollButtons = { up: '4', down: '5', left: '6', right: '7' } as const;
/** Each X client call (xprop, xwininfo, one xdotool input command) should take milliseconds; this is for a hung one. */
const clientTimeoutMs = 10_000;
/** How long launch waits, once the new window is there, for the window manager to focus it. */
const focusWaitMs = 1000;
/** After an input action, screenshots are compared until the screen is still, for at most this long. */
const settleMaxMs = 2000;
const settleIntervalMs = 100;
/** Typing delay between keystrokes (xdotool's default). */
const typeDelayMs = 12;
/** A key name, or several joined with +, as xdotool reads them: ctrl+s, Return, shift+Tab, KP_Enter, F5. */
const keySyntax = /^[A-Za-z0-9_]+(?:\+[A-Za-z0-9_]+)*$/;

export class GuiTool {
  readonly #desktop: Desktop;
  #queue: Promise<unknown> = Promise.resolve();
  #shots = 0;

  constructor(desktop: Desktop) {
    this.#desktop = desktop;
  }

  /** Runs one gui call; calls run one at a time in the order they came. */
  run(request: GuiRequest, signal?: AbortSignal): Promise<GuiResponse> {
    const result = this.#queue.then(() => this.#run(request, signal));
    this.#queue = result.catch(() => undefined);
    return result;
  }

  async #run(request: GuiRequest, signal: AbortSignal | undefined): Promise<GuiResponse> {
    const started = performance.now();
    signal?.throwIfAborted();
    this.#checkCoordinates(request);
    if (request.action === 'key') this.#checkKeys(request.keys ?? '');
    const script = request.action === 'script' ? parseScriptOrThrow(request.script ?? '') : undefined;
    await this.#desktop.ensureDisplay();
    const screen = { width: this.#desktop.width, height: this.#desktop.height };
    const done = async (output: string, options: { screenshot: boolean; windows?: GuiWindow[] }): Promise<GuiResponse> => {
      const screenshot = options.screenshot ? await this.#settledScreenshot(signal) : undefined;
      return {
        output,
        ...(screenshot === undefined ? {} : { screenshot }),
        ...(options.windows === undefined ? {} : { windows: options.windows }),
        screen,
        duration_ms: Math.round(performance.now() - started),
      };
    };
    const wantScreenshot = request.screenshot ?? true;
    const b = buttonNumbers[request.button ?? 'left'];
    const at = `(${request.x}, ${request.y})`;
    switch (request.action) {
      case 'screenshot': {
        const windows = await this.windows(signal);
        const screenshot = await this.screenshot(signal);
        return { output: `${this.#screenText()}\n${describeWindows(windows)}`, screenshot, windows, screen, duration_ms: Math.round(performance.now() - started) };
      }
      case 'windows': {
        const windows = await this.windows(signal);
        return done(`${describeWindows(windows)}\n${this.#screenText()}`, { screenshot: false, windows });
      }
      case 'click':
        await this.#xdotool(['mousemove', String(request.x), String(request.y), 'click', b], signal);
        return done(`Clicked the ${request.button ?? 'left'} button at ${at}.${await this.#activeWindowText(signal, 'click')}`, { screenshot: wantScreenshot });
      case 'double_click':
        await this.#xdotool(['mousemove', String(request.x), String(request.y), 'click', '--repeat', '2', '--delay', '80', b], signal);
        return done(`Double-clicked the ${request.button ?? 'left'} button at ${at}.${await this.#activeWindowText(signal, 'click')}`, { screenshot: wantScreenshot });
      case 'move':
        await this.#xdotool(['mousemove', String(request.x), String(request.y)], signal);
        return done(`Moved the mouse pointer to ${at}.`, { screenshot: request.screenshot ?? false });
      case 'drag': {
        const midX = String(Math.round((request.x! + request.to_x!) / 2));
        const midY = String(Math.round((request.y! + request.to_y!) / 2));
        // Through a midpoint, with pauses: some programs start a drag only after seeing motion with the button down.
        await this.#xdotool(
          ['mousemove', String(request.x), String(request.y), 'mousedown', b, 'sleep', '0.05', 'mousemove', midX, midY, 'sleep', '0.05', 'mousemove', String(request.to_x), String(request.to_y), 'sleep', '0.05', 'mouseup', b],
          signal,
        );
        return done(`Dragged with the ${request.button ?? 'left'} button held from ${at} to (${request.to_x}, ${request.to_y}).`, { screenshot: wantScreenshot });
      }
      case 'scroll': {
        const amount = request.amount ?? 3;
        await this.#xdotool(['mousemove', String(request.x), String(request.y), 'click', '--repeat', String(amount), '--delay', '30', scrollButtons[request.direction!]], signal);
        return done(`Scrolled ${request.direction} by ${amount} step${amount === 1 ? '' : 's'} at ${at}.`, { screenshot: wantScreenshot });
      }
      case 'type': {
        const text = request.text!;
        await this.#xdotool(['type', '--delay', String(typeDelayMs), '--', text], signal, clientTimeoutMs + text.length * (typeDelayMs + 20));
        return done(`Typed ${text.length} character${text.length === 1 ? '' : 's'}.${await this.#activeWindowText(signal, 'text')}`, { screenshot: wantScreenshot });
      }
      case 'key': {
        const keys = request.keys!.trim().split(/\s+/);
        await this.#xdotool(['key', '--clearmodifiers', '--', ...keys], signal);
        return done(`Pressed ${keys.join(', then ')}.${await this.#activeWindowText(signal, 'keys')}`, { screenshot: wantScreenshot });
      }
      case 'launch':
        return this.#launch(request.command!, wantScreenshot, signal, started);
      case 'script':
        return done(await this.#runScript(script!, signal), { screenshot: wantScreenshot });
    }
  }

  #screenText(): string {
    const { width, height } = this.#desktop;
    const screen = `The screen is ${width}x${height} pixels: x from 0 (left) to ${width - 1}, y from 0 (top) to ${height - 1}.`;
    return this.#desktop.windowManager ? screen : `${screen} No window manager runs in this sandbox: windows have no title bars or borders and open where they ask to.`;
  }

  #checkCoordinates(request: GuiRequest): void {
    const { width, height } = this.#desktop;
    for (const [field, limit] of [['x', width], ['y', height], ['to_x', width], ['to_y', height]] as const) {
      const value = request[field];
      if (value !== undefined && value >= limit) {
        throw new SandboxdToolError(
          'invalid_request',
          `${field} ${value} is off the screen: the screen is ${width}x${height} pixels, so x goes from 0 to ${width - 1} and y from 0 to ${height - 1}`,
        );
      }
    }
  }

  #checkKeys(keys: string): void {
    const list = keys.trim().split(/\s+/).filter((key) => key !== '');
    if (list.length === 0) throw new SandboxdToolError('invalid_request', 'keys is empty: give xdotool key names, e.g. "Return" or "ctrl+s"');
    if (list.length > maxKeys) throw new SandboxdToolError('invalid_request', `keys has ${list.length} keys; at most ${maxKeys} per call`);
    for (const key of list) {
      if (!keySyntax.test(key) || xdotoolCommands.has(key)) {
        throw new SandboxdToolError(
          'invalid_request',
          `${JSON.stringify(key)} is not a key in xdotool syntax: use key names (Return, Tab, Escape, BackSpace, Delete, Up, Page_Down, F5, a, 1, space, slash) joined with + for combinations (ctrl+s, ctrl+shift+t, alt+F4), separated by spaces for a sequence ("ctrl+a Delete"); to type text use the type action`,
        );
      }
    }
  }

  /** Runs xdotool; a failure or an unknown key name is an error that says what went wrong. */
  async #xdotool(args: string[], signal: AbortSignal | undefined, timeoutMs = clientTimeoutMs): Promise<string> {
    const result = await this.#desktop.run('xdotool', args, { timeoutMs, signal });
    // xdotool reports an unknown key name (once on press, once on release) and carries on: make it an error.
    const unknownKeys = [...new Set([...result.stderr.matchAll(/No such key name '([^']*)'/g)].map((match) => match[1]))];
    if (unknownKeys.length > 0) {
      throw new SandboxdToolError('invalid_request', `unknown key name${unknownKeys.length > 1 ? 's' : ''} ${unknownKeys.map((key) => JSON.stringify(key)).join(', ')}: use X keysym names such as Return, Escape, Tab, BackSpace, ctrl+c, alt+F4, Page_Down`);
    }
    if (result.timedOut) throw new SandboxdToolError('gui_failed', `xdotool ${args[0]} did not finish within ${Math.round(timeoutMs / 1000)} s`);
    if (result.code !== 0) {
      const stack = /no windows in the stack/i.test(result.stderr) ? ' (each script line is its own xdotool command: use a search result on the same line, e.g. search --name Editor windowactivate %1)' : '';
      throw new SandboxdToolError('gui_failed', `xdotool ${args[0]} failed (exit code ${result.code}): ${result.stderr.trim() || 'no message'}${stack}`);
    }
    return result.stdout.toString();
  }

  /** A PNG of the whole screen. scrot writes a file (it cannot write to a socket, which is what a child's stdout is here). */
  async screenshot(signal?: AbortSignal): Promise<GuiScreenshot> {
    const path = join(this.#desktop.stateDir, `screenshot-${process.pid}-${++this.#shots}.png`);
    try {
      const result = await this.#desktop.run('scrot', ['--overwrite', '--silent', path], { timeoutMs: clientTimeoutMs, signal });
      const png = result.code === 0 ? await readFile(path).catch(() => Buffer.alloc(0)) : Buffer.alloc(0);
      const size = pngSize(png);
      if (size === undefined) {
        throw new SandboxdToolError('gui_failed', `the screenshot failed (scrot exit code ${result.code}${result.timedOut ? ', timed out' : ''}): ${result.stderr.trim() || 'it wrote no PNG'}`);
      }
      return { media_type: 'image/png', data: png.toString('base64'), width: size.width, height: size.height };
    } finally {
      await rm(path, { force: true });
    }
  }

  /** A screenshot once the screen has stopped changing (two captures in a row identical), or after settleMaxMs. */
  async #settledScreenshot(signal: AbortSignal | undefined): Promise<GuiScreenshot> {
    const deadline = performance.now() + settleMaxMs;
    await pause(settleIntervalMs / 2, signal);
    let previous = await this.screenshot(signal);
    while (performance.now() < deadline) {
      await pause(settleIntervalMs, signal);
      const next = await this.screenshot(signal);
      if (next.data === previous.data) return next;
      previous = next;
    }
    return previous;
  }

  /** The managed (top-level) windows, topmost first, with absolute geometry. */
  async windows(signal?: AbortSignal): Promise<GuiWindow[]> {
    const root = await this.#desktop.run('xprop', ['-root', '-notype', '_NET_CLIENT_LIST_STACKING', '_NET_ACTIVE_WINDOW'], { timeoutMs: clientTimeoutMs, signal });
    const text = root.stdout.toString();
    const ids = windowIds(/^_NET_CLIENT_LIST_STACKING:.*$/m.exec(text)?.[0] ?? '');
    const active = windowIds(/^_NET_ACTIVE_WINDOW:.*$/m.exec(text)?.[0] ?? '')[0];
    const windows = await Promise.all(ids.map((id) => this.#window(id, id === active, signal)));
    // _NET_CLIENT_LIST_STACKING is bottom to top.
    return windows.filter((window): window is GuiWindow => window !== undefined).reverse();
  }

  async #window(id: string, active: boolean, signal: AbortSignal | undefined): Promise<GuiWindow | undefined> {
    const run = (file: string, args: string[]) => this.#desktop.run(file, args, { timeoutMs: clientTimeoutMs, signal });
    const [info, properties, name] = await Promise.all([
      run('xwininfo', ['-id', id]),
      run('xprop', ['-id', id, '-notype', '_NET_FRAME_EXTENTS', '_NET_WM_PID', 'WM_CLASS', '_NET_WM_STATE']),
      run('xdotool', ['getwindowname', String(Number.parseInt(id, 16))]),
    ]);
    // The window may have closed between the list and these calls.
    if (info.code !== 0) return undefined;
    const wininfo = info.stdout.toString();
    const field = (label: string) => Number(new RegExp(`^\\s*${label}:\\s*(-?\\d+)`, 'm').exec(wininfo)?.[1]);
    const x = field('Absolute upper-left X');
    const y = field('Absolute upper-left Y');
    const width = field('Width');
    const height = field('Height');
    if (![x, y, width, height].every(Number.isFinite)) return undefined;
    const props = properties.stdout.toString();
    const [left = 0, right = 0, top = 0, bottom = 0] = (/^_NET_FRAME_EXTENTS = (.*)$/m.exec(props)?.[1] ?? '').split(',').map((part) => Number(part.trim()) || 0);
    const pid = Number(/^_NET_WM_PID = (\d+)/m.exec(props)?.[1]);
    const windowClass = /^WM_CLASS = "(?:[^"]*)", "([^"]*)"/m.exec(props)?.[1];
    const minimized = /_NET_WM_STATE_HIDDEN/.test(/^_NET_WM_STATE = (.*)$/m.exec(props)?.[1] ?? '') || /Map State: IsUnMapped/.test(wininfo);
    const title = name.code === 0 ? name.stdout.toString().replace(/\n$/, '') : (/^xwininfo: Window id: \S+ "(.*)"$/m.exec(wininfo)?.[1] ?? '');
    return {
      id,
      title,
      ...(windowClass === undefined ? {} : { class: windowClass }),
      ...(Number.isInteger(pid) ? { pid } : {}),
      x,
      y,
      width,
      height,
      frame: { x: x - left, y: y - top, width: width + left + right, height: height + top + bottom },
      active,
      minimized,
    };
  }

  /** Where the input went: the active window after a click, or the one that got the text or keys. */
  async #activeWindowText(signal: AbortSignal | undefined, input: 'click' | 'text' | 'keys'): Promise<string> {
    const windows = await this.windows(signal).catch(() => []);
    const active = windows.find((window) => window.active);
    if (input === 'click') return active === undefined ? ' No window is active now.' : ` The active window is now ${JSON.stringify(active.title)}.`;
    return active === undefined ? ` No window has the keyboard focus: the ${input} went nowhere (click a window first).` : ` The ${input} went to the active window, ${JSON.stringify(active.title)}.`;
  }

  async #launch(command: string, wantScreenshot: boolean, signal: AbortSignal | undefined, started: number): Promise<GuiResponse> {
    const before = new Set((await this.windows(signal)).map((window) => window.id));
    const launched = this.#desktop.launch(command);
    let exitCode: number | null | undefined;
    void launched.exited.then((code) => (exitCode = code));
    const deadline = performance.now() + launchWindowWaitMs;
    let fresh: GuiWindow[] = [];
    let appearedAt: number | undefined;
    // Wait for the program's first window, or for it to fail: a program that exits with 0 may have handed over to a
    // process of its own (a launcher script), so that case keeps waiting for a window. Once a window is there, wait
    // a little longer for the window manager to give it the focus, so that keys typed next go to it.
    while (performance.now() < deadline) {
      const windows = await this.windows(signal);
      fresh = windows.filter((window) => !before.has(window.id));
      if (fresh.length > 0) appearedAt ??= performance.now();
      if (fresh.some((window) => window.active) || (appearedAt !== undefined && performance.now() - appearedAt > focusWaitMs)) break;
      if (fresh.length === 0 && exitCode !== undefined && exitCode !== 0) break;
      await pause(50, signal);
    }
    const lines = [`Started ${JSON.stringify(command)} (pid ${launched.pid}) in /workspace; its output goes to ${launched.logPath}.`];
    if (fresh.length > 0) {
      lines.push(`New window${fresh.length > 1 ? 's' : ''}:`, ...fresh.map(windowLine));
    } else if (exitCode !== undefined && exitCode !== 0) {
      const tail = logTail(launched.logPath);
      lines.push(`It exited with code ${exitCode} without opening a window.${tail === '' ? ' It printed nothing.' : ` Its output ends:\n${tail}`}`);
      throw new SandboxdToolError('gui_failed', lines.join('\n'));
    } else {
      const tail = logTail(launched.logPath, 1000);
      lines.push(
        `No new window appeared within ${launchWindowWaitMs / 1000} s${exitCode === 0 ? ' (the command itself exited with code 0)' : ' (it is still running)'}: it may still be starting (check again with the windows or screenshot action) or may not open a window.` +
          (tail === '' ? '' : ` Its output so far:\n${tail}`),
      );
    }
    const screenshot = wantScreenshot ? await this.#settledScreenshot(signal) : undefined;
    return {
      output: lines.join('\n'),
      ...(screenshot === undefined ? {} : { screenshot }),
      windows: fresh,
      screen: { width: this.#desktop.width, height: this.#desktop.height },
      duration_ms: Math.round(performance.now() - started),
    };
  }

  async #runScript(lines: ReturnType<typeof parseScript>, signal: AbortSignal | undefined): Promise<string> {
    const deadline = performance.now() + scriptTimeoutMs;
    const report: string[] = [];
    for (const line of lines) {
      const remaining = deadline - performance.now();
      if (remaining <= 0) throw new SandboxdToolError('gui_failed', `the script ran out of time (${scriptTimeoutMs / 1000} s) before line ${line.number}; ${summary(report)}`);
      let output: string;
      try {
        output = await this.#xdotool(line.args, signal, Math.min(remaining, 15_000));
      } catch (error) {
        if (!(error instanceof SandboxdToolError)) throw error;
        throw new SandboxdToolError(error.code, `line ${line.number} (${line.text}) failed: ${error.message}; ${summary(report)}`);
      }
      report.push(`line ${line.number} (${line.text}): ok${output.trim() === '' ? '' : `, printed: ${output.trim()}`}`);
    }
    return `Ran ${lines.length} xdotool command${lines.length === 1 ? '' : 's'}:\n${report.join('\n')}`;
  }
}

function summary(report: string[]): string {
  return report.length === 0 ? 'no line before it ran' : `the lines before it ran:\n${report.join('\n')}`;
}

function parseScriptOrThrow(script: string): ReturnType<typeof parseScript> {
  try {
    return parseScript(script);
  } catch (error) {
    if (error instanceof ScriptError) throw new SandboxdToolError('invalid_request', `script: ${error.message}`);
    throw error;
  }
}

/** "0x40000c, 0x60000c" in an xprop line → ids; 0x0 (none) is dropped. */
function windowIds(line: string): string[] {
  return [...line.matchAll(/0x[0-9a-f]+/gi)].map((match) => match[0].toLowerCase()).filter((id) => Number.parseInt(id, 16) !== 0);
}

/** Width and height from a PNG's IHDR chunk; undefined when `data` is not a PNG. */
export function pngSize(data: Buffer): { width: number; height: number } | undefined {
  if (data.length < 24 || data.readUInt32BE(0) !== 0x89504e47 || data.readUInt32BE(4) !== 0x0d0a1a0a || data.toString('latin1', 12, 16) !== 'IHDR') return undefined;
  return { width: data.readUInt32BE(16), height: data.readUInt32BE(20) };
}

export function windowLine(window: GuiWindow): string {
  const flags = [window.active ? 'active' : undefined, window.minimized ? 'minimized' : undefined].filter(Boolean);
  const owner = [window.class, window.pid === undefined ? undefined : `pid ${window.pid}`].filter(Boolean).join(', ');
  return (
    `- ${JSON.stringify(window.title)}${owner === '' ? '' : ` (${owner})`}${flags.length === 0 ? '' : ` [${flags.join(', ')}]`}: ` +
    `content at x=${window.x} y=${window.y}, ${window.width}x${window.height}; with title bar and border x=${window.frame.x} y=${window.frame.y}, ${window.frame.width}x${window.frame.height}; id ${window.id}`
  );
}

export function describeWindows(windows: GuiWindow[]): string {
  if (windows.length === 0) return 'No windows are open.';
  return `${windows.length} window${windows.length === 1 ? '' : 's'}, topmost first (positions in screen pixels; "content" excludes the title bar):\n${windows.map(windowLine).join('\n')}`;
}

function pause(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason instanceof Error ? signal.reason : new Error('aborted'));
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal?.reason instanceof Error ? signal.reason : new Error('aborted'));
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
