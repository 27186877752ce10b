// GET, PUT and DELETE /jobs/:id/files/<path>: a job's workspace over REST, while the job runs and after it ends.
// While it runs, every operation goes through its sandbox's sandboxd (the sandbox's own view: the only correct one for a
// microVM, whose disk the host never mounts); after it ends, through the host's copy, jobs/<id>/workspace. Both sides
// run sandboxd/files/raw-files.ts: paths confined to the workspace, no symbolic link ever followed, only regular files
// read, writes to a temporary file renamed into place, strong ETags (SHA-256) with If-Match / If-None-Match.
// Responses that carry a file's bytes (written by the agent: hostile) never run as a page on the API's origin:
// `Content-Security-Policy: sandbox`, `nosniff`, and active types (HTML, SVG, XML, PDF) as attachments.
// Every operation, refused ones included, goes to the job's audit log with who did it (the API key id, or "local").
// A change to a finished job's workspace is what a continued run starts from; its zip is rebuilt (job-artifacts.ts).
import { PassThrough, Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { errorMessage, WorkcellError, type ErrorCode } from '../../errors.ts';
import { appendApiFileEntry, type FileOperation } from '../../jobs/audit-log.ts';
import { scheduleArtifactsRefresh } from '../../jobs/job-artifacts.ts';
import { hostFileCaps, sandboxLimits } from '../../jobs/job-limits.ts';
import type { Job } from '../../store/types.ts';
import { SandboxdError, type SandboxdChannel } from '../../runtimes/sandboxd-client.ts';
import { deleteSandboxFile, getSandboxFile, putSandboxFile } from '../../runtimes/sandboxd-files.ts';
import { SandboxdToolError } from '../../sandboxd/errors.ts';
import { activeContentTypes, HashCache } from '../../sandboxd/files/file-content.ts';
import { PreconditionFailed, WorkspaceRawFiles, type RawGetResult } from '../../sandboxd/files/raw-files.ts';
import { rawDirectoryListing, rawFileDeleteResponse, rawFileWriteResponse } from '../../sandboxd/protocol.ts';
import { runCommand, findExecutable } from '../../runtimes/probe.ts';
import { problemResponses, response, type DocumentedHeader } from '../openapi.ts';
import type { ApiContext, ZodApp } from '../server.ts';
import { requireJob } from './jobs.ts';

const jobId = z.string().max(100).describe('The job id (job_ and 26 characters)');
const fileParams = z.object({ id: jobId, '*': z.string().max(8192).describe('The path inside the workspace, e.g. src/index.ts (slashes as they are, each segment percent-encoded); empty for the root') });
const rootParams = z.object({ id: jobId });
const fileBytes = z.unknown().describe("The file's bytes; Content-Type says what they are (from the name and content; text gets charset=utf-8)");
const directoryListing = rawDirectoryListing.meta({
  id: 'DirectoryListing',
  description:
    'A directory: its entries sorted by name (name, type: file | directory | symlink | other, size, mtime, mode: the permission bits, etag: files, null past the ' +
    "listing's hashing budget (GET the file), target: symlinks, never followed), `truncated` past 10000 entries, `invalid_names`: entries whose names are not UTF-8 (not listed)",
});
const fileWritten = rawFileWriteResponse.meta({ id: 'FileWritten', description: 'The file written: its path, size, new ETag, and whether it was created' });
const fileDeleted = rawFileDeleteResponse.meta({ id: 'FileDeleted', description: 'What was deleted: its path and type' });
const etagHeader = { etag: { type: 'string', description: 'The strong ETag: the SHA-256 of the content, quoted' } } satisfies Record<string, DocumentedHeader>;
const noSuchJob = "No job with this id (or not one of this key's)";
const fileProblems = {
  400: 'The path is invalid (empty where a file is needed, not relative, too long)',
  403: "The Host or Origin is refused, or the path leads through a symbolic link or out of the workspace (links are never followed)",
  404: `${noSuchJob}, or nothing at this path`,
};
const pendingOrSandbox = 'the job is running but its sandbox is starting or stopping (Retry-After says when to try again)';

/** Seconds a client waits before retrying a running job whose sandbox is starting or stopping. */
const sandboxRetrySeconds = 2;
/** Response headers for a workspace file: never a page on the API's origin, never sniffed, always revalidated. */
const contentHeaders = {
  'content-security-policy': "sandbox; default-src 'none'",
  'x-content-type-options': 'nosniff',
  'cache-control': 'no-cache',
};

type Backend = { kind: 'sandbox'; client: SandboxdChannel } | { kind: 'host'; files: WorkspaceRawFiles; job: Job };

function header(request: FastifyRequest, name: string): string | undefined {
  const value = request.headers[name];
  return Array.isArray(value) ? value.join(', ') : value;
}

const codeFor: Record<string, ErrorCode> = {
  invalid_request: 'invalid_request',
  not_found: 'not_found',
  path_outside_workspace: 'forbidden',
  not_a_file: 'conflict',
  not_a_directory: 'conflict',
  not_empty: 'conflict',
  too_large: 'payload_too_large',
  precondition_failed: 'precondition_failed',
};

/** The API's error for what the file layer (host or sandbox) refused; the sandbox going away mid-call is a 409. */
function apiError(error: unknown, job: Job): unknown {
  if (error instanceof WorkcellError) return error;
  if (error instanceof SandboxdToolError || (error instanceof SandboxdError && error.code in codeFor)) {
    const code = codeFor[error.code] ?? 'internal';
    return new WorkcellError(code, error.message, error instanceof PreconditionFailed && error.etag !== undefined ? { details: { etag: error.etag } } : undefined);
  }
  if (error instanceof SandboxdError) {
    if (error.code === 'unreachable' || error.code === 'unavailable') {
      return new WorkcellError('conflict', `the sandbox of job ${job.id} stopped answering during the request (the job may be ending): try again in a moment; once the job has ended its final workspace is served`);
    }
    return new WorkcellError('sandbox_failed', `the sandbox of job ${job.id} answered the file request wrongly (${error.message})`);
  }
  return error;
}

/** The failure's code for the audit log. */
function auditCode(error: unknown): string {
  if (error instanceof SandboxdToolError || error instanceof SandboxdError || error instanceof WorkcellError) return error.code;
  return 'internal';
}

/** Counts a request body on its way and fails it past `maxBytes`, so the API answers 413 itself whatever the far side does. */
function byteCap(maxBytes: number, path: string): Transform {
  let seen = 0;
  return new Transform({
    transform(chunk: Buffer, _encoding, callback: TransformCallback) {
      seen += chunk.length;
      if (seen > maxBytes) return callback(new WorkcellError('payload_too_large', `the body for ${JSON.stringify(path)} is larger than the ${maxBytes} bytes allowed (WORKCELL_FILES_MAX_BYTES, and the room left on the job's disk)`));
      callback(null, chunk);
    },
  });
}

/** Bytes the workspace takes on disk (du: lstat only, never follows a link). */
async function workspaceUsedBytes(workspace: string): Promise<number> {
  const du = findExecutable('du');
  if (du === undefined) return 0;
  const result = await runCommand(du, ['-s', '-x', '-B1', '--', workspace], { timeoutMs: 120_000 });
  const used = Number(result.stdout.split(/\s/)[0]);
  return result.ok && Number.isFinite(used) ? used : 0;
}

export function registerFileRoutes(app: ZodApp, context: ApiContext): void {
  // One instance per workspace, so writes to one path from two requests take turns (raw-files.ts locks per path).
  const hostFiles = new Map<string, WorkspaceRawFiles>();
  const hashes = new HashCache();
  const hostFilesFor = (workspace: string): WorkspaceRawFiles => {
    let files = hostFiles.get(workspace);
    if (files === undefined) {
      files = new WorkspaceRawFiles(workspace, { hashes });
      hostFiles.set(workspace, files);
      if (hostFiles.size > 256) hostFiles.delete(hostFiles.keys().next().value as string);
    }
    return files;
  };

  /** Where the job's files are now: its sandbox while it runs, the host's copy once it has ended (or before it starts, read-only). */
  function backendFor(job: Job, reply: FastifyReply, writing: boolean): Backend {
    if (job.status === 'running') {
      const channel = context.jobs.sandboxChannel(job);
      if (channel === undefined) {
        reply.header('retry-after', String(sandboxRetrySeconds));
        throw new WorkcellError('conflict', `job ${job.id} is running but its sandbox is not up (it is starting or stopping): try again in a moment`);
      }
      return { kind: 'sandbox', client: channel };
    }
    if (job.status === 'pending' && writing) {
      throw new WorkcellError('conflict', `job ${job.id} has not started yet: its workspace takes changes once it runs (through its sandbox) or after it ends; to start it with files, send them with POST /schedule (multipart/form-data)`);
    }
    return { kind: 'host', files: hostFilesFor(context.jobs.jobFiles(job).workspace), job };
  }

  async function audit(job: Job, request: FastifyRequest, op: FileOperation, path: string, outcome: { error?: unknown; bytes?: number; etag?: string }): Promise<void> {
    try {
      await appendApiFileEntry(
        context.jobs.paths(job.id).audit,
        {
          op,
          path,
          ok: outcome.error === undefined,
          ...(outcome.error === undefined ? {} : { error: auditCode(outcome.error) }),
          by: request.owner ?? 'local',
          ...(outcome.bytes === undefined ? {} : { bytes: outcome.bytes }),
          ...(outcome.etag === undefined ? {} : { etag: outcome.etag }),
        },
        { step: job.steps, maxBytes: hostFileCaps(context.config, job.limits).audit_log_mb },
      );
    } catch (error) {
      request.log.error({ err: error, jobId: job.id }, `writing the audit log failed: ${errorMessage(error)}`);
    }
  }

  async function get(request: FastifyRequest<{ Params: { id: string; '*'?: string } }>, reply: FastifyReply) {
    const job = await requireJob(context, request);
    const path = request.params['*'] ?? '';
    const headOnly = request.method === 'HEAD';
    const options = { ifNoneMatch: header(request, 'if-none-match'), headOnly };
    let result: RawGetResult;
    try {
      const backend = backendFor(job, reply, false);
      const abort = new AbortController();
      request.raw.once('close', () => abort.abort());
      result = backend.kind === 'sandbox' ? await getSandboxFile(backend.client, path, { ...options, signal: abort.signal }) : await backend.files.get(path, options);
    } catch (error) {
      await audit(job, request, 'read', path, { error });
      const mapped = apiError(error, job);
      if (mapped instanceof WorkcellError && typeof mapped.details?.etag === 'string') reply.header('etag', mapped.details.etag);
      throw mapped;
    }
    reply.header('etag', result.etag).headers(contentHeaders);
    if (result.kind === 'not-modified') {
      await audit(job, request, 'read', path, { etag: result.etag });
      return reply.code(304).send();
    }
    if (result.kind === 'directory') {
      await audit(job, request, 'list', path, { etag: result.etag });
      return reply.type('application/json; charset=utf-8').send(result.listing);
    }
    await audit(job, request, 'read', path, { bytes: result.size, etag: result.etag });
    const name = result.path.split('/').at(-1) ?? 'file';
    const disposition = activeContentTypes.has(result.contentType.split(';')[0] ?? '') ? 'attachment' : 'inline';
    reply
      .type(result.contentType)
      .header('content-length', result.size)
      .header('last-modified', new Date(result.mtime).toUTCString())
      .header('content-disposition', `${disposition}; filename*=UTF-8''${encodeURIComponent(name)}`);
    if (headOnly) {
      result.body.destroy();
      return reply.send();
    }
    // The file's stream fails if the file changes while it is sent: the client gets less than Content-Length.
    const body = new PassThrough();
    pipeline(result.body, body, () => undefined);
    return reply.send(body);
  }

  const getSchema = (params: typeof fileParams | typeof rootParams, operationId: string, summary: string) => ({
    operationId,
    tags: ['files'],
    summary,
    description:
      "A file: its bytes, with `ETag` (the SHA-256 of the content, a strong validator), `Content-Type` (from its name and content; text gets charset=utf-8), `Last-Modified`; `If-None-Match` gives 304. " +
      'A directory (the path names one, or is empty for the workspace root): JSON `{path, type: "directory", entries: [{name, type: file|directory|symlink|other, size, mtime, mode, etag (files; null past the listing\'s hashing budget: GET the file), target (symlinks)}], truncated, invalid_names}` with its own ETag. ' +
      'While the job runs the sandbox answers (what the agent sees); after it ends, its final workspace. Symbolic links are never followed (403), FIFOs, sockets and devices are never opened (409). ' +
      "Files are served with `Content-Security-Policy: sandbox`, and HTML, SVG, XML and PDF as attachments: the agent wrote them, they never run on the API's origin.",
    params,
    headerParams: z.object({ 'if-none-match': z.string().optional().describe('The ETag you have: 304 when it is still current') }),
    response: {
      200: {
        description: "The file's bytes, or the directory's listing (application/json)",
        content: { 'application/json': { schema: directoryListing }, 'application/octet-stream': { schema: fileBytes } },
        headers: {
          ...etagHeader,
          'last-modified': { type: 'string', description: "The file's modification time" },
          'content-disposition': { type: 'string', description: 'inline, or attachment for active types (HTML, SVG, XML, PDF), with the file name' },
        },
      },
      304: z.null().describe('Not modified: the If-None-Match ETag is current'),
      ...problemResponses({ ...fileProblems, 409: `A FIFO, socket or device is at the path (never opened), or ${pendingOrSandbox}` }),
    },
  });
  app.get('/jobs/:id/files', { schema: getSchema(rootParams, 'listWorkspace', "List the root of the job's workspace") }, get);
  app.get('/jobs/:id/files/*', { schema: getSchema(fileParams, 'readFile', "Read a file of the job's workspace, or list a directory") }, get);

  // PUT bodies are any bytes: streamed as they come, never parsed or held in memory, whatever their Content-Type.
  app.register(async (scope) => {
    scope.removeAllContentTypeParsers();
    scope.addContentTypeParser('*', (_request, _payload, done) => done(null));
    const typed = scope.withTypeProvider<ZodTypeProvider>();
    typed.put(
      '/jobs/:id/files/*',
      {
        schema: {
          operationId: 'writeFile',
          tags: ['files'],
          summary: "Create or replace a file of the job's workspace",
          description:
            'The body is the file\'s bytes (any Content-Type; up to WORKCELL_FILES_MAX_BYTES and the room on the job\'s disk, 413 beyond), streamed into a temporary file beside the target and renamed over it once complete: ' +
            'readers never see half a file and a failed upload changes nothing. Missing parent directories are made. A replaced file keeps its permission bits. ' +
            '`If-Match: <etag>` replaces only the version you read (412, with the current ETag, when someone or the agent changed it since); `If-None-Match: *` only creates. ' +
            'Answers 201 (created) or 200 (replaced) with `{path, size, etag, created}` and the new ETag. A directory, a symbolic link or a FIFO at the path is refused (409, 403). ' +
            'While the job runs the agent sees the file at once; a finished job\'s workspace is what a continued run starts from, and its artifacts.zip is rebuilt. 409 while the job is pending.',
          params: fileParams,
          headerParams: z.object({
            'if-match': z.string().optional().describe('The ETag you read: replace only that version (412 otherwise); `*`: only if a file is there'),
            'if-none-match': z.string().optional().describe('`*`: only create (412 when something is there)'),
          }),
          bodyContent: { 'application/octet-stream': z.unknown().describe("The file's bytes (any Content-Type is taken as bytes)") },
          response: {
            200: response('Replaced', fileWritten, { headers: etagHeader }),
            201: response('Created', fileWritten, { headers: etagHeader }),
            ...problemResponses({
              ...fileProblems,
              404: noSuchJob,
              409: `A directory, FIFO or other non-file is at the path, or the job is pending (send files with POST /schedule), or ${pendingOrSandbox}`,
              412: 'If-Match or If-None-Match failed: someone (or the agent) changed the file since you read it; the ETag header has the current one',
              413: "The body is larger than WORKCELL_FILES_MAX_BYTES or the room on the job's disk",
            }, { 412: etagHeader }),
          },
        },
      },
      async (request, reply) => {
        const job = await requireJob(context, request);
        const path = request.params['*'];
        const declared = request.headers['content-length'] === undefined ? undefined : Number(request.headers['content-length']);
        const conditions = { ifMatch: header(request, 'if-match'), ifNoneMatch: header(request, 'if-none-match') };
        try {
          const backend = backendFor(job, reply, true);
          let maxBytes = context.config.filesMaxBytes;
          if (backend.kind === 'host') {
            const room = sandboxLimits(context.config, job.limits).diskMb * 1024 * 1024 - (await workspaceUsedBytes(context.jobs.paths(job.id).workspace));
            maxBytes = Math.max(0, Math.min(maxBytes, room));
          }
          if (declared !== undefined && declared > maxBytes) {
            throw new WorkcellError('payload_too_large', `the body (${declared} bytes) is larger than the ${maxBytes} bytes allowed here (WORKCELL_FILES_MAX_BYTES is ${context.config.filesMaxBytes}; the job's disk, limits.disk_mb = ${sandboxLimits(context.config, job.limits).diskMb} MB, bounds it too)`);
          }
          // Through a pass-through: a far side that stops reading (a refusal) must not take the client's socket down
          // before the API has answered.
          const body = new PassThrough();
          const capped = byteCap(maxBytes, path);
          const bodyFailed = new Promise<never>((_resolve, reject) => capped.once('error', reject));
          bodyFailed.catch(() => undefined);
          request.raw.pipe(capped).pipe(body);
          const write = backend.kind === 'sandbox' ? putSandboxFile(backend.client, path, body, { ...conditions, maxBytes, declaredBytes: declared }) : backend.files.put(path, body, { ...conditions, maxBytes, declaredBytes: declared });
          const written = await Promise.race([write, bodyFailed]).finally(() => {
            request.raw.unpipe(capped);
            body.destroy();
          });
          await audit(job, request, 'write', path, { bytes: written.size, etag: written.etag });
          if (backend.kind === 'host') scheduleArtifactsRefresh(context.jobs, job.id, context.logger);
          return reply.code(written.created ? 201 : 200).header('etag', written.etag).send(written);
        } catch (error) {
          await audit(job, request, 'write', path, { error });
          const mapped = apiError(error, job);
          if (mapped instanceof WorkcellError && typeof mapped.details?.etag === 'string') reply.header('etag', mapped.details.etag);
          // A body left unread cannot be skipped on a kept-alive connection.
          if (!request.raw.complete) reply.header('connection', 'close');
          throw mapped;
        }
      },
    );
  });

  app.delete(
    '/jobs/:id/files/*',
    {
      schema: {
        operationId: 'deleteFile',
        tags: ['files'],
        summary: "Delete a file, a symbolic link or an empty directory of the job's workspace",
        description:
          'A symbolic link is removed itself, never what it points to. A directory that is not empty is refused (409): delete its entries first (the API never deletes a tree). ' +
          '`If-Match: <etag>` deletes only the version you read (412 otherwise; `*`: whatever is there). Answers `{path, type}`. 409 while the job is pending.',
        params: fileParams,
        headerParams: z.object({ 'if-match': z.string().optional().describe('The ETag you read: delete only that version (412 otherwise); `*`: whatever is there') }),
        response: {
          200: response('Deleted', fileDeleted),
          ...problemResponses({
            ...fileProblems,
            409: `The directory is not empty, or the job is pending, or ${pendingOrSandbox}`,
            412: 'If-Match failed: the file changed since you read it; the ETag header has the current one',
          }, { 412: etagHeader }),
        },
      },
    },
    async (request, reply) => {
      const job = await requireJob(context, request);
      const path = request.params['*'];
      const conditions = { ifMatch: header(request, 'if-match'), ifNoneMatch: header(request, 'if-none-match') };
      try {
        const backend = backendFor(job, reply, true);
        const deleted = backend.kind === 'sandbox' ? await deleteSandboxFile(backend.client, path, conditions) : await backend.files.delete(path, conditions);
        await audit(job, request, 'delete', path, {});
        if (backend.kind === 'host') scheduleArtifactsRefresh(context.jobs, job.id, context.logger);
        return deleted;
      } catch (error) {
        await audit(job, request, 'delete', path, { error });
        const mapped = apiError(error, job);
        if (mapped instanceof WorkcellError && typeof mapped.details?.etag === 'string') reply.header('etag', mapped.details.etag);
        throw mapped;
      }
    },
  );
}
