// Entra's own bearer token: with the Secret Token field left empty, Entra
// sends a JWT it signs itself, issued by https://sts.windows.net/<tid>/ for
// the application template. Verified here with jose against Microsoft's
// published signing keys (RS256 only, issuer, audience and expiry pinned);
// the keys are fetched with a timeout, cached, and fetched again for a key id
// they do not hold. Which of our tenants (if any) accepts the token is the
// auth plugin's question.
import { createHash } from 'node:crypto';
import { createRemoteJWKSet, decodeJwt, errors, jwtVerify, type JWTVerifyGetKey } from 'jose';

/** The application template id Entra puts in aud for every non-gallery application. */
export const NON_GALLERY_AUDIENCE = '8adf8e6e-67b2-4cf2-a259-e3dc5476c621';

const ISSUER = /^https:\/\/sts\.windows\.net\/([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\/$/i;

export const entraIssuer = (entraTenantId: string): string => `https://sts.windows.net/${entraTenantId}/`;

/** Keys are kept this long before they are fetched again (Microsoft publishes a new key well before it signs with it). */
const KEYS_MAX_AGE_MS = 10 * 60 * 1000;
/** Clock skew allowed on exp and nbf between Microsoft and this server. */
const CLOCK_TOLERANCE_SECONDS = 30;

/**
 * The Entra tenant id a token claims to come from, read without verifying
 * anything: only to choose how to verify it (and whose tenant may accept it).
 * Undefined for any token whose issuer is not Entra's.
 */
export function claimedEntraTenant(token: string): string | undefined {
  try {
    const { iss } = decodeJwt(token);
    return typeof iss === 'string' ? ISSUER.exec(iss)?.[1]?.toLowerCase() : undefined;
  } catch {
    return undefined;
  }
}

export type EntraVerdict =
  | { ok: true; expiresAt: number }
  | { ok: false; reason: 'expired' | 'audience' | 'unverified' }
  /** why: the fetch's error message, for the operator's log (no token, no key). */
  | { ok: false; reason: 'keys-unavailable'; why: string };

export interface EntraTokenSettings {
  jwksUrl: string;
  timeoutMs: number;
  cooldownSeconds: number;
  audience?: string;
}

export interface EntraTokenVerifier {
  /** Verifies the token as one Entra issued for this Entra tenant. */
  verify(token: string, entraTenantId: string): Promise<EntraVerdict>;
}

/** The keys could not be had (no answer in time, an error status, a document that is no key set). */
class KeysUnavailable extends Error {}

export function entraTokenVerifier(settings: EntraTokenSettings): EntraTokenVerifier {
  // One key set per app: two apps in a process keep their own cache.
  const remote = createRemoteJWKSet(new URL(settings.jwksUrl), {
    timeoutDuration: settings.timeoutMs,
    cooldownDuration: settings.cooldownSeconds * 1000,
    cacheMaxAge: KEYS_MAX_AGE_MS,
  });
  const keys: JWTVerifyGetKey = async (header, token) => {
    try {
      return await remote(header, token);
    } catch (error) {
      // No key for this kid (even after fetching again) is the token's fault, not the keys'.
      if (error instanceof errors.JWKSNoMatchingKey || error instanceof errors.JWKSMultipleMatchingKeys) throw error;
      throw new KeysUnavailable('signing keys unavailable', { cause: error });
    }
  };
  const audience = settings.audience ?? NON_GALLERY_AUDIENCE;
  return {
    async verify(token, entraTenantId) {
      try {
        const { payload } = await jwtVerify(token, keys, {
          algorithms: ['RS256'],
          issuer: entraIssuer(entraTenantId),
          audience,
          requiredClaims: ['exp'],
          clockTolerance: CLOCK_TOLERANCE_SECONDS,
        });
        return { ok: true, expiresAt: (payload.exp ?? 0) * 1000 };
      } catch (error) {
        if (error instanceof KeysUnavailable) return { ok: false, reason: 'keys-unavailable', why: error.cause instanceof Error ? error.cause.message : String(error.cause) };
        if (error instanceof errors.JWTExpired) return { ok: false, reason: 'expired' };
        if (error instanceof errors.JWTClaimValidationFailed && error.claim === 'aud') return { ok: false, reason: 'audience' };
        return { ok: false, reason: 'unverified' };
      }
    },
  };
}

/** An arbitrary, fixed namespace for the ids below (RFC 9562 name-based UUIDs). */
const NAMESPACE = Buffer.from('5b0a8f0e6c2d4e1f9a3b7c6d5e4f3a2b', 'hex');

/**
 * The credential id audit events record for a request that came with Entra's
 * own token: there is no credential row, so each tenant gets a fixed id of
 * its own (a version 5 UUID of the tenant id), the same on every instance.
 */
export function entraCredentialId(tenantId: string): string {
  const hash = createHash('sha1').update(NAMESPACE).update(tenantId.toLowerCase()).digest();
  hash[6] = ((hash[6] ?? 0) & 0x0f) | 0x50;
  hash[8] = ((hash[8] ?? 0) & 0x3f) | 0x80;
  const hex = hash.subarray(0, 16).toString('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}
