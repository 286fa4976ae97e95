// Credentials of the admin API, for the portal team: issued, listed and
// revoked from the CLI only (an admin token cannot mint another).
import { signAdminToken, type TokenSettings } from '../auth/tokens.js';
import { createAdminCredential, findAdminCredential, listAdminCredentials, revokeAdminCredential, type AdminCredentialRow } from '../db/admin-credentials.js';
import type { Db } from '../db/database.js';
import { credentialState, type CredentialState } from './credentials.js';
import { ServiceError } from './errors.js';

export interface AdminTokenView {
  id: string;
  label: string | null;
  state: CredentialState;
  createdAt: Date;
  expiresAt: Date | null;
  revokedAt: Date | null;
}

export function adminTokenView(row: AdminCredentialRow, now: Date): AdminTokenView {
  return { id: row.id, label: row.label, state: credentialState(row, now), createdAt: row.created_at, expiresAt: row.expires_at, revokedAt: row.revoked_at };
}

export async function issueAdminToken(db: Db, signing: TokenSettings, label: string | null, lifetimeMs: number | undefined): Promise<{ credential: AdminCredentialRow; token: string }> {
  const expiresAt = lifetimeMs === undefined ? null : new Date(Date.now() + lifetimeMs);
  const credential = await createAdminCredential(db, label, expiresAt);
  return { credential, token: signAdminToken(signing, credential.id, expiresAt) };
}

export async function listAdminTokens(db: Db, now: Date = new Date()): Promise<AdminTokenView[]> {
  return (await listAdminCredentials(db)).map((row) => adminTokenView(row, now));
}

/** Revokes an admin token; revoking one already revoked changes nothing and says so. */
export async function revokeAdminToken(db: Db, id: string): Promise<{ credential: AdminCredentialRow; alreadyRevoked: boolean }> {
  const before = await findAdminCredential(db, id);
  if (!before) throw new ServiceError('not-found', `No admin credential ${id}.`);
  if (before.revoked_at) return { credential: before, alreadyRevoked: true };
  const row = await revokeAdminCredential(db, id);
  return { credential: row ?? before, alreadyRevoked: false };
}
