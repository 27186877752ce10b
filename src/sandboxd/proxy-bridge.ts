// Inside the sandbox: the bridge to the egress proxy. The sandbox's network namespace has only `lo` and no route out;
// the worker's egress proxy is reachable only as a unix socket bind-mounted read-only into the sandbox. HTTP clients
// want a TCP proxy address, so sandboxd listens on 127.0.0.1:<port> in the sandbox's own namespace and copies each
// connection, byte for byte, to a new connection on that socket. It understands nothing of what it carries: every
// check happens in the proxy, on the host. The shell gets HTTP_PROXY and friends pointing here (proxyEnvironment).
import { connect, createServer, type Socket } from 'node:net';
import { silentLogger, type Logger } from './log.ts';

export interface ProxyBridge {
  readonly port: number;
  /** Stops listening and ends every bridged connection. */
  close(): Promise<void>;
}

/** The variables that send HTTP clients (curl, pip, npm, git, python, node's fetch with them set) through the bridge. */
export function proxyEnvironment(port: number): Record<string, string> {
  const url = `http://127.0.0.1:${port}`;
  // The sandbox's own loopback (a dev server the agent started) stays direct.
  const noProxy = 'localhost,127.0.0.1';
  return { HTTP_PROXY: url, HTTPS_PROXY: url, ALL_PROXY: url, http_proxy: url, https_proxy: url, all_proxy: url, NO_PROXY: noProxy, no_proxy: noProxy };
}

export function startProxyBridge(options: { socketPath: string; port: number; host?: string; log?: Logger }): Promise<ProxyBridge> {
  const log = options.log ?? silentLogger;
  const open = new Set<Socket>();
  const server = createServer({ noDelay: true }, (client) => {
    const upstream = connect({ path: options.socketPath });
    open.add(client);
    open.add(upstream);
    const close = () => {
      client.destroy();
      upstream.destroy();
      open.delete(client);
      open.delete(upstream);
    };
    client.on('error', close);
    upstream.on('error', (error) => {
      log.warn('cannot reach the egress proxy', { error: error.message });
      close();
    });
    client.on('close', close);
    upstream.on('close', close);
    client.pipe(upstream);
    upstream.pipe(client);
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host: options.host ?? '127.0.0.1', port: options.port }, () => {
      server.off('error', reject);
      const address = server.address();
      resolve({
        port: typeof address === 'object' && address !== null ? address.port : options.port,
        close: () =>
          new Promise<void>((resolveClose) => {
            server.close(() => resolveClose());
            for (const socket of open) socket.destroy();
          }),
      });
    });
  });
}
