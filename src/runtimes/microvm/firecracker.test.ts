// Firecracker's API as its documentation gives it, served by a fake on a unix socket: the calls a VM's start makes
// (machine config, boot source, drives, vsock, InstanceStart) with their bodies, in order; an API fault becomes an
// error carrying Firecracker's fault_message; and the vsock handshake ("CONNECT port" / "OK n") before the stream.
// Firecracker itself is not installable here, and it is never faked in the integration tests.
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { configureAndStart, connectGuestVsock, FirecrackerApiError, guestCid, type FirecrackerVm } from './firecracker.ts';

let dir: string | undefined;
let servers: Array<HttpServer | Server> = [];
afterEach(async () => {
  await Promise.all(servers.map((server) => new Promise((resolve) => server.close(resolve))));
  servers = [];
  if (dir !== undefined) await rm(dir, { recursive: true, force: true });
  dir = undefined;
});

const vm: FirecrackerVm = {
  kernelPath: '/images/vmlinux',
  initrdPath: '/images/initramfs.cpio',
  bootArgs: 'console=ttyS0 reboot=k panic=1 pci=off workcell.carrier=vsock:1024',
  vcpus: 2,
  memoryMib: 1280,
  drives: [
    { id: 'rootfs', path: '/images/rootfs.ext4', readOnly: true },
    { id: 'workspace', path: '/jobs/j/ws.ext4', readOnly: false },
  ],
  vsockPath: '/run/workcell/sb/vsock.sock',
};

async function fakeApi(fail?: { path: string; status: number; fault: string }): Promise<{ socket: string; calls: Array<{ method: string; path: string; body: unknown }> }> {
  dir ??= await mkdtemp(join(tmpdir(), 'workcell-fc-'));
  const socket = join(dir, 'api.sock');
  const calls: Array<{ method: string; path: string; body: unknown }> = [];
  const server = createHttpServer((request, response) => {
    let text = '';
    request.on('data', (chunk: Buffer) => (text += chunk.toString('utf8')));
    request.on('end', () => {
      calls.push({ method: request.method ?? '', path: request.url ?? '', body: text === '' ? undefined : JSON.parse(text) });
      if (request.headers['content-type'] !== 'application/json') {
        response.writeHead(400, { 'content-type': 'application/json' }).end(JSON.stringify({ fault_message: 'expected JSON' }));
      } else if (fail !== undefined && request.url === fail.path) {
        response.writeHead(fail.status, { 'content-type': 'application/json' }).end(JSON.stringify({ fault_message: fail.fault }));
      } else {
        response.writeHead(204).end();
      }
    });
  });
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(socket, resolve));
  return { socket, calls };
}

describe('Firecracker API', () => {
  it('configures the machine, kernel, drives and vsock, then starts the instance', async () => {
    const { socket, calls } = await fakeApi();
    await configureAndStart(socket, vm);
    expect(calls).toEqual([
      { method: 'PUT', path: '/machine-config', body: { vcpu_count: 2, mem_size_mib: 1280, smt: false } },
      { method: 'PUT', path: '/boot-source', body: { kernel_image_path: '/images/vmlinux', initrd_path: '/images/initramfs.cpio', boot_args: vm.bootArgs } },
      { method: 'PUT', path: '/drives/rootfs', body: { drive_id: 'rootfs', path_on_host: '/images/rootfs.ext4', is_root_device: false, is_read_only: true } },
      { method: 'PUT', path: '/drives/workspace', body: { drive_id: 'workspace', path_on_host: '/jobs/j/ws.ext4', is_root_device: false, is_read_only: false } },
      { method: 'PUT', path: '/vsock', body: { guest_cid: guestCid, uds_path: vm.vsockPath } },
      { method: 'PUT', path: '/actions', body: { action_type: 'InstanceStart' } },
    ]);
  });

  it('stops at the first fault, with Firecracker\'s fault message', async () => {
    const { socket, calls } = await fakeApi({ path: '/boot-source', status: 400, fault: 'The kernel file cannot be opened: No such file or directory' });
    const error = await configureAndStart(socket, vm).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(FirecrackerApiError);
    expect((error as FirecrackerApiError).status).toBe(400);
    expect((error as Error).message).toBe('Firecracker PUT /boot-source: 400 The kernel file cannot be opened: No such file or directory');
    expect(calls.map((call) => call.path)).toEqual(['/machine-config', '/boot-source']);
  });
});

describe('the guest vsock through Firecracker\'s host socket', () => {
  it('says CONNECT <port>, waits for OK, then carries the stream (bytes after OK included)', async () => {
    dir = await mkdtemp(join(tmpdir(), 'workcell-fc-'));
    const path = join(dir, 'vsock.sock');
    const seen: string[] = [];
    const server = createServer((socket) => {
      socket.once('data', (chunk: Buffer) => {
        seen.push(chunk.toString('utf8'));
        socket.write('OK 1073741824\nhello');
        socket.on('data', (data: Buffer) => socket.write(`echo:${data.toString('utf8')}`));
      });
    });
    servers.push(server);
    await new Promise<void>((resolve) => server.listen(path, resolve));
    const socket = await connectGuestVsock(path, 1024, { timeoutMs: 2000 });
    try {
      expect(seen).toEqual(['CONNECT 1024\n']);
      // Read until as many bytes as expected have come (a fixed wait would be a guess at how busy the machine is).
      const expected = 'helloecho:ping';
      const received = await new Promise<string>((resolve) => {
        let text = '';
        socket.on('data', (chunk: Buffer) => {
          text += chunk.toString('utf8');
          if (text.length >= expected.length) resolve(text);
        });
        socket.resume();
        socket.write('ping');
      });
      expect(received).toBe(expected);
    } finally {
      socket.destroy();
    }
  });

  it('retries while the guest is not listening yet, and gives up with the reason', async () => {
    dir = await mkdtemp(join(tmpdir(), 'workcell-fc-'));
    const path = join(dir, 'vsock.sock');
    const server = createServer((socket) => socket.once('data', () => socket.end()));
    servers.push(server);
    await new Promise<void>((resolve) => server.listen(path, resolve));
    await expect(connectGuestVsock(path, 1024, { timeoutMs: 300 })).rejects.toThrow(/vsock port 1024 did not answer within 300 ms/);
  });
});
