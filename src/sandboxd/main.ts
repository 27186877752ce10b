// sandboxd's entry point, run inside the sandbox as
//   node sandboxd.mjs --socket /run/workcell/sandboxd.sock [--workspace /workspace]
//   node sandboxd.mjs --listen HOST:PORT [--workspace /workspace]
// plus, when the job may reach the network, --proxy-socket PATH --proxy-port PORT: bridge 127.0.0.1:PORT to the
// worker's egress proxy on the unix socket PATH and point the shell's HTTP_PROXY and friends at it (proxy-bridge.ts);
// and --label ID, which only labels the process (its command line) so the worker can find orphaned sandboxes;
// --jupyter-base-url PATH: the public prefix Jupyter is served under (the orchestrator's /jobs/<id>/jupyter/), so that
// its pages work through the proxy and run_code's kernels and people's share one server (code/jupyter-server.ts);
// --jupyter-start-timeout-ms MS: how long that server may take to start (default 60 s; a microVM under emulation,
// whose CPU is about 14x slower, passes more).
// The token arrives as the first line of stdin and stays in memory only (never env, argv or disk); where stdin cannot
// carry it (a container started with `docker run -d` or by Kubernetes), --token-file PATH names a file whose first
// line is the token, deleted as soon as it is read. Once listening,
// sandboxd prints exactly one line on stdout, protocol.ts's readyLine, and nothing else ever goes there; logs are
// JSON lines on stderr. SIGTERM or SIGINT: close the sessions (killing what they started) and exit 0.
import { readFile, stat, unlink } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import type { z } from 'zod';
import packageJson from '../../package.json' with { type: 'json' };
import { listenOnSocket, listenOnTcp } from './listen.ts';
import { createLogger } from './log.ts';
import { proxyEnvironment, startProxyBridge, type ProxyBridge } from './proxy-bridge.ts';
import type { readyLine } from './protocol.ts';
import { createSandboxdServer } from './server.ts';

const usage =
  'usage: sandboxd (--socket PATH | --listen HOST:PORT) [--workspace DIR] [--proxy-socket PATH --proxy-port PORT] [--label ID] [--jupyter-base-url PATH] [--jupyter-start-timeout-ms MS] [--no-window-manager] [--log-level debug|info|warn|error] (< token | --token-file PATH)';

/** Reads the first line of stdin (or all of it, when it has no newline) and stops reading. */
function readToken(): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const finish = (error?: Error) => {
      process.stdin.off('data', onData);
      process.stdin.off('end', onEnd);
      process.stdin.off('error', finish);
      process.stdin.pause();
      process.stdin.destroy();
      if (error !== undefined) return reject(error);
      const text = Buffer.concat(chunks, size).toString('utf8');
      const newline = text.indexOf('\n');
      resolve((newline === -1 ? text : text.slice(0, newline)).trim());
    };
    const onData = (chunk: Buffer) => {
      chunks.push(chunk);
      size += chunk.length;
      if (chunk.includes(0x0a)) finish();
      else if (size > 4096) finish(new Error('the first line of stdin (the token) is longer than 4096 bytes'));
    };
    const onEnd = () => finish();
    process.stdin.on('data', onData);
    process.stdin.once('end', onEnd);
    process.stdin.once('error', finish);
  });
}

/**
 * Reads the token from the first line of a file, then deletes the file so that nothing started in the sandbox later
 * can read it. A file that cannot be deleted (a read-only mount, such as a Kubernetes secret) is used all the same.
 */
async function readTokenFile(path: string, log: ReturnType<typeof createLogger>): Promise<string> {
  const text = await readFile(path, 'utf8');
  await unlink(path).catch((error: unknown) =>
    log.warn('the token file could not be deleted: it stays readable in the sandbox', { path, error: error instanceof Error ? error.message : String(error) }),
  );
  const newline = text.indexOf('\n');
  return (newline === -1 ? text : text.slice(0, newline)).trim();
}

async function main(): Promise<void> {
  let log = createLogger();
  // Nothing but the ready line may reach stdout: route stray console output (from a dependency, say) to the log.
  console.log = console.info = console.debug = (...values: unknown[]) => log.info(values.map(String).join(' '), { console: true });

  let options: { socket?: string; listen?: string; workspace: string; 'log-level': string; 'proxy-socket'?: string; 'proxy-port'?: string; label?: string; 'token-file'?: string; 'jupyter-base-url'?: string; 'jupyter-start-timeout-ms'?: string; 'no-window-manager'?: boolean };
  try {
    const { values } = parseArgs({
      args: process.argv.slice(2),
      options: {
        socket: { type: 'string' },
        listen: { type: 'string' },
        workspace: { type: 'string', default: '/workspace' },
        'log-level': { type: 'string', default: 'info' },
        'proxy-socket': { type: 'string' },
        'proxy-port': { type: 'string' },
        label: { type: 'string' },
        'token-file': { type: 'string' },
        'jupyter-base-url': { type: 'string' },
        'jupyter-start-timeout-ms': { type: 'string' },
        'no-window-manager': { type: 'boolean' },
      },
      strict: true,
      allowPositionals: false,
    });
    options = values;
    if ((options.socket === undefined) === (options.listen === undefined)) throw new Error('give exactly one of --socket and --listen');
    if (!['debug', 'info', 'warn', 'error'].includes(options['log-level'])) throw new Error('--log-level is one of debug, info, warn, error');
    if ((options['proxy-socket'] === undefined) !== (options['proxy-port'] === undefined)) throw new Error('give both --proxy-socket and --proxy-port, or neither');
    if (options['proxy-port'] !== undefined && !/^\d{1,5}$/.test(options['proxy-port'])) throw new Error('--proxy-port is a TCP port number, e.g. 3128');
    if (options['jupyter-base-url'] !== undefined && !/^\/[^\s?#]*$/.test(options['jupyter-base-url'])) throw new Error('--jupyter-base-url is a URL path, e.g. /jobs/job_123/jupyter/');
    if (options['jupyter-start-timeout-ms'] !== undefined && !/^[1-9]\d{0,8}$/.test(options['jupyter-start-timeout-ms'])) throw new Error('--jupyter-start-timeout-ms is a number of milliseconds, e.g. 300000');
  } catch (error) {
    log.error(`${error instanceof Error ? error.message : String(error)}; ${usage}`);
    process.exit(2);
  }
  log = createLogger({ level: options['log-level'] as 'info' });

  try {
    if (!(await stat(options.workspace)).isDirectory()) throw new Error('not a directory');
  } catch (error) {
    log.error(`workspace ${options.workspace} is not a usable directory (${error instanceof Error ? error.message : String(error)}); pass --workspace DIR`);
    process.exit(2);
  }

  const tokenFile = options['token-file'];
  const token = await (tokenFile === undefined ? readToken() : readTokenFile(tokenFile, log)).catch((error: unknown) => {
    log.error(`cannot read the token from ${tokenFile ?? 'stdin'}: ${error instanceof Error ? error.message : String(error)}`);
    return '';
  });
  if (token === '') {
    log.error(`no token: write the token as the first line of ${tokenFile ?? 'stdin'}; ${usage}`);
    process.exit(2);
  }

  // The bridge to the egress proxy, before the shell exists: its environment points at the bridge.
  let bridge: ProxyBridge | undefined;
  if (options['proxy-socket'] !== undefined) {
    try {
      if (!(await stat(options['proxy-socket'])).isSocket()) throw new Error('not a socket');
      bridge = await startProxyBridge({ socketPath: options['proxy-socket'], port: Number(options['proxy-port']), log });
    } catch (error) {
      log.error(`cannot bridge to the egress proxy ${options['proxy-socket']}: ${error instanceof Error ? error.message : String(error)}`);
      process.exit(1);
    }
  }

  const sandboxd = createSandboxdServer({
    token,
    workspaceRoot: options.workspace,
    log: log,
    ...(bridge === undefined ? {} : { shell: { env: proxyEnvironment(bridge.port) } }),
    // Kernels reach the network as the shell does: through the bridge, when there is one.
    code: {
      jupyterBaseUrl: options['jupyter-base-url'],
      ...(options['jupyter-start-timeout-ms'] === undefined ? {} : { jupyterStartTimeoutMs: Number(options['jupyter-start-timeout-ms']) }),
      ...(bridge === undefined ? {} : { env: proxyEnvironment(bridge.port) }),
    },
    ...(options['no-window-manager'] === true ? { desktop: { windowManager: false } } : {}),
  });
  let port: number | undefined;
  try {
    if (options.socket !== undefined) await listenOnSocket(sandboxd.httpServer, options.socket);
    else port = await listenOnTcp(sandboxd.httpServer, options.listen as string);
  } catch (error) {
    log.error(`cannot listen: ${error instanceof Error ? error.message : String(error)}`);
    process.exit(1);
  }

  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info('stopping', { signal });
    try {
      await sandboxd.close();
      await bridge?.close();
      if (options.socket !== undefined) await unlink(options.socket).catch(() => {});
    } finally {
      process.exit(0);
    }
  };
  process.on('SIGTERM', () => void stop('SIGTERM'));
  process.on('SIGINT', () => void stop('SIGINT'));

  const ready: z.input<typeof readyLine> = { ready: true, pid: process.pid, version: packageJson.version, ...(port === undefined ? {} : { port }) };
  process.stdout.write(`${JSON.stringify(ready)}\n`);
  log.info('listening', { socket: options.socket, listen: options.listen, port, workspace: options.workspace, proxy_port: bridge?.port, label: options.label, version: packageJson.version });
}

process.on('uncaughtException', (error) => {
  process.stderr.write(`${JSON.stringify({ level: 60, time: Date.now(), name: 'sandboxd', pid: process.pid, msg: 'uncaught exception', error: error.stack })}\n`);
  process.exit(1);
});

await main();
