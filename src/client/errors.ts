// What the client throws. Every error has a string `code`: the server's problem code (not_found, conflict,
// precondition_failed, ...) when it answered with an error, or the client's own (unreachable, timeout,
// invalid_response, not_a_file, not_a_directory) when it did not. Messages say what to do.
import type { components } from './schema.d.ts';

type Problem = components['schemas']['Problem'];

/** Anything the client could not do: `code` says what. */
export class WorkcellClientError extends Error {
  readonly code: string;
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'WorkcellClientError';
    this.code = code;
  }
}

/** The server answered with an error: its RFC 9457 problem (application/problem+json). */
export class WorkcellApiError extends WorkcellClientError {
  readonly status: number;
  /** urn:workcell:problem:<code> */
  readonly type: string;
  readonly title: string;
  readonly detail: string;
  readonly instance: string | undefined;
  /** Each invalid field of the request (400). */
  readonly errors: ReadonlyArray<{ path: string; message: string }> | undefined;
  /** The current ETag, where the server sends one with the error (412 from the file routes: someone changed the file). */
  readonly etag: string | undefined;

  constructor(problem: Problem, etag?: string) {
    super(problem.type.replace(/^urn:workcell:problem:/, ''), `${problem.status}: ${problem.detail}`);
    this.name = 'WorkcellApiError';
    this.status = problem.status;
    this.type = problem.type;
    this.title = problem.title;
    this.detail = problem.detail;
    this.instance = problem.instance;
    this.errors = problem.errors;
    this.etag = etag;
  }

  /** The error for a response that is not ok, from its parsed body (a problem, or whatever else came). */
  static from(response: Response, body: unknown): WorkcellApiError {
    const etag = response.headers.get('etag') ?? undefined;
    if (isProblem(body)) return new WorkcellApiError(body, etag);
    // Not a problem document: something other than workcell answered (a proxy), or the server closed mid-answer.
    const text = typeof body === 'string' ? body.trim().slice(0, 500) : '';
    const detail = text === '' ? `${response.statusText || 'no detail'} (not a workcell answer: is the base URL a workcell server?)` : text;
    return new WorkcellApiError({ type: `urn:workcell:problem:http_${response.status}`, title: response.statusText, status: response.status, detail }, etag);
  }
}

function isProblem(body: unknown): body is Problem {
  if (body === null || typeof body !== 'object') return false;
  const fields = body as Record<string, unknown>;
  return typeof fields.type === 'string' && typeof fields.status === 'number' && typeof fields.detail === 'string' && typeof fields.title === 'string';
}
