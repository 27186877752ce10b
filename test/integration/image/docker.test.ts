// image/Dockerfile builds and its image runs sandboxd. No registry is reachable here, so the base image is the
// built rootfs imported into Docker (the recipe's scripts then find everything installed and change nothing); the
// build itself runs exactly as a user's would, through image/build-docker-image.ts. Everything this test creates
// (images, container, and dockerd when it had to start it) is removed afterwards.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { chmod, chown, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../../src/config.ts';
import { ensureRootfs, rootfsRecipeHash, sandboxNativeModulesDir } from '../../../src/runtimes/image.ts';
import { runCommand } from '../../../src/runtimes/probe.ts';
import { SandboxdClient } from '../../../src/runtimes/sandboxd-client.ts';
import { waitUntil } from '../../helpers/sandbox.ts';
import { dockerUnavailableReason, useDockerDaemon, type DockerDaemon } from '../../helpers/docker-daemon.ts';
import { createTimings } from '../../helpers/timings.ts';

const unavailable = dockerUnavailableReason();
if (unavailable !== undefined) console.warn(`skipping the image/Dockerfile test: ${unavailable}`);
const repositoryRoot = fileURLToPath(new URL('../../..', import.meta.url));
const suffix = `${rootfsRecipeHash().slice(0, 12)}-${process.pid}`;
const baseImage = `workcell-base:test-${suffix}`;
const sandboxImage = `workcell-sandbox:test-${suffix}`;
const container = `workcell-test-${suffix}`;

/** Runs a command with its output captured; rejects with the output when it fails. */
function run(command: string, args: string[], options: { stdin?: NodeJS.ReadableStream; timeoutMs?: number } = {}): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd: repositoryRoot, stdio: [options.stdin === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'] });
    let output = '';
    child.stdout?.on('data', (chunk: Buffer) => (output += chunk.toString('utf8')));
    child.stderr?.on('data', (chunk: Buffer) => (output += chunk.toString('utf8')));
    if (options.stdin !== undefined && child.stdin !== null) options.stdin.pipe(child.stdin);
    const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 300_000);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      if (code === 0) resolve(output);
      else reject(new Error(`${command} ${args.join(' ')} failed (${signal ?? `exit ${code}`}):\n${output.slice(-4000)}`));
    });
  });
}

describe.skipIf(unavailable !== undefined)('image/Dockerfile', () => {
  let daemon: DockerDaemon | undefined;
  let docker = 'docker';
  let tokenDir: string | undefined;
  const { timed, summary } = createTimings();

  beforeAll(async () => {
    daemon = await timed('dockerd', () => useDockerDaemon());
    docker = daemon.docker;
  }, 60_000);

  afterAll(async () => {
    if (daemon === undefined) return;
    await runCommand(docker, ['rm', '--force', '--volumes', container], { timeoutMs: 30_000 });
    await runCommand(docker, ['rmi', '--force', sandboxImage, baseImage], { timeoutMs: 60_000 });
    if (tokenDir !== undefined) await rm(tokenDir, { recursive: true, force: true });
    await daemon.release();
    console.info(`docker image test: ${summary()}`);
  }, 120_000);

  it('builds from the imported rootfs and runs sandboxd, reachable with its token only', async () => {
    const rootfs = ensureRootfs(loadConfig());
    await timed('import rootfs', async () => {
      const tar = spawn('tar', ['-C', rootfs, '-c', '.'], { stdio: ['ignore', 'pipe', 'inherit'] });
      const tarExit = once(tar, 'exit');
      await run(docker, ['import', '-', baseImage], { stdin: tar.stdout, timeoutMs: 300_000 });
      expect((await tarExit)[0], 'tar of the rootfs').toBe(0);
    });
    await timed('docker build', () => run(process.execPath, ['image/build-docker-image.ts', '--build-arg', `BASE=${baseImage}`, '-t', sandboxImage], { timeoutMs: 600_000 }));

    // The token as a file for --token-file, in a directory the container's user (uid 1000) owns, so sandboxd can
    // delete it once read.
    tokenDir = await mkdtemp(join(tmpdir(), 'workcell-docker-token-'));
    const token = `docker-test-${process.pid}-${Date.now()}`;
    await writeFile(join(tokenDir, 'token'), `${token}\n`, { mode: 0o600 });
    await chown(join(tokenDir, 'token'), 1000, 1000);
    await chown(tokenDir, 1000, 1000);
    await chmod(tokenDir, 0o700);
    await timed('docker run', () =>
      run(docker, ['run', '--detach', '--name', container, '--publish', '127.0.0.1::8000', '--volume', `${tokenDir}:/run/workcell-token`, sandboxImage, '--token-file', '/run/workcell-token/token']),
    );
    await timed('sandboxd ready', () =>
      waitUntil(async () => (await runCommand(docker, ['logs', container], { timeoutMs: 10_000 })).stdout.includes('"ready":true'), undefined, 'the ready line of sandboxd in the container'),
    );
    const logs = await runCommand(docker, ['logs', container], { timeoutMs: 10_000 });
    expect(JSON.parse(logs.stdout.split('\n')[0] ?? '')).toMatchObject({ ready: true, port: 8000 });
    expect(await readdir(tokenDir)).toEqual([]);

    const published = (await run(docker, ['port', container, '8000/tcp'])).trim().split('\n')[0] ?? '';
    const port = Number(/:(\d+)$/.exec(published)?.[1]);
    expect(port).toBeGreaterThan(0);
    const client = new SandboxdClient({ host: '127.0.0.1', port }, token);
    const stranger = new SandboxdClient({ host: '127.0.0.1', port }, 'not-the-token');
    try {
      expect(await client.healthy()).toBe(true);
      expect(await stranger.healthy()).toBe(false);
      const result = await client.call('shellExec', {
        command: `id -u; pwd; ps -o comm= -p 1; node -e "require('${sandboxNativeModulesDir}/node-pty'); console.log('node-pty')"; jupyter kernelspec list 2>/dev/null | awk 'NR > 1 { print $1 }' | sort | paste -sd,`,
      });
      expect(result.output.trim().split('\n')).toEqual(['1000', '/workspace', 'tini', 'node-pty', 'jslab,python3,tslab']);
    } finally {
      client.close();
      stranger.close();
    }
  }, 900_000);
});
