// The `gui` tool's `script` action: several xdotool commands, one per line, run in one call (the seed's "scripts sent
// to xdotool"). Each line is split into words here, quotes as a shell would read them but nothing else of a shell (no
// variables, globs, pipes, redirections or `;`), and run as its own `xdotool WORD...` process, never through a shell.
// Every command word is checked against an allow-list: xdotool chains commands within one invocation
// (`key a exec rm ...` runs `exec` after `key`), so every word of a line that names an xdotool command must be an
// allowed one; `exec` and `behave` (which run programs) never are. Only `type` swallows the rest of its line as text.
import { maxScriptLines } from './gui-request.ts';

/** Commands a script may use: input, window management and queries; nothing that runs a program or waits for a person. */
export const allowedScriptCommands = new Set([
  'mousemove',
  'mousemove_relative',
  'click',
  'mousedown',
  'mouseup',
  'getmouselocation',
  'type',
  'key',
  'keydown',
  'keyup',
  'sleep',
  'search',
  'getactivewindow',
  'getwindowfocus',
  'getwindowname',
  'getwindowpid',
  'getwindowgeometry',
  'getdisplaygeometry',
  'windowactivate',
  'windowfocus',
  'windowraise',
  'windowmove',
  'windowsize',
  'windowminimize',
  'windowmap',
  'windowunmap',
  'windowclose',
  'windowkill',
  'set_desktop',
  'get_desktop',
]);

/** Every xdotool command (3.20160805 and later), so that a chained one is recognised wherever it appears. */
export const xdotoolCommands = new Set([
  ...allowedScriptCommands,
  'behave',
  'behave_screen_edge',
  'exec',
  'selectwindow',
  'help',
  'version',
  'set_window',
  'windowquit',
  'windowreparent',
  'windowstate',
  'set_num_desktops',
  'get_num_desktops',
  'set_desktop_for_window',
  'get_desktop_for_window',
  'get_desktop_viewport',
  'set_desktop_viewport',
]);

/** Longest `sleep` in a script, in seconds (the whole script also has a time limit). */
export const maxScriptSleepSeconds = 10;

export interface ScriptLine {
  /** 1-based line number in the script as given. */
  number: number;
  text: string;
  /** The arguments for xdotool: the command and its words. */
  args: string[];
}

export class ScriptError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ScriptError';
  }
}

const shellMetacharacters = /[;|&$`<>(){}\\]/;

/** Splits one line into words: whitespace separates, '...' and "..." quote (no escapes, no expansion). */
function words(line: string, number: number): string[] {
  const out: string[] = [];
  let current = '';
  let inWord = false;
  let quote: '"' | "'" | undefined;
  for (const char of line) {
    if (quote !== undefined) {
      if (char === quote) quote = undefined;
      else current += char;
      continue;
    }
    if (char === '"' || char === "'") {
      quote = char;
      inWord = true;
      continue;
    }
    if (/\s/.test(char)) {
      if (inWord) out.push(current);
      current = '';
      inWord = false;
      continue;
    }
    if (shellMetacharacters.test(char)) {
      throw new ScriptError(
        `line ${number}: ${JSON.stringify(char)} outside quotes: a script is not a shell (no pipes, redirections, variables or ";"): ` +
          'write one xdotool command per line, and quote text that contains such characters, e.g. type "a > b"',
      );
    }
    current += char;
    inWord = true;
  }
  if (quote !== undefined) throw new ScriptError(`line ${number}: unterminated ${quote} quote`);
  if (inWord) out.push(current);
  return out;
}

/** Options of `type` that take a value. */
const typeOptionsWithValue = new Set(['--delay', '--window', '--terminator', '--file']);

/**
 * `type hello world` would type "helloworld" (xdotool types each word without the spaces between them): the words
 * after the options become one text, as the line reads. --file (type a file's contents) is refused: use the text.
 */
function typeArguments(args: string[]): string[] {
  const options: string[] = [];
  let index = 1;
  while (index < args.length && args[index]!.startsWith('--')) {
    const option = args[index]!;
    if (option === '--') {
      index++;
      break;
    }
    if (option === '--file') throw new ScriptError('type --file is not allowed in scripts: give the text itself');
    options.push(option);
    if (typeOptionsWithValue.has(option)) options.push(args[index + 1] ?? '');
    index += typeOptionsWithValue.has(option) ? 2 : 1;
  }
  const text = args.slice(index).join(' ');
  if (text === '') throw new ScriptError('type needs the text to type, e.g. type "hello world"');
  return ['type', ...options, '--', text];
}

/**
 * Parses and checks a script: blank lines and lines starting with # are skipped; every other line is one xdotool
 * command (without the word xdotool, which is also accepted). Throws a ScriptError naming the line and the fix.
 */
export function parseScript(script: string): ScriptLine[] {
  const lines: ScriptLine[] = [];
  const allowed = [...allowedScriptCommands].join(', ');
  for (const [index, raw] of script.split(/\r?\n/).entries()) {
    const number = index + 1;
    const text = raw.trim();
    if (text === '' || text.startsWith('#')) continue;
    let args = words(text, number);
    if (args[0] === 'xdotool') args = args.slice(1);
    const command = args[0];
    if (command === undefined) continue;
    if (!allowedScriptCommands.has(command)) {
      const what = xdotoolCommands.has(command) ? `the xdotool command ${JSON.stringify(command)} is not allowed in scripts` : `${JSON.stringify(command)} is not an xdotool command`;
      throw new ScriptError(`line ${number}: ${what}; the commands are: ${allowed}`);
    }
    // `type` takes the rest of its line as text; any other command may chain into the next word that names a command.
    if (command !== 'type') {
      for (const word of args.slice(1)) {
        if (xdotoolCommands.has(word) && !allowedScriptCommands.has(word)) {
          throw new ScriptError(`line ${number}: the xdotool command ${JSON.stringify(word)} is not allowed in scripts (xdotool would chain it after ${command}); the commands are: ${allowed}`);
        }
      }
    }
    if (command === 'type') args = typeArguments(args);
    if (command === 'sleep') {
      const seconds = Number(args[1]);
      if (args.length !== 2 || !Number.isFinite(seconds) || seconds < 0 || seconds > maxScriptSleepSeconds) {
        throw new ScriptError(`line ${number}: sleep takes one number of seconds, from 0 to ${maxScriptSleepSeconds}, e.g. sleep 0.5`);
      }
    }
    lines.push({ number, text, args });
    if (lines.length > maxScriptLines) throw new ScriptError(`the script has more than ${maxScriptLines} commands: split it into several calls`);
  }
  if (lines.length === 0) throw new ScriptError('the script has no commands: write one xdotool command per line, e.g. "mousemove 100 200" then "click 1"');
  return lines;
}
