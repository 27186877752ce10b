// Containers left by a server that died (their workcell.owner names a process on this host that is gone) are removed
// by reapOrphans at start-up; a container whose owner is alive, or on another host, is left alone.
import { hostname } from 'node:os';
import { describe, expect, it } from 'vitest';
import type { DockerRuntime } from '../../../src/runtimes/docker/docker-runtime.ts';
import { ensureSandboxImage } from '../../../src/runtimes/docker/docker-image.ts';
import { loadConfig } from '../../../src/config.ts';
import { acquireRuntime, skipReason } from './runtimes.ts';

const skip = await skipReason('docker');

describe.skipIf(skip !== undefined)('docker orphans', () => {
  it('removes the containers of dead servers only', async () => {
    const { runtime, release } = await acquireRuntime('docker');
    const docker = (runtime as DockerRuntime).docker;
    const made: string[] = [];
    try {
      const selfStart = (await import('node:fs')).readFileSync(`/proc/${process.pid}/stat`, 'utf8').split(') ')[1]!.split(' ')[19];
      const owners = { dead: `${hostname()}/999999.1`, alive: `${hostname()}/${process.pid}.${selfStart}`, elsewhere: 'another-host/1.1' };
      const image = await ensureSandboxImage(docker, loadConfig());
      for (const [kind, owner] of Object.entries(owners)) {
        const container = await docker.createContainer({ Image: image, Cmd: ['true'], Labels: { 'workcell.sandbox': `sb-reaptest${kind}`, 'workcell.job': 'job_reap', 'workcell.owner': owner } });
        made.push(container.id);
      }
      const report = await runtime.reapOrphans!();
      const left = new Set((await docker.listContainers({ all: true, filters: { label: ['workcell.job=job_reap'] } })).map((container) => container.Id));
      expect(left.has(made[0]!)).toBe(false);
      expect(left.has(made[1]!)).toBe(true);
      expect(left.has(made[2]!)).toBe(true);
      expect(report.dirs.length).toBeGreaterThanOrEqual(1);
    } finally {
      for (const id of made) await docker.getContainer(id).remove({ force: true }).catch(() => undefined);
      await release();
    }
  }, 300_000);
});
