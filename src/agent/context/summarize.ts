// Summaries for condensation: the prompts that ask the model to fold older steps into a running summary (or to
// compress a summary that grew), the checks that reject a bad answer, and the fallback that needs no model: a
// one-line digest of each condensed step with the handles to recall it. A summary is only ever accepted when it is
// text, complete (not cut off by the token limit) and within its budget; anything else falls back to the digest.

export interface SummaryRequest {
  system: string;
  prompt: string;
  maxOutputTokens: number;
}

export interface SummaryAnswer {
  text: string;
  finishReason: string;
  usage: { input_tokens: number; output_tokens: number };
}

/** Calls the model for a summary (the loop provides it: same model, same retries). */
export type Summarizer = (request: SummaryRequest, signal: AbortSignal) => Promise<SummaryAnswer>;

export const summarizerSystemPrompt = `You maintain the working memory of workcell, an autonomous software engineer that carries out a user's task in a sandbox by calling tools. Its context window is limited, so older steps are removed from its prompt and replaced by the summary you write. The agent will continue the task from your summary and its most recent steps alone: anything you leave out is gone from its view (it can still search its full history with the recall tool if it knows what to look for).

Write the summary as plain text, in this order:
1. Progress: what has been done so far, in order, and what remains to do.
2. State: files created or changed (paths, and what is in them), commands that work (how to build, run, test), the current state of tests.
3. Facts: specific values discovered that the task may need later (names, numbers, versions, paths, ports, identifiers, error messages, credentials given in the task), quoted exactly.
4. Problems: what failed and why, approaches that did not work (so they are not repeated), open questions.

Be specific and dense: prefer exact names and values to descriptions. Do not invent anything that is not in the material. Do not address the agent or call tools: answer with the summary text only.`;

export function updatePrompt(input: { task: string; previous: string | undefined; steps: string; fromStep: number; toStep: number; targetTokens: number }): string {
  return [
    `The user's task:\n<task>\n${input.task}\n</task>`,
    input.previous === undefined ? 'There is no summary yet.' : `The summary so far (steps before ${input.fromStep}):\n<summary>\n${input.previous}\n</summary>`,
    `Steps ${input.fromStep} to ${input.toStep}, which are being removed from the agent's prompt:\n<steps>\n${input.steps}\n</steps>`,
    `Write the updated summary: the summary so far with these steps folded in, at most about ${input.targetTokens} tokens (${Math.round(input.targetTokens * 0.75)} words).`,
  ].join('\n\n');
}

export function compressPrompt(input: { task: string; summary: string; targetTokens: number }): string {
  return [
    `The user's task:\n<task>\n${input.task}\n</task>`,
    `The agent's summary of its work so far has grown too long:\n<summary>\n${input.summary}\n</summary>`,
    `Rewrite it in at most about ${input.targetTokens} tokens (${Math.round(input.targetTokens * 0.75)} words): keep what the agent still needs to finish the task (the current state, exact facts and values, what failed); drop what no longer matters.`,
  ].join('\n\n');
}

/** Why a summary answer is unusable, or undefined when it is fine. */
export function rejectSummary(answer: SummaryAnswer, maxTokens: number, count: (text: string) => number): string | undefined {
  const text = answer.text.trim();
  if (answer.finishReason === 'length') return 'the summary was cut off at the token limit';
  if (text.length < 20) return `the summary is empty or too short (${text.length} characters)`;
  const letters = (text.match(/[\p{L}\p{N}\s.,:;'"()\-/]/gu) ?? []).length;
  if (letters / text.length < 0.6) return 'the summary does not look like text';
  const tokens = count(text);
  if (tokens > maxTokens) return `the summary is too long (${tokens} tokens, at most ${maxTokens})`;
  return undefined;
}

/** Cuts `text` to about `maxChars`, keeping its start and its end, with a note of what was left out. */
export function cutMiddle(text: string, maxChars: number, note: (omitted: number) => string): { text: string; headEnd: number; omitted: number } {
  if (text.length <= maxChars) return { text, headEnd: text.length, omitted: 0 };
  const keep = Math.max(0, maxChars);
  let headEnd = Math.floor(keep / 2);
  let tailStart = text.length - (keep - headEnd);
  if (isLowSurrogate(text.charCodeAt(headEnd))) headEnd--;
  if (isLowSurrogate(text.charCodeAt(tailStart))) tailStart++;
  const omitted = tailStart - headEnd;
  return { text: `${text.slice(0, headEnd)}${note(omitted)}${text.slice(tailStart)}`, headEnd, omitted };
}

/** Cuts `text` to about `maxChars` keeping its end (the newest lines of a digest). */
export function keepEnd(text: string, maxChars: number, note: string): string {
  if (text.length <= maxChars) return text;
  let start = text.length - maxChars;
  const newline = text.indexOf('\n', start);
  if (newline >= 0 && newline - start < 200) start = newline + 1;
  return `${note}\n${text.slice(start)}`;
}

function isLowSurrogate(code: number): boolean {
  return code >= 0xdc00 && code <= 0xdfff;
}
