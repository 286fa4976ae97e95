// Secret Tokens: HS256 JWTs naming their tenant (tid) and their credential row
// (jti), with issuer and audience pinned. Signing lives here so the CLI can
// issue tokens without a running server; the server verifies with @fastify/jwt.
import { createSigner } from 'fast-jwt';
import type { SigningKeys } from './keys.js';

export const TOKEN_ALGORITHM = 'HS256';

export interface TokenClaims {
  tid: string;
  jti: string;
}

/** Admin API tokens carry their own audience, so a SCIM token is never an admin token. */
export const adminAudience = (audience: string): string => `${audience}:admin`;

export function signAdminToken(settings: TokenSettings, credentialId: string, expiresAt?: Date | null): string {
  return sign(settings, adminAudience(settings.audience), { jti: credentialId, scope: 'admin' }, expiresAt);
}

export interface TokenSettings {
  keys: SigningKeys;
  issuer: string;
  audience: string;
}

function sign(settings: TokenSettings, audience: string, claims: Record<string, string>, expiresAt?: Date | null): string {
  return createSigner({
    key: settings.keys.current.secret,
    algorithm: TOKEN_ALGORITHM,
    iss: settings.issuer,
    aud: audience,
    kid: settings.keys.current.kid,
    ...(expiresAt ? { expiresIn: Math.max(1, expiresAt.getTime() - Date.now()) } : {}),
  })(claims);
}

export function signToken(settings: TokenSettings, claims: TokenClaims, expiresAt?: Date | null): string {
  return sign(settings, settings.audience, { tid: claims.tid, jti: claims.jti }, expiresAt);
}

const UNITS: Record<string, number> = {
  s: 1000,
  m: 60_000,
  h: 3_600_000,
  d: 86_400_000,
  w: 604_800_000,
  y: 31_536_000_000,
};

/** Parses a duration such as 90d, 12h, 2w or 1y into milliseconds. */
export function parseDuration(text: string): number {
  const match = /^(\d+)\s*([smhdwy])$/i.exec(text.trim());
  const unit = match?.[2] ? UNITS[match[2].toLowerCase()] : undefined;
  if (!match || unit === undefined || Number(match[1]) <= 0) {
    throw new Error(`"${text}" is not a duration; use a number and a unit, such as 90d, 12h, 2w or 1y`);
  }
  return Number(match[1]) * unit;
}
