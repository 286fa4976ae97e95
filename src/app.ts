// buildApp(): every plugin and route of the server, registered explicitly and
// in order, so this file shows the whole architecture.
import { randomUUID } from 'node:crypto';
import rateLimit from '@fastify/rate-limit';
import underPressure from '@fastify/under-pressure';
import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify';
import type pg from 'pg';
import { createAdminAuth } from './auth/admin.js';
import type { SigningKeys } from './auth/keys.js';
import type { Config } from './config.js';
import { observeAudit } from './db/audit.js';
import { createChangeNotifier } from './db/change-notifier.js';
import type { Db } from './db/database.js';
import { createMetrics } from './metrics.js';
import { ANSWER_HEADERS } from './security-headers.js';
import { healthSettings } from './services/health.js';
import { activityPlugin } from './plugins/activity.js';
import { authPlugin } from './plugins/auth.js';
import { connectionLimitsPlugin, limitedServer } from './plugins/connection-limits.js';
import { metricsPlugin } from './plugins/metrics.js';
import { requestCountsPlugin } from './plugins/request-counts.js';
import { tenantSharePlugin } from './plugins/tenant-share.js';
import secureJson from 'secure-json-parse';
import { ScimError, notFound, RETRY_AFTER_SECONDS, unavailable } from './errors.js';
import { clientError, errorsPlugin, frameworkError, RequestLog, SCIM_CONTENT_TYPE, sendScimError } from './plugins/errors.js';
import { adminRoutes } from './routes/admin.js';
import { discoveryRoutes } from './routes/discovery.js';
import { docsRoutes } from './routes/docs.js';
import { healthRoutes } from './routes/health.js';
import { oauthRoutes } from './routes/oauth.js';
import { openapiRoutes } from './routes/openapi.js';
import { resourceRoutes, rootSearchRoutes } from './routes/resources.js';
import { statusRoutes } from './routes/status.js';
import { tenantUrlMistake } from './routes/tenant-url.js';
import { groups } from './scim/groups.js';
import { MAX_JSON_DEPTH, MAX_JSON_OBJECT_MEMBERS, MAX_PARAM_LENGTH, jsonShapeProblem } from './scim/limits.js';
import { SeenAccounts } from './scim/seen-accounts.js';
import type { WriteStrategy } from './scim/resource.js';
import { users } from './scim/users.js';

const STRICT_UTF8 = new TextDecoder('utf-8', { fatal: true });

export interface AppOptions {
  config: Config;
  db: Db;
  keys: SigningKeys;
  /** The pool behind db, for the pool metrics. */
  pool?: pg.Pool;
  logger?: FastifyServerOptions['loggerInstance'];
  /** How SCIM writes run (see WriteStrategy); the server's is quick. */
  writeStrategy?: WriteStrategy;
}

const REQUEST_ID = /^[\w.:-]{1,128}$/;

/** The rate limit counts over windows this long, so a burst may use several seconds' allowance. */
const RATE_LIMIT_WINDOW_SECONDS = 10;

declare module 'fastify' {
  interface FastifyInstance {
    routeTable: readonly { method: string; url: string }[];
  }
  interface FastifyContextConfig {
    /** A route that only answers 405: left out of the documented surface. */
    methodNotAllowed?: boolean;
  }
}

export async function buildApp(options: AppOptions): Promise<FastifyInstance> {
  const { config, keys } = options;
  // Every audit event written through this app's db is counted by its metrics.
  const metrics = createMetrics({ db: options.db, pool: options.pool, health: healthSettings(config) });
  const db = observeAudit(options.db, metrics.countAudit);
  const adminAuth = createAdminAuth({ config, db, keys });
  const app = Fastify({
    ...(options.logger ? { loggerInstance: options.logger } : { logger: false }),
    bodyLimit: config.bodyLimitBytes,
    requestIdHeader: false,
    logController: new RequestLog({ requestIdLogLabel: 'requestId' }),
    genReqId: (req) => {
      const given = req.headers['x-request-id'] ?? req.headers['client-request-id'];
      return typeof given === 'string' && REQUEST_ID.test(given) ? given : randomUUID();
    },
    routerOptions: { ignoreTrailingSlash: true, caseSensitive: false, maxParamLength: MAX_PARAM_LENGTH },
    frameworkErrors: frameworkError,
    clientErrorHandler: clientError,
    trustProxy: config.trustProxy,
    return503OnClosing: true,
    serverFactory: limitedServer({ requestTimeoutMs: config.requestTimeoutMs, maxConnections: config.maxConnections }),
  }).withTypeProvider();

  // First of all hooks, so a connection past its limits costs nothing more.
  await app.register(connectionLimitsPlugin, {
    connectionOutputLimitBytes: config.connectionOutputLimitBytes,
    outputLimitBytes: config.outputLimitBytes,
  });

  // The documented surface, for the OpenAPI test: every route but the 405s.
  const routeTable: { method: string; url: string }[] = [];
  app.addHook('onRoute', (route) => {
    if (route.config?.methodNotAllowed) return;
    for (const method of [route.method].flat()) if (method !== 'HEAD') routeTable.push({ method, url: route.url });
  });
  app.decorate('routeTable', routeTable);

  // Every answer carries its request id and the security headers (security-headers.ts).
  app.addHook('onRequest', (request, reply, done) => {
    reply.header('x-request-id', request.id);
    reply.headers(ANSWER_HEADERS);
    done();
  });

  // SCIM clients send application/scim+json. Entra also sends a JSON content
  // type on bodiless requests (DELETE), so an empty body is no body, not an error.
  // secure-json-parse refuses __proto__ and constructor.prototype poisoning.
  app.removeContentTypeParser('application/json');
  // Fastify reads text/plain by default; SCIM has no use for it, so it is 415.
  app.removeContentTypeParser('text/plain');
  app.addContentTypeParser(['application/json', 'application/scim+json'], { parseAs: 'buffer' }, (_request, body, done) => {
    let text: string;
    try {
      // Strictly: bytes that are no UTF-8 would otherwise become U+FFFD, and two different names one.
      text = typeof body === 'string' ? body : STRICT_UTF8.decode(body);
    } catch {
      done(new ScimError(400, 'invalidSyntax', 'The request body is not UTF-8; SCIM bodies are JSON in UTF-8.'), undefined);
      return;
    }
    if (text.trim() === '') {
      done(null, undefined);
      return;
    }
    const problem = jsonShapeProblem(text);
    if (problem !== undefined) {
      const detail =
        problem === 'depth'
          ? `The request body nests deeper than ${MAX_JSON_DEPTH} levels.`
          : `An object of the request body has more than ${MAX_JSON_OBJECT_MEMBERS} attributes; no SCIM resource has so many.`;
      done(new ScimError(400, 'invalidSyntax', detail), undefined);
      return;
    }
    try {
      done(null, secureJson.parse(text, undefined, { protoAction: 'error', constructorAction: 'error' }));
    } catch {
      done(new ScimError(400, 'invalidSyntax', 'The request body is not valid JSON.'), undefined);
    }
  });

  // A request through a wrong Tenant URL is told the right one.
  const tenantUrl = `${config.publicUrl}/scim/v2`;
  await app.register(errorsPlugin, { notFound: (request) => tenantUrlMistake(request.url, tenantUrl) });

  // Shed load when the event loop lags: a quick 503 that Entra retries beats a
  // slow answer past its timeout. Liveness keeps answering.
  if (config.maxEventLoopDelayMs > 0) {
    await app.register(underPressure, {
      maxEventLoopDelay: config.maxEventLoopDelayMs,
      retryAfter: RETRY_AFTER_SECONDS,
      pressureHandler: (request) => {
        if (request.url === '/healthz') return undefined;
        return Promise.reject(unavailable('The server is overloaded; retry shortly.'));
      },
    });
  }
  await app.register(metricsPlugin, { metrics, adminAuth });
  await app.register(requestCountsPlugin, { db });
  await app.register(authPlugin, {
    db,
    keys,
    issuer: config.jwtIssuer,
    audience: config.jwtAudience,
    cacheSeconds: config.credentialCacheSeconds,
    entra: { jwksUrl: config.entraJwksUrl, timeoutMs: config.entraJwksTimeoutMs, cooldownSeconds: config.entraJwksCooldownSeconds },
  });

  await app.register(healthRoutes, { db, timeoutMs: config.readinessTimeoutMs });
  await app.register(adminRoutes, { prefix: '/admin', config, db, keys, adminAuth });
  await app.register(statusRoutes, { config, db, adminAuth, keys });
  await app.register(openapiRoutes);
  await app.register(docsRoutes);
  await app.register(oauthRoutes, { prefix: '/oauth', config, db, keys });

  await app.register(
    async (scim) => {
      scim.addHook('onRequest', scim.authenticate);
      // Per tenant, after authentication. The store is in memory, so each
      // instance behind a load balancer allows this much on its own.
      if (config.rateLimitPerSecond > 0) {
        await scim.register(rateLimit, {
          hook: 'preHandler',
          timeWindow: RATE_LIMIT_WINDOW_SECONDS * 1000,
          max: config.rateLimitPerSecond * RATE_LIMIT_WINDOW_SECONDS,
          keyGenerator: (request) => request.auth?.tenant.id ?? request.ip,
          errorResponseBuilder: (_request, context) =>
            new ScimError(429, undefined, `Too many requests for this tenant; retry in ${context.after}.`, {
              'retry-after': String(Math.max(1, Math.ceil(context.ttl / 1000))),
            }),
        });
      }
      await scim.register(activityPlugin, { db });
      if (config.tenantConcurrency > 0) {
        await scim.register(tenantSharePlugin, { concurrency: config.tenantConcurrency, queueTimeoutMs: config.tenantQueueTimeoutMs });
      }
      scim.addHook('onSend', (_request, reply, payload, done) => {
        if (reply.getHeader('content-type')?.toString().startsWith('application/json')) {
          reply.type(SCIM_CONTENT_TYPE);
        }
        done(null, payload);
      });
      // Unknown SCIM paths still require a credential: nothing answers anonymously.
      scim.setNotFoundHandler({ preHandler: scim.authenticate }, (request, reply) =>
        sendScimError(reply, tenantUrlMistake(request.url, tenantUrl) ?? notFound(`No resource at ${request.method} ${request.url.split('?')[0] ?? ''}.`)),
      );
      await scim.register(discoveryRoutes, { config });
      // Per app, like every other state: two apps in one process share nothing.
      const seenAccounts = new SeenAccounts();
      const writeStrategy = options.writeStrategy ?? 'quick';
      // Wakes the change feed's readers after writes commit (db/change-notifier.ts).
      const changes = createChangeNotifier(db, (error) => scim.log.warn({ err: error }, 'could not notify the change feed; readers find the changes at their next poll'));
      scim.addHook('onClose', () => changes.close());
      const routes = { config, db, seenAccounts, writeStrategy, changes };
      await scim.register(resourceRoutes, { ...routes, handler: users });
      await scim.register(resourceRoutes, { ...routes, handler: groups });
      await scim.register(rootSearchRoutes, { ...routes, handlers: [users, groups] });
    },
    { prefix: '/scim/v2' },
  );

  return app;
}
