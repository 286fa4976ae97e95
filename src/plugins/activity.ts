// What the sync status reads about SCIM traffic: failed writes become audit
// events with outcome "failure", and each tenant's last request time is kept
// (written at most once per tenant every few seconds per instance).
import type { FastifyInstance, FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';
import { recordAudit, type AuditAction } from '../db/audit.js';
import type { Db } from '../db/database.js';
import { isUuid } from '../db/ids.js';
import { ScimError } from '../errors.js';

const WRITE_ACTIONS: Record<string, AuditAction> = { POST: 'create', PUT: 'update', PATCH: 'update', DELETE: 'delete' };
const LAST_REQUEST_EVERY_MS = 10_000;

async function activity(app: FastifyInstance, options: { db: Db }): Promise<void> {
  const { db } = options;
  const lastWritten = new Map<string, number>();
  // Failures whose handler wrote their audit event itself (ScimError.audited),
  // seen on their way to the error renderer.
  const audited = new WeakSet<FastifyRequest>();
  app.addHook('onError', (request, _reply, error, done) => {
    if (error instanceof ScimError && error.audited) audited.add(request);
    done();
  });

  // Hooks with a callback, not async ones: a request that needs none of
  // their work gets no promise from them.
  app.addHook('onResponse', (request, _reply, done) => {
    const auth = request.auth;
    const now = Date.now();
    if (auth && (lastWritten.get(auth.tenant.id) ?? 0) + LAST_REQUEST_EVERY_MS < now) {
      lastWritten.set(auth.tenant.id, now);
      db.updateTable('tenants')
        .set({ last_request_at: new Date(now) })
        .where('id', '=', auth.tenant.id)
        .execute()
        .catch((error: unknown) => request.log.warn({ err: error }, 'could not record the last request time'));
    }
    done();
  });

  // Failed writes are recorded before the answer leaves, so whoever reads the
  // status after a failure sees it.
  app.addHook('onSend', (request, reply, payload, done) => {
    const auth = request.auth;
    const action = WRITE_ACTIONS[request.method];
    if (!auth || !action || reply.statusCode < 400 || audited.has(request)) {
      done(null, payload);
      return;
    }
    const [, resource = '', id] = /\/scim\/v2\/(Users|Groups)(?:\/([^/?]+))?/i.exec(request.url) ?? [];
    if (!resource) {
      done(null, payload);
      return;
    }
    recordAudit(db, {
      tenantId: auth.tenant.id,
      action,
      objectType: resource.toLowerCase() === 'users' ? 'user' : 'group',
      objectId: isUuid(id) ? id : null,
      outcome: 'failure',
      credentialId: auth.credentialId,
      requestId: request.id,
      details: { status: reply.statusCode },
    })
      .catch((error: unknown) => request.log.warn({ err: error }, 'could not record a failed write'))
      .finally(() => done(null, payload));
  });
}

export const activityPlugin = fp(activity, { name: 'scim-activity', fastify: '5.x', dependencies: ['scim-auth'] });
