// The tool plumbing, in one place: validates a model's tool call against the tool's schema, runs it through
// sandboxd, and turns every outcome into a result. A malformed call, an unknown tool, a sandboxd error or any other
// exception becomes an error result the model can read and act on; only cancellation (the abort signal) escapes.
// The whole output is returned for recording; the model gets a copy cut to modelOutputMaxChars (head + tail).
// After each call it reads the sandbox's limit counters (host-side, unforgeable) and, when a limit was hit since the
// previous call ended (by this call, or by a process left running in the background in between), appends a plain
// note saying which one, so the agent knows why its process died or its write failed.
// This module must never execute anything itself: every effect goes through the sandboxd client.
import { performance } from 'node:perf_hooks';
import type { z } from 'zod';
import { errorMessage } from '../../errors.ts';
import { SandboxdError, type SandboxdClient } from '../../runtimes/sandboxd-client.ts';
import type { LimitCounters, SandboxLimits } from '../../runtimes/types.ts';
import type { RouteResponse } from '../../sandboxd/protocol.ts';
import type { FileOperation, FileOperationRecord } from '../../jobs/audit-log.ts';
import type { ToolImage } from '../context/images.ts';
import { isToolName, modelOutputMaxChars, shellDefaultTimeoutMs, toolDefinitions, toolNames, toolSignature, type ToolInput, type ToolName } from './definitions.ts';
import { formatRunCode } from './run-code-output.ts';

/** What the tools need of sandboxd: the client's `call` (a SandboxdClient, or a fake in unit tests). */
export type SandboxdCaller = Pick<SandboxdClient, 'call'>;

export interface ToolCallRequest {
  name: string;
  /** The arguments as the model sent them: an object, or a string when they were not valid JSON. */
  input: unknown;
}

/** The sandbox's limits and a way to read its counters (Sandbox.limitCounters); absent when no limits apply. */
export interface LimitWatch {
  limits: Pick<SandboxLimits, 'memoryMb' | 'pids' | 'diskMb'> & {
    /** Size of the workspace's own disk, when it has one (jobs/workspace-disk.ts). */
    workspaceDiskMb?: number | undefined;
  };
  counters(): Promise<LimitCounters>;
  /** Stops every process the agent's commands started (the sandbox's own machinery survives); see runTool. */
  stopProcesses?(): Promise<number>;
  /**
   * The counters as the previous call left them, kept here by runTool: the next call compares with them, not with a
   * reading taken when it starts, so a limit hit between two calls (a fork bomb or a server left running in the
   * background) is reported by the next call instead of being lost. One watch serves calls made one at a time.
   */
  seen?: LimitCounters | undefined;
}

export type LimitHit = 'memory' | 'pids' | 'workspace_disk' | 'tmp_disk';

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
  /** The limits this call ran into (a note for each is at the end of `output`). */
  limitsHit?: LimitHit[];
  /** Images the tool returned (gui screenshots), for the loop to store and models with vision to see. */
  images?: ToolImage[];
}

export interface RunToolOptions {
  signal: AbortSignal;
  limits?: LimitWatch | undefined;
  /** Told of every file operation that reached sandboxd, refused ones included (the job's audit log). */
  onFileOperation?: ((operation: FileOperationRecord) => void) | undefined;
  /** Runs `recall` on the host, over the job's context store (agent/context); without it, recall is an error. */
  recall?: ((input: ToolInput<'recall'>, signal: AbortSignal) => Promise<string>) | undefined;
}

export async function runTool(client: SandboxdCaller, call: ToolCallRequest, options: RunToolOptions): Promise<ToolRunResult> {
  const { signal } = options;
  signal.throwIfAborted();
  const started = performance.now();
  let images: ToolImage[] | undefined;
  const done = (isError: boolean, output: string, finishSummary?: string, limitsHit: LimitHit[] = []): ToolRunResult => {
    const { text, omittedChars } = truncateMiddle(output, modelOutputMaxChars);
    return {
      isError,
      output,
      modelOutput: text,
      omittedChars,
      durationMs: Math.round(performance.now() - started),
      ...(finishSummary === undefined ? {} : { finishSummary }),
      ...(limitsHit.length === 0 ? {} : { limitsHit }),
      ...(images === undefined || images.length === 0 ? {} : { images }),
    };
  };

  if (!isToolName(call.name)) {
    return done(true, `Unknown tool "${call.name}". The available tools are: ${toolNames.join(', ')}. Call one of them by its exact name.`);
  }
  const name = call.name;
  const parsed = parseArguments(name, call.input);
  if (!parsed.ok) return done(true, parsed.message);

  const watch = name === 'finish' || name === 'recall' ? undefined : options.limits;
  const before = watch === undefined ? undefined : (watch.seen ?? (await readCounters(watch)));
  let isError = false;
  let output: string;
  let finishSummary: string | undefined;
  let errorCode: string | undefined;
  try {
    const outcome = await execute(client, name, parsed.value, signal, options);
    output = outcome.output;
    finishSummary = outcome.finishSummary;
    images = outcome.images;
  } catch (error) {
    if (signal.aborted) throw signal.reason;
    isError = true;
    errorCode = error instanceof SandboxdError ? error.code : 'internal';
    output = error instanceof SandboxdError ? `${name} failed: ${error.code}: ${error.message}` : `${name} failed with an unexpected error: ${errorMessage(error)}`;
  }
  const operation = fileOperationOf(name, parsed.value);
  if (operation !== undefined) options.onFileOperation?.({ ...operation, ok: !isError, ...(errorCode === undefined ? {} : { error: errorCode }) });
  if (watch === undefined || before === undefined) return done(isError, output, finishSummary);
  const { notes, hits, seen } = await limitNotes(watch, before, output);
  watch.seen = seen;
  return done(isError, notes.length === 0 ? output : `${output}\n\n${notes.join('\n')}`, finishSummary, hits);
}

/**
 * A sandbox whose fork was refused during a call and that still holds this share of its process limit when the call
 * ends is stuck (a fork bomb keeps it so, and nothing, not even the next command, could start): its processes are
 * stopped. Below it, the processes were a passing burst (a parallel build) and are left alone.
 */
const crowdedShare = 0.75;

/** Free bytes under which a limited disk counts as full (a write that needed more got ENOSPC). */
const diskFullBytes = 1024 * 1024;

async function readCounters(watch: LimitWatch): Promise<LimitCounters | undefined> {
  return watch.counters().catch(() => undefined);
}

/**
 * What a call ran into, as notes for the model: compares the counters after the call with those before, and
 * relieves a sandbox stuck at its process limit (see crowdedShare). `seen`: the counters the next call starts from
 * (read again after a stop, whose victims may still have tried to fork while it ran).
 */
async function limitNotes(watch: LimitWatch, before: LimitCounters, output: string): Promise<{ notes: string[]; hits: LimitHit[]; seen: LimitCounters | undefined }> {
  const after = await readCounters(watch);
  if (after === undefined) return { notes: [], hits: [], seen: undefined };
  let seen = after;
  const { limits } = watch;
  const notes: string[] = [];
  const hits: LimitHit[] = [];
  const oomKills = after.oomKills - before.oomKills;
  if (oomKills > 0) {
    hits.push('memory');
    notes.push(`[limit] ${oomKills === 1 ? 'a process was' : `${oomKills} processes were`} killed: the sandbox's memory limit (${limits.memoryMb} MB) was reached. Use less memory (smaller inputs, streaming, fewer parallel jobs); files in /tmp count as memory too.`);
  }
  if (after.pidsRefused > before.pidsRefused) {
    hits.push('pids');
    let note = `[limit] fork failed: the sandbox's process limit (${limits.pids} processes and threads) was reached.`;
    if (watch.stopProcesses !== undefined && after.processes !== undefined && after.processes >= crowdedShare * limits.pids) {
      const stopped = await watch.stopProcesses().catch(() => 0);
      seen = (await readCounters(watch)) ?? after;
      note += ` The sandbox was still at the limit, so every process your commands started (${stopped}) was stopped; the shell session starts afresh.`;
    } else {
      note += ' Run fewer processes or threads at once.';
    }
    notes.push(note);
  }
  // A disk counts when this call filled it, or ran into it already full (ENOSPC in the output); not on every later call.
  const ranIntoFull = (free: number | undefined, freeBefore: number | undefined) =>
    free !== undefined && free < diskFullBytes && (freeBefore === undefined || freeBefore >= diskFullBytes || free < freeBefore || output.includes('No space left on device'));
  if (limits.workspaceDiskMb !== undefined && ranIntoFull(after.workspaceFreeBytes, before.workspaceFreeBytes)) {
    hits.push('workspace_disk');
    notes.push(`[limit] no space left: the workspace disk limit (${limits.workspaceDiskMb} MB) is full. Delete files you do not need (build outputs, caches) before writing more.`);
  }
  if (ranIntoFull(after.tmpFreeBytes, before.tmpFreeBytes)) {
    hits.push('tmp_disk');
    notes.push(`[limit] no space left: /tmp is full (its limit is ${limits.diskMb} MB). Delete files in /tmp you do not need.`);
  }
  return { notes, hits, seen };
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

async function execute(client: SandboxdCaller, name: ToolName, args: Record<string, unknown>, signal: AbortSignal, options: RunToolOptions): Promise<{ output: string; finishSummary?: string; images?: ToolImage[] }> {
  switch (name) {
    case 'shell': {
      const { command, timeout_ms, session } = args as ToolInput<'shell'>;
      const result = await client.call('shellExec', { command, ...(timeout_ms === undefined ? {} : { timeout_ms }), ...(session === undefined ? {} : { session }) }, { signal });
      return { output: formatShell(result, timeout_ms, session) };
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
      const { path, depth, include_ignored } = args as ToolInput<'list_files'>;
      const result = await client.call('listFiles', { ...(path === undefined ? {} : { path }), ...(depth === undefined ? {} : { depth }), ...(include_ignored === undefined ? {} : { include_ignored }) }, { signal });
      return { output: formatListing(result) };
    }
    case 'search_files': {
      const { pattern, path, glob } = args as ToolInput<'search_files'>;
      const result = await client.call('searchFiles', { pattern, ...(path === undefined ? {} : { path }), ...(glob === undefined ? {} : { glob }) }, { signal });
      return { output: formatSearch(result, pattern) };
    }
    case 'delete_file': {
      const { path } = args as ToolInput<'delete_file'>;
      const result = await client.call('deleteFile', { path }, { signal });
      return { output: `Deleted ${result.type === 'directory' ? 'directory' : result.type} ${result.path}.` };
    }
    case 'run_code': {
      // An exception in the code is a result (status: error), as a command's non-zero exit is for shell.
      const { language, code, timeout_ms } = args as ToolInput<'run_code'>;
      const result = await client.call('runCode', { language, code, ...(timeout_ms === undefined ? {} : { timeout_ms }) }, { signal });
      const { output, images } = formatRunCode(result);
      return { output, ...(images.length === 0 ? {} : { images }) };
    }
    case 'gui': {
      const result = await client.call('gui', args as ToolInput<'gui'>, { signal });
      const shot = result.screenshot;
      return { output: result.output, ...(shot === undefined ? {} : { images: [{ mediaType: shot.media_type, data: Buffer.from(shot.data, 'base64'), width: shot.width, height: shot.height }] }) };
    }
    case 'finish': {
      const { summary } = args as ToolInput<'finish'>;
      return { output: 'The job is finished.', finishSummary: summary };
    }
    case 'recall': {
      // The one host-side tool: it reads the job's history, never the sandbox.
      if (options.recall === undefined) throw new Error('recall is not available in this job (it has no context store)');
      return { output: await options.recall(args as ToolInput<'recall'>, signal) };
    }
  }
}

/** File tools by name and the operation each records in the audit log. */
const fileToolOperations: Partial<Record<string, FileOperation>> = { read_file: 'read', write_file: 'write', edit_file: 'edit', list_files: 'list', delete_file: 'delete', search_files: 'search' };

/** The file operation a file tool's call makes (for the audit log); undefined for the other tools. */
function fileOperationOf(name: ToolName, args: Record<string, unknown>): Pick<FileOperationRecord, 'op' | 'path'> | undefined {
  const op = fileToolOperations[name];
  if (op === undefined) return undefined;
  return { op, path: typeof args.path === 'string' ? args.path : '.' };
}

function formatShell(result: RouteResponse<'shellExec'>, timeoutMs: number | undefined, session: string | undefined): string {
  const lines = [`exit code: ${result.exit_code ?? 'none'}`];
  if (result.timed_out) lines.push(`timed out after ${timeoutMs ?? shellDefaultTimeoutMs} ms: the command was interrupted with Ctrl-C.`);
  if (result.waiting_for_input === true) {
    lines.push('The command was waiting for input from the terminal when it was interrupted: give it its input with a pipe or a heredoc (printf "y\\n" | CMD, CMD <<EOF), or use its non-interactive options.');
  }
  if (result.session_restarted) lines.push(`The shell session${session === undefined ? '' : ` "${session}"`} was restarted: the working directory and environment variables were reset.`);
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
  if (result.truncated) lines.push(`[listing cut short: list a subdirectory, lower depth, or use search_files]`);
  if (result.ignored_count > 0) {
    const name = (entry: (typeof result.ignored)[number]) => `${entry.path}${entry.type === 'directory' ? '/' : ''}`;
    const byDefault = result.ignored.filter((entry) => entry.reason === 'default').map(name);
    const byFile = result.ignored.filter((entry) => entry.reason === 'ignore_file').map(name);
    const parts = [...(byDefault.length > 0 ? [`${byDefault.join(', ')} (skipped by default)`] : []), ...(byFile.length > 0 ? [`${byFile.join(', ')} (ignore files)`] : [])];
    const more = result.ignored_count - result.ignored.length;
    lines.push(`[not listed: ${parts.join('; ')}${more > 0 ? ` and ${more} more` : ''}; pass include_ignored: true to list them]`);
  }
  return lines.join('\n');
}

function formatSearch(result: RouteResponse<'searchFiles'>, pattern: string): string {
  const where = result.path === '.' ? 'the workspace' : result.path;
  if (result.matches.length === 0) return `No match for ${JSON.stringify(pattern)} in ${where}${result.truncated ? ' (the search was stopped at its time limit: narrow path or glob)' : ''}.`;
  const lines = result.matches.map((match) => `${match.path}:${match.line}: ${match.text}`);
  if (result.truncated) lines.push(`[only the first ${result.matches.length} matching lines are shown: narrow the pattern, path or glob to see the rest]`);
  else lines.push(`[${result.matches.length} matching line${result.matches.length === 1 ? '' : 's'} in ${result.files_with_matches} file${result.files_with_matches === 1 ? '' : 's'}]`);
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
