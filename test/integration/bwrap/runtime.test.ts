// The runtime around the sandbox: probing, choosing, start-up failures, cancellation, the sandbox log.
import { chmod, mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../../src/config.ts';
import { WorkcellError } from '../../../src/errors.ts';
import { BwrapRuntime } from '../../../src/runtimes/bwrap/bwrap-runtime.ts';
import { createRuntimes, resolveRuntime } from '../../../src/runtimes/index.ts';
import { probeHost } from '../../../src/runtimes/probe.ts';
import { testRuntime, withSandbox } from '../../helpers/sandbox.ts';

async function temporaryJobDir(): Promise<{ root: string; workspace: string; logDir: string }> {
  const root = await mkdtemp(join(tmpdir(), 'workcell-test-'));
  await chmod(root, 0o711);
  const workspace = join(root, 'workspace');
  await mkdir(workspace);
  return { root, workspace, logDir: join(root, 'logs') };
}

describe('bwrap runtime', () => {
  it('probes as available here', async () => {
    const probe = await testRuntime().probe();
    expect(probe.detail).toMatch(/bubblewrap \d+\.\d+/);
    expect(probe.available).toBe(true);
  });

  it('is what auto resolves to when it is the only runtime in the order', async () => {
    const runtimes = createRuntimes(loadConfig(process.env, { runtimeOrder: ['bwrap'] }));
    expect((await resolveRuntime('auto', runtimes)).name).toBe('bwrap');
    expect((await resolveRuntime('bwrap', runtimes)).name).toBe('bwrap');
    await expect(resolveRuntime('nonsense', runtimes)).rejects.toThrow(/unknown runtime/);
  });

  it('is unavailable, saying how to fix it, when the rootfs is not built', async () => {
    const config = loadConfig(process.env, { imageDir: join(tmpdir(), 'workcell-no-such-image-dir') });
    const runtimes = createRuntimes({ ...config, runtimeOrder: ['bwrap'] });
    await expect(resolveRuntime('auto', runtimes)).rejects.toThrow(/rootfs not built: run `workcell image build` or scripts\/setup.sh/);
    const probe = await runtimes.get('bwrap')!.probe();
    expect(probe.available).toBe(false);
    expect(probe.detail).toMatch(/scripts\/setup.sh/);
  });

  // Each probe is bounded (probe.test.ts: a command that hangs is given up); how fast they answer is the host's load.
  it('doctor probes the host and never throws', async () => {
    const probes = await probeHost(loadConfig());
    expect(probes.map((probe) => probe.name)).toEqual(['bwrap', 'cgroups', 'docker', 'kvm', 'qemu', 'runsc', 'firecracker', 'rootfs']);
    expect(probes.find((probe) => probe.name === 'bwrap')?.available).toBe(true);
    expect(probes.find((probe) => probe.name === 'rootfs')?.available).toBe(true);
    for (const probe of probes) expect(probe.detail.length).toBeGreaterThan(0);
  });

  // How fast a sandbox starts is measured by bench/ against a baseline, not asserted here: it is the host's load.
  it('writes sandboxd diagnostics to logs/sandbox.log', async () => {
    await withSandbox(async ({ logDir, sh }) => {
      expect((await sh('echo ok')).output).toBe('ok\n');
      expect(await readFile(join(logDir, 'sandbox.log'), 'utf8')).toMatch(/listening/);
    });
  });

  it('fails with the end of the log when sandboxd does not start, and cleans up', async () => {
    const { root, workspace, logDir } = await temporaryJobDir();
    try {
      const broken = join(root, 'broken.mjs');
      await writeFile(broken, "process.stderr.write('sandboxd exploded on purpose\\n'); process.exit(3);\n", { mode: 0o644 });
      const config = loadConfig();
      const runtime = new BwrapRuntime({ config, sandboxdBundlePath: async () => broken });
      const before = await readdir(config.runDir).catch((): string[] => []);
      const error = await runtime.create({ jobId: 'job_broken', workspaceDir: workspace, logDir }).catch((caught: unknown) => caught);
      expect(error).toBeInstanceOf(WorkcellError);
      expect((error as WorkcellError).code).toBe('sandbox_failed');
      expect((error as WorkcellError).message).toMatch(/exit code 3[\s\S]*sandboxd exploded on purpose/);
      expect((await readdir(config.runDir)).filter((name) => !before.includes(name))).toEqual([]);
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });

  it('stops starting when aborted', async () => {
    const { root, workspace, logDir } = await temporaryJobDir();
    try {
      const silent = join(root, 'silent.mjs');
      // Never prints a ready line.
      await writeFile(silent, 'setInterval(() => {}, 1000);\n', { mode: 0o644 });
      const runtime = new BwrapRuntime({ config: loadConfig(), sandboxdBundlePath: async () => silent });
      const controller = new AbortController();
      const creating = runtime.create({ jobId: 'job_abort', workspaceDir: workspace, logDir }, controller.signal);
      setTimeout(() => controller.abort(new Error('cancelled by the test')), 300);
      await expect(creating).rejects.toThrow('cancelled by the test');
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });

  it('gives the workspace, and what is already in it, to the sandbox user', async () => {
    const { root, workspace, logDir } = await temporaryJobDir();
    try {
      await mkdir(join(workspace, 'input'));
      await writeFile(join(workspace, 'input', 'data.csv'), 'a,b\n');
      const runtime = testRuntime();
      const sandbox = await runtime.create({ jobId: 'job_input', workspaceDir: workspace, logDir });
      try {
        const result = await sandbox.client.call('shellExec', { command: 'echo c,d >> input/data.csv && cat input/data.csv' });
        expect(result.output).toBe('a,b\nc,d\n');
      } finally {
        await sandbox.destroy();
      }
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });
});
