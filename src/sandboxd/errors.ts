// Errors sandboxd's tools raise on purpose. Each carries one of the protocol's stable codes and a message written
// for the model: what was wrong and what to do instead. The server maps them to `{error: {code, message}}` in one
// place; anything else thrown is a bug and becomes a 500 `internal`.
import type { SandboxdErrorCode } from './protocol.ts';

export class SandboxdToolError extends Error {
  readonly code: SandboxdErrorCode;
  constructor(code: SandboxdErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'SandboxdToolError';
    this.code = code;
  }
}

const httpStatusByCode: Record<SandboxdErrorCode, number> = {
  unauthorized: 401,
  invalid_request: 400,
  not_found: 404,
  path_outside_workspace: 403,
  not_a_file: 422,
  not_a_directory: 422,
  binary_file: 422,
  too_large: 413,
  no_match: 422,
  multiple_matches: 422,
  precondition_failed: 412,
  not_empty: 409,
  unavailable: 503,
  gui_failed: 422,
  internal: 500,
};

export function httpStatusFor(code: SandboxdErrorCode): number {
  return httpStatusByCode[code];
}
