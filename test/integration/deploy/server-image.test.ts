// The server image (deploy/image) built and run as deploy/compose.yaml runs it: an API replica (`serve
// --no-worker`) and a worker (`worker`), each in its own container with exactly the capabilities and security options
// compose.yaml gives that service (read from the file, so the test and the file cannot drift apart), on a test
// Postgres and one shared data dir. A key is created with the image's own CLI, a job is scheduled through the API,
// runs in a bwrap sandbox inside the worker's container, and its files are read back through the API. The containers
// use the host's network (the test Postgres listens on loopback). Everything it makes (containers, the image, the
// data dir, the database) is removed afterwards; the base image (the imported sandbox rootfs) is the docker runtime's,
// kept between runs as it keeps it.
import { spawn } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { buildServerImage } from '../../../deploy/image/build.ts';
import { runCommand } from '../../../src/runtimes/probe.ts';
import { dockerUnavailableReason, useDockerDaemon, type DockerDaemon } from '../../helpers/docker-daemon.ts';
import { createTimings } from '../../helpers/timings.ts';
import { startPostgres, type PostgresCluster } from '../../helpers/postgres.ts';
import { waitUntil } from '../../helpers/sandbox.ts';

const unavailable = dockerUnavailableReason();
if (unavailable !== undefined) console.warn(`skipping the server image test: ${unavailable}`);
const repositoryRoot = fileURLToPath(new URL('../../..', import.meta.url));
const suffix = `${process.pid}-${Date.now().toString(36)}`;
const image = `workcell-server:test-${suffix}`;
const containers = { api: `workcell-test-api-${suffix}`, worker: `workcell-test-worker-${suffix}` };
const dataDirInContainer = '/var/lib/workcell/data';

interface ComposeService {
  cap_add?: string[];
  cap_drop?: string[];
  security_opt?: string[];
  devices?: string[];
  environment?: Record<string, string>;
}

/** The service's privileges as `docker run` flags, and its environment without the values the test replaces. */
function composeService(name: 'api' | 'worker'): { flags: string[]; environment: Record<string, string> } {
  const text = readFileSync(join(repositoryRoot, 'deploy/compose.yaml'), 'utf8').replace(/\$\{[A-Z0-9_]+(:?[-?][^}]*)?\}/g, (_whole: string, rest?: string) => (rest?.startsWith(':-') ? rest.slice(2) : ''));
  const service = (parseYaml(text, { merge: true }) as { services: Record<string, ComposeService> }).services[name]!;
  const flags = [
    ...(service.cap_drop ?? []).flatMap((capability) => ['--cap-drop', capability]),
    ...(service.cap_add ?? []).flatMap((capability) => ['--cap-add', capability]),
    ...(service.security_opt ?? []).flatMap((option) => ['--security-opt', option]),
    ...(service.devices ?? []).flatMap((device) => ['--device', device]),
  ];
  return { flags, environment: service.environment ?? {} };
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => (typeof address === 'object' && address !== null ? resolve(address.port) : reject(new Error('no port'))));
    });
  });
}

/** docker with its output captured; rejects with it when docker fails. */
function docker(args: string[], timeoutMs = 120_000): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn('docker', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString('utf8')));
    child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString('utf8')));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      if (code === 0) resolve(output);
      else reject(new Error(`docker ${args.join(' ')} failed (exit ${code}):\n${output.slice(-4000)}`));
    });
  });
}

const logs = (name: string) => runCommand('docker', ['logs', '--tail', '60', name], { timeoutMs: 30_000 }).then((result) => `${result.stdout}${result.stderr}`);

describe.skipIf(unavailable !== undefined)('the server image (deploy/image) as deploy/compose.yaml runs it', () => {
  let daemon: DockerDaemon | undefined;
  let postgres: PostgresCluster | undefined;
  let dataDir: string | undefined;
  let built = false;
  let apiUrl = '';
  let internalPort = 0;
  let key = '';
  const { timed, summary } = createTimings();

  beforeAll(async () => {
    daemon = await useDockerDaemon();
    const output: string[] = [];
    await timed('build', () => buildServerImage({ tag: image, output: (chunk) => output.push(chunk) })).catch(async (error: unknown) => {
      // A failed build leaves the untagged layers of the steps that passed: the last one goes, and its parents with it.
      const layers = [...output.join('').matchAll(/^ ---> ([0-9a-f]{12})$/gm)].map((match) => match[1]!);
      if (layers.length > 0) await runCommand('docker', ['rmi', layers.at(-1)!], { timeoutMs: 120_000 });
      throw new Error(`${String(error)}\n${output.join('').slice(-4000)}`);
    });
    built = true;
    postgres = await startPostgres();
    const databaseUrl = await postgres.createDatabase();
    dataDir = mkdtempSync(join(tmpdir(), 'workcell-server-image-'));
    chmodSync(dataDir, 0o755); // as a new volume is (deploy/image/Dockerfile): the sandbox user passes through it
    const apiPort = await freePort();
    internalPort = await freePort();
    apiUrl = `http://127.0.0.1:${apiPort}`;
    const common = ['--network', 'host', '-v', `${dataDir}:${dataDirInContainer}`, '-e', `WORKCELL_DATABASE_URL=${databaseUrl}`, '-e', `WORKCELL_DATA_DIR=${dataDirInContainer}`];

    // The key first, with the image's own CLI (the API asks for it from then on).
    const created = await timed('keys create', () => docker(['run', '--rm', ...common, image, 'keys', 'create', '--name', 'deploy-test']));
    key = /\b(wc_key_[A-Za-z0-9_-]+)/.exec(created)?.[1] ?? '';
    expect(key, created).not.toBe('');

    const worker = composeService('worker');
    const workerEnvironment = { ...worker.environment, WORKCELL_INTERNAL_HOST: '127.0.0.1', WORKCELL_INTERNAL_PORT: String(internalPort), WORKCELL_CONCURRENCY: '1', WORKCELL_SCRIPT_DIR: '/fixtures', WORKCELL_MODEL: '', ANTHROPIC_API_KEY: '', OPENAI_API_KEY: '' };
    delete (workerEnvironment as Record<string, string>).WORKCELL_DATABASE_URL;
    await docker([
      'run', '-d', '--name', containers.worker, ...common, ...worker.flags,
      '-v', `${join(repositoryRoot, 'test/fixtures/trajectories')}:/fixtures:ro`,
      ...Object.entries(workerEnvironment).filter(([name]) => name !== 'WORKCELL_DATA_DIR').flatMap(([name, value]) => ['-e', `${name}=${value}`]),
      image, 'worker',
    ]);
    const api = composeService('api');
    await docker([
      'run', '-d', '--name', containers.api, ...common, ...api.flags,
      '-e', 'WORKCELL_HOST=127.0.0.1', '-e', `WORKCELL_PORT=${apiPort}`, '-e', 'WORKCELL_SCRIPT_DIR=/fixtures',
      '-v', `${join(repositoryRoot, 'test/fixtures/trajectories')}:/fixtures:ro`,
      image, 'serve', '--no-worker',
    ]);
  }, 1_200_000);

  afterAll(async () => {
    for (const name of Object.values(containers)) await runCommand('docker', ['rm', '--force', '--volumes', name], { timeoutMs: 60_000 });
    if (built) await runCommand('docker', ['rmi', '--force', image], { timeoutMs: 120_000 });
    await postgres?.stop();
    if (dataDir !== undefined) rmSync(dataDir, { recursive: true, force: true });
    await daemon?.release();
    console.info(`server image test: ${summary()}`);
  }, 300_000);

  it('answers /healthz on the API and on the worker\'s internal route', async () => {
    const healthy = async (url: string) => fetch(url).then((response) => response.ok, () => false);
    await timed('healthy', () =>
      waitUntil(async () => (await healthy(`${apiUrl}/healthz`)) && (await healthy(`http://127.0.0.1:${internalPort}/healthz`)), 120_000, 'the API and the worker to answer /healthz').catch(async (error: unknown) => {
        throw new Error(`${String(error)}\napi:\n${await logs(containers.api)}\nworker:\n${await logs(containers.worker)}`);
      }),
    );
    expect((await fetch(`${apiUrl}/jobs`)).status).toBe(401);
  }, 180_000);

  it('runs a job scheduled on the API in a bwrap sandbox in the worker\'s container, and serves its files', async () => {
    const headers = { authorization: `Bearer ${key}`, 'content-type': 'application/json' };
    const scheduled = await fetch(`${apiUrl}/schedule`, { method: 'POST', headers, body: JSON.stringify({ task: 'write two files', model: 'script:two-files.json' }) });
    expect(scheduled.status, await scheduled.clone().text()).toBe(202);
    const { job_id: jobId } = (await scheduled.json()) as { job_id: string };
    let job: { status: string; error?: string } = { status: 'pending' };
    await timed('job', () =>
      waitUntil(
        async () => {
          job = (await (await fetch(`${apiUrl}/jobs/${jobId}`, { headers })).json()) as typeof job;
          return ['complete', 'error', 'cancelled'].includes(job.status);
        },
        180_000,
        'the job to end',
      ),
    );
    if (job.status !== 'complete') throw new Error(`job ${job.status}: ${job.error ?? ''}\nworker:\n${await logs(containers.worker)}`);
    // What it got (GET /jobs/:id says what was asked for): bwrap, with its cgroup limits, seccomp filter and tmpfs disk.
    const status = (await (await fetch(`${apiUrl}/status/${jobId}`, { headers })).json()) as { runtime: string; isolation: string };
    expect(status.runtime).toBe('bwrap');
    expect(status.isolation).toMatch(/seccomp filter/);
    expect(status.isolation).toMatch(/limits: [\d.]+ CPU, \d+ MB memory, \d+ processes \(cgroup v[12]\)/);
    expect(status.isolation).toMatch(/workspace disk \d+ MB \(tmpfs/);
    expect(status.isolation).not.toMatch(/NOT limited|NO resource limits/);
    const file = await fetch(`${apiUrl}/jobs/${jobId}/files/hello.py`, { headers });
    expect(file.status).toBe(200);
    expect(await file.text()).toBe('print("Hello from workcell")\n');
    // The diff is made on the API replica: its list, and its patch (git, unjailed there: deploy/README.md says why).
    const diff = (await (await fetch(`${apiUrl}/jobs/${jobId}/diff`, { headers })).json()) as { files: Array<{ path: string; change: string }> };
    expect(diff.files).toEqual(expect.arrayContaining([expect.objectContaining({ path: 'hello.py', change: 'added' })]));
    const patch = await fetch(`${apiUrl}/jobs/${jobId}/diff?format=patch`, { headers });
    const patchText = await patch.text();
    expect(patch.status, `${patchText}\napi:\n${await logs(containers.api)}`).toBe(200);
    expect(patchText).toContain('+++ b/hello.py');
    expect(patchText).toContain('+print("Hello from workcell")');
    const zip = await fetch(`${apiUrl}/jobs/${jobId}/artifacts.zip`, { headers });
    expect(zip.status).toBe(200);
    expect((await zip.arrayBuffer()).byteLength).toBeGreaterThan(100);
  }, 240_000);
});
