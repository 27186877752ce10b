import { appendFileSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { text } from 'node:stream/consumers';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { AuditLog, readAuditLog, type AuditEntry } from './audit-log.ts';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'workcell-audit-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

const lines = (path: string) =>
  readFileSync(path, 'utf8')
    .trimEnd()
    .split('\n')
    .map((line) => JSON.parse(line) as AuditEntry);

describe('AuditLog', () => {
  it('appends one JSON object per line, each with its time and step', () => {
    const path = join(dir, 'audit.jsonl');
    let step = 1;
    const log = new AuditLog(path, { currentStep: () => step });
    log.file({ op: 'write', path: 'notes.txt', ok: true });
    step = 2;
    log.file({ op: 'read', path: '../../etc/passwd', ok: false, error: 'path_outside_workspace' });
    log.network({ time: '2026-01-01T00:00:00.000Z', step: 1, method: 'CONNECT', host: 'example.com', port: 443, ip: '93.184.215.14', allowed: true, status: 200, bytes_in: 10, bytes_out: 20, duration_ms: 5 });
    log.network({ time: '2026-01-01T00:00:01.000Z', step: undefined, method: 'GET', url: 'http://x.test/', host: 'x.test', port: 80, ip: null, allowed: false, reason: 'not listed', status: 403, bytes_in: 0, bytes_out: 0, duration_ms: 1 });
    log.close();
    log.file({ op: 'list', path: '.', ok: true }); // after close: dropped
    const entries = lines(path);
    expect(entries).toHaveLength(4);
    expect(entries[0]).toMatchObject({ type: 'file', op: 'write', path: 'notes.txt', ok: true, step: 1 });
    expect(entries[0]).not.toHaveProperty('error');
    expect(entries[1]).toMatchObject({ type: 'file', op: 'read', ok: false, error: 'path_outside_workspace', step: 2 });
    expect(entries[2]).toMatchObject({ type: 'network', host: 'example.com', allowed: true, step: 1, time: '2026-01-01T00:00:00.000Z' });
    expect(entries[3]).toMatchObject({ type: 'network', allowed: false, reason: 'not listed', step: 2 });
    expect(String(entries[0]!.time)).toMatch(/^\d{4}-\d\d-\d\dT/);
  });

  it('stops at its cap with one last entry that says so, and tells its owner once', () => {
    const path = join(dir, 'audit.jsonl');
    const reached: string[] = [];
    const log = new AuditLog(path, { currentStep: () => 3, maxBytes: 4096, onLimit: (message) => reached.push(message) });
    for (let i = 0; i < 200; i++) log.network({ time: '2026-01-01T00:00:00.000Z', step: 3, method: 'GET', url: `http://x.test/${'a'.repeat(100)}`, host: 'x.test', port: 80, ip: null, allowed: false, reason: 'not listed', status: 403, bytes_in: 0, bytes_out: 0, duration_ms: 1 });
    log.file({ op: 'write', path: 'late.txt', ok: true });
    log.close();
    expect(readFileSync(path).length).toBeLessThanOrEqual(4096);
    const entries = lines(path);
    expect(entries.length).toBeGreaterThan(10);
    expect(entries.at(-1)).toMatchObject({ type: 'limit', limit: 'audit_log_mb', max_bytes: 4096, step: 3 });
    expect(entries.filter((entry) => entry.type === 'limit')).toHaveLength(1);
    expect(reached).toEqual([expect.stringMatching(/audit.jsonl reached its limit of 4 KB \(limits.audit_log_mb\)/)]);

    // A resumed job appends to the same file: what is there counts, and a full file takes nothing more.
    const again = new AuditLog(path, { currentStep: () => 4, maxBytes: 4096, onLimit: (message) => reached.push(message) });
    again.file({ op: 'read', path: 'x', ok: true });
    again.close();
    expect(lines(path)).toEqual(entries);
    expect(reached).toHaveLength(2);
  });

  it('never follows a symlink at its path', () => {
    const target = join(dir, 'elsewhere');
    writeFileSync(target, 'untouched');
    const path = join(dir, 'audit.jsonl');
    symlinkSync(target, path);
    const log = new AuditLog(path, { currentStep: () => 0 });
    log.file({ op: 'write', path: 'a', ok: true });
    log.close();
    expect(readFileSync(target, 'utf8')).toBe('untouched');
  });
});

describe('readAuditLog', () => {
  it('streams complete lines, after a line number, and nothing for a missing or empty file', async () => {
    const path = join(dir, 'audit.jsonl');
    expect(await text(await readAuditLog(path))).toBe('');
    writeFileSync(path, '');
    expect(await text(await readAuditLog(path))).toBe('');
    const all = Array.from({ length: 5000 }, (_, i) => `{"n":${i}}\n`).join('');
    writeFileSync(path, all);
    expect(await text(await readAuditLog(path))).toBe(all);
    expect(await text(await readAuditLog(path, 4998))).toBe('{"n":4998}\n{"n":4999}\n');
    expect(await text(await readAuditLog(path, 5000))).toBe('');
    expect(await text(await readAuditLog(path, 9999))).toBe('');
    // A line still being written is held back until it is complete.
    appendFileSync(path, '{"n":5000');
    expect(await text(await readAuditLog(path, 4999))).toBe('{"n":4999}\n');
  });
});
