// Benchmarks of the context store (agent/context): prompt assembly time and recall latency against stores of 1k,
// 10k and 100k events, the store's size per 1k events, and, on a fixed scripted trajectory, the prompt tokens sent
// with and without condensation. `node bench/context.ts [--quick] [--json]`; needs no sandbox and no network (the
// model is the fake OpenAI-compatible server on loopback, the sandbox an in-memory stand-in).
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { z } from 'zod';
import { emulateLongJobShell, longJobPolicy, longJobTask } from '../test/helpers/long-job.ts';
import { startOpenAICompatibleServer } from '../test/helpers/openai-compatible-server.ts';
import { ContextStore } from '../src/agent/context/context-store.ts';
import type { Embedder } from '../src/agent/context/embeddings.ts';
import { modelInfo } from '../src/agent/context/model-info.ts';
import { PromptBuilder } from '../src/agent/context/prompt-builder.ts';
import { Recall } from '../src/agent/context/recall.ts';
import { estimateCounter, tiktokenCounter, type TokenCounter } from '../src/agent/context/tokens.ts';
import { historyFromEvents } from '../src/agent/history.ts';
import { runAgent } from '../src/agent/loop.ts';
import { resolveModel } from '../src/agent/models/resolve-model.ts';
import { buildSystemPrompt } from '../src/agent/prompt.ts';
import { InMemorySandboxd } from '../src/agent/testing/in-memory-sandboxd.ts';
import { MemoryContext } from '../src/agent/testing/memory-context.ts';
import { toolDefinitions, toolNames } from '../src/agent/tools/definitions.ts';
import { loadConfig } from '../src/config.ts';
import { EventLog } from '../src/jobs/event-log.ts';
import { summarize, type Result, type Summary } from './stats.ts';

export interface StoreRow {
  events: number;
  steps: number;
  /** Bytes of context.db (WAL checkpointed) per 1000 events. */
  bytesPer1kEvents: number;
  /** Of which vector blobs (256 float32 per chunk), when the store was built with embeddings. */
  vectorBytesPer1kEvents: number;
  chunks: number;
  assembly: Array<{ window: number; latencyMs: Summary }>;
  recall: Array<{ mode: 'bm25' | 'hybrid'; latencyMs: Summary }>;
}

export interface TrajectoryRow {
  name: string;
  requests: number;
  promptTokens: number;
  maxRequestTokens: number;
  summaryRequests: number;
}

const toolsJson = JSON.stringify(toolNames.map((name) => ({ type: 'function', function: { name, description: toolDefinitions[name].description, parameters: z.toJSONSchema(toolDefinitions[name].inputSchema) } })));
const words = ['parser', 'config', 'database', 'timeout', 'widget', 'render', 'socket', 'cache', 'token', 'schema', 'retry', 'buffer', 'thread', 'queue', 'vector'];

/** A deterministic 256-dimension "embedding" (hashed words): costs what a real vector costs to store and compare. */
const hashEmbedder: Embedder = {
  model: 'bench:hash-256',
  embed: async (values) =>
    values.map((value) => {
      const vector = new Array<number>(256).fill(0);
      for (const word of value.toLowerCase().match(/[a-z0-9]+/g) ?? []) {
        let hash = 0;
        for (const char of word) hash = (hash * 31 + char.charCodeAt(0)) >>> 0;
        vector[hash % 256]! += 1;
      }
      return vector;
    }),
};

/** Fills a store with `events` events as a job makes them: per step a model turn, a tool call and its result. */
async function populate(path: string, events: number, embed: boolean): Promise<{ steps: number; log: EventLog }> {
  const log = new EventLog('job_bench', path);
  const store = new ContextStore(log, { counter: estimateCounter(), embedder: embed ? hashEmbedder : undefined });
  store.append('user-message', 0, { text: longJobTask, source: 'task' });
  const steps = Math.floor(events / 3);
  let seed = 7;
  const random = () => ((seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32);
  for (let step = 1; step <= steps; step++) {
    const handle = `step-${step}-call-1`;
    const command = `grep -rn ${words[step % words.length]} src/ | head -${20 + (step % 40)}`;
    store.append('model-turn', step, { text: `Looking at ${words[step % words.length]} (step ${step}).`, tool_calls: [{ call_id: `c${step}`, name: 'shell', args: { command } }], finish_reason: 'tool-calls', usage: { input_tokens: 1000, output_tokens: 50 } });
    store.append('tool-call', step, { call_id: `c${step}`, name: 'shell', args: { command }, handle });
    const lines = step % 10 === 0 ? 300 : 10 + Math.floor(random() * 40);
    let output = 'exit code: 0\noutput:\n';
    for (let line = 0; line < lines; line++) output += `src/${words[(step + line) % words.length]}/${words[line % words.length]}.ts:${line + 1}: const ${words[(line * 7) % words.length]}_${step} = ${Math.floor(random() * 1e6)};\n`;
    store.append('tool-result', step, { call_id: `c${step}`, name: 'shell', is_error: false, output, handle });
    if (step % 50 === 0) {
      // A job this long has condensed many times: the latest summary covers everything before the recent steps.
      store.append('context-summary', step, { text: `Progress through step ${step}: ${'searched the sources for identifiers and noted their values; '.repeat(20)}`, through_seq: lastSeq(log), from_step: 1, to_step: step, level: 1, method: 'model' });
    }
  }
  await store.flushEmbeddings();
  return { steps, log };
}

function lastSeq(log: EventLog): number {
  return (log.database.prepare('SELECT max(seq) AS seq FROM events').get() as { seq: number }).seq;
}

export async function benchStore(events: number, options: { iterations: number; hybrid: boolean; progress: (message: string) => void }): Promise<StoreRow> {
  const dir = mkdtempSync(join(tmpdir(), 'workcell-context-bench-'));
  try {
    const path = join(dir, 'context.db');
    options.progress(`context store: populating ${events} events`);
    const { steps, log } = await populate(path, events, options.hybrid);
    log.database.pragma('wal_checkpoint(TRUNCATE)');
    const bytes = statSync(path).size;
    const chunks = (log.database.prepare('SELECT count(*) AS n FROM chunks').get() as { n: number }).n;
    const vectorBytes = (log.database.prepare('SELECT coalesce(sum(length(vector)), 0) AS n FROM chunk_vectors').get() as { n: number }).n;
    const counter: TokenCounter = await tiktokenCounter('o200k_base');
    const signal = new AbortController().signal;

    const assembly: StoreRow['assembly'] = [];
    for (const window of [8192, 128_000]) {
      options.progress(`context store: prompt assembly, ${events} events, ${window}-token window`);
      const store = new ContextStore(log, { counter });
      const builder = new PromptBuilder({ store, system: buildSystemPrompt(), toolsJson, window, modelMaxOutputTokens: 16_384 });
      await builder.build(steps + 1, signal); // warm-up: may condense what the populated store left over
      const samples: number[] = [];
      for (let index = 0; index < options.iterations; index++) {
        // A step as a running job has it: one more turn recorded, then the next prompt assembled.
        const step = steps + 1 + index;
        const output = `exit code: 0\noutput:\n${'result line\n'.repeat(20 + (index % 30))}`;
        store.append('model-turn', step, { text: '', tool_calls: [{ call_id: `b${step}`, name: 'shell', args: { command: 'make test' } }], finish_reason: 'tool-calls', usage: {} });
        store.append('tool-call', step, { call_id: `b${step}`, name: 'shell', args: { command: 'make test' }, handle: `step-${step}-call-1` });
        store.append('tool-result', step, { call_id: `b${step}`, name: 'shell', is_error: false, output, handle: `step-${step}-call-1` });
        const started = performance.now();
        await builder.build(step + 1, signal);
        samples.push(performance.now() - started);
      }
      assembly.push({ window, latencyMs: summarize(samples) });
    }

    const recallRows: StoreRow['recall'] = [];
    for (const mode of options.hybrid ? (['bm25', 'hybrid'] as const) : (['bm25'] as const)) {
      options.progress(`context store: recall (${mode}), ${events} events`);
      const store = new ContextStore(log, { counter, embedder: mode === 'hybrid' ? hashEmbedder : undefined });
      const recall = new Recall(store, { recallPageChars: 8000, shownHead: () => undefined });
      const samples: number[] = [];
      for (let index = 0; index < options.iterations; index++) {
        const query = `${words[index % words.length]} ${words[(index * 3 + 1) % words.length]}_${(index * 37) % steps}`;
        const started = performance.now();
        await recall.run({ query, limit: 5 }, signal);
        samples.push(performance.now() - started);
      }
      recallRows.push({ mode, latencyMs: summarize(samples) });
    }
    log.close();
    return { events, steps, bytesPer1kEvents: Math.round(bytes / (events / 1000)), vectorBytesPer1kEvents: Math.round(vectorBytes / (events / 1000)), chunks, assembly, recall: recallRows };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The long scripted job of the tests, through the real loop; the model server measures every request. */
export async function benchTrajectory(steps: number, progress: (message: string) => void): Promise<TrajectoryRow[]> {
  const counter = await tiktokenCounter('o200k_base');
  const rows: TrajectoryRow[] = [];
  let recorded: MemoryContext | undefined;
  for (const window of [8192, 128_000]) {
    progress(`trajectory: ${steps} steps, ${window}-token window`);
    const long = longJobPolicy({ steps });
    const server = await startOpenAICompatibleServer(long.policy, { countTokens: (text) => counter.count(text) });
    try {
      const context = new MemoryContext({ counter });
      const sandbox = new InMemorySandboxd({ shell: (command, self) => emulateLongJobShell(command, self.files) });
      const outcome = await runAgent({
        jobId: 'job_bench',
        task: longJobTask,
        model: resolveModel('openai-compatible:gpt-4o-mini', loadConfig({}, { openaiCompatibleBaseUrl: server.baseUrl })).model,
        client: sandbox,
        events: context,
        context: context.store,
        modelInfo: { ...modelInfo('openai', 'gpt-4o-mini'), contextWindow: window },
        maxSteps: steps + 20,
        stream: false,
        retry: { maxRetries: 2, baseMs: 1 },
        signal: new AbortController().signal,
      });
      if (outcome.status !== 'complete') throw new Error(`the trajectory did not complete: ${outcome.error}`);
      const tokens = server.requests.map((request) => request.promptTokens ?? 0);
      rows.push({ name: `with condensation, ${window}-token window`, requests: tokens.length, promptTokens: tokens.reduce((a, b) => a + b, 0), maxRequestTokens: Math.max(...tokens), summaryRequests: long.summaryRequests.length });
      recorded ??= context;
    } finally {
      await server.close();
    }
  }
  // Without condensation: each turn's prompt is the whole history up to it (as the loop sent it before the context
  // store existed: outputs cut at 30 000 characters), counted by the same tokenizer, message by message.
  progress('trajectory: whole-history prompts');
  const events = recorded!.events;
  const fixed = counter.count(buildSystemPrompt()) + Math.ceil(counter.count(toolsJson) * 1.1) + 14;
  let total = 0;
  let max = 0;
  let requests = 0;
  let history = 0;
  let from = 0;
  for (const [index, event] of events.entries()) {
    if (event.type !== 'model-turn') continue;
    // Messages added since the previous turn.
    const messages = historyFromEvents(events.slice(from, index)).toMessages();
    history += messages.reduce((sum, message) => sum + 3 + strings(message.content).reduce((tokens, text) => tokens + counter.count(text), 0), 0);
    from = index;
    const prompt = fixed + history;
    total += prompt;
    max = Math.max(max, prompt);
    requests++;
  }
  rows.unshift({ name: 'without condensation (whole history every turn)', requests, promptTokens: total, maxRequestTokens: max, summaryRequests: 0 });
  return rows;
}

/** The string values of a message's content (what a provider tokenizes), without the part types. */
function strings(value: unknown): string[] {
  if (typeof value === 'string') return [value];
  if (Array.isArray(value)) return value.flatMap(strings);
  if (typeof value === 'object' && value !== null) return Object.entries(value).flatMap(([key, field]) => (key === 'type' ? [] : key === 'input' ? [JSON.stringify(field)] : strings(field)));
  return [];
}

export function markdownContextReport(stores: StoreRow[], trajectory: TrajectoryRow[], trajectorySteps: number): string {
  const format = (value: number) => (value >= 100 ? value.toFixed(0) : value >= 10 ? value.toFixed(1) : value >= 1 ? value.toFixed(2) : value.toFixed(3));
  const lines = ['| stored events | measurement | n | median ms | p95 ms | max ms |', '|--:|---|--:|--:|--:|--:|'];
  for (const row of stores) {
    for (const { window, latencyMs } of row.assembly) lines.push(`| ${row.events} | prompt assembly, ${window}-token window | ${latencyMs.n} | ${format(latencyMs.median)} | ${format(latencyMs.p95)} | ${format(latencyMs.max)} |`);
    for (const { mode, latencyMs } of row.recall) lines.push(`| ${row.events} | recall, ${mode === 'bm25' ? 'BM25' : 'BM25 + vectors (RRF)'} | ${latencyMs.n} | ${format(latencyMs.median)} | ${format(latencyMs.p95)} | ${format(latencyMs.max)} |`);
  }
  lines.push('', '| stored events | steps | chunks | context.db per 1k events | of which vectors |', '|--:|--:|--:|--:|--:|');
  for (const row of stores) lines.push(`| ${row.events} | ${row.steps} | ${row.chunks} | ${(row.bytesPer1kEvents / 1024).toFixed(0)} KiB | ${(row.vectorBytesPer1kEvents / 1024).toFixed(0)} KiB |`);
  lines.push('', `Fixed scripted trajectory (${trajectorySteps} steps, test/helpers/long-job.ts), prompt tokens counted by o200k_base:`, '', '| | requests | prompt tokens sent | largest request | summary requests |', '|---|--:|--:|--:|--:|');
  for (const row of trajectory) lines.push(`| ${row.name} | ${row.requests} | ${row.promptTokens.toLocaleString('en-US')} | ${row.maxRequestTokens.toLocaleString('en-US')} | ${row.summaryRequests} |`);
  return `${lines.join('\n')}\n`;
}

export type { Result };
