// POST /schedule as multipart/form-data: the task and options as fields, files for the workspace as parts. Fields:
//   task      the task (text)
//   job       the JSON options, the same object as a JSON body (scheduleRequest); `task` may be in it instead of the
//             task field, not in both
//   files     any number: each file's content, placed at its filename (a relative path, e.g. "src/app.py")
//   archive   at most one: a tar, tar.gz (tgz) or zip file, unpacked into the workspace
// Parts arrive in order and are written as they stream into a staging directory of their own (<data dir>/uploads/<id>/
// workspace) through an UploadTree, which enforces the rules and limits; any refusal, a limit, a client that goes away
// or a body the schema then refuses deletes the whole staging directory, so a refused upload leaves nothing behind.
// The job service moves the tree into jobs/<id>/workspace in one rename when the job is created.
import { randomBytes } from 'node:crypto';
import { mkdir, readdir, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { Multipart } from '@fastify/multipart';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { Config } from '../config.ts';
import { invalidRequest, WorkcellError } from '../errors.ts';
import { unpackArchive } from '../jobs/inputs/archive.ts';
import { UploadTree, type UploadLimits } from '../jobs/inputs/upload-tree.ts';

/** Files received for a new job's workspace, waiting in their staging directory. */
export interface StagedUpload {
  /** The staging directory: deleted when the upload is discarded. */
  dir: string;
  /** The tree that becomes the job's workspace. */
  workspace: string;
  entries: number;
  bytes: number;
  /** About what the tree takes on the job's disk (UploadTree.diskBytes). */
  diskBytes: number;
}

/** Staging directories older than this were left by a server that died while receiving them. */
const staleStagingMs = 24 * 3600 * 1000;

/** Reads a multipart POST /schedule: the body for the schema, and the staged files (undefined when none came). */
export async function receiveScheduleUpload(request: FastifyRequest, config: Config): Promise<{ body: Record<string, unknown>; upload: StagedUpload | undefined }> {
  const limits: UploadLimits = { maxBytes: config.uploadMaxBytes, maxEntries: config.uploadMaxFiles, maxFileBytes: config.uploadMaxFileBytes };
  const uploads = join(config.dataDir, 'uploads');
  await mkdir(uploads, { recursive: true, mode: 0o700 });
  await removeStaleStaging(uploads);
  const dir = join(uploads, randomBytes(12).toString('hex'));
  const workspace = join(dir, 'workspace');
  await mkdir(dir, { mode: 0o700 });
  try {
    await mkdir(workspace, { mode: 0o700 });
    const tree = new UploadTree(workspace, limits);
    let task: string | undefined;
    let job: Record<string, unknown> | undefined;
    let archives = 0;
    const parts = request.parts({
      preservePath: true, // a files part's filename is its path in the workspace
      limits: { fields: 16, fieldSize: config.maxBodyBytes, fieldNameSize: 100, files: config.uploadMaxFiles + 1, fileSize: config.uploadMaxBytes, parts: config.uploadMaxFiles + 16, headerPairs: 100 },
    });
    for await (const part of readParts(parts)) {
      if (part.type === 'field') {
        if (part.valueTruncated) throw new WorkcellError('payload_too_large', `the ${part.fieldname} field is larger than ${config.maxBodyBytes} bytes (WORKCELL_MAX_BODY_BYTES)`);
        if (part.fieldname === 'task') task = onlyOnce(task, 'task', String(part.value));
        else if (part.fieldname === 'job') job = onlyOnce(job, 'job', jobOptions(part.value));
        else throw invalidRequest(`unknown field ${JSON.stringify(part.fieldname)}: a multipart POST /schedule takes the fields task and job and the file parts files and archive`);
        continue;
      }
      try {
        if (part.fieldname === 'files') {
          if (part.filename === '') throw invalidRequest('a files part has no filename: give each file part a filename, its path in the workspace (e.g. src/app.py)');
          await tree.file('files part', part.filename, part.file);
        } else if (part.fieldname === 'archive') {
          if (++archives > 1) throw invalidRequest('more than one archive part: send at most one archive (tar, tar.gz or zip); add single files as files parts');
          await unpackArchive(part.file, tree, limits, join(dir, 'archive.zip'));
        } else {
          throw invalidRequest(`unknown file part ${JSON.stringify(part.fieldname)}: send files as files parts and one tar or zip as the archive part`);
        }
      } catch (error) {
        // A part cut at the size limit reads as a short (or broken) file: say what happened.
        if (part.file.truncated) throw new WorkcellError('payload_too_large', `the ${part.fieldname} part ${JSON.stringify(part.filename)} is larger than ${config.uploadMaxBytes} bytes (WORKCELL_UPLOAD_MAX_BYTES)`);
        throw error;
      }
      if (part.file.truncated) throw new WorkcellError('payload_too_large', `the ${part.fieldname} part ${JSON.stringify(part.filename)} is larger than ${config.uploadMaxBytes} bytes (WORKCELL_UPLOAD_MAX_BYTES)`);
    }
    if (job !== undefined && 'task' in job && task !== undefined) throw invalidRequest('the task is given twice, in the task field and in the job field: send it once');
    const body = { ...job, ...(task === undefined ? {} : { task }) };
    if (tree.entries === 0) {
      await rm(dir, { recursive: true, force: true });
      return { body, upload: undefined };
    }
    await tree.finish();
    return { body, upload: { dir, workspace, entries: tree.entries, bytes: tree.bytes, diskBytes: tree.diskBytes } };
  } catch (error) {
    await rm(dir, { recursive: true, force: true });
    drainRequest(request);
    throw error;
  }
}

/** The parts, with the multipart parser's own errors (limits, malformed bodies) turned into clear 4xx. */
async function* readParts(parts: AsyncIterableIterator<Multipart>): AsyncGenerator<Multipart> {
  try {
    for await (const part of parts) yield part;
  } catch (error) {
    throw multipartProblem(error);
  }
}

function multipartProblem(error: unknown): unknown {
  if (error instanceof WorkcellError) return error;
  const code = error instanceof Error && 'code' in error ? String(error.code) : '';
  const message = error instanceof Error ? error.message : String(error);
  switch (code) {
    case 'FST_REQ_FILE_TOO_LARGE':
      return new WorkcellError('payload_too_large', 'a file part is larger than WORKCELL_UPLOAD_MAX_BYTES');
    case 'FST_FILES_LIMIT':
    case 'FST_PARTS_LIMIT':
      return new WorkcellError('payload_too_large', 'the body has more parts than an upload may (WORKCELL_UPLOAD_MAX_FILES)');
    case 'FST_FIELDS_LIMIT':
      return new WorkcellError('payload_too_large', 'the body has more fields than POST /schedule takes (task and job)');
    case 'FST_INVALID_JSON_FIELD_ERROR':
      return invalidRequest('the job field is not valid JSON: send the options as a JSON object');
  }
  const status = error instanceof Error && 'statusCode' in error ? Number(error.statusCode) : undefined;
  if (status === undefined || (status >= 400 && status < 500)) return invalidRequest(`the multipart/form-data body cannot be read (${message}): send a complete multipart body`);
  return error;
}

function onlyOnce<T>(previous: T | undefined, field: string, value: T): T {
  if (previous !== undefined) throw invalidRequest(`the ${field} field is given twice: send it once`);
  return value;
}

/** The job field: a JSON object (parsed by the parser when its part says application/json). */
function jobOptions(value: unknown): Record<string, unknown> {
  let parsed = value;
  if (typeof value === 'string') {
    try {
      parsed = JSON.parse(value);
    } catch (error) {
      throw invalidRequest(`the job field is not valid JSON (${error instanceof Error ? error.message : String(error)}): send the options as a JSON object, e.g. {"limits": {"max_steps": 20}}`);
    }
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw invalidRequest('the job field must be a JSON object with the options of POST /schedule');
  return parsed as Record<string, unknown>;
}

/**
 * After a refusal the rest of the body is read and dropped, so the client can finish sending and read the answer
 * (a server that stops reading leaves it blocked); the answer closes the connection.
 */
function drainRequest(request: FastifyRequest): void {
  request.raw.unpipe();
  request.raw.resume();
}

async function removeStaleStaging(uploads: string): Promise<void> {
  const now = Date.now();
  for (const name of await readdir(uploads).catch(() => [])) {
    const info = await stat(join(uploads, name)).catch(() => undefined);
    if (info !== undefined && now - info.mtimeMs > staleStagingMs) await rm(join(uploads, name), { recursive: true, force: true });
  }
}

// The staged upload travels from the route's preValidation hook (which reads it) to its handler (which schedules the
// job); one that never reaches the handler (a body the schema refuses) is deleted before the answer is sent
// (releaseUpload in the route's onSend), or when the connection closes (a client that went away).
const held = new WeakMap<FastifyRequest, StagedUpload>();

export function holdUpload(request: FastifyRequest, reply: FastifyReply, upload: StagedUpload): void {
  held.set(request, upload);
  reply.raw.once('close', () => {
    if (held.get(request) === upload) {
      held.delete(request);
      void discardUpload(upload);
    }
  });
}

/** The request's staged upload, now the caller's to place or discard. */
export function takeUpload(request: FastifyRequest): StagedUpload | undefined {
  const upload = held.get(request);
  held.delete(request);
  return upload;
}

export async function discardUpload(upload: StagedUpload | undefined): Promise<void> {
  if (upload !== undefined) await rm(upload.dir, { recursive: true, force: true });
}

/** Deletes the request's staged upload if nothing took it. */
export async function releaseUpload(request: FastifyRequest): Promise<void> {
  await discardUpload(takeUpload(request));
}
