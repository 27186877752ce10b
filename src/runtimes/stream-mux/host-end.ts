// The host's end of a sandbox reached through one byte stream (stream-mux.ts): sends the token, waits for sandboxd's
// ready line, then serves a unix socket in the sandbox's host-only run directory whose every connection becomes a
// channel to sandboxd, so the worker's SandboxdClient works exactly as with bwrap. Channels the guest opens are
// accepted only for the egress proxy (when the sandbox has one); anything else is closed. Control requests (the
// limit counters the guest agent reads inside a VM, stopping the agent's processes) go over channels of their own.
import { createServer, connect, type Server } from 'node:net';
import { chmod, rm } from 'node:fs/promises';
import type { Readable, Writable } from 'node:stream';
import { readyLine } from '../../sandboxd/protocol.ts';
import { bridgeChannel, readFirstLine, requestOverChannel, StreamMux } from './stream-mux.ts';

/** What the guest agent reports about the sandbox from inside (cgroup counters where it manages the cgroup). */
export interface GuestCounters {
  oomKills?: number;
  pidsRefused?: number;
  processes?: number;
  workspaceFreeBytes?: number;
  tmpFreeBytes?: number;
  cpuSeconds?: number;
  peakMemoryBytes?: number;
}

export interface HostEnd {
  /** The unix socket (host side, mode 0600) that reaches sandboxd. */
  readonly socketPath: string;
  readonly sandboxdPid: number;
  counters(): Promise<GuestCounters>;
  stopProcesses(): Promise<number>;
  /** Asks the guest to flush its file systems (before a VM is stopped). */
  sync(): Promise<void>;
  /** Closes the socket and every channel. Idempotent. */
  close(): Promise<void>;
  /** Resolves when the carrier fails or ends (the sandbox is gone or misbehaved). */
  readonly failed: Promise<Error>;
}

export const controlTimeoutMs = 10_000;

export async function openHostEnd(options: {
  input: Readable;
  output: Writable;
  token: string;
  /** Where to serve sandboxd (a path in the host-only run directory). */
  socketPath: string;
  /** The egress proxy's unix socket, when the sandbox may reach the network. */
  egressSocketPath?: string | undefined;
  signal?: AbortSignal | undefined;
}): Promise<HostEnd> {
  const { input, output } = options;
  output.write(`${JSON.stringify({ token: options.token })}\n`);
  const { line, rest } = await readFirstLine(input, 64 * 1024, options.signal);
  let parsedLine: unknown;
  try {
    parsedLine = JSON.parse(line);
  } catch {
    throw new Error(`the sandbox's first line is not JSON: ${line.slice(0, 300)}`);
  }
  if (typeof parsedLine === 'object' && parsedLine !== null && 'error' in parsedLine) throw new Error(`the sandbox's agent reported: ${String(parsedLine.error)}`);
  const ready = readyLine.safeParse(parsedLine);
  if (!ready.success) throw new Error(`the sandbox's first line is not sandboxd's ready line: ${line.slice(0, 300)}`);

  let reportFailure: (error: Error) => void = () => undefined;
  const failed = new Promise<Error>((resolve) => (reportFailure = resolve));
  const mux = new StreamMux({
    input,
    output,
    initial: rest,
    side: 'host',
    onOpen: (channel) => {
      if (channel.target !== 'proxy' || options.egressSocketPath === undefined) {
        channel.close();
        return;
      }
      const upstream = connect({ path: options.egressSocketPath, allowHalfOpen: true });
      bridgeChannel(mux, channel, upstream);
    },
    onFailure: (error) => reportFailure(error),
  });

  await rm(options.socketPath, { force: true });
  const server: Server = createServer({ allowHalfOpen: true }, (socket) => {
    if (mux.failed) {
      socket.destroy();
      return;
    }
    bridgeChannel(mux, mux.open('sandboxd'), socket);
  });
  const previousUmask = process.umask(0o177);
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ path: options.socketPath }, () => {
        server.off('error', reject);
        resolve();
      });
    });
  } finally {
    process.umask(previousUmask);
  }
  await chmod(options.socketPath, 0o600);

  const control = async (target: string): Promise<Record<string, unknown>> => {
    if (mux.failed) throw new Error('the sandbox is gone');
    const answer = await requestOverChannel(mux, target, Buffer.from('{}'), { timeoutMs: controlTimeoutMs, maxBytes: 64 * 1024 });
    const parsed = JSON.parse(answer.toString('utf8')) as unknown;
    if (typeof parsed !== 'object' || parsed === null) throw new Error(`${target}: not an object`);
    return parsed as Record<string, unknown>;
  };
  const count = (value: unknown) => (typeof value === 'number' && Number.isFinite(value) && value >= 0 ? value : undefined);

  let closing: Promise<void> | undefined;
  return {
    socketPath: options.socketPath,
    sandboxdPid: ready.data.pid,
    failed,
    counters: async () => {
      const raw = await control('control:counters');
      const counters: GuestCounters = {};
      for (const key of ['oomKills', 'pidsRefused', 'processes', 'workspaceFreeBytes', 'tmpFreeBytes', 'cpuSeconds', 'peakMemoryBytes'] as const) {
        const value = count(raw[key]);
        if (value !== undefined) counters[key] = value;
      }
      return counters;
    },
    stopProcesses: async () => count((await control('control:stop-processes')).stopped) ?? 0,
    sync: async () => {
      await control('control:sync');
    },
    close: () =>
      (closing ??= (async () => {
        mux.destroy();
        await new Promise<void>((resolve) => server.close(() => resolve()));
        await rm(options.socketPath, { force: true });
      })()),
  };
}
