// The worker's side of sandboxd's raw-bytes file route (sandboxd/protocol.ts rawFilesPath): the same operations as
// sandboxd/files/raw-files.ts, reached through a running sandbox, with the same result types, so the API serves a
// running job (through its sandbox: the only correct view for a microVM, whose disk the host never mounts) and a
// finished one (the host's copy) alike. Bodies stream both ways. What sandboxd answers is untrusted (agent code may
// have taken it over): headers are checked against the protocol (ETag shape, a known Content-Type, a numeric length),
// JSON bodies against its schemas and bounded in size; a bad answer is a SandboxdError 'bad_response'.
import type { IncomingMessage } from 'node:http';
import type { Readable } from 'node:stream';
import { knownContentTypes, isEtag } from '../sandboxd/files/file-content.ts';
import { PreconditionFailed, type Preconditions, type RawFileDeleteResponse, type RawFileWriteResponse, type RawGetResult } from '../sandboxd/files/raw-files.ts';
import { errorResponse, rawDirectoryListing, rawFileDeleteResponse, rawFilesPath, rawFileWriteResponse } from '../sandboxd/protocol.ts';
import { SandboxdError, type SandboxdChannel } from './sandboxd-client.ts';

/** A listing of maxRawListingEntries entries is about 3 MB; nothing else sandboxd sends here as JSON comes close. */
const maxJsonBytes = 16 * 1024 * 1024;

function routePath(path: string, extra: Record<string, string> = {}): string {
  return `${rawFilesPath}?${new URLSearchParams({ path, ...extra }).toString()}`;
}

async function readJson(response: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of response as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > maxJsonBytes) {
      response.destroy();
      throw new SandboxdError('bad_response', `sandboxd's answer exceeded ${maxJsonBytes} bytes`);
    }
    chunks.push(chunk);
  }
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch {
    throw new SandboxdError('bad_response', `sandboxd answered ${response.statusCode} with invalid JSON`);
  }
}

function etagHeader(response: IncomingMessage): string {
  const etag = response.headers.etag;
  if (!isEtag(etag)) throw new SandboxdError('bad_response', 'sandboxd sent no valid ETag');
  return etag;
}

/** Turns a 4xx/5xx into the error sandboxd meant (a 412 keeps the current ETag). */
async function failure(response: IncomingMessage): Promise<never> {
  const parsed = errorResponse.safeParse(await readJson(response).catch(() => undefined));
  if (!parsed.success) throw new SandboxdError('bad_response', `sandboxd answered ${response.statusCode} without an error body`);
  const { code, message } = parsed.data.error;
  if (code === 'precondition_failed') throw new PreconditionFailed(message, isEtag(response.headers.etag) ? response.headers.etag : undefined);
  throw new SandboxdError(code, message);
}

export async function getSandboxFile(client: SandboxdChannel, path: string, options: { ifNoneMatch?: string | undefined; etags?: 'budget' | 'all'; headOnly?: boolean; signal?: AbortSignal } = {}): Promise<RawGetResult> {
  const response = await client.forward({
    method: options.headOnly === true ? 'HEAD' : 'GET',
    path: routePath(path, options.etags === undefined ? {} : { etags: options.etags }),
    headers: options.ifNoneMatch === undefined ? {} : { 'if-none-match': options.ifNoneMatch },
    ...(options.signal === undefined ? {} : { signal: options.signal }),
  });
  const status = response.statusCode ?? 0;
  if (status === 304) {
    response.resume();
    return { kind: 'not-modified', path, etag: etagHeader(response) };
  }
  if (status !== 200) return failure(response);
  const etag = etagHeader(response);
  if (response.headers['x-workcell-type'] === 'directory') {
    if (options.headOnly === true) {
      response.resume();
      return { kind: 'directory', path, etag, listing: { path, type: 'directory', entries: [], truncated: false, invalid_names: 0 } };
    }
    const listing = rawDirectoryListing.safeParse(await readJson(response));
    if (!listing.success) throw new SandboxdError('bad_response', `sandboxd sent a listing that does not match the protocol: ${listing.error.message.slice(0, 300)}`);
    return { kind: 'directory', path: listing.data.path, etag, listing: listing.data };
  }
  const size = Number(response.headers['content-length']);
  const contentType = response.headers['content-type'] ?? '';
  const mtime = response.headers['x-workcell-mtime'];
  const mode = Number(response.headers['x-workcell-mode']);
  if (!Number.isSafeInteger(size) || size < 0 || !knownContentTypes.has(contentType) || typeof mtime !== 'string' || Number.isNaN(Date.parse(mtime)) || !Number.isInteger(mode)) {
    response.destroy();
    throw new SandboxdError('bad_response', 'sandboxd sent a file without a valid length, type, time or mode');
  }
  if (options.headOnly === true) response.resume();
  return { kind: 'file', path, etag, size, mtime: new Date(mtime).toISOString(), mode: mode & 0o7777, contentType, body: response };
}

export async function putSandboxFile(client: SandboxdChannel, path: string, body: Readable, options: Preconditions & { maxBytes: number; declaredBytes?: number | undefined; signal?: AbortSignal }): Promise<RawFileWriteResponse> {
  const headers: Record<string, string> = { 'content-type': 'application/octet-stream' };
  if (options.ifMatch !== undefined) headers['if-match'] = options.ifMatch;
  if (options.ifNoneMatch !== undefined) headers['if-none-match'] = options.ifNoneMatch;
  if (options.declaredBytes !== undefined) headers['content-length'] = String(options.declaredBytes);
  const response = await client.forward({ method: 'PUT', path: routePath(path, { max_bytes: String(options.maxBytes) }), headers, body, ...(options.signal === undefined ? {} : { signal: options.signal }) });
  const status = response.statusCode ?? 0;
  if (status !== 200 && status !== 201) return failure(response);
  const parsed = rawFileWriteResponse.safeParse(await readJson(response));
  if (!parsed.success) throw new SandboxdError('bad_response', 'sandboxd answered the write with an unexpected body');
  return parsed.data;
}

export async function deleteSandboxFile(client: SandboxdChannel, path: string, options: Preconditions & { signal?: AbortSignal } = {}): Promise<RawFileDeleteResponse> {
  const headers: Record<string, string> = {};
  if (options.ifMatch !== undefined) headers['if-match'] = options.ifMatch;
  if (options.ifNoneMatch !== undefined) headers['if-none-match'] = options.ifNoneMatch;
  const response = await client.forward({ method: 'DELETE', path: routePath(path), headers, ...(options.signal === undefined ? {} : { signal: options.signal }) });
  if (response.statusCode !== 200) return failure(response);
  const parsed = rawFileDeleteResponse.safeParse(await readJson(response));
  if (!parsed.success) throw new SandboxdError('bad_response', 'sandboxd answered the delete with an unexpected body');
  return parsed.data;
}
