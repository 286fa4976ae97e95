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

  app.addHook('onResponse', async (request) => {
    const auth = request.auth;
    if (!auth) return;
    const now = Date.now();
    if ((lastWritten.get(auth.tenantId) ?? 0) + LAST_REQUEST_EVERY_MS < now) {
      lastWritten.set(auth.tenantId, now);
      db.updateTable('tenants')
        .set({ last_request_at: new Date(now) })
        .where('id', '=', auth.tenantId)
        .execute()
        .catch((error: unknown) => request.log.warn({ err: error }, 'could not record the last request time'));
    }
  });

  // Failed writes are recorded before the answer leaves, so whoever reads the
  // status after a failure sees it.
  app.addHook('onSend', async (request, reply, payload) => {
    const auth = request.auth;
    const action = WRITE_ACTIONS[request.method];
    if (!auth || !action || reply.statusCode < 400 || request.auditRecorded) return payload;
    const [, resource = '', id] = /\/scim\/v2\/(Users|Groups)(?:\/([^/?]+))?/i.exec(request.url) ?? [];
    if (!resource) return payload;
    await recordAudit(db, {
      tenantId: auth.tenantId,
      action,
      objectType: resource.toLowerCase() === 'users' ? 'user' : 'group',
      objectId: isUuid(id) ? id : null,
      outcome: 'failure',
      credentialId: auth.credentialId,
      requestId: request.id,
      details: { status: reply.statusCode },
    }).catch((error: unknown) => request.log.warn({ err: error }, 'could not record a failed write'));
    return payload;
  });
}

export const activityPlugin = fp(activity, { name: 'scim-activity', fastify: '5.x', dependencies: ['scim-auth'] });
