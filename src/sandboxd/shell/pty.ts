// Loads node-pty, sandboxd's one native module. In the sandbox it comes from the image
// (/usr/local/lib/workcell/node_modules, see src/runtimes/sandboxd-bundle.ts), on a development host from
// node_modules. Loaded once, lazily: sandboxd starts, and its file tools work, even where the module is missing;
// the shell then says why it cannot start.
import type * as NodePty from 'node-pty';

export type PtyModule = Pick<typeof NodePty, 'spawn'>;
export type Pty = NodePty.IPty & {
  /** The terminal's device (/dev/pts/N): node-pty sets it on Unix but does not declare it. */
  readonly ptsName?: string;
  /** Closes the terminal (node-pty has it on Unix but does not declare it). */
  destroy?(): void;
};

let loading: Promise<PtyModule> | undefined;

export function loadPty(): Promise<PtyModule> {
  loading ??= import('node-pty').then((module: PtyModule & { default?: PtyModule }) => (typeof module.spawn === 'function' ? module : (module.default as PtyModule)));
  // A failed load is not remembered: the next session start tries again (and reports the error again).
  loading.catch(() => (loading = undefined));
  return loading;
}
