// Counts every answer for Prometheus (route pattern, method, status, tenant,
// latency) and serves GET /metrics to the admin credential.
import type { FastifyInstance } from 'fastify';
import fp from 'fastify-plugin';
import { bearerToken, type AdminAuth } from '../auth/admin.js';
import { ScimError } from '../errors.js';
import type { Metrics } from '../metrics.js';

declare module 'fastify' {
  interface FastifyInstance {
    /** The app's own registry, for a separate metrics port (METRICS_PORT). */
    metricsRegistry: Metrics['registry'];
  }
}

export interface MetricsOptions {
  metrics: Metrics;
  adminAuth: AdminAuth;
}

const CHALLENGE = 'Bearer realm="portal-scim-admin"';

async function metricsRoutes(app: FastifyInstance, options: MetricsOptions): Promise<void> {
  const { metrics, adminAuth } = options;
  app.decorate('metricsRegistry', metrics.registry);

  // A callback, not async: it runs on every answer, and awaits nothing.
  app.addHook('onResponse', (request, reply, done) => {
    metrics.observeRequest(
      {
        // Unmatched URLs share one label: a raw URL would grow the series without bound.
        route: request.routeOptions.url ?? 'unmatched',
        method: request.method,
        status: reply.statusCode,
        // A refused token of this server counts under the tenant it names: the team sees whose requests fail.
        tenant: request.auth?.tenant.id ?? request.refusedTenantId ?? '',
      },
      reply.elapsedTime / 1000,
    );
    done();
  });

  app.get('/metrics', async (request, reply) => {
    const token = bearerToken(request.headers.authorization);
    const check = token === undefined ? undefined : await adminAuth.checkToken(token);
    if (!check?.ok) {
      throw new ScimError(401, undefined, 'Metrics need an admin token: "Authorization: Bearer <token>" (portal-scim admin-token issue).', {
        'www-authenticate': CHALLENGE,
      });
    }
    const text = await metrics.registry.metrics();
    return reply.type(metrics.registry.contentType).send(text);
  });

  app.addHook('onClose', async () => {
    metrics.registry.clear();
  });
}

export const metricsPlugin = fp(metricsRoutes, { name: 'metrics', fastify: '5.x', dependencies: ['scim-errors'] });
