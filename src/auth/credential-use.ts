// When each credential was last used, for the portal team (token list, the
// admin API, the tenant page): written at most once a minute per credential
// and instance, never on every request. The database statement skips the
// write too when another instance wrote within the minute.
import type { FastifyBaseLogger } from 'fastify';
import { recordCredentialUse } from '../db/credentials.js';
import type { Db } from '../db/database.js';

export const CREDENTIAL_USE_EVERY_MS = 60_000;
const MAX_REMEMBERED = 10_000;

/**
 * Returns the function to call with each accepted request's credential. It
 * returns a promise when it writes (the request waits for that write, once a
 * minute, so whoever reads the credential after the request sees its use),
 * and undefined when the last write is recent.
 */
export function credentialUseRecorder(db: Db, everyMs = CREDENTIAL_USE_EVERY_MS) {
  const written = new Map<string, number>();
  return (auth: { credentialId: string; tenant: { id: string } }, log: FastifyBaseLogger): Promise<void> | undefined => {
    const now = Date.now();
    const last = written.get(auth.credentialId);
    if (last !== undefined && now - last < everyMs) return undefined;
    if (written.size >= MAX_REMEMBERED) written.clear();
    written.set(auth.credentialId, now);
    return recordCredentialUse(db, auth.tenant.id, auth.credentialId).catch((error: unknown) => {
      // Tried again after the next minute; the request goes on.
      log.warn({ err: error }, 'could not record when the credential was last used');
    });
  };
}
