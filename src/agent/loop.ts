// The agent loop. It runs in the worker, outside the sandbox: one model call per step (through the AI SDK, tools
// declared without `execute` so the SDK never runs them), then each tool call executed through sandboxd by
// run-tool.ts, recorded, and fed back. It ends when the model calls `finish` (complete), at the step limit, when the
// model twice in a row answers without a tool call, or when a model call fails for good (error). The calls of one
// turn run in order, all of them, even when `finish` is among them; the job ends after the turn. Cancellation
// rejects with the signal's reason. No tool failure, malformed call or unknown tool ever crashes the loop: each
// becomes an error result the model reads.
//
// Events written (EventSink), all with the step they belong to (0 before the first model turn):
//   user-message {text, source: 'task' | 'nudge'}
//   model-turn   {text, reasoning?, tool_calls: [{call_id, name, args}], finish_reason, usage: {input_tokens, output_tokens}, duration_ms}
//   model-retry  {attempt, delay_ms, error}
//   tool-call    {call_id, name, args}
//   tool-result  {call_id, name, is_error, output, omitted_chars, duration_ms}
// `output` is whole; the model saw it cut to modelOutputMaxChars (omitted_chars says by how much). The message
// history is a History, which historyFromEvents() rebuilds from exactly these events.
import { performance } from 'node:perf_hooks';
import { generateText, streamText, type LanguageModel, type LanguageModelUsage, type ToolSet, type TypedToolCall } from 'ai';
import type { Logger } from 'pino';
import type { EventSink } from '../jobs/event-log.ts';
import { History, type HistoryToolCall } from './history.ts';
import { buildSystemPrompt } from './prompt.ts';
import { ModelCallError, withModelRetry, type RetryOptions } from './retry.ts';
import { modelTools } from './tools/definitions.ts';
import { runTool, type SandboxdCaller } from './tools/run-tool.ts';

export interface RunAgentOptions {
  jobId: string;
  /** The user's task, verbatim: the first user message. */
  task: string;
  /** An AI SDK language model (see models/resolve-model.ts). */
  model: LanguageModel;
  /** sandboxd, where every tool call runs. */
  client: SandboxdCaller;
  events: EventSink;
  /** Model turns allowed before the job ends with an error. */
  maxSteps: number;
  /** Stream model responses (streamText) or not (generateText). */
  stream: boolean;
  retry: RetryOptions;
  signal: AbortSignal;
  logger?: Pick<Logger, 'info' | 'warn' | 'debug'>;
}

export interface AgentUsage {
  input_tokens: number;
  output_tokens: number;
}

export type AgentOutcome =
  | { status: 'complete'; summary: string; steps: number; usage: AgentUsage }
  | { status: 'error'; error: string; steps: number; usage: AgentUsage };

export const nudgeMessage =
  'Your last reply did not call any tool. Every reply must call a tool: continue the task with the tools, ' +
  'or, if the task is done, call finish with a summary of what you did.';

/** One model turn, normalized across generateText and streamText. */
interface ModelTurn {
  text: string;
  reasoning: string | undefined;
  toolCalls: HistoryToolCall[];
  finishReason: string;
  usage: AgentUsage;
}

export async function runAgent(options: RunAgentOptions): Promise<AgentOutcome> {
  const { task, events, signal, maxSteps } = options;
  const log = options.logger;
  const system = buildSystemPrompt();
  const tools = modelTools();
  const history = new History();
  const usage: AgentUsage = { input_tokens: 0, output_tokens: 0 };
  let steps = 0;
  let nudged = false;

  signal.throwIfAborted();
  history.addUser(task, 'task');
  events.append('user-message', 0, { text: task, source: 'task' });

  while (steps < maxSteps) {
    const step = steps + 1;
    let turn: ModelTurn;
    const started = performance.now();
    try {
      turn = await withModelRetry(() => callModel(options, system, history, tools), {
        ...options.retry,
        signal,
        onRetry: ({ attempt, delayMs, error }) => {
          log?.warn({ jobId: options.jobId, step, attempt, delayMs, error }, 'model call failed: retrying');
          events.append('model-retry', step, { attempt, delay_ms: delayMs, error });
        },
      });
    } catch (error) {
      if (signal.aborted) throw signal.reason;
      if (error instanceof ModelCallError) {
        log?.warn({ jobId: options.jobId, step, error: error.message }, 'model call failed');
        return { status: 'error', error: error.message, steps, usage };
      }
      throw error;
    }
    steps = step;
    usage.input_tokens += turn.usage.input_tokens;
    usage.output_tokens += turn.usage.output_tokens;
    events.append('model-turn', step, {
      text: turn.text,
      ...(turn.reasoning === undefined ? {} : { reasoning: turn.reasoning }),
      tool_calls: turn.toolCalls.map((call) => ({ call_id: call.callId, name: call.name, args: call.args })),
      finish_reason: turn.finishReason,
      usage: turn.usage,
      duration_ms: Math.round(performance.now() - started),
    });
    history.addAssistant(turn.text, turn.toolCalls);
    log?.debug({ jobId: options.jobId, step, toolCalls: turn.toolCalls.length, finishReason: turn.finishReason }, 'model turn');

    if (turn.toolCalls.length === 0) {
      if (nudged) {
        const said = turn.text.trim() === '' ? 'an empty reply' : `"${excerpt(turn.text, 300)}"`;
        return { status: 'error', error: `the model stopped calling tools (twice in a row, without calling finish); its last reply: ${said}`, steps, usage };
      }
      nudged = true;
      history.addUser(nudgeMessage, 'nudge');
      events.append('user-message', step, { text: nudgeMessage, source: 'nudge' });
      continue;
    }
    nudged = false;

    let summary: string | undefined;
    for (const call of turn.toolCalls) {
      events.append('tool-call', step, { call_id: call.callId, name: call.name, args: call.args });
      const result = await runTool(options.client, { name: call.name, input: call.args }, { signal });
      events.append('tool-result', step, {
        call_id: call.callId,
        name: call.name,
        is_error: result.isError,
        output: result.output,
        omitted_chars: result.omittedChars,
        duration_ms: result.durationMs,
      });
      history.addToolResult(call.callId, call.name, result.isError, result.output);
      if (result.finishSummary !== undefined && summary === undefined) summary = result.finishSummary;
    }
    if (summary !== undefined) {
      log?.info({ jobId: options.jobId, step, usage }, 'agent finished');
      return { status: 'complete', summary, steps, usage };
    }
  }
  return { status: 'error', error: `step limit (${maxSteps}) reached before the agent called finish`, steps, usage };
}

async function callModel(options: RunAgentOptions, system: string, history: History, tools: ToolSet): Promise<ModelTurn> {
  const request = {
    model: options.model,
    instructions: system,
    messages: history.toMessages(),
    tools,
    maxRetries: 0,
    abortSignal: options.signal,
  };
  if (!options.stream) {
    const result = await generateText(request);
    const step = result.finalStep;
    return normalize(step.text, step.reasoningText, step.toolCalls, step.finishReason, step.usage);
  }
  const result = streamText({ ...request, onError: () => {} });
  // streamText reports failures as stream parts; the first one is the call's error.
  for await (const part of result.fullStream) {
    if (part.type === 'error') throw part.error;
    if (part.type === 'abort') throw options.signal.reason ?? new Error('model stream aborted');
  }
  const step = await result.finalStep;
  return normalize(step.text, step.reasoningText, step.toolCalls, step.finishReason, step.usage);
}

function normalize(text: string, reasoning: string | undefined, toolCalls: Array<TypedToolCall<ToolSet>>, finishReason: string, usage: LanguageModelUsage): ModelTurn {
  return {
    text,
    reasoning: reasoning === undefined || reasoning === '' ? undefined : reasoning,
    // Invalid calls (unknown tool, arguments that fail the schema or are not JSON) are kept as the model sent
    // them: run-tool.ts answers each with an error result that says how to fix it.
    toolCalls: toolCalls.map((call) => ({ callId: call.toolCallId, name: call.toolName, args: call.input as unknown })),
    finishReason,
    usage: { input_tokens: usage.inputTokens ?? 0, output_tokens: usage.outputTokens ?? 0 },
  };
}

function excerpt(text: string, maxChars: number): string {
  const trimmed = text.trim();
  return trimmed.length <= maxChars ? trimmed : `${trimmed.slice(0, maxChars)}...`;
}
