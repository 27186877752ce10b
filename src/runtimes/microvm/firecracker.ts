// Firecracker: the VMM for microVMs where its binary and working KVM are present (it needs KVM; there is no
// emulation). It is configured through its API socket (HTTP on a unix socket; Firecracker's documented API:
// PUT /machine-config, /boot-source, /drives/{id}, /vsock, then PUT /actions {"action_type": "InstanceStart"}) and
// started, where its jailer is installed, inside the jailer's chroot as the unprivileged sandbox user. The guest is
// the same as QEMU's (kernel, initramfs, rootfs and workspace disks); the host reaches the guest agent over vsock:
// Firecracker exposes the guest's vsock ports on a host unix socket, where a connection says "CONNECT <port>\n" and
// gets "OK <host port>\n" before the stream is the guest's (the guest agent listens with --carrier vsock:<port>).
import { spawn, type ChildProcess } from 'node:child_process';
import { link, mkdir, copyFile } from 'node:fs/promises';
import { request } from 'node:http';
import { connect, type Socket } from 'node:net';
import { basename, join } from 'node:path';

export const guestVsockPort = 1024;
export const guestCid = 3;

export interface FirecrackerDrive {
  id: string;
  path: string;
  readOnly: boolean;
}

export interface FirecrackerVm {
  kernelPath: string;
  initrdPath: string;
  bootArgs: string;
  vcpus: number;
  memoryMib: number;
  drives: FirecrackerDrive[];
  /** Host unix socket that Firecracker serves the guest's vsock on. */
  vsockPath: string;
}

export class FirecrackerApiError extends Error {
  readonly status: number;
  constructor(message: string, status: number) {
    super(message);
    this.name = 'FirecrackerApiError';
    this.status = status;
  }
}

/** One call to Firecracker's API: JSON in, 204 (or 200) back; anything else is an error with its fault message. */
export function firecrackerApi(socketPath: string, method: 'PUT' | 'GET' | 'PATCH', path: string, body?: unknown, timeoutMs = 10_000): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const req = request(
      {
        socketPath,
        method,
        path,
        timeout: timeoutMs,
        headers: { accept: 'application/json', ...(payload === undefined ? {} : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) }) },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          const status = res.statusCode ?? 0;
          let parsed: unknown;
          try {
            parsed = text === '' ? undefined : JSON.parse(text);
          } catch {
            parsed = text;
          }
          if (status >= 200 && status < 300) resolve(parsed);
          else {
            const fault = typeof parsed === 'object' && parsed !== null && 'fault_message' in parsed ? String(parsed.fault_message) : text;
            reject(new FirecrackerApiError(`Firecracker ${method} ${path}: ${status} ${fault}`, status));
          }
        });
      },
    );
    req.on('timeout', () => req.destroy(new Error(`Firecracker ${method} ${path}: no answer within ${timeoutMs} ms`)));
    req.on('error', reject);
    req.end(payload);
  });
}

/** Configures a fresh Firecracker (its API socket) for the VM and starts the guest. */
export async function configureAndStart(apiSocket: string, vm: FirecrackerVm): Promise<void> {
  await firecrackerApi(apiSocket, 'PUT', '/machine-config', { vcpu_count: vm.vcpus, mem_size_mib: vm.memoryMib, smt: false });
  await firecrackerApi(apiSocket, 'PUT', '/boot-source', { kernel_image_path: vm.kernelPath, initrd_path: vm.initrdPath, boot_args: vm.bootArgs });
  for (const drive of vm.drives) {
    await firecrackerApi(apiSocket, 'PUT', `/drives/${encodeURIComponent(drive.id)}`, { drive_id: drive.id, path_on_host: drive.path, is_root_device: false, is_read_only: drive.readOnly });
  }
  await firecrackerApi(apiSocket, 'PUT', '/vsock', { guest_cid: guestCid, uds_path: vm.vsockPath });
  await firecrackerApi(apiSocket, 'PUT', '/actions', { action_type: 'InstanceStart' });
}

/** Connects to a guest vsock port through Firecracker's host socket ("CONNECT port" / "OK n"); retries while the guest boots. */
export async function connectGuestVsock(vsockPath: string, port: number, options: { timeoutMs: number; signal?: AbortSignal }): Promise<Socket> {
  const deadline = Date.now() + options.timeoutMs;
  for (;;) {
    options.signal?.throwIfAborted();
    try {
      return await connectOnce(vsockPath, port);
    } catch (error) {
      if (Date.now() > deadline) throw new Error(`the guest's vsock port ${port} did not answer within ${options.timeoutMs} ms: ${(error as Error).message}`, { cause: error });
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
}

function connectOnce(vsockPath: string, port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = connect({ path: vsockPath, allowHalfOpen: true });
    let buffered = Buffer.alloc(0);
    const fail = (error: Error) => {
      socket.destroy();
      reject(error);
    };
    socket.once('error', fail);
    socket.once('connect', () => socket.write(`CONNECT ${port}\n`));
    const onData = (chunk: Buffer) => {
      buffered = Buffer.concat([buffered, chunk]);
      const newline = buffered.indexOf(0x0a);
      if (newline === -1) {
        if (buffered.length > 256) fail(new Error('bad vsock handshake'));
        return;
      }
      socket.off('data', onData);
      socket.off('error', fail);
      const line = buffered.subarray(0, newline).toString('utf8');
      if (!/^OK \d+$/.test(line)) {
        fail(new Error(`vsock handshake refused: ${line.slice(0, 100)}`));
        return;
      }
      socket.pause();
      const rest = buffered.subarray(newline + 1);
      if (rest.length > 0) socket.unshift(rest);
      resolve(socket);
    };
    socket.on('data', onData);
    socket.once('end', () => fail(new Error('the vsock connection closed during the handshake')));
  });
}

export interface FirecrackerLaunch {
  process: ChildProcess;
  /** The API socket, as the host reaches it. */
  apiSocket: string;
  /** Paths as Firecracker sees them (inside the jailer's chroot, when jailed). */
  vm: FirecrackerVm;
  /** The vsock socket, as the host reaches it. */
  hostVsockPath: string;
}

/**
 * Starts Firecracker: jailed (chroot, its own pid and mount namespaces, the sandbox user) when `jailer` is given, the
 * VM's files hard-linked into the chroot (copied where they are on another file system); plain otherwise.
 */
export async function launchFirecracker(options: {
  firecracker: string;
  jailer: string | undefined;
  id: string;
  runDir: string;
  user: { uid: number; gid: number } | undefined;
  vm: FirecrackerVm;
}): Promise<FirecrackerLaunch> {
  const { vm } = options;
  if (options.jailer === undefined || options.user === undefined) {
    const apiSocket = join(options.runDir, 'firecracker.sock');
    const child = spawn(options.firecracker, ['--api-sock', apiSocket, '--id', options.id], { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    return { process: child, apiSocket, vm, hostVsockPath: vm.vsockPath };
  }
  const chrootBase = join(options.runDir, 'jail');
  const root = join(chrootBase, basename(options.firecracker), options.id, 'root');
  await mkdir(root, { recursive: true, mode: 0o755 });
  const inside = async (path: string): Promise<string> => {
    const name = basename(path);
    await link(path, join(root, name)).catch(() => copyFile(path, join(root, name)));
    return `/${name}`;
  };
  const jailedVm: FirecrackerVm = {
    ...vm,
    kernelPath: await inside(vm.kernelPath),
    initrdPath: await inside(vm.initrdPath),
    drives: await Promise.all(vm.drives.map(async (drive) => ({ ...drive, path: await inside(drive.path) }))),
    vsockPath: '/vsock.sock',
  };
  const child = spawn(
    options.jailer,
    [
      '--id', options.id, '--exec-file', options.firecracker, '--uid', String(options.user.uid), '--gid', String(options.user.gid),
      '--chroot-base-dir', chrootBase, '--', '--api-sock', '/api.sock',
    ],
    { stdio: ['ignore', 'pipe', 'pipe'], detached: true },
  );
  return { process: child, apiSocket: join(root, 'api.sock'), vm: jailedVm, hostVsockPath: join(root, 'vsock.sock') };
}
