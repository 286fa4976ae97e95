// The admin API for the portal team's screens and automation: every tenant's
// health, a tenant's sync, its recent failures grouped by message, audit
// events with paging, conflicts and closing them by hand; and
// onboarding: creating tenants, changing their settings, issuing and revoking
// Secret Tokens and OAuth clients, disconnecting and connecting, through the
// same operations as the CLI; and the preview of a tenant's first sync from
// Entra's user export. It has its own credentials (admin tokens,
// audience "<aud>:admin"); a tenant's SCIM token never opens it.
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { bearerToken, type AdminAuth } from '../auth/admin.js';
import type { SigningKeys } from '../auth/keys.js';
import type { Config } from '../config.js';
import { listAuditEvents, listOpenConflicts } from '../db/audit.js';
import type { Db } from '../db/database.js';
import { isUuid } from '../db/ids.js';
import { tenantStatus } from '../db/tenant-status.js';
import { findTenant } from '../db/tenants.js';
import { ScimError, badRequest, notFound } from '../errors.js';
import { accountView, changeOverrides, findAccounts, mergeAccounts, parseMerge, parseOverrideChange, showAccount } from '../services/accounts.js';
import type { Actor } from '../services/actor.js';
import { closeConflictByHand, listTenantConflicts, parseClosingRequest, parseConflictState, type Closing } from '../services/conflicts.js';
import {
  createOAuthClient,
  credentialViews,
  issueSecretToken,
  listTenantCredentials,
  parseCredentialRequest,
  publicUrlWarning,
  revokeCredential,
} from '../services/credentials.js';
import { ServiceError } from '../services/errors.js';
import { parseFailureHours, recentFailures } from '../services/failures.js';
import { healthSettings, tenantOverview, withHealth } from '../services/health.js';
import { PREVIEW_MAX_BYTES, previewCsv, previewFirstSync, readEntraUsers } from '../services/preview.js';
import { changeTenantSettings, connectTenant, createTenant, disconnectTenant, parseNewTenant, parseTenantChanges, tenantSettings } from '../services/tenants.js';

export interface AdminOptions {
  config: Config;
  db: Db;
  keys: SigningKeys;
  adminAuth: AdminAuth;
}

const CHALLENGE = 'Bearer realm="portal-scim-admin"';

/** The SCIM error body the admin API answers a service error with. */
function fromServiceError(error: ServiceError): ScimError {
  switch (error.kind) {
    case 'invalid':
      return new ScimError(400, 'invalidValue', error.message);
    case 'not-found':
      return new ScimError(404, undefined, error.message);
    case 'conflict':
      return new ScimError(409, undefined, error.message);
    case 'taken':
      return new ScimError(409, 'uniqueness', error.message);
  }
}

export async function adminRoutes(app: FastifyInstance, options: AdminOptions): Promise<void> {
  const { config, db, adminAuth } = options;
  const signing = { keys: options.keys, issuer: config.jwtIssuer, audience: config.jwtAudience };
  const health = healthSettings(config);
  const tenantUrl = `${config.publicUrl}/scim/v2`;
  const unauthorized = (detail: string) => new ScimError(401, undefined, detail, { 'www-authenticate': CHALLENGE });
  // The admin credential of each request, for the audit events of what it changes.
  const callers = new WeakMap<FastifyRequest, string>();

  app.addHook('onRequest', async (request: FastifyRequest) => {
    const token = bearerToken(request.headers.authorization);
    if (!token) throw unauthorized('The admin API needs an admin token: "Authorization: Bearer <token>" (portal-scim admin-token issue).');
    const check = await adminAuth.checkToken(token);
    if (!check.ok) {
      throw unauthorized(check.reason === 'revoked' ? 'The admin token has been revoked or has expired.' : 'The admin token is not valid for this server.');
    }
    callers.set(request, check.credentialId);
  });

  // Service errors leave as SCIM errors through the app's one error renderer.
  app.setErrorHandler(async (error) => {
    throw error instanceof ServiceError ? fromServiceError(error) : error;
  });

  const actor = (request: FastifyRequest): Actor => ({ via: 'admin-api', adminCredentialId: callers.get(request) ?? '' });

  /** The tenant id in the path; 404 when no tenant has it. */
  const tenantParam = async (request: FastifyRequest): Promise<string> => {
    const { id } = request.params as { id: string };
    if (!isUuid(id) || !(await findTenant(db, id.toLowerCase()))) throw notFound(`No tenant ${String(id)}.`);
    return id.toLowerCase();
  };

  /** Counts of the last seconds are stored before the health that reads them is worked out. */
  const flushCounts = (request: FastifyRequest) =>
    app.flushRequestCounts().catch((error: unknown) => request.log.warn({ err: error }, 'could not store request counts'));

  const created = (reply: FastifyReply, location: string) => reply.code(201).header('location', location);

  app.get('/tenants', async (request) => {
    await flushCounts(request);
    return { tenants: await tenantOverview(db, health) };
  });

  app.post('/tenants', async (request, reply) => {
    const row = await createTenant(db, parseNewTenant(request.body), actor(request));
    created(reply, `/admin/tenants/${row.id}`);
    return tenantSettings(row);
  });

  app.get('/tenants/:id', async (request) => {
    const { id } = request.params as { id: string };
    await flushCounts(request);
    const now = new Date();
    // tenantStatus reads the tenant itself: no separate existence check.
    const status = isUuid(id) ? await tenantStatus(db, id.toLowerCase(), now) : undefined;
    if (!status) throw notFound(`No tenant ${String(id)}.`);
    const [conflicts, credentials, failures] = await Promise.all([
      listOpenConflicts(db, status.tenantId, 20),
      listTenantCredentials(db, status.tenantId, now),
      recentFailures(db, status.tenantId, now),
    ]);
    return {
      ...withHealth(status, now, health),
      accounts: status.accounts,
      deletedAccounts: status.deletedAccounts,
      classes: status.classes,
      failures,
      conflicts,
      credentials,
    };
  });

  app.patch('/tenants/:id', async (request) => {
    const id = await tenantParam(request);
    const { tenant, changed } = await changeTenantSettings(db, id, parseTenantChanges(request.body), actor(request));
    return { ...tenantSettings(tenant), changed };
  });

  app.post('/tenants/:id/disconnect', async (request) => {
    const id = await tenantParam(request);
    const result = await disconnectTenant(db, id, actor(request));
    return {
      ...tenantSettings(result.tenant),
      alreadyDisconnected: result.alreadyDisconnected,
      credentials: result.credentials,
      accounts: result.accounts,
      classes: result.classes,
    };
  });

  app.post('/tenants/:id/connect', async (request) => {
    const id = await tenantParam(request);
    const result = await connectTenant(db, id, actor(request));
    return { ...tenantSettings(result.tenant), alreadyConnected: result.alreadyConnected };
  });

  app.get('/tenants/:id/credentials', async (request) => {
    const id = await tenantParam(request);
    return { credentials: await listTenantCredentials(db, id) };
  });

  const warnings = () => {
    const warning = publicUrlWarning(config.publicUrl);
    return warning === undefined ? {} : { warnings: [warning] };
  };

  app.post('/tenants/:id/tokens', async (request, reply) => {
    const id = await tenantParam(request);
    const { credential, token } = await issueSecretToken(db, signing, id, parseCredentialRequest(request.body), actor(request));
    created(reply, `/admin/tenants/${id}/credentials/${credential.id}`);
    return { id: credential.id, tenantId: id, tenantUrl, token, expiresAt: credential.expires_at, ...warnings() };
  });

  app.post('/tenants/:id/clients', async (request, reply) => {
    const id = await tenantParam(request);
    const { credential, clientSecret } = await createOAuthClient(db, id, parseCredentialRequest(request.body), actor(request));
    created(reply, `/admin/tenants/${id}/credentials/${credential.id}`);
    return {
      clientId: credential.id,
      clientSecret,
      tenantId: id,
      tenantUrl,
      tokenUrl: `${config.publicUrl}/oauth/token`,
      expiresAt: credential.expires_at,
      ...warnings(),
    };
  });

  app.delete('/tenants/:id/credentials/:credentialId', async (request) => {
    const id = await tenantParam(request);
    const { credentialId } = request.params as { credentialId: string };
    if (!isUuid(credentialId)) throw new ServiceError('not-found', `No credential ${String(credentialId)}.`);
    const result = await revokeCredential(db, credentialId.toLowerCase(), actor(request), { tenantId: id });
    const [view] = credentialViews([result.credential], new Date());
    return { ...view, alreadyRevoked: result.alreadyRevoked };
  });

  app.get('/accounts/:id', async (request) => {
    const { id } = request.params as { id: string };
    return accountView(await showAccount(db, id));
  });

  app.patch('/accounts/:id/overrides', async (request) => {
    const { id } = request.params as { id: string };
    return accountView(await changeOverrides(db, id, parseOverrideChange(request.body), actor(request)));
  });

  app.delete('/accounts/:id/overrides', async (request) => {
    const { id } = request.params as { id: string };
    return accountView(await changeOverrides(db, id, { clear: true }, actor(request)));
  });

  app.post('/accounts/merge', async (request) => {
    const { keep, absorb, dryRun } = parseMerge(request.body);
    const merged = await mergeAccounts(db, keep, absorb, actor(request), { dryRun });
    return {
      kept: accountView(merged.kept),
      absorbedId: merged.absorbedId,
      ...(merged.absorbed ? { absorbed: accountView(merged.absorbed) } : {}),
      alreadyMerged: merged.alreadyMerged,
      dryRun: merged.dryRun,
      cautions: merged.cautions,
    };
  });

  app.get('/tenants/:id/accounts', async (request) => {
    const id = await tenantParam(request);
    const { find } = request.query as { find?: unknown };
    if (typeof find !== 'string') throw badRequest('invalidValue', 'Give find: a userName, an e-mail address or an Entra object id.');
    return { accounts: await findAccounts(db, id, find) };
  });

  app.get('/tenants/:id/failures', async (request) => {
    const id = await tenantParam(request);
    const hours = parseFailureHours((request.query as { hours?: unknown }).hours);
    return { hours, failures: await recentFailures(db, id, new Date(), { hours, groups: 50 }) };
  });

  app.get('/tenants/:id/conflicts', async (request) => {
    const id = await tenantParam(request);
    const { state } = request.query as { state?: string };
    return { conflicts: await listTenantConflicts(db, id, { state: parseConflictState(state), limit: 500 }) };
  });

  const closeConflict = (closing: Closing) => async (request: FastifyRequest) => {
    const id = await tenantParam(request);
    const { conflictId } = request.params as { conflictId: string };
    if (!isUuid(conflictId)) throw new ServiceError('not-found', `No conflict ${String(conflictId)}.`);
    const { note } = parseClosingRequest(request.body);
    const result = await closeConflictByHand(db, conflictId.toLowerCase(), closing, note, actor(request), { tenantId: id });
    return { ...result.conflict, alreadyClosed: result.alreadyClosed };
  };
  app.post('/tenants/:id/conflicts/:conflictId/resolve', closeConflict('resolve'));
  app.post('/tenants/:id/conflicts/:conflictId/dismiss', closeConflict('dismiss'));

  app.get('/tenants/:id/audit', async (request) => {
    const id = await tenantParam(request);
    const query = request.query as { limit?: string; before?: string };
    const limit = query.limit === undefined ? 50 : Number(query.limit);
    if (!Number.isInteger(limit) || limit < 1 || limit > 500) throw badRequest('invalidValue', 'limit must be a whole number from 1 to 500.');
    const notACursor = () => badRequest('invalidValue', 'before must be an event id from a previous page.');
    if (query.before !== undefined && !/^\d{1,18}$/.test(query.before)) throw notACursor();
    const page = await listAuditEvents(db, id, { limit, ...(query.before !== undefined ? { before: query.before } : {}) });
    if (!page) throw notACursor();
    return { events: page.events, ...(page.next !== undefined ? { next: `/admin/tenants/${id}/audit?limit=${limit}&before=${page.next}` } : {}) };
  });

  // The first-sync preview reads Entra's export as the body, as text/csv, and
  // nothing else; its own scope keeps the other routes to JSON.
  await app.register(async (preview) => {
    preview.removeAllContentTypeParsers();
    preview.addContentTypeParser('text/csv', { parseAs: 'buffer', bodyLimit: PREVIEW_MAX_BYTES }, (_request, body, done) => done(null, body));
    const csvBody = 'Send the CSV of "Download users" (Entra admin center) as the body, with Content-Type: text/csv.';
    preview.setErrorHandler(async (error) => {
      throw (error as { code?: unknown }).code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE' ? new ScimError(415, undefined, csvBody) : error;
    });

    preview.post('/tenants/:id/preview', { bodyLimit: PREVIEW_MAX_BYTES }, async (request, reply) => {
      const id = await tenantParam(request);
      if (!Buffer.isBuffer(request.body)) throw new ServiceError('invalid', csvBody);
      const report = await previewFirstSync(db, id, await readEntraUsers(request.body));
      if (wantsCsv(request.headers.accept)) {
        return reply
          .type('text/csv; charset=utf-8')
          .header('content-disposition', `attachment; filename="first-sync-preview-${id}.csv"`)
          .send(previewCsv(report));
      }
      return report;
    });
  });
}

/** Whether the client asked for the report as CSV rather than JSON. */
function wantsCsv(accept: string | undefined): boolean {
  const types = (accept ?? '').split(',').map((t) => t.split(';')[0]?.trim().toLowerCase());
  return types.includes('text/csv') && !types.includes('application/json');
}
