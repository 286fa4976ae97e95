// The admin API for the portal team's screens: tenants' sync health, audit
// events with paging, open conflicts. It has its own credentials (admin
// tokens, audience "<aud>:admin"); a tenant's SCIM token never opens it.
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { bearerToken, type AdminAuth } from '../auth/admin.js';
import { listAuditEvents, listOpenConflicts } from '../db/audit.js';
import { tenantStatus } from '../db/tenant-status.js';
import type { Db } from '../db/database.js';
import { isUuid } from '../db/ids.js';
import { findTenant, listTenants } from '../db/tenants.js';
import { ScimError, badRequest, notFound } from '../errors.js';

export interface AdminOptions {
  db: Db;
  adminAuth: AdminAuth;
}

const CHALLENGE = 'Bearer realm="portal-scim-admin"';

export async function adminRoutes(app: FastifyInstance, options: AdminOptions): Promise<void> {
  const { db, adminAuth } = options;
  const unauthorized = (detail: string) => new ScimError(401, undefined, detail, { 'www-authenticate': CHALLENGE });

  app.addHook('onRequest', async (request: FastifyRequest) => {
    const token = bearerToken(request.headers.authorization);
    if (!token) throw unauthorized('The admin API needs an admin token: "Authorization: Bearer <token>" (portal-scim admin-token issue).');
    const check = await adminAuth.checkToken(token);
    if (!check.ok) {
      throw unauthorized(check.reason === 'revoked' ? 'The admin token has been revoked or has expired.' : 'The admin token is not valid for this server.');
    }
  });

  /** The tenant named in the path; 404 when there is none. */
  const tenantParam = async (request: FastifyRequest): Promise<string> => {
    const { id } = request.params as { id: string };
    if (!isUuid(id) || !(await findTenant(db, id))) throw notFound(`No tenant ${String(id)}.`);
    return id;
  };

  app.get('/tenants', async () => {
    const tenants = await listTenants(db);
    return { tenants: await Promise.all(tenants.map(async (t) => tenantStatus(db, t.id))) };
  });

  app.get('/tenants/:id', async (request) => {
    const { id } = request.params as { id: string };
    // tenantStatus reads the tenant itself: no separate existence check.
    const status = isUuid(id) ? await tenantStatus(db, id) : undefined;
    if (!status) throw notFound(`No tenant ${String(id)}.`);
    return { ...status, conflicts: await listOpenConflicts(db, id, 20) };
  });

  app.get('/tenants/:id/conflicts', async (request) => {
    const id = await tenantParam(request);
    return { conflicts: await listOpenConflicts(db, id, 500) };
  });

  app.get('/tenants/:id/audit', async (request) => {
    const id = await tenantParam(request);
    const query = request.query as { limit?: string; before?: string };
    const limit = query.limit === undefined ? 50 : Number(query.limit);
    if (!Number.isInteger(limit) || limit < 1 || limit > 500) throw badRequest('invalidValue', 'limit must be a whole number from 1 to 500.');
    if (query.before !== undefined && !/^\d{1,18}$/.test(query.before)) throw badRequest('invalidValue', 'before must be an event id from a previous page.');
    const page = await listAuditEvents(db, id, { limit, ...(query.before !== undefined ? { before: query.before } : {}) });
    return { events: page.events, ...(page.next !== undefined ? { next: `/admin/tenants/${id}/audit?limit=${limit}&before=${page.next}` } : {}) };
  });
}
