// Text from the server shown in a terminal. Much of what the CLI prints is written by the model or by code in the
// sandbox (summaries, tool calls and outputs, errors, file names, the task), so it is escaped before it reaches the
// terminal: no control character gets through to move the cursor, clear the screen, set the window title, write to
// the clipboard (OSC 52), make a link, or hide or reorder text (carriage return, bidi overrides). Every place the CLI
// prints such text goes through terminalSafe; the CLI's own colours are added after it, never before.

/**
 * C0 controls (ESC, BEL, CR, backspace, ...), DEL, C1 controls (CSI U+009B, OSC U+009D, ...), and the bidi embeddings,
 * overrides and isolates (U+202A-U+202E, U+2066-U+2069) that make a terminal show text in another order than it is.
 */
// eslint-disable-next-line no-control-regex -- matching control characters is this module's purpose
const unsafe = /[\u0000-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/g;
/** The same, but for line feed and tab: kept where text is shown on several lines. */
// eslint-disable-next-line no-control-regex -- as above
const unsafeKeepingLines = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/g;

const escaped = (char: string) => `\\u${char.charCodeAt(0).toString(16).padStart(4, '0')}`;

/**
 * The text with every control character shown as `\uXXXX` (a JSON string escape: JSON stays valid JSON). With
 * `multiline`, line feeds (and a CR before one) and tabs are kept as they are.
 */
export function terminalSafe(text: string, options: { multiline?: boolean } = {}): string {
  if (options.multiline === true) return text.replace(/\r\n/g, '\n').replace(unsafeKeepingLines, escaped);
  return text.replace(unsafe, escaped);
}

/** A value as JSON for a terminal (JSON.stringify leaves DEL, C1 and bidi controls raw); still parses to the same value. */
export function terminalJson(value: unknown, indent?: number): string {
  return terminalSafe(JSON.stringify(value, null, indent), { multiline: true });
}
