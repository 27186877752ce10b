// Builds each model request from the context store under a token budget (DESIGN.md §6). What every prompt holds:
//   1. the system prompt and the tool definitions (counted, never cut);
//   2. the task and every later user instruction, verbatim ("pinned" once older steps are condensed);
//   3. the running summary of what was condensed, if anything was;
//   4. the most recent steps: verbatim (long tool outputs and long arguments cut head and tail, with a handle the
//      agent can pass to recall), older ones masked (each output replaced by a one-line stub naming its handle).
//      For models that take images, the latest tool images (gui screenshots, images.ts) go with their results as
//      images; older ones become a one-line note (they are many tokens each, and only the latest screen matters).
// The budget is a fraction (75 %) of the model's window, less for models whose input is capped below the window;
// the rest is left for the answer (maxOutputTokens is set to what remains).
//
// When the recent steps do not fit even with old outputs masked, older steps are condensed: the model folds them
// into the running summary (recursively: a summary that grows past its share is itself summarized), stored as a
// `context-summary` event. A summary call that fails, returns garbage or runs long falls back to a digest made
// without the model (one line per step, with handles), so a bad summary never costs the task or the budget.
import type { ModelMessage, TextPart, ToolCallPart, ToolResultPart } from 'ai';
import type { Logger } from 'pino';
import type { EventSink } from '../../jobs/event-log.ts';
import { errorMessage } from '../../errors.ts';
import { modelOutputMaxChars } from '../tools/definitions.ts';
import { describeCall, longArgumentChars, type ContextStore, type StoredEvent } from './context-store.ts';
import { imageRefsOf, imageTokens, type ImageStore } from './images.ts';
import { compressPrompt, cutMiddle, keepEnd, rejectSummary, summarizerSystemPrompt, updatePrompt, type Summarizer, type SummaryAnswer } from './summarize.ts';

/** Share of the window a prompt may fill; the rest is for the answer. */
export const promptFraction = 0.75;
/** Tokens added per message, tool call and tool result for the provider's framing (roles, ids, JSON). */
const overhead = { message: 6, toolCall: 16, toolResult: 12, reply: 8 };
/** Outputs no longer than this are never masked: the stub would not be shorter. */
const maskMinTokens = 60;

export interface PromptBuilderOptions {
  store: ContextStore;
  /** Where context-summary events are recorded (the job's sink, which writes into `store`); default: the store. */
  sink?: EventSink | undefined;
  system: string;
  /** The tool definitions as the provider receives them (JSON), to count what they cost. */
  toolsJson: string;
  window: number;
  maxInputTokens?: number | undefined;
  /** The model's longest answer. */
  modelMaxOutputTokens: number;
  /** Folds condensed steps into the summary; without it, condensation always uses the digest. */
  summarize?: Summarizer | undefined;
  logger?: Pick<Logger, 'info' | 'warn'> | undefined;
  /** For models that take images: where tool images are read from, and how many of the latest are sent. */
  images?: { store: Pick<ImageStore, 'load'>; latest: number } | undefined;
}

export interface PromptStats {
  window: number;
  budget: number;
  prompt_tokens: number;
  max_output_tokens: number;
  pinned_messages: number;
  summary_through_step: number | null;
  steps_verbatim: number;
  steps_masked: number;
}

export interface AssembledPrompt {
  system: string;
  messages: ModelMessage[];
  /** The whole request's tokens as counted here (system, tools, messages and framing). */
  estimatedTokens: number;
  /** Characters of the same, for calibrating an estimated count against what the provider reports. */
  chars: number;
  /** Tokens counted for images (part of estimatedTokens, with no characters in `chars`). */
  imageTokens: number;
  maxOutputTokens: number;
  stats: PromptStats;
}

export interface CondensationUsage {
  input_tokens: number;
  output_tokens: number;
}

interface Rendered {
  messages: ModelMessage[];
  tokens: number;
  chars: number;
  /** Of `tokens`, those of images sent. */
  imageTokens?: number;
}

type Unit =
  | { kind: 'user'; event: StoredEvent; firstSeq: number; lastSeq: number }
  | { kind: 'step'; step: number; turn: StoredEvent | undefined; results: StoredEvent[]; firstSeq: number; lastSeq: number };
type StepUnit = Extract<Unit, { kind: 'step' }>;

interface ToolCallRecord {
  call_id: string;
  name: string;
  args: unknown;
}

/** The prompt cannot fit the window even at its smallest (the task or the instructions are too long). */
export class ContextOverflowError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ContextOverflowError';
  }
}

export class PromptBuilder {
  readonly window: number;
  readonly budget: number;
  readonly #options: PromptBuilderOptions;
  readonly #store: ContextStore;
  readonly #sink: EventSink;
  readonly #fixedTokens: number;
  readonly #fixedChars: number;
  readonly #memo = new Map<string, Rendered>();
  readonly #views = new Map<string, string>();
  /** Where the visible head of a cut output ends: a bare `handle:` recall continues from there. */
  readonly #shownHead = new Map<string, number>();
  /** The image paths the prompt being planned sends as images (the latest ones; see #latestImages). */
  #shownImages = new Set<string>();
  #summaryFailures = 0;
  #summariesToSkip = 0;
  #lastCapChars = modelOutputMaxChars;

  constructor(options: PromptBuilderOptions) {
    this.#options = options;
    this.#store = options.store;
    this.#sink = options.sink ?? options.store;
    this.window = options.window;
    this.budget = Math.floor(Math.min(options.window * promptFraction, options.maxInputTokens ?? Number.POSITIVE_INFINITY));
    // Providers frame tool definitions in their own ways: 10 % over the JSON's count covers them.
    this.#fixedTokens = this.#count(options.system) + Math.ceil(this.#count(options.toolsJson) * 1.1) + overhead.message + overhead.reply;
    this.#fixedChars = options.system.length + options.toolsJson.length;
  }

  /** Tokens of the system prompt and tool definitions: what every request costs before any message. */
  get fixedTokens(): number {
    return this.#fixedTokens;
  }

  /** The most characters of one stored output a recall page should return, so that it is shown uncut. */
  get recallPageChars(): number {
    return Math.max(1000, Math.min(12_000, Math.floor(this.#lastCapChars * 0.9)));
  }

  shownHead(handle: string): number | undefined {
    return this.#shownHead.get(handle);
  }

  /**
   * The request for the model's next turn (`step`), condensing older steps first when they no longer fit.
   * Condensation writes context-summary events; `onUsage` receives the tokens its model calls spent.
   */
  async build(step: number, signal: AbortSignal): Promise<AssembledPrompt> {
    for (let round = 0; round < 6; round++) {
      const plan = this.#plan();
      if (plan.kind === 'fits') return plan.prompt;
      signal.throwIfAborted();
      if (plan.kind === 'compress') await this.#compressSummary(step, signal, plan.summary);
      else await this.#condense(step, signal, plan.units);
    }
    const plan = this.#plan();
    if (plan.kind === 'fits') return plan.prompt;
    throw new ContextOverflowError(`the prompt does not fit in ${this.budget} tokens (${promptFraction * 100} % of a ${this.window}-token window) even after condensing`);
  }

  // --- planning

  #plan(): { kind: 'fits'; prompt: AssembledPrompt } | { kind: 'condense'; units: StepUnit[] } | { kind: 'compress'; summary: StoredEvent } {
    const summary = this.#store.latestSummary();
    const through = summary === undefined ? 0 : numberOf(summary.data.through_seq);
    const pinned = this.#store.pinnedUserMessages(through).map((event) => this.#renderUser(event));
    const pinnedTokens = sum(pinned.map((rendered) => rendered.tokens));
    const summaryRendered = summary === undefined ? undefined : this.#renderSummary(summary);
    const summaryTokens = summaryRendered?.tokens ?? 0;
    const room = this.budget - this.#fixedTokens - pinnedTokens;
    if (room < 200) {
      throw new ContextOverflowError(
        `the task and instructions take ${pinnedTokens} tokens and the system prompt and tools ${this.#fixedTokens}: more than the prompt budget of ${this.budget} ` +
          `tokens (${promptFraction * 100} % of a ${this.window}-token window) allows. Use a model with a larger window, or set context_window if the model has one.`,
      );
    }
    const summaryBudget = this.#summaryBudget(pinnedTokens);
    if (summary !== undefined && summaryTokens > summaryBudget) return { kind: 'compress', summary };

    const units = toUnits(this.#store.tail(through));
    this.#shownImages = this.#latestImages(units);
    const tailBudget = room - summaryTokens;
    const fit = this.#fit(units, tailBudget);
    // Older steps are condensed when the recent ones do not fit with old outputs masked, or when the newest step
    // cannot be shown verbatim (the model must see its latest results).
    if (fit === undefined || (!fit.lastVerbatim && fit.verbatim + fit.masked > 0)) {
      const condense = this.#cut(units, tailBudget);
      if (condense.length > 0) return { kind: 'condense', units: condense };
      if (fit === undefined) throw new ContextOverflowError(`the latest step does not fit in the ${tailBudget} tokens left for recent steps, even with its outputs masked`);
    }

    const parts = [...pinned, ...(summaryRendered ? [summaryRendered] : []), ...fit.rendered];
    const tokens = this.#fixedTokens + sum(parts.map((part) => part.tokens));
    const chars = this.#fixedChars + sum(parts.map((part) => part.chars));
    const imageTokens = sum(parts.map((part) => part.imageTokens ?? 0));
    const margin = Math.ceil(tokens * (this.#store.counter.exact ? 0.03 : 0.08)) + 64;
    const maxOutputTokens = Math.max(64, Math.min(this.#options.modelMaxOutputTokens, this.window - tokens - margin));
    return {
      kind: 'fits',
      prompt: {
        system: this.#options.system,
        messages: parts.flatMap((part) => part.messages),
        estimatedTokens: tokens,
        chars,
        imageTokens,
        maxOutputTokens,
        stats: {
          window: this.window,
          budget: this.budget,
          prompt_tokens: tokens,
          max_output_tokens: maxOutputTokens,
          pinned_messages: pinned.length,
          summary_through_step: summary === undefined ? null : numberOf(summary.data.to_step),
          steps_verbatim: fit.verbatim,
          steps_masked: fit.masked,
        },
      },
    };
  }

  /** The summary's share of what the pinned messages leave: a fifth, at least 200 and at most 8000 tokens. */
  #summaryBudget(pinnedTokens: number): number {
    return Math.max(200, Math.min(8000, Math.floor((this.budget - this.#fixedTokens - pinnedTokens) * 0.2)));
  }

  /** The output cap for the verbatim steps: 30 % of the tail budget, in characters. */
  #capChars(tailBudget: number): number {
    const tokens = Math.max(128, Math.floor(tailBudget * 0.3));
    return Math.max(400, Math.min(modelOutputMaxChars, Math.floor(tokens * this.#store.counter.charsPerToken)));
  }

  /**
   * Fits the tail into `budget`: every step masked but the last, then as many recent steps verbatim as fit.
   * Undefined when even that does not fit.
   */
  #fit(units: Unit[], budget: number): { rendered: Rendered[]; verbatim: number; masked: number; lastVerbatim: boolean } | undefined {
    const capChars = this.#capChars(budget);
    this.#lastCapChars = capChars;
    const rendered: Rendered[] = units.map((unit) => (unit.kind === 'user' ? this.#renderUser(unit.event) : this.#renderStep(unit, 'masked', capChars)));
    const last = lastStepIndex(units);
    let total = sum(rendered.map((part) => part.tokens));
    if (total > budget) return undefined;
    if (last === undefined) return { rendered, verbatim: 0, masked: 0, lastVerbatim: true };
    const stepCount = units.filter((unit) => unit.kind === 'step').length;
    let verbatim = 0;
    // The newest step verbatim, shrinking its outputs if need be; then older ones while they fit.
    for (const cap of [capChars, Math.floor(capChars / 2), Math.floor(capChars / 4), 400]) {
      const full = this.#renderStep(units[last] as StepUnit, 'full', cap);
      if (total - rendered[last]!.tokens + full.tokens <= budget) {
        total += full.tokens - rendered[last]!.tokens;
        rendered[last] = full;
        verbatim = 1;
        break;
      }
    }
    if (verbatim === 1) {
      for (let index = last - 1; index >= 0; index--) {
        const unit = units[index]!;
        if (unit.kind !== 'step') continue;
        const full = this.#renderStep(unit, 'full', capChars);
        if (total - rendered[index]!.tokens + full.tokens > budget) break;
        total += full.tokens - rendered[index]!.tokens;
        rendered[index] = full;
        verbatim++;
      }
    }
    return { rendered, verbatim, masked: stepCount - verbatim, lastVerbatim: verbatim > 0 };
  }

  /** The oldest steps to condense: all but the newest ones that fill half the tail budget (masked). */
  #cut(units: Unit[], budget: number): StepUnit[] {
    const capChars = this.#capChars(budget);
    const last = lastStepIndex(units);
    let kept = 0;
    let first = units.length;
    for (let index = units.length - 1; index >= 0; index--) {
      const unit = units[index]!;
      const cost = unit.kind === 'user' ? this.#renderUser(unit.event).tokens : this.#renderStep(unit, index === last ? 'full' : 'masked', index === last ? Math.floor(capChars / 2) : capChars).tokens;
      if (index !== last && kept + cost > budget / 2) break;
      kept += cost;
      first = index;
    }
    return units.slice(0, first).filter((unit): unit is StepUnit => unit.kind === 'step');
  }

  // --- condensing

  async #condense(step: number, signal: AbortSignal, units: StepUnit[]): Promise<void> {
    let previous = this.#store.latestSummary();
    const pinnedTokens = sum(this.#store.pinnedUserMessages(units.at(-1)!.lastSeq).map((event) => this.#renderUser(event).tokens));
    const summaryBudget = this.#summaryBudget(pinnedTokens);
    if (previous !== undefined && this.#options.summarize !== undefined && this.#summariesToSkip === 0 && this.#tokensOf(previous) > summaryBudget * 0.6) {
      // Summaries of summaries: fold the grown summary into a shorter one before adding more to it.
      await this.#compressSummary(step, signal, previous);
      previous = this.#store.latestSummary();
    }
    let previousText = previous === undefined ? undefined : stringOf(previous.data.text);
    let level = previous === undefined ? 1 : Math.max(1, numberOf(previous.data.level));
    let remaining = units;
    let failure: string | undefined;

    if (this.#options.summarize !== undefined && this.#summariesToSkip === 0) {
      const task = this.#task();
      const target = Math.max(100, Math.floor(summaryBudget / 2));
      const fixed = this.#count(summarizerSystemPrompt) + this.#count(task) + (previousText === undefined ? 0 : this.#count(previousText)) + 200;
      const inputBudget = this.budget - fixed;
      if (inputBudget < 300) failure = 'no room for a summary request in the window';
      while (failure === undefined && remaining.length > 0) {
        const batch = this.#batch(remaining, inputBudget);
        const fromStep = batch[0]!.step;
        const toStep = batch.at(-1)!.step;
        const prompt = updatePrompt({ task, previous: previousText, steps: batch.map((unit) => this.#summaryView(unit, inputBudget)).join('\n\n'), fromStep, toStep, targetTokens: target });
        const answer = await this.#ask(prompt, summaryBudget, signal);
        if ('error' in answer) {
          failure = answer.error;
          break;
        }
        previousText = answer.text;
        this.#sink.append('context-summary', step - 1, {
          text: answer.text,
          through_seq: batch.at(-1)!.lastSeq,
          from_step: previous === undefined ? 1 : numberOf(previous.data.from_step) || 1,
          to_step: toStep,
          condensed_steps: [fromStep, toStep],
          level,
          method: 'model',
          usage: answer.usage,
        });
        remaining = remaining.slice(batch.length);
      }
    } else if (this.#summariesToSkip > 0) {
      this.#summariesToSkip--;
      failure = 'summaries are paused after failures';
    } else {
      failure = 'no summarizer';
    }
    if (failure === undefined) {
      this.#summaryFailures = 0;
      return;
    }
    if (this.#options.summarize !== undefined && failure !== 'summaries are paused after failures') {
      this.#summaryFailures++;
      this.#summariesToSkip = Math.min(8, 2 ** (this.#summaryFailures - 1));
      this.#options.logger?.warn({ jobId: this.#store.jobId, step, error: failure }, 'summarizing failed: condensing with a digest instead');
    }
    if (remaining.length === 0) return;
    // The fallback: the summary so far, then one line per condensed step; the oldest lines go first when it is long.
    const digest = remaining.map((unit) => digestLine(unit)).join('\n');
    let text = previousText === undefined ? `Steps condensed without a model summary (recall finds their details):\n${digest}` : `${previousText}\n${digest}`;
    const maxChars = Math.floor(summaryBudget * this.#store.counter.charsPerToken * 0.9);
    if (this.#count(text) > summaryBudget) {
      const headChars = Math.floor(maxChars * 0.4);
      const head = previousText !== undefined && previousText.length <= headChars ? previousText : undefined;
      const tail = keepEnd(head === undefined ? text : digest, head === undefined ? maxChars : maxChars - head.length, '[... older steps omitted from this summary; recall searches the full history ...]');
      text = head === undefined ? tail : `${head}\n${tail}`;
      while (this.#count(text) > summaryBudget && text.length > 200) text = keepEnd(text, Math.floor(text.length * 0.8), '[... older steps omitted ...]');
    }
    level = Math.max(1, level);
    const previousFrom = previous === undefined ? 1 : numberOf(previous.data.from_step) || 1;
    this.#sink.append('context-summary', step - 1, {
      text,
      through_seq: remaining.at(-1)!.lastSeq,
      from_step: previousFrom,
      to_step: remaining.at(-1)!.step,
      condensed_steps: [remaining[0]!.step, remaining.at(-1)!.step],
      level,
      method: 'fallback',
      error: failure,
    });
  }

  /** A summary that outgrew its share is summarized again (one level up), or cut to size when that fails. */
  async #compressSummary(step: number, signal: AbortSignal, summary: StoredEvent): Promise<void> {
    const through = numberOf(summary.data.through_seq);
    const pinnedTokens = sum(this.#store.pinnedUserMessages(through).map((event) => this.#renderUser(event).tokens));
    const summaryBudget = this.#summaryBudget(pinnedTokens);
    const text = stringOf(summary.data.text);
    const level = numberOf(summary.data.level) + 1;
    const base = { through_seq: through, from_step: numberOf(summary.data.from_step) || 1, to_step: numberOf(summary.data.to_step), level };
    if (this.#options.summarize !== undefined && this.#summariesToSkip === 0) {
      const prompt = compressPrompt({ task: this.#task(), summary: text, targetTokens: Math.max(100, Math.floor(summaryBudget / 3)) });
      const answer = this.#count(summarizerSystemPrompt) + this.#count(prompt) + 200 < this.budget ? await this.#ask(prompt, summaryBudget, signal) : { error: 'the summary is too long to send for compression' };
      if (!('error' in answer)) {
        this.#summaryFailures = 0;
        this.#sink.append('context-summary', step - 1, { text: answer.text, ...base, method: 'model', compressed: true, usage: answer.usage });
        return;
      }
      this.#summaryFailures++;
      this.#summariesToSkip = Math.min(8, 2 ** (this.#summaryFailures - 1));
      this.#options.logger?.warn({ jobId: this.#store.jobId, step, error: answer.error }, 'compressing the summary failed: cutting it instead');
    }
    const maxChars = Math.floor(summaryBudget * this.#store.counter.charsPerToken * 0.6);
    let cut = cutMiddle(text, maxChars, (omitted) => `\n[... ${omitted} characters of this summary omitted; recall searches the full history ...]\n`).text;
    while (this.#count(cut) > summaryBudget && cut.length > 200) cut = cutMiddle(cut, Math.floor(cut.length * 0.8), () => '\n[...]\n').text;
    this.#sink.append('context-summary', step - 1, { text: cut, ...base, method: 'fallback', compressed: true, error: 'summary compression unavailable' });
  }

  async #ask(prompt: string, maxSummaryTokens: number, signal: AbortSignal): Promise<{ text: string; usage: SummaryAnswer['usage'] } | { error: string }> {
    const inputTokens = this.#count(summarizerSystemPrompt) + this.#count(prompt) + 2 * overhead.message + overhead.reply;
    const margin = Math.ceil(inputTokens * (this.#store.counter.exact ? 0.03 : 0.08)) + 64;
    const maxOutputTokens = Math.min(this.#options.modelMaxOutputTokens, this.window - inputTokens - margin, Math.ceil(maxSummaryTokens * 1.5) + 64);
    if (inputTokens > this.budget || maxOutputTokens < 64) return { error: `the summary request (${inputTokens} tokens) does not fit the window` };
    let answer: SummaryAnswer;
    try {
      answer = await this.#options.summarize!({ system: summarizerSystemPrompt, prompt, maxOutputTokens }, signal);
    } catch (error) {
      signal.throwIfAborted();
      return { error: `the summary call failed: ${errorMessage(error)}` };
    }
    const problem = rejectSummary(answer, maxSummaryTokens, (text) => this.#count(text));
    if (problem !== undefined) return { error: problem };
    return { text: answer.text.trim(), usage: answer.usage };
  }

  /** As many units (oldest first, at least one) as fit the summarizer's input budget. */
  #batch(units: StepUnit[], inputBudget: number): StepUnit[] {
    const batch: StepUnit[] = [];
    let tokens = 0;
    for (const unit of units) {
      const cost = this.#count(this.#summaryView(unit, inputBudget)) + 4;
      if (batch.length > 0 && tokens + cost > inputBudget) break;
      batch.push(unit);
      tokens += cost;
    }
    return batch;
  }

  /** A step as the summarizer reads it: the agent's words, each call and its result, cut to size. */
  #summaryView(unit: StepUnit, inputBudget: number): string {
    const key = `${unit.firstSeq}:${unit.lastSeq}:${inputBudget}`;
    const memo = this.#views.get(key);
    if (memo !== undefined) return memo;
    const lines = [`## Step ${unit.step}`];
    const text = stringOf(unit.turn?.data.text).trim();
    if (text !== '') lines.push(`Agent: ${cutMiddle(text, 1500, (omitted) => ` [... ${omitted} chars ...] `).text}`);
    const results = new Map(unit.results.map((result) => [stringOf(result.data.call_id), result]));
    for (const call of callsOf(unit.turn)) {
      lines.push(`Call: ${call.name} ${cutMiddle(typeof call.args === 'string' ? call.args : JSON.stringify(call.args ?? {}), 400, (omitted) => ` [... ${omitted} chars ...] `).text}`);
      const result = results.get(call.call_id);
      if (result === undefined) lines.push('Result: (none: interrupted)');
      else lines.push(`Result (${result.data.is_error === true ? 'error' : 'ok'}): ${cutMiddle(stringOf(result.data.output), 1500, (omitted) => `\n[... ${omitted} chars omitted ...]\n`).text}`);
    }
    let view = lines.join('\n');
    const maxChars = Math.floor(inputBudget * this.#store.counter.charsPerToken * 0.8);
    if (view.length > maxChars) view = cutMiddle(view, maxChars, (omitted) => `\n[... ${omitted} chars omitted ...]\n`).text;
    if (this.#views.size > 5000) this.#views.clear();
    this.#views.set(key, view);
    return view;
  }

  #task(): string {
    const task = this.#store.pinnedUserMessages(Number.MAX_SAFE_INTEGER).find((event) => event.data.source === 'task');
    return stringOf(task?.data.text);
  }

  /** The paths of the latest `images.latest` images of successful tool results, newest first; none without vision. */
  #latestImages(units: Unit[]): Set<string> {
    const shown = new Set<string>();
    const latest = this.#options.images?.latest ?? 0;
    for (let index = units.length - 1; index >= 0 && shown.size < latest; index--) {
      const unit = units[index]!;
      if (unit.kind !== 'step') continue;
      for (const result of [...unit.results].reverse()) {
        if (result.data.is_error === true) continue;
        for (const ref of imageRefsOf(result.data).reverse()) if (shown.size < latest) shown.add(ref.path);
      }
    }
    return shown;
  }

  // --- rendering

  #count(text: string): number {
    return this.#store.counter.count(text);
  }

  #tokensOf(event: StoredEvent): number {
    return this.#store.counter.exact ? event.tokens : Math.ceil(event.chars / this.#store.counter.charsPerToken);
  }

  #renderUser(event: StoredEvent): Rendered {
    const text = stringOf(event.data.text);
    return { messages: [{ role: 'user', content: text }], tokens: this.#tokensOf(event) + overhead.message, chars: text.length };
  }

  #renderSummary(summary: StoredEvent): Rendered {
    const from = numberOf(summary.data.from_step) || 1;
    const to = numberOf(summary.data.to_step);
    const header = `[Context summary: steps ${from} to ${to} of this job were condensed to fit the context window. This is what they did; their full record (every command, output and file) is kept, and the recall tool searches it.]\n\n`;
    const text = header + stringOf(summary.data.text);
    return { messages: [{ role: 'user', content: text }], tokens: this.#count(header) + this.#tokensOf(summary) + overhead.message, chars: text.length };
  }

  #renderStep(unit: StepUnit, level: 'full' | 'masked', capChars: number): Rendered {
    const unitImages = unit.results.flatMap((result) => imageRefsOf(result.data).map((ref) => ref.path));
    const shownHere = level === 'full' ? unitImages.filter((path) => this.#shownImages.has(path)) : [];
    const key = `${unit.firstSeq}:${unit.lastSeq}:${level}:${level === 'full' ? capChars : 0}:${this.#store.counter.charsPerToken}:${shownHere.join(',')}`;
    const memo = this.#memo.get(key);
    if (memo !== undefined) return memo;
    const calls = callsOf(unit.turn);
    const results = new Map(unit.results.map((result) => [stringOf(result.data.call_id), result]));
    const turnText = stringOf(unit.turn?.data.text);
    const textCut = level === 'full' ? cutMiddle(turnText, capChars, (omitted) => `\n[... ${omitted} characters of this message omitted ...]\n`) : cutMiddle(turnText, 600, (omitted) => ` [... ${omitted} characters omitted ...] `);
    const parts: Array<TextPart | ToolCallPart> = [];
    if (textCut.text !== '') parts.push({ type: 'text', text: textCut.text });
    let tokens = overhead.message;
    let chars = textCut.text.length;
    const argsCut: boolean[] = [];
    const resultParts: ToolResultPart[] = [];
    let imageTokensSent = 0;
    calls.forEach((call, position) => {
      const result = results.get(call.call_id);
      const handle = stringOf(result?.data.handle) || `step-${unit.step}-call-${position + 1}`;
      const args = renderArgs(call.args, handle, level, capChars);
      argsCut.push(args.cut);
      parts.push({ type: 'tool-call', toolCallId: call.call_id, toolName: call.name, input: args.value });
      tokens += overhead.toolCall + (args.cut ? this.#count(`${call.name} ${JSON.stringify(args.value)}`) : 0);
      chars += call.name.length + (args.cut ? JSON.stringify(args.value).length : typeof call.args === 'string' ? call.args.length : JSON.stringify(call.args ?? {}).length);
      let output: string;
      let outputTokens: number;
      let isError = true;
      if (result === undefined) {
        output = 'This tool call was interrupted before it returned a result; its effects, if any, are unknown. Check the state before retrying.';
        outputTokens = this.#count(output);
      } else {
        isError = result.data.is_error === true;
        const whole = stringOf(result.data.output);
        const wholeTokens = this.#tokensOf(result);
        if (level === 'masked' && wholeTokens > maskMinTokens) {
          output = maskStub(call, unit.step, whole, handle);
          outputTokens = this.#count(output);
        } else if (whole.length > capChars && call.name !== 'recall') {
          const cut = cutMiddle(whole, capChars, (omitted) => `\n\n[output truncated: ${formatCount(omitted)} of ${formatCount(whole.length)} characters omitted here; recall("handle:${handle}") reads them, or recall a query to search them]\n\n`);
          output = cut.text;
          outputTokens = this.#count(output);
          this.#shownHead.set(handle, cut.headEnd);
        } else {
          output = whole;
          outputTokens = wholeTokens;
        }
      }
      // Images: the latest go along as images (models with vision only); the others are named in a note.
      const files: Array<{ type: 'file'; mediaType: string; data: { type: 'data'; data: string } }> = [];
      const refs = result === undefined || level === 'masked' || this.#options.images === undefined ? [] : imageRefsOf(result.data);
      for (const ref of refs) {
        const bytes = !isError && this.#shownImages.has(ref.path) ? this.#options.images?.store.load(ref.path) : undefined;
        if (bytes !== undefined) {
          files.push({ type: 'file', mediaType: ref.media_type, data: { type: 'data', data: bytes.toString('base64') } });
          const cost = imageTokens(ref.width, ref.height);
          outputTokens += cost;
          imageTokensSent += cost;
          continue;
        }
        const size = ref.width === undefined || ref.height === undefined ? '' : ` (${ref.width}x${ref.height})`;
        const again = call.name === 'run_code' ? 'run the code again to see it' : 'take a new screenshot to see the screen as it is now';
        const note = `\n[image ${ref.path}${size} not shown: only the latest ${this.#options.images?.latest ?? 0} images stay in your context; ${again}]`;
        output += note;
        outputTokens += this.#count(note);
      }
      tokens += overhead.toolResult + outputTokens;
      chars += output.length;
      resultParts.push({
        type: 'tool-result',
        toolCallId: call.call_id,
        toolName: call.name,
        output: isError ? { type: 'error-text', value: output } : files.length > 0 ? { type: 'content', value: [{ type: 'text', text: output }, ...files] } : { type: 'text', value: output },
      });
    });
    // The turn's own words and uncut arguments, measured once when it was stored.
    const uncutShare = unit.turn === undefined ? 0 : textCut.omitted === 0 && argsCut.every((cut) => !cut) ? this.#tokensOf(unit.turn) : this.#count(textCut.text) + this.#count(calls.filter((_, index) => !argsCut[index]).map((call) => `${call.name} ${JSON.stringify(call.args ?? {})}`).join('\n'));
    tokens += uncutShare;
    if (parts.length === 0) parts.push({ type: 'text', text: '(no response)' });
    const messages: ModelMessage[] = [{ role: 'assistant', content: parts }];
    if (resultParts.length > 0) messages.push({ role: 'tool', content: resultParts });
    const rendered: Rendered = { messages, tokens, chars, ...(imageTokensSent === 0 ? {} : { imageTokens: imageTokensSent }) };
    if (this.#memo.size > 20_000) this.#memo.clear();
    this.#memo.set(key, rendered);
    return rendered;
  }
}

/** Groups prompt events into units: each user message alone; each model turn with its tool results. */
function toUnits(events: StoredEvent[]): Unit[] {
  const units: Unit[] = [];
  let current: StepUnit | undefined;
  for (const event of events) {
    if (event.type === 'user-message') {
      current = undefined;
      units.push({ kind: 'user', event, firstSeq: event.seq, lastSeq: event.seq });
    } else if (event.type === 'model-turn') {
      current = { kind: 'step', step: event.step, turn: event, results: [], firstSeq: event.seq, lastSeq: event.seq };
      units.push(current);
    } else if (event.type === 'tool-result' && current !== undefined && current.step === event.step) {
      current.results.push(event);
      current.lastSeq = event.seq;
    }
  }
  return units;
}

function lastStepIndex(units: Unit[]): number | undefined {
  for (let index = units.length - 1; index >= 0; index--) if (units[index]!.kind === 'step') return index;
  return undefined;
}

function callsOf(turn: StoredEvent | undefined): ToolCallRecord[] {
  const calls = turn?.data.tool_calls;
  return Array.isArray(calls) ? (calls as ToolCallRecord[]) : [];
}

/** Arguments for the prompt: long strings cut (verbatim steps) or replaced by a stub (masked steps), with handles. */
function renderArgs(args: unknown, handle: string, level: 'full' | 'masked', capChars: number): { value: Record<string, unknown>; cut: boolean } {
  const object = asObject(args);
  let cut = false;
  const limit = level === 'full' ? Math.max(longArgumentChars, Math.floor(capChars / 2)) : longArgumentChars;
  const value: Record<string, unknown> = {};
  for (const [key, field] of Object.entries(object)) {
    if (typeof field === 'string' && field.length > limit) {
      cut = true;
      const note = `[${formatCount(field.length)} characters; elided from this prompt to save context. recall("handle:${handle}-${key}") reads what was sent]`;
      value[key] = level === 'masked' ? note : cutMiddle(field, limit, (omitted) => `\n[... ${formatCount(omitted)} characters elided; recall("handle:${handle}-${key}") reads them ...]\n`).text;
    } else value[key] = field;
  }
  return { value, cut };
}

function maskStub(call: ToolCallRecord, step: number, output: string, handle: string): string {
  const first = output.split('\n', 1)[0]!.trim();
  const begins = first === '' ? '' : `, beginning "${first.length > 80 ? `${first.slice(0, 79)}…` : first}"`;
  return `[output masked to save context: ${describeCall(call.name, call.args)} at step ${step}, ${formatCount(output.length)} characters${begins}; recall("handle:${handle}") reads it]`;
}

/** One line of the fallback digest: what a step did and where to find it. */
function digestLine(unit: StepUnit): string {
  const results = new Map(unit.results.map((result) => [stringOf(result.data.call_id), result]));
  const calls = callsOf(unit.turn).map((call, position) => {
    const result = results.get(call.call_id);
    const handle = stringOf(result?.data.handle) || `step-${unit.step}-call-${position + 1}`;
    const outcome = result === undefined ? 'interrupted' : result.data.is_error === true ? `error: ${oneLine(stringOf(result.data.output), 80)}` : `ok, ${formatCount(stringOf(result.data.output).length)} chars`;
    return `${describeCall(call.name, call.args)} → ${outcome} [handle:${handle}]`;
  });
  const said = oneLine(stringOf(unit.turn?.data.text), 120);
  return `- step ${unit.step}: ${[said === '' ? undefined : `"${said}"`, ...calls].filter((part) => part !== undefined).join('; ') || '(no calls)'}`;
}

/** Providers want tool-call input as a JSON object; arguments that were not one are sent as `{}` (the error result says what was received). */
export function asObject(args: unknown): Record<string, unknown> {
  if (typeof args === 'object' && args !== null && !Array.isArray(args)) return args as Record<string, unknown>;
  if (typeof args === 'string') {
    try {
      const parsed = JSON.parse(args) as unknown;
      if (typeof parsed === 'object' && parsed !== null && !Array.isArray(parsed)) return parsed as Record<string, unknown>;
    } catch {
      // not JSON: sent as {}
    }
  }
  return {};
}

function oneLine(text: string, maxChars: number): string {
  const line = text.replace(/\s+/g, ' ').trim();
  return line.length > maxChars ? `${line.slice(0, maxChars - 1)}…` : line;
}

const formatCount = (value: number) => value.toLocaleString('en-US');
const sum = (values: number[]) => values.reduce((total, value) => total + value, 0);
const stringOf = (value: unknown) => (typeof value === 'string' ? value : '');
const numberOf = (value: unknown) => (typeof value === 'number' && Number.isFinite(value) ? value : 0);
