// What the sync status reads about SCIM traffic: failed writes become audit
// events with outcome "failure" that say why (the SCIM error Entra received)
// and of which object, and each tenant's last request time is kept (written
// at most once per tenant every few seconds per instance).
import type { FastifyInstance, FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';
import { recordAudit, type AuditAction, type AuditEvent } from '../db/audit.js';
import type { Db, JsonObject } from '../db/database.js';
import { isUuid } from '../db/ids.js';
import { ScimError } from '../errors.js';
import { failureMessage } from './errors.js';

const WRITE_ACTIONS: Record<string, AuditAction> = { POST: 'create', PUT: 'update', PATCH: 'update', DELETE: 'delete' };
const LAST_REQUEST_EVERY_MS = 10_000;
/** A user or a class, by id or not; a search (a POST that only reads) is no write. */
const RESOURCE = /^\/scim\/v2\/(users|groups)(?:\/((?!\.search)[^/?]*))?\/?(?:\?|$)/i;
/** References longer than this are cut: a request refused for its size must not fill the audit log. */
const MAX_REFERENCE = 256;

export interface FailedWrite {
  tenantId: string;
  credentialId: string;
  requestId: string;
  method: string;
  url: string;
  /** The parsed request body (undefined when it was none or could not be read). */
  body: unknown;
  status: number;
  /** The SCIM error the answer carried, when the error renderer sent one. */
  error: ScimError | null;
}

const clip = (value: string): string => (value.length > MAX_REFERENCE ? `${value.slice(0, MAX_REFERENCE)}…` : value);

function reference(body: unknown, key: string): string | undefined {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) return undefined;
  const value = (body as Record<string, unknown>)[key];
  return typeof value === 'string' && value !== '' ? clip(value) : undefined;
}

/**
 * The audit event of a failed SCIM write, or undefined for a request that is
 * no write of a user or class. It keeps what Entra received (status,
 * scimType and detail, as sent), the message the failure groups under, and
 * what names the object: the userName or displayName and externalId from the
 * body, the id in the path. No other value of the body.
 */
export function failedWriteEvent(write: FailedWrite): AuditEvent | undefined {
  const action = WRITE_ACTIONS[write.method];
  const [, resource, id] = RESOURCE.exec(write.url) ?? [];
  if (!action || !resource) return undefined;
  const objectType = resource.toLowerCase() === 'users' ? 'user' : 'group';
  const externalId = reference(write.body, 'externalId');
  const details: JsonObject = { status: write.status };
  if (write.error) {
    if (write.error.scimType) details.scimType = write.error.scimType;
    details.detail = write.error.detail;
    details.message = failureMessage(write.error.detail);
  }
  if (externalId !== undefined) details.externalId = externalId;
  // An id that is no UUID names no row; it is kept as it was asked for.
  if (id && !isUuid(id)) details.id = clip(id);
  return {
    tenantId: write.tenantId,
    action,
    objectType,
    objectId: isUuid(id) ? id.toLowerCase() : null,
    objectRef: reference(write.body, objectType === 'user' ? 'userName' : 'displayName') ?? null,
    outcome: 'failure',
    credentialId: write.credentialId,
    requestId: write.requestId,
    details,
  };
}

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
    const event =
      auth && reply.statusCode >= 400 && !audited.has(request)
        ? failedWriteEvent({
            tenantId: auth.tenant.id,
            credentialId: auth.credentialId,
            requestId: request.id,
            method: request.method,
            url: request.url,
            body: request.body,
            status: reply.statusCode,
            error: reply.scimError,
          })
        : undefined;
    if (!event) {
      done(null, payload);
      return;
    }
    recordAudit(db, event)
      .catch((error: unknown) => request.log.warn({ err: error }, 'could not record a failed write'))
      .finally(() => done(null, payload));
  });
}

export const activityPlugin = fp(activity, { name: 'scim-activity', fastify: '5.x', dependencies: ['scim-auth', 'scim-errors'] });
