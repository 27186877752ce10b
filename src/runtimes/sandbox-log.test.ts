import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { SandboxLog, sandboxLogMarker } from './sandbox-log.ts';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'workcell-sandbox-log-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

/** Writes `chunks` the way a runtime does (write after write, never waiting), then closes the log. */
async function feed(log: SandboxLog, chunks: Buffer[]): Promise<void> {
  for (const chunk of chunks) log.write(chunk);
  await log.close();
}

describe('SandboxLog', () => {
  it('appends what the sandbox prints up to its cap, then one marker line, then drops everything', async () => {
    const reached: number[] = [];
    const log = new SandboxLog(dir, { maxBytes: 10_000, onLimit: () => reached.push(1) });
    await feed(log, Array.from({ length: 100 }, (_, i) => Buffer.from(`line ${i} ${'x'.repeat(200)}\n`)));
    const content = readFileSync(join(dir, 'sandbox.log'), 'utf8');
    expect(content.length).toBe(10_000);
    expect(content.startsWith('line 0 ')).toBe(true);
    expect(content.endsWith(sandboxLogMarker(10_000))).toBe(true);
    expect(sandboxLogMarker(10_000)).toMatch(/reached its limit of 10 KB \(limits.sandbox_log_mb\)/);
    expect(reached).toHaveLength(1);
    expect(log.full).toBe(true);
  });

  it('counts what the file already holds (a resumed job), and adds nothing to a full one', async () => {
    writeFileSync(join(dir, 'sandbox.log'), 'a'.repeat(700));
    const first = new SandboxLog(dir, { maxBytes: 1000 });
    expect(first.startSize).toBe(700);
    await feed(first, [Buffer.from('b'.repeat(500))]);
    const content = readFileSync(join(dir, 'sandbox.log'), 'utf8');
    expect(content).toMatch(/^a{700}b+\n\[workcell\] sandbox.log reached its limit/);
    expect(content.length).toBe(1000);

    const reached: number[] = [];
    const second = new SandboxLog(dir, { maxBytes: 1000, onLimit: () => reached.push(1) });
    await feed(second, [Buffer.from('c'.repeat(10))]);
    expect(readFileSync(join(dir, 'sandbox.log'), 'utf8')).toBe(content);
    expect(reached).toHaveLength(1);
  });

  it('writes everything below the cap, in order', async () => {
    const log = new SandboxLog(dir, { maxBytes: 1 << 20 });
    await feed(log, [Buffer.from('one\n'), Buffer.from('two\n')]);
    expect(readFileSync(join(dir, 'sandbox.log'), 'utf8')).toBe('one\ntwo\n');
    expect(log.full).toBe(false);
  });
});
