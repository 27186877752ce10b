// The wire protocol between the worker and sandboxd: HTTP/1.1 with JSON bodies, `Authorization: Bearer <token>`.
// These schemas are the single definition of it; sandboxd validates requests with them and the client types its
// calls with them. Errors are `{error: {code, message}}` with a 4xx/5xx status.
import { z } from 'zod';

export const maxFileBytes = 10 * 1024 * 1024;

export const shellExecRequest = z.object({
  command: z.string().min(1).max(1_000_000),
  timeout_ms: z.number().int().min(1).max(24 * 3600 * 1000).default(120_000),
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
});

const path = z.string().max(4096);
export const readFileRequest = z.object({ path });
export const readFileResponse = z.object({ path: z.string(), content: z.string(), size: z.number().int() });
export const writeFileRequest = z.object({ path, content: z.string().max(maxFileBytes) });
export const writeFileResponse = z.object({ path: z.string(), size: z.number().int(), created: z.boolean() });
export const editFileRequest = z.object({ path, old_string: z.string().min(1), new_string: z.string() });
export const editFileResponse = z.object({ path: z.string(), size: z.number().int() });
export const listFilesRequest = z.object({ path: path.default('.'), depth: z.number().int().min(1).max(20).default(2) });
export const fileEntry = z.object({
  path: z.string(),
  type: z.enum(['file', 'directory', 'symlink', 'other']),
  size: z.number().int(),
});
export const listFilesResponse = z.object({ path: z.string(), entries: z.array(fileEntry), truncated: z.boolean() });
export const deleteFileRequest = z.object({ path });
export const deleteFileResponse = z.object({ path: z.string(), type: z.enum(['file', 'directory', 'symlink', 'other']) });

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
  deleteFile: { path: '/v1/files/delete', request: deleteFileRequest, response: deleteFileResponse },
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
