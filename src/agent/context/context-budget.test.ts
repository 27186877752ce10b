import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { EventLog } from '../../jobs/event-log.ts';
import type { ContextLimitReached } from './context-budget.ts';
import { ContextStore } from './context-store.ts';
import { memoryImageStore } from './images.ts';
import { estimateCounter } from './tokens.ts';

const maxBytes = 2 * 1024 * 1024;
const share = maxBytes / 16;
let dir: string;
let log: EventLog;
let reached: ContextLimitReached[];

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'workcell-context-budget-'));
  log = new EventLog('job_budget', join(dir, 'context.db'));
  reached = [];
});
afterEach(() => {
  log.close();
  rmSync(dir, { recursive: true, force: true });
});

const openStore = () => new ContextStore(log, { counter: estimateCounter(), limit: { maxBytes, onLimit: (report) => reached.push(report) } });
/** Text that compresses like real output would not: lines of varied words. */
const output = (bytes: number, seed = 0) => Array.from({ length: Math.ceil(bytes / 12) }, (_, i) => `w${(i * 7919 + seed) % 100_003}\n`.padEnd(12, 'x')).join('').slice(0, bytes);
const databaseBytes = () => (log.database.pragma('page_count', { simple: true }) as number) * (log.database.pragma('page_size', { simple: true }) as number);

function record(store: ContextStore, step: number, text: string) {
  const handle = `step-${step}-call-1`;
  store.append('tool-call', step, { call_id: `c${step}`, name: 'shell', args: { command: 'cat big' }, handle });
  return store.append('tool-result', step, { call_id: `c${step}`, name: 'shell', is_error: false, output: text, omitted_chars: 0, duration_ms: 1, handle });
}

describe('the context store under limits.context_mb', () => {
  it('keeps an output over a sixteenth of the cap as its beginning and end, says so, and keeps smaller ones whole', () => {
    const store = openStore();
    const small = output(10_000);
    expect(record(store, 1, small).data).toMatchObject({ output: small });
    const big = `BEGINNING\n${output(share * 3)}\nTHE END`;
    const event = record(store, 2, big);
    const kept = String(event.data.output);
    expect(kept.startsWith('BEGINNING\n')).toBe(true);
    expect(kept.endsWith('\nTHE END')).toBe(true);
    expect(Buffer.byteLength(kept)).toBeLessThanOrEqual(share);
    expect(kept).toMatch(/\[\.\.\. \d+ characters of this output were not kept: the job's context store keeps at most 128 KB of one tool output \(limits.context_mb is 2 MB\) \.\.\.\]/);
    expect(event.data.dropped_chars).toBe(big.length - kept.length + kept.match(/\n\n\[\.\.\..*\.\.\.\]\n\n/)![0].length);
    // What the store gives back (recall, prompts) is what it kept.
    expect(store.readHandle('step-2-call-1', 0, 10_000_000)?.text).toBe(kept);
    expect(reached).toEqual([{ kind: 'output-cut', message: expect.stringMatching(/a tool output of 384 KB was kept as its first and last 64 KB/) }]);
    record(store, 3, big);
    expect(reached).toHaveLength(1);
  });

  it('is full at its cap: the output that fills it is cut to the room left, and the owner is told once', () => {
    const store = openStore();
    let step = 0;
    while (!reached.some((report) => report.kind === 'full')) {
      step++;
      expect(step, 'the store never filled').toBeLessThan(100);
      record(store, step, output(share, step));
    }
    const last = log.list(0, 100_000).filter((event) => event.type === 'tool-result').at(-1)!;
    expect(String(last.data.output)).toMatch(/the job's context store is full \(limits.context_mb is 2 MB\)/);
    expect(reached.at(-1)!.message).toMatch(/the job's context store reached its limit of 2 MB \(limits.context_mb\)/);
    // Counted, not promised: the database stays near its cap (an output costs about three times its size).
    expect(databaseBytes()).toBeLessThanOrEqual(maxBytes * 1.15);
    record(store, step + 1, output(share, 999));
    expect(reached.filter((report) => report.kind === 'full')).toHaveLength(1);
  });

  it('keeps images within the cap, counting those a resumed job kept before', async () => {
    const store = openStore();
    const images = store.limitImages(memoryImageStore());
    const png = { mediaType: 'image/png' as const, data: Buffer.alloc(share / 2) };
    const ref = await images.save('step-1-call-1', png);
    store.append('tool-result', 1, { call_id: 'c1', name: 'gui', is_error: false, output: 'a screenshot', handle: 'step-1-call-1', images: [ref] });
    await expect(images.save('step-2-call-1', { ...png, data: Buffer.alloc(share + 1) })).rejects.toThrow(/limits.context_mb/);
    expect(reached).toEqual([{ kind: 'image-dropped', message: expect.stringMatching(/an image of 128 KB was not kept: the job's context store keeps at most 128 KB of one output/) }]);

    const resumed = new ContextStore(log, { counter: estimateCounter(), limit: { maxBytes: databaseBytes() + share / 2 + 10, onLimit: (report) => reached.push(report) } });
    // The earlier image counts: one more of the same size no longer fits.
    await expect(resumed.limitImages(memoryImageStore()).save('step-3-call-1', png)).rejects.toThrow(/no room/);
  });
});
