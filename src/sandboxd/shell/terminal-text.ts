// What a terminal shows, as plain text for the model: a streaming filter from the bytes a PTY emits to the text a
// person would read on the screen, line by line. It removes escape sequences (colours, cursor and mode changes,
// window titles, hyperlinks' markup) and control characters, and applies the few that change which characters stay
// on a line: carriage return (a progress bar redrawing itself ends as its last state), backspace (overstrike in man
// pages), erase-in-line and cursor-to-column. "\r\n" becomes "\n". A full-screen program (the alternate screen: vim,
// less, top) is replaced by one line saying so: its screen, drawn with absolute cursor moves, is no text.
//
// It never buffers more than one line (a line longer than maxLineChars is passed on in pieces) and holds no state
// across calls but an unfinished sequence and the line being written. It must never throw on any input.

/** A line longer than this is passed on as it grows (a multi-megabyte line without a newline costs no memory). */
const maxLineChars = 16 * 1024;
/** Parameters of a CSI sequence kept for interpretation; longer ones are dropped (they are nonsense anyway). */
const maxParameterChars = 32;

type State = 'text' | 'escape' | 'escape-intermediate' | 'csi' | 'string' | 'string-escape';

export const alternateScreenNote = '[a full-screen program took over the terminal here (alternate screen); its screen is not shown]';

/** Characters that are not plain text: C0 controls but tab (newline included), DEL and the C1 range. */
// eslint-disable-next-line no-control-regex -- matching control characters is this module's purpose
const special = /[\x00-\x08\x0a-\x1f\x7f-\x9f]/g;

export class TerminalText {
  readonly #decoder = new TextDecoder('utf-8');
  #state: State = 'text';
  #parameters = '';
  /** The line being written and the cursor's column in it. */
  #line = '';
  #cursor = 0;
  #alternateScreen = false;
  /** Text a control sequence completed (the alternate-screen note), passed on by #feed. */
  #emitted = '';

  /** True while a full-screen program has the terminal (between its alternate-screen switches). */
  get inAlternateScreen(): boolean {
    return this.#alternateScreen;
  }

  /** Feeds bytes from the terminal; returns the text completed by them (whole lines, or pieces of a very long one). */
  push(chunk: Uint8Array): string {
    return this.#feed(this.#decoder.decode(chunk, { stream: true }));
  }

  /**
   * Ends a unit of output (a shell call): returns the unfinished line too, and forgets screen state that belonged
   * to it (a full-screen program killed before it gave the screen back). An unfinished escape sequence is dropped.
   */
  flush(): string {
    const text = this.#feed(this.#decoder.decode());
    const rest = this.#line;
    this.#line = '';
    this.#cursor = 0;
    this.#state = 'text';
    this.#alternateScreen = false;
    return text + rest;
  }

  #feed(input: string): string {
    let out = '';
    let at = 0;
    while (at < input.length) {
      if (this.#state !== 'text') {
        at = this.#sequence(input, at);
        out += this.#emitted;
        this.#emitted = '';
        continue;
      }
      special.lastIndex = at;
      const match = special.exec(input);
      const end = match === null ? input.length : match.index;
      if (end > at) out += this.#write(input.slice(at, end));
      if (match === null) break;
      at = end + 1;
      const char = match[0];
      switch (char) {
        case '\n':
          if (!this.#alternateScreen) out += `${this.#line}\n`;
          this.#line = '';
          this.#cursor = 0;
          break;
        case '\r':
          this.#cursor = 0;
          break;
        case '\b':
          if (this.#cursor > 0) this.#cursor--;
          break;
        case '\x1b':
          this.#state = 'escape';
          break;
        default:
          // BEL, NUL, SO/SI, DEL, C1 controls...: nothing on the screen.
          break;
      }
    }
    return out;
  }

  /** Writes printable text at the cursor, overwriting what is there; returns what had to be passed on already. */
  #write(text: string): string {
    if (this.#alternateScreen) return '';
    if (this.#cursor === this.#line.length) this.#line += text;
    else if (this.#cursor > this.#line.length) this.#line += ' '.repeat(this.#cursor - this.#line.length) + text;
    else this.#line = this.#line.slice(0, this.#cursor) + text + this.#line.slice(this.#cursor + text.length);
    this.#cursor += text.length;
    if (this.#line.length <= maxLineChars || this.#cursor < this.#line.length) return '';
    const piece = this.#line;
    this.#line = '';
    this.#cursor = 0;
    return piece;
  }

  /** Consumes escape-sequence characters from `at`; returns where text resumes (or the end of the input). */
  #sequence(input: string, at: number): number {
    while (at < input.length && this.#state !== 'text') {
      const char = input[at] as string;
      const code = char.charCodeAt(0);
      switch (this.#state) {
        case 'escape':
          at++;
          if (char === '[') {
            this.#state = 'csi';
            this.#parameters = '';
          } else if (char === ']' || char === 'P' || char === 'X' || char === '^' || char === '_') {
            this.#state = 'string'; // OSC, DCS, SOS, PM, APC: up to BEL or ST (ESC \)
          } else if (code >= 0x20 && code <= 0x2f) {
            this.#state = 'escape-intermediate'; // charset designations and the like: one more character
          } else if (char === '\x1b') {
            this.#state = 'escape';
          } else {
            this.#state = 'text'; // a two-character sequence (ESC 7, ESC =, ESC M, ...)
          }
          break;
        case 'escape-intermediate':
          at++;
          if (code < 0x20 || code > 0x2f) this.#state = 'text';
          break;
        case 'csi':
          if (code >= 0x40 && code <= 0x7e) {
            at++;
            this.#state = 'text';
            this.#control(this.#parameters, char);
          } else if (code >= 0x20 && code <= 0x3f) {
            at++;
            if (this.#parameters.length < maxParameterChars) this.#parameters += char;
          } else {
            // A broken sequence: drop it and read the character as text (a newline, say).
            this.#state = 'text';
          }
          break;
        case 'string':
          at++;
          if (char === '\x07') this.#state = 'text';
          else if (char === '\x1b') this.#state = 'string-escape';
          break;
        case 'string-escape':
          if (char === '\\') {
            at++;
            this.#state = 'text';
          } else {
            this.#state = 'escape'; // not a string terminator: a new sequence starts here
          }
          break;
      }
    }
    return at;
  }

  /** Applies a CSI sequence: only those that change what text stays on the line, and the alternate screen. */
  #control(parameters: string, final: string): void {
    if (parameters.startsWith('?')) {
      if (final !== 'h' && final !== 'l') return;
      const modes = parameters.slice(1).split(';');
      if (!modes.some((mode) => mode === '1049' || mode === '1047' || mode === '47')) return;
      const entering = final === 'h';
      if (entering === this.#alternateScreen) return;
      if (entering) {
        // What was on the line stays (it is on the normal screen); the note takes a line of its own.
        this.#emitted += `${this.#line === '' ? '' : `${this.#line}\n`}${alternateScreenNote}\n`;
      }
      this.#line = '';
      this.#cursor = 0;
      this.#alternateScreen = entering;
      return;
    }
    if (this.#alternateScreen || !/^[\d;]*$/.test(parameters)) return;
    const first = parameters === '' ? 0 : Number.parseInt(parameters.split(';')[0] ?? '0', 10) || 0;
    switch (final) {
      case 'K': // erase in line
        if (first === 0) this.#line = this.#line.slice(0, this.#cursor);
        else if (first === 1) this.#line = ' '.repeat(Math.min(this.#cursor, this.#line.length)) + this.#line.slice(this.#cursor);
        else if (first === 2) this.#line = '';
        break;
      case 'G': // cursor to column
      case '`':
        this.#cursor = Math.min(maxLineChars, Math.max(0, (first || 1) - 1));
        break;
      case 'C': // cursor forward
        this.#cursor = Math.min(maxLineChars, this.#cursor + (first || 1));
        break;
      case 'D': // cursor back
        this.#cursor = Math.max(0, this.#cursor - (first || 1));
        break;
      default:
        // colours (m), other cursor moves, screen erases, modes: nothing for plain text
        break;
    }
  }
}
