import { join } from 'node:path';
import type { LanguageModelV4, LanguageModelV4Prompt } from '@ai-sdk/provider';
import { afterEach, describe, expect, it } from 'vitest';
import { startOpenAICompatibleServer, scriptedReplies, type OpenAICompatibleServer, type Reply } from '../../test/helpers/openai-compatible-server.ts';
import { loadConfig } from '../config.ts';
import { historyFromEvents } from './history.ts';
import { nudgeMessage, runAgent, type RunAgentOptions } from './loop.ts';
import { resolveModel } from './models/resolve-model.ts';
import { ScriptModel, loadScript, parseScript } from './models/script-model.ts';
import { buildSystemPrompt } from './prompt.ts';
import { InMemorySandboxd, type ShellHandler } from './testing/in-memory-sandboxd.ts';
import { MemoryContext } from './testing/memory-context.ts';
import { toolNames } from './tools/definitions.ts';

const fixtures = join(import.meta.dirname, '../../test/fixtures/trajectories');
const fixture = (file: string) => new ScriptModel(loadScript(join(fixtures, file)), file);
const inline = (turns: unknown[]) => new ScriptModel(parseScript(JSON.stringify({ turns }), 'inline.json'), 'inline.json');

/** Emulates `python3 hello.py` well enough for the two-files trajectory. */
const pythonShell: ShellHandler = (command, sandbox) => {
  const source = sandbox.files.get('hello.py');
  const printed = source === undefined ? undefined : /print\("([^"]*)"\)/.exec(source)?.[1];
  if (command === 'python3 hello.py' && printed !== undefined) return { output: `${printed}\n`, exit_code: 0 };
  return { output: `bash: cannot run ${command}\n`, exit_code: 127 };
};

function setup(model: RunAgentOptions['model'], overrides: Partial<RunAgentOptions> = {}) {
  const sandbox = new InMemorySandboxd({ shell: pythonShell });
  const events = new MemoryContext();
  const options: RunAgentOptions = {
    jobId: 'job_test',
    task: 'Write hello.py that prints a greeting, run it, and keep notes.',
    model,
    client: sandbox,
    events,
    context: events.store,
    modelInfo: { contextWindow: 128_000, maxOutputTokens: 8192 },
    maxSteps: 20,
    stream: false,
    retry: { maxRetries: 3, baseMs: 1 },
    signal: new AbortController().signal,
    ...overrides,
  };
  return { sandbox, events, options };
}

/** Wraps a model to record the prompt of every call. */
function recording(inner: LanguageModelV4): { model: LanguageModelV4; prompts: LanguageModelV4Prompt[] } {
  const prompts: LanguageModelV4Prompt[] = [];
  return {
    prompts,
    model: {
      specificationVersion: 'v4',
      provider: inner.provider,
      modelId: inner.modelId,
      supportedUrls: {},
      doGenerate: (options) => (prompts.push(options.prompt), inner.doGenerate(options)),
      doStream: (options) => (prompts.push(options.prompt), inner.doStream(options)),
    },
  };
}

describe('runAgent with the script model', () => {
  for (const stream of [false, true]) {
    it(`completes the two-files trajectory (${stream ? 'streaming' : 'not streaming'})`, async () => {
      const { sandbox, events, options } = setup(fixture('two-files.json'), { stream });
      const outcome = await runAgent(options);

      expect(outcome).toMatchObject({ status: 'complete', steps: 4, summary: expect.stringMatching(/^Created hello.py/) as unknown });
      expect(sandbox.files.get('hello.py')).toBe('print("Hello from workcell")\n');
      expect(sandbox.files.get('notes.txt')).toBe('status: verified (python3 hello.py printed the greeting)\n');
      expect(events.events.map((event) => `${event.step}:${event.type}`)).toEqual([
        '0:user-message',
        '1:model-turn',
        '1:tool-call',
        '1:tool-result',
        '1:tool-call',
        '1:tool-result',
        '2:model-turn',
        '2:tool-call',
        '2:tool-result',
        '3:model-turn',
        '3:tool-call',
        '3:tool-result',
        '4:model-turn',
        '4:tool-call',
        '4:tool-result',
      ]);
      expect(events.events[0]!.data).toEqual({ text: options.task, source: 'task' });
      const firstTurn = events.ofType('model-turn')[0]!.data;
      expect(firstTurn).toMatchObject({ text: 'I will create the script and a notes file.', finish_reason: 'tool-calls' });
      expect(firstTurn.tool_calls).toEqual([
        { call_id: 'script_1_1', name: 'write_file', args: { path: 'hello.py', content: 'print("Hello from workcell")\n' } },
        { call_id: 'script_1_2', name: 'write_file', args: { path: 'notes.txt', content: 'status: draft\n' } },
      ]);
      expect(events.ofType('tool-call')[2]!.data).toEqual({ call_id: 'script_2_1', name: 'shell', args: { command: 'python3 hello.py' }, handle: 'step-2-call-1' });
      const shellResult = events.ofType('tool-result')[2]!.data;
      expect(shellResult).toMatchObject({ call_id: 'script_2_1', name: 'shell', is_error: false, output: 'exit code: 0\noutput:\nHello from workcell\n', omitted_chars: 0 });
      expect(shellResult.duration_ms).toEqual(expect.any(Number));

      const turnUsage = events.ofType('model-turn').map((event) => event.data.usage as { input_tokens: number; output_tokens: number });
      expect(outcome.usage.input_tokens).toBe(turnUsage.reduce((sum, usage) => sum + usage.input_tokens, 0));
      expect(outcome.usage.output_tokens).toBe(turnUsage.reduce((sum, usage) => sum + usage.output_tokens, 0));
      expect(outcome.usage.input_tokens).toBeGreaterThan(0);
    });
  }

  it('sends the model the system prompt, the tools and every result, as rebuilt from the events', async () => {
    const recorder = recording(fixture('two-files.json'));
    const { events, options } = setup(recorder.model);
    await runAgent(options);
    expect(recorder.prompts).toHaveLength(4);
    const last = recorder.prompts[3]!;
    expect(last[0]).toEqual({ role: 'system', content: buildSystemPrompt() });
    // The history rebuilt from the events up to the last model turn is exactly what the model saw.
    const lastTurn = events.events.findIndex((event) => event.type === 'model-turn' && event.step === 4);
    const rebuilt = historyFromEvents(events.events.slice(0, lastTurn)).toMessages();
    expect(project(last.slice(1))).toEqual(project(rebuilt as LanguageModelV4Prompt));
    expect(project(last.slice(1)).map((message) => message.role)).toEqual(['user', 'assistant', 'tool', 'assistant', 'tool', 'assistant', 'tool']);
    expect(JSON.stringify(last)).toContain('Hello from workcell');
  });

  it('answers malformed calls, unknown tools and invalid JSON with error results, and carries on', async () => {
    const { sandbox, events, options } = setup(fixture('malformed-calls.json'));
    const outcome = await runAgent(options);
    expect(outcome).toMatchObject({ status: 'complete', steps: 5, summary: 'Wrote a.txt after fixing my calls.' });
    expect(sandbox.files.get('a.txt')).toBe('fixed\n');
    const results = events.ofType('tool-result').map((event) => event.data);
    expect(results.map((result) => result.is_error)).toEqual([true, true, true, false, false]);
    expect(results[0]!.output).toMatch(/Invalid arguments for write_file:\n- content: /);
    expect(results[1]!.output).toMatch(/Unknown tool "run_python"\. The available tools are: shell, run_code, read_file/);
    expect(results[2]!.output).toMatch(/The arguments of this write_file call are not valid JSON/);
    // The tool-call event keeps what the model actually sent.
    expect(events.ofType('tool-call')[2]!.data.args).toBe('{"path": "a.txt", "content": ');
  });

  it('answers a tool that throws with an error result', async () => {
    const { events, options } = setup(
      inline([{ tool_calls: [{ name: 'shell', args: { command: 'explode' } }] }, { tool_calls: [{ name: 'finish', args: { summary: 'survived' } }] }]),
    );
    (options.client as InMemorySandboxd).shell = () => {
      throw new Error('the shell handler blew up');
    };
    const outcome = await runAgent(options);
    expect(outcome).toMatchObject({ status: 'complete', summary: 'survived' });
    expect(events.ofType('tool-result')[0]!.data).toMatchObject({ is_error: true, output: 'shell failed with an unexpected error: the shell handler blew up' });
  });

  it('stops at the step limit', async () => {
    const { events, options } = setup(fixture('endless-shell.json'), { maxSteps: 3 });
    const outcome = await runAgent(options);
    expect(outcome).toMatchObject({ status: 'error', error: 'step limit (3) reached before the agent called finish', steps: 3 });
    expect(events.ofType('model-turn')).toHaveLength(3);
    expect(events.ofType('tool-result')).toHaveLength(3);
  });

  it('nudges once after a turn without tool calls, and gives up after two in a row', async () => {
    const { events, options } = setup(fixture('no-tool-calls.json'));
    const outcome = await runAgent(options);
    expect(outcome).toMatchObject({ status: 'error', steps: 2 });
    expect(outcome.status === 'error' && outcome.error).toMatch(/stopped calling tools.*"As I said, it is easy\."/);
    expect(events.events.map((event) => `${event.step}:${event.type}`)).toEqual(['0:user-message', '1:model-turn', '1:user-message', '2:model-turn']);
    expect(events.events[2]!.data).toEqual({ text: nudgeMessage, source: 'nudge' });
  });

  it('recovers after a nudge', async () => {
    const recorder = recording(inline([{ text: 'Thinking out loud.' }, { tool_calls: [{ name: 'finish', args: { summary: 'ok' } }] }]));
    const { options } = setup(recorder.model);
    expect(await runAgent(options)).toMatchObject({ status: 'complete', steps: 2 });
    expect(JSON.stringify(recorder.prompts[1]!.at(-1))).toContain('did not call any tool');
  });

  it('ends with an error when the script runs out', async () => {
    const { options } = setup(inline([{ tool_calls: [{ name: 'shell', args: { command: 'ls' } }] }]));
    const outcome = await runAgent(options);
    expect(outcome).toMatchObject({ status: 'error', steps: 3 });
    expect(outcome.status === 'error' && outcome.error).toMatch(/exhausted/);
  });

  it('rejects with the abort reason when cancelled mid-tool', async () => {
    const controller = new AbortController();
    const reason = new Error('job cancelled by the user');
    const { sandbox, events, options } = setup(fixture('endless-shell.json'), { signal: controller.signal });
    sandbox.shell = () => {
      setTimeout(() => controller.abort(reason), 5);
      return new Promise(() => {});
    };
    await expect(runAgent(options)).rejects.toBe(reason);
    expect(events.events.map((event) => event.type)).toEqual(['user-message', 'model-turn', 'tool-call']);
  });

  it('rejects at once when already cancelled', async () => {
    const controller = new AbortController();
    controller.abort(new Error('too late'));
    const { events, options } = setup(fixture('two-files.json'), { signal: controller.signal });
    await expect(runAgent(options)).rejects.toThrow('too late');
    expect(events.events).toEqual([]);
  });
});

describe('runAgent against an OpenAI-compatible server', () => {
  let server: OpenAICompatibleServer | undefined;
  afterEach(async () => {
    await server?.close();
    server = undefined;
  });

  async function modelFor(replies: Reply[]) {
    server = await startOpenAICompatibleServer(scriptedReplies(replies));
    const config = loadConfig({}, { openaiCompatibleBaseUrl: server.baseUrl });
    return resolveModel('openai-compatible:fake-model', config).model;
  }

  const job: Reply[] = [
    { text: 'Writing the script.', tool_calls: [{ name: 'write_file', arguments: { path: 'hello.py', content: 'print("Hello from workcell")\n' } }] },
    { tool_calls: [{ name: 'shell', arguments: { command: 'python3 hello.py' } }] },
    { text: 'All good.', tool_calls: [{ name: 'finish', arguments: { summary: 'hello.py prints the greeting.' } }] },
  ];

  for (const stream of [false, true]) {
    it(`drives a multi-step job (${stream ? 'streaming' : 'not streaming'})`, async () => {
      const { sandbox, events, options } = setup(await modelFor(job), { stream });
      const outcome = await runAgent(options);
      expect(outcome).toEqual({ status: 'complete', summary: 'hello.py prints the greeting.', steps: 3, usage: expect.any(Object) as unknown });
      expect(outcome.usage.input_tokens).toBeGreaterThan(0);
      expect(sandbox.files.get('hello.py')).toBe('print("Hello from workcell")\n');
      expect(events.ofType('tool-result')[1]!.data.output).toBe('exit code: 0\noutput:\nHello from workcell\n');

      const requests = server!.requests;
      expect(requests).toHaveLength(3);
      expect(requests.every((request) => request.body.stream === (stream ? true : undefined) || request.body.stream === stream)).toBe(true);
      expect(requests[0]!.body.tools!.map((tool) => tool.function.name)).toEqual(toolNames);
      expect(requests[0]!.body.messages![0]).toEqual({ role: 'system', content: buildSystemPrompt() });
      expect(requests[0]!.body.messages![1]).toEqual({ role: 'user', content: options.task });
      // The second request carries the first turn's call and its result.
      const second = requests[1]!.body.messages!;
      expect(second.map((message) => message.role)).toEqual(['system', 'user', 'assistant', 'tool']);
      expect(second[3]).toMatchObject({ role: 'tool', tool_call_id: 'call_0_0', content: 'Created hello.py (29 bytes).' });
      expect(requests[2]!.body.messages!.at(-1)).toMatchObject({ role: 'tool', content: 'exit code: 0\noutput:\nHello from workcell\n' });
    });
  }

  for (const stream of [false, true]) {
    it(`retries a 429 after the delay the server asks for (${stream ? 'streaming' : 'not streaming'})`, async () => {
      const rateLimited: Reply = { status: 429, headers: { 'retry-after': '1' }, body: { error: { message: 'Rate limit reached', type: 'rate_limit_error' } } };
      const { events, options } = setup(await modelFor([rateLimited, ...job]), { stream });
      const started = Date.now();
      const outcome = await runAgent(options);
      expect(outcome.status).toBe('complete');
      expect(Date.now() - started).toBeGreaterThanOrEqual(950);
      expect(events.ofType('model-retry').map((event) => [event.step, event.data])).toEqual([[1, { attempt: 1, delay_ms: 1000, error: 'HTTP 429: Rate limit reached' }]]);
      expect(server!.requests).toHaveLength(4);
    });
  }

  it('retries two 500s with backoff, then succeeds', async () => {
    const serverError: Reply = { status: 500, body: { error: { message: 'upstream overloaded', type: 'server_error' } } };
    const { events, options } = setup(await modelFor([job[0]!, serverError, serverError, ...job.slice(1)]), { stream: true, retry: { maxRetries: 3, baseMs: 20 } });
    const outcome = await runAgent(options);
    expect(outcome).toMatchObject({ status: 'complete', steps: 3 });
    const retries = events.ofType('model-retry');
    expect(retries.map((event) => [event.step, event.data.attempt, event.data.error])).toEqual([
      [2, 1, 'HTTP 500: upstream overloaded'],
      [2, 2, 'HTTP 500: upstream overloaded'],
    ]);
    const delays = retries.map((event) => event.data.delay_ms as number);
    expect(delays[0]).toBeGreaterThanOrEqual(20);
    expect(delays[0]).toBeLessThanOrEqual(25);
    expect(delays[1]).toBeGreaterThanOrEqual(40);
    expect(delays[1]).toBeLessThanOrEqual(50);
  });

  it('retries a dropped connection', async () => {
    const { events, options } = setup(await modelFor([{ disconnect: true }, ...job]));
    expect((await runAgent(options)).status).toBe('complete');
    expect(events.ofType('model-retry')[0]!.data.error).toMatch(/^network error: /);
  });

  it('fails at once on a 400', async () => {
    const badRequest: Reply = { status: 400, body: { error: { message: 'context length exceeded', type: 'invalid_request_error' } } };
    const { events, options } = setup(await modelFor([badRequest, ...job]), { retry: { maxRetries: 5, baseMs: 1 } });
    const outcome = await runAgent(options);
    expect(outcome).toEqual({ status: 'error', error: 'model call failed: HTTP 400: context length exceeded', steps: 0, usage: { input_tokens: 0, output_tokens: 0 } });
    expect(server!.requests).toHaveLength(1);
    expect(events.ofType('model-retry')).toEqual([]);
  });

  it('gives up when retries run out', async () => {
    const serverError: Reply = { status: 503, body: { error: { message: 'unavailable', type: 'server_error' } } };
    const { events, options } = setup(await modelFor([serverError, serverError, serverError]), { stream: true, retry: { maxRetries: 2, baseMs: 1 } });
    const outcome = await runAgent(options);
    expect(outcome).toMatchObject({ status: 'error', error: 'model call failed after 3 attempts: HTTP 503: unavailable', steps: 0 });
    expect(events.ofType('model-retry')).toHaveLength(2);
  });

  it('rejects with the abort reason while the model is answering', async () => {
    const reason = new Error('cancelled mid-response');
    server = await startOpenAICompatibleServer(() => new Promise(() => {}));
    const config = loadConfig({}, { openaiCompatibleBaseUrl: server.baseUrl });
    for (const stream of [false, true]) {
      const aborter = new AbortController();
      const { events, options } = setup(resolveModel('openai-compatible:fake-model', config).model, { stream, signal: aborter.signal });
      setTimeout(() => aborter.abort(reason), 50);
      await expect(runAgent(options)).rejects.toBe(reason);
      expect(events.events.map((event) => event.type)).toEqual(['user-message']);
    }
  });

  it('rejects with the abort reason while waiting to retry', async () => {
    const controller = new AbortController();
    const reason = new Error('cancelled while backing off');
    const rateLimited: Reply = { status: 429, headers: { 'retry-after': '30' }, body: { error: { message: 'slow down', type: 'rate_limit_error' } } };
    const { options } = setup(await modelFor([rateLimited, ...job]), { signal: controller.signal });
    setTimeout(() => controller.abort(reason), 100);
    const started = Date.now();
    await expect(runAgent(options)).rejects.toBe(reason);
    expect(Date.now() - started).toBeLessThan(5000);
  });
});

/** A provider-neutral view of a prompt, to compare what the model saw with a history rebuilt from events. */
function project(prompt: LanguageModelV4Prompt) {
  return prompt.map((message) => {
    const content = typeof message.content === 'string' ? [{ type: 'text', text: message.content }] : message.content;
    return {
      role: message.role,
      parts: (content as Array<Record<string, unknown>>).map((part) => {
        switch (part.type) {
          case 'text':
            return { text: part.text };
          case 'tool-call':
            return { call: part.toolCallId, name: part.toolName, input: typeof part.input === 'string' ? (JSON.parse(part.input) as unknown) : part.input };
          case 'tool-result':
            return { result: part.toolCallId, output: part.output };
          default:
            return { other: part.type };
        }
      }),
    };
  });
}
