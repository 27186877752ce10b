// Reapers touch only their own runtime's sandboxes. Containers left by a server that died (their workcell.owner names
// a process on this host that is gone) are removed by the reapOrphans of their own runtime (workcell.runtime) only; a
// container whose owner is alive, or on another host, is left alone. And the bwrap reaper leaves a live docker sandbox
// alone even where its processes look like a bwrap orphan's: labelled like a bwrap sandboxd, in a pid namespace of
// their own, as uid 1000, which is the sandbox uid of a non-root server running as uid 1000.
import { hostname } from 'node:os';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../../src/config.ts';
import { reapBwrapOrphans } from '../../../src/runtimes/bwrap/reap.ts';
import { ensureSandboxImage } from '../../../src/runtimes/docker/docker-image.ts';
import type { DockerRuntime } from '../../../src/runtimes/docker/docker-runtime.ts';
import { acquireRuntime, createRuntimeSandbox, skipReason } from './runtimes.ts';

const skip = await skipReason('docker');

describe.skipIf(skip !== undefined)('docker orphans', () => {
  it("removes the containers of dead servers only, and only its own runtime's", async () => {
    const { runtime, release } = await acquireRuntime('docker');
    const docker = (runtime as DockerRuntime).docker;
    const made = new Map<string, string>();
    try {
      const selfStart = (await import('node:fs')).readFileSync(`/proc/${process.pid}/stat`, 'utf8').split(') ')[1]!.split(' ')[19];
      const dead = `${hostname()}/999999.1`;
      const kinds = {
        dead: { owner: dead, runtime: 'docker' },
        alive: { owner: `${hostname()}/${process.pid}.${selfStart}`, runtime: 'docker' },
        elsewhere: { owner: 'another-host/1.1', runtime: 'docker' },
        gvisor: { owner: dead, runtime: 'gvisor' },
      };
      const image = await ensureSandboxImage(docker, loadConfig());
      for (const [kind, labels] of Object.entries(kinds)) {
        const container = await docker.createContainer({
          Image: image,
          Cmd: ['true'],
          Labels: { 'workcell.sandbox': `sb-reaptest${kind}`, 'workcell.job': 'job_reap', 'workcell.owner': labels.owner, 'workcell.runtime': labels.runtime },
        });
        made.set(kind, container.id);
      }
      const report = await runtime.reapOrphans!();
      const left = new Set((await docker.listContainers({ all: true, filters: { label: ['workcell.job=job_reap'] } })).map((container) => container.Id));
      expect(left.has(made.get('dead')!)).toBe(false);
      expect(left.has(made.get('alive')!)).toBe(true);
      expect(left.has(made.get('elsewhere')!)).toBe(true);
      expect(left.has(made.get('gvisor')!)).toBe(true); // a gVisor container is the gvisor runtime's to reap
      expect(report.dirs.length).toBeGreaterThanOrEqual(1);
    } finally {
      for (const id of made.values()) await docker.getContainer(id).remove({ force: true }).catch(() => undefined);
      await release();
    }
  }, 300_000);

  it('is not reaped by the bwrap reaper, even with the sandbox uid of a non-root server running as uid 1000', async () => {
    const { runtime, release } = await acquireRuntime('docker');
    const fixture = await createRuntimeSandbox(runtime);
    try {
      // The container's guest agent and sandboxd carry `--label sb-...`, run as uid 1000 in their own pid namespace.
      const config = loadConfig();
      const report = await reapBwrapOrphans({ runDir: config.runDir, sandboxUid: 1000, graceMs: 10 * 60_000 });
      expect(report.processes).toEqual([]);
      expect((await fixture.sh('echo alive')).output).toContain('alive');
    } finally {
      await fixture.dispose();
      await release();
    }
  }, 300_000);
});
