// The orchestrator's HTTP API (DESIGN.md §2). Routes are declared with zod schemas (validation, types and the
// OpenAPI document come from the same objects); every error leaves through problem.ts.
import fastifySwagger from '@fastify/swagger';
import Fastify, { type FastifyBaseLogger, type FastifyInstance, type RawReplyDefaultExpression, type RawRequestDefaultExpression, type RawServerDefault } from 'fastify';
import { jsonSchemaTransform, serializerCompiler, validatorCompiler, type ZodTypeProvider } from 'fastify-type-provider-zod';
import type { Logger } from 'pino';
import type { Config } from '../config.ts';
import type { JobService } from '../jobs/job-service.ts';
import { version } from '../version.ts';
import { Authenticator, registerAuth } from './auth.ts';
import { BrowserTokens } from './browser-tokens.ts';
import { LiveConnections } from './live-connections.ts';
import { HostPolicy } from './origins.ts';
import { problem, sendProblem, toProblem } from './problem.ts';
import { registerArtifactRoutes } from './routes/artifacts.ts';
import { registerAuditRoutes } from './routes/audit.ts';
import { registerEventRoutes } from './routes/events.ts';
import { registerJobRoutes } from './routes/jobs.ts';
import { attachUpgradeProxy, registerServiceRoutes } from './routes/services.ts';
import { healthResponse } from './schemas.ts';

export interface ApiOptions {
  config: Config;
  jobs: JobService;
  logger: Logger;
}

/** What every route sees: the options, who may call (keys, browser tokens, hosts) and the connections to cut on revocation. */
export interface ApiContext extends ApiOptions {
  auth: Authenticator;
  connections: LiveConnections;
}

export type ZodApp = FastifyInstance<RawServerDefault, RawRequestDefaultExpression, RawReplyDefaultExpression, FastifyBaseLogger, ZodTypeProvider>;

export async function buildServer(options: ApiOptions): Promise<FastifyInstance> {
  const store = options.jobs.store;
  const auth = new Authenticator(store, new BrowserTokens(store.serverSecret('browser-tokens')), new HostPolicy(options.config));
  const context: ApiContext = { ...options, auth, connections: new LiveConnections((owner) => store.isApiKeyLive(owner)) };
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
    if (body.status >= 500) request.log.error({ err: error }, 'request failed');
    return sendProblem(reply, body);
  });
  app.setNotFoundHandler((request, reply) => sendProblem(reply, problem(404, 'not_found', `no route ${request.method} ${request.url.split('?')[0]}`)));

  await app.register(fastifySwagger, {
    openapi: {
      openapi: '3.1.0',
      info: { title: 'workcell', version, description: 'Runs coding agents in isolated sandboxes: schedule a task, follow its steps, download the workspace.' },
      components: {
        securitySchemes: {
          apiKey: { type: 'http', scheme: 'bearer', description: 'Needed once the server has API keys (`workcell keys create`); without keys the server is local-only and open.' },
        },
      },
      security: [{ apiKey: [] }],
    },
    transform: jsonSchemaTransform,
  });

  registerAuth(app, auth);
  const typed = app.withTypeProvider<ZodTypeProvider>();
  typed.get('/healthz', { schema: { summary: 'Liveness', response: { 200: healthResponse } } }, async () => ({ ok: true, version }));
  typed.get('/openapi.json', { schema: { hide: true } }, async () => app.swagger());
  registerJobRoutes(typed, context);
  registerEventRoutes(typed, context);
  registerArtifactRoutes(typed, context);
  registerAuditRoutes(typed, context);
  registerServiceRoutes(typed, context);
  const websockets = attachUpgradeProxy(app.server, context);
  app.addHook('preClose', async () => {
    context.connections.close();
    websockets.closeAll();
  });
  return app;
}
