// The `script:` model: a LanguageModelV4 that replays a recorded trajectory of assistant turns from a JSON file, so
// that tests and offline demos run the real loop, tools and sandboxes with no LLM. Each call (generate or stream)
// returns the next turn; once the turns run out it answers with a text-only turn saying so, which the loop treats
// like any model that stops calling tools. Errors about a bad file never quote the file's content: a job may name a
// script file, and its bytes are not the caller's to read back.
//
// File format: {"turns": [{"text"?: string, "tool_calls"?: [{"name": string, "args": object | string}]}]}
// `args` as a string is sent verbatim as the call's JSON arguments, so a script can send malformed JSON on purpose.
import { readFileSync, statSync } from 'node:fs';
import type {
  LanguageModelV4,
  LanguageModelV4CallOptions,
  LanguageModelV4Content,
  LanguageModelV4FinishReason,
  LanguageModelV4GenerateResult,
  LanguageModelV4StreamPart,
  LanguageModelV4StreamResult,
  LanguageModelV4Usage,
} from '@ai-sdk/provider';
import { z } from 'zod';
import { WorkcellError, errorMessage } from '../../errors.ts';

const maxScriptBytes = 10 * 1024 * 1024;

const scriptToolCall = z.strictObject({
  name: z.string().min(1).describe('The tool to call, e.g. "shell".'),
  args: z
    .union([z.record(z.string(), z.unknown()), z.string()])
    .describe('The arguments: an object (JSON-encoded when replayed), or a string sent verbatim (may be malformed JSON on purpose).'),
});

const scriptTurn = z
  .strictObject({
    text: z.string().optional().describe('Text the assistant says in this turn.'),
    tool_calls: z.array(scriptToolCall).optional().describe('Tool calls the assistant makes in this turn, in order.'),
  })
  .refine((turn) => turn.text !== undefined || (turn.tool_calls?.length ?? 0) > 0, { message: 'a turn needs "text" or at least one tool call' });

export const scriptFileSchema = z.strictObject({
  description: z.string().optional().describe('What this trajectory does (ignored when replaying).'),
  turns: z.array(scriptTurn).min(1).describe('The assistant turns, replayed one per model call.'),
});
export type ScriptFile = z.infer<typeof scriptFileSchema>;
export type ScriptTurn = z.infer<typeof scriptTurn>;

/** Parses and validates a script file's text. The error message names problems by position, never by content. */
export function parseScript(text: string, label: string): ScriptFile {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (error) {
    // JSON.parse messages quote the offending text; keep only where it is.
    const where = /at position \d+(?: \(line \d+ column \d+\))?/.exec(errorMessage(error))?.[0];
    throw new WorkcellError('invalid_request', `script model file ${label} is not valid JSON${where === undefined ? '' : ` (${where})`}: fix the file`);
  }
  const parsed = scriptFileSchema.safeParse(json);
  if (!parsed.success) {
    const problems = parsed.error.issues.slice(0, 10).map((issue) => `${issue.path.length > 0 ? issue.path.join('.') : '(top level)'}: ${issue.message}`);
    throw new WorkcellError(
      'invalid_request',
      `script model file ${label} is not a valid trajectory (${problems.join('; ')}). ` +
        'Expected {"turns": [{"text"?: string, "tool_calls"?: [{"name": string, "args": object | string}]}]}',
    );
  }
  return parsed.data;
}

/** Reads and validates a script file. `label` is how errors name the file (the path the user gave). */
export function loadScript(path: string, label = path): ScriptFile {
  let size: number;
  try {
    const stat = statSync(path);
    if (!stat.isFile()) throw new WorkcellError('invalid_request', `script model file ${label} is not a regular file`);
    size = stat.size;
  } catch (error) {
    if (error instanceof WorkcellError) throw error;
    throw new WorkcellError('invalid_request', `script model file ${label} cannot be read: ${(error as NodeJS.ErrnoException).code ?? 'error'}`);
  }
  if (size > maxScriptBytes) throw new WorkcellError('invalid_request', `script model file ${label} is larger than ${maxScriptBytes} bytes`);
  return parseScript(readFileSync(path, 'utf8'), label);
}

export class ScriptModel implements LanguageModelV4 {
  readonly specificationVersion = 'v4';
  readonly provider = 'script';
  readonly modelId: string;
  readonly supportedUrls: Record<string, RegExp[]> = {};
  readonly #turns: ScriptTurn[];
  #next = 0;

  constructor(script: ScriptFile, modelId: string) {
    this.#turns = script.turns;
    this.modelId = modelId;
  }

  /**
   * Goes on from turn `index` (0-based): a job that resumes or continues after `index` model turns replays its
   * trajectory from where it stands, not from the start.
   */
  startAt(index: number): void {
    this.#next = Math.max(0, index);
  }

  /** Turns replayed so far (including the exhausted answer, once the script has run out). */
  get turnsReplayed(): number {
    return this.#next;
  }

  async doGenerate(options: LanguageModelV4CallOptions): Promise<LanguageModelV4GenerateResult> {
    options.abortSignal?.throwIfAborted();
    const { content, finishReason, usage } = this.#take(options);
    return { content, finishReason, usage, warnings: [], response: { id: `script-${this.#next}`, modelId: this.modelId, timestamp: new Date() } };
  }

  async doStream(options: LanguageModelV4CallOptions): Promise<LanguageModelV4StreamResult> {
    options.abortSignal?.throwIfAborted();
    const turnNumber = this.#next;
    const { content, finishReason, usage } = this.#take(options);
    const parts: LanguageModelV4StreamPart[] = [
      { type: 'stream-start', warnings: [] },
      { type: 'response-metadata', id: `script-${turnNumber + 1}`, modelId: this.modelId, timestamp: new Date() },
    ];
    for (const [position, part] of content.entries()) {
      if (part.type === 'text') {
        const id = `text-${position}`;
        parts.push({ type: 'text-start', id });
        for (const piece of pieces(part.text)) parts.push({ type: 'text-delta', id, delta: piece });
        parts.push({ type: 'text-end', id });
      } else if (part.type === 'tool-call') {
        parts.push({ type: 'tool-input-start', id: part.toolCallId, toolName: part.toolName });
        for (const piece of pieces(part.input)) parts.push({ type: 'tool-input-delta', id: part.toolCallId, delta: piece });
        parts.push({ type: 'tool-input-end', id: part.toolCallId });
        parts.push(part);
      }
    }
    parts.push({ type: 'finish', usage, finishReason });
    const stream = new ReadableStream<LanguageModelV4StreamPart>({
      start(controller) {
        for (const part of parts) controller.enqueue(part);
        controller.close();
      },
    });
    return { stream };
  }

  #take(options: LanguageModelV4CallOptions): { content: LanguageModelV4Content[]; finishReason: LanguageModelV4FinishReason; usage: LanguageModelV4Usage } {
    const index = this.#next++;
    const turn: ScriptTurn = this.#turns[index] ?? {
      text: `The script ${this.modelId} is exhausted: all ${this.#turns.length} recorded turns have been replayed and it has nothing more to do.`,
    };
    const content: LanguageModelV4Content[] = [];
    if (turn.text !== undefined && turn.text !== '') content.push({ type: 'text', text: turn.text });
    for (const [position, call] of (turn.tool_calls ?? []).entries()) {
      content.push({
        type: 'tool-call',
        toolCallId: `script_${index + 1}_${position + 1}`,
        toolName: call.name,
        input: typeof call.args === 'string' ? call.args : JSON.stringify(call.args),
      });
    }
    const hasToolCalls = (turn.tool_calls?.length ?? 0) > 0;
    return {
      content,
      finishReason: hasToolCalls ? { unified: 'tool-calls', raw: 'tool_calls' } : { unified: 'stop', raw: 'stop' },
      usage: estimateUsage(options, content),
    };
  }
}

/** Plausible token counts (about four characters a token), so that usage accounting has something to add up. */
function estimateUsage(options: LanguageModelV4CallOptions, content: LanguageModelV4Content[]): LanguageModelV4Usage {
  const inputTokens = Math.ceil((JSON.stringify(options.prompt).length + JSON.stringify(options.tools ?? []).length) / 4);
  const outputChars = content.reduce((sum, part) => sum + (part.type === 'text' ? part.text.length : part.type === 'tool-call' ? part.toolName.length + part.input.length : 0), 0);
  const outputTokens = Math.max(1, Math.ceil(outputChars / 4));
  return {
    inputTokens: { total: inputTokens, noCache: inputTokens, cacheRead: 0, cacheWrite: 0 },
    outputTokens: { total: outputTokens, text: outputTokens, reasoning: 0 },
  };
}

/** Splits text into a few deltas, as a real stream would deliver it. */
function pieces(text: string): string[] {
  if (text === '') return [];
  const size = Math.max(1, Math.ceil(text.length / 3));
  const out: string[] = [];
  for (let start = 0; start < text.length; start += size) out.push(text.slice(start, start + size));
  return out;
}
