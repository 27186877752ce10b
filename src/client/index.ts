// workcell's typed client (the package export `workcell/client`): every call is type-checked against the types generated
// from the API's OpenAPI document (schema.d.ts, `npm run openapi`), over openapi-fetch. It runs wherever fetch does
// (Node, browsers, Deno, Bun): it must never import a node: module. It never repeats a request that changes something;
// only the read-only event stream reconnects (events.ts).
//
//   const workcell = createClient({ baseUrl: 'http://127.0.0.1:8080', apiKey: process.env.WORKCELL_API_KEY });
//   const { job_id } = await workcell.schedule('Add tests for src/parse.ts', { files: [{ path: 'src/parse.ts', content }] });
//   for await (const event of workcell.events(job_id)) console.log(event.type, event.data);
//   const patch = await workcell.patch(job_id);
import createFetchClient from 'openapi-fetch';
import { WorkcellApiError, WorkcellClientError } from './errors.ts';
import { followEvents, type EventsOptions } from './events.ts';
import type { components, paths } from './schema.d.ts';

export { WorkcellApiError, WorkcellClientError } from './errors.ts';
export type { EventsOptions } from './events.ts';

type Schemas = components['schemas'];
export type Job = Schemas['Job'];
export type JobStatus = Schemas['JobStatus'];
export type JobEvent = Schemas['JobEvent'];
export type JobList = Schemas['JobList'];
export type JobRun = Schemas['JobRun'];
export type Diff = Schemas['Diff'];
export type DirectoryListing = Schemas['DirectoryListing'];
export type FileWritten = Schemas['FileWritten'];
export type FileDeleted = Schemas['FileDeleted'];
export type MessageResult = Schemas['MessageResult'];
export type CancelResult = Schemas['CancelResult'];
export type Link = Schemas['Link'];
export type Health = Schemas['Health'];
export type Problem = Schemas['Problem'];
/** The JSON body of POST /schedule: the task and its options. */
export type ScheduleOptions = paths['/schedule']['post']['requestBody']['content']['application/json'];
export type ListQuery = NonNullable<paths['/jobs']['get']['parameters']['query']>;
/** pending, running, complete, error, cancelled */
export type JobState = JobStatus['status'];

/** The statuses a job ends in (until a message continues it). */
export const finalStates: readonly JobState[] = ['complete', 'error', 'cancelled'];
export const isFinal = (state: JobState): boolean => finalStates.includes(state);

export interface ClientOptions {
  /** Where the server is, e.g. http://127.0.0.1:8080 (`workcell serve`'s default). */
  baseUrl: string;
  /** Needed once the server has API keys (`workcell keys create`); sent as `Authorization: Bearer <key>`. */
  apiKey?: string;
  /** A fetch of your own (a proxy, a test double); default: globalThis.fetch. */
  fetch?: (request: Request) => Promise<Response>;
}

export interface CallOptions {
  signal?: AbortSignal;
}

/** A file for the new job's workspace: `path` is where it goes (relative, e.g. src/app.py). */
export interface UploadFile {
  path: string;
  content: Blob | Uint8Array | string;
}

export interface ScheduleUploads extends CallOptions {
  /** Files placed at their paths in /workspace (sent as multipart/form-data). */
  files?: readonly UploadFile[];
  /** One tar, tar.gz or zip unpacked into /workspace. */
  archive?: { content: Blob | Uint8Array; name?: string };
  /** Schedule once per key: a repeat with the same key returns the job the first made (`created: false`). */
  idempotencyKey?: string;
}

export interface FileContent {
  bytes: Uint8Array;
  /** The bytes as text, when the server says they are text (a charset in the Content-Type); else undefined. */
  text: string | undefined;
  /** The strong ETag (quoted SHA-256): pass it as `ifMatch` to write or remove only this version. */
  etag: string;
  contentType: string;
}

export type WorkspaceEntry = ({ type: 'file' } & FileContent) | { type: 'directory'; listing: DirectoryListing };

export interface WriteOptions extends CallOptions {
  /** Replace only this version (412, WorkcellApiError with `etag`, when it changed); `*`: only if a file is there. */
  ifMatch?: string;
  /** `*`: only create (412 when something is at the path). */
  ifNoneMatch?: '*';
}

export interface WaitOptions extends CallOptions {
  /** Give up after this long: a WorkcellClientError with code `timeout` (the job goes on). */
  timeoutMs?: number;
}

export type WorkcellClient = ReturnType<typeof createClient>;

/**
 * A workspace path keeps its slashes (openapi-fetch would encode them as %2F), each segment encoded. `.` and `..` are
 * refused here: a URL parser resolves them away, even percent-encoded, and the request would reach another route.
 */
function workspacePathSerializer(pathname: string, params: Record<string, unknown>): string {
  const path = String(params.path);
  const segments = path.split('/');
  if (segments.some((segment) => segment === '.' || segment === '..')) {
    throw new WorkcellClientError('invalid_path', `${JSON.stringify(path)}: a workspace path is relative, without . or .. segments (e.g. src/app.py)`);
  }
  return pathname.replace('{id}', encodeURIComponent(String(params.id))).replace('{path}', segments.map(encodeURIComponent).join('/'));
}

const textContentType = /^text\/|[;\s]charset=utf-8/i;

export function createClient(options: ClientOptions) {
  const baseUrl = options.baseUrl.replace(/\/+$/, '');
  const api = createFetchClient<paths>({
    baseUrl,
    ...(options.fetch === undefined ? {} : { fetch: options.fetch }),
    headers: options.apiKey === undefined || options.apiKey === '' ? {} : { authorization: `Bearer ${options.apiKey}` },
  });

  /** Sends a request; throws WorkcellApiError for an error answer, WorkcellClientError when the server cannot be reached. */
  async function ok<T>(request: Promise<{ data?: T; error?: unknown; response: Response }>, signal: AbortSignal | undefined): Promise<{ data: T; response: Response }> {
    let result: { data?: T; error?: unknown; response: Response };
    try {
      result = await request;
    } catch (error) {
      if (signal?.aborted) throw signal.reason;
      if (error instanceof WorkcellClientError || (error instanceof Error && error.name === 'AbortError')) throw error;
      const cause = error instanceof Error && error.cause instanceof Error ? error.cause.message : error instanceof Error ? error.message : String(error);
      throw new WorkcellClientError('unreachable', `cannot reach the workcell server at ${baseUrl} (${cause}): is it running (\`workcell serve\`), and is that its URL?`, { cause: error });
    }
    if (!result.response.ok) throw WorkcellApiError.from(result.response, result.error);
    return { data: result.data as T, response: result.response };
  }

  const status = async (id: string, call: CallOptions = {}): Promise<JobStatus> =>
    (await ok(api.GET('/status/{id}', { params: { path: { id } }, signal: call.signal }), call.signal)).data;

  async function workspaceEntry(id: string, path: string, call: CallOptions = {}): Promise<WorkspaceEntry> {
    const { data, response } =
      path === ''
        ? await ok(api.GET('/jobs/{id}/files', { params: { path: { id } }, parseAs: 'arrayBuffer', signal: call.signal }), call.signal)
        : await ok(api.GET('/jobs/{id}/files/{path}', { params: { path: { id, path } }, pathSerializer: workspacePathSerializer, parseAs: 'arrayBuffer', signal: call.signal }), call.signal);
    const bytes = new Uint8Array(data ?? new ArrayBuffer(0));
    // A directory's listing comes without Content-Disposition; a file always has one.
    if (response.headers.get('content-disposition') === null) return { type: 'directory', listing: JSON.parse(new TextDecoder().decode(bytes)) as DirectoryListing };
    const contentType = response.headers.get('content-type') ?? 'application/octet-stream';
    return { type: 'file', bytes, text: textContentType.test(contentType) ? new TextDecoder().decode(bytes) : undefined, etag: response.headers.get('etag') ?? '', contentType };
  }

  const get = async (id: string, call: CallOptions = {}): Promise<Job> => (await ok(api.GET('/jobs/{id}', { params: { path: { id } }, signal: call.signal }), call.signal)).data;

  const events = (id: string, eventOptions: EventsOptions = {}): AsyncGenerator<JobEvent, void, undefined> =>
    followEvents({
      jobId: id,
      options: eventOptions,
      connect: async (lastEventId, follow, signal) => {
        const { data } = await ok(
          api.GET('/jobs/{id}/events', {
            params: { path: { id }, query: { follow: follow ? 'true' : 'false' }, header: lastEventId > 0 ? { 'last-event-id': String(lastEventId) } : {} },
            headers: { accept: 'text/event-stream' },
            parseAs: 'stream',
            signal,
          }),
          signal,
        );
        if (data === null) throw new WorkcellClientError('invalid_response', `the event stream of job ${id} came without a body`);
        return data;
      },
      isFinal: async (signal) => isFinal((await status(id, { signal })).status),
    });

  return {
    baseUrl,

    async health(call: CallOptions = {}): Promise<Health> {
      return (await ok(api.GET('/healthz', { signal: call.signal }), call.signal)).data;
    },

    /**
     * Schedules a job: the task alone, or with options (model, runtime, limits, network, inputs.git, ...). With `files`
     * or `archive` it goes as multipart/form-data, the files placed in /workspace before the job starts.
     */
    async schedule(task: string | ScheduleOptions, uploads: ScheduleUploads = {}): Promise<{ job_id: string; created: boolean }> {
      const body: ScheduleOptions = typeof task === 'string' ? { task } : task;
      const multipart = uploads.files !== undefined || uploads.archive !== undefined;
      const { data, response } = await ok(
        api.POST('/schedule', {
          body,
          params: { header: uploads.idempotencyKey === undefined ? {} : { 'idempotency-key': uploads.idempotencyKey } },
          ...(multipart ? { bodySerializer: () => scheduleForm(body, uploads) } : {}),
          signal: uploads.signal,
        }),
        uploads.signal,
      );
      return { job_id: data.job_id, created: response.status === 202 };
    },

    get,
    status,

    /** A page of jobs, newest first; pass `cursor: next_cursor` for the next. */
    async list(query: ListQuery = {}, call: CallOptions = {}): Promise<JobList> {
      return (await ok(api.GET('/jobs', { params: { query }, signal: call.signal }), call.signal)).data;
    },

    /**
     * The job's events, replayed from the start (or after `after`) and followed live until the job ends; after a dropped
     * connection it reconnects with Last-Event-ID: no event is lost or repeated.
     */
    events,

    /** Waits until the job has ended (complete, error or cancelled), following its events; returns the job. */
    async waitFor(id: string, wait: WaitOptions = {}): Promise<Job> {
      const timeout = wait.timeoutMs === undefined ? undefined : AbortSignal.timeout(wait.timeoutMs);
      const signals = [wait.signal, timeout].filter((signal) => signal !== undefined);
      const signal = signals.length === 0 ? undefined : AbortSignal.any(signals);
      try {
        for (;;) {
          const job = await get(id, { signal });
          if (isFinal(job.status)) return job;
          // Ends once the job has ended, or throws.
          for await (const event of events(id, { signal })) void event;
        }
      } catch (error) {
        if (timeout?.aborted === true && wait.signal?.aborted !== true) {
          throw new WorkcellClientError('timeout', `job ${id} did not end within ${wait.timeoutMs} ms: wait longer, or cancel it`, { cause: error });
        }
        throw error;
      }
    },

    /** A follow-up instruction; to a finished job it continues the job (`reopened: true`, a new run). */
    async send(id: string, text: string, call: CallOptions = {}): Promise<MessageResult> {
      return (await ok(api.POST('/jobs/{id}/messages', { params: { path: { id } }, body: { text }, signal: call.signal }), call.signal)).data;
    },

    async cancel(id: string, call: CallOptions = {}): Promise<CancelResult> {
      return (await ok(api.POST('/jobs/{id}/cancel', { params: { path: { id } }, signal: call.signal }), call.signal)).data;
    },

    /** Removes a finished job and its files (409 while it is pending or running). */
    async delete(id: string, call: CallOptions = {}): Promise<void> {
      await ok(api.DELETE('/jobs/{id}', { params: { path: { id } }, signal: call.signal }), call.signal);
    },

    /** A one-time link to the running job's desktop, Jupyter or terminal. */
    async link(id: string, service: 'desktop' | 'jupyter' | 'terminal', call: CallOptions = {}): Promise<Link> {
      return (await ok(api.POST('/jobs/{id}/links', { params: { path: { id } }, body: { service }, signal: call.signal }), call.signal)).data;
    },

    /** The job's workspace: through its sandbox while it runs, its final state after. */
    files: {
      /** What is at a path: a file's content, or a directory's listing ('' is the workspace's root). */
      get: workspaceEntry,

      /** A file's bytes, with its ETag and Content-Type. */
      async read(id: string, path: string, call: CallOptions = {}): Promise<FileContent> {
        const entry = await workspaceEntry(id, path, call);
        if (entry.type === 'directory') throw new WorkcellClientError('not_a_file', `${path} in job ${id} is a directory: list it with files.list`);
        return entry;
      },

      /** A directory's entries ('' for the workspace's root). */
      async list(id: string, path = '', call: CallOptions = {}): Promise<DirectoryListing> {
        const entry = await workspaceEntry(id, path, call);
        if (entry.type === 'file') throw new WorkcellClientError('not_a_directory', `${path} in job ${id} is a file: read it with files.read`);
        return entry.listing;
      },

      /** Creates or replaces a file (atomically: readers never see half of it). */
      async write(id: string, path: string, body: Blob | Uint8Array | string, write: WriteOptions = {}): Promise<FileWritten> {
        const conditions = { ...(write.ifMatch === undefined ? {} : { 'if-match': write.ifMatch }), ...(write.ifNoneMatch === undefined ? {} : { 'if-none-match': write.ifNoneMatch }) };
        return (
          await ok(
            api.PUT('/jobs/{id}/files/{path}', {
              params: { path: { id, path }, header: conditions },
              pathSerializer: workspacePathSerializer,
              body,
              bodySerializer: (bytes) => bytes,
              headers: { 'content-type': 'application/octet-stream' },
              signal: write.signal,
            }),
            write.signal,
          )
        ).data;
      },

      /** Deletes a file, a symbolic link (never what it points to) or an empty directory. */
      async remove(id: string, path: string, remove: CallOptions & { ifMatch?: string } = {}): Promise<FileDeleted> {
        return (
          await ok(
            api.DELETE('/jobs/{id}/files/{path}', {
              params: { path: { id, path }, header: remove.ifMatch === undefined ? {} : { 'if-match': remove.ifMatch } },
              pathSerializer: workspacePathSerializer,
              signal: remove.signal,
            }),
            remove.signal,
          )
        ).data;
      },
    },

    /** What the job changed since its start: the files added, changed and deleted. */
    async diff(id: string, call: CallOptions = {}): Promise<Diff> {
      const { data } = await ok(api.GET('/jobs/{id}/diff', { params: { path: { id }, query: { format: 'json' } }, parseAs: 'text', signal: call.signal }), call.signal);
      return JSON.parse(data) as Diff;
    },

    /** The same as a unified diff, which `git apply` applies to the starting tree. */
    async patch(id: string, call: CallOptions = {}): Promise<string> {
      return (await ok(api.GET('/jobs/{id}/diff', { params: { path: { id }, query: { format: 'patch' } }, parseAs: 'text', signal: call.signal }), call.signal)).data;
    },

    /** The job's audit log: file operations and network connections, oldest first (`after`: skip that many entries). */
    async audit(id: string, query: CallOptions & { after?: number } = {}): Promise<Array<Record<string, unknown>>> {
      const { data } = await ok(
        api.GET('/jobs/{id}/audit', { params: { path: { id }, query: query.after === undefined ? {} : { after: query.after } }, parseAs: 'text', signal: query.signal }),
        query.signal,
      );
      return (data ?? '')
        .split('\n')
        .filter((line) => line.trim() !== '')
        .map((line) => JSON.parse(line) as Record<string, unknown>);
    },

    /** The zipped workspace. */
    async artifacts(id: string, call: CallOptions = {}): Promise<Uint8Array> {
      const { data } = await ok(api.GET('/jobs/{id}/artifacts.zip', { params: { path: { id } }, parseAs: 'arrayBuffer', signal: call.signal }), call.signal);
      return new Uint8Array(data ?? new ArrayBuffer(0));
    },

    /** The zipped workspace as a stream, for large ones. */
    async artifactsStream(id: string, call: CallOptions = {}): Promise<ReadableStream<Uint8Array>> {
      const { data } = await ok(api.GET('/jobs/{id}/artifacts.zip', { params: { path: { id } }, parseAs: 'stream', signal: call.signal }), call.signal);
      if (data === null) throw new WorkcellClientError('invalid_response', `the zip of job ${id} came without a body`);
      return data;
    },
  };
}

/** POST /schedule's multipart body: the task, the other options as the `job` field, then the files and the archive. */
function scheduleForm(body: ScheduleOptions, uploads: ScheduleUploads): FormData {
  const form = new FormData();
  const { task, ...rest } = body;
  form.append('task', task);
  if (Object.keys(rest).length > 0) form.append('job', JSON.stringify(rest));
  for (const file of uploads.files ?? []) form.append('files', asBlob(file.content), file.path);
  if (uploads.archive !== undefined) form.append('archive', asBlob(uploads.archive.content), uploads.archive.name ?? 'archive');
  return form;
}

const asBlob = (content: Blob | Uint8Array | string): Blob => (content instanceof Blob ? content : new Blob([content]));
