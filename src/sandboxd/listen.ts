// Where sandboxd listens: a unix socket (bwrap: a bind-mounted directory the worker reaches) or a TCP address
// (runtimes that reach the sandbox over the network). The socket is created with mode 0600 from the start (umask),
// and a stale socket left by a dead sandboxd is replaced; anything else at that path is left alone.
import { lstat, unlink, chmod } from 'node:fs/promises';
import type { Server } from 'node:http';
import { connect } from 'node:net';

function errnoCode(error: unknown): string | undefined {
  return typeof error === 'object' && error !== null && 'code' in error && typeof error.code === 'string' ? error.code : undefined;
}

/** True when something accepts connections on the unix socket at `path`. */
function socketIsLive(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ path });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

function listening(server: Server, target: { path: string } | { host: string; port: number }): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (error: Error) => reject(error);
    server.once('error', onError);
    server.listen(target, () => {
      server.off('error', onError);
      resolve();
    });
  });
}

export async function listenOnSocket(server: Server, socketPath: string): Promise<void> {
  try {
    const stats = await lstat(socketPath);
    if (!stats.isSocket()) throw new Error(`${socketPath} exists and is not a socket; remove it or choose another --socket path`);
    if (await socketIsLive(socketPath)) throw new Error(`${socketPath} is in use by a running server; stop it or choose another --socket path`);
    await unlink(socketPath);
  } catch (error) {
    if (errnoCode(error) !== 'ENOENT') throw error;
  }
  const previousUmask = process.umask(0o177);
  try {
    await listening(server, { path: socketPath });
  } finally {
    process.umask(previousUmask);
  }
  await chmod(socketPath, 0o600);
}

/** Listens on `HOST:PORT` (`[::1]:8000` for IPv6); returns the port actually bound (for port 0). */
export async function listenOnTcp(server: Server, address: string): Promise<number> {
  const match = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(address);
  const host = match?.[1] ?? match?.[2];
  const port = Number(match?.[3]);
  if (host === undefined || !(port >= 0 && port <= 65535)) throw new Error(`--listen expects HOST:PORT, e.g. 127.0.0.1:8000, not ${JSON.stringify(address)}`);
  await listening(server, { host, port });
  const bound = server.address();
  return typeof bound === 'object' && bound !== null ? bound.port : port;
}
