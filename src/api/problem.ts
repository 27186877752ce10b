// Every error the API returns is RFC 9457 problem+json with a stable `type`, mapped here and only here. Bad input
// is a 4xx with a message that says what to fix; unexpected failures are a bare 500 (logged, never a stack trace).
import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import { hasZodFastifySchemaValidationErrors } from 'fastify-type-provider-zod';
import { WorkcellError, type ErrorCode } from '../errors.ts';

export interface Problem {
  type: string;
  title: string;
  status: number;
  detail: string;
  instance?: string;
  errors?: Array<{ path: string; message: string }>;
}

const titles: Record<number, string> = {
  400: 'Bad Request',
  401: 'Unauthorized',
  403: 'Forbidden',
  404: 'Not Found',
  405: 'Method Not Allowed',
  409: 'Conflict',
  412: 'Precondition Failed',
  413: 'Payload Too Large',
  415: 'Unsupported Media Type',
  416: 'Range Not Satisfiable',
  429: 'Too Many Requests',
  500: 'Internal Server Error',
  502: 'Bad Gateway',
  503: 'Service Unavailable',
};

export const problemType = (code: ErrorCode) => `urn:workcell:problem:${code}`;

export function problem(status: number, code: ErrorCode, detail: string, extra: Partial<Problem> = {}): Problem {
  return { type: problemType(code), title: titles[status] ?? 'Error', status, detail, ...extra };
}

/** Maps Fastify's own errors (parsing, limits) to our codes and messages. */
function fromFastify(error: FastifyError): Problem | undefined {
  switch (error.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return problem(413, 'payload_too_large', 'request body is too large: the limit is set by WORKCELL_MAX_BODY_BYTES');
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return problem(415, 'unsupported_media_type', `unsupported Content-Type: send application/json or text/plain (or multipart/form-data with files, to POST /schedule)`);
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
      return problem(400, 'invalid_request', 'the JSON body is empty');
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
      return problem(400, 'invalid_request', `the body is not valid JSON: ${error.message}`);
    case 'FST_ERR_CTP_INVALID_CONTENT_LENGTH':
      return problem(400, 'invalid_request', 'Content-Length does not match the body');
  }
  if (error instanceof SyntaxError || error.statusCode === 400) return problem(400, 'invalid_request', error.message);
  if (error.statusCode !== undefined && error.statusCode >= 400 && error.statusCode < 500) return problem(error.statusCode, 'invalid_request', error.message);
  return undefined;
}

export function toProblem(error: unknown, request: FastifyRequest): Problem {
  if (error instanceof WorkcellError) {
    return problem(error.httpStatus, error.code, error.message, { instance: request.url });
  }
  if (hasZodFastifySchemaValidationErrors(error)) {
    const errors = error.validation.map((issue) => {
      const path = [error.validationContext, ...issue.instancePath.split('/').filter(Boolean)].filter(Boolean).join('.');
      return { path, message: issue.message ?? 'invalid value' };
    });
    return problem(400, 'invalid_request', errors.map((e) => `${e.path}: ${e.message}`).join('; '), { errors, instance: request.url });
  }
  const mapped = fromFastify(error as FastifyError);
  if (mapped) return { ...mapped, instance: request.url };
  return problem(500, 'internal', 'internal error: see the server log', { instance: request.url });
}

export function sendProblem(reply: FastifyReply, body: Problem): FastifyReply {
  return reply.code(body.status).type('application/problem+json').send(body);
}
