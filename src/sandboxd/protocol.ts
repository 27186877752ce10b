// The wire protocol between the worker and sandboxd: HTTP/1.1 with JSON bodies, `Authorization: Bearer <token>`.
// These schemas are the single definition of it; sandboxd validates requests with them and the client types its
// calls with them. Errors are `{error: {code, message}}` with a 4xx/5xx status.
import { z } from 'zod';
import { guiRequest, guiResponse } from './gui/gui-request.ts';

export const maxFileBytes = 10 * 1024 * 1024;

/** Names of shell sessions: they appear in logs and URLs (?session=), never in a shell command or a path. */
export const shellSessionName = z
  .string()
  .regex(/^[A-Za-z0-9_-]{1,32}$/, 'a session name is 1 to 32 letters, digits, "-" or "_", e.g. "main" or "server"');
export const defaultShellSession = 'main';
/** The most shell sessions a sandbox runs at once. */
export const maxShellSessions = 8;
export const shellExecRequest = z.object({
  command: z.string().min(1).max(1_000_000),
  timeout_ms: z.number().int().min(1).max(24 * 3600 * 1000).default(120_000),
  /** Which persistent bash runs the command; a new name starts a new session (up to a cap). */
  session: shellSessionName.default(defaultShellSession),
});
export const shellExecResponse = z.object({
  output: z.string(),
  exit_code: z.number().int().nullable(),
  timed_out: z.boolean(),
  /** Bytes of output dropped from the middle because the output exceeded sandboxd's buffer. */
  omitted_bytes: z.number().int(),
  /** True when the session had to be restarted (after a timeout that Ctrl-C could not end, or because bash exited or died): cwd and env reset. */
  session_restarted: z.boolean(),
  duration_ms: z.number(),
  /** Set when the command was still blocked reading the terminal (waiting for input) when it was interrupted. */
  waiting_for_input: z.boolean().optional(),
});

const path = z.string().max(4096);
export const readFileRequest = z.object({ path });
export const readFileResponse = z.object({ path: z.string(), content: z.string(), size: z.number().int() });
export const writeFileRequest = z.object({ path, content: z.string().max(maxFileBytes) });
export const writeFileResponse = z.object({ path: z.string(), size: z.number().int(), created: z.boolean() });
export const editFileRequest = z.object({ path, old_string: z.string().min(1), new_string: z.string() });
export const editFileResponse = z.object({ path: z.string(), size: z.number().int() });
export const listFilesRequest = z.object({
  path: path.default('.'),
  depth: z.number().int().min(1).max(20).default(2),
  /** List what is skipped by default too: .git, node_modules, __pycache__, .venv and what .gitignore/.ignore/.rgignore say. */
  include_ignored: z.boolean().default(false),
});
export const fileEntry = z.object({
  path: z.string(),
  type: z.enum(['file', 'directory', 'symlink', 'other']),
  size: z.number().int(),
});
/** An entry left out of a listing (not descended into): skipped by `default` (.git, node_modules...) or by an `ignore_file`. */
export const ignoredEntry = z.object({ path: z.string(), type: z.enum(['file', 'directory', 'symlink', 'other']), reason: z.enum(['default', 'ignore_file']) });
export const listFilesResponse = z.object({
  path: z.string(),
  entries: z.array(fileEntry),
  truncated: z.boolean(),
  /** What was left out (the first 100); ignored_count counts them all. */
  ignored: z.array(ignoredEntry).default([]),
  ignored_count: z.number().int().default(0),
});
// search_files: ripgrep over the workspace (files/search.ts), with the same ignore rules as list_files.
export const maxSearchMatches = 200;
export const searchFilesRequest = z.object({
  pattern: z.string().min(1).max(2000),
  path: path.default('.'),
  glob: z.string().min(1).max(500).optional(),
});
export const searchMatch = z.object({ path: z.string(), line: z.number().int(), text: z.string() });
export const searchFilesResponse = z.object({
  path: z.string(),
  matches: z.array(searchMatch),
  /** More lines matched than were returned (maxSearchMatches), or the search stopped at its time limit. */
  truncated: z.boolean(),
  /** Files with at least one match, among those searched before the search stopped. */
  files_with_matches: z.number().int(),
  /** Files searched (ripgrep's count); absent when the search was cut short. */
  files_searched: z.number().int().optional(),
});
export const deleteFileRequest = z.object({ path });
export const deleteFileResponse = z.object({ path: z.string(), type: z.enum(['file', 'directory', 'symlink', 'other']) });

// run_code: a stateful Jupyter kernel per language (sandboxd/code/). The timeout covers the execution, not the
// kernel's start; outputs come back in the order the kernel sent them, text capped head and tail, images as base64.
export const codeLanguages = ['python', 'typescript', 'javascript'] as const;
export type CodeLanguage = (typeof codeLanguages)[number];
export const maxCodeChars = 100_000;
export const runCodeDefaultTimeoutMs = 120_000;
export const runCodeMaxTimeoutMs = 3_600_000;
export const runCodeRequest = z.object({
  language: z.enum(codeLanguages),
  code: z.string().min(1).max(maxCodeChars),
  timeout_ms: z.number().int().min(1).max(runCodeMaxTimeoutMs).default(runCodeDefaultTimeoutMs),
});
export const codeOutput = z.discriminatedUnion('type', [
  z.object({ type: z.literal('stream'), name: z.enum(['stdout', 'stderr']), text: z.string() }),
  /** The value of the last expression (execute_result, text/plain). */
  z.object({ type: z.literal('result'), text: z.string() }),
  /** display() output without an image (text/plain, or a note naming the types it had). */
  z.object({ type: z.literal('display'), text: z.string() }),
  z.object({ type: z.literal('image'), mime_type: z.enum(['image/png', 'image/jpeg', 'image/gif']), data_base64: z.string(), text: z.string().optional() }),
  /** An exception or a compile error; traceback without ANSI colours. */
  z.object({ type: z.literal('error'), name: z.string(), message: z.string(), traceback: z.string() }),
]);
export type CodeOutput = z.infer<typeof codeOutput>;
export const runCodeResponse = z.object({
  language: z.enum(codeLanguages),
  /** ok; error: the code raised (or did not compile); timeout: interrupted at timeout_ms; kernel_died: the kernel process exited. */
  status: z.enum(['ok', 'error', 'timeout', 'kernel_died']),
  outputs: z.array(codeOutput),
  execution_count: z.number().int().nullable(),
  /** This call started a new kernel (the language's first call, or the previous kernel was gone). */
  kernel_started: z.boolean(),
  /** Variables, imports and definitions of earlier calls are gone: the kernel was replaced before or during this call. */
  state_lost: z.boolean(),
  /** What happened to the kernel besides running the code (restarted after a failed interrupt, died, replaced), for people and models. */
  notes: z.array(z.string()),
  /** Bytes of text output dropped from the middle, and outputs (displays, images) dropped over the caps. */
  omitted_bytes: z.number().int(),
  omitted_outputs: z.number().int(),
  /** Starting Jupyter and the kernel, when this call did. */
  startup_ms: z.number(),
  /** The execution itself. */
  duration_ms: z.number(),
});

// Files as raw bytes (files/raw-files.ts), for people's GET/PUT/DELETE /jobs/:id/files/<path> while the job runs: not
// the model's JSON tools. `GET|HEAD rawFilesPath?path=P` answers a file's bytes (headers: etag, content-type,
// content-length, last-modified, x-workcell-mode) or a directory's listing (JSON, rawDirectoryListing); `PUT ?path=P`
// takes the bytes as the body (streamed into a temporary file beside the target, renamed over it once complete);
// `DELETE ?path=P` removes a file, a symlink or an empty directory. PUT and DELETE honour If-Match and If-None-Match,
// GET If-None-Match (304). Paths never pass through a symbolic link. ETags are the SHA-256 of the content.
export const rawFilesPath = '/v1/files/raw';
/** Most entries a directory listing returns (sorted by name); the rest is reported as `truncated`. */
export const maxRawListingEntries = 10_000;
export const rawFileQuery = z.object({
  /** Workspace-relative, forward slashes; '' or '.' is the workspace root. */
  path: z.string().max(4096).default(''),
  /** Listings: `budget` hashes files for their ETags up to a byte budget (the rest get null), `all` hashes every file. */
  etags: z.enum(['budget', 'all']).default('budget'),
  /** PUT: the most bytes the body may have. */
  max_bytes: z.coerce.number().int().min(0).max(2 ** 50).default(1 << 30),
});
export const etagPattern = /^"[0-9a-f]{64}"$/;
export const rawEntryType = z.enum(['file', 'directory', 'symlink', 'other']);
export const rawListingEntry = z.object({
  name: z.string(),
  type: rawEntryType,
  /** Bytes (files and symlinks); 0 for the rest. */
  size: z.number().int(),
  mtime: z.string(),
  /** Permission bits (e.g. 0o755 = 493). */
  mode: z.number().int(),
  /** Files: the ETag GET would send; null when the listing's hashing budget ran out (GET the file for it). */
  etag: z.string().regex(etagPattern).nullable().optional(),
  /** Symlinks: the link's text (never followed). */
  target: z.string().optional(),
});
export const rawDirectoryListing = z.object({
  path: z.string(),
  type: z.literal('directory'),
  entries: z.array(rawListingEntry),
  /** More than maxRawListingEntries entries: the rest were left out. */
  truncated: z.boolean(),
  /** Entries whose names are not valid UTF-8: not listed (no URL can name them). */
  invalid_names: z.number().int(),
});
export const rawFileWriteResponse = z.object({ path: z.string(), size: z.number().int(), etag: z.string().regex(etagPattern), created: z.boolean() });
export const rawFileDeleteResponse = z.object({ path: z.string(), type: rawEntryType });

/**
 * A sandbox started ahead of its job (the warm pool, runtimes/pool/) is told once, after the job's workspace was
 * mounted at its workspace root, that the job has it: sandboxd enters the new workspace and takes the job's Jupyter
 * prefix (Jupyter has not started: nothing runs before the job does).
 */
/** The prefix Jupyter is served under for a job: the orchestrator's (api/routes/services.ts). */
export function jupyterBaseUrl(jobId: string): string {
  return `/jobs/${encodeURIComponent(jobId)}/jupyter/`;
}

export const attachRequest = z.object({ jupyter_base_url: z.string().regex(/^\/[^\s?#]*$/).optional() });
export const attachResponse = z.object({ attached: z.literal(true) });

export const errorCodes = [
  'unauthorized',
  'invalid_request',
  'not_found',
  'path_outside_workspace',
  'not_a_file',
  'not_a_directory',
  'binary_file',
  'too_large',
  'no_match',
  'multiple_matches',
  'precondition_failed',
  'not_empty',
  'unavailable',
  'gui_failed',
  'internal',
] as const;
export type SandboxdErrorCode = (typeof errorCodes)[number];
export const errorResponse = z.object({ error: z.object({ code: z.enum(errorCodes), message: z.string() }) });

/** Every route: path, request schema, response schema. */
export const routes = {
  shellExec: { path: '/v1/shell/exec', request: shellExecRequest, response: shellExecResponse },
  readFile: { path: '/v1/files/read', request: readFileRequest, response: readFileResponse },
  writeFile: { path: '/v1/files/write', request: writeFileRequest, response: writeFileResponse },
  editFile: { path: '/v1/files/edit', request: editFileRequest, response: editFileResponse },
  listFiles: { path: '/v1/files/list', request: listFilesRequest, response: listFilesResponse },
  searchFiles: { path: '/v1/files/search', request: searchFilesRequest, response: searchFilesResponse },
  deleteFile: { path: '/v1/files/delete', request: deleteFileRequest, response: deleteFileResponse },
  runCode: { path: '/v1/code/run', request: runCodeRequest, response: runCodeResponse },
  gui: { path: '/v1/gui', request: guiRequest, response: guiResponse },
  attach: { path: '/v1/attach', request: attachRequest, response: attachResponse },
} as const;
export type RouteName = keyof typeof routes;
export type RouteRequest<R extends RouteName> = z.input<(typeof routes)[R]['request']>;
export type RouteResponse<R extends RouteName> = z.infer<(typeof routes)[R]['response']>;

/** The first line sandboxd prints on stdout once it listens. Nothing else goes to stdout. */
export const readyLine = z.object({
  ready: z.literal(true),
  pid: z.number().int(),
  version: z.string(),
  /** The TCP port sandboxd bound, when started with `--listen HOST:PORT` (useful with port 0); absent on a unix socket. */
  port: z.number().int().optional(),
});
