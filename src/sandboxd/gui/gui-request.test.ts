import { describe, expect, it } from 'vitest';
import { runTool, type SandboxdCaller } from '../../agent/tools/run-tool.ts';
import { guiActionFields, guiActions, guiRequest } from './gui-request.ts';
import { parseScript } from './xdotool-script.ts';

const problems = (value: unknown) => {
  const parsed = guiRequest.safeParse(value);
  return parsed.success ? [] : parsed.error.issues.map((issue) => `${issue.path.join('.')}: ${issue.message}`);
};

describe('gui requests', () => {
  it('accept each action with its fields', () => {
    for (const value of [
      { action: 'screenshot' },
      { action: 'windows' },
      { action: 'launch', command: 'xterm' },
      { action: 'click', x: 0, y: 799, button: 'right' },
      { action: 'double_click', x: 10, y: 10 },
      { action: 'move', x: 1, y: 2, screenshot: true },
      { action: 'drag', x: 1, y: 2, to_x: 3, to_y: 4 },
      { action: 'scroll', x: 1, y: 2, direction: 'down', amount: 5 },
      { action: 'type', text: 'echo hi > /workspace/from-gui.txt' },
      { action: 'key', keys: 'ctrl+s', screenshot: false },
      { action: 'script', script: 'mousemove 1 2\nclick 1' },
    ]) {
      expect(problems(value), JSON.stringify(value)).toEqual([]);
    }
    expect(Object.keys(guiActionFields).sort()).toEqual([...guiActions].sort());
  });

  it('name what is missing, what the action does not take, and what is unknown', () => {
    expect(problems({ action: 'click', x: 1 })).toEqual(['y: click needs y: click {x, y, button?, screenshot?}']);
    expect(problems({ action: 'click', x: 1, y: 2, text: 'a' })).toEqual(['text: click does not take text: click {x, y, button?, screenshot?}']);
    expect(problems({ action: 'screenshot', x: 1 })).toEqual(['x: screenshot does not take x: screenshot']);
    expect(problems({ action: 'launch', command: '  ' })).toEqual(['command: launch needs a command to run, e.g. "xterm" or "python3 app.py"']);
    expect(problems({ action: 'launch' })).toEqual(['command: launch needs command: launch {command, screenshot?}']);
    expect(problems({ action: 'zoom' })[0]).toMatch(/^action: Invalid option: expected one of "screenshot"\|"windows"\|"launch"/);
    expect(problems({ action: 'click', x: -1, y: 2 })).toEqual(['x: coordinates are screen pixels counted from 0 at the left edge']);
    expect(problems({ action: 'click', x: 1.5, y: 2 })).toEqual(['x: coordinates are whole screen pixels, counted from 0 at the left edge']);
    expect(problems({ action: 'scroll', x: 1, y: 2, direction: 'sideways' })[0]).toMatch(/^direction: Invalid option/);
    expect(problems({ action: 'type', text: '' })[0]).toMatch(/^text: /);
    expect(problems({ action: 'click', x: 1, y: 2, colour: 'red' })[0]).toMatch(/colour/);
    expect(problems({})[0]).toMatch(/^action: /);
  });

  it('reach the model as an error it can act on, before anything is sent to sandboxd', async () => {
    const calls: unknown[] = [];
    const client: SandboxdCaller = { call: (async (...args: unknown[]) => void calls.push(args)) as SandboxdCaller['call'] };
    const result = await runTool(client, { name: 'gui', input: { action: 'drag', x: 1, y: 2, to_x: 5 } }, { signal: new AbortController().signal });
    expect(result.isError).toBe(true);
    expect(result.output).toMatch(/^Invalid arguments for gui:\n- to_y: drag needs to_y: drag \{x, y, to_x, to_y, button\?, screenshot\?\}\nExpected: gui \{action: string, x\?: integer/);
    expect(calls).toEqual([]);
  });

  it('pass a screenshot on to the loop as an image', async () => {
    const png = Buffer.from('89504e470d0a1a0a0000000d49484452', 'hex');
    const client: SandboxdCaller = {
      call: (async () => ({ output: 'Clicked.', screenshot: { media_type: 'image/png', data: png.toString('base64'), width: 1280, height: 800 }, screen: { width: 1280, height: 800 }, duration_ms: 1 })) as unknown as SandboxdCaller['call'],
    };
    const result = await runTool(client, { name: 'gui', input: { action: 'click', x: 1, y: 2 } }, { signal: new AbortController().signal });
    expect(result).toMatchObject({ isError: false, output: 'Clicked.', images: [{ mediaType: 'image/png', data: png, width: 1280, height: 800 }] });
  });
});

describe('xdotool scripts', () => {
  it('split lines into words, as quotes say, and skip blank lines and comments', () => {
    expect(parseScript('# open the menu\nmousemove 100 200\n\nclick --repeat 2 1\nxdotool key ctrl+s\nsearch --name "My App"')).toEqual([
      { number: 2, text: 'mousemove 100 200', args: ['mousemove', '100', '200'] },
      { number: 4, text: 'click --repeat 2 1', args: ['click', '--repeat', '2', '1'] },
      { number: 5, text: 'xdotool key ctrl+s', args: ['key', 'ctrl+s'] },
      { number: 6, text: 'search --name "My App"', args: ['search', '--name', 'My App'] },
    ]);
  });

  it('type the rest of a type line as one text, after its options', () => {
    expect(parseScript('type hello world')[0]?.args).toEqual(['type', '--', 'hello world']);
    expect(parseScript('type --delay 50 "echo hi > /workspace/x.txt"')[0]?.args).toEqual(['type', '--delay', '50', '--', 'echo hi > /workspace/x.txt']);
    // `type` swallows words that name commands: they are text.
    expect(parseScript("type 'exec rm -rf /'")[0]?.args).toEqual(['type', '--', 'exec rm -rf /']);
    expect(() => parseScript('type')).toThrow(/type needs the text/);
    expect(() => parseScript('type --file /etc/passwd')).toThrow(/--file is not allowed/);
  });

  it('refuse commands that run programs, chained ones too, and anything of a shell', () => {
    expect(() => parseScript('exec rm -rf /workspace')).toThrow(/line 1: the xdotool command "exec" is not allowed in scripts; the commands are: mousemove/);
    expect(() => parseScript('mousemove 1 1\nkey a exec rm')).toThrow(/line 2: the xdotool command "exec" is not allowed in scripts \(xdotool would chain it after key\)/);
    expect(() => parseScript('search --name x behave %@ focus exec foo')).toThrow(/"behave" is not allowed/);
    expect(() => parseScript('rm -rf /')).toThrow(/line 1: "rm" is not an xdotool command/);
    expect(() => parseScript('mousemove 1 1; click 1')).toThrow(/";" outside quotes: a script is not a shell/);
    expect(() => parseScript('type hi > /tmp/x')).toThrow(/">" outside quotes/);
    expect(() => parseScript('key $(whoami)')).toThrow(/"\$" outside quotes/);
    expect(() => parseScript('getmouselocation | cat')).toThrow(/"\|" outside quotes/);
    expect(() => parseScript('type "unterminated')).toThrow(/unterminated " quote/);
    expect(() => parseScript('sleep 60')).toThrow(/sleep takes one number of seconds, from 0 to 10/);
    expect(() => parseScript('\n# nothing\n')).toThrow(/no commands/);
    expect(() => parseScript(Array.from({ length: 101 }, () => 'click 1').join('\n'))).toThrow(/more than 100 commands/);
  });
});
