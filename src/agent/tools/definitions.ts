// The tools as the model sees them: names, descriptions and input schemas. This is product surface: the model's
// whole knowledge of what it can do in the sandbox comes from these words, so each description says what the tool
// does, its limits (timeouts, size caps, truncation) and the errors it can return. Execution lives in run-tool.ts
// (one place for validation, errors, truncation and timing); this file must stay free of behaviour.
import { tool, type ToolSet } from 'ai';
import { z } from 'zod';
import { maxFileBytes } from '../../sandboxd/protocol.ts';

/** Characters of a tool's output the model sees; longer output keeps its head and tail (the whole is recorded). */
export const modelOutputMaxChars = 30_000;
export const shellDefaultTimeoutMs = 120_000;
export const shellMaxTimeoutMs = 3_600_000;
const maxFileMegabytes = maxFileBytes / (1024 * 1024);

const workspacePath = z
  .string()
  .min(1)
  .max(4096)
  .describe('Path relative to /workspace, e.g. "src/app.py". An absolute path must lie inside /workspace.');

export const toolDefinitions = {
  shell: {
    description: [
      'Run a bash command in a persistent shell session inside the sandbox and return its exit code and output (stdout and stderr interleaved).',
      'The session keeps state between calls: the working directory (it starts in /workspace), environment variables and shell functions persist, so `cd` and `export` carry over to the next call.',
      `Each call waits for the command to finish or for timeout_ms (default ${shellDefaultTimeoutMs} ms, at most ${shellMaxTimeoutMs} ms). On timeout the command is interrupted with Ctrl-C and you get the output so far; if Ctrl-C does not end it, the session is restarted and the working directory and environment are reset (the result says so).`,
      'Do not run commands that wait for input or never exit (servers, watchers, `tail -f`, editors, pagers) in the foreground: start long-running processes in the background with `nohup CMD > log.txt 2>&1 &` and check on them later. Pass non-interactive flags (`-y`, `--yes`) and set PAGER=cat where a tool would prompt or page.',
      `Output longer than ${modelOutputMaxChars} characters is cut in the middle: you see the beginning and the end, with a note of how much was left out. Redirect large output to a file and inspect it with grep, head, tail or sed -n.`,
      'A non-zero exit code is reported as a result, not as an error. The sandbox has no network access unless your instructions list destinations it may reach (through HTTP_PROXY): package installs from anywhere else (pip, npm, apt) fail.',
      'The sandbox has limits on memory, processes, CPU and disk (/workspace and /tmp): a command that runs into one fails (killed, fork refused, no space left), and the result ends with a [limit] note saying which limit it was.',
    ].join('\n'),
    inputSchema: z.strictObject({
      command: z.string().min(1).max(1_000_000).describe('The bash command line to run, e.g. "python3 -m pytest -q". May span several lines.'),
      timeout_ms: z
        .number()
        .int()
        .min(1000)
        .max(shellMaxTimeoutMs)
        .optional()
        .describe(`How long to wait for the command, in milliseconds (default ${shellDefaultTimeoutMs}, at most ${shellMaxTimeoutMs}). Raise it for long builds or test suites.`),
    }),
  },
  read_file: {
    description: [
      'Read a text file from the workspace and return its whole content.',
      `Files larger than ${maxFileMegabytes} MB and binary files are refused (errors too_large and binary_file); a missing file gives not_found, a directory not_a_file.`,
      `Content longer than ${modelOutputMaxChars} characters is cut in the middle with a note of how much was left out: to read a part of a large file, use the shell (sed -n '100,200p' FILE, grep -n PATTERN FILE).`,
    ].join('\n'),
    inputSchema: z.strictObject({ path: workspacePath }),
  },
  write_file: {
    description: [
      'Create a file, or replace an existing file entirely, with the given content. Missing parent directories are created.',
      `The content is written exactly as given (UTF-8); at most ${maxFileMegabytes} MB. Paths outside /workspace are refused (path_outside_workspace).`,
      'To change part of an existing file, prefer edit_file, which does not require resending the whole file.',
    ].join('\n'),
    inputSchema: z.strictObject({
      path: workspacePath,
      content: z.string().max(maxFileBytes).describe('The complete new content of the file.'),
    }),
  },
  edit_file: {
    description: [
      'Replace one exact occurrence of old_string with new_string in an existing text file.',
      'old_string must match the file byte for byte, including whitespace and indentation, and must occur exactly once: if it is not found the call fails with no_match, if it occurs more than once with multiple_matches. In either case read the file again and include enough surrounding lines to make old_string unique.',
      'To delete text, pass an empty new_string. To create a new file or rewrite a file completely, use write_file.',
    ].join('\n'),
    inputSchema: z.strictObject({
      path: workspacePath,
      old_string: z.string().min(1).describe('The exact text to replace; it must occur exactly once in the file.'),
      new_string: z.string().describe('The text to put in its place (may be empty).'),
    }),
  },
  list_files: {
    description: [
      'List the files and directories under a directory of the workspace, two levels deep, with their types and sizes in bytes.',
      'Directories end with "/". A very long listing is cut short and says so: list a subdirectory, or use the shell (find, rg --files) to search.',
    ].join('\n'),
    inputSchema: z.strictObject({
      path: workspacePath.optional().describe('Directory to list, relative to /workspace (default: "." for /workspace itself).'),
    }),
  },
  delete_file: {
    description: [
      'Delete a file, a symbolic link (not its target), or a directory with everything in it, inside the workspace.',
      'Deletion is permanent. Deleting /workspace itself or anything outside it is refused; a missing path gives not_found.',
    ].join('\n'),
    inputSchema: z.strictObject({ path: workspacePath.describe('Path of the file or directory to delete, relative to /workspace.') }),
  },
  recall: {
    description: [
      "Search your own history in this job and return the best-matching passages, each with the step it came from, its source (the command, or the file read or written) and its handle. The history holds everything: every command and its whole output, every file you read or wrote (as it was then), and your own notes.",
      'Your prompt shows only the task, the user\'s instructions, a summary of older steps and the most recent steps: older outputs are masked and long outputs are cut, each marked with a handle such as "handle:step-12-call-3". Use recall when you need something from earlier that is no longer in view (a value, an error message, what a command printed, what a file contained) instead of running the command again.',
      'query: words to look for, e.g. "database port" or "TypeError parse_args". Passages are ranked by BM25 keyword relevance (plus meaning similarity when the server has embeddings): exact identifiers, file names and error text work best.',
      'query "handle:<handle>" reads the stored output (or long argument) with that handle itself, one page at a time, from where your prompt cut it; each page ends by saying how to read the next one, e.g. "handle:step-12-call-3@24000" starts at character 24000.',
      'recall reads the record of the past, not the current state: for a file as it is now, use read_file. It runs outside the sandbox and changes nothing.',
    ].join('\n'),
    inputSchema: z.strictObject({
      query: z.string().min(1).max(2000).describe('Words to search for, or "handle:<handle>" (optionally "@<character offset>") to read a stored output.'),
      limit: z.number().int().min(1).max(20).optional().describe('How many passages to return (default 5, at most 20). Ignored for handle: queries.'),
    }),
  },
  finish: {
    description: [
      'End the job. Call this once, when the task is done (or when you are certain it cannot be done), after verifying your work.',
      'The summary is shown to the user along with the workspace, which is handed back as a zip archive: say what you built or changed, where the important files are, how to run or use the result, how you verified it, and anything left undone or that the user should know.',
      'No more tool calls run after this one.',
    ].join('\n'),
    inputSchema: z.strictObject({
      summary: z.string().min(1).max(20_000).describe('What was done, where the results are, how it was verified, and any open issues. Plain text or Markdown.'),
    }),
  },
} as const satisfies Record<string, { description: string; inputSchema: z.ZodType }>;

export type ToolName = keyof typeof toolDefinitions;
export const toolNames = Object.keys(toolDefinitions) as ToolName[];
export type ToolInput<N extends ToolName> = z.infer<(typeof toolDefinitions)[N]['inputSchema']>;

export function isToolName(name: string): name is ToolName {
  return Object.hasOwn(toolDefinitions, name);
}

/** A one-line signature of a tool, e.g. `edit_file {path: string, old_string: string, new_string: string}`. */
export function toolSignature(name: ToolName): string {
  const schema = z.toJSONSchema(toolDefinitions[name].inputSchema) as { properties?: Record<string, { type?: string }>; required?: string[] };
  const required = new Set(schema.required ?? []);
  const fields = Object.entries(schema.properties ?? {}).map(([field, property]) => `${field}${required.has(field) ? '' : '?'}: ${property.type ?? 'any'}`);
  return `${name} {${fields.join(', ')}}`;
}

/**
 * The tools in the AI SDK's shape, for the model call. Deliberately without `execute`: the SDK never runs a tool;
 * the agent loop runs each call through run-tool.ts and records it.
 */
export function modelTools(): ToolSet {
  const tools: ToolSet = {};
  for (const name of toolNames) {
    const { description, inputSchema } = toolDefinitions[name];
    tools[name] = tool({ description, inputSchema: inputSchema as z.ZodType<Record<string, unknown>> });
  }
  return tools;
}
