// `workcell doctor`: what isolation this host supports, and what to install or change for the rest: each runtime's
// probe (why it is unavailable, or what it runs with), the host's parts (cgroups, Docker, KVM, QEMU, gVisor,
// Firecracker, the rootfs, whether loop devices work for the workspaces' disk limits), and which runtime `auto` takes here.
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { loadConfig } from '../config.ts';
import { errorMessage } from '../errors.ts';
import { createRuntimes, resolveRuntime } from '../runtimes/index.ts';
import { workspaceDiskCheck } from '../jobs/workspace-disk.ts';
import { probeHost } from '../runtimes/probe.ts';

export async function doctor(json: boolean): Promise<number> {
  const config = loadConfig();
  const runtimes = createRuntimes(config);
  const runtimeProbes = await Promise.all(
    [...runtimes.entries()].map(async ([name, runtime]) => {
      const probe = await runtime.probe().catch((error: unknown) => ({ available: false, detail: `probe failed: ${errorMessage(error)}` }));
      return { name, ...probe };
    }),
  );
  // The runtimes' own lines say what each can do; the host's parts follow (its bwrap line is the runtime's).
  const hostProbes = (await probeHost(config)).filter((probe) => probe.name !== 'bwrap').map((probe) => (probe.name === 'docker' ? { ...probe, name: 'docker engine' } : probe));
  const auto = await resolveRuntime('auto', runtimes).then(
    (runtime) => ({ name: 'auto', available: true, detail: `${runtime.name} (order: ${(runtimes.autoOrder ?? []).join(', ')}; WORKCELL_RUNTIME_ORDER)` }),
    (error: unknown) => ({ name: 'auto', available: false, detail: errorMessage(error) }),
  );
  // Where loop devices are missing (a container, a pod), what that costs and the way out (WORKCELL_DISK_LIMIT=tmpfs).
  const disk = await workspaceDiskCheck(config, existsSync(config.dataDir) ? config.dataDir : tmpdir()).catch((error: unknown) => ({ ok: false, detail: `probe failed: ${errorMessage(error)}` }));
  const probes = [...runtimeProbes, auto, ...hostProbes, { name: 'disk limits', available: disk.ok, detail: disk.detail }];
  if (json) {
    console.log(JSON.stringify(probes, null, 2));
  } else {
    const width = Math.max(...probes.map((p) => p.name.length));
    for (const probe of probes) console.log(`${probe.available ? 'yes' : ' no'}  ${probe.name.padEnd(width)}  ${probe.detail}`);
  }
  // Exit 0 when at least one sandbox runtime can run jobs here.
  return runtimeProbes.some((p) => p.available) ? 0 : 1;
}
