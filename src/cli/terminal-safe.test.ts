import { describe, expect, it } from 'vitest';
import { renderEvent } from './render.ts';
import { terminalJson, terminalSafe } from './terminal-safe.ts';

/** What a hostile summary, tool output or file name may hold, each meant to do something to the terminal. */
const hostileStrings = {
  clipboard: 'copy \x1b]52;c;Y3VybCBldmlsLnNoIHwgc2g=\x07 done',
  title: '\x1b]0;pwned\x07title',
  title8bit: '\u009d0;pwned\u009ctitle',
  clearScreen: '\x1b[2J\x1b[Hclean slate',
  cursorUp: 'line\x1b[1A\x1b[2Koverwritten',
  csi8bit: '\u009b2Jcleared',
  hyperlink: '\x1b]8;;https://evil.example/\x1b\\innocent link\x1b]8;;\x1b\\',
  conceal: 'visible \x1b[8mhidden\x1b[28m',
  carriageReturn: 'rm -rf / # harmless\rls',
  backspace: 'safe\b\b\b\bevil',
  del: 'a\x7fb',
  bell: 'ding\x07',
  nul: 'a\0b',
  bidiOverride: 'access = "user\u202e \u2066// admin\u2069 \u2066"',
  bidiEmbedding: '\u202a\u202b\u202c\u202d',
};

/** Characters that must never reach a terminal raw (line feed and tab are checked separately). */
// eslint-disable-next-line no-control-regex -- what must not get through
const control = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/;

describe('terminalSafe', () => {
  it.each(Object.entries(hostileStrings))('escapes %s', (_name, text) => {
    const safe = terminalSafe(text);
    expect(safe).not.toMatch(control);
    expect(safe).not.toMatch(/[\n\t]/);
    expect(safe).toMatch(/\\u00[0-9a-f]{2}|\\u20[26][0-9a-f]/);
  });

  it('shows what was there', () => {
    expect(terminalSafe('\x1b]0;pwned\x07')).toBe('\\u001b]0;pwned\\u0007');
    expect(terminalSafe('a\u009bb\u202ec\x7f')).toBe('a\\u009bb\\u202ec\\u007f');
    expect(terminalSafe('one\ntwo\tthree')).toBe('one\\u000atwo\\u0009three');
  });

  it('keeps line feeds and tabs in multiline text, and nothing else', () => {
    expect(terminalSafe('one\r\ntwo\n\tthree\rfour', { multiline: true })).toBe('one\ntwo\n\tthree\\u000dfour');
    for (const text of Object.values(hostileStrings)) expect(terminalSafe(text, { multiline: true })).not.toMatch(control);
  });

  it('leaves ordinary text alone, Unicode included', () => {
    const text = 'Créé 3 fichiers — ok ✓ 日本語 🎉 "quotes" \\ backslash';
    expect(terminalSafe(text)).toBe(text);
  });

  it('writes JSON that parses back to the same value', () => {
    const value = { summary: Object.values(hostileStrings).join('\n'), nested: [hostileStrings.csi8bit] };
    const json = terminalJson(value, 2);
    expect(json).not.toMatch(control);
    expect(JSON.parse(json)).toEqual(value);
  });
});

describe('renderEvent', () => {
  const at = '2026-12-04T07:12:01.000Z';
  it('prints no control character from any event, in colour or not', () => {
    const all = Object.values(hostileStrings).join(' | ');
    const events = [
      { type: 'job-status', data: { status: 'complete', error: all, summary: `${all}\nsecond line` } },
      { type: 'sandbox-ready', data: { isolation: all } },
      { type: 'user-message', data: { source: 'task', text: all } },
      { type: 'context-summary', data: { method: 'fallback', level: all, error: all, condensed_steps: [all, 2] } },
      { type: 'model-turn', data: { text: all } },
      { type: 'model-retry', data: { attempt: all, delay_ms: 1, error: all } },
      { type: 'tool-call', data: { name: all, args: { path: all } } },
      { type: 'tool-result', data: { is_error: true, output: all } },
      { type: 'tool-result', data: { is_error: false, output: all } },
      { type: 'log', data: { message: all } },
    ];
    for (const color of [false, true]) {
      for (const [index, event] of events.entries()) {
        const line = renderEvent({ seq: index, step: 1, time: at, ...event }, color) ?? '';
        // The CLI's own colours are the only escape sequences: SGR, ESC [ digits m.
        // eslint-disable-next-line no-control-regex -- the colours' escape sequences
        const withoutColours = line.replace(/\x1b\[\d+m/g, '');
        expect(withoutColours, event.type).not.toMatch(control);
        expect(withoutColours, event.type).toContain('\\u001b');
      }
    }
    const status = renderEvent({ seq: 0, step: 0, time: at, type: 'job-status', data: { status: 'complete', summary: 'line one\nline two' } }, false);
    expect(status).toBe('07:12:01 job complete\nline one\nline two');
  });
});
