// The `shell` tool's backend: a persistent interactive bash on a real terminal (a PTY, node-pty), so that cwd,
// variables, functions and aliases carry over from one call to the next, programs see a terminal (isatty, a window
// size, job control, Ctrl-C) and background jobs keep running between calls, as in a person's terminal.
//
// Two channels, so that the protocol never travels through the terminal: bash reads its commands from a FIFO
// (created for the session, opened by both ends, then unlinked), and the terminal carries only what programs read
// and write. Each call sends one line on the FIFO, `__workcell_a=A __workcell_b=B; __workcell_start; builtin eval
// '<command>' <TTY`: the command verbatim in single quotes (no length limit, no echo, no line editing; a syntax error
// is eval failing with status 2), run with the terminal as its stdin. A and B are random per call and printed side by
// side only by two readonly functions: `__workcell_start` prints `AB+` once bash has read the whole line and starts
// the command, and bash's PROMPT_COMMAND (readonly) prints `AB:$?` before every prompt, which ends the call. Since an
// interactive bash comes back to its prompt after anything (a command's end, Ctrl-C, a syntax error), the end marker
// comes after anything, and output cannot fake either marker without knowing this call's random halves.
//
// The timeout counts from the start marker: the command's own time, not the time a busy machine takes to schedule
// bash, which must never get a Ctrl-C while it is still reading the line (it would drop the line, or part of it).
// An abort before the start waits for it too; a command that does not start within the start timeout (bash wedged)
// is interrupted all the same, and the escalation below ends in a restart.
//
// Interrupting (a timeout, or an aborted call) goes the way of a terminal, then escalates: a full-screen program
// that is known (vim, less, top...) gets its quit keys, anything else Ctrl-C (\x03 through the terminal: SIGINT to
// the foreground job; bash itself breaks out of a loop); after interruptGraceMs the foreground process group (the
// terminal's tpgid) gets SIGTERM (and SIGCONT, if it was stopped); after killGraceMs it and its descendants get
// SIGKILL; after killGraceMs more the session is killed and the next call starts a fresh one (`session_restarted`:
// cwd and env reset). Background jobs live in process groups of their own and are never touched by an interrupt;
// a restart or close() kills everything of the session. exec() never rejects for what a command does: a non-zero
// exit, a timeout, a dead bash, or a bash that cannot start are results.
//
// The model gets text: terminal-text.ts removes colours and control sequences and applies carriage returns, per
// call, capped head and tail. People watching a session (the /v1/terminal websocket) get the raw bytes.
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, constants, openSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { Socket } from 'node:net';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';
import type { z } from 'zod';
import { silentLogger, type Logger } from '../log.ts';
import type { shellExecResponse } from '../protocol.ts';
import { OutputCapture } from './output-capture.ts';
import { commandNameOf, descendantsOf, foregroundGroupOf, isRunning, membersOf, readingTerminal, signalProcess, waitUntilGone } from './process-tree.ts';
import { loadPty, type Pty } from './pty.ts';
import { TerminalText } from './terminal-text.ts';

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
  /** The session's name, for logs. */
  name?: string;
  /** After Ctrl-C, how long the command has to end before its process group gets SIGTERM. */
  interruptGraceMs?: number;
  /** After SIGTERM, how long before SIGKILL; after SIGKILL, how long before the whole session is restarted. */
  killGraceMs?: number;
  /** How long a new bash may take to start, and bash to start a call's command, before it counts as wedged. */
  startTimeoutMs?: number;
  /** Output kept from the start and from the end of each call; the middle is dropped and counted. */
  headBytes?: number;
  tailBytes?: number;
  log?: Logger;
}

/** The terminal's size: wide, so that programs do not wrap lines the model then reads broken. */
export const terminalColumns = 200;
export const terminalRows = 50;

/**
 * The environment every session starts with: nothing of sandboxd's own but HOME and PATH. TERM is xterm-256color:
 * programs behave as they would for a person (a full-screen program takes the alternate screen, which sandboxd
 * recognizes and can close; colours and progress bars are rendered away by terminal-text.ts as a screen would show
 * them), and a person watching the session sees it as drawn. `dumb` would not spare the stripping (plenty of
 * programs colour their output regardless) and sends others down rarely used paths (less and top refuse it).
 */
export function defaultShellEnv(): Record<string, string> {
  return {
    HOME: process.env.HOME ?? homedir(),
    PATH: process.env.PATH ?? '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
    LANG: 'C.UTF-8',
    TERM: 'xterm-256color',
    COLUMNS: String(terminalColumns),
    LINES: String(terminalRows),
    PAGER: 'cat',
    GIT_PAGER: 'cat',
  };
}

/** Keys that end a full-screen program better than signals do (vim killed by a signal leaves a swap file behind). */
const quitKeys: Record<string, string> = {
  vi: '\x1b\x1b:qa!\r',
  vim: '\x1b\x1b:qa!\r',
  'vim.tiny': '\x1b\x1b:qa!\r',
  'vim.basic': '\x1b\x1b:qa!\r',
  view: '\x1b\x1b:qa!\r',
  nvim: '\x1b\x1b:qa!\r',
  less: 'q',
  more: 'q',
  most: 'q',
  top: 'q',
  htop: 'q',
};

type CallEnd = { kind: 'marker'; exitCode: number } | { kind: 'exited'; exitCode: number | null } | { kind: 'restart' };

interface Call {
  /** `<A><B>+`, then a newline: what __workcell_start prints when bash has read the line and starts the command. */
  readonly startMarker: Buffer;
  /** Set when the start marker has been seen; then onStart runs. */
  started: boolean;
  readonly onStart: () => void;
  /** `<A><B>:`: what PROMPT_COMMAND prints, followed by the exit status and a newline, when the command is done. */
  readonly marker: Buffer;
  readonly capture: OutputCapture;
  /** Bytes held back because they might be the start of the marker. */
  carry: Buffer;
  done: boolean;
  end: (end: CallEnd) => void;
}

/** A running bash on its terminal. */
interface Live {
  readonly terminal: Pty;
  readonly pid: number;
  /** Where commands go: the FIFO bash reads. */
  readonly channel: Socket;
  /** The terminal's device, given to each command as its stdin. */
  readonly ttyPath: string;
  readonly text: TerminalText;
  /** Set once bash has read the bootstrap and printed its first marker. */
  ready: boolean;
}

const defaultOutputBytes = 1024 * 1024;
/** Output that arrives between calls (from background jobs) is kept smaller and shown at the start of the next call. */
const betweenCallsBytes = 32 * 1024;
/** Raw terminal output kept for people who attach to the session (a screenful or two of context). */
const rawHistoryBytes = 64 * 1024;
/** How long a new bash may take to read its bootstrap and print the first marker, and bash to start a call's command. */
const defaultStartTimeoutMs = 15_000;
/** How long output of a bash that exited during a call may still arrive from the PTY. */
const exitDrainMs = 100;
/** Commands longer than this are shown to watchers cut short. */
const watcherCommandChars = 2000;

function quoteForBash(text: string): string {
  return `'${text.replaceAll("'", "'\\''")}'`;
}

function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

export class BashSession {
  readonly name: string;
  readonly #options: Required<Omit<BashSessionOptions, 'env' | 'log' | 'name'>> & { env: Record<string, string> };
  readonly #log: Logger;
  #live: Live | undefined;
  #call: Call | undefined;
  /** The boot marker of the bash being started, what to do when it appears, and the output so far (a marker may be split). */
  #boot: { marker: Buffer; seen: () => void; output?: Buffer } | undefined;
  #between = new OutputCapture(betweenCallsBytes, betweenCallsBytes);
  #queue: Promise<unknown> = Promise.resolve();
  /** Calls made and not yet answered. */
  #pending = 0;
  /** bash died between calls: the next call reports session_restarted, since cwd and env are gone. */
  #diedUnreported = false;
  #closed = false;
  readonly #watchers = new Set<(data: Buffer) => void>();
  #history: Buffer[] = [];
  #historyBytes = 0;

  constructor(options: BashSessionOptions) {
    this.name = options.name ?? 'main';
    this.#options = {
      cwd: options.cwd,
      env: { ...defaultShellEnv(), ...options.env },
      bashPath: options.bashPath ?? 'bash',
      interruptGraceMs: options.interruptGraceMs ?? 1000,
      killGraceMs: options.killGraceMs ?? 1000,
      startTimeoutMs: options.startTimeoutMs ?? defaultStartTimeoutMs,
      headBytes: options.headBytes ?? defaultOutputBytes,
      tailBytes: options.tailBytes ?? defaultOutputBytes,
    };
    this.#log = options.log ?? silentLogger;
  }

  /** bash's pid, while a session is running. */
  get pid(): number | undefined {
    return this.#live?.pid;
  }

  /** True when no bash runs and no call is waiting: the session holds no state (its bash exited, or was never started). */
  get idle(): boolean {
    return this.#pending === 0 && (this.#live === undefined || !isRunning(this.#live.pid));
  }

  /** Runs one command in the session. Calls run one at a time, in the order they were made. */
  exec(options: ExecOptions): Promise<ExecResult> {
    this.#pending++;
    const result = this.#queue.then(() => this.#run(options)).finally(() => this.#pending--);
    this.#queue = result.catch(() => undefined);
    return result;
  }

  /**
   * Sends everything the terminal shows from now on (the raw bytes, colours and all) to `listener`, starting with
   * the last few kilobytes for context, and each command as it is sent. Returns the function that detaches it.
   */
  watch(listener: (data: Buffer) => void): () => void {
    if (this.#historyBytes > 0) listener(Buffer.concat(this.#history, this.#historyBytes));
    this.#watchers.add(listener);
    return () => this.#watchers.delete(listener);
  }

  /** Kills bash and every process it started. The session cannot be used afterwards. */
  async close(): Promise<void> {
    this.#closed = true;
    this.#call?.end({ kind: 'restart' });
    const killed = this.#live === undefined ? [] : this.#kill(this.#live);
    await this.#queue;
    await waitUntilGone(killed, 2000);
    this.#watchers.clear();
  }

  async #run(options: ExecOptions): Promise<ExecResult> {
    if (this.#closed) throw new Error('the shell session is closed');
    const startedAt = performance.now();
    const result = (fields: Partial<ExecResult>): ExecResult => ({
      output: '',
      exit_code: null,
      timed_out: false,
      omitted_bytes: 0,
      session_restarted: false,
      duration_ms: Math.round(performance.now() - startedAt),
      ...fields,
    });
    if (options.signal?.aborted) return result({});
    // bash may have died a moment ago without its exit being handled yet: check, rather than send it a command.
    if (this.#live !== undefined && !isRunning(this.#live.pid)) {
      this.#kill(this.#live);
      this.#diedUnreported = true;
    }
    let restarted = this.#diedUnreported;
    this.#diedUnreported = false;
    let live: Live;
    try {
      live = this.#live ?? (await this.#start());
    } catch (error) {
      this.#log.error('shell session could not start', { session: this.name, error: errorText(error) });
      return result({
        output: `[sandboxd] the shell session could not start: ${errorText(error)}. If the sandbox is at its process limit, stop some processes (or wait for them to end) and try again.\n`,
        session_restarted: restarted,
      });
    }
    // Aborted while bash was starting: the command never ran.
    if (options.signal?.aborted) return result({ session_restarted: restarted });

    const capture = new OutputCapture(this.#options.headBytes, this.#options.tailBytes);
    this.#between.append(Buffer.from(live.text.flush()));
    if (this.#between.totalBytes > 0) {
      capture.append(Buffer.from(this.#between.text()));
      capture.countOmitted(this.#between.omittedBytes);
      this.#between = new OutputCapture(betweenCallsBytes, betweenCallsBytes);
    }
    const [a, b] = [randomBytes(8).toString('hex'), randomBytes(8).toString('hex')];
    let end!: (end: CallEnd) => void;
    const ended = new Promise<CallEnd>((resolve) => (end = resolve));
    const timers = new Set<NodeJS.Timeout>();
    const later = (ms: number, action: () => void) => timers.add(setTimeout(() => call.done || action(), ms));
    // An interrupt asked for before the command started (an abort), made once it has.
    let pendingInterrupt: 'timeout' | 'abort' | undefined;
    const call: Call = {
      startMarker: Buffer.from(`${a}${b}+`),
      started: false,
      onStart: () => {
        later(options.timeoutMs, () => interrupt('timeout'));
        if (pendingInterrupt !== undefined) interrupt(pendingInterrupt);
      },
      marker: Buffer.from(`${a}${b}:`),
      capture,
      carry: Buffer.alloc(0),
      done: false,
      end,
    };
    this.#call = call;

    let timedOut = false;
    let waitingForInput = false;
    let interrupted = false;
    let ctrlC = false;
    const interrupt = (reason: 'timeout' | 'abort', force = false) => {
      if (interrupted || call.done) return;
      if (!call.started && !force) {
        pendingInterrupt = reason;
        return;
      }
      interrupted = true;
      timedOut = reason === 'timeout';
      const group = foregroundGroupOf(live.pid);
      const foreground = group === undefined || group === live.pid ? [live.pid] : membersOf('group', group);
      waitingForInput = readingTerminal(foreground, live.ttyPath);
      const keys = group === undefined || group === live.pid ? undefined : quitKeys[commandNameOf(group)];
      this.#log.debug('shell command interrupted', { session: this.name, reason, bash_pid: live.pid, foreground_group: group, waiting_for_input: waitingForInput, quit_keys: keys !== undefined });
      ctrlC = keys === undefined;
      // Only to a terminal that is still open: a closed one's descriptor number may already name another file.
      if (this.#live === live) live.terminal.write(keys ?? '\x03');
      later(this.#options.interruptGraceMs, () => {
        // Whatever is in the foreground now (Ctrl-C may have ended one job of a list and the next one started).
        const now = foregroundGroupOf(live.pid);
        if (now === undefined || now === live.pid) return later(this.#options.killGraceMs, () => call.end({ kind: 'restart' }));
        signalProcess(-now, 'SIGTERM');
        signalProcess(-now, 'SIGCONT');
        later(this.#options.killGraceMs, () => {
          const members = membersOf('group', now);
          const victims = new Set([...members, ...members.flatMap((pid) => descendantsOf(pid).map((descendant) => descendant.pid))]);
          signalProcess(-now, 'SIGKILL');
          for (const pid of victims) signalProcess(pid, 'SIGKILL');
          later(this.#options.killGraceMs, () => call.end({ kind: 'restart' }));
        });
      });
    };
    // bash that does not even start the command in this long is wedged: interrupt it anyway (and restart it, if need be).
    later(Math.max(options.timeoutMs, this.#options.startTimeoutMs), () => call.started || interrupt('timeout', true));
    const onAbort = () => interrupt('abort');
    options.signal?.addEventListener('abort', onAbort, { once: true });

    this.#showWatchers(options.command);
    // NUL cannot be in a bash string (the pipe implementation dropped it too); the rest goes verbatim.
    live.channel.write(`__workcell_a=${a} __workcell_b=${b}; __workcell_start; builtin eval ${quoteForBash(options.command.replaceAll('\0', ''))} <${quoteForBash(live.ttyPath)}\n`);

    const outcome = await ended;
    call.done = true;
    this.#call = undefined;
    for (const timer of timers) clearTimeout(timer);
    options.signal?.removeEventListener('abort', onAbort);
    if (call.carry.length > 0) capture.append(Buffer.from(live.text.push(call.carry)));
    capture.append(Buffer.from(live.text.flush()));

    let exitCode: number | null = null;
    if (outcome.kind === 'marker') exitCode = outcome.exitCode;
    else if (outcome.kind === 'exited') {
      exitCode = outcome.exitCode;
      restarted = true;
    } else {
      if (!this.#closed) this.#log.warn('shell session did not come back after its command was interrupted; restarting it', { session: this.name, bash_pid: live.pid });
      this.#kill(live);
      restarted = true;
    }
    let output = capture.text();
    // Where a terminal would show ^C, bash prints a newline after Ctrl-C: not the command's output.
    if (ctrlC && outcome.kind === 'marker' && output.endsWith('\n')) output = output.slice(0, -1);
    return result({
      output,
      exit_code: timedOut ? null : exitCode,
      timed_out: timedOut,
      omitted_bytes: capture.omittedBytes,
      session_restarted: restarted,
      ...(waitingForInput ? { waiting_for_input: true } : {}),
    });
  }

  /** Starts bash on a new terminal with its command FIFO, and waits until it has read its bootstrap. */
  async #start(): Promise<Live> {
    const pty = await loadPty();
    const directory = await mkdtemp(join(tmpdir(), 'workcell-shell-'));
    let channel: Socket | undefined;
    let terminal: Pty | undefined;
    try {
      const fifo = join(directory, 'commands');
      await new Promise<void>((resolve, reject) =>
        execFile('mkfifo', ['-m', '600', fifo], (error) => (error === null ? resolve() : reject(new Error(`mkfifo failed: ${error.message}`)))),
      );
      // Read-write: opening does not wait for bash, and the FIFO never reaches end-of-file while we hold it.
      const fd = openSync(fifo, constants.O_RDWR | constants.O_NONBLOCK);
      try {
        channel = new Socket({ fd, readable: false, writable: true });
      } catch (error) {
        closeSync(fd);
        throw error;
      }
      channel.on('error', (error) => this.#log.warn('shell command channel error', { session: this.name, error: error.message }));
      // `stty -echo`: nothing is typed into this terminal, and a Ctrl-C should not print ^C. Then the interactive
      // bash (job control, PROMPT_COMMAND, Ctrl-C back to the prompt) reading commands from the FIFO, without
      // readline (no line editing, no bracketed paste).
      const launcher = 'stty -echo 2>/dev/null; exec "$BASH" --noprofile --norc --noediting -i 0<"$0"';
      terminal = pty.spawn(this.#options.bashPath, ['--noprofile', '--norc', '-c', launcher, fifo], {
        name: this.#options.env.TERM ?? 'xterm-256color',
        cols: terminalColumns,
        rows: terminalRows,
        cwd: this.#options.cwd,
        env: this.#options.env,
        encoding: null,
      });
      const live: Live = { terminal, pid: terminal.pid, channel, ttyPath: terminal.ptsName ?? '/dev/tty', text: new TerminalText(), ready: false };
      this.#live = live;
      terminal.onData((chunk: Buffer | string) => {
        if (this.#live === live) this.#onOutput(live, typeof chunk === 'string' ? Buffer.from(chunk) : chunk);
      });
      terminal.onExit(({ exitCode, signal }) => this.#onExit(live, exitCode, signal));

      const [a, b] = [randomBytes(8).toString('hex'), randomBytes(8).toString('hex')];
      const started = terminal;
      const ready = new Promise<void>((resolve, reject) => {
        const startTimeoutMs = this.#options.startTimeoutMs;
        const timer = setTimeout(() => reject(new Error(`bash did not start within ${startTimeoutMs} ms`)), startTimeoutMs);
        this.#boot = {
          marker: Buffer.from(`${a}${b}:`),
          seen: () => {
            clearTimeout(timer);
            resolve();
          },
        };
        started.onExit(() => {
          clearTimeout(timer);
          reject(new Error('bash exited while starting'));
        });
      });
      // One line, so that PROMPT_COMMAND first runs after all of it. Prompts are empty (bash prints them on the
      // terminal), history is off, and the marker function and PROMPT_COMMAND cannot be redefined by accident.
      channel.write(
        [
          'PS1= PS2= PS0= PS4="+ "',
          'unset HISTFILE MAILPATH PROMPT_COMMAND',
          'set +o history +H',
          "__workcell_mark() { builtin printf '%s%s:%s\\n' \"$__workcell_a\" \"$__workcell_b\" \"$1\"; }",
          "__workcell_start() { builtin printf '%s%s+\\n' \"$__workcell_a\" \"$__workcell_b\"; }",
          'readonly -f __workcell_mark __workcell_start',
          'PROMPT_COMMAND=\'__workcell_mark "$?"\'',
          'readonly PROMPT_COMMAND',
          `__workcell_a=${a} __workcell_b=${b}\n`,
        ].join('; '),
      );
      await ready;
      live.ready = true;
      this.#log.info('shell session started', { session: this.name, bash_pid: live.pid, tty: live.ttyPath });
      return live;
    } catch (error) {
      this.#boot = undefined;
      if (this.#live !== undefined && this.#live.terminal === terminal) this.#kill(this.#live);
      else channel?.destroy();
      // Nothing of a session that never started is lost: the failure itself is this call's result.
      this.#diedUnreported = false;
      throw error;
    } finally {
      // bash has the FIFO open (or never will): the name is not needed any more.
      await rm(directory, { recursive: true, force: true }).catch(() => undefined);
    }
  }

  #onOutput(live: Live, chunk: Buffer): void {
    if (!live.ready) {
      // Before the bootstrap's marker: bash's first prompt and nothing else; dropped.
      const boot = this.#boot;
      if (boot === undefined) return;
      const output = boot.output === undefined ? chunk : Buffer.concat([boot.output, chunk]);
      const at = output.indexOf(boot.marker);
      // Ready at the end of the marker's line: a newline arriving in a later chunk would otherwise be taken for
      // output between calls, and start the first call's output with an empty line.
      if (at !== -1 && output.indexOf(0x0a, at + boot.marker.length) !== -1) {
        this.#boot = undefined;
        live.ready = true;
        boot.seen();
      } else {
        boot.output = output.subarray(Math.max(0, output.length - 4096));
      }
      return;
    }
    this.#record(chunk);
    const call = this.#call;
    if (call === undefined || call.done) {
      this.#between.append(Buffer.from(live.text.push(chunk)));
      return;
    }
    let data = call.carry.length === 0 ? chunk : Buffer.concat([call.carry, chunk]);
    if (!call.started) {
      // Before the start marker comes the output of background jobs since the last call (this call shows it).
      const start = data.indexOf(call.startMarker);
      const end = data.indexOf(call.marker);
      if (end !== -1 && (start === -1 || end < start)) {
        // Back at the prompt without having started the command: interrupted while still reading its line (forced).
        call.started = true;
      } else if (start === -1) {
        const keep = Math.min(data.length, call.startMarker.length - 1);
        call.capture.append(Buffer.from(live.text.push(data.subarray(0, data.length - keep))));
        call.carry = Buffer.from(data.subarray(data.length - keep));
        return;
      } else {
        call.capture.append(Buffer.from(live.text.push(data.subarray(0, start))));
        // The terminal turns the newline into \r\n: the marker's line ends at the \n.
        const newline = data.indexOf(0x0a, start + call.startMarker.length);
        if (newline === -1) {
          call.carry = Buffer.from(data.subarray(start));
          return;
        }
        data = data.subarray(newline + 1);
        call.carry = Buffer.alloc(0);
        call.started = true;
        call.onStart();
        if (call.done) return;
      }
    }
    const at = data.indexOf(call.marker);
    if (at === -1) {
      const keep = Math.min(data.length, call.marker.length - 1);
      call.capture.append(Buffer.from(live.text.push(data.subarray(0, data.length - keep))));
      call.carry = Buffer.from(data.subarray(data.length - keep));
      return;
    }
    call.capture.append(Buffer.from(live.text.push(data.subarray(0, at))));
    const newline = data.indexOf(0x0a, at + call.marker.length);
    if (newline === -1) {
      call.carry = Buffer.from(data.subarray(at));
      return;
    }
    const exitCode = Number.parseInt(data.subarray(at + call.marker.length, newline).toString('latin1'), 10);
    call.carry = Buffer.alloc(0);
    call.done = true;
    call.capture.append(Buffer.from(live.text.flush()));
    this.#between.append(Buffer.from(live.text.push(data.subarray(newline + 1))));
    call.end({ kind: 'marker', exitCode: Number.isNaN(exitCode) ? 1 : exitCode });
  }

  #onExit(live: Live, exitCode: number, signal: number | undefined): void {
    if (this.#live !== live) return; // killed on purpose
    this.#log.warn('shell session exited', { session: this.name, bash_pid: live.pid, code: exitCode, signal });
    const call = this.#call;
    if (call === undefined || call.done) {
      this.#kill(live);
      this.#diedUnreported = true;
      return;
    }
    // node-pty may report the exit before the last of bash's output has been read: the call ends once that drained.
    setTimeout(() => {
      if (this.#live === live) this.#kill(live);
      if (!call.done) call.end({ kind: 'exited', exitCode: signal ? null : exitCode });
    }, exitDrainMs);
  }

  /** Keeps the raw output for people who attach later, and passes it to those watching now. */
  #record(chunk: Buffer): void {
    this.#history.push(chunk);
    this.#historyBytes += chunk.length;
    while (this.#historyBytes - (this.#history[0]?.length ?? 0) >= rawHistoryBytes) this.#historyBytes -= this.#history.shift()!.length;
    for (const watcher of this.#watchers) watcher(chunk);
  }

  /** Shows watchers the command the agent sends (it never goes through the terminal, so they would not see it). */
  #showWatchers(command: string): void {
    const shown = command.length > watcherCommandChars ? `${command.slice(0, watcherCommandChars)} [... ${command.length - watcherCommandChars} more characters]` : command;
    this.#record(Buffer.from(`\x1b[1;32m$\x1b[0m ${shown.replaceAll(/\r?\n/g, '\r\n  ')}\r\n`));
  }

  /**
   * Kills bash, everything in its terminal's session and every descendant (found before bash dies, while they are
   * still its), and closes the terminal and the FIFO. Returns the pids it killed.
   */
  #kill(live: Live): number[] {
    if (this.#live === live) this.#live = undefined;
    const killed = [...new Set([live.pid, ...descendantsOf(live.pid).map((entry) => entry.pid), ...membersOf('session', live.pid)])];
    signalProcess(-live.pid, 'SIGKILL');
    for (const pid of killed) signalProcess(pid, 'SIGKILL');
    live.channel.destroy();
    try {
      live.terminal.destroy?.();
    } catch {
      // already closed
    }
    return killed;
  }
}
