// The agent loop through a long job under a small window, against the fake OpenAI-compatible server (which measures
// every request with the same tokenizer), with the real context store on SQLite and an in-memory sandboxd. The
// end-to-end version with a real sandbox is test/integration/context/long-job.test.ts.
import { afterEach, describe, expect, it } from 'vitest';
import { emulateLongJobShell, longJobPolicy, longJobTask, requestStrings, vaultCode, type LongJobOptions } from '../../../test/helpers/long-job.ts';
import { startOpenAICompatibleServer, type OpenAICompatibleServer } from '../../../test/helpers/openai-compatible-server.ts';
import { loadConfig } from '../../config.ts';
import { runAgent, type RunAgentOptions } from '../loop.ts';
import { resolveModel } from '../models/resolve-model.ts';
import { InMemorySandboxd } from '../testing/in-memory-sandboxd.ts';
import { MemoryContext } from '../testing/memory-context.ts';
import { modelInfo } from './model-info.ts';
import { tiktokenCounter } from './tokens.ts';

const window = 16_384;
let server: OpenAICompatibleServer | undefined;
afterEach(async () => {
  await server?.close();
  server = undefined;
});

async function runLongJob(jobOptions: LongJobOptions, setup?: (context: MemoryContext) => void, contextWindow = window) {
  const counter = await tiktokenCounter('o200k_base');
  const long = longJobPolicy(jobOptions);
  server = await startOpenAICompatibleServer(long.policy, { countTokens: (text) => counter.count(text) });
  const config = loadConfig({}, { openaiCompatibleBaseUrl: server.baseUrl });
  const sandbox = new InMemorySandboxd({ shell: (command, self) => emulateLongJobShell(command, self.files) });
  const context = new MemoryContext({ counter });
  setup?.(context);
  const options: RunAgentOptions = {
    jobId: 'job_long',
    task: longJobTask,
    model: resolveModel('openai-compatible:gpt-4o-mini', config).model,
    client: sandbox,
    events: context,
    context: context.store,
    modelInfo: { ...modelInfo('openai-compatible', 'gpt-4o-mini'), contextWindow },
    maxSteps: 400,
    stream: false,
    retry: { maxRetries: 2, baseMs: 1 },
    signal: new AbortController().signal,
  };
  const outcome = await runAgent(options);
  return { outcome, sandbox, context, long, requests: server.requests };
}

/** Every request (agent turns and summaries) fit the window, answer included, and carried the task verbatim. */
function expectWithinWindow(requests: OpenAICompatibleServer['requests'], contextWindow = window) {
  expect(requests.length).toBeGreaterThan(0);
  for (const [index, request] of requests.entries()) {
    const maxTokens = Number(request.body.max_tokens ?? request.body.max_completion_tokens);
    expect(Number.isFinite(maxTokens), `request ${index} sets max_tokens`).toBe(true);
    expect(request.promptTokens! + maxTokens, `request ${index}: ${request.promptTokens} prompt + ${maxTokens} answer tokens`).toBeLessThanOrEqual(contextWindow);
    expect(requestStrings(request).some((text) => text.includes(longJobTask)), `request ${index} holds the task`).toBe(true);
  }
}

describe('a long job under a 16k window', () => {
  it('completes 210 steps whose raw history is over 10 windows, every request within the window with the task, and recalls an early fact', async () => {
    const { outcome, sandbox, context, long, requests } = await runLongJob({ steps: 210 });
    expect(outcome).toMatchObject({ status: 'complete', steps: 210 });
    expectWithinWindow(requests);
    const rawTokens = context.events.reduce((sum, event) => sum + (event.type === 'tool-result' || event.type === 'model-turn' ? context.store.counter.count(JSON.stringify(event.data)) : 0), 0);
    expect(rawTokens).toBeGreaterThan(10 * window);
    // Condensed with model summaries, recursively when the summary grew.
    const summaries = context.ofType('context-summary');
    expect(summaries.length).toBeGreaterThan(3);
    expect(summaries.every((event) => event.data.method === 'model')).toBe(true);
    // Summaries of summaries: the growing summary was compressed (one level up) before more was added to it.
    expect(summaries.some((event) => event.data.compressed === true && Number(event.data.level) >= 2)).toBe(true);
    expect(long.summaryRequests.length).toBeGreaterThanOrEqual(summaries.length);
    // The fact, in a step-3 output long gone from the prompt, came back through recall.
    const recall = context.ofType('tool-result').find((event) => event.data.name === 'recall');
    expect(String(recall?.data.output)).toContain(vaultCode);
    expect(sandbox.files.get('answer.txt')).toBe(`${vaultCode}\n`);
    const shellSteps = Array.from({ length: 207 }, (_, index) => index + 1).filter((step) => step !== 5);
    expect(sandbox.files.get('calls.txt')?.split('\n').filter(Boolean)).toEqual(shellSteps.map((step) => `step ${step}`));
    // The request that chose to recall (step 208) no longer held the fact anywhere.
    expect(JSON.stringify(long.agentRequests.at(-3)!.body.messages)).not.toContain(vaultCode);
    // Prompts were assembled to the budget, leaving the answer room.
    const turn = context.ofType('model-turn').at(-1)!.data.context as { window: number; budget: number; prompt_tokens: number };
    expect(turn).toMatchObject({ window, budget: 12_288 });
    expect(turn.prompt_tokens).toBeLessThanOrEqual(12_288);
  }, 120_000);

  it('survives summaries that fail, come back empty, garbled or too long: the job completes, within the window', async () => {
    // A tighter window condenses often enough to get past the pauses that follow four failed summaries in a row.
    const { outcome, context, long, requests } = await runLongJob({ steps: 200, summaries: 'mixed' }, undefined, 12_288);
    expect(outcome).toMatchObject({ status: 'complete', steps: 200 });
    expectWithinWindow(requests, 12_288);
    const methods = context.ofType('context-summary').map((event) => event.data.method);
    expect(methods).toContain('fallback');
    expect(methods).toContain('model');
    expect(long.summaryRequests.length).toBeGreaterThanOrEqual(4);
    const fallback = context.ofType('context-summary').find((event) => event.data.method === 'fallback')!;
    expect(String(fallback.data.text)).toMatch(/step \d+: .*handle:step-\d+-call-1/);
  }, 120_000);

  it('condenses with the digest alone when every summary call fails', async () => {
    const { outcome, context, requests } = await runLongJob({ steps: 80, summaries: 'fail' });
    expect(outcome).toMatchObject({ status: 'complete' });
    expectWithinWindow(requests);
    expect(context.ofType('context-summary').every((event) => event.data.method === 'fallback')).toBe(true);
  }, 120_000);
});

describe('a job restarted from its store', () => {
  it('continues after the last completed step: a finished call is not run again, an interrupted one is answered as such', async () => {
    const { outcome, sandbox, context } = await runLongJob({ steps: 12 }, (memory) => {
      // What a worker that died in step 2, during its only call, left behind.
      memory.append('job-status', 0, { status: 'running' });
      memory.append('user-message', 0, { text: longJobTask, source: 'task' });
      memory.append('model-turn', 1, { text: 'Step 1.', tool_calls: [{ call_id: 'c1', name: 'shell', args: { command: ': step 1; sleep 0; echo "step 1" >> calls.txt' } }], finish_reason: 'tool-calls', usage: { input_tokens: 10, output_tokens: 5 } });
      memory.append('tool-call', 1, { call_id: 'c1', name: 'shell', args: { command: ': step 1; sleep 0; echo "step 1" >> calls.txt' }, handle: 'step-1-call-1' });
      memory.append('tool-result', 1, { call_id: 'c1', name: 'shell', is_error: false, output: 'exit code: 0\noutput: (none)', handle: 'step-1-call-1' });
      memory.append('model-turn', 2, { text: 'Step 2.', tool_calls: [{ call_id: 'c2', name: 'shell', args: { command: ': step 2; sleep 0; echo "step 2" >> calls.txt' } }], finish_reason: 'tool-calls', usage: { input_tokens: 10, output_tokens: 5 } });
      memory.append('tool-call', 2, { call_id: 'c2', name: 'shell', args: { command: ': step 2; sleep 0; echo "step 2" >> calls.txt' }, handle: 'step-2-call-1' });
    });
    expect(outcome).toMatchObject({ status: 'complete', steps: 13 });
    // The task was not recorded twice; step 2's call got the interrupted answer, and the model made it again in step 3.
    expect(context.ofType('user-message').filter((event) => event.data.source === 'task')).toHaveLength(1);
    const step2 = context.events.filter((event) => event.step === 2 && event.type === 'tool-result');
    expect(step2).toHaveLength(1);
    expect(step2[0]!.data).toMatchObject({ call_id: 'c2', is_error: true, interrupted: true, output: expect.stringMatching(/interrupted by a worker restart/) });
    expect(context.ofType('model-turn').map((event) => event.step)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13]);
    // In memory, the first worker's effects are gone; only the restarted calls ran: step 1 never again, step 2 once.
    expect(sandbox.files.get('calls.txt')?.split('\n').filter(Boolean)).toEqual(['step 2', 'step 3', 'step 4', 'step 6', 'step 7', 'step 8', 'step 9']);
  }, 60_000);
});
