// `workcell terminal <id>`: a terminal in a running job's sandbox, over the websocket GET /jobs/:id/terminal (the key in
// the Authorization header). Interactive when stdin is a terminal: raw mode (every key, Ctrl-C included, goes to the
// sandbox's bash), the window's size sent on start and on every resize, the terminal restored however this ends.
// From a pipe: the input is typed into the terminal, then Ctrl-D, so the shell ends when its input does. `--session`
// watches one of the agent's shells, read-only (Ctrl-C leaves).
//
// What the sandbox's terminal sends is written to stdout raw, control sequences and all: that is what a terminal is
// (like ssh into the sandbox), and it is the one command that does so; everything else the CLI prints is escaped.
import WebSocket from 'ws';
import { WorkcellApiError, WorkcellClientError } from '../client/index.ts';

export interface TerminalOptions {
  url: string;
  apiKey: string | undefined;
  jobId: string;
  /** Watch this agent shell session (read-only) instead of opening a new bash. */
  session?: string;
}

/** Connects and runs the terminal until it closes; resolves with the exit code for the CLI. */
export async function runTerminal(options: TerminalOptions): Promise<number> {
  const { stdin, stdout } = process;
  const interactive = stdin.isTTY && options.session === undefined;
  const query = new URLSearchParams(options.session !== undefined ? { session: options.session } : stdout.isTTY ? { cols: String(stdout.columns), rows: String(stdout.rows) } : {});
  const base = options.url.replace(/\/+$/, '').replace(/^http/, 'ws');
  const socket = new WebSocket(`${base}/jobs/${encodeURIComponent(options.jobId)}/terminal${query.size > 0 ? `?${query.toString()}` : ''}`, {
    headers: options.apiKey === undefined || options.apiKey === '' ? {} : { authorization: `Bearer ${options.apiKey}` },
  });

  // Listening from the start: the sandbox's first bytes can arrive with the handshake's answer, in the same tick as 'open'.
  let started = false;
  // Piped input: its last bytes go with the Ctrl-D that ends it, in one frame. A Ctrl-D of its own could reach the
  // sandbox's terminal while a command runs (cooked mode) and be taken by the terminal instead of the shell, which then
  // never ends. Input that pauses is sent after a moment.
  let held: Buffer | undefined;
  let flushTimer: NodeJS.Timeout | undefined;
  const flush = (extra: Buffer = Buffer.alloc(0)) => {
    clearTimeout(flushTimer);
    const bytes = Buffer.concat([held ?? Buffer.alloc(0), extra]);
    held = undefined;
    if (bytes.length > 0) socket.send(bytes, { binary: true });
  };
  const onInput = (chunk: Buffer) => {
    if (interactive) return socket.send(chunk, { binary: true });
    flush();
    held = chunk;
    flushTimer = setTimeout(() => flush(), 100);
  };
  // The end of piped input is the end of the shell's: Ctrl-D.
  const onEnd = () => flush(Buffer.from([4]));
  socket.on('message', (data: Buffer) => {
    stdout.write(data);
    // Input waits for the shell's first output (its prompt): typed ahead of it, into a terminal still in cooked mode,
    // a Ctrl-D would be taken by the terminal itself and lost, and the shell would never end.
    if (started || options.session !== undefined) return;
    started = true;
    stdin.on('data', onInput);
    stdin.once('end', onEnd);
    stdin.resume();
  });
  const closed = new Promise<{ code: number; reason: string }>((resolve) => socket.once('close', (closeCode, closeReason) => resolve({ code: closeCode, reason: closeReason.toString() })));

  await new Promise<void>((resolve, reject) => {
    socket.once('open', () => resolve());
    socket.once('unexpected-response', (_request, response) => {
      // The server refuses with a line of text saying why (no such job, the job is not running, no key).
      let body = '';
      response.setEncoding('utf8');
      response.on('data', (chunk: string) => (body += chunk.slice(0, 2000)));
      response.on('end', () => {
        const status = response.statusCode ?? 502;
        reject(new WorkcellApiError({ type: `urn:workcell:problem:http_${status}`, title: response.statusMessage ?? '', status, detail: body.trim() || `the server refused the terminal (${status})` }));
      });
      response.on('error', reject);
    });
    socket.once('error', (error) =>
      reject(new WorkcellClientError('unreachable', `cannot reach the workcell server at ${options.url} (${error.message}): is it running (\`workcell serve\`), and is that its URL?`, { cause: error })),
    );
  });

  // An error once it is open ends in 'close', which says what happened.
  socket.on('error', () => undefined);
  const restore = () => {
    if (interactive) stdin.setRawMode(false);
  };
  process.once('exit', restore);
  const onResize = () => socket.send(JSON.stringify({ type: 'resize', cols: stdout.columns, rows: stdout.rows }));
  const onInterrupt = () => socket.close(1000, 'closed by the user');
  if (interactive) {
    stdin.setRawMode(true);
    if (stdout.isTTY) stdout.on('resize', onResize);
  }
  if (options.session !== undefined) process.once('SIGINT', onInterrupt);

  const { code, reason } = await closed;
  clearTimeout(flushTimer);
  stdin.off('data', onInput);
  stdin.off('end', onEnd);
  stdout.off('resize', onResize);
  process.off('SIGINT', onInterrupt);
  restore();
  process.off('exit', restore);
  // Nothing reads it any more; an open pipe would keep the process alive.
  stdin.destroy();
  // 1000: the shell exited or the user left; 1001: the sandbox is stopping (the job ended). Anything else: cut off.
  if (code === 1000 || code === 1001) return 0;
  process.stderr.write(`workcell: the terminal's connection closed (${code}${reason === '' ? '' : `: ${reason}`}): the job may have ended, or the connection was lost\n`);
  return 1;
}
