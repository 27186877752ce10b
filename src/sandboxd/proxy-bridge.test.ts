import { mkdtemp, rm } from 'node:fs/promises';
import { connect, createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { proxyEnvironment, startProxyBridge, type ProxyBridge } from './proxy-bridge.ts';

let dir: string | undefined;
let unixServer: Server | undefined;
let bridge: ProxyBridge | undefined;
afterEach(async () => {
  await bridge?.close();
  await new Promise((resolve) => (unixServer ? unixServer.close(resolve) : resolve(undefined)));
  if (dir !== undefined) await rm(dir, { recursive: true, force: true });
  [dir, unixServer, bridge] = [undefined, undefined, undefined];
});

describe('the proxy bridge', () => {
  it('copies each TCP connection to a new connection on the unix socket, both ways', async () => {
    dir = await mkdtemp(join(tmpdir(), 'workcell-bridge-'));
    const socketPath = join(dir, 'proxy.sock');
    let connections = 0;
    unixServer = createServer((socket) => {
      connections++;
      socket.on('data', (chunk: Buffer) => socket.write(`echo:${chunk.toString()}`));
    });
    await new Promise<void>((resolve) => unixServer!.listen(socketPath, resolve));
    bridge = await startProxyBridge({ socketPath, port: 0 });
    const reply = await new Promise<string>((resolve, reject) => {
      const client = connect({ host: '127.0.0.1', port: bridge!.port });
      client.on('error', reject);
      client.on('data', (chunk: Buffer) => {
        resolve(chunk.toString());
        client.destroy();
      });
      client.write('hello');
    });
    expect(reply).toBe('echo:hello');
    expect(connections).toBe(1);
  });

  it('closes the client when the proxy socket is not there', async () => {
    dir = await mkdtemp(join(tmpdir(), 'workcell-bridge-'));
    bridge = await startProxyBridge({ socketPath: join(dir, 'missing.sock'), port: 0 });
    const closed = await new Promise<boolean>((resolve) => {
      const client = connect({ host: '127.0.0.1', port: bridge!.port });
      client.on('error', () => resolve(true));
      client.on('close', () => resolve(true));
    });
    expect(closed).toBe(true);
  });

  it('points every proxy variable at the bridge and keeps the sandbox loopback direct', () => {
    expect(proxyEnvironment(3128)).toEqual({
      HTTP_PROXY: 'http://127.0.0.1:3128',
      HTTPS_PROXY: 'http://127.0.0.1:3128',
      ALL_PROXY: 'http://127.0.0.1:3128',
      http_proxy: 'http://127.0.0.1:3128',
      https_proxy: 'http://127.0.0.1:3128',
      all_proxy: 'http://127.0.0.1:3128',
      NO_PROXY: 'localhost,127.0.0.1',
      no_proxy: 'localhost,127.0.0.1',
    });
  });
});
