// Timing helpers: how long an async action takes, and how long a process takes from spawn() to its exit.
import { spawn } from 'node:child_process';

export async function timeMs(action: () => Promise<unknown>): Promise<number> {
  const started = performance.now();
  await action();
  return performance.now() - started;
}

/** Runs a command to completion; rejects (with its stderr) when it cannot start or exits non-zero. */
export function runToExit(file: string, args: readonly string[], env: NodeJS.ProcessEnv = { PATH: '/usr/bin:/bin' }): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { stdio: ['ignore', 'ignore', 'pipe'], env });
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
    child.once('error', reject);
    child.once('close', (code, signal) => {
      if (code === 0) resolve();
      else reject(new Error(`${file} ${args.join(' ')} failed (${signal ?? `exit code ${code}`}): ${stderr.trim()}`));
    });
  });
}
