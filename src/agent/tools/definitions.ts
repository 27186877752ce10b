// The tools as the model sees them: names, descriptions and input schemas. This is product surface: the model's
// whole knowledge of what it can do in the sandbox comes from these words, so each description says what the tool
// does, its limits (timeouts, size caps, truncation) and the errors it can return. Execution lives in run-tool.ts
// (one place for validation, errors, truncation and timing); this file must stay free of behaviour. `summary` is the
// tool's line in the system prompt's list of tools (prompt.ts), which is generated from these records.
import { tool, type ToolSet } from 'ai';
import { z } from 'zod';
import { checkGuiFields, defaultScreen as screen, guiFieldSchemas, launchWindowWaitMs, maxKeys, maxScriptLines, maxTypeChars, scriptTimeoutMs } from '../../sandboxd/gui/gui-request.ts';
import { maxScriptSleepSeconds } from '../../sandboxd/gui/xdotool-script.ts';
import { codeLanguages, defaultShellSession, maxCodeChars, maxFileBytes, maxSearchMatches, maxShellSessions, runCodeDefaultTimeoutMs, runCodeMaxTimeoutMs, shellSessionName } from '../../sandboxd/protocol.ts';

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
    summary: 'run a bash command in a persistent shell session (working directory, variables and functions carry over; `session` names another one). Use it to explore, build, run programs and tests; start servers in the background with `&`.',
    description: [
      'Run a bash command in a persistent shell session inside the sandbox, on a terminal 200 columns wide, and return its exit code and output (stdout and stderr interleaved, colours and escape sequences removed).',
      'State persists between calls: the working directory (it starts in /workspace), environment variables, functions and aliases.',
      `Each call waits for the command to finish or for timeout_ms (default ${shellDefaultTimeoutMs} ms, at most ${shellMaxTimeoutMs} ms). On timeout the command gets Ctrl-C (then SIGTERM, then SIGKILL) and you get the output so far; if the shell does not come back, the session is restarted and its directory and environment are reset (the result says so).`,
      'A command that waits for input (a prompt, `read`, `cat` without a file) waits until the timeout, and the result says so: give input with a pipe or a heredoc, pass -y/--yes, and do not start editors or pagers.',
      'End a command with `&` to keep it running after the call (servers: `python3 -m http.server 8000 > server.log 2>&1 &`, then `curl localhost:8000` in a later call); `jobs` lists them, `kill %1` stops one.',
      `session: another name is another persistent shell, with its own directory, variables and jobs (default "${defaultShellSession}", at most ${maxShellSessions}; \`exit\` ends one).`,
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
      session: shellSessionName.optional().describe(`Shell session to run in (default "${defaultShellSession}").`),
    }),
  },
  run_code: {
    summary: 'run Python, TypeScript or JavaScript in a Jupyter kernel that keeps its state from call to call, like notebook cells: to compute, explore data and plot (plots come back as images).',
    description: [
      'Run Python, TypeScript or JavaScript in a Jupyter kernel in the sandbox, like a notebook cell: returns stdout, stderr, the value of the last expression, displayed images (plots) and errors with their traceback.',
      'One kernel per language for the whole job keeps its state: variables, imports and functions from one call exist in the next. The first call of a language starts its kernel (a few seconds). The working directory is /workspace.',
      "python: IPython with numpy, pandas, matplotlib (a plot, via plt.show() or a figure as the last expression, comes back as a PNG image; `!cmd` runs a shell command). typescript: tslab; each call is type-checked first and a type error is reported as an error, nothing of the call runs. javascript: tslab's Node 24 kernel. In both, import Node's modules (import * as fs from \"fs\") and use top-level await.",
      `timeout_ms bounds the execution (default ${runCodeDefaultTimeoutMs} ms, at most ${runCodeMaxTimeoutMs} ms; the kernel's start does not count): the code is then interrupted (KeyboardInterrupt) and the kernel keeps its state. A kernel that does not stop, or dies (os._exit, a crash, the memory limit), is replaced and its state is lost: the result says so; run your setup again.`,
      `Output over about 768 KB per call keeps its beginning and end; you see at most ${modelOutputMaxChars} characters and 8 images per call (images as images if your model takes them; only the latest stay in view). No input(): it fails. Save large data and many plots to files.`,
      'The result starts with the status: ok, error (an exception, a compile or type error), timeout or kernel_died. Invalid arguments are refused with what to fix; unavailable: Jupyter could not start.',
      `Use shell for commands, builds and tests; run_code to compute, explore data and plot. Code over ${maxCodeChars} characters belongs in a file.`,
    ].join('\n'),
    inputSchema: z.strictObject({
      language: z.enum(codeLanguages).describe('The kernel to run the code in: python, typescript or javascript.'),
      code: z
        .string()
        .min(1)
        .max(maxCodeChars)
        .describe('The code to run, one or more lines, like a notebook cell: the value of its last expression is returned (Python) or printed (TypeScript, JavaScript).'),
      timeout_ms: z
        .number()
        .int()
        .min(1000)
        .max(runCodeMaxTimeoutMs)
        .optional()
        .describe(`How long the code may run, in milliseconds (default ${runCodeDefaultTimeoutMs}, at most ${runCodeMaxTimeoutMs}); then it is interrupted.`),
    }),
  },
  read_file: {
    summary: 'read a whole text file.',
    description: [
      'Read a text file from the workspace and return its whole content.',
      `Files larger than ${maxFileMegabytes} MB and binary files are refused (errors too_large and binary_file); a missing file gives not_found, a directory not_a_file.`,
      `Content longer than ${modelOutputMaxChars} characters is cut in the middle with a note of how much was left out: to read a part of a large file, use the shell (sed -n '100,200p' FILE, grep -n PATTERN FILE).`,
    ].join('\n'),
    inputSchema: z.strictObject({ path: workspacePath }),
  },
  write_file: {
    summary: 'create a file, or replace one entirely: for new files and complete rewrites.',
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
    summary: 'replace one exact, unique occurrence of a string in a file: for targeted changes to an existing file.',
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
    summary: 'list a directory a few levels deep, with sizes (skips .git, node_modules and what .gitignore says unless asked).',
    description: [
      'List the files and directories under a directory of the workspace, `depth` levels deep (default 2), with their sizes in bytes. Directories end with "/".',
      'Unless include_ignored is true, .git, node_modules, __pycache__, .venv and what .gitignore files say are skipped, and a note names them. Over 1000 entries the listing is cut short and says so.',
    ].join('\n'),
    inputSchema: z.strictObject({
      path: workspacePath.optional().describe('Directory to list, relative to /workspace (default: "." for /workspace itself).'),
      depth: z.number().int().min(1).max(10).optional().describe('Levels to list, 1 to 10 (default 2).'),
      include_ignored: z.boolean().optional().describe('Also list what is skipped by default (default false).'),
    }),
  },
  search_files: {
    summary: 'search the files for a regular expression (ripgrep) and get the matching lines with their file and line number.',
    description: [
      'Search the workspace\'s files for a regular expression (ripgrep: Rust syntax, case-sensitive, `(?i)` for case-insensitive; escape ( [ { . * + ? | to match them literally) and return the matching lines as `path:line: text`.',
      `Skips what list_files skips, binary files and symlinks, unless path names them. At most ${maxSearchMatches} lines come back (the result says when there were more); long lines are cut around the match. An invalid pattern or glob is refused with the reason.`,
    ].join('\n'),
    inputSchema: z.strictObject({
      pattern: z.string().min(1).max(2000).describe('Regular expression, e.g. "def \\w+\\(" or "TODO|FIXME".'),
      path: workspacePath.optional().describe('Directory or file to search (default: the whole workspace).'),
      glob: z.string().min(1).max(500).optional().describe('Only files matching this glob, e.g. "*.py" or "src/**/*.ts"; "!*.min.js" excludes.'),
    }),
  },
  delete_file: {
    summary: 'delete a file or a directory with its contents.',
    description: [
      'Delete a file, a symbolic link (not its target), or a directory with everything in it, inside the workspace.',
      'Deletion is permanent. Deleting /workspace itself or anything outside it is refused; a missing path gives not_found.',
    ].join('\n'),
    inputSchema: z.strictObject({ path: workspacePath.describe('Path of the file or directory to delete, relative to /workspace.') }),
  },
  gui: {
    summary: 'an X desktop (screenshots, launching programs, mouse and keyboard) for graphical programs. It starts on your first gui call; graphical programs you start from the shell after that (DISPLAY is set) show up on it too.',
    description: [
      `Use the sandbox's X desktop (${screen.width}x${screen.height} pixels) like a person at a screen, to test and use graphical programs; people can watch it live. It starts on your first gui call; programs started from the shell afterwards (DISPLAY=:1) appear on it too.`,
      'Actions (other fields are refused):',
      "- screenshot; windows: the open windows, topmost first: title, program, focus, absolute position and size of each window's content (title bar excluded).",
      `- launch {command}: run a bash command line on the desktop, detached, in /workspace, its output to a log file the result names; waits up to ${launchWindowWaitMs / 1000} s for a window.`,
      '- click {x, y, button?}, double_click {x, y, button?}, move {x, y}, drag {x, y, to_x, to_y, button?}, scroll {x, y, direction, amount?}.',
      `- type {text}: into the focused window (click it first); a newline presses Return; at most ${maxTypeChars} characters.`,
      `- key {keys}: xdotool syntax: Return, Escape, ctrl+s, alt+F4; separated by spaces for a sequence ("ctrl+a Delete"); at most ${maxKeys}.`,
      `- script {script}: xdotool commands, one per line, in one call, e.g. "mousemove 100 200\\nclick 1". Each line runs on its own (chain on one line to use a search result: search --name Editor windowactivate %1); input, window and query commands only, sleep at most ${maxScriptSleepSeconds} s; no shell syntax (quote text); at most ${maxScriptLines} lines, ${scriptTimeoutMs / 1000} s.`,
      `Coordinates are screen pixels: x 0 to ${screen.width - 1} (left to right), y 0 to ${screen.height - 1} (top to bottom); off-screen ones are refused.`,
      'launch and the input actions return a screenshot once the screen is still (move only with screenshot: true; screenshot: false skips it): an image if your model takes images, else text. Only your latest images stay in view.',
      'Errors: invalid_request says what to fix; gui_failed gives the reason (the program exited, xdotool failed).',
    ].join('\n'),
    inputSchema: z
      .strictObject({
        action: guiFieldSchemas.action.describe('What to do; the description lists the fields of each action.'),
        x: guiFieldSchemas.x.optional().describe('Screen x in pixels (0 = left edge).'),
        y: guiFieldSchemas.y.optional().describe('Screen y in pixels (0 = top edge).'),
        to_x: guiFieldSchemas.to_x.optional().describe('drag: where to release, x.'),
        to_y: guiFieldSchemas.to_y.optional().describe('drag: where to release, y.'),
        button: guiFieldSchemas.button.optional().describe('Mouse button (default left).'),
        direction: guiFieldSchemas.direction.optional().describe('scroll direction.'),
        amount: guiFieldSchemas.amount.optional().describe('scroll steps (default 3).'),
        text: guiFieldSchemas.text.optional().describe('type: the text.'),
        keys: guiFieldSchemas.keys.optional().describe('key: e.g. "ctrl+s".'),
        command: guiFieldSchemas.command.optional().describe('launch: e.g. "xterm".'),
        script: guiFieldSchemas.script.optional().describe('script: xdotool commands, one per line.'),
        screenshot: guiFieldSchemas.screenshot.optional().describe('Return a screenshot after the action (default true; false for move).'),
      })
      .superRefine(checkGuiFields),
  },
  recall: {
    summary: 'search everything that happened in this job (commands, outputs, files read and written, your notes), or read a stored output back by its handle.',
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
    summary: 'end the job with a summary for the user. Nothing runs after it.',
    description: [
      'End the job. Call this once, when the task is done (or when you are certain it cannot be done), after verifying your work.',
      'The summary is shown to the user along with the workspace, which is handed back as a zip archive: say what you built or changed, where the important files are, how to run or use the result, how you verified it, and anything left undone or that the user should know.',
      'No more tool calls run after this one.',
    ].join('\n'),
    inputSchema: z.strictObject({
      summary: z.string().min(1).max(20_000).describe('What was done, where the results are, how it was verified, and any open issues. Plain text or Markdown.'),
    }),
  },
} as const satisfies Record<string, { summary: string; description: string; inputSchema: z.ZodType }>;

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
export function modelTools(names: readonly ToolName[] = toolNames): ToolSet {
  const tools: ToolSet = {};
  for (const name of names) {
    const { description, inputSchema } = toolDefinitions[name];
    tools[name] = tool({ description, inputSchema: inputSchema as z.ZodType<Record<string, unknown>> });
  }
  return tools;
}
