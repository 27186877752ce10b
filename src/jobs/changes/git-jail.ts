// Runs git for a job's diff on the host, where it can do no harm. Git never sees a workspace: it gets the baseline
// repository workcell made itself (jobs/<id>/baseline/repo.git) and a scratch repository, and the workspace's content
// only as a fast-import stream on its stdin, written by workcell from files it opened without following links. So
// nothing the agent wrote (.git/config, hooks, .gitattributes, a nested repository, a FIFO) is ever read by git.
// On top of that, git runs as the unprivileged sandbox user (as root: setpriv, as the sandboxes do) in a bubblewrap jail
// with no network, a read-only /usr, an empty /tmp, workcell's seccomp filter, and only the two repositories mounted,
// passed as descriptors (so neither needs to be reachable by that user's path permissions); its configuration is
// nothing: GIT_CONFIG_NOSYSTEM, GIT_CONFIG_GLOBAL=/dev/null, an empty HOME, no hooks, no pager, no external diff or
// textconv. Where bubblewrap is missing or cannot make a jail (a container that may not switch users or mount), git
// runs with the same environment unjailed, and says so in the log.
// MUST NEVER give git a path inside a workspace, or read what git writes except from its stdout.
import { spawn } from 'node:child_process';
import { constants, existsSync, lstatSync } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import type { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Logger } from 'pino';
import type { Config } from '../../config.ts';
import { WorkcellError } from '../../errors.ts';
import { bwrapCommand, findBwrapHost, findExecutable, runCommand, type BwrapHost } from '../../runtimes/probe.ts';
import { hostSeccompProgram } from '../../runtimes/seccomp.ts';

/** Inside the jail: the baseline repository (read-only) and the scratch one (read-write). */
export const jailBaseDir = '/base';
export const jailWorkDir = '/work';

export interface GitRun {
  /** git's arguments after `git`. */
  args: string[];
  /** Directories to mount: the baseline repository read-only, a scratch directory read-write (the cwd). */
  base?: string | undefined;
  work: string;
  /** GIT_DIR inside the jail (jailBaseDir or jailWorkDir). */
  gitDir: string;
  stdin?: Readable | undefined;
  /** Where stdout goes; without it stdout is collected (up to 1 MiB) and returned. */
  stdout?: Writable | undefined;
  timeoutMs?: number;
  signal?: AbortSignal | undefined;
}

/** git's whole environment: no configuration file is read, nothing prompts, nothing pages (git-clone.ts starts from it too). */
export const gitEnvironment: Readonly<Record<string, string>> = {
  PATH: '/usr/bin:/bin',
  HOME: '/tmp',
  GIT_CONFIG_NOSYSTEM: '1',
  GIT_CONFIG_GLOBAL: '/dev/null',
  GIT_TERMINAL_PROMPT: '0',
  GIT_PAGER: 'cat',
  GIT_OPTIONAL_LOCKS: '0',
  LC_ALL: 'C',
};
/** Configuration given on the command line, so no file can change it. */
export const gitOptions: readonly string[] = ['-c', 'core.hooksPath=/dev/null', '-c', 'core.fsmonitor=false', '-c', 'core.quotePath=true', '-c', 'diff.external=', '-c', 'core.pager=cat'];
const maxCollectedBytes = 1 << 20;

/** The filesystem the jail sees: /usr read-only, and /bin, /lib... as the host has them (links into /usr, or binds). */
export function systemMounts(): string[] {
  const args = ['--ro-bind', '/usr', '/usr'];
  for (const dir of ['/bin', '/sbin', '/lib', '/lib32', '/lib64', '/libx32']) {
    let stats;
    try {
      stats = lstatSync(dir);
    } catch {
      continue;
    }
    if (stats.isSymbolicLink()) args.push('--symlink', `usr${dir}`, dir);
    else if (stats.isDirectory()) args.push('--ro-bind', dir, dir);
  }
  return args;
}

/**
 * Why a jail cannot be made here although bwrap is installed, found by making one (git --version in it), or undefined:
 * e.g. an API replica's container, which may not switch users or mount (deploy/README.md).
 */
async function jailProblem(host: BwrapHost): Promise<string | undefined> {
  const [file, ...prefix] = bwrapCommand(host) as [string, ...string[]];
  const args = [...prefix, '--unshare-all', '--die-with-parent', '--cap-drop', 'ALL', '--clearenv', ...systemMounts(), '--proc', '/proc', '--dev', '/dev', '--tmpfs', '/tmp', '--', '/usr/bin/git', '--version'];
  const trial = await runCommand(file, args, { timeoutMs: 30_000 });
  return trial.ok ? undefined : `a jail cannot be made here (${trial.stderr.trim() || `exit ${trial.code}`})`;
}

export class GitJail {
  readonly #config: Pick<Config, 'sandboxUser'>;
  readonly #logger: Pick<Logger, 'warn'> | undefined;
  #host: Promise<BwrapHost | undefined> | undefined;
  #warned = false;

  constructor(config: Pick<Config, 'sandboxUser'>, logger?: Pick<Logger, 'warn'>) {
    this.#config = config;
    this.#logger = logger;
  }

  /** Where git finds the baseline repository's objects (for a scratch repository's alternates). */
  async baseObjects(base: string): Promise<string> {
    return (await this.#bwrap()) === undefined ? `${base}/objects` : `${jailBaseDir}/objects`;
  }

  /** The user git runs as when jailed, so the caller can hand it the scratch directory; undefined: the server's own. */
  async sandboxUser(): Promise<{ uid: number; gid: number } | undefined> {
    return (await this.#bwrap())?.sandboxUser;
  }

  #bwrap(): Promise<BwrapHost | undefined> {
    this.#host ??= (async () => {
      const host = await findBwrapHost(this.#config);
      const missing = 'missing' in host ? host.missing : await jailProblem(host);
      if (!('missing' in host) && missing === undefined) return host;
      if (!this.#warned) this.#logger?.warn(`diffs run git without a bubblewrap jail: ${missing}`);
      this.#warned = true;
      return undefined;
    })();
    return this.#host;
  }

  /** Runs git; resolves with its stdout (when not streamed elsewhere), rejects with its stderr on failure. */
  async run(run: GitRun): Promise<string> {
    const git = findExecutable('git');
    if (git === undefined) throw new WorkcellError('runtime_unavailable', 'git is not installed on the server (apt-get install git): diffs need it');
    const host = await this.#bwrap();
    const handles: FileHandle[] = [];
    try {
      const openDir = async (path: string) => {
        const handle = await open(path, constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW);
        handles.push(handle);
        return handle.fd;
      };
      let command: string;
      let args: string[];
      const extraFds: number[] = [];
      const seccomp = host === undefined ? undefined : hostSeccompProgram();
      if (host !== undefined) {
        const [file, ...prefix] = bwrapCommand(host) as [string, ...string[]];
        command = file;
        // stdio 0-2, then: 3 the work dir, 4 the base dir or the filter, 5 the filter.
        extraFds.push(await openDir(run.work));
        const mounts = ['--bind-fd', '3', jailWorkDir];
        if (run.base !== undefined) {
          extraFds.push(await openDir(run.base));
          mounts.push('--ro-bind-fd', '4', jailBaseDir);
        }
        const seccompFd = 3 + extraFds.length;
        args = [
          ...prefix,
          '--unshare-all', '--die-with-parent', '--new-session', '--cap-drop', 'ALL', '--clearenv',
          ...systemMounts(), '--proc', '/proc', '--dev', '/dev', '--tmpfs', '/tmp',
          ...mounts, '--chdir', jailWorkDir,
          ...Object.entries({ ...gitEnvironment, GIT_DIR: run.gitDir }).flatMap(([key, value]) => ['--setenv', key, value]),
          ...(seccomp === undefined ? [] : ['--seccomp', String(seccompFd)]),
          '--', '/usr/bin/git', ...gitOptions, ...run.args,
        ];
      } else {
        command = git;
        // The jail's paths (/work, /base, in GIT_DIR and in arguments such as `init /work`) as the host has them.
        const hostPath = (path: string) => {
          for (const [inJail, onHost] of [[jailWorkDir, run.work], [jailBaseDir, run.base]] as const) {
            if (path === inJail || path.startsWith(`${inJail}/`)) {
              if (onHost === undefined) throw new Error(`${inJail} is the base repository, which was not given`);
              return onHost + path.slice(inJail.length);
            }
          }
          return path;
        };
        const gitDir = hostPath(run.gitDir);
        // Unjailed: the same repositories by their host paths (alternates written for the jail point at /base). git
        // runs as the server's user on repositories a worker's jailed git may have made as the sandbox user, which its
        // ownership check would refuse; they are workcell's own, never a workspace's, so any owner is trusted.
        args = [...gitOptions, '-c', 'safe.directory=*', ...run.args.map(hostPath)];
        return await this.#spawn(command, args, { ...gitEnvironment, HOME: '/nonexistent', GIT_DIR: gitDir }, run.work, [], undefined, run);
      }
      return await this.#spawn(command, args, { PATH: '/usr/bin:/bin' }, undefined, extraFds, seccomp, run);
    } finally {
      await Promise.all(handles.map((handle) => handle.close()));
    }
  }

  async #spawn(command: string, args: string[], env: Record<string, string>, cwd: string | undefined, extraFds: number[], seccomp: Buffer | undefined, run: GitRun): Promise<string> {
    const child = spawn(command, args, {
      env,
      ...(cwd === undefined ? {} : { cwd }),
      stdio: ['pipe', 'pipe', 'pipe', ...extraFds, ...(seccomp === undefined ? [] : ['pipe' as const])],
      detached: true,
    });
    const kill = () => {
      if (child.pid !== undefined) {
        try {
          process.kill(-child.pid, 'SIGKILL');
        } catch {
          // already gone
        }
      }
    };
    const timer = setTimeout(kill, run.timeoutMs ?? 600_000);
    run.signal?.addEventListener('abort', kill, { once: true });
    if (seccomp !== undefined) {
      const pipe = child.stdio[3 + extraFds.length] as Writable;
      pipe.on('error', () => undefined);
      pipe.end(seccomp);
    }
    const [childStdin, childStdout, childStderr] = [child.stdin!, child.stdout!, child.stderr!];
    let stderr = '';
    childStderr.setEncoding('utf8');
    childStderr.on('data', (chunk: string) => {
      if (stderr.length < 16_384) stderr += chunk;
    });
    let stdout = '';
    const output = run.stdout === undefined
      ? (async () => {
          for await (const chunk of childStdout as AsyncIterable<Buffer>) if (stdout.length < maxCollectedBytes) stdout += chunk.toString('utf8');
        })()
      : pipeline(childStdout, run.stdout, { end: false });
    const input = run.stdin === undefined ? (childStdin.end(), Promise.resolve()) : pipeline(run.stdin, childStdin);
    const exited = new Promise<number | null>((resolve, reject) => {
      child.once('error', reject);
      child.once('close', (code) => resolve(code));
    });
    try {
      const failed = (error: unknown) => {
        kill();
        throw error;
      };
      const [code, written, read] = await Promise.allSettled([exited, input.catch(failed), output.catch(failed)]);
      if (run.signal?.aborted) throw run.signal.reason instanceof Error ? run.signal.reason : new Error('aborted');
      const gitFailed = () => new WorkcellError('internal', `git ${run.args[0] ?? ''} failed (exit ${code.status === 'fulfilled' ? (code.value ?? 'signal') : '?'}): ${stderr.trim().slice(-2000)}`);
      // What fed git failing (a file that changed while it was read) says more than git's complaint about its input,
      // unless git stopped reading because it failed: then git's own words.
      if (written.status === 'rejected') {
        const stoppedReading = ['ERR_STREAM_PREMATURE_CLOSE', 'EPIPE'].includes((written.reason as NodeJS.ErrnoException).code ?? '');
        throw stoppedReading && code.status === 'fulfilled' && code.value !== 0 ? gitFailed() : written.reason;
      }
      if (read.status === 'rejected') throw read.reason;
      if (code.status === 'rejected') throw code.reason;
      if (code.value !== 0) throw gitFailed();
      return stdout;
    } finally {
      clearTimeout(timer);
      run.signal?.removeEventListener('abort', kill);
      kill();
    }
  }
}

/** Is git installed here (diffs need it)? */
export function gitAvailable(): boolean {
  return findExecutable('git') !== undefined && existsSync('/usr/bin/git');
}
