// A real HTTP server on 127.0.0.1 that speaks the OpenAI chat-completions API (`POST /v1/chat/completions`), for
// tests that drive the agent loop through a real provider (@ai-sdk/openai-compatible) over a real socket. A policy
// function decides each reply: an assistant turn (text and/or tool calls, sent as SSE chunks when the request asks
// for `stream: true`, else as one JSON body), a raw HTTP response (to inject 429s and 500s with headers), or a
// dropped connection (a network error). Every request is recorded, parsed, so tests can inspect what was sent.
// With `countTokens`, every chat request is also measured the way OpenAI counts a chat prompt (each message's
// fields plus framing, and the tool definitions), and that count is what the reply reports as prompt_tokens. With
// `embed`, it also serves `POST /v1/embeddings` with the vectors that function gives.
// Test-only: it listens on loopback, port 0, and must be closed by the test that starts it.
import { createServer, type IncomingHttpHeaders, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

/** One request the server received. `body` is the parsed JSON (or the raw text when it was not JSON). */
export interface RecordedRequest {
  method: string;
  path: string;
  headers: IncomingHttpHeaders;
  body: ChatCompletionRequestBody;
  /** The prompt's tokens, when the server was started with countTokens. */
  promptTokens?: number;
}

export interface ServerOptions {
  /** Measures each chat request (see measurePrompt) and reports the count as the reply's prompt_tokens. */
  countTokens?: (text: string) => number;
  /** Serves POST /v1/embeddings: the vector for each input. */
  embed?: (input: string) => number[];
}

/**
 * A chat request's prompt tokens as OpenAI counts them: 3 per message plus every string field in it (role,
 * content or its text parts, tool calls' ids, names and argument text, tool_call_id), 3 to prime the reply, and the
 * tool definitions as JSON. The same tokenizer the server under test uses makes the numbers comparable.
 */
export function measurePrompt(body: ChatCompletionRequestBody, countTokens: (text: string) => number): number {
  const strings = (value: unknown): string[] => {
    if (typeof value === 'string') return [value];
    if (Array.isArray(value)) return value.flatMap(strings);
    if (typeof value === 'object' && value !== null) return Object.values(value).flatMap(strings);
    return [];
  };
  let total = 3;
  for (const message of body.messages ?? []) total += 3 + strings(message).reduce((sum, text) => sum + countTokens(text), 0);
  if (body.tools !== undefined && body.tools.length > 0) total += countTokens(JSON.stringify(body.tools));
  return total;
}

/** The parts of an OpenAI chat-completions request body that tests look at. */
export interface ChatCompletionRequestBody {
  model?: string;
  stream?: boolean;
  messages?: Array<{ role: string; content?: unknown; tool_calls?: unknown; tool_call_id?: string }>;
  tools?: Array<{ type: string; function: { name: string; description?: string; parameters?: unknown } }>;
  [key: string]: unknown;
}

/** An assistant turn. `arguments` given as an object is JSON-encoded; as a string it is sent verbatim. */
export interface AssistantReply {
  text?: string;
  tool_calls?: Array<{ id?: string; name: string; arguments: string | Record<string, unknown> }>;
  /** Default: `tool_calls` when there are tool calls, else `stop`. */
  finish_reason?: string;
  /** Default: a rough count from the request and reply sizes. */
  usage?: { prompt_tokens: number; completion_tokens: number };
}

/** A raw HTTP response, e.g. `{status: 429, headers: {'retry-after': '1'}, body: {error: {...}}}`. */
export interface RawResponse {
  status: number;
  headers?: Record<string, string>;
  /** An object is sent as JSON; a string verbatim. */
  body?: unknown;
}

/** Closes the connection without answering: the client sees a network error. */
export interface Disconnect {
  disconnect: true;
}

export type Reply = AssistantReply | RawResponse | Disconnect;
/** Decides the reply to a request; `index` counts chat-completion requests from 0. */
export type ReplyPolicy = (request: RecordedRequest, index: number) => Reply | Promise<Reply>;

export interface OpenAICompatibleServer {
  /** e.g. `http://127.0.0.1:41234/v1`: what @ai-sdk/openai-compatible takes as `baseURL`. */
  readonly baseUrl: string;
  /** Every chat-completion request received, in order. */
  readonly requests: RecordedRequest[];
  close(): Promise<void>;
}

/** A policy that answers the n-th request with `replies[n]`, and with a 500 once they run out. */
export function scriptedReplies(replies: Reply[]): ReplyPolicy {
  return (_request, index) =>
    replies[index] ?? { status: 500, body: { error: { message: `fake server: no reply scripted for request ${index}`, type: 'server_error' } } };
}

export async function startOpenAICompatibleServer(policy: ReplyPolicy, options: ServerOptions = {}): Promise<OpenAICompatibleServer> {
  const requests: RecordedRequest[] = [];
  let counter = 0;

  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const path = (req.url ?? '/').split('?')[0] ?? '/';
      if (req.method === 'POST' && path === '/v1/embeddings' && options.embed !== undefined) {
        const embed = options.embed;
        try {
          const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { input: string | string[]; model?: string };
          const inputs = Array.isArray(body.input) ? body.input : [body.input];
          sendJson(res, 200, {
            object: 'list',
            data: inputs.map((input, index) => ({ object: 'embedding', index, embedding: embed(input) })),
            model: body.model ?? 'fake-embedding',
            usage: { prompt_tokens: inputs.length, total_tokens: inputs.length },
          });
        } catch (error) {
          sendJson(res, 400, { error: { message: `fake server: bad embeddings request: ${String(error)}`, type: 'invalid_request_error' } });
        }
        return;
      }
      if (req.method !== 'POST' || path !== '/v1/chat/completions') {
        sendJson(res, 404, { error: { message: `fake server: no route ${req.method} ${path}`, type: 'invalid_request_error' } });
        return;
      }
      const text = Buffer.concat(chunks).toString('utf8');
      let body: ChatCompletionRequestBody;
      try {
        body = JSON.parse(text) as ChatCompletionRequestBody;
      } catch {
        sendJson(res, 400, { error: { message: 'fake server: request body is not JSON', type: 'invalid_request_error' } });
        return;
      }
      const recorded: RecordedRequest = { method: req.method, path, headers: req.headers, body, ...(options.countTokens ? { promptTokens: measurePrompt(body, options.countTokens) } : {}) };
      requests.push(recorded);
      const index = counter++;
      Promise.resolve()
        .then(() => policy(recorded, index))
        .then((reply) => respond(res, recorded, reply, index))
        .catch((error: unknown) => sendJson(res, 500, { error: { message: `fake server policy threw: ${String(error)}`, type: 'server_error' } }));
    });
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as AddressInfo;

  return {
    baseUrl: `http://127.0.0.1:${port}/v1`,
    requests,
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.close((error) => (error ? reject(error) : resolve()));
        server.closeAllConnections();
      }),
  };
}

function respond(res: ServerResponse, request: RecordedRequest, reply: Reply, index: number): void {
  if ('disconnect' in reply) {
    res.socket?.destroy();
    return;
  }
  if ('status' in reply) {
    const body = reply.body === undefined ? '' : typeof reply.body === 'string' ? reply.body : JSON.stringify(reply.body);
    res.writeHead(reply.status, { 'content-type': 'application/json', ...reply.headers });
    res.end(body);
    return;
  }
  const id = `chatcmpl-${index}`;
  const created = Math.floor(Date.now() / 1000);
  const model = request.body.model ?? 'fake-model';
  const toolCalls = (reply.tool_calls ?? []).map((call, position) => ({
    id: call.id ?? `call_${index}_${position}`,
    type: 'function' as const,
    function: { name: call.name, arguments: typeof call.arguments === 'string' ? call.arguments : JSON.stringify(call.arguments) },
  }));
  const finishReason = reply.finish_reason ?? (toolCalls.length > 0 ? 'tool_calls' : 'stop');
  const completionTokens = reply.usage?.completion_tokens ?? Math.max(1, Math.ceil((JSON.stringify(toolCalls).length + (reply.text ?? '').length) / 4));
  const promptTokens = reply.usage?.prompt_tokens ?? request.promptTokens ?? Math.max(1, Math.ceil(JSON.stringify(request.body.messages ?? []).length / 4));
  const usage = { prompt_tokens: promptTokens, completion_tokens: completionTokens, total_tokens: promptTokens + completionTokens };

  if (request.body.stream !== true) {
    sendJson(res, 200, {
      id,
      object: 'chat.completion',
      created,
      model,
      choices: [
        {
          index: 0,
          message: { role: 'assistant', content: reply.text ?? null, ...(toolCalls.length > 0 ? { tool_calls: toolCalls } : {}) },
          finish_reason: finishReason,
        },
      ],
      usage,
    });
    return;
  }

  res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive' });
  const chunk = (choices: unknown[], extra: Record<string, unknown> = {}) =>
    res.write(`data: ${JSON.stringify({ id, object: 'chat.completion.chunk', created, model, choices, ...extra })}\n\n`);
  chunk([{ index: 0, delta: { role: 'assistant', content: '' }, finish_reason: null }]);
  // Text in a few pieces, tool-call arguments in a few pieces: the client has to reassemble both.
  for (const piece of split(reply.text ?? '', 3)) chunk([{ index: 0, delta: { content: piece }, finish_reason: null }]);
  toolCalls.forEach((call, position) => {
    chunk([{ index: 0, delta: { tool_calls: [{ index: position, id: call.id, type: 'function', function: { name: call.function.name, arguments: '' } }] }, finish_reason: null }]);
    for (const piece of split(call.function.arguments, 3)) {
      chunk([{ index: 0, delta: { tool_calls: [{ index: position, function: { arguments: piece } }] }, finish_reason: null }]);
    }
  });
  chunk([{ index: 0, delta: {}, finish_reason: finishReason }]);
  chunk([], { usage });
  res.end('data: [DONE]\n\n');
}

function split(text: string, parts: number): string[] {
  if (text === '') return [];
  const size = Math.ceil(text.length / parts);
  const pieces: string[] = [];
  for (let start = 0; start < text.length; start += size) pieces.push(text.slice(start, start + size));
  return pieces;
}

function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}
