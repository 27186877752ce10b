// Test fixture: a whole workcell (API, scheduler, real runtimes) on a temp data dir and a loopback port, plus
// helpers to follow a job's events over real HTTP and read its zip. Always close it (afterEach/finally).
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import yauzl from 'yauzl';
import { loadConfig, type Config } from '../../src/config.ts';
import { startApp, type App, type Role } from '../../src/app.ts';

export const trajectoriesDir = join(import.meta.dirname, '../fixtures/trajectories');

export interface TestApp extends App {
  dataDir: string;
}

/**
 * `options.role`: what the process does (src/app.ts Role); `options.dataDir`: a data dir shared with other test apps
 * (API replicas and workers on one Postgres), which the caller creates and removes; by default a temp dir of its own.
 */
export async function startTestApp(overrides: Partial<Config> = {}, options: { role?: Role; dataDir?: string } = {}): Promise<TestApp> {
  const dataDir = options.dataDir ?? mkdtempSync(join(tmpdir(), 'workcell-e2e-'));
  chmodSync(dataDir, 0o711); // the sandbox user must be able to reach jobs/<id>/workspace
  // bwrap unless a test asks for another runtime: `auto` would take gVisor wherever a test has started dockerd.
  const config = loadConfig({}, { dataDir, port: 0, scriptDir: trajectoriesDir, logLevel: 'silent', concurrency: 4, modelRetryBaseMs: 50, runtime: 'bwrap', ...overrides });
  const app = await startApp(config, pino({ level: process.env.WORKCELL_TEST_LOG ?? 'silent' }), { role: options.role ?? 'all' });
  return {
    ...app,
    dataDir,
    async close() {
      await app.close();
      if (options.dataDir === undefined) rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

export async function post<T>(app: App, path: string, body: unknown): Promise<{ status: number; body: T }> {
  const response = await fetch(`${app.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  return { status: response.status, body: (await response.json()) as T };
}

export async function get<T>(app: App, path: string): Promise<T> {
  const response = await fetch(`${app.url}${path}`);
  if (!response.ok) throw new Error(`GET ${path}: ${response.status} ${await response.text()}`);
  return (await response.json()) as T;
}

export interface StreamedEvent {
  id: number;
  type: string;
  step: number;
  data: Record<string, unknown>;
}

/** Reads the job's SSE stream over HTTP until the server ends it (the job ended). */
export async function collectEvents(app: App, jobId: string, options: { onEvent?: (event: StreamedEvent) => void; lastEventId?: number } = {}): Promise<StreamedEvent[]> {
  const response = await fetch(`${app.url}/jobs/${jobId}/events`, { headers: options.lastEventId ? { 'last-event-id': String(options.lastEventId) } : {} });
  if (!response.ok || !response.body) throw new Error(`events: ${response.status}`);
  const events: StreamedEvent[] = [];
  let buffer = '';
  const decoder = new TextDecoder();
  for await (const chunk of response.body) {
    buffer += decoder.decode(chunk as Uint8Array, { stream: true });
    let end: number;
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const id = /^id: (\d+)$/m.exec(block)?.[1];
      const data = /^data: (.*)$/m.exec(block)?.[1];
      if (id === undefined || data === undefined) continue;
      const parsed = JSON.parse(data) as { type: string; step: number; data: Record<string, unknown> };
      const event = { id: Number(id), type: parsed.type, step: parsed.step, data: parsed.data };
      events.push(event);
      options.onEvent?.(event);
    }
  }
  return events;
}

export interface ZipEntry {
  name: string;
  kind: 'file' | 'directory' | 'symlink';
  content: string;
  mode: number;
}

/** Reads a zip (as the server sent it) into name → entry. */
export async function readZip(buffer: Buffer): Promise<Map<string, ZipEntry>> {
  const zip = await yauzl.fromBufferPromise(buffer, { lazyEntries: true });
  const entries = new Map<string, ZipEntry>();
  return new Promise((resolve, reject) => {
    zip.on('error', reject);
    zip.on('end', () => resolve(entries));
    zip.on('entry', (entry: yauzl.Entry) => {
      const mode = (entry.externalFileAttributes >>> 16) & 0xffff;
      const kind = entry.fileName.endsWith('/') ? 'directory' : (mode & 0o170000) === 0o120000 ? 'symlink' : 'file';
      if (kind === 'directory') {
        entries.set(entry.fileName, { name: entry.fileName, kind, content: '', mode });
        zip.readEntry();
        return;
      }
      zip.openReadStream(entry, (error, stream) => {
        if (error) return reject(error);
        const chunks: Buffer[] = [];
        stream.on('data', (c: Buffer) => chunks.push(c));
        stream.on('end', () => {
          entries.set(entry.fileName, { name: entry.fileName, kind, content: Buffer.concat(chunks).toString('utf8'), mode });
          zip.readEntry();
        });
      });
    });
    zip.readEntry();
  });
}

export async function downloadZip(app: App, jobId: string): Promise<Map<string, ZipEntry>> {
  const response = await fetch(`${app.url}/jobs/${jobId}/artifacts.zip`);
  if (!response.ok) throw new Error(`artifacts: ${response.status} ${await response.text()}`);
  return readZip(Buffer.from(await response.arrayBuffer()));
}
