// The tools as the model sees them: names, descriptions and input schemas. This is product surface: the model's
// whole knowledge of what it can do in the sandbox comes from these words, so each description says what the tool
// does, its limits (timeouts, size caps, truncation) and the errors it can return. Execution lives in run-tool.ts
// (one place for validation, errors, truncation and timing); this file must stay free of behaviour.
import { tool, type ToolSet } from 'ai';
import { z } from 'zod';
import { checkGuiFields, defaultScreen as screen, guiFieldSchemas, launchWindowWaitMs, maxKeys, maxScriptLines, maxScrollAmount, maxTypeChars, scriptTimeoutMs } from '../../sandboxd/gui/gui-request.ts';
import { allowedScriptCommands, maxScriptSleepSeconds } from '../../sandboxd/gui/xdotool-script.ts';
import { codeLanguages, maxCodeChars, maxFileBytes, runCodeDefaultTimeoutMs, runCodeMaxTimeoutMs } from '../../sandboxd/protocol.ts';

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
  run_code: {
    description: [
      'Run Python, TypeScript or JavaScript code in a Jupyter kernel inside the sandbox, like a notebook cell, and get back what it printed (stdout, stderr), the value of its last expression, the images it displayed (plots) and any error with its traceback.',
      'Each language has one kernel for the whole job that keeps its state between calls: variables, imports, functions and classes defined in one call exist in the next. The first call of a language starts its kernel (a few seconds). The working directory is /workspace.',
      '- python: IPython (ipykernel) with numpy, pandas and matplotlib. A matplotlib plot (plt.show(), or a figure as the last expression) comes back as a PNG image; `!command` runs a shell command; `%timeit` and other IPython magics work.',
      "- typescript: tslab. Each call is type-checked before it runs: a type error is reported as an error and nothing of the call runs. Node's modules can be imported (import * as fs from \"fs\"); top-level await works.",
      '- javascript: tslab in JavaScript mode (Node 24): same as typescript without types.',
      `timeout_ms bounds the execution (default ${runCodeDefaultTimeoutMs} ms, at most ${runCodeMaxTimeoutMs} ms); starting the kernel does not count. At the timeout the code is interrupted (KeyboardInterrupt in Python) and the kernel keeps its state. If it does not stop within seconds, its kernel is replaced by a new one and the state is lost; a kernel that dies (os._exit, a crash, the memory limit) is restarted, also losing its state. The result says when that happens: run your setup code again.`,
      `Printed output beyond about 768 KB per call keeps only its beginning and end, at most 8 images come back per call, and you see at most ${modelOutputMaxChars} characters (the beginning and the end). For large data, save it to a file and look at parts of it; save many plots to files (plt.savefig) instead of showing them. Images reach you as images when your model accepts them; only the latest ones stay in view. There is no input: input() and prompts fail.`,
      'The result starts with the status: ok, error (an exception, or a compile or type error), timeout, or kernel_died. Invalid arguments (an unknown language, empty code, a timeout out of range) are refused with a message saying what to fix; unavailable means Jupyter could not start (the message says why).',
      `Use shell for commands, builds and tests; use run_code to compute, explore data and plot step by step. Code longer than ${maxCodeChars} characters belongs in a file (write_file), run with the shell.`,
    ].join('\n'),
    inputSchema: z.strictObject({
      language: z.enum(codeLanguages).describe('The kernel to run the code in: python, typescript or javascript.'),
      code: z
        .string()
        .min(1)
        .max(maxCodeChars)
        .describe('The code to run, one or more lines, like a notebook cell: the value of its last expression is returned (python, typescript; javascript prints it).'),
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
  gui: {
    description: [
      `Use the sandbox's X desktop (${screen.width}x${screen.height} pixels, openbox window manager) as a person at a screen would: take screenshots, start programs, click, type and press keys. It is for testing and using graphical programs (a GUI app you built, a browser, a terminal window); people can watch the same desktop live and take it over.`,
      'The desktop starts on your first gui call (about a second). Once it runs, graphical programs started from the shell (DISPLAY=:1 is set there, e.g. `python3 app.py &`) appear on it too.',
      'Actions and the fields each takes (any other field is refused):',
      '- screenshot: a PNG of the whole screen, and the list of windows.',
      '- windows: the open windows, topmost first: title, program, the active (focused) one, and absolute positions in screen pixels: "content" is the window\'s own area (x, y of its top-left corner, width, height), without the title bar; click inside it.',
      `- launch {command}: start a program on the desktop, e.g. "xterm" or "python3 /workspace/app.py": a bash command line run in /workspace, detached (it keeps running), its output appended to a log file the result names (read it with the shell). Waits up to ${launchWindowWaitMs / 1000} s for the program's first window and reports it; a program that exits at once with an error fails with its output.`,
      '- click {x, y, button?}: move the pointer to (x, y) and click; button is left (default), middle or right. double_click {x, y, button?}. move {x, y}: only move the pointer (hover).',
      '- drag {x, y, to_x, to_y, button?}: press at (x, y), move to (to_x, to_y), release.',
      `- scroll {x, y, direction, amount?}: turn the mouse wheel up, down, left or right by amount steps (default 3, at most ${maxScrollAmount}) with the pointer at (x, y).`,
      `- type {text}: type text into the window that has the keyboard focus (click it first); a newline presses Return. At most ${maxTypeChars} characters (about 80 a second).`,
      `- key {keys}: press keys in xdotool syntax: a key name (Return, Escape, Tab, BackSpace, Delete, Up, Down, Page_Down, Home, F5, a, space, slash), combinations joined with + (ctrl+s, ctrl+shift+t, alt+F4), several separated by spaces to press one after another ("ctrl+a Delete"). At most ${maxKeys} keys.`,
      `- script {script}: several xdotool commands, one per line, run in order in one call, e.g. "mousemove 100 200\\nclick 1\\ntype \\"hello world\\"\\nkey Return". Commands: ${[...allowedScriptCommands].join(', ')} (sleep at most ${maxScriptSleepSeconds} s). It is not a shell: no pipes, redirections, ";" or variables; quote text with spaces or special characters. At most ${maxScriptLines} lines and ${scriptTimeoutMs / 1000} s; a line that fails stops the script and the error says which.`,
      `Coordinates are screen pixels: x from 0 at the left edge to ${screen.width - 1}, y from 0 at the top to ${screen.height - 1}; coordinates off the screen are refused. Take positions from a screenshot or from the windows action.`,
      'After launch, click, double_click, drag, scroll, type, key and script you get a screenshot taken once the screen has stopped changing (move: only with screenshot: true); pass screenshot: false to skip it. Screenshots reach you as images when your model accepts images, otherwise as text (the screen size and the windows); only your latest screenshots stay in view as images, older ones become a note.',
      'Errors: invalid_request (a missing or unexpected field, coordinates off the screen, an unknown key name, a script line that is not allowed) says what to fix; gui_failed (the program exited at once, an xdotool command failed, e.g. a search found no window) carries the reason.',
    ].join('\n'),
    inputSchema: z
      .strictObject({
        action: guiFieldSchemas.action.describe('What to do: screenshot, windows, launch, click, double_click, move, drag, scroll, type, key or script. See the tool description for the fields each takes.'),
        x: guiFieldSchemas.x.optional().describe(`Screen x in pixels, 0 (left edge) to ${screen.width - 1}: where to click, double_click, move, scroll or start a drag.`),
        y: guiFieldSchemas.y.optional().describe(`Screen y in pixels, 0 (top edge) to ${screen.height - 1}.`),
        to_x: guiFieldSchemas.to_x.optional().describe('drag: where to release the button, screen x.'),
        to_y: guiFieldSchemas.to_y.optional().describe('drag: where to release the button, screen y.'),
        button: guiFieldSchemas.button.optional().describe('click, double_click, drag: left (default), middle or right.'),
        direction: guiFieldSchemas.direction.optional().describe('scroll: up, down, left or right.'),
        amount: guiFieldSchemas.amount.optional().describe(`scroll: wheel steps, 1 to ${maxScrollAmount} (default 3).`),
        text: guiFieldSchemas.text.optional().describe('type: the text to type into the focused window.'),
        keys: guiFieldSchemas.keys.optional().describe('key: keys in xdotool syntax, e.g. "Return", "ctrl+s", "ctrl+a Delete".'),
        command: guiFieldSchemas.command.optional().describe('launch: the command line to start, e.g. "xterm".'),
        script: guiFieldSchemas.script.optional().describe('script: xdotool commands, one per line.'),
        screenshot: guiFieldSchemas.screenshot.optional().describe('Whether to return a screenshot after the action (default true, false for move).'),
      })
      .superRefine(checkGuiFields),
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
