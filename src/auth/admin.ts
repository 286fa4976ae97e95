// The admin credential check shared by the admin API, /metrics and the status
// pages: an admin token (audience "<aud>:admin") whose credential row is still
// live, and the short-lived signed session the status pages keep in a cookie.
import { createSigner, createVerifier } from 'fast-jwt';
import type { Config } from '../config.js';
import { findActiveAdminCredential } from '../db/admin-credentials.js';
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
  checkSession(session: string): Promise<AdminCheck>;
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

  async function check(verify: (token: string) => Promise<unknown>, token: string): Promise<AdminCheck> {
    let claims: { jti?: unknown };
    try {
      claims = (await verify(token)) as { jti?: unknown };
    } catch {
      return { ok: false, reason: 'invalid' };
    }
    if (!isUuid(claims.jti)) return { ok: false, reason: 'invalid' };
    const now = Date.now();
    let hit = cache.get(claims.jti);
    if (!hit || hit.until <= now) {
      if (cache.size > 1000) cache.clear();
      hit = { ok: (await findActiveAdminCredential(db, claims.jti)) !== undefined, until: now + config.credentialCacheSeconds * 1000 };
      cache.set(claims.jti, hit);
    }
    return hit.ok ? { ok: true, credentialId: claims.jti } : { ok: false, reason: 'revoked' };
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
    checkToken: (token) => check(verifyToken, token),
    signSession: (credentialId) => signer({ jti: credentialId }),
    checkSession: (session) => check(verifySession, session),
  };
}
