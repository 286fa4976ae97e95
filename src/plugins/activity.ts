// What the sync status reads about SCIM traffic: failed writes become audit
// events with outcome "failure", and each tenant's last request time is kept
// (written at most once per tenant every few seconds per instance).
import type { FastifyInstance } from 'fastify';
import fp from 'fastify-plugin';
import { recordAudit, type AuditAction } from '../db/audit.js';
import type { Db } from '../db/database.js';
import { isUuid } from '../db/ids.js';

declare module 'fastify' {
  interface FastifyRequest {
    /** Set when the handler already wrote an audit event for its failure (a conflict). */
    auditRecorded: boolean;
  }
}

const WRITE_ACTIONS: Record<string, AuditAction> = { POST: 'create', PUT: 'update', PATCH: 'update', DELETE: 'delete' };
const LAST_REQUEST_EVERY_MS = 10_000;

async function activity(app: FastifyInstance, options: { db: Db }): Promise<void> {
  const { db } = options;
  const lastWritten = new Map<string, number>();
  app.decorateRequest('auditRecorded', false);

  // Hooks with a callback, not async ones: a request that needs none of
  // their work gets no promise from them.
  app.addHook('onResponse', (request, _reply, done) => {
    const auth = request.auth;
    const now = Date.now();
    if (auth && (lastWritten.get(auth.tenantId) ?? 0) + LAST_REQUEST_EVERY_MS < now) {
      lastWritten.set(auth.tenantId, now);
      db.updateTable('tenants')
        .set({ last_request_at: new Date(now) })
        .where('id', '=', auth.tenantId)
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
    if (!auth || !action || reply.statusCode < 400 || request.auditRecorded) {
      done(null, payload);
      return;
    }
    const [, resource = '', id] = /\/scim\/v2\/(Users|Groups)(?:\/([^/?]+))?/i.exec(request.url) ?? [];
    if (!resource) {
      done(null, payload);
      return;
    }
    recordAudit(db, {
      tenantId: auth.tenantId,
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
