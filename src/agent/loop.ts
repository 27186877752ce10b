// The agent loop. It runs in the worker, outside the sandbox: one model call per step (through the AI SDK, tools
// declared without `execute` so the SDK never runs them), then each tool call executed through sandboxd by
// run-tool.ts, recorded, and fed back. It ends when the model calls `finish` (complete), at the step limit, when the
// model twice in a row answers without a tool call, or when a model call fails for good (error). The calls of one
// turn run in order, all of them, even when `finish` is among them; the job ends after the turn. Cancellation
// rejects with the signal's reason. No tool failure, malformed call or unknown tool ever crashes the loop: each
// becomes an error result the model reads.
//
// Every prompt is built from the job's context store (agent/context/prompt-builder.ts), under the model's token
// budget: the loop keeps no history of its own. So a job whose worker died continues from its store: the task is
// not sent again, the last turn's calls that never started run now, those that started but never returned are
// answered as interrupted (never run twice: their effects are unknown), and the next step follows the last one.
//
// Events written (EventSink, which must write into the context store), each with its step (0 before the first turn):
//   user-message    {text, source: 'task' | 'nudge' | 'client'}   ('client': POST /jobs/:id/messages)
//   model-turn      {text, reasoning?, tool_calls: [{call_id, name, args}], finish_reason, usage: {input_tokens, output_tokens},
//                    cost_usd, context: {window, budget, prompt_tokens, max_output_tokens, ...}, duration_ms}
//   model-retry     {attempt, delay_ms, error}
//   tool-call       {call_id, name, args, handle}
//   tool-result     {call_id, name, is_error, output, omitted_chars, duration_ms, handle, limits_hit?, images?: [{path, media_type, width, height, bytes}],
//                    dropped_chars? (the context store kept only the output's beginning and end: limits.context_mb)}
//   log             {level, limit, message}   (the worker: a cap on a host file was reached, see jobs/run-job.ts)
//   context-summary {text, through_seq, from_step, to_step, level, method: 'model' | 'fallback', usage?, error?}
// `output` is whole; the prompt shows it cut head and tail, or masked, with its `handle` for recall. Images (gui
// screenshots) are files in the job's directory (context/images.ts); the prompt sends the latest ones to models with vision.
import { performance } from 'node:perf_hooks';
import { generateText, streamText, type LanguageModel, type LanguageModelUsage, type ToolSet, type TypedToolCall } from 'ai';
import type { Logger } from 'pino';
import { z } from 'zod';
import type { EventSink } from '../jobs/event-log.ts';
import type { ContextStore, StoredEvent } from './context/context-store.ts';
import type { ImageRef, ImageStore, ToolImage } from './context/images.ts';
import { costUsd, type ModelInfo } from './context/model-info.ts';
import { ContextOverflowError, PromptBuilder, type AssembledPrompt } from './context/prompt-builder.ts';
import { Recall } from './context/recall.ts';
import type { SummaryAnswer, SummaryRequest } from './context/summarize.ts';
import type { HistoryToolCall } from './history.ts';
import { buildSystemPrompt } from './prompt.ts';
import { ModelCallError, withModelRetry, type RetryOptions } from './retry.ts';
import { modelTools, toolDefinitions, toolNames, type ToolName } from './tools/definitions.ts';
import { runTool, type LimitWatch, type RunToolOptions, type SandboxdCaller } from './tools/run-tool.ts';

export interface RunAgentOptions {
  jobId: string;
  /** The user's task, verbatim: the first user message. */
  task: string;
  /** An AI SDK language model (see models/resolve-model.ts). */
  model: LanguageModel;
  /** sandboxd, where every tool call runs. */
  client: SandboxdCaller;
  /** The sandbox's resource limits and counters: a call that runs into one gets a note saying which. */
  limits?: LimitWatch | undefined;
  /** The destinations the sandbox may reach (its egress allow-list), for the system prompt; none: no network. */
  networkAllow?: readonly string[] | undefined;
  /** Told of every file operation the tools make (the job's audit log links it to the current step). */
  onFileOperation?: RunToolOptions['onFileOperation'];
  /** Where events are recorded; everything appended here must land in `context`. */
  events: EventSink;
  /** The job's context store: the one source of every prompt, and of the state a restarted job continues from. */
  context: ContextStore;
  /** Where images that tools return are stored (the job's directory); without it they are dropped, their text kept. */
  images?: ImageStore | undefined;
  /** The model's window (the one in effect for this job), longest answer and price (agent/context/model-info.ts). */
  modelInfo: ModelInfo;
  /** Condense older steps with model-written summaries (default); false: with the digest only (script models). */
  summarize?: boolean;
  /** Model turns allowed (in this run) before the job ends with an error. */
  maxSteps: number;
  /**
   * Where this run begins, when a message continued the job after it had ended: the run's first event in the store
   * and the steps taken before it. The ended run's last turn is not resumed (its calls that never returned stay
   * unanswered, and prompts show them as interrupted), and maxSteps counts from here. Undefined: the job's first run.
   */
  runStart?: { seq: number; step: number } | undefined;
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

/** The answer recorded for a call that was running when its worker died. */
export const interruptedMessage =
  'This tool call was interrupted by a worker restart before it returned a result, and it was not run again: its effects, if any, are unknown. Check the state before retrying it.';

export async function runAgent(options: RunAgentOptions): Promise<AgentOutcome> {
  const { task, events, signal, maxSteps, context } = options;
  const log = options.logger;
  // Every job is offered every tool today; the prompt and the token count follow this one list if that changes.
  const offered = toolNames;
  const system = buildSystemPrompt({ networkAllow: options.networkAllow, tools: offered });
  const tools = modelTools(offered);
  const usage: AgentUsage = { input_tokens: 0, output_tokens: 0 };
  const builder = new PromptBuilder({
    store: context,
    sink: events,
    system,
    toolsJson: toolsJson(offered),
    window: options.modelInfo.contextWindow,
    maxInputTokens: options.modelInfo.maxInputTokens,
    modelMaxOutputTokens: options.modelInfo.maxOutputTokens,
    summarize: options.summarize === false ? undefined : (request, summarySignal) => summarizeWithModel(options, usage, request, summarySignal),
    logger: log,
    images: options.modelInfo.vision === true && options.images !== undefined ? { store: options.images, latest: latestImagesShown } : undefined,
  });
  const recall = new Recall(context, builder);
  const toolOptions: RunToolOptions = { signal, limits: options.limits, onFileOperation: options.onFileOperation, recall: (input, recallSignal) => recall.run(input, recallSignal) };

  /** Runs one call of a turn and records it; returns the finish summary when it is a valid finish. */
  const runCall = async (step: number, position: number, call: HistoryToolCall): Promise<string | undefined> => {
    const handle = callHandle(step, position);
    events.append('tool-call', step, { call_id: call.callId, name: call.name, args: call.args, handle });
    const result = await runTool(options.client, { name: call.name, input: call.args }, toolOptions);
    const images = await storeImages(options, handle, result.images);
    events.append('tool-result', step, {
      call_id: call.callId,
      name: call.name,
      is_error: result.isError,
      output: result.output,
      omitted_chars: result.omittedChars,
      duration_ms: result.durationMs,
      handle,
      ...(result.limitsHit === undefined ? {} : { limits_hit: result.limitsHit }),
      ...(images.length === 0 ? {} : { images }),
    });
    return result.finishSummary;
  };

  signal.throwIfAborted();
  const resumed = resumeState(context, options.runStart?.seq ?? 0);
  const stepLimit = (options.runStart?.step ?? 0) + maxSteps;
  let steps = resumed.steps;
  let nudged = resumed.nudged;
  if (!resumed.started) {
    events.append('user-message', 0, { text: task, source: 'task' });
  } else if (resumed.lastTurn !== undefined) {
    // Finish the turn the dead worker was in: never repeat a call that completed or may have had effects.
    log?.info({ jobId: options.jobId, step: steps }, 'resuming from the context store');
    let summary = resumed.lastTurn.finishSummary;
    for (const [position, call] of resumed.lastTurn.calls.entries()) {
      if (resumed.lastTurn.finished.has(call.callId)) continue;
      if (resumed.lastTurn.started.has(call.callId)) {
        events.append('tool-result', steps, { call_id: call.callId, name: call.name, is_error: true, output: interruptedMessage, omitted_chars: 0, duration_ms: 0, handle: callHandle(steps, position), interrupted: true });
        continue;
      }
      const finished = await runCall(steps, position, call);
      if (finished !== undefined && summary === undefined) summary = finished;
    }
    if (summary !== undefined) return { status: 'complete', summary, steps, usage };
    if (resumed.lastTurn.calls.length === 0 && !nudged) {
      nudged = true;
      events.append('user-message', steps, { text: nudgeMessage, source: 'nudge' });
    }
  }

  while (steps < stepLimit) {
    const step = steps + 1;
    let turn: ModelTurn;
    let prompt: AssembledPrompt;
    try {
      prompt = await builder.build(step, signal);
    } catch (error) {
      if (signal.aborted) throw signal.reason;
      if (error instanceof ContextOverflowError) return { status: 'error', error: error.message, steps, usage };
      throw error;
    }
    const started = performance.now();
    try {
      turn = await withModelRetry(() => callModel(options, prompt, tools), {
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
    // Images are billed as tokens with no characters behind them: leave them out of the chars-per-token calibration.
    context.observeUsage(prompt.chars, Math.max(0, turn.usage.input_tokens - prompt.imageTokens));
    events.append('model-turn', step, {
      text: turn.text,
      ...(turn.reasoning === undefined ? {} : { reasoning: turn.reasoning }),
      tool_calls: turn.toolCalls.map((call) => ({ call_id: call.callId, name: call.name, args: call.args })),
      finish_reason: turn.finishReason,
      usage: turn.usage,
      cost_usd: costUsd(options.modelInfo, turn.usage.input_tokens, turn.usage.output_tokens),
      context: prompt.stats,
      duration_ms: Math.round(performance.now() - started),
    });
    log?.debug({ jobId: options.jobId, step, toolCalls: turn.toolCalls.length, finishReason: turn.finishReason }, 'model turn');

    if (turn.toolCalls.length === 0) {
      if (nudged) {
        const said = turn.text.trim() === '' ? 'an empty reply' : `"${excerpt(turn.text, 300)}"`;
        return { status: 'error', error: `the model stopped calling tools (twice in a row, without calling finish); its last reply: ${said}`, steps, usage };
      }
      nudged = true;
      events.append('user-message', step, { text: nudgeMessage, source: 'nudge' });
      continue;
    }
    nudged = false;

    let summary: string | undefined;
    for (const [position, call] of turn.toolCalls.entries()) {
      const finished = await runCall(step, position, call);
      if (finished !== undefined && summary === undefined) summary = finished;
    }
    if (summary !== undefined) {
      log?.info({ jobId: options.jobId, step, usage }, 'agent finished');
      return { status: 'complete', summary, steps, usage };
    }
  }
  const inRun = options.runStart === undefined ? '' : ' in this run';
  return { status: 'error', error: `step limit (${maxSteps}${inRun}) reached before the agent called finish`, steps, usage };
}

/** How many of the latest tool images (screenshots) a prompt shows as images; older ones become a note. */
export const latestImagesShown = 2;

/** Stores a call's images (named by its handle); a failure to store one is logged and the image dropped. */
async function storeImages(options: RunAgentOptions, handle: string, images: ToolImage[] | undefined): Promise<ImageRef[]> {
  if (images === undefined || images.length === 0 || options.images === undefined) return [];
  const refs: ImageRef[] = [];
  for (const [index, image] of images.entries()) {
    try {
      refs.push(await options.images.save(index === 0 ? handle : `${handle}-${index + 1}`, image));
    } catch (error) {
      options.logger?.warn({ jobId: options.jobId, handle, error: error instanceof Error ? error.message : String(error) }, 'could not store a tool image');
    }
  }
  return refs;
}

/** A call's handle: how prompts and recall name its output (and its long arguments, with "-<argument>"). */
export function callHandle(step: number, position: number): string {
  return `step-${step}-call-${position + 1}`;
}

interface ResumeState {
  /** The task is recorded: this is a restart. */
  started: boolean;
  /** The last recorded model turn. */
  steps: number;
  nudged: boolean;
  lastTurn?: { calls: HistoryToolCall[]; started: Set<string>; finished: Set<string>; finishSummary: string | undefined };
}

/**
 * Where a job stands according to its store: the last turn, and which of its calls started and finished. A turn
 * before `runStartSeq` belongs to an earlier run, which has ended: there is nothing of it to resume.
 */
function resumeState(context: ContextStore, runStartSeq: number): ResumeState {
  const started = context.pinnedUserMessages(Number.MAX_SAFE_INTEGER).some((event) => event.data.source === 'task');
  const steps = context.lastStep();
  if (!started || steps === 0) return { started, steps, nudged: false };
  const events = context.eventsOfStep(steps);
  const turn = events.find((event) => event.type === 'model-turn');
  if (turn !== undefined && turn.seq < runStartSeq) return { started, steps, nudged: false };
  const calls = ((turn?.data.tool_calls ?? []) as Array<{ call_id: string; name: string; args: unknown }>).map((call) => ({ callId: call.call_id, name: call.name, args: call.args }));
  const startedCalls = new Set<string>();
  const finished = new Set<string>();
  let finishSummary: string | undefined;
  for (const event of events) {
    const callId = typeof event.data.call_id === 'string' ? event.data.call_id : '';
    if (event.type === 'tool-call') {
      startedCalls.add(callId);
      context.rememberCall(callId, typeof event.data.name === 'string' ? event.data.name : '', event.data.args);
    }
    if (event.type === 'tool-result') {
      finished.add(callId);
      if (event.data.name === 'finish' && event.data.is_error !== true) finishSummary ??= finishSummaryOf(calls, callId);
    }
  }
  const last: StoredEvent | undefined = events.at(-1);
  const nudged = last?.type === 'user-message' && last.data.source === 'nudge';
  return { started, steps, nudged, lastTurn: { calls, started: startedCalls, finished, finishSummary } };
}

function finishSummaryOf(calls: HistoryToolCall[], callId: string): string | undefined {
  const args = calls.find((call) => call.callId === callId)?.args;
  let object = args;
  if (typeof args === 'string') {
    try {
      object = JSON.parse(args) as unknown;
    } catch {
      return undefined;
    }
  }
  const summary = (object as { summary?: unknown } | undefined)?.summary;
  return typeof summary === 'string' ? summary : undefined;
}

/** The tool definitions as providers receive them, to count what they cost in every request. */
function toolsJson(names: readonly ToolName[]): string {
  return JSON.stringify(
    names.map((name) => ({ type: 'function', function: { name, description: toolDefinitions[name].description, parameters: z.toJSONSchema(toolDefinitions[name].inputSchema) } })),
  );
}

/** A summary for condensation: the same model, no tools, fewer retries (a failure falls back to the digest). */
async function summarizeWithModel(options: RunAgentOptions, usage: AgentUsage, request: SummaryRequest, signal: AbortSignal): Promise<SummaryAnswer> {
  return withModelRetry(
    async () => {
      const result = await generateText({
        model: options.model,
        instructions: request.system,
        messages: [{ role: 'user', content: request.prompt }],
        maxOutputTokens: request.maxOutputTokens,
        maxRetries: 0,
        abortSignal: signal,
      });
      const step = result.finalStep;
      const spent = { input_tokens: step.usage.inputTokens ?? 0, output_tokens: step.usage.outputTokens ?? 0 };
      usage.input_tokens += spent.input_tokens;
      usage.output_tokens += spent.output_tokens;
      return { text: step.text, finishReason: step.finishReason, usage: spent };
    },
    { maxRetries: Math.min(1, options.retry.maxRetries), baseMs: options.retry.baseMs, signal },
  );
}

async function callModel(options: RunAgentOptions, prompt: AssembledPrompt, tools: ToolSet): Promise<ModelTurn> {
  const request = {
    model: options.model,
    instructions: prompt.system,
    messages: prompt.messages,
    maxOutputTokens: prompt.maxOutputTokens,
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
