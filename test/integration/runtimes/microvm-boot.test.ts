// A microVM whose guest does not come up says why: the last lines of its console are in the job's error, its final
// event and its orchestrator.log (the whole console in sandbox.log). The guest kernel is this host's real one with one
// of the modules its init loads broken (one byte of its vermagic changed: the guest kernel refuses it, its signature or
// its version no longer matching, as it refuses a module of another build): the guest boots, the init cannot find its
// disks and powers the VM off.
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../../src/config.ts';
import { findGuestKernel } from '../../../src/runtimes/microvm/kernel.ts';
import { guestModules } from '../../../src/runtimes/microvm/kernel-modules.ts';
import { collectEvents, get, post, startTestApp, type TestApp } from '../../helpers/app.ts';
import { skipReason } from './runtimes.ts';

const skip = await skipReason('microvm');
if (skip !== undefined) console.warn(`skipping the microVM boot-failure test: ${skip}`);
const timeoutMs = 600_000;

/** The host's guest kernel with `broken` given a vermagic no kernel has; the other modules as they are. */
async function kernelWithBrokenModule(dir: string): Promise<string> {
  const kernel = findGuestKernel(loadConfig());
  const modules = await guestModules(kernel.modulesDir, kernel.version);
  // The first module the init needs for its disks that this kernel does not build in.
  const broken = modules.load.find((module) => module.name === 'virtio_mmio' || module.name === 'virtio_blk');
  if (broken === undefined) throw new Error(`the guest kernel ${kernel.version} builds virtio_mmio and virtio_blk in: nothing to break`);
  mkdirSync(join(dir, 'boot'));
  // A link to the real vmlinuz: the decompressed vmlinux is cached by its size and mtime, so it is not made again.
  symlinkSync(kernel.vmlinuz, join(dir, 'boot', `vmlinuz-${kernel.version}`));
  const modulesDir = join(dir, 'lib/modules', kernel.version);
  mkdirSync(join(modulesDir, 'kernel'), { recursive: true });
  writeFileSync(join(modulesDir, 'modules.builtin'), readFileSync(join(kernel.modulesDir, 'modules.builtin')));
  for (const module of modules.load) {
    let data = module.data;
    if (module === broken) {
      data = Buffer.from(module.data);
      const at = data.indexOf('\0vermagic=') + '\0vermagic='.length;
      expect(at).toBeGreaterThan(10);
      data[at] = 'X'.charCodeAt(0);
    }
    writeFileSync(join(modulesDir, 'kernel', `${module.name}.ko`), data);
  }
  return broken.name;
}

describe.skipIf(skip !== undefined)('a microVM that does not start', () => {
  let kernelDir: string;
  let broken: string;
  let app: TestApp | undefined;
  beforeAll(async () => {
    kernelDir = mkdtempSync(join(tmpdir(), 'workcell-broken-kernel-'));
    broken = await kernelWithBrokenModule(kernelDir);
    app = await startTestApp({ microvmKernelDir: kernelDir });
  }, timeoutMs);
  afterAll(async () => {
    await app?.close();
    rmSync(kernelDir, { recursive: true, force: true });
  }, timeoutMs);

  it('reports the tail of its console in the job\'s error, its events and its logs', async () => {
    const scheduled = await post<{ job_id: string }>(app!, '/schedule', { task: 'two files', model: 'script:two-files.json', runtime: 'microvm' });
    expect(scheduled.status).toBe(202);
    const jobId = scheduled.body.job_id;
    const events = await collectEvents(app!, jobId);
    const status = await get<{ status: string; error?: string }>(app!, `/status/${jobId}`);
    expect(status.status).toBe('error');
    const error = status.error ?? '';
    expect(error).toMatch(/^the microVM did not start: the VM exited before sandboxd was ready .*; the last lines of its console/s);
    // The init's own words, after the kernel's refusal of the module.
    expect(error).toContain(`workcell-init: cannot load the module ${broken}`);
    expect(error).toContain('workcell-init: no rootfs disk (label workcell-root)');
    const final = events.at(-1);
    expect(final).toMatchObject({ type: 'job-status', data: { status: 'error', error } });
    const logs = join(app!.dataDir, 'jobs', jobId, 'logs');
    expect(readFileSync(join(logs, 'orchestrator.log'), 'utf8')).toContain(`workcell-init: cannot load the module ${broken}`);
    const console = readFileSync(join(logs, 'sandbox.log'), 'utf8');
    expect(console).toContain('workcell-init: no rootfs disk');
    expect(console).toContain(`insmod: can't insert '/lib/modules/${broken}.ko'`);
  }, timeoutMs);
});
