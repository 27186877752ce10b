// Unit tests only: an in-memory stand-in for sandboxd's client, so the loop and the tool plumbing can be tested
// without a sandbox. Files live in a Map; the shell is whatever handler the test supplies. Requests and responses
// are validated with the real protocol schemas, and errors are SandboxdErrors with the real codes, so a mismatch
// with the protocol fails here as it would against sandboxd. Integration tests use the real sandboxd instead.
import { posix } from 'node:path';
import { SandboxdError } from '../../runtimes/sandboxd-client.ts';
import { routes, type RouteName, type RouteRequest, type RouteResponse } from '../../sandboxd/protocol.ts';

export interface ShellResult {
  output: string;
  exit_code?: number | null;
  timed_out?: boolean;
}
export type ShellHandler = (command: string, sandbox: InMemorySandboxd, signal: AbortSignal | undefined) => ShellResult | Promise<ShellResult>;
/** run_code: the test's answer (what it leaves out gets an ok, empty result); without a handler, Jupyter is unavailable. */
export type CodeHandler = (request: RouteRequest<'runCode'>) => Partial<RouteResponse<'runCode'>> | Promise<Partial<RouteResponse<'runCode'>>>;

export class InMemorySandboxd {
  readonly files = new Map<string, string>();
  /** Every call made, in order. */
  readonly calls: Array<{ route: RouteName; body: unknown }> = [];
  shell: ShellHandler;
  code: CodeHandler | undefined;

  constructor(options: { files?: Record<string, string>; shell?: ShellHandler; code?: CodeHandler } = {}) {
    this.code = options.code;
    for (const [path, content] of Object.entries(options.files ?? {})) this.files.set(normalize(path), content);
    this.shell = options.shell ?? ((command) => ({ output: `ran: ${command}\n`, exit_code: 0 }));
  }

  async call<R extends RouteName>(route: R, body: RouteRequest<R>, options: { signal?: AbortSignal } = {}): Promise<RouteResponse<R>> {
    options.signal?.throwIfAborted();
    this.calls.push({ route, body });
    const request = routes[route].request.safeParse(body);
    if (!request.success) throw new SandboxdError('invalid_request', `invalid request: ${request.error.message}`);
    const response = await this.#handle(route, request.data, options.signal);
    return routes[route].response.parse(response) as RouteResponse<R>;
  }

  async #handle(route: RouteName, body: Record<string, unknown>, signal: AbortSignal | undefined): Promise<unknown> {
    switch (route) {
      case 'shellExec': {
        const started = Date.now();
        const result = await abortable(Promise.resolve(this.shell(body.command as string, this, signal)), signal);
        return { output: result.output, exit_code: result.exit_code ?? 0, timed_out: result.timed_out ?? false, omitted_bytes: 0, session_restarted: false, duration_ms: Date.now() - started };
      }
      case 'readFile': {
        const path = normalize(body.path as string);
        const content = this.files.get(path);
        if (content === undefined) {
          if (this.#isDirectory(path)) throw new SandboxdError('not_a_file', `${path} is a directory`);
          throw new SandboxdError('not_found', `${path} does not exist`);
        }
        return { path, content, size: Buffer.byteLength(content) };
      }
      case 'writeFile': {
        const path = normalize(body.path as string);
        const created = !this.files.has(path);
        this.files.set(path, body.content as string);
        return { path, size: Buffer.byteLength(body.content as string), created };
      }
      case 'editFile': {
        const path = normalize(body.path as string);
        const content = this.files.get(path);
        if (content === undefined) throw new SandboxdError('not_found', `${path} does not exist`);
        const oldString = body.old_string as string;
        const count = content.split(oldString).length - 1;
        if (count === 0) throw new SandboxdError('no_match', `old_string was not found in ${path}`);
        if (count > 1) throw new SandboxdError('multiple_matches', `old_string occurs ${count} times in ${path}`);
        const updated = content.replace(oldString, () => body.new_string as string);
        this.files.set(path, updated);
        return { path, size: Buffer.byteLength(updated) };
      }
      case 'listFiles': {
        const root = normalize(body.path as string);
        const prefix = root === '.' ? '' : `${root}/`;
        const entries = new Map<string, { path: string; type: 'file' | 'directory'; size: number }>();
        for (const [path, content] of this.files) {
          if (!path.startsWith(prefix)) continue;
          const parts = path.slice(prefix.length).split('/');
          for (let depth = 1; depth <= Math.min(parts.length, body.depth as number); depth++) {
            const entryPath = prefix + parts.slice(0, depth).join('/');
            const isFile = depth === parts.length;
            entries.set(entryPath, { path: entryPath, type: isFile ? 'file' : 'directory', size: isFile ? Buffer.byteLength(content) : 0 });
          }
        }
        if (root !== '.' && entries.size === 0 && !this.#isDirectory(root)) throw new SandboxdError('not_found', `${root} does not exist`);
        return { path: root, entries: [...entries.values()].sort((a, b) => a.path.localeCompare(b.path)), truncated: false };
      }
      case 'searchFiles': {
        // A JavaScript regular expression over the files (ripgrep's syntax differs only in corners); glob: a suffix.
        const root = normalize(body.path as string);
        const prefix = root === '.' ? '' : `${root}/`;
        let pattern: RegExp;
        try {
          pattern = new RegExp(body.pattern as string);
        } catch (error) {
          throw new SandboxdError('invalid_request', `ripgrep refused the search: regex parse error: ${(error as Error).message}`);
        }
        const suffix = typeof body.glob === 'string' ? body.glob.replace(/^\*+/, '') : '';
        const matches: Array<{ path: string; line: number; text: string }> = [];
        const files = new Set<string>();
        for (const [path, content] of [...this.files].sort(([a], [b]) => a.localeCompare(b))) {
          if ((path !== root && !path.startsWith(prefix)) || !path.endsWith(suffix)) continue;
          content.split('\n').forEach((text, index) => {
            if (!pattern.test(text)) return;
            files.add(path);
            matches.push({ path, line: index + 1, text });
          });
        }
        return { path: root, matches, truncated: false, files_with_matches: files.size, files_searched: this.files.size };
      }
      case 'deleteFile': {
        const path = normalize(body.path as string);
        if (this.files.delete(path)) return { path, type: 'file' };
        if (!this.#isDirectory(path)) throw new SandboxdError('not_found', `${path} does not exist`);
        for (const file of [...this.files.keys()]) if (file.startsWith(`${path}/`)) this.files.delete(file);
        return { path, type: 'directory' };
      }
      case 'runCode': {
        if (this.code === undefined) throw new SandboxdError('unavailable', 'the Jupyter server could not start: not in this test');
        const request = body as RouteRequest<'runCode'>;
        const answer = await this.code(request);
        return { language: request.language, status: 'ok', outputs: [], execution_count: 1, kernel_started: false, state_lost: false, notes: [], omitted_bytes: 0, omitted_outputs: 0, startup_ms: 0, duration_ms: 1, ...answer };
      }
    }
  }

  #isDirectory(path: string): boolean {
    return [...this.files.keys()].some((file) => file.startsWith(`${path}/`));
  }
}

/** Workspace-relative form of a path, refusing escapes as sandboxd does. */
function normalize(path: string): string {
  const absolute = posix.resolve('/workspace', path);
  if (absolute === '/workspace') return '.';
  if (!absolute.startsWith('/workspace/')) throw new SandboxdError('path_outside_workspace', `${path} is outside /workspace`);
  return absolute.slice('/workspace/'.length);
}

function abortable<T>(promise: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (signal === undefined) return promise;
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason as Error);
    signal.addEventListener('abort', onAbort, { once: true });
    void promise.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
  });
}
