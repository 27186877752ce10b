// The guest agent: runs inside a sandbox that the host reaches through one byte stream (a container's stdin/stdout,
// a microVM's virtio-serial port or vsock) and carries everything over it (../stream-mux/stream-mux.ts):
//   node guest-agent.mjs --carrier stdio|DEVICE|vsock:PORT --sandboxd-socket PATH [--proxy-socket PATH]
//        [--cgroup DIR --memory-mb N --pids N --cpus N] [--run-as UID:GID] [--seccomp] [--statfs /workspace,/tmp]
//        -- COMMAND...
// It reads the token (the host's first line), starts COMMAND (sandboxd) with the token on its stdin, forwards
// sandboxd's ready line, and then bridges: channels the host opens to `sandboxd` reach sandboxd's unix socket;
// connections to the proxy socket (which sandboxd bridges to 127.0.0.1:3128) become channels to the host's egress
// proxy; `control:counters` and `control:stop-processes` are answered here. In a microVM (where it runs as the
// guest's root) it also puts sandboxd in a cgroup with the sandbox's memory, pids and CPU limits and starts it as
// the unprivileged user, under the sandbox's seccomp filter (--seccomp: ../seccomp-launcher.ts; the agent itself stays
// outside it, as it must open its vsock channel; in a container the filter is on before the agent starts). It exits
// with sandboxd; it never logs to stdout (in a container, stdout is the carrier).
// What it reports is the guest's word: the host uses it only to tell the agent which limit it hit.
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, createReadStream, createWriteStream, existsSync, openSync, readdirSync, readFileSync } from 'node:fs';
import { chmod, mkdir, readFile, rm, statfs, writeFile } from 'node:fs/promises';
import { createServer, connect, type Socket } from 'node:net';
import type { Readable, Writable } from 'node:stream';
import { parseArgs } from 'node:util';
import { seccompLauncher } from '../seccomp-launcher.ts';
import { hostSeccompProgram } from '../seccomp.ts';
import { bridgeChannel, readFirstLine, StreamMux, type MuxChannel } from '../stream-mux/stream-mux.ts';

const log = (message: string, fields: Record<string, unknown> = {}) => process.stderr.write(`${JSON.stringify({ name: 'guest-agent', time: Date.now(), msg: message, ...fields })}\n`);

interface Options {
  carrier: string;
  sandboxdSocket: string;
  proxySocket: string | undefined;
  cgroup: string | undefined;
  memoryMb: number | undefined;
  pids: number | undefined;
  cpus: number | undefined;
  runAs: { uid: number; gid: number } | undefined;
  /** Start COMMAND under the sandbox's seccomp filter. */
  seccomp: boolean;
  /** Where no cgroup of ours counts refused forks (gVisor): the limit to watch the process count against. */
  watchPids: number | undefined;
  statfs: string[];
  command: string[];
}

function parseOptions(argv: string[]): Options {
  const { values, positionals } = parseArgs({
    args: argv,
    options: {
      carrier: { type: 'string' },
      'sandboxd-socket': { type: 'string' },
      'proxy-socket': { type: 'string' },
      cgroup: { type: 'string' },
      'memory-mb': { type: 'string' },
      pids: { type: 'string' },
      cpus: { type: 'string' },
      'run-as': { type: 'string' },
      seccomp: { type: 'boolean', default: false },
      'watch-pids': { type: 'string' },
      statfs: { type: 'string', default: '/workspace,/tmp' },
    },
    allowPositionals: true,
    strict: true,
  });
  if (values.carrier === undefined || values['sandboxd-socket'] === undefined || positionals.length === 0) {
    throw new Error('usage: guest-agent --carrier stdio|DEVICE|vsock:PORT --sandboxd-socket PATH [--proxy-socket PATH] [--cgroup DIR --memory-mb N --pids N --cpus N] [--run-as UID:GID] [--seccomp] -- COMMAND...');
  }
  const number = (value: string | undefined) => (value === undefined ? undefined : Number(value));
  const runAs = values['run-as'] === undefined ? undefined : /^(\d+):(\d+)$/.exec(values['run-as']);
  return {
    carrier: values.carrier,
    sandboxdSocket: values['sandboxd-socket'],
    proxySocket: values['proxy-socket'],
    cgroup: values.cgroup,
    memoryMb: number(values['memory-mb']),
    pids: number(values.pids),
    cpus: number(values.cpus),
    runAs: runAs === undefined || runAs === null ? undefined : { uid: Number(runAs[1]), gid: Number(runAs[2]) },
    seccomp: values.seccomp,
    watchPids: number(values['watch-pids']),
    statfs: values.statfs.split(',').filter(Boolean),
    command: positionals,
  };
}

/** The carrier's two directions. */
function openCarrier(spec: string): { input: Readable; output: Writable } {
  if (spec === 'stdio') return { input: process.stdin, output: process.stdout };
  if (spec.startsWith('vsock:')) {
    // Node has no AF_VSOCK: a small python3 relay accepts the host's one connection and copies it to our pipes.
    const port = Number(spec.slice('vsock:'.length));
    const relay = spawn('/usr/bin/python3', ['-c', vsockRelay, String(port)], { stdio: ['pipe', 'pipe', 'inherit'] });
    relay.on('exit', (code) => {
      log('the vsock relay exited', { code });
      process.exit(1);
    });
    return { input: relay.stdout, output: relay.stdin };
  }
  // A character device (virtio-serial port): one descriptor, read and written by two streams.
  const fd = openSync(resolvePort(spec), 'r+');
  return { input: createReadStream('', { fd, autoClose: false, highWaterMark: 64 * 1024 }), output: createWriteStream('', { fd, autoClose: false }) };
}

/** `name=workcell.mux` finds the virtio-serial port by its name (no udev in the guest for /dev/virtio-ports). */
function resolvePort(spec: string): string {
  if (!spec.startsWith('name=')) return spec;
  const wanted = spec.slice('name='.length);
  for (const port of readdirSync('/sys/class/virtio-ports')) {
    let name = '';
    try {
      name = readFileSync(`/sys/class/virtio-ports/${port}/name`, 'utf8').trim();
    } catch {
      // a console port has no name
    }
    if (name === wanted) return `/dev/${port}`;
  }
  throw new Error(`no virtio-serial port named ${wanted}`);
}

const vsockRelay = `
import os, socket, sys, threading
server = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
server.bind((socket.VMADDR_CID_ANY, int(sys.argv[1])))
server.listen(1)
conn, _ = server.accept()
server.close()
def host_to_guest():
    while True:
        data = conn.recv(65536)
        if not data:
            break
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    os._exit(0)
threading.Thread(target=host_to_guest, daemon=True).start()
while True:
    data = os.read(0, 65536)
    if not data:
        break
    conn.sendall(data)
os._exit(0)
`;

async function setUpCgroup(options: Options): Promise<string | undefined> {
  if (options.cgroup === undefined) return undefined;
  const root = '/sys/fs/cgroup';
  await writeFile(`${root}/cgroup.subtree_control`, '+memory +pids +cpu').catch((error: unknown) => log('cannot enable cgroup controllers', { error: String(error) }));
  const dir = `${root}/${options.cgroup}`;
  await mkdir(dir, { recursive: true });
  if (options.memoryMb !== undefined) {
    await writeFile(`${dir}/memory.max`, String(options.memoryMb * 1024 * 1024));
    await writeFile(`${dir}/memory.swap.max`, '0').catch(() => undefined);
  }
  if (options.pids !== undefined) await writeFile(`${dir}/pids.max`, String(options.pids));
  if (options.cpus !== undefined) await writeFile(`${dir}/cpu.max`, `${Math.max(1000, Math.round(options.cpus * 100_000))} 100000`).catch(() => undefined);
  return dir;
}

function keyed(text: string, key: string): number | undefined {
  const match = new RegExp(`^${key} (\\d+)$`, 'm').exec(text);
  return match?.[1] === undefined ? undefined : Number(match[1]);
}

/** Readings at which the sandbox was at its process limit (see Options.watchPids): stands in for refused forks. */
let saturatedReadings = 0;

async function counters(cgroup: string | undefined, paths: string[], watchPids: number | undefined): Promise<Record<string, number | undefined>> {
  const free = await Promise.all(paths.map((path) => statfs(path).then((info) => info.bavail * info.bsize, () => undefined)));
  const result: Record<string, number | undefined> = { workspaceFreeBytes: free[0], tmpFreeBytes: free[1] };
  if (cgroup === undefined) {
    const processes = await threadCount();
    result.processes = processes;
    if (watchPids !== undefined) {
      // At (or within a few of) the limit, some fork was most likely refused; the count is all this side can see.
      if (processes >= watchPids - 3) saturatedReadings++;
      result.pidsRefused = saturatedReadings;
    }
  } else {
    const read = (file: string) => readFile(`${cgroup}/${file}`, 'utf8').catch(() => '');
    const [memoryEvents, pidsEvents, pidsCurrent, cpuStat, memoryPeak] = await Promise.all([read('memory.events'), read('pids.events'), read('pids.current'), read('cpu.stat'), read('memory.peak')]);
    const usec = keyed(cpuStat, 'usage_usec');
    Object.assign(result, {
      oomKills: keyed(memoryEvents, 'oom_kill') ?? 0,
      pidsRefused: keyed(pidsEvents, 'max') ?? 0,
      processes: Number(pidsCurrent.trim()) || 0,
      cpuSeconds: usec === undefined ? undefined : usec / 1e6,
      peakMemoryBytes: memoryPeak.trim() === '' ? undefined : Number(memoryPeak.trim()),
    });
  }
  return result;
}

/**
 * Processes (thread-group leaders) in /proc with their thread counts. gVisor lists every thread in /proc, not only
 * leaders as Linux does: a thread's stat names a thread group other than itself. Killing a thread id would kill its
 * whole process, so only leaders are ever listed.
 */
async function processList(): Promise<Array<{ pid: number; threads: number; zombie: boolean }>> {
  const list: Array<{ pid: number; threads: number; zombie: boolean }> = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const status = await readFile(`/proc/${entry}/status`, 'utf8').catch(() => '');
    const tgid = /^Tgid:\s+(\d+)/m.exec(status)?.[1];
    if (tgid !== entry) continue;
    list.push({ pid: Number(entry), threads: Number(/^Threads:\s+(\d+)/m.exec(status)?.[1] ?? 1), zombie: /^State:\s+[ZX]/m.test(status) });
  }
  return list;
}

/** Processes and threads this agent can see: what a pids limit counts, where no cgroup of ours is readable. */
async function threadCount(): Promise<number> {
  return (await processList()).reduce((sum, each) => sum + each.threads, 0);
}

/** Kills every process in the cgroup but sandboxd (and its wrapper), round after round until none is left. */
async function stopProcesses(cgroup: string | undefined, keep: Set<number>): Promise<number> {
  // Without a cgroup of ours (a container): every process this agent may signal, but init, this agent and sandboxd.
  const candidates = async () =>
    cgroup === undefined
      ? (await processList()).filter((each) => !each.zombie).map((each) => each.pid).filter((pid) => pid !== 1 && pid !== process.pid)
      : (await readFile(`${cgroup}/cgroup.procs`, 'utf8').catch(() => '')).split('\n').filter(Boolean).map(Number);
  const killed = new Set<number>();
  const unkillable = new Set<number>();
  for (let round = 0; round < 200; round++) {
    const pids = (await candidates()).filter((pid) => !keep.has(pid) && !unkillable.has(pid));
    if (pids.length === 0) break;
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGKILL');
        killed.add(pid);
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === 'EPERM') unkillable.add(pid);
      }
    }
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  return killed.size;
}

function answer(channel: MuxChannel, value: unknown): void {
  channel.write(Buffer.from(JSON.stringify(value)));
  channel.end();
}

async function main(): Promise<void> {
  // libuv starts its thread pool on the first asynchronous file operation, and aborts the process when it cannot. At
  // the sandbox's process limit (a fork bomb) no thread can be made, and the first such operation may be the one that
  // stops the bomb's processes: so the pool starts now, while threads can still be made.
  await statfs('/');
  const options = parseOptions(process.argv.slice(2));
  const carrier = openCarrier(options.carrier);
  const first = await readFirstLine(carrier.input, 64 * 1024);
  const token = (JSON.parse(first.line) as { token?: unknown }).token;
  if (typeof token !== 'string' || token === '') throw new Error('the host sent no token');
  const fail = (message: string) => {
    carrier.output.write(`${JSON.stringify({ error: message })}\n`);
    log(message);
    setTimeout(() => process.exit(1), 200);
  };

  // The proxy socket exists before sandboxd starts (sandboxd checks it); its connections wait for the mux.
  const state: { mux?: StreamMux } = {};
  const pendingProxy: Socket[] = [];
  if (options.proxySocket !== undefined) {
    await rm(options.proxySocket, { force: true });
    const proxyServer = createServer({ allowHalfOpen: true }, (socket) => {
      if (state.mux === undefined) pendingProxy.push(socket);
      else bridgeChannel(state.mux, state.mux.open('proxy'), socket);
    });
    await new Promise<void>((resolve, reject) => {
      proxyServer.once('error', reject);
      proxyServer.listen({ path: options.proxySocket }, () => resolve());
    });
    await chmod(options.proxySocket, 0o666);
  }

  let cgroup: string | undefined;
  try {
    cgroup = await setUpCgroup(options);
  } catch (error) {
    fail(`cannot set up the sandbox's cgroup: ${String(error)}`);
    return;
  }
  // In a VM: join the cgroup as root, then drop to the sandbox user for good (no capabilities, no new privileges),
  // then put on the seccomp filter; each step execs the next, so sandboxd is the same process.
  const [file, ...args] = options.command as [string, ...string[]];
  const drop = options.runAs === undefined ? [] : ['/usr/bin/setpriv', `--reuid=${options.runAs.uid}`, `--regid=${options.runAs.gid}`, '--clear-groups', '--inh-caps=-all', '--bounding-set=-all', '--no-new-privs', '--'];
  let filter: string[] = [];
  if (options.seccomp) {
    const program = hostSeccompProgram();
    if (program === undefined) {
      fail(`the seccomp filter has no system-call table for ${process.arch}`);
      return;
    }
    filter = seccompLauncher(program);
  }
  const command = cgroup === undefined ? [...drop, ...filter, file, ...args] : ['/bin/sh', '-c', 'echo $$ > "$0/cgroup.procs" && shift && exec "$@"', cgroup, 'workcell', ...drop, ...filter, file, ...args];
  const child: ChildProcess = spawn(command[0]!, command.slice(1), { stdio: ['pipe', 'pipe', 'inherit'], cwd: existsSync('/workspace') ? '/workspace' : '/' });
  child.stdin!.on('error', () => undefined);
  child.stdin!.end(`${token}\n`);
  child.on('exit', (code, signal) => {
    log('sandboxd exited', { code, signal });
    process.exit(code ?? 1);
  });
  let sandboxdLine: { line: string; rest: Buffer };
  try {
    sandboxdLine = await readFirstLine(child.stdout!, 64 * 1024);
  } catch (error) {
    fail(`sandboxd did not print its ready line: ${String(error)}`);
    return;
  }
  child.stdout!.on('data', (chunk: Buffer) => process.stderr.write(chunk));
  child.stdout!.resume();
  if (sandboxdLine.rest.length > 0) process.stderr.write(sandboxdLine.rest);
  carrier.output.write(`${sandboxdLine.line}\n`);
  const sandboxdPid = (JSON.parse(sandboxdLine.line) as { pid?: number }).pid;
  const keep = new Set([child.pid, sandboxdPid].filter((pid): pid is number => typeof pid === 'number'));

  const mux = new StreamMux({
    input: carrier.input,
    output: carrier.output,
    initial: first.rest,
    side: 'guest',
    onOpen: (channel) => {
      if (channel.target === 'sandboxd') {
        bridgeChannel(mux, channel, connect({ path: options.sandboxdSocket, allowHalfOpen: true }));
      } else if (channel.target === 'control:counters') {
        void counters(cgroup, options.statfs, options.watchPids).then((value) => answer(channel, value), (error: unknown) => answer(channel, { error: String(error) }));
      } else if (channel.target === 'control:sync') {
        // Before the host stops a VM: what the agent wrote must be on the disk, not in the guest's page cache.
        const sync = spawn('/bin/sync', [], { stdio: 'ignore' });
        sync.on('exit', (code) => answer(channel, { synced: code === 0 }));
        sync.on('error', (error) => answer(channel, { error: String(error) }));
      } else if (channel.target === 'control:stop-processes') {
        void stopProcesses(cgroup, keep).then((stopped) => answer(channel, { stopped }), (error: unknown) => answer(channel, { error: String(error) }));
      } else {
        channel.close();
      }
    },
    onFailure: (error) => {
      // The host went away: nothing can reach this sandbox any more.
      log('the carrier failed; stopping', { error: error.message });
      child.kill('SIGTERM');
      setTimeout(() => process.exit(1), 2000).unref();
    },
  });
  state.mux = mux;
  for (const socket of pendingProxy.splice(0)) bridgeChannel(mux, mux.open('proxy'), socket);
  process.on('SIGTERM', () => child.kill('SIGTERM'));
}

main().catch((error: unknown) => {
  log('guest agent failed', { error: error instanceof Error ? error.stack : String(error) });
  try {
    closeSync(1);
  } catch {
    // nothing
  }
  process.exit(1);
});
