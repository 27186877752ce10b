// Measurement: run_code through sandboxd into real Jupyter kernels. Per language, the first call (the kernel's start
// and its first execute; for python, the first of the sandbox, also the Jupyter server's start), each in a fresh
// sandbox, and the round trip of a trivial execute on the warm kernel, next to a shell call through the same client
// as the baseline. Also runnable on its own: `node bench/code-bench.ts [--quick]`.
import { chmod, mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { loadConfig, type Config } from '../src/config.ts';
import { BwrapRuntime } from '../src/runtimes/bwrap/bwrap-runtime.ts';
import { createRuntimes } from '../src/runtimes/index.ts';
import type { CodeLanguage } from '../src/sandboxd/protocol.ts';
import { describeMachine, markdownReport } from './report.ts';
import { timeMs } from './spawn-timing.ts';
import { summarize, type Result } from './stats.ts';

export interface CodeBenchOptions {
  config: Config;
  runtime: BwrapRuntime;
  /** Fresh sandboxes, each measuring every language's first call. */
  sandboxes: number;
  /** Warm round trips per language (in the last sandbox). */
  iterations: number;
  signal: AbortSignal;
  progress: (message: string) => void;
}

const languages: CodeLanguage[] = ['python', 'typescript', 'javascript'];

export async function benchRunCode(options: CodeBenchOptions): Promise<Result[]> {
  const { runtime, signal, progress } = options;
  const group = '5. run_code through sandboxd into a Jupyter kernel';
  const root = await mkdtemp(join(tmpdir(), 'workcell-bench-code-'));
  const first = new Map<CodeLanguage, number[]>(languages.map((language) => [language, []]));
  const warm = new Map<CodeLanguage, number[]>(languages.map((language) => [language, []]));
  const shell: number[] = [];
  try {
    await chmod(root, 0o711);
    for (let index = 1; index <= options.sandboxes; index++) {
      const workspaceDir = join(root, `workspace-${index}`);
      await mkdir(workspaceDir);
      const sandbox = await runtime.create({ jobId: `bench_code_${index}`, workspaceDir, logDir: join(root, `logs-${index}`) }, signal);
      try {
        const run = async (language: CodeLanguage, code: string) => {
          const result = await sandbox.client.call('runCode', { language, code, timeout_ms: 60_000 }, { signal });
          if (result.status !== 'ok') throw new Error(`${language} ${JSON.stringify(code)}: ${result.status} ${JSON.stringify(result.outputs).slice(0, 500)}`);
        };
        for (const language of languages) first.get(language)!.push(await timeMs(() => run(language, '1 + 1')));
        if (index === options.sandboxes) {
          for (let iteration = 1; iteration <= options.iterations; iteration++) {
            signal.throwIfAborted();
            for (const language of languages) warm.get(language)!.push(await timeMs(() => run(language, '1 + 1')));
            shell.push(await timeMs(() => sandbox.client.call('shellExec', { command: 'true' }, { signal })));
          }
        }
      } finally {
        await sandbox.destroy();
      }
      progress(`run_code sandbox ${index}/${options.sandboxes}`);
    }
  } finally {
    await rm(root, { recursive: true, force: true });
  }
  return [
    { group, name: 'first `run_code` python `1 + 1` in a fresh sandbox (Jupyter server start, kernel start, execute)', baseline: false, latencyMs: summarize(first.get('python')!) },
    { group, name: 'first `run_code` typescript `1 + 1` (tslab kernel start, execute; server running)', baseline: false, latencyMs: summarize(first.get('typescript')!) },
    { group, name: 'first `run_code` javascript `1 + 1` (jslab kernel start, execute; server running)', baseline: false, latencyMs: summarize(first.get('javascript')!) },
    ...languages.map((language) => ({ group, name: `warm \`run_code\` ${language} \`1 + 1\`, round trip`, baseline: false, latencyMs: summarize(warm.get(language)!) })),
    { group, name: "baseline: `client.call('shellExec', {command: 'true'})` on the same sandbox", baseline: true, latencyMs: summarize(shell) },
  ];
}

if (import.meta.main) {
  const { values: flags } = parseArgs({ options: { quick: { type: 'boolean', default: false }, json: { type: 'boolean', default: false } } });
  const config = loadConfig(process.env, { logLevel: 'silent' });
  const runtime = createRuntimes(config).get('bwrap');
  if (!(runtime instanceof BwrapRuntime)) throw new Error(`the bwrap runtime does not run on ${process.platform}`);
  const interrupted = new AbortController();
  process.once('SIGINT', () => interrupted.abort(new Error('interrupted (SIGINT)')));
  const machine = describeMachine();
  const results = await benchRunCode({
    config,
    runtime,
    sandboxes: flags.quick ? 3 : 5,
    iterations: flags.quick ? 20 : 50,
    signal: interrupted.signal,
    progress: (message) => process.stderr.write(`bench: ${message}\n`),
  });
  machine.loadAverage.end = describeMachine().loadAverage.start;
  const report = { machine, date: new Date().toISOString(), command: ['node', 'bench/code-bench.ts', ...process.argv.slice(2)].join(' '), results };
  process.stdout.write(flags.json ? `${JSON.stringify(report, null, 2)}\n` : markdownReport(report));
}
