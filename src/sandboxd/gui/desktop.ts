// The sandbox's X desktop, started on first use: a job that never touches the GUI pays nothing for it.
//   display: Xvfb :1 (1280x800x24, no TCP; its socket in the sandbox's private /tmp/.X11-unix, its abstract socket in
//            the sandbox's own network namespace) and openbox, for the gui tool and for programs the agent starts;
//   viewer:  x11vnc on 127.0.0.1:5900 and websockify serving noVNC on 127.0.0.1:6080, for people, started on the first
//            desktop request (ServiceRegistry service `desktop`). Both listen on the sandbox's loopback only, which
//            nothing outside the sandbox's network namespace can reach: people come in through the orchestrator.
// Readiness is observed, never assumed after a delay: Xvfb writes its display number on -displayfd once it accepts
// clients, openbox is up once the root window names its supporting WM window, and x11vnc and websockify once their
// ports accept connections. A process that died (the agent may kill it) is started again on the next use.
// Every process runs in its own process group and is killed on close(); all of them die with the sandbox anyway.
// This module must never start anything that listens beyond the sandbox's loopback.
import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, closeSync, existsSync, mkdirSync, openSync, readFileSync, rmSync, unlinkSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { SandboxdToolError } from '../errors.ts';
import { silentLogger, type Logger } from '../log.ts';
import type { Service } from '../services.ts';
import { defaultScreen } from './gui-request.ts';

export interface DesktopOptions {
  /** X display number (default 1: DISPLAY=:1). */
  display?: number;
  width?: number;
  height?: number;
  /** Where logs of the desktop's processes and of launched programs go (default /tmp/workcell-desktop). */
  stateDir?: string;
  /** Where launched programs start (the workspace). */
  cwd?: string;
  /** Environment of the desktop's processes and of programs started on it, over HOME, PATH and LANG (DISPLAY is added). */
  env?: Record<string, string>;
  vncPort?: number;
  webPort?: number;
  novncDir?: string;
  /** How long each process has to become ready. */
  startTimeoutMs?: number;
  /**
   * Run openbox (default). false: the bare X server, for sandboxes where openbox cannot run (gVisor's 2022 runsc);
   * windows then have no decorations and are placed where they ask to be.
   */
  windowManager?: boolean;
  log?: Logger;
}

export interface CommandResult {
  code: number | null;
  stdout: Buffer;
  stderr: string;
  timedOut: boolean;
}

interface Managed {
  name: string;
  child: ChildProcess;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  alive: boolean;
  logPath: string;
}

/** Timings of the last start, for logs and benchmarks. */
export interface DesktopTimings {
  displayReadyMs?: number;
  windowManagerReadyMs?: number;
  viewerReadyMs?: number;
}

const commandOutputLimit = 32 * 1024 * 1024;

export class Desktop {
  readonly displayNumber: number;
  readonly width: number;
  readonly height: number;
  readonly stateDir: string;
  readonly timings: DesktopTimings = {};
  readonly #options: Required<Omit<DesktopOptions, 'display' | 'width' | 'height' | 'stateDir' | 'log' | 'env'>>;
  readonly #env: Record<string, string>;
  readonly #log: Logger;
  #xvfb: Managed | undefined;
  #openbox: Managed | undefined;
  #x11vnc: Managed | undefined;
  #websockify: Managed | undefined;
  #displayStarting: Promise<void> | undefined;
  #viewerStarting: Promise<void> | undefined;
  /** Programs started with launch(): killed on close(). */
  readonly #launched = new Set<ChildProcess>();
  #launchCount = 0;
  #closed = false;

  constructor(options: DesktopOptions = {}) {
    this.displayNumber = options.display ?? 1;
    this.width = options.width ?? defaultScreen.width;
    this.height = options.height ?? defaultScreen.height;
    this.stateDir = options.stateDir ?? '/tmp/workcell-desktop';
    this.#options = {
      cwd: options.cwd ?? process.cwd(),
      vncPort: options.vncPort ?? 5900,
      webPort: options.webPort ?? 6080,
      novncDir: options.novncDir ?? '/usr/share/novnc',
      startTimeoutMs: options.startTimeoutMs ?? 30_000,
      windowManager: options.windowManager ?? true,
    };
    this.#env = {
      HOME: process.env.HOME ?? '/home/agent',
      PATH: process.env.PATH ?? '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
      LANG: 'C.UTF-8',
      ...options.env,
      DISPLAY: `:${this.displayNumber}`,
    };
    this.#log = options.log ?? silentLogger;
  }

  /** Whether openbox manages the windows (see DesktopOptions.windowManager). */
  get windowManager(): boolean {
    return this.#options.windowManager;
  }

  get display(): string {
    return `:${this.displayNumber}`;
  }

  /** The environment of programs on this desktop (DISPLAY set). */
  get env(): Record<string, string> {
    return { ...this.#env };
  }

  /** Whether Xvfb and the window manager are running now. */
  get running(): boolean {
    return this.#xvfb?.alive === true && (!this.#options.windowManager || this.#openbox?.alive === true);
  }

  /** The noVNC viewer as a proxied service: it starts the whole desktop on the first request. */
  service(): Service {
    return {
      port: this.#options.webPort,
      stripBasePath: true,
      ensureStarted: () => this.ensureViewer(),
      listeners: () => [
        { port: this.#options.webPort, pids: this.#websockify?.child.pid === undefined ? [] : [this.#websockify.child.pid] },
        { port: this.#options.vncPort, pids: this.#x11vnc?.child.pid === undefined ? [] : [this.#x11vnc.child.pid] },
      ],
    };
  }

  /** Starts Xvfb and openbox unless they run; resolves once both are ready. */
  async ensureDisplay(): Promise<void> {
    if (this.#closed) throw new SandboxdToolError('gui_failed', 'the desktop is shutting down');
    // An X server killed a moment ago may not have been reaped yet: its socket refusing connections tells.
    if (this.#displayStarting === undefined && this.running && (await this.#displayAnswers())) return;
    this.#displayStarting ??= this.#startDisplay().finally(() => (this.#displayStarting = undefined));
    return this.#displayStarting;
  }

  /** Whether the X server accepts connections on its socket. */
  #displayAnswers(): Promise<boolean> {
    return new Promise((resolve) => {
      const socket = connect({ path: `/tmp/.X11-unix/X${this.displayNumber}` });
      socket.once('connect', () => {
        socket.destroy();
        resolve(true);
      });
      socket.once('error', () => resolve(false));
    });
  }

  /** Starts the display and x11vnc and websockify (noVNC) unless they run; resolves once noVNC accepts connections. */
  async ensureViewer(): Promise<void> {
    await this.ensureDisplay();
    if (this.#x11vnc?.alive === true && this.#websockify?.alive === true) return;
    this.#viewerStarting ??= this.#startViewer().finally(() => (this.#viewerStarting = undefined));
    return this.#viewerStarting;
  }

  async #startDisplay(): Promise<void> {
    mkdirSync(this.stateDir, { recursive: true, mode: 0o700 });
    if (this.#xvfb?.alive !== true || !(await this.#displayAnswers())) {
      // Whatever is left of the old display goes first (its X server may be dying, not yet reaped).
      for (const old of [this.#openbox, this.#xvfb]) {
        this.#stop(old);
        if (old !== undefined) await Promise.race([old.exited, new Promise((resolve) => setTimeout(resolve, 2000))]);
      }
      this.#openbox = undefined;
      const started = performance.now();
      this.#prepareSocketDirectory();
      // Xvfb writes the display number to fd 3 once it accepts connections: that line is its readiness.
      const xvfb = this.#spawn(
        'Xvfb',
        'Xvfb',
        [this.display, '-screen', '0', `${this.width}x${this.height}x24`, '-nolisten', 'tcp', '-br', '-dpi', '96', '-noreset', '-displayfd', '3'],
        { readyPipe: true },
      );
      this.#xvfb = xvfb;
      await this.#until(xvfb, new Promise<void>((resolve) => {
        let text = '';
        const pipe = xvfb.child.stdio[3] as NodeJS.ReadableStream | null;
        pipe?.on('data', (chunk: Buffer) => {
          text += chunk.toString();
          if (text.includes('\n')) resolve();
        });
      }));
      this.timings.displayReadyMs = Math.round(performance.now() - started);
    }
    if (this.#options.windowManager && this.#openbox?.alive !== true) {
      const started = performance.now();
      // openbox runs its --startup command once it has set itself up (theme, fonts, root window properties) and is
      // about to handle events: that file's appearance is its readiness. Before it, new windows wait for seconds.
      const readyFile = join(this.stateDir, 'openbox.ready');
      rmSync(readyFile, { force: true });
      const openbox = this.#spawn('openbox', 'openbox', ['--sm-disable', '--startup', `touch ${readyFile}`]);
      this.#openbox = openbox;
      await this.#until(openbox, this.#poll(async () => existsSync(readyFile)));
      this.timings.windowManagerReadyMs = Math.round(performance.now() - started);
    }
    this.#log.info('desktop ready', { display: this.display, size: `${this.width}x${this.height}`, window_manager: this.#options.windowManager ? 'openbox' : 'none', ...this.timings });
  }

  async #startViewer(): Promise<void> {
    const started = performance.now();
    if (this.#x11vnc?.alive !== true) {
      const { vncPort } = this.#options;
      const x11vnc = this.#spawn('x11vnc', 'x11vnc', ['-display', this.display, '-localhost', '-shared', '-forever', '-nopw', '-rfbport', String(vncPort), '-noipv6']);
      this.#x11vnc = x11vnc;
      await this.#until(x11vnc, this.#poll(() => portOpen(vncPort)));
    }
    if (this.#websockify?.alive !== true) {
      const { webPort, vncPort, novncDir } = this.#options;
      const websockify = this.#spawn('websockify', 'websockify', ['--web', novncDir, `127.0.0.1:${webPort}`, `127.0.0.1:${vncPort}`]);
      this.#websockify = websockify;
      await this.#until(websockify, this.#poll(() => portOpen(webPort)));
    }
    this.timings.viewerReadyMs = Math.round(performance.now() - started);
    this.#log.info('desktop viewer ready', { vnc_port: this.#options.vncPort, web_port: this.#options.webPort, viewer_ready_ms: this.timings.viewerReadyMs });
  }

  /**
   * /tmp/.X11-unix must exist for Xvfb (as non-root) to put its socket there, and a lock or socket left by an Xvfb
   * that was killed (the agent may) would make the next one refuse the display.
   */
  #prepareSocketDirectory(): void {
    try {
      mkdirSync('/tmp/.X11-unix', { mode: 0o1777 });
      chmodSync('/tmp/.X11-unix', 0o1777);
    } catch {
      // exists
    }
    const lock = `/tmp/.X${this.displayNumber}-lock`;
    let holder: number | undefined;
    try {
      holder = Number.parseInt(readFileSync(lock, 'utf8').trim(), 10);
    } catch {
      return;
    }
    if (Number.isInteger(holder) && holder > 0 && holder !== this.#xvfb?.child.pid && processExists(holder)) {
      throw new SandboxdToolError('gui_failed', `display ${this.display} is taken by another X server (pid ${holder}); stop it (kill ${holder}) so the desktop can start`);
    }
    for (const stale of [lock, `/tmp/.X11-unix/X${this.displayNumber}`]) {
      try {
        unlinkSync(stale);
      } catch {
        // gone
      }
    }
  }

  #spawn(name: string, file: string, args: string[], options: { readyPipe?: boolean } = {}): Managed {
    const logPath = join(this.stateDir, `${name}.log`);
    const fd = openSync(logPath, 'a', 0o600);
    let child: ChildProcess;
    try {
      child = spawn(file, args, {
        cwd: this.stateDir,
        env: this.#env,
        detached: true,
        stdio: ['ignore', fd, fd, ...(options.readyPipe === true ? (['pipe'] as const) : [])],
      });
    } finally {
      closeSync(fd);
    }
    const managed: Managed = {
      name,
      child,
      logPath,
      alive: true,
      exited: new Promise((resolve) => {
        child.once('exit', (code, signal) => resolve({ code, signal }));
        child.once('error', () => resolve({ code: null, signal: null }));
      }),
    };
    void managed.exited.then((status) => {
      managed.alive = false;
      if (!this.#closed) this.#log.warn('desktop process exited', { process: name, pid: child.pid, ...status });
    });
    this.#log.debug('desktop process started', { process: name, pid: child.pid });
    return managed;
  }

  /** Waits for `ready`; fails with the process's log when it exits first, or at the start timeout. */
  async #until(managed: Managed, ready: Promise<unknown>): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<'timeout'>((resolve) => (timer = setTimeout(() => resolve('timeout'), this.#options.startTimeoutMs)));
    try {
      const outcome = await Promise.race([ready.then(() => 'ready' as const), managed.exited.then(() => 'exited' as const), timeout]);
      if (outcome === 'ready') return;
      this.#stop(managed);
      const tail = logTail(managed.logPath);
      const why = outcome === 'timeout' ? `was not ready within ${this.#options.startTimeoutMs / 1000} s` : 'exited while starting';
      throw new SandboxdToolError('gui_failed', `the desktop could not start: ${managed.name} ${why}${tail === '' ? '' : `; its log ends:\n${tail}`}`);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Resolves once `probe` answers true; probes every 25 ms (each probe is itself a round trip to the process). */
  async #poll(probe: () => Promise<boolean>): Promise<void> {
    const deadline = Date.now() + this.#options.startTimeoutMs;
    while (!this.#closed && Date.now() < deadline) {
      if (await probe().catch(() => false)) return;
      await new Promise((resolve) => setTimeout(resolve, 25));
    }
    return new Promise(() => {}); // #until's timeout reports it
  }

  /**
   * Runs an X client (xdotool, xprop, scrot, ...) on this desktop without a shell; never rejects for its exit status.
   * A client that could not open the display did nothing: the display is started again (its X server may have just
   * been killed) and the client run once more.
   */
  async run(file: string, args: string[], options: { timeoutMs: number; signal?: AbortSignal }): Promise<CommandResult> {
    const result = await this.#runOnce(file, args, options);
    if (result.code === 0 || this.#closed || !/(can't|cannot|unable to) open (x )?display/i.test(result.stderr)) return result;
    const xvfb = this.#xvfb;
    if (xvfb !== undefined) await Promise.race([xvfb.exited, new Promise((resolve) => setTimeout(resolve, 500))]);
    await this.ensureDisplay();
    return this.#runOnce(file, args, options);
  }

  #runOnce(file: string, args: string[], options: { timeoutMs: number; signal?: AbortSignal }): Promise<CommandResult> {
    return new Promise((resolve, reject) => {
      const child = spawn(file, args, { cwd: this.stateDir, env: this.#env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
      const stdout: Buffer[] = [];
      let stdoutBytes = 0;
      let stderr = '';
      let timedOut = false;
      const kill = () => {
        try {
          if (child.pid !== undefined) process.kill(-child.pid, 'SIGKILL');
        } catch {
          // gone
        }
      };
      const timer = setTimeout(() => {
        timedOut = true;
        kill();
      }, options.timeoutMs);
      const onAbort = () => kill();
      options.signal?.addEventListener('abort', onAbort, { once: true });
      child.stdout.on('data', (chunk: Buffer) => {
        stdoutBytes += chunk.length;
        if (stdoutBytes <= commandOutputLimit) stdout.push(chunk);
        else kill();
      });
      child.stderr.on('data', (chunk: Buffer) => {
        if (stderr.length < 64 * 1024) stderr += chunk.toString();
      });
      child.once('error', (error) => {
        clearTimeout(timer);
        options.signal?.removeEventListener('abort', onAbort);
        reject(new SandboxdToolError('gui_failed', `cannot run ${file}: ${error.message}`));
      });
      child.once('close', (code) => {
        clearTimeout(timer);
        options.signal?.removeEventListener('abort', onAbort);
        if (options.signal?.aborted) return reject(options.signal.reason instanceof Error ? options.signal.reason : new Error('aborted'));
        resolve({ code, stdout: Buffer.concat(stdout), stderr, timedOut });
      });
    });
  }

  /**
   * Starts a command line (bash -c) on the desktop, detached, in its own process group, its output appended to a log
   * file the agent can read. Returns at once; see gui-tool.ts for waiting on its window.
   */
  launch(command: string): { pid: number; logPath: string; exited: Promise<number | null> } {
    mkdirSync(this.stateDir, { recursive: true, mode: 0o700 });
    this.#launchCount++;
    const program = /^\s*(?:\S*\/)?([\w.+-]+)/.exec(command)?.[1] ?? 'program';
    const logPath = join(this.stateDir, `launch-${this.#launchCount}-${program}.log`);
    const fd = openSync(logPath, 'a', 0o644);
    let child: ChildProcess;
    try {
      child = spawn('bash', ['-c', command], { cwd: this.#options.cwd, env: this.#env, detached: true, stdio: ['ignore', fd, fd] });
    } finally {
      closeSync(fd);
    }
    const exited = new Promise<number | null>((resolve) => {
      child.once('exit', (code, signal) => resolve(code ?? (signal === null ? null : 128)));
      child.once('error', () => resolve(127));
    });
    this.#launched.add(child);
    void exited.then(() => this.#launched.delete(child));
    child.unref();
    if (child.pid === undefined) throw new SandboxdToolError('gui_failed', 'cannot start bash for the command');
    return { pid: child.pid, logPath, exited };
  }

  /** Kills every process of the desktop and every launched program (their process groups). */
  async close(): Promise<void> {
    this.#closed = true;
    const managed = [this.#websockify, this.#x11vnc, this.#openbox, this.#xvfb].filter((each): each is Managed => each !== undefined);
    for (const child of this.#launched) killGroup(child, 'SIGKILL');
    for (const each of managed) this.#stop(each, 'SIGTERM');
    const exits = Promise.all(managed.map((each) => each.exited));
    const timer = setTimeout(() => managed.forEach((each) => this.#stop(each, 'SIGKILL')), 2000);
    await exits;
    clearTimeout(timer);
  }

  #stop(managed: Managed | undefined, signal: NodeJS.Signals = 'SIGKILL'): void {
    if (managed === undefined || !managed.alive) return;
    killGroup(managed.child, signal);
  }
}

function killGroup(child: ChildProcess, signal: NodeJS.Signals): void {
  if (child.pid === undefined) return;
  try {
    process.kill(-child.pid, signal);
  } catch {
    try {
      child.kill(signal);
    } catch {
      // gone
    }
  }
}

function processExists(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** True once something accepts TCP connections on 127.0.0.1:port. */
function portOpen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

/** The last lines of a log, for error messages. */
export function logTail(path: string, maxChars = 2000): string {
  try {
    const text = readFileSync(path, 'utf8').trimEnd();
    return text.length <= maxChars ? text : `...${text.slice(-maxChars)}`;
  } catch {
    return '';
  }
}
