// The words and time format the status pages and the CLI both use, so an
// operator reads the same state the same way in either.
import type { CredentialFlag, CredentialView } from './credentials.js';

export const connectionWord = (connected: boolean): string => (connected ? 'connected' : 'disconnected');

/** Rule 6: an account with active=false is deactivated, not deleted. */
export const accountStateWord = (active: boolean): string => (active ? 'active' : 'deactivated');

/** A time to the minute in UTC, or "never". */
export function formatTime(at: Date | null): string {
  return at ? `${at.toISOString().slice(0, 16).replace('T', ' ')} UTC` : 'never';
}

const DAY_MS = 86_400_000;

function days(ms: number): string {
  const n = Math.max(0, Math.round(ms / DAY_MS));
  return n === 1 ? '1 day' : `${n} days`;
}

/** What a credential's flag means for the team, in a few words. */
export function flagText(flag: CredentialFlag, credential: CredentialView, now: Date): string {
  switch (flag) {
    case 'expires soon':
      return `expires in ${days((credential.expiresAt?.getTime() ?? now.getTime()) - now.getTime())}`;
    case 'unused':
      return `not used for ${days(now.getTime() - (credential.lastUsedAt ?? credential.createdAt).getTime())} while another credential is in use: the school has probably switched; revoke it once confirmed`;
  }
}
