// The HS256 keys that sign and verify credentials: JWT_SECRET (and older keys
// during a rotation) from configuration, or a key generated once and kept in
// the data directory for the embedded default.
import { createHash, randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { Config } from '../config.js';
import { ensureDataDir } from '../data-dir.js';

export interface SigningKey {
  /** Short fingerprint carried in the token header, so verification picks the right key. */
  readonly kid: string;
  readonly secret: string;
}

export interface SigningKeys {
  readonly current: SigningKey;
  /** Every key a token may be verified with, by kid. */
  readonly byKid: ReadonlyMap<string, SigningKey>;
}

/** The secret a token names by its kid; an unknown kid gets the current key and so fails like a wrong signature. */
export function secretFor(keys: SigningKeys, kid: unknown): string {
  return (typeof kid === 'string' ? keys.byKid.get(kid)?.secret : undefined) ?? keys.current.secret;
}

function key(secret: string): SigningKey {
  return { kid: createHash('sha256').update(secret).digest('base64url').slice(0, 12), secret };
}

export function signingKeys(secret: string, previous: readonly string[] = []): SigningKeys {
  const current = key(secret);
  const byKid = new Map<string, SigningKey>();
  for (const k of [current, ...previous.map(key)]) byKid.set(k.kid, k);
  return { current, byKid };
}

async function generatedSecret(dataDir: string): Promise<string> {
  const file = path.join(dataDir, 'jwt-secret');
  try {
    return (await readFile(file, 'utf8')).trim();
  } catch {
    await ensureDataDir(dataDir);
    // 'wx' so two processes starting together keep the first key written.
    await writeFile(file, `${randomBytes(48).toString('base64url')}\n`, { mode: 0o600, flag: 'wx' }).catch(
      () => undefined,
    );
    return (await readFile(file, 'utf8')).trim();
  }
}

export async function loadSigningKeys(config: Config): Promise<SigningKeys> {
  const secret = config.jwtSecret ?? (await generatedSecret(config.dataDir));
  return signingKeys(secret, config.jwtPreviousSecrets);
}
