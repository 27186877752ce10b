// sandboxd's raw-bytes file route (protocol.ts rawFilesPath): the HTTP side of raw-files.ts. GET and HEAD stream a
// file (or send a directory's listing as JSON), PUT streams the request body into the workspace (never buffered whole),
// DELETE removes. The query is validated with the protocol's schema; errors leave as the server's other errors do,
// `{error: {code, message}}`, a 412 with the current ETag in its `etag` header.
import type { IncomingMessage, ServerResponse } from 'node:http';
import { pipeline } from 'node:stream';
import { SandboxdToolError } from '../errors.ts';
import { rawFileQuery } from '../protocol.ts';
import { PreconditionFailed, type WorkspaceRawFiles } from './raw-files.ts';

function header(request: IncomingMessage, name: string): string | undefined {
  const value = request.headers[name];
  return Array.isArray(value) ? value.join(', ') : value;
}

function sendJson(response: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body);
  response.writeHead(status, { ...headers, 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  response.end(text);
}

export async function handleRawFiles(files: WorkspaceRawFiles, request: IncomingMessage, response: ServerResponse): Promise<void> {
  try {
    await handle(files, request, response);
  } catch (error) {
    // The server sends the error; these headers go with it.
    if (error instanceof PreconditionFailed && error.etag !== undefined && !response.headersSent) response.setHeader('etag', error.etag);
    // A body left unread (refused before or while it came) cannot be skipped on a kept-alive connection.
    if (!request.complete && !response.headersSent) response.setHeader('connection', 'close');
    throw error;
  }
}

async function handle(files: WorkspaceRawFiles, request: IncomingMessage, response: ServerResponse): Promise<void> {
  const url = new URL(request.url ?? '/', 'http://sandboxd');
  const parsed = rawFileQuery.safeParse(Object.fromEntries(url.searchParams));
  if (!parsed.success) throw new SandboxdToolError('invalid_request', `invalid query: ${parsed.error.issues.map((issue) => `${issue.path.join('.')}: ${issue.message}`).join('; ')}`);
  const query = parsed.data;
  const conditions = { ifMatch: header(request, 'if-match'), ifNoneMatch: header(request, 'if-none-match') };
  switch (request.method) {
    case 'GET':
    case 'HEAD': {
      const headOnly = request.method === 'HEAD';
      const result = await files.get(query.path, { ifNoneMatch: conditions.ifNoneMatch, etags: query.etags, headOnly });
      if (result.kind === 'not-modified') {
        response.writeHead(304, { etag: result.etag });
        response.end();
        return;
      }
      if (result.kind === 'directory') {
        if (headOnly) {
          response.writeHead(200, { etag: result.etag, 'content-type': 'application/json', 'x-workcell-type': 'directory' });
          response.end();
          return;
        }
        return sendJson(response, 200, result.listing, { etag: result.etag, 'x-workcell-type': 'directory' });
      }
      response.writeHead(200, {
        etag: result.etag,
        'content-type': result.contentType,
        'content-length': result.size,
        'last-modified': new Date(result.mtime).toUTCString(),
        'x-workcell-type': 'file',
        'x-workcell-mtime': result.mtime,
        'x-workcell-mode': String(result.mode),
      });
      if (headOnly) {
        result.body.destroy();
        response.end();
        return;
      }
      // A file that changes while it is sent fails its stream: the connection is cut short of content-length.
      pipeline(result.body, response, () => undefined);
      return;
    }
    case 'PUT': {
      const declared = Number(request.headers['content-length']);
      const result = await files.put(query.path, request, { ...conditions, maxBytes: query.max_bytes, declaredBytes: Number.isFinite(declared) ? declared : undefined });
      return sendJson(response, result.created ? 201 : 200, result, { etag: result.etag });
    }
    case 'DELETE':
      return sendJson(response, 200, await files.delete(query.path, conditions));
    default:
      throw new SandboxdToolError('invalid_request', `use GET, HEAD, PUT or DELETE on ${url.pathname}`);
  }
}
