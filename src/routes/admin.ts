// The admin API for the portal team's screens: tenants' sync health, audit
// events with paging, open conflicts. It has its own credentials (admin
// tokens, audience "<aud>:admin"); a tenant's SCIM token never opens it.
import { createVerifier } from 'fast-jwt';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { secretFor, type SigningKeys } from '../auth/keys.js';
import { TOKEN_ALGORITHM, adminAudience } from '../auth/tokens.js';
import type { Config } from '../config.js';
import { findActiveAdminCredential } from '../db/admin-credentials.js';
import { listAuditEvents, listOpenConflicts, tenantStatus } from '../db/audit.js';
import type { Db } from '../db/database.js';
import { isUuid } from '../db/ids.js';
import { findTenant, listTenants } from '../db/tenants.js';
import { ScimError, badRequest, notFound } from '../errors.js';

export interface AdminOptions {
  config: Config;
  db: Db;
  keys: SigningKeys;
}

const CHALLENGE = 'Bearer realm="portal-scim-admin"';

export async function adminRoutes(app: FastifyInstance, options: AdminOptions): Promise<void> {
  const { config, db, keys } = options;
  const verify = createVerifier({
    key: async (decoded: { header: { kid?: unknown } }) => secretFor(keys, decoded.header.kid),
    algorithms: [TOKEN_ALGORITHM],
    allowedIss: config.jwtIssuer,
    allowedAud: adminAudience(config.jwtAudience),
    requiredClaims: ['jti', 'iss', 'aud'],
  });
  const cache = new Map<string, { ok: boolean; until: number }>();

  const unauthorized = (detail: string) => new ScimError(401, undefined, detail, { 'www-authenticate': CHALLENGE });

  app.addHook('onRequest', async (request: FastifyRequest) => {
    const match = /^bearer\s+(\S+)$/i.exec(request.headers.authorization?.trim() ?? '');
    if (!match?.[1]) throw unauthorized('The admin API needs an admin token: "Authorization: Bearer <token>" (portal-scim admin-token issue).');
    let claims: { jti?: unknown };
    try {
      claims = (await verify(match[1])) as { jti?: unknown };
    } catch {
      throw unauthorized('The admin token is not valid for this server.');
    }
    if (!isUuid(claims.jti)) throw unauthorized('The admin token is not valid for this server.');
    const now = Date.now();
    let hit = cache.get(claims.jti);
    if (!hit || hit.until <= now) {
      hit = { ok: (await findActiveAdminCredential(db, claims.jti)) !== undefined, until: now + config.credentialCacheSeconds * 1000 };
      cache.set(claims.jti, hit);
    }
    if (!hit.ok) throw unauthorized('The admin token has been revoked or has expired.');
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
