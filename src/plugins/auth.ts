// Authenticates SCIM requests: a bearer JWT verified by @fastify/jwt with the
// algorithm, issuer and audience pinned, whose credential row must still be
// live. Lookups are cached for a few seconds, which bounds how long a revoked
// credential keeps working on any instance; so is a token that passed both
// checks, never past its expiry, so Entra's stream of requests with one token
// is not verified again on each. A token Entra signed itself (issuer
// https://sts.windows.net/<tid>/) is verified by auth/entra-token.ts instead,
// for the tenant bound to that Entra tenant if it accepts such tokens.
import fastifyJwt from '@fastify/jwt';
import type { FastifyBaseLogger, FastifyInstance, FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';
import { decodeJwt } from 'jose';
import { credentialUseRecorder } from '../auth/credential-use.js';
import { claimedEntraTenant, entraCredentialId, entraTokenVerifier, type EntraTokenSettings } from '../auth/entra-token.js';
import { secretFor, type SigningKeys } from '../auth/keys.js';
import { TOKEN_ALGORITHM } from '../auth/tokens.js';
import { findActiveCredential, findCredential, listEntraTokenTenants, type EntraTokenTenant } from '../db/credentials.js';
import type { TenantSettings } from '../db/tenants.js';
import type { Db } from '../db/database.js';
import { isUuid } from '../db/ids.js';
import { unauthorized } from '../errors.js';

export interface RequestAuth {
  readonly credentialId: string;
  /** The settings the SCIM rules read on every write. */
  readonly tenant: TenantSettings;
}

declare module 'fastify' {
  interface FastifyRequest {
    auth: RequestAuth | null;
    /** The tenant a refused token of this server names (expired or revoked): for the log line and the metrics, never for access. */
    refusedTenantId: string | null;
  }
  interface FastifyInstance {
    authenticate: (request: FastifyRequest) => Promise<void>;
  }
}

declare module '@fastify/jwt' {
  interface FastifyJWT {
    payload: { tid: string; jti: string };
    user: { tid: string; jti: string };
  }
}

export interface AuthOptions {
  db: Db;
  keys: SigningKeys;
  issuer: string;
  audience: string;
  cacheSeconds: number;
  /** Where and how Microsoft's signing keys are fetched, for Entra's own token. */
  entra: EntraTokenSettings;
}

const BEARER = /^\s*bearer\s+(\S+)\s*$/i;

/** The token of an Authorization header of the Bearer scheme, in any case and spacing (RFC 7235). */
function bearerToken(header: string | undefined): string | undefined {
  return header === undefined ? undefined : BEARER.exec(header)?.[1];
}

interface CacheEntry {
  auth: RequestAuth | null;
  /** Refused because this database has no credential of that id at all. */
  unknown?: boolean;
  until: number;
}

async function auth(app: FastifyInstance, options: AuthOptions): Promise<void> {
  await app.register(fastifyJwt, {
    secret: (_request: FastifyRequest, token: unknown) =>
      Promise.resolve(secretFor(options.keys, (token as { header?: { kid?: unknown } }).header?.kid)),
    // The complete decoded token reaches the secret callback, so it can read kid.
    decode: { complete: true },
    verify: {
      algorithms: [TOKEN_ALGORITHM],
      allowedIss: options.issuer,
      allowedAud: options.audience,
      requiredClaims: ['tid', 'jti', 'iss', 'aud'],
      // The same reading of the header as the cache's, so a spelling either accepts or refuses.
      extractToken: (request: FastifyRequest) => bearerToken(request.headers.authorization),
    },
  });

  // Per app, never global: two apps in one process keep their own caches.
  const cache = new Map<string, CacheEntry>();
  const accepted = new Map<string, { auth: RequestAuth; until: number }>();
  const recordCredentialUse = credentialUseRecorder(options.db);
  // Entra's own token has no credential row whose last use could be written.
  const entraAuths = new WeakSet<RequestAuth>();
  const recordUse = (auth: RequestAuth, log: FastifyBaseLogger) => (entraAuths.has(auth) ? undefined : recordCredentialUse(auth, log));

  /** The credential's row as of its last check, and until when that check stands. */
  async function lookup(tenantId: string, credentialId: string, log: FastifyBaseLogger): Promise<CacheEntry> {
    const key = `${tenantId}/${credentialId}`;
    const now = Date.now();
    const hit = cache.get(key);
    if (hit && hit.until > now) return hit;
    log.debug('credential checked against the database');
    const row = await findActiveCredential(options.db, tenantId, credentialId);
    const found = row ? { credentialId: row.id, tenant: row.tenant } : null;
    // A token signed with this server's key whose credential this database
    // never had: most often issued by a CLI that ran against another database.
    const unknown = !row && (await findCredential(options.db, credentialId)) === undefined;
    const entry = { auth: found, ...(unknown ? { unknown } : {}), until: now + options.cacheSeconds * 1000 };
    if (options.cacheSeconds > 0) {
      if (cache.size > 10_000) cache.clear();
      cache.set(key, entry);
    }
    return entry;
  }

  const entra = entraTokenVerifier(options.entra);
  // Which tenant each Entra tenant is bound to, read whole: a forged token
  // naming a made-up Entra tenant must not cost a query, as no other refused
  // token does. Read again after cacheSeconds; concurrent readers share one read.
  type Bindings = { bound: Map<string, EntraTokenTenant>; until: number };
  let entraBindings: Bindings | undefined;
  /** The reading in flight, and when it began (performance.now()). */
  let reading: { startedAt: number; read: Promise<Bindings> } | undefined;
  /** The reading after it, shared by the requests the one in flight is too old for. */
  let nextReading: Promise<Bindings> | undefined;

  function startReading(): Promise<Bindings> {
    const startedAt = performance.now();
    const until = Date.now() + options.cacheSeconds * 1000;
    const read = listEntraTokenTenants(options.db).then((bound) => {
      const result = { bound, until };
      if (options.cacheSeconds > 0) entraBindings = result;
      return result;
    });
    const current = { startedAt, read };
    reading = current;
    const settled = (): void => {
      if (reading === current) reading = undefined;
    };
    read.then(settled, settled);
    return read;
  }

  /**
   * A reading that began at most cacheSeconds before the request: with 0,
   * one that began after it, so a disconnect (or a tenant that stopped
   * accepting the token) committed before the request is seen, as a Secret
   * Token's check sees it. The requests for which the reading in flight is
   * too old all share the one that starts when it ends, so a stream of them
   * costs one query at a time, not one each.
   */
  function readingFor(requestAt: number): Promise<Bindings> {
    const current = reading;
    if (current === undefined) return startReading();
    if (current.startedAt >= requestAt - options.cacheSeconds * 1000) return current.read;
    const ignore = (): void => undefined;
    nextReading ??= current.read.then(ignore, ignore).then(() => {
      nextReading = undefined;
      return startReading();
    });
    return nextReading;
  }

  /** The tenant bound to an Entra tenant, and until when that reading may be used. */
  async function lookupEntraTenant(entraTenantId: string): Promise<{ found: EntraTokenTenant | undefined; until: number }> {
    const requestAt = performance.now();
    let bindings = entraBindings;
    if (bindings === undefined || bindings.until <= Date.now()) bindings = await readingFor(requestAt);
    return { found: bindings.bound.get(entraTenantId), until: bindings.until };
  }

  /**
   * Entra's own token: the tenant bound to its Entra tenant must accept it
   * (checked first, so no other token makes this server fetch keys), then
   * Microsoft's signature, the algorithm, issuer, audience and expiry.
   */
  // When the keys were last reported missing: an outage warns once a minute, not on every request.
  let keysWarnedAt = -Infinity;

  async function authenticateEntra(token: string, entraTenantId: string, log: FastifyBaseLogger): Promise<{ auth: RequestAuth; until: number }> {
    const { found: bound, until: checkedUntil } = await lookupEntraTenant(entraTenantId);
    if (!bound?.accepts) {
      throw unauthorized(
        `No tenant of this server accepts the token Entra issues itself for Entra tenant ${entraTenantId}: paste the Secret Token from the portal team into Secret Token.`,
        'invalid_token',
      );
    }
    if (!bound.connected) throw unauthorized('The token has been revoked or its tenant is disconnected.', 'invalid_token');
    const verdict = await entra.verify(token, entraTenantId);
    if (!verdict.ok) {
      switch (verdict.reason) {
        case 'expired':
          throw unauthorized('The token has expired.', 'invalid_token');
        case 'audience':
          throw unauthorized("Entra's token was issued for another application: its audience is not the template of non-gallery applications.", 'invalid_token');
        case 'keys-unavailable':
          if (Date.now() - keysWarnedAt >= 60_000) {
            keysWarnedAt = Date.now();
            log.warn({ jwksUrl: options.entra.jwksUrl, why: verdict.why }, "Microsoft's signing keys could not be fetched: Entra's own token is refused until they can");
          }
          throw unauthorized("Microsoft's signing keys could not be fetched to check Entra's token; Entra retries later.");
        case 'unverified':
          throw unauthorized("Entra's token could not be verified with Microsoft's published signing keys.", 'invalid_token');
      }
    }
    const auth = { credentialId: entraCredentialId(bound.tenant.id), tenant: bound.tenant };
    entraAuths.add(auth);
    // Never past the tenant's reading it rests on (see the Secret Token's below).
    return { auth, until: Math.min(checkedUntil, verdict.expiresAt) };
  }

  app.decorateRequest('auth', null);
  app.decorateRequest('refusedTenantId', null);
  app.decorate('authenticate', async (request: FastifyRequest) => {
    const header = request.headers.authorization;
    // The scheme is case-insensitive (RFC 7235), so the token alone is the
    // key: "bearer x" and "Bearer x" share one entry and one expiry.
    const token = bearerToken(header);
    const now = Date.now();
    const known = token === undefined ? undefined : accepted.get(token);
    if (known && known.until > now) {
      admit(request, known.auth);
      // Only the first request of a credential in a minute writes; the rest await nothing.
      const use = recordUse(known.auth, request.log);
      if (use) await use;
      return;
    }
    if (header === undefined || header.trim() === '') {
      request.log.debug('refused a request without a credential');
      throw unauthorized('Authentication required: send the Secret Token as "Authorization: Bearer <token>".');
    }
    if (token === undefined) {
      request.log.debug('refused an Authorization header that is not a bearer token');
      throw unauthorized('The Authorization header must be "Bearer <token>".', 'invalid_token');
    }
    const entraTenantId = claimedEntraTenant(token);
    if (entraTenantId !== undefined) {
      const { auth: found, until } = await authenticateEntra(token, entraTenantId, request.log);
      if (options.cacheSeconds > 0) {
        if (accepted.size > 10_000) accepted.clear();
        accepted.set(token, { auth: found, until });
      }
      admit(request, found);
      return;
    }
    let claims: { tid: string; jti: string; exp?: unknown };
    try {
      claims = await request.jwtVerify<{ tid: string; jti: string; exp?: unknown }>();
    } catch (error) {
      const code = (error as { code?: string }).code ?? '';
      const expired = code.includes('EXPIRED');
      // Its signature was checked before its expiry: the tenant it names is one this server issued it for.
      if (expired) refusedFor(request, expiredTokenTenant(token));
      request.log.debug({ code }, 'refused a token that does not verify');
      throw unauthorized(expired ? 'The token has expired.' : 'The token is not valid for this server.', 'invalid_token');
    }
    if (!isUuid(claims.tid) || !isUuid(claims.jti)) {
      request.log.debug('refused a token whose tenant or credential is not an id');
      throw unauthorized('The token is not valid for this server.', 'invalid_token');
    }
    const checked = await lookup(claims.tid, claims.jti, request.log);
    const found = checked.auth;
    if (!found) {
      refusedFor(request, claims.tid);
      if (checked.unknown) {
        request.log.info({ tenantId: claims.tid, credentialId: claims.jti }, "refused a token whose credential is not in this server's database");
        throw unauthorized(
          "The token's credential is not in this server's database: it was issued against another database (run the CLI with the server's DATABASE_URL), or its tenant was removed.",
          'invalid_token',
        );
      }
      request.log.debug({ tenantId: claims.tid, credentialId: claims.jti }, 'refused a revoked credential or one of a disconnected tenant');
      throw unauthorized('The token has been revoked or its tenant is disconnected.', 'invalid_token');
    }
    if (options.cacheSeconds > 0) {
      // Never past the credential check it rests on: a token accepted again
      // from a check made earlier must not start a new period of its own.
      const expires = typeof claims.exp === 'number' ? claims.exp * 1000 : Infinity;
      if (accepted.size > 10_000) accepted.clear();
      accepted.set(token, { auth: found, until: Math.min(checked.until, expires) });
    }
    admit(request, found);
    const use = recordUse(found, request.log);
    if (use) await use;
  });
}

/** The tenant id an expired token of this server names, if it names one. */
function expiredTokenTenant(token: string): string | undefined {
  try {
    const { tid } = decodeJwt(token);
    return isUuid(tid) ? tid.toLowerCase() : undefined;
  } catch {
    return undefined;
  }
}

/** Binds a refused request's log lines and metrics to the tenant its token of ours names, so the team sees whose requests fail. */
function refusedFor(request: FastifyRequest, tenantId: string | undefined): void {
  if (tenantId === undefined) return;
  request.refusedTenantId = tenantId;
  bindTenant(request, tenantId);
}

function bindTenant(request: FastifyRequest, tenantId: string): void {
  // The request's own logger (fastify makes one per request) gains the
  // tenant; a logger without setBindings (logging off) gets a child.
  const log = request.log as FastifyBaseLogger & { setBindings?: (bindings: Record<string, unknown>) => void };
  if (typeof log.setBindings === 'function') log.setBindings({ tenantId });
  else request.log = log.child({ tenantId });
}

function admit(request: FastifyRequest, auth: RequestAuth): void {
  request.auth = auth;
  bindTenant(request, auth.tenant.id);
}

export const authPlugin = fp(auth, { name: 'scim-auth', fastify: '5.x' });
