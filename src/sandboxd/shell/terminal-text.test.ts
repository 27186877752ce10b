import { describe, expect, it } from 'vitest';
import { alternateScreenNote, TerminalText } from './terminal-text.ts';

/** All of `input` through a fresh filter, fed in pieces of `step` bytes (sequences split anywhere). */
function text(input: string, step = Number.MAX_SAFE_INTEGER): string {
  const terminal = new TerminalText();
  const bytes = Buffer.from(input, 'utf8');
  let out = '';
  for (let at = 0; at < bytes.length; at += step) out += terminal.push(bytes.subarray(at, at + step));
  return out + terminal.flush();
}

describe('TerminalText', () => {
  it('passes plain text and turns \\r\\n into \\n', () => {
    expect(text('hello\r\nworld\r\n')).toBe('hello\nworld\n');
    expect(text('tab\there é € 😀\n')).toBe('tab\there é € 😀\n');
    expect(text('no newline at the end')).toBe('no newline at the end');
  });

  it('removes colours and other escape sequences', () => {
    expect(text('\x1b[31mred\x1b[0m and \x1b[1;38;5;196mbold\x1b[m\r\n')).toBe('red and bold\n');
    expect(text('\x1b]0;window title\x07prompt\x1b]8;;https://example.com\x1b\\link\x1b]8;;\x1b\\\n')).toBe('promptlink\n');
    expect(text('\x1b[?2004h\x1b[?25lhidden cursor\x1b[?25h\x1b(B\x1b=\x1bM\x1bPdcs payload\x1b\\ok\n')).toBe('hidden cursorok\n');
    expect(text('bell\x07 nul\x00 del\x7f c1\u009b end\n')).toBe('bell nul del c1 end\n');
  });

  it('handles sequences and UTF-8 characters split across chunks', () => {
    const input = '\x1b[38;5;82mgreen é€😀\x1b[0m\r\nnext\x1b]0;title\x1b\\line\r\n';
    for (const step of [1, 2, 3, 5]) expect(text(input, step)).toBe('green é€😀\nnextline\n');
  });

  it('keeps the last state of a line redrawn with carriage returns or erase-in-line', () => {
    expect(text('progress 10%\rprogress 50%\rprogress 100%\r\ndone\n')).toBe('progress 100%\ndone\n');
    expect(text('abcdef\rXY\n')).toBe('XYcdef\n');
    expect(text('downloading...\r\x1b[Kfinished\n')).toBe('finished\n');
    expect(text('12345\x1b[3Gx\x1b[K\n')).toBe('12x\n');
    expect(text('old line\x1b[2K\rnew\n')).toBe('new\n');
    expect(text('ab\x1b[3Cc\n')).toBe('ab   c\n');
  });

  it('applies backspaces (overstrike, as in man pages)', () => {
    expect(text('B\bBo\bol\bld\bd\n')).toBe('Bold\n');
    expect(text('_\bu_\bn\n')).toBe('un\n');
    expect(text('abc\b\b\bxyz\n')).toBe('xyz\n');
  });

  it('replaces a full-screen program by a note', () => {
    const vim = 'before\r\n\x1b[?1049h\x1b[H\x1b[2J~\r\n~\r\n"file" 0L, 0B\x1b[?1049l\x1b[?25hafter\r\n';
    expect(text(vim)).toBe(`before\n${alternateScreenNote}\nafter\n`);
    // Killed before it gave the screen back: the note, and nothing of its screen.
    const terminal = new TerminalText();
    expect(terminal.push(Buffer.from('x\x1b[?1049h\x1b[1;1Hscreen stuff'))).toBe(`x\n${alternateScreenNote}\n`);
    expect(terminal.inAlternateScreen).toBe(true);
    expect(terminal.flush()).toBe('');
    expect(terminal.inAlternateScreen).toBe(false);
    expect(terminal.push(Buffer.from('back to normal\n'))).toBe('back to normal\n');
  });

  it('passes a huge line on in pieces, without holding it', () => {
    const terminal = new TerminalText();
    let out = '';
    for (let i = 0; i < 100; i++) out += terminal.push(Buffer.from('a'.repeat(10_000)));
    expect(out.length).toBeGreaterThan(900_000);
    out += terminal.push(Buffer.from('\r\nEND\r\n')) + terminal.flush();
    expect(out).toBe(`${'a'.repeat(1_000_000)}\nEND\n`);
  });

  it('survives broken and hostile sequences', () => {
    expect(text('\x1b[12;\nnext\n')).toBe('\nnext\n');
    expect(text(`\x1b[${'9'.repeat(10_000)}mok\n`)).toBe('ok\n');
    const far = text(`\x1b[${'9'.repeat(400)}Gfar\x1b[${'9'.repeat(400)}Cfurther\n`);
    expect(far).toMatch(/^ +far +further\n$/);
    expect(far.length).toBeLessThan(40_000);
    expect(text('\x1b]unterminated osc')).toBe('');
    expect(text('\x1b\x1b[31mx\n')).toBe('x\n');
    const terminal = new TerminalText();
    expect(terminal.push(Buffer.from([0xff, 0xfe, 0x41, 0x0a]))).toBe('\ufffd\ufffdA\n');
  });
});
