import { createOpenAICompatible } from '@ai-sdk/openai-compatible';
import { APICallError, generateText, streamText, tool } from 'ai';
import { afterEach, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { scriptedReplies, startOpenAICompatibleServer, type OpenAICompatibleServer, type ReplyPolicy } from './openai-compatible-server.ts';

const tools = {
  write_file: tool({ description: 'Write a file', inputSchema: z.object({ path: z.string(), content: z.string() }) }),
  shell: tool({ description: 'Run a command', inputSchema: z.object({ command: z.string() }) }),
};

describe('the fake OpenAI-compatible server', () => {
  let server: OpenAICompatibleServer | undefined;
  afterEach(async () => {
    await server?.close();
    server = undefined;
  });

  async function start(policy: ReplyPolicy) {
    server = await startOpenAICompatibleServer(policy);
    return createOpenAICompatible({ name: 'fake', baseURL: server.baseUrl, includeUsage: true }).chatModel('fake-model');
  }

  const turn = {
    text: 'Writing two files.',
    tool_calls: [
      { name: 'write_file', arguments: { path: 'a.txt', content: 'alpha "quoted"\n' } },
      { name: 'shell', arguments: { command: 'cat a.txt' } },
    ],
    usage: { prompt_tokens: 120, completion_tokens: 34 },
  };

  it('answers non-streaming requests with text and tool calls', async () => {
    const model = await start(scriptedReplies([turn]));
    const result = await generateText({ model, tools, prompt: 'do it', maxRetries: 0 });
    expect(result.text).toBe('Writing two files.');
    expect(result.toolCalls.map((call) => [call.toolCallId, call.toolName, call.input])).toEqual([
      ['call_0_0', 'write_file', { path: 'a.txt', content: 'alpha "quoted"\n' }],
      ['call_0_1', 'shell', { command: 'cat a.txt' }],
    ]);
    expect(result.finishReason).toBe('tool-calls');
    expect(result.usage).toMatchObject({ inputTokens: 120, outputTokens: 34 });
    expect(server!.requests).toHaveLength(1);
    expect(server!.requests[0]!.body).toMatchObject({ model: 'fake-model', messages: [{ role: 'user', content: 'do it' }] });
    expect(server!.requests[0]!.body.tools!.map((entry) => entry.function.name)).toEqual(['write_file', 'shell']);
  });

  it('streams text and tool-call deltas as SSE, ending with [DONE]', async () => {
    const model = await start(scriptedReplies([turn]));
    const result = streamText({ model, tools, prompt: 'do it', maxRetries: 0 });
    const types = new Set<string>();
    for await (const part of result.fullStream) types.add(part.type);
    expect(types).toContain('text-delta');
    expect(types).toContain('tool-input-delta');
    const step = await result.finalStep;
    expect(step.text).toBe('Writing two files.');
    expect(step.toolCalls.map((call) => call.input)).toEqual([{ path: 'a.txt', content: 'alpha "quoted"\n' }, { command: 'cat a.txt' }]);
    expect(step.usage).toMatchObject({ inputTokens: 120, outputTokens: 34 });
    expect(server!.requests[0]!.body).toMatchObject({ stream: true, stream_options: { include_usage: true } });
  });

  it('runs a multi-step tool loop, recording each request', async () => {
    const model = await start(scriptedReplies([{ tool_calls: [{ name: 'shell', arguments: { command: 'echo hi' } }] }, { text: 'The command printed hi.' }]));
    const result = await generateText({
      model,
      tools: { shell: tool({ description: 'Run a command', inputSchema: z.object({ command: z.string() }), execute: async () => 'hi\n' }) },
      prompt: 'say hi',
      maxRetries: 0,
      stopWhen: ({ steps }) => steps.length >= 3,
    });
    expect(result.text).toBe('The command printed hi.');
    const second = server!.requests[1]!.body.messages!;
    expect(second.map((message) => message.role)).toEqual(['user', 'assistant', 'tool']);
    expect(second[2]).toMatchObject({ tool_call_id: 'call_0_0' });
  });

  it('sends raw responses with their status and headers, and can drop the connection', async () => {
    const model = await start((_request, index) =>
      index === 0
        ? { status: 429, headers: { 'retry-after': '7' }, body: { error: { message: 'Too many requests', type: 'rate_limit_error' } } }
        : { disconnect: true },
    );
    const rateLimited = await generateText({ model, prompt: 'x', maxRetries: 0 }).catch((error: unknown) => error);
    expect(APICallError.isInstance(rateLimited)).toBe(true);
    expect(rateLimited).toMatchObject({ statusCode: 429, message: 'Too many requests', responseHeaders: { 'retry-after': '7' } });
    const dropped = await generateText({ model, prompt: 'x', maxRetries: 0 }).catch((error: unknown) => error);
    expect(APICallError.isInstance(dropped) && dropped.statusCode).toBe(undefined);
    expect(APICallError.isInstance(dropped) && dropped.isRetryable).toBe(true);
  });

  it('answers 500 once scripted replies run out, and 404 off its route', async () => {
    const model = await start(scriptedReplies([]));
    await expect(generateText({ model, prompt: 'x', maxRetries: 0 })).rejects.toMatchObject({ statusCode: 500 });
    const response = await fetch(`${server!.baseUrl}/models`);
    expect(response.status).toBe(404);
    await response.body?.cancel();
  });
});
