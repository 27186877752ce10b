// A long scripted job for the context-management tests: a model (a policy for the fake OpenAI-compatible server)
// that works through `steps` steps, each a shell command whose output is long, plants a fact once early on (in the
// middle of a large output), writes a notes file, recalls the fact near the end, writes what recall found to
// answer.txt and finishes. The policy decides each reply from the request alone (the last call it sees and that
// call's result), not from a counter, so that it continues correctly after a worker restart, and it repeats a call
// whose result says it was interrupted. It answers summary requests (recognized by the summarizer's instructions)
// with a short summary, or, by `summaries`, with failures and garbage.
import { summarizerSystemPrompt } from '../../src/agent/context/summarize.ts';
import type { AssistantReply, RecordedRequest, Reply, ReplyPolicy } from './openai-compatible-server.ts';

export const longJobTask =
  'Keep a log of numbered steps: at each step append the line "step N" to calls.txt and print the step\'s generated lines; ' +
  'remember the vault code when you see it, and at the end write it to answer.txt. Marker: TASK-7f3a-verbatim.';
export const vaultCode = '7Q4-ZEBRA-1188';

export interface LongJobOptions {
  /** The step that calls finish; recall runs two steps before it. */
  steps: number;
  /** The step whose output holds the fact (in the middle of 20 000 characters of filler). */
  factStep?: number;
  /** Steps whose shell command sleeps this long first (so a test can kill the worker mid-call). */
  slowSteps?: Record<number, number>;
  /** How summary requests are answered: 'ok', or 'mixed' (a 500, then garbage, then too long, then ok). */
  summaries?: 'ok' | 'mixed' | 'fail';
}

export interface LongJobPolicy {
  policy: ReplyPolicy;
  /** Summary requests answered, by kind. */
  summaryRequests: RecordedRequest[];
  agentRequests: RecordedRequest[];
}

/** The shell command of step `step`: it appends one line to calls.txt each time it runs, so a repeated call shows. */
export function stepCommand(step: number, options: LongJobOptions): string {
  const sleep = options.slowSteps?.[step] ?? 0;
  const lines = step % 10 === 0 ? 800 : 60;
  const parts = [`: step ${step}`, `sleep ${sleep}`, `echo "step ${step}" >> calls.txt`];
  if (step === (options.factStep ?? 3)) {
    parts.push(`seq -f "filler before the fact, line %g of step ${step}, nothing to remember here" 1 200`, `echo "The vault code is ${vaultCode}"`, `seq -f "filler after the fact, line %g of step ${step}, nothing to remember here" 1 200`);
  } else {
    parts.push(`seq -f "step ${step} generated line %g: the quick brown fox jumps over the lazy dog" 1 ${lines}`);
  }
  return parts.join('; ');
}

function stepOf(call: { name: string; args: Record<string, unknown> } | undefined, options: LongJobOptions): number {
  if (call === undefined) return 0;
  if (call.name === 'shell') return Number(/^: step (\d+)/.exec(String(call.args.command))?.[1] ?? 0);
  if (call.name === 'write_file' && call.args.path === 'notes.md') return 5;
  if (call.name === 'recall') return options.steps - 2;
  if (call.name === 'write_file' && call.args.path === 'answer.txt') return options.steps - 1;
  return 0;
}

/** The reply for step `step`; `recalled` is the output of the recall step (for the answer). */
function replyFor(step: number, options: LongJobOptions, recalled: string): AssistantReply {
  const call = (name: string, args: Record<string, unknown>): AssistantReply => ({ text: `Step ${step}.`, tool_calls: [{ id: `call_${step}_${name}`, name, arguments: args }] });
  if (step === 5) return call('write_file', { path: 'notes.md', content: `# Notes\n\nStep 5: the log is in calls.txt. ${'Notes filler. '.repeat(40)}\n` });
  if (step === options.steps - 2) return call('recall', { query: 'vault code' });
  if (step === options.steps - 1) {
    const found = /vault code is ([A-Z0-9]+-[A-Z]+-\d+)/.exec(recalled)?.[1] ?? 'NOT FOUND';
    return call('write_file', { path: 'answer.txt', content: `${found}\n` });
  }
  if (step === options.steps) return call('finish', { summary: `Logged ${options.steps - 3} steps; the vault code is in answer.txt.` });
  return call('shell', { command: stepCommand(step, options) });
}

interface WireMessage {
  role: string;
  content?: unknown;
  tool_calls?: Array<{ id: string; function: { name: string; arguments: string } }>;
  tool_call_id?: string;
}

export function longJobPolicy(options: LongJobOptions): LongJobPolicy {
  const summaryRequests: RecordedRequest[] = [];
  const agentRequests: RecordedRequest[] = [];
  const policy: ReplyPolicy = (request): Reply => {
    const messages = (request.body.messages ?? []) as WireMessage[];
    if (messages[0]?.role === 'system' && messages[0].content === summarizerSystemPrompt) {
      summaryRequests.push(request);
      const index = summaryRequests.length;
      const mode = options.summaries ?? 'ok';
      if (mode === 'fail') return { status: 500, body: { error: { message: 'summaries are broken today', type: 'server_error' } } };
      if (mode === 'mixed') {
        if (index === 1) return { status: 500, body: { error: { message: 'summaries are broken today', type: 'server_error' } } };
        if (index === 2) return { text: '' };
        if (index === 3) return { text: '%%%% ####\u0000\u0001 @@@@ $$$$ ^^^^ &&&& **** ~~~~ %%%% ####' };
        if (index === 4) return { text: 'Progress so far: '.repeat(4000) };
      }
      const content = messages[1]?.content;
      const prompt = typeof content === 'string' ? content : '';
      if (prompt.includes('has grown too long')) return { text: 'Compressed progress: every step so far appended its line to calls.txt and printed generated lines; notes.md exists.' };
      const range = /Steps (\d+) to (\d+)/.exec(prompt);
      const previous = /<summary>\n([\s\S]*?)\n<\/summary>/.exec(prompt)?.[1];
      // A forgetful summarizer whose summary grows by a paragraph each time (so that it must be compressed now and
      // then): the fact does not survive condensation, so only recall can bring it back.
      const paragraph = `Progress: steps ${range?.[1] ?? '?'} to ${range?.[2] ?? '?'} each appended their line to calls.txt and printed generated lines numbered from one upwards. notes.md exists. `.repeat(8).trim();
      return { text: previous === undefined ? paragraph : `${previous}\n${paragraph}` };
    }
    agentRequests.push(request);
    // The last call the model made and its result, as this request shows them.
    let lastCall: { id: string; name: string; args: Record<string, unknown> } | undefined;
    for (const message of messages) {
      if (message.role === 'assistant' && message.tool_calls !== undefined && message.tool_calls.length > 0) {
        const toolCall = message.tool_calls.at(-1)!;
        lastCall = { id: toolCall.id, name: toolCall.function.name, args: JSON.parse(toolCall.function.arguments || '{}') as Record<string, unknown> };
      }
    }
    const result = lastCall === undefined ? undefined : messages.findLast((message) => message.role === 'tool' && message.tool_call_id === lastCall.id);
    const resultText = typeof result?.content === 'string' ? result.content : JSON.stringify(result?.content ?? '');
    const done = stepOf(lastCall, options);
    // A call the worker never finished is made again.
    const step = /interrupted by a worker restart/.test(resultText) ? done : done + 1;
    return replyFor(step, options, resultText);
  };
  return { policy, summaryRequests, agentRequests };
}

/** Every string in a chat request (to look for the task verbatim). */
export function requestStrings(request: RecordedRequest): string[] {
  const strings = (value: unknown): string[] => {
    if (typeof value === 'string') return [value];
    if (Array.isArray(value)) return value.flatMap(strings);
    if (typeof value === 'object' && value !== null) return Object.values(value).flatMap(strings);
    return [];
  };
  return strings(request.body.messages);
}

/** Emulates the long job's shell commands for unit tests (InMemorySandboxd): `: ...`, sleep, echo [>> file], seq -f. */
export function emulateLongJobShell(command: string, files: Map<string, string>): { output: string; exit_code: number } {
  let output = '';
  for (const part of command.split('; ')) {
    const echo = /^echo "([^"]*)"(?: >> (\S+))?$/.exec(part);
    const seq = /^seq -f "([^"]*)" 1 (\d+)$/.exec(part);
    if (echo !== null) {
      if (echo[2] !== undefined) files.set(echo[2], `${files.get(echo[2]) ?? ''}${echo[1]}\n`);
      else output += `${echo[1]}\n`;
    } else if (seq !== null) {
      for (let line = 1; line <= Number(seq[2]); line++) output += `${seq[1]!.replace('%g', String(line))}\n`;
    } else if (!part.startsWith(': ') && !part.startsWith('sleep ')) {
      return { output: `bash: cannot emulate ${part}\n`, exit_code: 127 };
    }
  }
  return { output, exit_code: 0 };
}
