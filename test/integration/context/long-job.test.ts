// Context beyond the window, end to end with real parts: the API over HTTP, the scheduler, a real bwrap sandbox,
// the real context store, and a model speaking the OpenAI protocol over HTTP (the fake server, which measures every
// request with the same tokenizer and answers summary requests). A job of 200+ steps whose raw history is over ten
// times its 16k window completes; every request fits and carries the task; an early fact comes back by recall;
// follow-up messages reach the agent; recall fuses BM25 with embeddings from /v1/embeddings.
import { afterEach, describe, expect, it } from 'vitest';
import { tiktokenCounter } from '../../../src/agent/context/tokens.ts';
import { collectEvents, downloadZip, get, post, startTestApp, type TestApp } from '../../helpers/app.ts';
import { longJobPolicy, longJobTask, requestStrings, vaultCode } from '../../helpers/long-job.ts';
import { startOpenAICompatibleServer, type OpenAICompatibleServer, type Reply } from '../../helpers/openai-compatible-server.ts';

let app: TestApp | undefined;
let llm: OpenAICompatibleServer | undefined;
afterEach(async () => {
  await app?.close();
  await llm?.close();
  app = undefined;
  llm = undefined;
});

interface JobDetail {
  status: string;
  error?: string;
  usage: { steps: number; input_tokens: number; output_tokens: number; cost_usd: number | null; context_window: number | null };
}

const window = 16_384;

describe('a 210-step job under a 16k window, in a real sandbox', () => {
  it('completes; every request fits the window and holds the task; recall finds an early fact', async () => {
    const counter = await tiktokenCounter('o200k_base');
    const long = longJobPolicy({ steps: 210 });
    llm = await startOpenAICompatibleServer(long.policy, { countTokens: (text) => counter.count(text) });
    app = await startTestApp({ model: 'openai-compatible:gpt-4o-mini', openaiCompatibleBaseUrl: llm.baseUrl, modelStream: true });
    const scheduled = await post<{ job_id: string }>(app, '/schedule', { task: longJobTask, context_window: window, limits: { max_steps: 300 } });
    expect(scheduled.status).toBe(202);
    const jobId = scheduled.body.job_id;
    const events = await collectEvents(app, jobId);
    const job = await get<JobDetail>(app, `/jobs/${jobId}`);
    expect(job, job.error).toMatchObject({ status: 'complete', usage: { steps: 210, context_window: window, cost_usd: null } });

    // The model server measured every request: none exceeded the window (answer included); all held the task.
    expect(llm.requests.length).toBeGreaterThan(210);
    for (const [index, request] of llm.requests.entries()) {
      const maxTokens = Number(request.body.max_tokens);
      expect(request.promptTokens! + maxTokens, `request ${index}`).toBeLessThanOrEqual(window);
      expect(requestStrings(request).some((text) => text.includes(longJobTask)), `request ${index} holds the task`).toBe(true);
    }
    // The raw history is more than ten windows.
    const raw = events.filter((event) => event.type === 'tool-result' || event.type === 'model-turn').reduce((sum, event) => sum + counter.count(JSON.stringify(event.data)), 0);
    expect(raw).toBeGreaterThan(10 * window);
    expect(events.filter((event) => event.type === 'context-summary').length).toBeGreaterThan(3);
    // The fact from step 3, long condensed away, came back through recall, and the agent wrote it down.
    expect(JSON.stringify(long.agentRequests.at(-3)!.body.messages)).not.toContain(vaultCode);
    const recall = events.find((event) => event.type === 'tool-result' && event.data.name === 'recall');
    expect(String(recall?.data.output)).toContain(`The vault code is ${vaultCode}`);
    const zip = await downloadZip(app, jobId);
    expect(zip.get('answer.txt')?.content).toBe(`${vaultCode}\n`);
    expect(zip.get('calls.txt')?.content.split('\n').filter(Boolean)).toHaveLength(206);
  }, 300_000);
});

describe('follow-up messages', () => {
  it('reach the running agent verbatim at its next step; to a finished job, a message continues it', async () => {
    const instruction = 'Also write done.txt containing the word ACK-42.';
    let sawInstruction = false;
    llm = await startOpenAICompatibleServer((request): Reply => {
      const text = JSON.stringify(request.body.messages);
      if (text.includes(instruction)) {
        if (!sawInstruction) {
          sawInstruction = true;
          return { tool_calls: [{ name: 'write_file', arguments: { path: 'done.txt', content: 'ACK-42\n' } }] };
        }
        return { tool_calls: [{ name: 'finish', arguments: { summary: 'Followed the instruction.' } }] };
      }
      return { tool_calls: [{ name: 'shell', arguments: { command: 'sleep 0.3; echo waiting' } }] };
    });
    app = await startTestApp({ model: 'openai-compatible:gpt-4o-mini', openaiCompatibleBaseUrl: llm.baseUrl });
    const { body } = await post<{ job_id: string }>(app, '/schedule', { task: 'Wait for instructions.', limits: { max_steps: 50 } });
    let posted: { status: number; body: { job_id: string; event_id: number } } | undefined;
    const events = await collectEvents(app, body.job_id, {
      onEvent: (event) => {
        if (event.type === 'tool-result' && event.step === 2 && posted === undefined) {
          posted = { status: 0, body: { job_id: '', event_id: 0 } };
          void post<{ job_id: string; event_id: number }>(app!, `/jobs/${body.job_id}/messages`, { text: instruction }).then((result) => (posted = result));
        }
      },
    });
    expect(posted?.status).toBe(202);
    expect(events.at(-1)?.data.status).toBe('complete');
    const message = events.find((event) => event.type === 'user-message' && event.data.source === 'client');
    expect(message?.data.text).toBe(instruction);
    expect(message?.id).toBe(posted?.body.event_id);
    expect((await downloadZip(app, body.job_id)).get('done.txt')?.content).toBe('ACK-42\n');
    // Text bodies work too; a blank one is refused; to a job that has ended, a message continues it in a new run.
    expect((await post(app, `/jobs/${body.job_id}/messages`, { text: '  ' })).status).toBe(400);
    const late = await fetch(`${app.url}/jobs/${body.job_id}/messages`, { method: 'POST', headers: { 'content-type': 'text/plain' }, body: 'one more thing' });
    expect(late.status).toBe(202);
    expect(await late.json()).toMatchObject({ job_id: body.job_id, run: 2, reopened: true });
    await collectEvents(app, body.job_id, { lastEventId: events.at(-1)!.id });
    expect((await get<{ status: string; run: number }>(app, `/jobs/${body.job_id}`))).toMatchObject({ status: 'complete', run: 2 });
  }, 120_000);
});

describe('recall with embeddings', () => {
  it('fuses BM25 with vectors from the provider (a deterministic local embedding model)', async () => {
    const topics: Record<string, string[]> = { fruit: ['apple', 'banana', 'fruit', 'pear'], vehicle: ['car', 'truck', 'vehicle', 'bus'] };
    const embed = (input: string) => Object.values(topics).map((words) => 0.01 + words.filter((word) => input.toLowerCase().includes(word)).length);
    llm = await startOpenAICompatibleServer(
      (request): Reply => {
        const turns = (request.body.messages ?? []).filter((message) => message.role === 'assistant').length;
        if (turns === 0) return { tool_calls: [{ name: 'shell', arguments: { command: 'echo "I bought a banana and a pear at the market"; echo "the truck was late"' } }] };
        if (turns === 1) return { tool_calls: [{ name: 'recall', arguments: { query: 'fruit', limit: 2 } }] };
        return { tool_calls: [{ name: 'finish', arguments: { summary: 'done' } }] };
      },
      { embed },
    );
    app = await startTestApp({ model: 'openai-compatible:gpt-4o-mini', openaiCompatibleBaseUrl: llm.baseUrl, embeddingModel: 'openai-compatible:topic-embed' });
    const { body } = await post<{ job_id: string }>(app, '/schedule', { task: 'Remember what I bought.' });
    const events = await collectEvents(app, body.job_id);
    const recall = events.find((event) => event.type === 'tool-result' && event.data.name === 'recall');
    expect(recall?.data.is_error).toBe(false);
    expect(String(recall?.data.output)).toMatch(/BM25 and embeddings/);
    expect(String(recall?.data.output)).toContain('banana');
  }, 120_000);
});
