// The tool plumbing, in one place: validates a model's tool call against the tool's schema, runs it through
// sandboxd, and turns every outcome into a result. A malformed call, an unknown tool, a sandboxd error or any other
// exception becomes an error result the model can read and act on; only cancellation (the abort signal) escapes.
// The whole output is returned for recording; the model gets a copy cut to modelOutputMaxChars (head + tail).
// This module must never execute anything itself: every effect goes through the sandboxd client.
import { performance } from 'node:perf_hooks';
import type { z } from 'zod';
import { errorMessage } from '../../errors.ts';
import { SandboxdError, type SandboxdClient } from '../../runtimes/sandboxd-client.ts';
import type { RouteResponse } from '../../sandboxd/protocol.ts';
import { isToolName, modelOutputMaxChars, shellDefaultTimeoutMs, toolDefinitions, toolNames, toolSignature, type ToolInput, type ToolName } from './definitions.ts';

/** What the tools need of sandboxd: the client's `call` (a SandboxdClient, or a fake in unit tests). */
export type SandboxdCaller = Pick<SandboxdClient, 'call'>;

export interface ToolCallRequest {
  name: string;
  /** The arguments as the model sent them: an object, or a string when they were not valid JSON. */
  input: unknown;
}

export interface ToolRunResult {
  isError: boolean;
  /** The whole output, for the record. */
  output: string;
  /** What the model sees: `output`, cut in the middle when longer than modelOutputMaxChars. */
  modelOutput: string;
  /** Characters of `output` left out of `modelOutput`. */
  omittedChars: number;
  durationMs: number;
  /** Set when a valid `finish` call asks to end the job. */
  finishSummary?: string;
}

export async function runTool(client: SandboxdCaller, call: ToolCallRequest, options: { signal: AbortSignal }): Promise<ToolRunResult> {
  const { signal } = options;
  signal.throwIfAborted();
  const started = performance.now();
  const done = (isError: boolean, output: string, finishSummary?: string): ToolRunResult => {
    const { text, omittedChars } = truncateMiddle(output, modelOutputMaxChars);
    return { isError, output, modelOutput: text, omittedChars, durationMs: Math.round(performance.now() - started), ...(finishSummary === undefined ? {} : { finishSummary }) };
  };

  if (!isToolName(call.name)) {
    return done(true, `Unknown tool "${call.name}". The available tools are: ${toolNames.join(', ')}. Call one of them by its exact name.`);
  }
  const name = call.name;
  const parsed = parseArguments(name, call.input);
  if (!parsed.ok) return done(true, parsed.message);

  try {
    const outcome = await execute(client, name, parsed.value, signal);
    return done(false, outcome.output, outcome.finishSummary);
  } catch (error) {
    if (signal.aborted) throw signal.reason;
    if (error instanceof SandboxdError) return done(true, `${name} failed: ${error.code}: ${error.message}`);
    return done(true, `${name} failed with an unexpected error: ${errorMessage(error)}`);
  }
}

type Parsed = { ok: true; value: Record<string, unknown> } | { ok: false; message: string };

function parseArguments(name: ToolName, input: unknown): Parsed {
  let value = input;
  // A string is either arguments that were not valid JSON (the SDK passes the raw text on), or an object that the
  // model JSON-encoded twice, which is easy to accept.
  if (typeof value === 'string') {
    try {
      value = JSON.parse(value) as unknown;
    } catch (error) {
      return {
        ok: false,
        message:
          `The arguments of this ${name} call are not valid JSON (${errorMessage(error)}). ` +
          `Received: ${preview(value as string)}\nSend the arguments as one JSON object: ${toolSignature(name)}.`,
      };
    }
  }
  const result = (toolDefinitions[name].inputSchema as z.ZodType<Record<string, unknown>>).safeParse(value ?? {});
  if (result.success) return { ok: true, value: result.data };
  const problems = result.error.issues.map((issue) => `- ${issue.path.length > 0 ? issue.path.join('.') : '(arguments)'}: ${issue.message}`);
  return {
    ok: false,
    message: `Invalid arguments for ${name}:\n${problems.join('\n')}\nExpected: ${toolSignature(name)}. Fix the arguments and call the tool again.`,
  };
}

function preview(text: string): string {
  const limit = 200;
  return text.length <= limit ? JSON.stringify(text) : `${JSON.stringify(text.slice(0, limit))} (${text.length} characters in all)`;
}

async function execute(client: SandboxdCaller, name: ToolName, args: Record<string, unknown>, signal: AbortSignal): Promise<{ output: string; finishSummary?: string }> {
  switch (name) {
    case 'shell': {
      const { command, timeout_ms } = args as ToolInput<'shell'>;
      const result = await client.call('shellExec', { command, ...(timeout_ms === undefined ? {} : { timeout_ms }) }, { signal });
      return { output: formatShell(result, timeout_ms) };
    }
    case 'read_file': {
      const { path } = args as ToolInput<'read_file'>;
      const result = await client.call('readFile', { path }, { signal });
      return { output: result.content === '' ? `(${result.path} is empty)` : result.content };
    }
    case 'write_file': {
      const { path, content } = args as ToolInput<'write_file'>;
      const result = await client.call('writeFile', { path, content }, { signal });
      return { output: `${result.created ? 'Created' : 'Overwrote'} ${result.path} (${result.size} bytes).` };
    }
    case 'edit_file': {
      const { path, old_string, new_string } = args as ToolInput<'edit_file'>;
      const result = await client.call('editFile', { path, old_string, new_string }, { signal });
      return { output: `Edited ${result.path}: replaced 1 occurrence (the file is now ${result.size} bytes).` };
    }
    case 'list_files': {
      const { path } = args as ToolInput<'list_files'>;
      const result = await client.call('listFiles', path === undefined ? {} : { path }, { signal });
      return { output: formatListing(result) };
    }
    case 'delete_file': {
      const { path } = args as ToolInput<'delete_file'>;
      const result = await client.call('deleteFile', { path }, { signal });
      return { output: `Deleted ${result.type === 'directory' ? 'directory' : result.type} ${result.path}.` };
    }
    case 'finish': {
      const { summary } = args as ToolInput<'finish'>;
      return { output: 'The job is finished.', finishSummary: summary };
    }
  }
}

function formatShell(result: RouteResponse<'shellExec'>, timeoutMs: number | undefined): string {
  const lines = [`exit code: ${result.exit_code ?? 'none'}`];
  if (result.timed_out) lines.push(`timed out after ${timeoutMs ?? shellDefaultTimeoutMs} ms: the command was interrupted with Ctrl-C.`);
  if (result.session_restarted) lines.push('The shell session was restarted: the working directory and environment variables were reset.');
  if (result.omitted_bytes > 0) lines.push(`${result.omitted_bytes} bytes were dropped from the middle of the output (sandboxd's buffer limit).`);
  lines.push(result.output === '' ? 'output: (none)' : `output:\n${result.output}`);
  return lines.join('\n');
}

function formatListing(result: RouteResponse<'listFiles'>): string {
  if (result.entries.length === 0) return `${result.path} is empty.`;
  const lines = result.entries.map((entry) => {
    switch (entry.type) {
      case 'directory':
        return `${entry.path}/`;
      case 'file':
        return `${entry.path}  (${entry.size} bytes)`;
      case 'symlink':
        return `${entry.path}@  (symbolic link)`;
      case 'other':
        return `${entry.path}  (special file)`;
    }
  });
  if (result.truncated) lines.push(`[listing cut short: list a subdirectory, or search with the shell (find, rg --files)]`);
  return lines.join('\n');
}

/**
 * Cuts `text` to at most `maxChars` characters of content by removing the middle (the start and the end of an
 * output are the parts that matter), with a note saying how much was left out and how to see it.
 */
export function truncateMiddle(text: string, maxChars: number): { text: string; omittedChars: number } {
  if (text.length <= maxChars) return { text, omittedChars: 0 };
  let headEnd = Math.floor(maxChars / 2);
  let tailStart = text.length - (maxChars - headEnd);
  // Never split a UTF-16 surrogate pair.
  if (isLowSurrogate(text.charCodeAt(headEnd))) headEnd--;
  if (isLowSurrogate(text.charCodeAt(tailStart))) tailStart++;
  const omitted = text.slice(headEnd, tailStart);
  const omittedLines = omitted.split('\n').length - 1;
  const note =
    `\n\n[... ${omitted.length} characters${omittedLines > 0 ? ` (${omittedLines} lines)` : ''} omitted from the middle of this output. ` +
    `To see them, narrow the output: redirect it to a file and use grep, head, tail or sed -n. ...]\n\n`;
  return { text: text.slice(0, headEnd) + note + text.slice(tailStart), omittedChars: omitted.length };
}

function isLowSurrogate(code: number): boolean {
  return code >= 0xdc00 && code <= 0xdfff;
}
