// BENCHMARK BASELINE ONLY, never used by workcell: the pipe-based shell session that src/sandboxd/shell/bash-session.ts
// replaced with a PTY, kept verbatim (imports aside) so that bench/ can measure the PTY session's round trip against
// it on the same machine in the same run. Do not change its behaviour.
//
// The `shell` tool's former backend: one persistent bash per sandbox, so cwd, exported variables and shell functions
// carry over from one call to the next, as in a terminal. Pipes, not a PTY.
//
// How a call works: bash reads one line that `read`s the command verbatim from its stdin (NUL-terminated), evals
// it with stdin redirected from /dev/null (a command can neither read our protocol nor wait for input), then prints
// a random per-call end marker with `$?`. Output (stderr merged into stdout, in order) is read up to that marker.
// Quoting, heredocs and multi-line commands need no escaping, and a syntax error is just eval failing with status 2.
//
// A timeout (or an aborted call) is Ctrl-C and then some: SIGINT to the processes this call started (bash's
// descendants in /proc, minus the background jobs of earlier calls, which keep running as they would in a
// terminal), SIGKILL to those still running after a grace period (except this call's own background jobs, which
// ignore SIGINT), and if bash itself still does not come back (a builtin loop such as `while :; do :; done`, or a
// loop that starts the next process each time one is killed) the whole session is killed and the next call starts a
// fresh one (`session_restarted`: cwd and env are reset). exec() never rejects for what a command does: a non-zero
// exit, a timeout or a dead bash are results.
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { homedir } from 'node:os';
import type { z } from 'zod';
import { silentLogger, type Logger } from '../../src/sandboxd/log.ts';
import type { shellExecResponse } from '../../src/sandboxd/protocol.ts';
import { OutputCapture } from '../../src/sandboxd/shell/output-capture.ts';
import { descendantsOf, ignoresSigint, isRunning, processKey, signalProcess, waitUntilGone } from './pipe-process-tree.ts';

export type ExecResult = z.output<typeof shellExecResponse>;

export interface ExecOptions {
  command: string;
  timeoutMs: number;
  /** Aborting interrupts the command as Ctrl-C would; exec() still resolves, with what the command printed. */
  signal?: AbortSignal;
}

export interface BashSessionOptions {
  /** Where the session starts (the workspace root); also where it starts again after a restart. */
  cwd: string;
  /** Added to (and overriding) the session's environment; see defaultShellEnv(). */
  env?: Record<string, string>;
  bashPath?: string;
  /** After the SIGINT a timeout sends, how long the command has to end before its processes get SIGKILL. */
  interruptGraceMs?: number;
  /** After that SIGKILL, how long bash has to come back before the whole session is killed and restarted. */
  killGraceMs?: number;
  /** Output kept from the start and from the end of each call; the middle is dropped and counted. */
  headBytes?: number;
  tailBytes?: number;
  log?: Logger;
}

/** The environment every session starts with: nothing of sandboxd's own but HOME and PATH. */
export function defaultShellEnv(): Record<string, string> {
  return {
    HOME: process.env.HOME ?? homedir(),
    PATH: process.env.PATH ?? '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
    LANG: 'C.UTF-8',
    TERM: 'dumb',
    PAGER: 'cat',
    GIT_PAGER: 'cat',
  };
}

type CallEnd = { kind: 'marker'; exitCode: number } | { kind: 'exited'; exitCode: number | null } | { kind: 'restart' };

interface Call {
  /** `<marker>:`: what bash prints, followed by the exit status and a newline, once the command is done. */
  readonly marker: Buffer;
  readonly capture: OutputCapture;
  /** Bytes held back because they might be the start of the marker. */
  carry: Buffer;
  done: boolean;
  end: (end: CallEnd) => void;
}

const defaultOutputBytes = 1024 * 1024;
/** Output that arrives between calls (from background jobs) is kept smaller and shown at the start of the next call. */
const betweenCallsBytes = 32 * 1024;
/** After bash exits, how long to wait for the rest of its output (a background job may hold the pipe open). */
const drainAfterExitMs = 200;

export class PipeBashSession {
  readonly #options: Required<Omit<BashSessionOptions, 'env' | 'log'>> & { env: Record<string, string> };
  readonly #log: Logger;
  #child: ChildProcessWithoutNullStreams | undefined;
  #call: Call | undefined;
  #between = new OutputCapture(betweenCallsBytes, betweenCallsBytes);
  #queue: Promise<unknown> = Promise.resolve();
  /** bash died between calls: the next call reports session_restarted, since cwd and env are gone. */
  #diedUnreported = false;
  #closed = false;

  constructor(options: BashSessionOptions) {
    this.#options = {
      cwd: options.cwd,
      env: { ...defaultShellEnv(), ...options.env },
      bashPath: options.bashPath ?? 'bash',
      interruptGraceMs: options.interruptGraceMs ?? 1000,
      killGraceMs: options.killGraceMs ?? 1000,
      headBytes: options.headBytes ?? defaultOutputBytes,
      tailBytes: options.tailBytes ?? defaultOutputBytes,
    };
    this.#log = options.log ?? silentLogger;
  }

  /** bash's pid, while a session is running. */
  get pid(): number | undefined {
    return this.#child?.pid;
  }

  /** Runs one command in the session. Calls run one at a time, in the order they were made. */
  exec(options: ExecOptions): Promise<ExecResult> {
    const result = this.#queue.then(() => this.#run(options));
    this.#queue = result.catch(() => undefined);
    return result;
  }

  /** Kills bash and every process it started. The session cannot be used afterwards. */
  async close(): Promise<void> {
    this.#closed = true;
    this.#call?.end({ kind: 'restart' });
    const killed = this.#child === undefined ? [] : this.#kill(this.#child);
    await this.#queue;
    await waitUntilGone(killed, 2000);
  }

  async #run(options: ExecOptions): Promise<ExecResult> {
    if (this.#closed) throw new Error('the shell session is closed');
    const startedAt = performance.now();
    if (options.signal?.aborted) {
      return { output: '', exit_code: null, timed_out: false, omitted_bytes: 0, session_restarted: false, duration_ms: 0 };
    }
    // bash may have died a moment ago without its exit being handled yet: check, rather than send it a command.
    if (this.#child?.pid !== undefined && !isRunning(this.#child.pid)) {
      this.#kill(this.#child);
      this.#diedUnreported = true;
    }
    let restarted = this.#diedUnreported;
    this.#diedUnreported = false;
    const child = this.#child ?? this.#start();

    const capture = new OutputCapture(this.#options.headBytes, this.#options.tailBytes);
    if (this.#between.totalBytes > 0) {
      capture.append(Buffer.from(this.#between.text()));
      capture.countOmitted(this.#between.omittedBytes);
      this.#between = new OutputCapture(betweenCallsBytes, betweenCallsBytes);
    }
    const token = randomBytes(12).toString('hex');
    const [markerStart, markerEnd] = [`__workcell_end_${token.slice(0, 12)}`, `${token.slice(12)}__`];
    let end!: (end: CallEnd) => void;
    const ended = new Promise<CallEnd>((resolve) => (end = resolve));
    const call: Call = { marker: Buffer.from(`${markerStart}${markerEnd}:`), capture, carry: Buffer.alloc(0), done: false, end };
    this.#call = call;
    // Processes alive now are background jobs of earlier calls: an interrupt of this call leaves them alone.
    const earlier = new Set(child.pid === undefined ? [] : descendantsOf(child.pid).map(processKey));

    const timers = new Set<NodeJS.Timeout>();
    let timedOut = false;
    let interrupted = false;
    const interrupt = (reason: 'timeout' | 'abort') => {
      if (interrupted || call.done) return;
      interrupted = true;
      timedOut = reason === 'timeout';
      this.#log.debug('shell command interrupted', { reason, bash_pid: child.pid });
      this.#signalCommand(child, 'SIGINT', 'all', earlier);
      timers.add(
        setTimeout(() => {
          if (call.done) return;
          // Background jobs (SIGINT ignored) are left alone, as a terminal's Ctrl-C would.
          this.#signalCommand(child, 'SIGKILL', 'foreground', earlier);
          timers.add(setTimeout(() => call.end({ kind: 'restart' }), this.#options.killGraceMs));
        }, this.#options.interruptGraceMs),
      );
    };
    timers.add(setTimeout(() => interrupt('timeout'), options.timeoutMs));
    const onAbort = () => interrupt('abort');
    options.signal?.addEventListener('abort', onAbort, { once: true });

    // bash reads this line, then `read` takes the command itself from the pipe, verbatim, up to the NUL that ends
    // it (bash cannot hold NUL bytes in a string anyway). No quoting, no helper process that an interrupt could cut
    // short. The marker is printed from two pieces so that `set -x` tracing of the line does not contain it whole.
    child.stdin.write(
      `IFS= builtin read -r -d '' __workcell_command; builtin eval "$__workcell_command" </dev/null; builtin printf '%s%s:%s\\n' '${markerStart}' '${markerEnd}' "$?"\n`,
    );
    child.stdin.write(Buffer.concat([Buffer.from(options.command.replaceAll('\0', ''), 'utf8'), Buffer.of(0)]));

    const outcome = await ended;
    call.done = true;
    this.#call = undefined;
    for (const timer of timers) clearTimeout(timer);
    options.signal?.removeEventListener('abort', onAbort);
    if (call.carry.length > 0) capture.append(call.carry);

    let exitCode: number | null = null;
    if (outcome.kind === 'marker') exitCode = outcome.exitCode;
    else if (outcome.kind === 'exited') {
      exitCode = outcome.exitCode;
      restarted = true;
    } else {
      this.#log.warn('shell session did not return after its command was killed; restarting it', { bash_pid: child.pid });
      this.#kill(child);
      restarted = true;
    }
    return {
      output: capture.text(),
      exit_code: timedOut ? null : exitCode,
      timed_out: timedOut,
      omitted_bytes: capture.omittedBytes,
      session_restarted: restarted,
      duration_ms: Math.round(performance.now() - startedAt),
    };
  }

  #start(): ChildProcessWithoutNullStreams {
    // detached: bash leads its own session and process group, so the whole group can be killed at once, and it
    // has no controlling terminal, so a command that wants a tty fails instead of hanging.
    const child = spawn(this.#options.bashPath, ['--noprofile', '--norc'], {
      cwd: this.#options.cwd,
      env: this.#options.env,
      stdio: ['pipe', 'pipe', 'pipe'],
      detached: true,
    });
    child.on('error', (error) => this.#log.error('shell session error', { error: error.message }));
    if (child.pid === undefined) throw new Error(`cannot start ${this.#options.bashPath} for the shell session`);
    this.#child = child;
    this.#log.info('shell session started', { bash_pid: child.pid });
    let stdoutEnded = false;
    child.stdin.on('error', () => {}); // EPIPE when bash has died: its exit is handled below
    child.stdout.on('data', (chunk: Buffer) => {
      if (this.#child === child) this.#onOutput(chunk);
    });
    child.stdout.on('end', () => (stdoutEnded = true));
    child.stderr.on('data', (chunk: Buffer) => {
      if (this.#child === child) this.#onOutput(chunk);
    });
    child.on('exit', (code, signal) => {
      if (this.#child !== child) return; // killed on purpose
      this.#log.warn('shell session exited', { bash_pid: child.pid, code, signal });
      const finish = () => {
        if (this.#child !== child) return;
        this.#child = undefined;
        const call = this.#call;
        if (call !== undefined && !call.done) call.end({ kind: 'exited', exitCode: code });
        else this.#diedUnreported = true;
        this.#kill(child);
      };
      if (stdoutEnded) return finish();
      const timer = setTimeout(finish, drainAfterExitMs);
      child.stdout.once('end', () => {
        clearTimeout(timer);
        finish();
      });
    });
    // All output, bash's own errors included, goes through one pipe so that it stays in order. The INT trap keeps
    // bash alive when a command substitution's child dies of our SIGINT (bash would otherwise kill itself with
    // SIGINT, as a script does on Ctrl-C); subshells and programs still get the default action.
    child.stdin.write('exec 2>&1; trap : INT\n');
    return child;
  }

  #onOutput(chunk: Buffer): void {
    const call = this.#call;
    if (call === undefined || call.done) {
      this.#between.append(chunk);
      return;
    }
    const data = call.carry.length === 0 ? chunk : Buffer.concat([call.carry, chunk]);
    const at = data.indexOf(call.marker);
    if (at === -1) {
      const keep = Math.min(data.length, call.marker.length - 1);
      call.capture.append(data.subarray(0, data.length - keep));
      call.carry = Buffer.from(data.subarray(data.length - keep));
      return;
    }
    call.capture.append(data.subarray(0, at));
    const newline = data.indexOf(0x0a, at + call.marker.length);
    if (newline === -1) {
      call.carry = Buffer.from(data.subarray(at));
      return;
    }
    const exitCode = Number.parseInt(data.subarray(at + call.marker.length, newline).toString('latin1'), 10);
    call.carry = Buffer.alloc(0);
    call.done = true;
    this.#between.append(data.subarray(newline + 1));
    call.end({ kind: 'marker', exitCode: Number.isNaN(exitCode) ? 1 : exitCode });
  }

  /**
   * Signals the processes this call started (not the background jobs of earlier calls): all of them, or only those
   * not ignoring SIGINT (so not this call's own background jobs either).
   */
  #signalCommand(child: ChildProcessWithoutNullStreams, signal: NodeJS.Signals, which: 'all' | 'foreground', earlier: ReadonlySet<string>): void {
    if (child.pid === undefined) return;
    for (const { pid } of descendantsOf(child.pid, earlier)) {
      if (which === 'foreground' && ignoresSigint(pid)) continue;
      signalProcess(pid, signal);
    }
  }

  /**
   * Kills bash, its process group and every descendant (found before bash dies, while they are still its).
   * Returns the pids it killed.
   */
  #kill(child: ChildProcessWithoutNullStreams): number[] {
    if (this.#child === child) this.#child = undefined;
    const pid = child.pid;
    const killed: number[] = [];
    if (pid !== undefined) {
      killed.push(pid, ...descendantsOf(pid).map((descendant) => descendant.pid));
      signalProcess(-pid, 'SIGKILL');
      for (const each of killed) signalProcess(each, 'SIGKILL');
    }
    child.stdin.destroy();
    child.stdout.destroy();
    child.stderr.destroy();
    return killed;
  }
}
