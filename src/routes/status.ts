// The status pages for the portal team: every tenant's health, worst first,
// and a tenant's health, credentials, recent audit events and open
// conflicts, as server-rendered HTML.
// Browsers cannot send a bearer header, so the sign-in form trades an admin
// token for a short-lived signed session cookie; the Authorization header
// works too.
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { SESSION_SECONDS, bearerToken, type AdminAuth } from '../auth/admin.js';
import type { Config } from '../config.js';
import { listAuditEvents, listOpenConflicts } from '../db/audit.js';
import { tenantStatus } from '../db/tenant-status.js';
import type { Db } from '../db/database.js';
import { isUuid } from '../db/ids.js';
import { countMemberships, listRequestsPerHour } from '../db/request-counts.js';
import { toScimError } from '../plugins/errors.js';
import { listTenantCredentials } from '../services/credentials.js';
import { healthSettings, tenantOverview, withHealth } from '../services/health.js';
import { STATUS_CSP, errorPage, overviewPage, signInPage, tenantPage } from './status-view.js';

export interface StatusOptions {
  config: Config;
  db: Db;
  adminAuth: AdminAuth;
}

const COOKIE = 'portal_scim_status';
const CHALLENGE = 'Bearer realm="portal-scim-admin"';
const DAY_MS = 24 * 3_600_000;
/** Where a sign-in may send the browser back to: our own pages only. */
const NEXT = /^\/status(?:\/tenants\/[0-9a-fA-F-]{36})?$/;

function cookieValue(header: string | undefined, name: string): string | undefined {
  for (const part of (header ?? '').split(';')) {
    const [key, ...rest] = part.trim().split('=');
    if (key === name) return rest.join('=');
  }
  return undefined;
}

export async function statusRoutes(app: FastifyInstance, options: StatusOptions): Promise<void> {
  const { db, adminAuth } = options;
  const health = healthSettings(options.config);
  const secure = options.config.publicUrl.startsWith('https:') ? '; Secure' : '';
  const cookie = (value: string, maxAge: number) => `${COOKIE}=${value}; Path=/status; HttpOnly; SameSite=Strict; Max-Age=${maxAge}${secure}`;

  // Only the sign-in form posts here; the rest of the server keeps its parsers.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('application/x-www-form-urlencoded', { parseAs: 'string', bodyLimit: 16384 }, (_request, body, done) => {
    done(null, Object.fromEntries(new URLSearchParams(typeof body === 'string' ? body : body.toString('utf8'))));
  });

  app.addHook('onSend', async (_request, reply, payload) => {
    reply.header('content-security-policy', STATUS_CSP).header('cache-control', 'no-store');
    return payload;
  });

  const sendHtml = (reply: FastifyReply, status: number, body: string) => reply.code(status).type('text/html; charset=utf-8').send(body);

  const signedIn = async (request: FastifyRequest): Promise<boolean> => {
    const token = bearerToken(request.headers.authorization);
    if (token !== undefined) return (await adminAuth.checkToken(token)).ok;
    const session = cookieValue(request.headers.cookie, COOKIE);
    return session !== undefined && session !== '' && (await adminAuth.checkSession(session)).ok;
  };

  /** Answers 401 with the sign-in form when the request is not signed in; true when it is. */
  const requireSignIn = async (request: FastifyRequest, reply: FastifyReply): Promise<boolean> => {
    if (await signedIn(request)) return true;
    const path = request.url.split('?')[0] ?? '';
    reply.header('www-authenticate', CHALLENGE);
    await sendHtml(reply, 401, signInPage({ next: NEXT.test(path) ? path : '/status' }));
    return false;
  };

  app.setErrorHandler(async (error, request, reply) => {
    const known = toScimError(error);
    const status = known?.status ?? 500;
    if (status >= 500) request.log.warn({ err: error }, 'status page failed');
    const message = status >= 500 ? 'The status could not be read now; try again shortly.' : (known?.detail ?? 'The request could not be served.');
    return sendHtml(reply, status, errorPage(status, message, false));
  });

  app.get('/status', async (request, reply) => {
    if (!(await requireSignIn(request, reply))) return reply;
    await app.flushRequestCounts().catch((error: unknown) => request.log.warn({ err: error }, 'could not store request counts'));
    const now = new Date();
    const [tenants, hourly] = await Promise.all([tenantOverview(db, health, now), listRequestsPerHour(db, new Date(now.getTime() - DAY_MS))]);
    return sendHtml(reply, 200, overviewPage(tenants, hourly, now));
  });

  app.get('/status/tenants/:id', async (request, reply) => {
    if (!(await requireSignIn(request, reply))) return reply;
    const { id } = request.params as { id: string };
    await app.flushRequestCounts().catch((error: unknown) => request.log.warn({ err: error }, 'could not store request counts'));
    const now = new Date();
    const status = isUuid(id) ? await tenantStatus(db, id.toLowerCase(), now) : undefined;
    if (!status) return sendHtml(reply, 404, errorPage(404, `No tenant ${id}.`, true));
    const tenant = status.tenantId;
    const [conflicts, events, memberships, hourly, credentials] = await Promise.all([
      listOpenConflicts(db, tenant, 100),
      listAuditEvents(db, tenant, { limit: 50 }),
      countMemberships(db, tenant),
      listRequestsPerHour(db, new Date(now.getTime() - DAY_MS), tenant),
      listTenantCredentials(db, tenant, now),
    ]);
    return sendHtml(
      reply,
      200,
      tenantPage({ status: { ...status, ...withHealth(status, now, health) }, memberships, conflicts, events: events.events, credentials, hourly, now, health }),
    );
  });

  app.post('/status/session', async (request, reply) => {
    const form = (request.body ?? {}) as { token?: unknown; next?: unknown };
    const next = typeof form.next === 'string' && NEXT.test(form.next) ? form.next : '/status';
    const token = typeof form.token === 'string' ? form.token.trim() : '';
    const check = token === '' ? undefined : await adminAuth.checkToken(token);
    if (!check?.ok) {
      const message =
        check?.reason === 'revoked' ? 'That admin token has been revoked or has expired.' : 'That is not an admin token of this server (portal-scim admin-token issue).';
      return sendHtml(reply, 401, signInPage({ message, next }));
    }
    return reply.code(303).header('set-cookie', cookie(adminAuth.signSession(check.credentialId), SESSION_SECONDS)).header('location', next).send();
  });

  app.post('/status/sign-out', async (_request, reply) =>
    reply.code(303).header('set-cookie', cookie('', 0)).header('location', '/status').send(),
  );
}
