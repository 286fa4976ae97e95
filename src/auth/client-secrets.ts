// OAuth client secrets: generated once, shown once, kept only as a scrypt hash.
// Verification derives the key again and compares in constant time; an unknown
// client is checked against a dummy hash so its answer takes as long.
import { randomBytes, scrypt, timingSafeEqual, type ScryptOptions } from 'node:crypto';

const KEY_LENGTH = 32;
const COST = { N: 16384, r: 8, p: 1 } as const;
// 128 * N * r bytes, with room: node refuses at exactly the default limit.
const MAX_MEMORY = 64 * 1024 * 1024;

function derive(secret: string, salt: Buffer, options: ScryptOptions): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    scrypt(secret, salt, KEY_LENGTH, { ...options, maxmem: MAX_MEMORY }, (error, key) => {
      if (error) reject(error);
      else resolve(key);
    });
  });
}

/** A new client secret: 32 random bytes, base64url. */
export function generateClientSecret(): string {
  return randomBytes(32).toString('base64url');
}

/** The stored form: scrypt$N$r$p$salt$key, salt and key base64url. */
export async function hashClientSecret(secret: string): Promise<string> {
  const salt = randomBytes(16);
  const key = await derive(secret, salt, COST);
  return ['scrypt', COST.N, COST.r, COST.p, salt.toString('base64url'), key.toString('base64url')].join('$');
}

const DUMMY_HASH = `scrypt$${COST.N}$${COST.r}$${COST.p}$${Buffer.alloc(16).toString('base64url')}$${Buffer.alloc(KEY_LENGTH).toString('base64url')}`;

/** True when secret matches the stored hash; a missing or malformed hash never matches. */
export async function verifyClientSecret(secret: string, stored: string | null | undefined): Promise<boolean> {
  const parts = (stored ?? DUMMY_HASH).split('$');
  const [scheme, n, r, p, salt, key] = parts;
  const well = parts.length === 6 && scheme === 'scrypt' && salt !== undefined && key !== undefined;
  const cost = well ? { N: Number(n), r: Number(r), p: Number(p) } : COST;
  const expected = Buffer.from(well ? key : '', 'base64url');
  const derived = await derive(secret, Buffer.from(well ? salt : '', 'base64url'), cost);
  const same = expected.length === derived.length && timingSafeEqual(expected, derived);
  return same && well && stored !== null && stored !== undefined;
}
