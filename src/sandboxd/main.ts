// sandboxd's entry point, run inside the sandbox as
//   node sandboxd.mjs --socket /run/workcell/sandboxd.sock [--workspace /workspace]
//   node sandboxd.mjs --listen HOST:PORT [--workspace /workspace]
// The token arrives as the first line of stdin and stays in memory only (never env, argv or disk). Once listening,
// sandboxd prints exactly one line on stdout, protocol.ts's readyLine, and nothing else ever goes there; logs are
// JSON lines on stderr. SIGTERM or SIGINT: close the sessions (killing what they started) and exit 0.
import { stat, unlink } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import type { z } from 'zod';
import packageJson from '../../package.json' with { type: 'json' };
import { listenOnSocket, listenOnTcp } from './listen.ts';
import { createLogger } from './log.ts';
import type { readyLine } from './protocol.ts';
import { createSandboxdServer } from './server.ts';

const usage = 'usage: sandboxd (--socket PATH | --listen HOST:PORT) [--workspace DIR] [--log-level debug|info|warn|error] < token';

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

async function main(): Promise<void> {
  let log = createLogger();
  // Nothing but the ready line may reach stdout: route stray console output (from a dependency, say) to the log.
  console.log = console.info = console.debug = (...values: unknown[]) => log.info(values.map(String).join(' '), { console: true });

  let options: { socket?: string; listen?: string; workspace: string; 'log-level': string };
  try {
    const { values } = parseArgs({
      args: process.argv.slice(2),
      options: {
        socket: { type: 'string' },
        listen: { type: 'string' },
        workspace: { type: 'string', default: '/workspace' },
        'log-level': { type: 'string', default: 'info' },
      },
      strict: true,
      allowPositionals: false,
    });
    options = values;
    if ((options.socket === undefined) === (options.listen === undefined)) throw new Error('give exactly one of --socket and --listen');
    if (!['debug', 'info', 'warn', 'error'].includes(options['log-level'])) throw new Error('--log-level is one of debug, info, warn, error');
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

  const token = await readToken().catch((error: unknown) => {
    log.error(`cannot read the token from stdin: ${error instanceof Error ? error.message : String(error)}`);
    return '';
  });
  if (token === '') {
    log.error(`no token: write the token as the first line of stdin; ${usage}`);
    process.exit(2);
  }

  const sandboxd = createSandboxdServer({ token, workspaceRoot: options.workspace, log: log });
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
      if (options.socket !== undefined) await unlink(options.socket).catch(() => {});
    } finally {
      process.exit(0);
    }
  };
  process.on('SIGTERM', () => void stop('SIGTERM'));
  process.on('SIGINT', () => void stop('SIGINT'));

  const ready: z.input<typeof readyLine> = { ready: true, pid: process.pid, version: packageJson.version, ...(port === undefined ? {} : { port }) };
  process.stdout.write(`${JSON.stringify(ready)}\n`);
  log.info('listening', { socket: options.socket, listen: options.listen, port, workspace: options.workspace, version: packageJson.version });
}

process.on('uncaughtException', (error) => {
  process.stderr.write(`${JSON.stringify({ level: 60, time: Date.now(), name: 'sandboxd', pid: process.pid, msg: 'uncaught exception', error: error.stack })}\n`);
  process.exit(1);
});

await main();
