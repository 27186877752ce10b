// The system-call filter on every runtime (issue 9), probed with raw calls (python3 ctypes) in a real sandbox:
//   - AF_VSOCK sockets and modify_ldt are refused everywhere: by bwrap's filter, by the filter stacked on Docker's
//     default profile (docker, gvisor), and by the filter on sandboxd in the microVM's guest kernel; io_uring_setup
//     (which Docker's default profile and gVisor let through) shows that workcell's own filter is the one answering;
//   - threads still start: clone3 gets ENOSYS, so glibc falls back to clone (under gVisor the default profile alone
//     answers EPERM, and no thread would start);
//   - docker and gvisor are never weaker than a plain `docker run` of the same image: every system call number that
//     Docker's default profile refuses there (EPERM in a plain run, and not EPERM with seccomp=unconfined, which
//     leaves the kernel's own refusals) is refused (EPERM or ENOSYS) in a workcell sandbox too.
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../../src/config.ts';
import { ensureSandboxImage } from '../../../src/runtimes/docker/docker-image.ts';
import type { DockerRuntime } from '../../../src/runtimes/docker/docker-runtime.ts';
import { findExecutable, runCommand } from '../../../src/runtimes/probe.ts';
import { hostSeccompArch, syscallNumber } from '../../../src/runtimes/seccomp.ts';
import { escapeProbeCalls, parseProbe, parseSweep, probeCommand, probeScript, syscallSweepScript } from '../../helpers/syscall-probes.ts';
import { acquireRuntime, runtimeCases, skipReason, useRuntimeSandbox } from './runtimes.ts';

const arch = hostSeccompArch()!;
/** Past the newest system call of current kernels (x86_64 and the generic table): unknown numbers are swept too. */
const lastSyscall = 463;

for (const runtimeCase of runtimeCases) {
  const skip = await skipReason(runtimeCase.name);
  if (skip !== undefined) console.warn(`skipping the ${runtimeCase.name} seccomp tests: ${skip}`);
  const timeout = runtimeCase.slow ? 600_000 : 300_000;
  const docker = runtimeCase.name === 'docker' || runtimeCase.name === 'gvisor';

  describe.skipIf(skip !== undefined)(`seccomp on ${runtimeCase.name}`, () => {
    const sandbox = useRuntimeSandbox(runtimeCase.name, timeout);

    it('refuses AF_VSOCK sockets and modify_ldt, and the answer is workcell\'s filter', async () => {
      const result = await sandbox().sh(probeCommand(probeScript(escapeProbeCalls(arch))), timeout / 2);
      expect(Object.fromEntries(parseProbe(result.output)), result.output).toEqual({
        'socket-vsock': 'EPERM',
        'socketpair-vsock': 'EPERM',
        ...(arch === 'x86_64' ? { modify_ldt: 'EPERM' } : {}),
        io_uring_setup: 'EPERM',
        'socket-unix': 'OK',
      });
      const vsock = await sandbox().sh(`python3 -c 'import socket; socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)' 2>&1 | tail -1`, timeout / 2);
      expect(vsock.output).toMatch(/PermissionError: \[Errno 1\] Operation not permitted/);
      expect(sandbox().sandbox.isolation).toContain('seccomp filter');
    }, timeout);

    it('starts threads (clone3 answers ENOSYS, glibc falls back to clone), in python and in node', async () => {
      const clone3 = await sandbox().sh(probeCommand(probeScript([{ name: 'clone3', number: syscallNumber(arch, 'clone3')!, args: [0, 0] }])), timeout / 2);
      expect(clone3.output.trim()).toBe('clone3 ENOSYS');
      const threads = await sandbox().sh(
        `python3 -c "import threading; t = threading.Thread(target=lambda: print('python-thread')); t.start(); t.join()" && ` +
          `node -e "new (require('node:worker_threads').Worker)('1', { eval: true }).on('exit', () => console.log('node-worker'))"`,
        timeout / 2,
      );
      expect(threads.output.trim().split('\n')).toEqual(['python-thread', 'node-worker']);
    }, timeout);

    // Three sweeps of every call number at once (two plain containers and the sandbox), each a few hundred forks: under
    // gVisor's ptrace platform each takes about 45 s on an idle machine.
    const sweepTimeout = 900_000;
    it.runIf(docker)('is never weaker than a plain docker run: every call Docker\'s default profile refuses is refused', async () => {
      const { runtime, release } = await acquireRuntime(runtimeCase.name);
      try {
        const config = loadConfig();
        const image = await ensureSandboxImage((runtime as DockerRuntime).docker, config);
        const script = syscallSweepScript(arch, lastSyscall);
        const dockerCli = findExecutable('docker')!;
        const runtimeFlags = runtimeCase.name === 'gvisor' ? ['--runtime', config.gvisorRuntime] : [];
        const plainRun = async (flags: string[]) => {
          const run = await runCommand(dockerCli, ['run', '--rm', ...runtimeFlags, ...flags, image, 'python3', '-c', script], { timeoutMs: sweepTimeout - 60_000 });
          expect(run.ok, run.stderr).toBe(true);
          return parseSweep(run.stdout);
        };
        const [plain, unconfined, ours] = await Promise.all([
          plainRun([]),
          plainRun(['--security-opt', 'seccomp=unconfined']),
          sandbox().sh(probeCommand(script), sweepTimeout - 60_000).then((result) => parseSweep(result.output)),
        ]);
        const swept = plain.size;
        expect(swept).toBeGreaterThan(lastSyscall - 20);
        expect(ours.size).toBe(swept);
        // Refused by Docker's profile: EPERM in the plain run, where the kernel itself (root, default capabilities,
        // no no-new-privileges) does not refuse it.
        const refusedByProfile = [...plain].filter(([number, answer]) => answer === 'EPERM' && unconfined.get(number) !== 'EPERM').map(([number]) => number);
        expect(refusedByProfile.length).toBeGreaterThan(100);
        const weaker = refusedByProfile.filter((number) => !['EPERM', 'ENOSYS'].includes(ours.get(number) ?? 'missing')).map((number) => `${number}: ${ours.get(number)}`);
        expect(weaker).toEqual([]);
        // And workcell's filter adds to it: io_uring_setup never reaches the kernel in workcell's (Docker's own
        // profile refuses it only from Docker 25 on; Debian 12 ships 20.10).
        const ioUringSetup = syscallNumber(arch, 'io_uring_setup')!;
        expect(unconfined.get(ioUringSetup)).not.toBe('EPERM');
        expect(ours.get(ioUringSetup)).toBe('EPERM');
      } finally {
        await release();
      }
    }, sweepTimeout);
  });
}
