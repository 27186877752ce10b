import { describe, expect, it } from 'vitest';
import { OutputCapture } from './output-capture.ts';

describe('OutputCapture', () => {
  it('keeps everything while it fits', () => {
    const capture = new OutputCapture(4, 4);
    capture.append(Buffer.from('abc'));
    capture.append(Buffer.from('defgh'));
    expect(capture.text()).toBe('abcdefgh');
    expect(capture.omittedBytes).toBe(0);
  });

  it('keeps head and tail and counts the middle', () => {
    const capture = new OutputCapture(3, 3);
    for (const chunk of ['ab', 'cdef', 'ghij', 'k']) capture.append(Buffer.from(chunk));
    expect(capture.omittedBytes).toBe(5);
    expect(capture.totalBytes).toBe(11);
    expect(capture.text()).toBe('abc\n[... 5 bytes of output omitted ...]\nijk');
  });

  it('never splits a UTF-8 character at either edge of the gap', () => {
    const capture = new OutputCapture(4, 4);
    // "aé" is 3 bytes; "€" is 3 bytes: the head cut falls inside "€", the tail cut inside "é".
    capture.append(Buffer.from('a\u00e9\u20ac---------\u00e9xyz'));
    const text = capture.text();
    expect(text).not.toContain('\ufffd');
    expect(text.startsWith('a\u00e9\n[...')).toBe(true);
    expect(text.endsWith(']\nxyz')).toBe(true);
    expect(capture.omittedBytes).toBe(Buffer.byteLength('a\u00e9\u20ac---------\u00e9xyz') - 3 - 3);
  });

  it('adds bytes counted elsewhere', () => {
    const capture = new OutputCapture(10, 10);
    capture.countOmitted(7);
    expect(capture.omittedBytes).toBe(7);
  });
});
