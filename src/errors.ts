// The error tree. Every error a user or a model can see is a WorkcellError with a stable code; the API maps it to
// problem+json in one place (api/problem.ts). Messages say what to do, not just what went wrong.

export type ErrorCode =
  | 'invalid_request'
  | 'not_found'
  | 'conflict'
  | 'precondition_failed'
  | 'payload_too_large'
  | 'unsupported_media_type'
  | 'range_not_satisfiable'
  | 'unauthorized'
  | 'forbidden'
  | 'runtime_unavailable'
  | 'sandbox_failed'
  | 'model_not_configured'
  | 'model_failed'
  | 'internal';

const httpStatusByCode: Record<ErrorCode, number> = {
  invalid_request: 400,
  not_found: 404,
  conflict: 409,
  precondition_failed: 412,
  payload_too_large: 413,
  unsupported_media_type: 415,
  range_not_satisfiable: 416,
  unauthorized: 401,
  forbidden: 403,
  runtime_unavailable: 503,
  sandbox_failed: 500,
  model_not_configured: 400,
  model_failed: 502,
  internal: 500,
};

export class WorkcellError extends Error {
  readonly code: ErrorCode;
  /** Extra, safe-to-show fields (never secrets, never host paths the caller did not give). */
  readonly details: Record<string, unknown> | undefined;

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown; details?: Record<string, unknown> }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'WorkcellError';
    this.code = code;
    this.details = options?.details;
  }

  get httpStatus(): number {
    return httpStatusByCode[this.code];
  }
}

export const invalidRequest = (message: string, details?: Record<string, unknown>) =>
  new WorkcellError('invalid_request', message, details === undefined ? undefined : { details });
export const notFound = (message: string) => new WorkcellError('not_found', message);
export const conflict = (message: string) => new WorkcellError('conflict', message);

export function errorMessage(error: unknown): string {
  if (error instanceof Error) return error.message;
  return String(error);
}
