// The admin credential check shared by the admin API, /metrics and the status
// pages: an admin token (audience "<aud>:admin") whose credential row is still
// live, and the short-lived signed session the status pages keep in a cookie,
// each with an id of its own that a sign-out ends.
import { randomUUID } from 'node:crypto';
import { createSigner, createVerifier } from 'fast-jwt';
import type { Config } from '../config.js';
import { adminSessionEnded, endAdminSession, findActiveAdminCredential } from '../db/admin-credentials.js';
import type { Db } from '../db/database.js';
import { isUuid } from '../db/ids.js';
import { secretFor, type SigningKeys } from './keys.js';
import { TOKEN_ALGORITHM, adminAudience } from './tokens.js';

/** Why a credential was refused; 'ok' names the admin credential it belongs to. */
export type AdminCheck = { ok: true; credentialId: string } | { ok: false; reason: 'invalid' | 'revoked' };

export interface AdminAuth {
  /** Verifies an admin token exactly as the admin API does. */
  checkToken(token: string): Promise<AdminCheck>;
  /** A session for the status pages' cookie: signed, short-lived, tied to the admin credential. */
  signSession(credentialId: string): string;
  /** A session that verifies, whose credential is live and that no sign-out ended (a sign-out on another instance within CREDENTIAL_CACHE_SECONDS). */
  checkSession(session: string): Promise<AdminCheck>;
  /** Signs a session out: refused from then on, on every instance. A session that does not verify ends nothing. */
  endSession(session: string): Promise<void>;
}

/** Reads "Authorization: Bearer <token>"; undefined when there is none. */
export function bearerToken(header: string | undefined): string | undefined {
  return /^bearer\s+(\S+)$/i.exec(header?.trim() ?? '')?.[1];
}

export const SESSION_SECONDS = 8 * 60 * 60;

/** Sessions carry their own audience, so a session cookie is never an admin token and the reverse. */
const sessionAudience = (audience: string): string => `${audience}:admin-session`;

export function createAdminAuth(options: { config: Config; db: Db; keys: SigningKeys }): AdminAuth {
  const { config, db, keys } = options;
  const verifier = (audience: string) =>
    createVerifier({
      key: async (decoded: { header: { kid?: unknown } }) => secretFor(keys, decoded.header.kid),
      algorithms: [TOKEN_ALGORITHM],
      allowedIss: config.jwtIssuer,
      allowedAud: audience,
      requiredClaims: ['jti', 'iss', 'aud'],
    });
  const verifyToken = verifier(adminAudience(config.jwtAudience));
  const verifySession = verifier(sessionAudience(config.jwtAudience));
  // Per app, never global: two apps in one process keep their own cache.
  const cache = new Map<string, { ok: boolean; until: number }>();

  /** A yes or no from the database, remembered for CREDENTIAL_CACHE_SECONDS under `key`. */
  async function remembered(key: string, read: () => Promise<boolean>): Promise<boolean> {
    const now = Date.now();
    let hit = cache.get(key);
    if (!hit || hit.until <= now) {
      if (cache.size > 1000) cache.clear();
      hit = { ok: await read(), until: now + config.credentialCacheSeconds * 1000 };
      cache.set(key, hit);
    }
    return hit.ok;
  }

  async function checkToken(token: string): Promise<AdminCheck> {
    let claims: { jti?: unknown };
    try {
      claims = (await verifyToken(token)) as { jti?: unknown };
    } catch {
      return { ok: false, reason: 'invalid' };
    }
    if (!isUuid(claims.jti)) return { ok: false, reason: 'invalid' };
    return checkCredential(claims.jti);
  }

  async function checkCredential(credentialId: string): Promise<AdminCheck> {
    const live = await remembered(credentialId, async () => (await findActiveAdminCredential(db, credentialId)) !== undefined);
    return live ? { ok: true, credentialId } : { ok: false, reason: 'revoked' };
  }

  /** A session's claims when it verifies: its credential, its own id and its expiry. */
  async function sessionClaims(session: string): Promise<{ credentialId: string; sessionId: string; expiresAt: Date } | undefined> {
    try {
      const claims = (await verifySession(session)) as { jti?: unknown; sid?: unknown; exp?: unknown };
      if (!isUuid(claims.jti) || !isUuid(claims.sid) || typeof claims.exp !== 'number') return undefined;
      return { credentialId: claims.jti, sessionId: claims.sid, expiresAt: new Date(claims.exp * 1000) };
    } catch {
      return undefined;
    }
  }

  async function checkSession(session: string): Promise<AdminCheck> {
    const claims = await sessionClaims(session);
    // A session from before sessions had ids cannot be signed out: signed in again, it can.
    if (claims === undefined) return { ok: false, reason: 'invalid' };
    const checked = await checkCredential(claims.credentialId);
    if (!checked.ok) return checked;
    const ended = await remembered(`session ${claims.sessionId}`, () => adminSessionEnded(db, claims.credentialId, claims.sessionId));
    return ended ? { ok: false, reason: 'revoked' } : checked;
  }

  async function endSession(session: string): Promise<void> {
    const claims = await sessionClaims(session);
    if (claims === undefined) return;
    await endAdminSession(db, claims.credentialId, claims.sessionId, claims.expiresAt);
    cache.set(`session ${claims.sessionId}`, { ok: true, until: claims.expiresAt.getTime() });
  }

  const signer = createSigner({
    key: keys.current.secret,
    algorithm: TOKEN_ALGORITHM,
    iss: config.jwtIssuer,
    aud: sessionAudience(config.jwtAudience),
    kid: keys.current.kid,
    expiresIn: SESSION_SECONDS * 1000,
  });

  return {
    checkToken,
    signSession: (credentialId) => signer({ jti: credentialId, sid: randomUUID() }),
    checkSession,
    endSession,
  };
}
