// The host side of a sandbox's egress: its own egress proxy (egress-proxy.ts) listening on a unix socket in a
// directory of its own, next to the sandbox's run directory, which the runtime binds READ-ONLY into the sandbox
// (bwrap: at /run/workcell-net). Not in the run directory: that one is writable from inside, and a socket there
// could be deleted or replaced by the sandbox. The directory is created with mode 0700 and opened (0711) only once
// the socket is in place with mode 0600 and owned by the sandbox's host user: no other host user can connect, and the
// sandbox cannot rename, replace or chmod anything in it. Inside, sandboxd bridges 127.0.0.1:3128 to the socket.
// Runtimes that reach the sandbox otherwise (vsock, a pod) reuse the proxy and the policy, not this directory.
import { chmod, lchown, mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { WorkcellError } from '../../errors.ts';
import type { AllowRule } from './allow-list.ts';
import { createEgressProxy, type ConnectionRecord, type EgressProxy } from './egress-proxy.ts';

/** A sandbox's network policy: nothing when absent or when `allow` is empty. */
export interface NetworkPolicy {
  allow: readonly AllowRule[];
  /** Every connection attempt through the proxy, when it ends (the job's audit log). */
  onConnection?: ((record: ConnectionRecord) => void) | undefined;
  /** The agent's current step, so each connection is linked to the step that opened it. */
  currentStep?: (() => number) | undefined;
}

/** Where the proxy socket's directory is mounted inside the sandbox, and the socket and bridge port there. */
export const sandboxEgressDir = '/run/workcell-net';
export const sandboxProxySocket = `${sandboxEgressDir}/proxy.sock`;
export const sandboxProxyPort = 3128;
/** Unix socket paths are limited to 108 bytes including the terminating NUL. */
const maxSocketPathBytes = 107;

export interface EgressSocket {
  /** The host directory to bind read-only at sandboxEgressDir. */
  readonly dir: string;
  readonly socketPath: string;
  readonly proxy: EgressProxy;
  /** Closes the proxy (every connection is reported first) and removes the directory. Idempotent. */
  close(): Promise<void>;
}

export function hasEgress(policy: NetworkPolicy | undefined): policy is NetworkPolicy {
  return policy !== undefined && policy.allow.length > 0;
}

/** Starts the sandbox's proxy on `<dir>/proxy.sock`; `dir` must not exist yet. */
export async function openEgressSocket(options: {
  dir: string;
  /** The sandbox's host user, when it differs from the server's (the server runs as root). */
  owner: { uid: number; gid: number } | undefined;
  policy: NetworkPolicy;
  logger?: Logger | undefined;
}): Promise<EgressSocket> {
  const { dir, owner, policy } = options;
  const socketPath = join(dir, 'proxy.sock');
  if (Buffer.byteLength(socketPath) > maxSocketPathBytes) {
    throw new WorkcellError('runtime_unavailable', `WORKCELL_RUN_DIR is too long for a unix socket path (${socketPath}): choose a shorter directory, e.g. /run/workcell`);
  }
  await mkdir(dir, { mode: 0o700 });
  const proxy = createEgressProxy({
    allow: policy.allow,
    onConnection: policy.onConnection,
    currentStep: policy.currentStep,
    ...(options.logger === undefined ? {} : { logger: options.logger }),
  });
  let closing: Promise<void> | undefined;
  const close = () =>
    (closing ??= (async () => {
      await proxy.close();
      await rm(dir, { recursive: true, force: true });
    })());
  try {
    await proxy.listen({ path: socketPath });
    await chmod(socketPath, 0o600);
    if (owner !== undefined) await lchown(socketPath, owner.uid, owner.gid);
    await chmod(dir, 0o711);
  } catch (error) {
    await close();
    throw error;
  }
  return { dir, socketPath, proxy, close };
}
