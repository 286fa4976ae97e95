// The status pages for the portal team: every tenant's health, worst first,
// and a tenant's health, credentials, recent failures grouped by message,
// conflicts (which the team can resolve or dismiss there) and audit events,
// as server-rendered HTML; and the preview of a tenant's first sync from an
// uploaded Entra user export.
// Browsers cannot send a bearer header, so the sign-in form trades an admin
// token for a short-lived signed session cookie; the Authorization header
// works too. A form that changes something carries a token bound to the
// session (see formToken): SameSite=Strict keeps the cookie off cross-site
// posts in today's browsers, the token keeps it so wherever that fails.
import { createHmac, timingSafeEqual } from 'node:crypto';
import multipart from '@fastify/multipart';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { SESSION_SECONDS, bearerToken, type AdminAuth } from '../auth/admin.js';
import type { SigningKeys } from '../auth/keys.js';
import type { Config } from '../config.js';
import { listAuditEvents, listConflicts } from '../db/audit.js';
import { tenantStatus } from '../db/tenant-status.js';
import type { Db } from '../db/database.js';
import { isUuid } from '../db/ids.js';
import { findTenant } from '../db/tenants.js';
import { countMemberships, listRequestsPerHour } from '../db/request-counts.js';
import { toScimError } from '../plugins/errors.js';
import { PAGE_HEADERS } from '../security-headers.js';
import { closeConflictByHand, parseNote } from '../services/conflicts.js';
import { listTenantCredentials } from '../services/credentials.js';
import { ServiceError } from '../services/errors.js';
import { recentFailures } from '../services/failures.js';
import { healthSettings, tenantOverview, withHealth } from '../services/health.js';
import { PREVIEW_MAX_BYTES, previewCsv, previewFirstSync, readEntraUsers } from '../services/preview.js';
import { STATUS_CSP, errorPage, overviewPage, previewReportPage, previewUploadPage, signInPage, tenantPage } from './status-view.js';

export interface StatusOptions {
  config: Config;
  db: Db;
  adminAuth: AdminAuth;
  /** The signing keys: a form token is a MAC of the session under them. */
  keys: SigningKeys;
}

/** Who is signed in: the admin credential, and the session cookie when that is how (a bearer header needs no form token). */
interface SignedIn {
  credentialId: string;
  session: string | undefined;
}

const FORM_TOKEN_CONTEXT = 'portal-scim status form\0';

/**
 * The token a status page's form carries: an HMAC of the session cookie
 * under the signing key, so only a page rendered for this session can post
 * with it, and it ends with the session. No state is kept, so any instance
 * checks it.
 */
export function formToken(secret: string, session: string): string {
  return createHmac('sha256', secret).update(FORM_TOKEN_CONTEXT).update(session).digest('base64url');
}

function formTokenMatches(keys: SigningKeys, session: string, given: unknown): boolean {
  if (typeof given !== 'string') return false;
  const actual = Buffer.from(given);
  // Any key a session may be signed with: a page rendered before a key rotation still posts.
  return [...keys.byKid.values()].some((key) => {
    const expected = Buffer.from(formToken(key.secret, session));
    return expected.length === actual.length && timingSafeEqual(expected, actual);
  });
}

const COOKIE = 'portal_scim_status';
const CHALLENGE = 'Bearer realm="portal-scim-admin"';
const DAY_MS = 24 * 3_600_000;
/** Where a sign-in may send the browser back to: our own pages only. */
const NEXT = /^\/status(?:\/tenants\/[0-9a-fA-F-]{36}(?:\/preview)?)?$/;

/** A service error's status and message on a page. */
function serviceStatus(error: ServiceError): { status: number; detail: string } {
  return { status: error.kind === 'not-found' ? 404 : error.kind === 'invalid' ? 400 : 409, detail: error.message };
}

/**
 * A request a browser says comes from another site: by Fetch Metadata where
 * it sends it, else by an Origin that is neither this host nor PUBLIC_URL's.
 * The pages' no-referrer policy makes a browser send "Origin: null" even for
 * their own forms, which tells nothing; the form token decides then.
 */
function crossSite(request: FastifyRequest, publicUrl: string): boolean {
  const site = request.headers['sec-fetch-site'];
  if (site !== undefined) return site !== 'same-origin';
  const origin = request.headers.origin;
  if (origin === undefined || origin === 'null') return false;
  try {
    const host = new URL(origin).host;
    return host !== request.headers.host && host !== new URL(publicUrl).host;
  } catch {
    return true;
  }
}

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

  // Only the pages' forms post here (the preview's upload as multipart); the rest of the server keeps its parsers.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('application/x-www-form-urlencoded', { parseAs: 'string', bodyLimit: 16384 }, (_request, body, done) => {
    done(null, Object.fromEntries(new URLSearchParams(typeof body === 'string' ? body : body.toString('utf8'))));
  });
  await app.register(multipart, { limits: { files: 1, fileSize: PREVIEW_MAX_BYTES, fields: 4, fieldSize: 1024, parts: 6 } });

  app.addHook('onSend', async (_request, reply, payload) => {
    // Not stored, as every answer (ANSWER_HEADERS in security-headers.ts).
    reply.headers(PAGE_HEADERS).header('content-security-policy', STATUS_CSP);
    return payload;
  });

  const sendHtml = (reply: FastifyReply, status: number, body: string) => reply.code(status).type('text/html; charset=utf-8').send(body);

  const signedIn = async (request: FastifyRequest): Promise<SignedIn | undefined> => {
    const token = bearerToken(request.headers.authorization);
    if (token !== undefined) {
      const check = await adminAuth.checkToken(token);
      return check.ok ? { credentialId: check.credentialId, session: undefined } : undefined;
    }
    const session = cookieValue(request.headers.cookie, COOKIE);
    if (session === undefined || session === '') return undefined;
    const check = await adminAuth.checkSession(session);
    return check.ok ? { credentialId: check.credentialId, session } : undefined;
  };

  /** Answers 401 with the sign-in form when the request is not signed in, leading back to `back`. */
  const requireSignIn = async (request: FastifyRequest, reply: FastifyReply, back?: string): Promise<SignedIn | undefined> => {
    const who = await signedIn(request);
    if (who) return who;
    const path = back ?? request.url.split('?')[0] ?? '';
    reply.header('www-authenticate', CHALLENGE);
    await sendHtml(reply, 401, signInPage({ next: NEXT.test(path) ? path : '/status' }));
    return undefined;
  };

  app.setErrorHandler(async (error, request, reply) => {
    const known = error instanceof ServiceError ? serviceStatus(error) : toScimError(error);
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
    const who = await requireSignIn(request, reply);
    if (!who) return reply;
    const { id } = request.params as { id: string };
    await app.flushRequestCounts().catch((error: unknown) => request.log.warn({ err: error }, 'could not store request counts'));
    const now = new Date();
    const status = isUuid(id) ? await tenantStatus(db, id.toLowerCase(), now) : undefined;
    if (!status) return sendHtml(reply, 404, errorPage(404, `No tenant ${id}.`, true));
    const tenant = status.tenantId;
    const [conflicts, closedConflicts, failures, events, memberships, hourly, credentials] = await Promise.all([
      listConflicts(db, tenant, { state: 'open', limit: 100 }),
      listConflicts(db, tenant, { state: 'closed', limit: 20 }),
      recentFailures(db, tenant, now),
      listAuditEvents(db, tenant, { limit: 50 }),
      countMemberships(db, tenant),
      listRequestsPerHour(db, new Date(now.getTime() - DAY_MS), tenant),
      listTenantCredentials(db, tenant, now),
    ]);
    return sendHtml(
      reply,
      200,
      tenantPage({
        status: { ...status, ...withHealth(status, now, health) },
        memberships,
        failures,
        conflicts,
        closedConflicts,
        formToken: who.session === undefined ? undefined : formToken(options.keys.current.secret, who.session),
        // The first page: no cursor, so always a page.
        events: events?.events ?? [],
        credentials,
        hourly,
        now,
        health,
      }),
    );
  });

  // Resolve or dismiss a conflict from the tenant page, then back to it.
  app.post('/status/tenants/:id/conflicts/:conflictId', async (request, reply) => {
    const { id, conflictId } = request.params as { id: string; conflictId: string };
    const page = `/status/tenants/${id}`;
    const who = await requireSignIn(request, reply, page);
    if (!who) return reply;
    const form = (request.body ?? {}) as { action?: unknown; note?: unknown; csrf?: unknown };
    // A bearer header cannot come from another site's form; a cookie can.
    if (who.session !== undefined && !formTokenMatches(options.keys, who.session, form.csrf)) {
      return sendHtml(reply, 403, errorPage(403, 'This form did not come from a page of this session (or the session has changed): open the tenant page again and retry.', true));
    }
    if (form.action !== 'resolve' && form.action !== 'dismiss') throw new ServiceError('invalid', 'action must be resolve or dismiss.');
    if (!isUuid(id) || !isUuid(conflictId)) throw new ServiceError('not-found', `No conflict ${conflictId}.`);
    await closeConflictByHand(db, conflictId.toLowerCase(), form.action, parseNote(form.note), { via: 'status-page', adminCredentialId: who.credentialId }, { tenantId: id.toLowerCase() });
    return reply.code(303).header('location', `${page}#conflicts`).send();
  });

  // The first-sync preview: an upload form, and the report of the uploaded export.
  const previewTenant = async (request: FastifyRequest) => {
    const { id } = request.params as { id: string };
    const tenant = isUuid(id) ? await findTenant(db, id.toLowerCase()) : undefined;
    return tenant ? { id: tenant.id, name: tenant.name } : undefined;
  };
  const pageToken = (who: SignedIn) => (who.session === undefined ? '' : formToken(options.keys.current.secret, who.session));

  app.get('/status/tenants/:id/preview', async (request, reply) => {
    const who = await requireSignIn(request, reply);
    if (!who) return reply;
    const tenant = await previewTenant(request);
    if (!tenant) return sendHtml(reply, 404, errorPage(404, `No tenant ${(request.params as { id: string }).id}.`, true));
    return sendHtml(reply, 200, previewUploadPage({ tenant, csrf: pageToken(who) }));
  });

  app.post('/status/tenants/:id/preview', async (request, reply) => {
    const who = await requireSignIn(request, reply);
    if (!who) return reply;
    // It reads all of a tenant's accounts: a post from another site is refused before its token is even looked at.
    if (crossSite(request, options.config.publicUrl)) return sendHtml(reply, 403, errorPage(403, "The upload must come from this server's own page.", true));
    if (!request.isMultipart()) return sendHtml(reply, 415, errorPage(415, 'Upload the export with the form on the preview page.', true));
    let csrf = '';
    let format = 'html';
    let file: Buffer | undefined;
    try {
      for await (const part of request.parts()) {
        if (part.type === 'file') file = await part.toBuffer();
        else if (part.fieldname === 'csrf') csrf = String(part.value);
        else if (part.fieldname === 'format') format = String(part.value);
      }
    } catch (error) {
      if ((error as { code?: unknown }).code === 'FST_REQ_FILE_TOO_LARGE') {
        const message = `The file is larger than ${PREVIEW_MAX_BYTES / 1024 / 1024} MiB; preview it with portal-scim preview on the command line.`;
        return sendHtml(reply, 413, errorPage(413, message, true));
      }
      // Reading the form can fail only on the form itself: cut off, malformed, or more parts than it has.
      const status = (error as { statusCode?: unknown }).statusCode === 413 ? 413 : 400;
      return sendHtml(reply, status, errorPage(status, 'The upload was cut off or is not the preview form; upload the file again with the form on the preview page.', true));
    }
    // A bearer header cannot come from another site's form; a cookie can.
    if (who.session !== undefined && !formTokenMatches(options.keys, who.session, csrf)) {
      return sendHtml(reply, 403, errorPage(403, 'This form did not come from a page of this session (or the session has changed): open the preview page again and retry.', true));
    }
    const tenant = await previewTenant(request);
    if (!tenant) return sendHtml(reply, 404, errorPage(404, `No tenant ${(request.params as { id: string }).id}.`, true));
    let report;
    try {
      report = await previewFirstSync(db, tenant.id, await readEntraUsers(file ?? Buffer.alloc(0)));
    } catch (error) {
      if (!(error instanceof ServiceError) || error.kind !== 'invalid') throw error;
      return sendHtml(reply, 400, previewUploadPage({ tenant, csrf: pageToken(who), message: error.message }));
    }
    if (format === 'csv') {
      return reply
        .type('text/csv; charset=utf-8')
        .header('content-disposition', `attachment; filename="first-sync-preview-${tenant.id}.csv"`)
        .send(previewCsv(report));
    }
    return sendHtml(reply, 200, previewReportPage({ tenant, report, csrf: pageToken(who) }));
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

  app.post('/status/sign-out', async (request, reply) => {
    // The cookie is a signed session: dropping it in this browser is not enough, a copy of it must stop working too.
    const session = cookieValue(request.headers.cookie, COOKIE);
    if (session !== undefined && session !== '') await adminAuth.endSession(session);
    return reply.code(303).header('set-cookie', cookie('', 0)).header('location', '/status').send();
  });
}
