import { describe, expect, it } from 'vitest';
import { defaultOutputCaps, OutputCollector, stripAnsi } from './outputs.ts';

const caps = { ...defaultOutputCaps, headBytes: 100, tailBytes: 50, partBytes: 40, maxParts: 3, maxImages: 1, maxImageBytes: 20 };

describe('OutputCollector', () => {
  it('keeps outputs in order, merging consecutive text of one stream', () => {
    const collector = new OutputCollector();
    collector.stream('stdout', 'a\n');
    collector.stream('stdout', 'b\n');
    collector.stream('stderr', 'warn\n');
    collector.result({ 'text/plain': '42', 'text/html': '<b>42</b>' });
    collector.display({ 'image/png': 'iVBO\nRw0K', 'text/plain': '<Figure>' });
    collector.display({ 'text/html': '<table/>' });
    collector.error('ValueError', 'bad', ['\x1b[0;31mValueError\x1b[0m: bad', 'line 2']);
    expect(collector.outputs()).toEqual([
      { type: 'stream', name: 'stdout', text: 'a\nb\n' },
      { type: 'stream', name: 'stderr', text: 'warn\n' },
      { type: 'result', text: '42' },
      { type: 'image', mime_type: 'image/png', data_base64: 'iVBORw0K', text: '<Figure>' },
      { type: 'display', text: '[output of type text/html, which has no text form]' },
      { type: 'error', name: 'ValueError', message: 'bad', traceback: 'ValueError: bad\nline 2' },
    ]);
    expect(collector.hasError).toBe(true);
    expect(collector.omittedBytes).toBe(0);
  });

  it('keeps the head of long stream output in order and the tail of each stream, counting what was dropped', () => {
    const collector = new OutputCollector(caps);
    collector.stream('stdout', 'h'.repeat(90));
    collector.result({ 'text/plain': 'r' });
    collector.stream('stdout', `${'x'.repeat(20)}${'m'.repeat(1000)}${'t'.repeat(50)}`);
    const outputs = collector.outputs();
    expect(outputs[0]).toEqual({ type: 'stream', name: 'stdout', text: 'h'.repeat(90) });
    expect(outputs[1]).toEqual({ type: 'result', text: 'r' });
    expect(outputs[2]).toEqual({ type: 'stream', name: 'stdout', text: 'x'.repeat(10) });
    expect(outputs[3]).toMatchObject({ type: 'stream', name: 'stdout' });
    expect((outputs[3] as { text: string }).text).toBe(`\n[... ${10 + 1000} bytes of output omitted ...]\n${'t'.repeat(50)}`);
    expect(collector.omittedBytes).toBe(1010);
  });

  it('cuts long results and tracebacks, and counts parts and images over the caps', () => {
    const collector = new OutputCollector({ ...caps, maxImages: 2, maxParts: 4 });
    collector.result({ 'text/plain': 'y'.repeat(100) });
    collector.display({ 'image/png': 'A'.repeat(10) });
    collector.display({ 'image/png': 'C'.repeat(30) });
    collector.display({ 'image/png': 'B'.repeat(10) });
    collector.display({ 'image/png': 'D'.repeat(10) });
    collector.display({ 'text/plain': 'fits' });
    collector.display({ 'text/plain': 'one too many' });
    const outputs = collector.outputs();
    expect(outputs.map((output) => output.type)).toEqual(['result', 'image', 'image', 'display', 'stream']);
    expect((outputs[0] as { text: string }).text).toMatch(/^y{20}\n\[\.\.\. 60 bytes of output omitted \.\.\.\]\ny{20}$/);
    expect(outputs.at(-1)).toEqual({ type: 'stream', name: 'stderr', text: expect.stringMatching(/larger than 20 bytes of base64; more than 2 images in one call/) });
    expect(collector.omittedOutputs).toBe(3);
    expect(collector.omittedBytes).toBe(60);
  });

  it('never splits a UTF-8 character between head and tail', () => {
    const collector = new OutputCollector({ ...caps, headBytes: 5 });
    collector.stream('stdout', 'ab€€');
    const [head, tail] = collector.outputs();
    expect(head).toEqual({ type: 'stream', name: 'stdout', text: 'ab€' });
    expect(tail).toEqual({ type: 'stream', name: 'stdout', text: '€' });
  });
});

describe('stripAnsi', () => {
  it('removes colours, cursor moves and titles, and nothing else', () => {
    expect(stripAnsi('\x1b[0;31mred\x1b[0m \x1b[1A\x1b]0;title\x07plain [1] \x1b(B')).toBe('red plain [1] ');
  });
});
