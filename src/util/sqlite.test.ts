import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
import { afterAll, describe, expect, it } from 'vitest';

const dir = mkdtempSync(join(tmpdir(), 'workcell-sqlite-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

// Each child says it is ready, waits for the go file, then opens the log: all of them open the new file together.
const child = join(dir, 'open-log.mjs');
writeFileSync(
  child,
  `import { existsSync } from 'node:fs';
import { EventLog } from ${JSON.stringify(fileURLToPath(new URL('../jobs/event-log.ts', import.meta.url)))};
const [path, go] = process.argv.slice(2);
process.stdout.write('ready\\n');
while (!existsSync(go)) {}
try {
  const log = new EventLog('job', path, { first: { time: '2026-01-01T00:00:00.000Z', data: { status: 'pending' } } });
  process.stdout.write('events ' + log.list(0, 10).length + '\\n');
  log.close();
} catch (error) {
  process.stdout.write('failed: ' + error.message + '\\n');
}
`,
);

async function openTogether(path: string, processes: number): Promise<string[]> {
  const go = `${path}.go`;
  const children = Array.from({ length: processes }, () => spawn(process.execPath, [child, path, go], { stdio: ['ignore', 'pipe', 'inherit'] }));
  const outputs = children.map((proc) => {
    let text = '';
    proc.stdout.on('data', (data: Buffer) => (text += data.toString()));
    return { proc, text: () => text };
  });
  await expect.poll(() => outputs.every((output) => output.text().startsWith('ready\n')), { timeout: 60_000, interval: 20 }).toBe(true);
  writeFileSync(go, '');
  await Promise.all(children.map((proc) => new Promise((resolve) => proc.once('exit', resolve))));
  return outputs.map((output) => output.text().slice('ready\n'.length).trim());
}

describe('opening a new SQLite database from several processes at once', () => {
  it('migrates it once and puts it in WAL mode, with no process failing', async () => {
    for (let round = 0; round < 5; round++) {
      const path = join(dir, `context-${round}.db`);
      expect(existsSync(path)).toBe(false);
      expect(await openTogether(path, 4)).toEqual(['events 1', 'events 1', 'events 1', 'events 1']);
      const db = new Database(path, { readonly: true });
      expect(db.pragma('journal_mode', { simple: true })).toBe('wal');
      expect((db.prepare('SELECT count(*) AS n FROM events').get() as { n: number }).n).toBe(1);
      db.close();
    }
  }, 120_000);
});
