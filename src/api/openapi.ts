// The OpenAPI document's conventions, in one place: the tags, how responses are declared (each with a description and
// its media type; errors as application/problem+json), and the two hooks that turn the routes' zod schemas into the
// document (fastify-type-provider-zod's transforms, plus what they leave out). Nothing here changes what a route
// accepts or answers: request bodies given per media type (`bodyContent`) and response headers are for the document
// only. The document is linted with Spectral's `oas` ruleset (.spectral.yaml, src/api/openapi.test.ts).
import type { SwaggerTransform, SwaggerTransformObject } from '@fastify/swagger';
import { jsonSchemaTransform, jsonSchemaTransformObject } from 'fastify-type-provider-zod';
import type { z } from 'zod';
import { problem } from './schemas.ts';

declare module 'fastify' {
  interface FastifySchema {
    /**
     * The request body per media type, for the document only: for a route whose body Fastify does not validate as one
     * JSON schema (text/plain turned into JSON before validation, multipart read by the route, bytes streamed).
     */
    bodyContent?: Readonly<Record<string, z.ZodType>>;
    /**
     * Request headers the route reads itself (Idempotency-Key, If-Match, Last-Event-ID, ...), for the document only:
     * Fastify would replace the request's headers with what a validated schema keeps.
     */
    headerParams?: z.ZodObject;
  }
}

/** The operations' groups, in the order a reader meets them. */
export const apiTags = [
  { name: 'jobs', description: 'Schedule a job, see its status and detail, list, cancel, continue (a message) and delete jobs' },
  { name: 'events', description: "A job's steps as they happen (Server-Sent Events), from its event log" },
  { name: 'files', description: "The job's workspace while it runs (through its sandbox) and after it ends: read, write, delete, list" },
  { name: 'results', description: 'What a job leaves: what it changed (diff), the zipped workspace, the audit log' },
  { name: 'services', description: "People's way into a running job's sandbox: one-time links to the desktop, Jupyter and the terminal" },
  { name: 'server', description: 'The server itself' },
] as const;
export type ApiTag = (typeof apiTags)[number]['name'];

/** A response header, as the document shows it. */
export interface DocumentedHeader {
  type: 'string' | 'integer';
  description: string;
}

interface ContentResponse<S extends z.ZodType> {
  description: string;
  content: Record<string, { schema: S }>;
  headers?: Record<string, DocumentedHeader>;
}

/** A response with a body of one media type (application/json unless said). */
export function response<S extends z.ZodType>(description: string, schema: S, options: { mediaType?: string; headers?: Record<string, DocumentedHeader> } = {}): ContentResponse<S> {
  return { description, content: { [options.mediaType ?? 'application/json']: { schema } }, ...(options.headers === undefined ? {} : { headers: options.headers }) };
}

type ProblemResponse = ContentResponse<typeof problem>;

/** What every route but /healthz may answer whatever it does: keys, hosts and origins (auth.ts), and a failure of ours. */
const everyRoute = {
  401: 'This server has API keys and the request has none, or one that is not (or no longer) valid: send `Authorization: Bearer <key>`',
  403: "The request's Host or Origin is not one this server serves (WORKCELL_ALLOWED_HOSTS, WORKCELL_PUBLIC_URL)",
  500: 'The server failed (the detail says what to do; the server log has the rest)',
} as const;

/**
 * application/problem+json responses (RFC 9457), status → when it is sent; 401, 403 and 500 are added (a route may
 * say more about them). `headers`: what some of them carry besides the problem.
 */
export function problemResponses<S extends number>(when: Record<S, string>, headers: Partial<Record<S, Record<string, DocumentedHeader>>> = {}): Record<S | keyof typeof everyRoute, ProblemResponse> {
  const out: Record<number, ProblemResponse> = {};
  const all: Record<number, string> = { ...everyRoute, ...when };
  const extra: Partial<Record<number, Record<string, DocumentedHeader>>> = headers;
  for (const status of Object.keys(all).map(Number).sort((a, b) => a - b)) {
    const statusHeaders = extra[status];
    out[status] = { description: all[status]!, content: { 'application/problem+json': { schema: problem } }, ...(statusHeaders === undefined ? {} : { headers: statusHeaders }) };
  }
  return out;
}

/** A route's response as the zod transform left it (before @fastify/swagger reads it). */
type TransformedResponse = { description?: string; content?: Record<string, unknown>; headers?: Record<string, DocumentedHeader> };

/**
 * The routes' zod schemas as JSON schemas (fastify-type-provider-zod), plus: response headers, request headers
 * (`headerParams`), request bodies per media type (`bodyContent`), and the wildcard of `/jobs/:id/files/*` documented as the path parameter `path` (Fastify's
 * `*` is no name a client or a linter can use).
 */
export const openApiTransform: SwaggerTransform = (document) => {
  const transformed = jsonSchemaTransform(document);
  const schema = transformed.schema as Record<string, unknown>;
  if (schema.hide === true) return transformed;
  const source = document.schema as Record<string, unknown>;

  const responses = source.response as Record<string, TransformedResponse> | undefined;
  const documented = schema.response as Record<string, TransformedResponse> | undefined;
  for (const [status, original] of Object.entries(responses ?? {})) {
    if (original.headers !== undefined && documented?.[status] !== undefined) documented[status].headers = original.headers;
  }

  const headerParams = document.schema.headerParams;
  delete schema.headerParams;
  if (headerParams !== undefined) schema.headers = jsonSchemaTransform({ ...document, schema: { headers: headerParams } }).schema.headers;

  const bodyContent = document.schema.bodyContent;
  delete schema.bodyContent;
  if (bodyContent !== undefined) {
    const content: Record<string, { schema: unknown }> = {};
    for (const [mediaType, body] of Object.entries(bodyContent)) {
      // The zod transform converts a body the way it converts every other: as the route's `body`.
      content[mediaType] = { schema: jsonSchemaTransform({ ...document, schema: { body } }).schema.body };
    }
    schema.body = { content };
    delete schema.consumes;
  }

  let url = transformed.url;
  if (url.endsWith('/*')) {
    url = `${url.slice(0, -1)}{path}`;
    const params = schema.params as { properties?: Record<string, unknown>; required?: string[] } | undefined;
    if (params?.properties?.['*'] !== undefined) {
      params.properties = Object.fromEntries(Object.entries(params.properties).map(([name, value]) => [name === '*' ? 'path' : name, value]));
      params.required = params.required?.map((name) => (name === '*' ? 'path' : name));
    }
  }
  return { schema, url };
};

/**
 * The document with the named schemas (`.meta({id})`) as components. The zod transform adds each named schema twice
 * (as it is read and as it is written: `XInput` and `X`); only the ones the document refers to are kept.
 */
export const openApiTransformObject: SwaggerTransformObject = (documentObject) => {
  const document = jsonSchemaTransformObject(documentObject);
  if (!('components' in document) || document.components?.schemas === undefined) return document;
  const components = document.components;
  const schemas: Record<string, unknown> = { ...components.schemas };
  const used = new Set<string>();
  const visit = (value: unknown): void => {
    if (Array.isArray(value)) return value.forEach(visit);
    if (value === null || typeof value !== 'object') return;
    for (const [key, child] of Object.entries(value)) {
      if (key === '$ref' && typeof child === 'string' && child.startsWith('#/components/schemas/')) {
        const name = child.slice('#/components/schemas/'.length);
        if (!used.has(name)) {
          used.add(name);
          visit(schemas[name]);
        }
      } else visit(child);
    }
  };
  visit(document.paths);
  components.schemas = Object.fromEntries(Object.entries(components.schemas ?? {}).filter(([name]) => used.has(name)).sort(([a], [b]) => a.localeCompare(b)));
  return document;
};
