// How the CLI prints what it got from the server. Text for people is escaped (terminal-safe.ts) and coloured only on a
// terminal, never when NO_COLOR is set (https://no-color.org: present and not empty); `--json` prints one JSON
// document, or one JSON value per line for streams, escaped the same way (it still parses to what the server said).
// Content that is the point of a command (a file, a patch) goes out byte for byte into a pipe or a file, and escaped
// on a terminal: the agent wrote it, and it must not drive the terminal.
import { terminalJson, terminalSafe } from './terminal-safe.ts';

/** Colours for this stream: a terminal, and NO_COLOR unset or empty. */
export function colorEnabled(stream: NodeJS.WriteStream = process.stdout): boolean {
  return stream.isTTY === true && (process.env.NO_COLOR ?? '') === '';
}

/** One JSON document. */
export function printJson(value: unknown): void {
  console.log(terminalJson(value, 2));
}

/** One JSON value on one line (a stream's item). */
export function printJsonLine(value: unknown): void {
  console.log(terminalJson(value));
}

/**
 * Content from the server: the bytes as they are when stdout is a pipe or a file, the text escaped on a terminal (line
 * breaks kept). Binary content is not shown on a terminal: it says how to save it.
 */
export async function writeContent(bytes: Uint8Array, text: string | undefined, what: string): Promise<void> {
  if (process.stdout.isTTY !== true) {
    await new Promise<void>((resolve, reject) => process.stdout.write(bytes, (error) => (error ? reject(error) : resolve())));
    return;
  }
  if (text === undefined) throw new Error(`${what} is binary (${bytes.length} bytes): redirect it to a file, e.g. > out.bin`);
  process.stdout.write(terminalSafe(text, { multiline: true }));
  if (text !== '' && !text.endsWith('\n')) process.stdout.write('\n');
}
