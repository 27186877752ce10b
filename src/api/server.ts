// The orchestrator's HTTP API (DESIGN.md §2). Routes are declared with zod schemas (validation, types and the
// OpenAPI document come from the same objects); every error leaves through problem.ts.
import fastifyMultipart from '@fastify/multipart';
import fastifySwagger from '@fastify/swagger';
import Fastify, { type FastifyBaseLogger, type FastifyInstance, type RawReplyDefaultExpression, type RawRequestDefaultExpression, type RawServerDefault } from 'fastify';
import { serializerCompiler, validatorCompiler, type ZodTypeProvider } from 'fastify-type-provider-zod';
import type { Logger } from 'pino';
import type { Config } from '../config.ts';
import { WorkcellError } from '../errors.ts';
import type { JobService } from '../jobs/job-service.ts';
import type { KeyStore } from '../store/types.ts';
import { version } from '../version.ts';
import { Authenticator, registerAuth } from './auth.ts';
import { BrowserTokens } from './browser-tokens.ts';
import { LiveConnections } from './live-connections.ts';
import { HostPolicy } from './origins.ts';
import { apiTags, openApiTransform, openApiTransformObject, response } from './openapi.ts';
import { problem, sendProblem, toProblem } from './problem.ts';
import { registerArtifactRoutes } from './routes/artifacts.ts';
import { registerAuditRoutes } from './routes/audit.ts';
import { registerDiffRoutes } from './routes/diff.ts';
import { registerEventRoutes } from './routes/events.ts';
import { registerFileRoutes } from './routes/files.ts';
import { registerJobRoutes } from './routes/jobs.ts';
import { attachUpgradeProxy, registerServiceRoutes } from './routes/services.ts';
import { healthResponse } from './schemas.ts';

export interface ApiOptions {
  config: Config;
  jobs: JobService;
  keys: KeyStore;
  logger: Logger;
}

/** What every route sees: the options, who may call (keys, browser tokens, hosts) and the connections to cut on revocation. */
export interface ApiContext extends ApiOptions {
  auth: Authenticator;
  connections: LiveConnections;
}

export type ZodApp = FastifyInstance<RawServerDefault, RawRequestDefaultExpression, RawReplyDefaultExpression, FastifyBaseLogger, ZodTypeProvider>;

export async function buildServer(options: ApiOptions): Promise<FastifyInstance> {
  const { keys } = options;
  const auth = new Authenticator(keys, new BrowserTokens(await keys.serverSecret('browser-tokens')), new HostPolicy(options.config));
  const context: ApiContext = { ...options, auth, connections: new LiveConnections((owner) => keys.isLive(owner)) };
  // Per-request lines are noise at info; the API logs warnings and errors.
  const loggerInstance: FastifyBaseLogger = context.logger.child({ component: 'api' }, { level: context.logger.isLevelEnabled('debug') ? 'debug' : 'warn' });
  const app = Fastify({
    loggerInstance,
    bodyLimit: context.config.maxBodyBytes,
    return503OnClosing: true,
    forceCloseConnections: true,
  });
  app.setValidatorCompiler(validatorCompiler);
  app.setSerializerCompiler(serializerCompiler);

  app.setErrorHandler((error, request, reply) => {
    const body = toProblem(error, request);
    // A body the client cut off (it hung up mid-upload) fails the request: their hang-up, not a server error.
    if (body.status >= 500 && request.raw.destroyed && !request.raw.complete) request.log.debug({ err: error }, 'the client hung up during its request body');
    else if (body.status >= 500) request.log.error({ err: error }, 'request failed');
    return sendProblem(reply, body);
  });
  app.setNotFoundHandler((request, reply) => sendProblem(reply, problem(404, 'not_found', `no route ${request.method} ${request.url.split('?')[0]}`)));

  await app.register(fastifySwagger, {
    openapi: {
      openapi: '3.1.0',
      info: {
        title: 'workcell',
        version,
        description:
          'Runs coding agents in isolated sandboxes: schedule a task (with files or a git repository for its workspace), follow its steps, read and write its files, ' +
          'review what it changed, continue it with a message, download the workspace. Errors are RFC 9457 application/problem+json. ' +
          'A typed TypeScript client is the package export `workcell/client`.',
        license: { name: 'Apache-2.0', identifier: 'Apache-2.0' },
      },
      servers: [{ url: '/', description: 'The server that serves this document (`workcell serve` listens on http://127.0.0.1:8080 by default)' }],
      tags: [...apiTags],
      components: {
        securitySchemes: {
          apiKey: { type: 'http', scheme: 'bearer', description: 'Needed once the server has API keys (`workcell keys create`); without keys the server is local-only and open.' },
        },
      },
      security: [{ apiKey: [] }],
    },
    transform: openApiTransform,
    transformObject: openApiTransformObject,
  });

  registerAuth(app, auth);
  // multipart/form-data is POST /schedule's (files for the workspace, schedule-upload.ts, which sets the limits); it is
  // parsed there, as it streams. Every other route refuses it as it refuses any content type it does not take.
  await app.register(fastifyMultipart);
  app.addHook('preValidation', async (request) => {
    if (request.isMultipart() && request.routeOptions.url !== '/schedule') {
      throw new WorkcellError('unsupported_media_type', `${request.method} ${request.routeOptions.url ?? request.url} does not take multipart/form-data: send application/json (only POST /schedule takes files)`);
    }
  });
  const typed = app.withTypeProvider<ZodTypeProvider>();
  typed.get(
    '/healthz',
    {
      schema: {
        operationId: 'health',
        tags: ['server'],
        summary: 'Liveness',
        description: 'Answers 200 while the server runs; needs no API key, whatever the Host (for liveness probes).',
        security: [],
        response: { 200: response('The server is up', healthResponse) },
      },
    },
    async () => ({ ok: true, version }),
  );
  typed.get('/openapi.json', { schema: { hide: true } }, async () => app.swagger());
  registerJobRoutes(typed, context);
  registerEventRoutes(typed, context);
  registerArtifactRoutes(typed, context);
  registerAuditRoutes(typed, context);
  registerFileRoutes(typed, context);
  registerDiffRoutes(typed, context);
  registerServiceRoutes(typed, context);
  const websockets = attachUpgradeProxy(app.server, context);
  app.addHook('preClose', async () => {
    context.connections.close();
    websockets.closeAll();
  });
  return app;
}
