// Against the real /proc: sockets this process and its children listen on.
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { createServer, type AddressInfo, type Server } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { foreignListener, listeningInodes } from './listener-owner.ts';

const children: ChildProcess[] = [];
const servers: Server[] = [];
const ipv6Loopback = await new Promise<boolean>((resolve) => {
  const probe = createServer();
  probe.once('error', () => resolve(false));
  probe.listen(0, '::1', () => probe.close(() => resolve(true)));
});
afterEach(() => {
  for (const child of children.splice(0)) process.kill(-child.pid!, 'SIGKILL');
  for (const server of servers.splice(0)) server.close();
});

async function listenHere(host = '127.0.0.1'): Promise<number> {
  const server = createServer();
  servers.push(server);
  server.listen(0, host);
  await once(server, 'listening');
  return (server.address() as AddressInfo).port;
}

/** A child (through a shell, so the listener is a grandchild) that listens on a port and prints it. */
async function listenInChild(): Promise<{ shell: number; port: number }> {
  const child = spawn('bash', ['-c', `"${process.execPath}" -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>console.log(s.address().port))'; true`], { stdio: ['ignore', 'pipe', 'inherit'], detached: true });
  children.push(child);
  const [line] = (await once(child.stdout, 'data')) as [Buffer];
  return { shell: child.pid!, port: Number(line.toString().trim()) };
}

/** A process that holds nothing: the owner the service should have had. */
function bystander(): number {
  const child = spawn('sleep', ['600'], { stdio: 'ignore', detached: true });
  children.push(child);
  return child.pid!;
}

describe('foreignListener', () => {
  it('accepts a port held by the owners or their descendants', async () => {
    const port = await listenHere();
    expect((await listeningInodes(port)).size).toBe(1);
    expect(await foreignListener(port, [process.pid])).toBeUndefined();
    const { shell, port: childPort } = await listenInChild();
    expect(await foreignListener(childPort, [shell])).toBeUndefined();
  });

  it('refuses a port another process listens on, and a port nobody listens on', async () => {
    const { port } = await listenInChild();
    expect(await foreignListener(port, [bystander()])).toMatch(/another program in the sandbox listens on port \d+/);
    const free = await listenHere();
    const closing = servers.pop()!;
    await new Promise((resolve) => closing.close(resolve));
    expect(await foreignListener(free, [process.pid])).toMatch(/nothing listens/);
  });

  // A host (or a container) with IPv6 turned off has no ::1 to listen on: nothing to see there.
  it.skipIf(!ipv6Loopback)('sees IPv6 listeners too', async () => {
    const port = await listenHere('::1');
    expect(await foreignListener(port, [process.pid])).toBeUndefined();
    expect(await foreignListener(port, [bystander()])).toMatch(/another program/);
  });
});
