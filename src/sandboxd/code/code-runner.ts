// run_code's backend: one Jupyter kernel per language (python → ipykernel's python3, typescript → tslab, javascript →
// jslab), started on first use through the sessions API with a path at the top of the workspace (so the kernel's
// working directory is /workspace), and kept for the job: a variable defined in one call exists in the next. Code
// runs as an execute_request over the kernel's websocket; the call collects what the kernel sends back for it
// (outputs.ts) until the reply has come and the kernel is idle again.
//
// Time: timeout_ms bounds the execution, not the kernel's start, nor its restart by Jupyter after it died: code is
// sent only once the kernel has answered on the connection it is sent on (#connect). At the timeout (or when the
// caller goes away) the kernel is interrupted (SIGINT: KeyboardInterrupt in Python); if it has not stopped
// `interruptGraceMs` later it is killed and replaced by a new kernel, and the result says that the state is gone. A
// kernel that dies (os._exit, a crash, the memory limit) is restarted by Jupyter; the call it was running, or else the
// next call, says so. Calls of one language run one at a time; languages are independent. run() never rejects for what the code does: errors, timeouts and dead kernels are
// results. It rejects only when Jupyter itself cannot be started or reached (SandboxdToolError 'unavailable').
import { performance } from 'node:perf_hooks';
import type { z } from 'zod';
import { SandboxdToolError } from '../errors.ts';
import { silentLogger, type Logger } from '../log.ts';
import type { CodeLanguage, runCodeRequest, runCodeResponse } from '../protocol.ts';
import type { JupyterServer } from './jupyter-server.ts';
import { KernelConnection, type KernelMessage } from './kernel-connection.ts';
import { defaultOutputCaps, OutputCollector, type OutputCaps } from './outputs.ts';
import { signalProcess } from '../shell/process-tree.ts';

export type RunCodeRequest = z.output<typeof runCodeRequest>;
export type RunCodeResult = z.output<typeof runCodeResponse>;

/** The Jupyter kernelspec of each language (image/post-install.sh installs tslab's; python3 is Debian's ipykernel). */
export const kernelNames: Record<CodeLanguage, string> = { python: 'python3', typescript: 'tslab', javascript: 'jslab' };

export interface CodeRunnerOptions {
  jupyter: JupyterServer;
  log?: Logger;
  caps?: OutputCaps;
  /** How long starting a kernel may take (the session created and its websocket open). */
  kernelStartTimeoutMs?: number;
  /** After the interrupt a timeout sends, how long the code has to stop (or show signs of stopping) before its kernel is replaced. */
  interruptGraceMs?: number;
}

interface Kernel {
  language: CodeLanguage;
  sessionId: string;
  kernelId: string;
  /** The Jupyter server's generation it was started under (jupyter-server.ts). */
  generation: number;
  connection: KernelConnection | undefined;
  /** The kernel died (and Jupyter restarted it) while no call was running: the next call must say the state is gone. */
  diedBetweenCalls: boolean;
  /** Set while a call is running on it. */
  busy: boolean;
  /** performance.now() before which the kernel would refuse a request (see tslabQuietMs). */
  quietUntil: number;
}

/** tslab aborts requests for 200 ms after an error reply; a little more, for the reply's own travel. */
const tslabQuietMs = 250;
/** After an interrupt, the longest wait for the execution to end while its output keeps arriving. */
const maxDrainMs = 20_000;
/** While a kernel has not answered yet, how often it is asked again (a request sent before it listened may be lost). */
const readyProbeIntervalMs = 500;
/**
 * A connection whose kernel has not answered for this long is replaced by a fresh one: Jupyter restarts a kernel that
 * dies young on new ports, and a connection opened just before that is wired to the old ones. Not a limit: the
 * kernel has kernelStartTimeoutMs in all.
 */
const reconnectAfterMs = 10_000;

type End = { kind: 'complete' } | { kind: 'died' } | { kind: 'dead' } | { kind: 'closed' };

const stateGone = 'variables, imports and definitions from earlier calls are gone (run the setup code again)';

export class CodeRunner {
  readonly #jupyter: JupyterServer;
  readonly #log: Logger;
  readonly #caps: OutputCaps;
  readonly #kernelStartTimeoutMs: number;
  readonly #interruptGraceMs: number;
  readonly #kernels = new Map<CodeLanguage, Kernel>();
  readonly #queues = new Map<CodeLanguage, Promise<unknown>>();
  #closed = false;

  constructor(options: CodeRunnerOptions) {
    this.#jupyter = options.jupyter;
    this.#log = options.log ?? silentLogger;
    this.#caps = options.caps ?? defaultOutputCaps;
    this.#kernelStartTimeoutMs = options.kernelStartTimeoutMs ?? 120_000;
    this.#interruptGraceMs = options.interruptGraceMs ?? 5_000;
  }

  /** Runs `code` in the language's kernel, after any call of that language still running. */
  run(request: RunCodeRequest, signal?: AbortSignal): Promise<RunCodeResult> {
    const previous = this.#queues.get(request.language) ?? Promise.resolve();
    const result = previous.catch(() => undefined).then(() => this.#run(request, signal));
    this.#queues.set(request.language, result);
    return result;
  }

  /** Closes the kernels' websockets (the kernels themselves end with the Jupyter server). */
  close(): void {
    this.#closed = true;
    for (const kernel of this.#kernels.values()) kernel.connection?.close();
  }

  async #run(request: RunCodeRequest, signal: AbortSignal | undefined): Promise<RunCodeResult> {
    if (this.#closed) throw new SandboxdToolError('unavailable', 'sandboxd is shutting down');
    signal?.throwIfAborted();
    const { language } = request;
    const notes: string[] = [];
    const startupStarted = performance.now();
    const { kernel, started, stateLost } = await this.#kernel(language, notes);
    // tslab refuses (aborts) requests that arrive within 200 ms of an error reply (its queue reset, tslab issue #19).
    const quietMs = kernel.quietUntil - performance.now();
    if (quietMs > 0) await new Promise((resolve) => setTimeout(resolve, quietMs));
    const startupMs = Math.round(performance.now() - startupStarted);
    const connection = kernel.connection as KernelConnection;
    const collector = new OutputCollector(this.#caps);
    let replyStatus: string | undefined;
    let executionCount: number | null = null;

    kernel.busy = true;
    const executeStarted = performance.now();
    let finish: (end: End) => void = () => {};
    const finished = new Promise<End>((resolve) => (finish = resolve));
    let replied = false;
    let idle = false;
    let lastActivity = 0;
    const msgId = connection.send('shell', 'execute_request', { code: request.code, silent: false, store_history: true, user_expressions: {}, allow_stdin: false, stop_on_error: true });
    const unsubscribe = connection.subscribe((message) => {
      if (message.header.msg_type === 'status' && (message.content.execution_state === 'restarting' || message.content.execution_state === 'dead')) {
        return finish({ kind: message.content.execution_state === 'dead' ? 'dead' : 'died' });
      }
      if (message.parent_header.msg_id !== msgId) return;
      lastActivity = performance.now();
      const { content } = message;
      switch (message.header.msg_type) {
        case 'stream':
          collector.stream(content.name === 'stderr' ? 'stderr' : 'stdout', stringOf(content.text));
          break;
        case 'execute_result':
          collector.result(bundle(content.data));
          break;
        case 'display_data':
        case 'update_display_data':
          collector.display(bundle(content.data));
          break;
        case 'error':
          collector.error(stringOf(content.ename, 'Error'), stringOf(content.evalue), Array.isArray(content.traceback) ? content.traceback.map((line) => stringOf(line)) : []);
          break;
        case 'execute_reply':
          replied = true;
          replyStatus = stringOf(content.status);
          executionCount = typeof content.execution_count === 'number' ? content.execution_count : null;
          // Pages (IPython's `obj?`) come as payloads of the reply.
          for (const payload of Array.isArray(content.payload) ? (content.payload as Array<Record<string, unknown>>) : []) {
            if (payload.source === 'page') collector.display(bundle(payload.data));
          }
          break;
        case 'status':
          if (content.execution_state === 'idle') idle = true;
          break;
      }
      // Done once the reply has come and the kernel is idle: all of the execution's output has been sent by then.
      if (replied && idle) finish({ kind: 'complete' });
    });
    const stopWatchingClose = connection.onClose(() => finish({ kind: 'closed' }));

    let interrupted = false;
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<'timeout'>((resolve) => (timer = setTimeout(() => resolve('timeout'), request.timeout_ms)));
    const aborted = new Promise<'aborted'>((resolve) => {
      if (signal?.aborted) resolve('aborted');
      signal?.addEventListener('abort', () => resolve('aborted'), { once: true });
    });
    let end: End | 'timeout' | 'aborted' = await Promise.race([finished, deadline, aborted]);
    clearTimeout(timer);
    let replaced = false;
    if (end === 'timeout' || end === 'aborted') {
      interrupted = true;
      const interruptStarted = performance.now();
      await this.#interrupt(kernel);
      const afterInterrupt = await this.#settleAfterInterrupt(finished, () => lastActivity);
      this.#log.info('kernel interrupted', { language, reason: end, stopped: afterInterrupt !== 'stuck', wait_ms: Math.round(performance.now() - interruptStarted) });
      const why = end === 'timeout' ? `The code ran longer than timeout_ms (${request.timeout_ms} ms)` : 'The call was cancelled';
      if (afterInterrupt === 'stuck') {
        replaced = true;
        const restarted = await this.#replace(kernel);
        notes.push(
          `${why} and did not stop within ${this.#interruptGraceMs} ms of the interrupt (still running, or printing more than Jupyter could relay), ` +
            `so its kernel was stopped${restarted ? ' and a new one started' : '; the next call starts a new one'}: ${stateGone}.`,
        );
        end = { kind: 'complete' };
      } else {
        end = afterInterrupt;
        if (end.kind === 'complete') notes.push(`${why} and was interrupted; the kernel stopped and kept its state.`);
      }
    }
    unsubscribe();
    stopWatchingClose();
    kernel.busy = false;
    const durationMs = Math.round(performance.now() - executeStarted);

    let died = false;
    let lost = stateLost || replaced;
    if (end.kind === 'died') {
      died = true;
      lost = true;
      // Jupyter restarts it; the next call opens a fresh websocket to the restarted kernel.
      kernel.connection?.close();
      kernel.connection = undefined;
      notes.push(`The kernel process exited while running this code (os._exit, a crash, a signal, or the sandbox's memory limit) and Jupyter restarted it: ${stateGone}.`);
    } else if (end.kind === 'dead') {
      died = true;
      lost = true;
      await this.#discard(kernel);
      notes.push(`The kernel process exited while running this code and could not be restarted; the next call starts a new kernel: ${stateGone}.`);
    } else if (end.kind === 'closed') {
      died = true;
      const kernelExists = this.#jupyter.running && (await this.#jupyter.api('GET', `api/kernels/${kernel.kernelId}`).then((r) => r.status === 200, () => false));
      kernel.connection = undefined;
      if (!kernelExists) {
        lost = true;
        this.#kernels.delete(language);
      }
      notes.push(
        kernelExists
          ? 'The connection to the kernel closed while running this code; the next call reconnects to it.'
          : `The kernel (or the Jupyter server) stopped while running this code; the next call starts a new kernel: ${stateGone}.`,
      );
    }
    if (replyStatus !== 'ok' && kernelNames[language] !== 'python3') kernel.quietUntil = performance.now() + tslabQuietMs;
    if (replyStatus === 'abort' || replyStatus === 'aborted') notes.push('The kernel refused to run this code (it aborts requests that arrive right after an error): run it again.');
    const status: RunCodeResult['status'] = died ? 'kernel_died' : interrupted ? 'timeout' : replyStatus === 'ok' && !collector.hasError ? 'ok' : 'error';
    return {
      language,
      status,
      outputs: collector.outputs(),
      execution_count: executionCount,
      kernel_started: started,
      state_lost: lost,
      notes,
      omitted_bytes: collector.omittedBytes,
      omitted_outputs: collector.omittedOutputs,
      startup_ms: startupMs,
      duration_ms: durationMs,
    };
  }

  /**
   * The language's kernel, ready to execute: the running one, reconnected if its websocket closed, or a new one. Notes
   * why an earlier kernel's state is gone, when it is.
   */
  async #kernel(language: CodeLanguage, notes: string[]): Promise<{ kernel: Kernel; started: boolean; stateLost: boolean }> {
    await this.#jupyter.ensureStarted();
    let kernel = this.#kernels.get(language);
    let stateLost = false;
    if (kernel !== undefined && kernel.generation !== this.#jupyter.generation) {
      // The server it ran under died (killed by a command, or by the sandbox's process limit) and was started again.
      notes.push(`The Jupyter server had stopped since the last ${language} call (a command may have killed it) and was started again, with a new kernel: ${stateGone}.`);
      kernel.connection?.close();
      this.#kernels.delete(language);
      kernel = undefined;
      stateLost = true;
    }
    if (kernel?.diedBetweenCalls) {
      notes.push(`The ${language} kernel process had exited since the last call (killed by a command, or by the sandbox's memory limit) and was restarted: ${stateGone}.`);
      kernel.diedBetweenCalls = false;
      stateLost = true;
      // Jupyter may still be restarting it: reconnect below, which waits for the new process to answer.
      kernel.connection?.close();
      kernel.connection = undefined;
    }
    if (kernel !== undefined && kernel.connection?.isOpen !== true) {
      const exists = await this.#jupyter.api('GET', `api/kernels/${kernel.kernelId}`).then((response) => response.status === 200, () => false);
      if (exists) {
        try {
          kernel.connection = await this.#connect(kernel);
        } catch (error) {
          this.#log.warn('reconnecting to the kernel failed', { language, error: error instanceof Error ? error.message : String(error) });
          await this.#discard(kernel);
          kernel = undefined;
        }
      } else {
        this.#kernels.delete(language);
        kernel = undefined;
      }
      if (kernel === undefined) {
        notes.push(`The previous ${language} kernel had been shut down (from the Jupyter UI, or it failed), so a new one was started: ${stateGone}.`);
        stateLost = true;
      }
    }
    if (kernel !== undefined) return { kernel, started: false, stateLost };
    return { kernel: await this.#startKernel(language), started: true, stateLost };
  }

  async #startKernel(language: CodeLanguage): Promise<Kernel> {
    const kernelName = kernelNames[language];
    const generation = this.#jupyter.generation;
    // A session with a path at the top of root_dir: Jupyter starts its kernel in /workspace (a bare kernel would
    // start in the server's own working directory). The notebook file need not exist.
    const { status, json } = await this.#jupyter
      .api('POST', 'api/sessions', { path: `run_code-${language}.ipynb`, type: 'notebook', name: `run_code ${language}`, kernel: { name: kernelName } }, { timeoutMs: this.#kernelStartTimeoutMs })
      .catch((error: unknown) => {
        throw new SandboxdToolError('unavailable', `Jupyter did not start the ${kernelName} kernel: ${error instanceof Error ? error.message : String(error)}`);
      });
    const session = json as { id?: unknown; kernel?: { id?: unknown } } | undefined;
    if ((status !== 200 && status !== 201) || typeof session?.id !== 'string' || typeof session.kernel?.id !== 'string') {
      const message = typeof json === 'object' && json !== null && 'message' in json ? String(json.message) : JSON.stringify(json)?.slice(0, 500);
      throw new SandboxdToolError('unavailable', `Jupyter could not start the ${kernelName} kernel for ${language} (${status}): ${message}`);
    }
    const kernel: Kernel = { language, sessionId: session.id, kernelId: session.kernel.id, generation, connection: undefined, diedBetweenCalls: false, busy: false, quietUntil: 0 };
    this.#kernels.set(language, kernel);
    try {
      kernel.connection = await this.#connect(kernel);
    } catch (error) {
      await this.#discard(kernel);
      throw new SandboxdToolError('unavailable', `the ${kernelName} kernel did not come up: ${error instanceof Error ? error.message : String(error)}`);
    }
    this.#log.info('kernel started', { language, kernel: kernelName, kernel_id: kernel.kernelId });
    return kernel;
  }

  /**
   * Opens the kernel's channels websocket, returns it once the kernel has answered on it, and watches it for deaths
   * between calls. An open websocket alone does not mean a kernel that listens: jupyter-server waits for kernel_info
   * only on a kernel's first connection, and does not check a kernel it last saw busy (as one that died running code
   * was), so right after Jupyter restarted a kernel the socket opens while the new process is still starting, and code
   * sent then would have its timeout charged with the restart (and its interrupt would kill the starting kernel).
   */
  async #connect(kernel: Kernel): Promise<KernelConnection> {
    const started = performance.now();
    const url = this.#jupyter.websocketUrl(`api/kernels/${kernel.kernelId}/channels`);
    let connection: KernelConnection | undefined;
    for (let connections = 1; ; connections++) {
      const remainingMs = this.#kernelStartTimeoutMs - (performance.now() - started);
      if (remainingMs <= 0 || this.#closed) {
        connection?.close();
        throw new Error(this.#closed ? 'sandboxd is shutting down' : `the kernel did not answer within ${this.#kernelStartTimeoutMs} ms`);
      }
      connection?.close();
      connection = await KernelConnection.open(url, this.#jupyter.authorization, remainingMs);
      if (await answers(connection, Math.min(reconnectAfterMs, remainingMs))) {
        if (connections > 1) this.#log.info('kernel answered on a fresh connection', { language: kernel.language, connections, wait_ms: Math.round(performance.now() - started) });
        break;
      }
    }
    connection.subscribe((message: KernelMessage) => {
      if (message.header.msg_type !== 'status' || kernel.busy) return;
      if (message.content.execution_state === 'restarting' || message.content.execution_state === 'dead') kernel.diedBetweenCalls = true;
    });
    return connection;
  }

  /**
   * Ctrl-C for a kernel: SIGINT to its process group, as Jupyter's own interrupt does for these kernels (interrupt
   * mode "signal"), but without waiting for the server, which may be busy relaying the very output being interrupted.
   */
  async #interrupt(kernel: Kernel): Promise<void> {
    const pid = this.#jupyter.kernelProcess(kernel.kernelId);
    if (pid !== undefined) return signalProcess(-pid, 'SIGINT');
    await this.#jupyter.api('POST', `api/kernels/${kernel.kernelId}/interrupt`, undefined, { timeoutMs: 10_000 }).catch((error: unknown) => {
      this.#log.warn('interrupting the kernel failed', { language: kernel.language, error: error instanceof Error ? error.message : String(error) });
    });
  }

  /**
   * Waits for an interrupted execution to end. It is stuck when nothing of it has arrived for `interruptGraceMs`, or
   * when it has not ended `maxDrainMs` after the interrupt: output still arriving means the kernel stopped and its
   * last output is on the way (a print loop leaves a backlog behind it).
   */
  #settleAfterInterrupt(finished: Promise<End>, lastActivity: () => number): Promise<End | 'stuck'> {
    const started = performance.now();
    return new Promise((resolve) => {
      let timer: NodeJS.Timeout | undefined;
      const check = () => {
        const now = performance.now();
        const quietMs = now - Math.max(lastActivity(), started);
        if (quietMs >= this.#interruptGraceMs || now - started >= maxDrainMs) return resolve('stuck');
        timer = setTimeout(check, Math.min(this.#interruptGraceMs - quietMs, maxDrainMs - (now - started)));
      };
      timer = setTimeout(check, this.#interruptGraceMs);
      void finished.then((end) => {
        clearTimeout(timer);
        resolve(end);
      });
    });
  }

  /**
   * Replaces a kernel that would not stop: kills it (Jupyter's own restart would first ask it to shut down and wait,
   * behind whatever output it is still relaying), forgets it, and starts a new one. True when the new one is up; when
   * it is not, the next call tries again.
   */
  async #replace(kernel: Kernel): Promise<boolean> {
    const started = performance.now();
    const pid = this.#jupyter.kernelProcess(kernel.kernelId);
    if (pid !== undefined) signalProcess(-pid, 'SIGKILL');
    // Closing the websocket also drops the output Jupyter still holds for it.
    await this.#discard(kernel);
    try {
      await this.#startKernel(kernel.language);
      this.#log.info('kernel replaced', { language: kernel.language, replace_ms: Math.round(performance.now() - started) });
      return true;
    } catch (error) {
      this.#log.warn('starting a new kernel failed', { language: kernel.language, error: error instanceof Error ? error.message : String(error) });
      return false;
    }
  }

  /** Forgets a kernel and asks Jupyter to shut it down; the next call of its language starts a new one. */
  async #discard(kernel: Kernel): Promise<void> {
    kernel.connection?.close();
    kernel.connection = undefined;
    if (this.#kernels.get(kernel.language) === kernel) this.#kernels.delete(kernel.language);
    await this.#jupyter.api('DELETE', `api/sessions/${kernel.sessionId}`, undefined, { timeoutMs: 15_000 }).catch(() => undefined);
  }
}

/**
 * Whether the kernel behind `connection` answers within `windowMs`: a kernel_info_request (sent again every
 * readyProbeIntervalMs) gets its reply on the shell channel and its status on IOPub, so the kernel listens and this
 * connection's IOPub subscription is in place (output published before it is would be lost).
 */
function answers(connection: KernelConnection, windowMs: number): Promise<boolean> {
  if (!connection.isOpen) return Promise.resolve(false);
  return new Promise((resolve) => {
    const replied = new Set<string>();
    const reported = new Set<string>();
    const send = () => {
      if (connection.isOpen) connection.send('shell', 'kernel_info_request', {});
    };
    const probe = setInterval(send, readyProbeIntervalMs);
    const windowTimer = setTimeout(() => settle(false), windowMs);
    const unsubscribe = connection.subscribe((message) => {
      const parent = message.parent_header.msg_id;
      if (parent === undefined) return;
      if (message.header.msg_type === 'kernel_info_reply') replied.add(parent);
      else if (message.header.msg_type === 'status') reported.add(parent);
      else return;
      if (replied.has(parent) && reported.has(parent)) settle(true);
    });
    const stopWatchingClose = connection.onClose(() => settle(false));
    function settle(answered: boolean): void {
      clearInterval(probe);
      clearTimeout(windowTimer);
      unsubscribe();
      stopWatchingClose();
      resolve(answered);
    }
    send();
  });
}

function stringOf(value: unknown, fallback = ''): string {
  return typeof value === 'string' ? value : fallback;
}

function bundle(value: unknown): Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value) ? (value as Record<string, unknown>) : {};
}
