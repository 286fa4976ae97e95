// A tenant's credentials as the portal team acts on them: issuing Secret
// Tokens and OAuth clients (with their audit events), revoking them, and
// their state with the flags that say which one to look at: one that expires
// soon, or one the school no longer uses while another is in use.
import { generateClientSecret, hashClientSecret } from '../auth/client-secrets.js';
import { parseDuration, signToken, type TokenSettings } from '../auth/tokens.js';
import { recordAudit } from '../db/audit.js';
import { createCredential, findCredential, listCredentials, revokeLiveCredential, type CredentialRow } from '../db/credentials.js';
import { inTransaction, type Db } from '../db/database.js';
import { findTenant, type TenantRow } from '../db/tenants.js';
import { auditVia, type Actor } from './actor.js';
import { ServiceError } from './errors.js';

const DAY_MS = 86_400_000;
/** A live credential that expires within this time is flagged. */
export const EXPIRY_WARNING_MS = 14 * DAY_MS;
/** A live credential unused for this long, while another of its tenant was used within it, is flagged. */
export const IDLE_MS = 7 * DAY_MS;

export type CredentialKind = 'token' | 'client';
export type CredentialState = 'active' | 'expired' | 'revoked';
export type CredentialFlag = 'expires soon' | 'unused';

export interface CredentialView {
  id: string;
  tenantId: string;
  kind: CredentialKind;
  label: string | null;
  state: CredentialState;
  flags: CredentialFlag[];
  createdAt: Date;
  expiresAt: Date | null;
  revokedAt: Date | null;
  lastUsedAt: Date | null;
}

export function credentialState(row: Pick<CredentialRow, 'revoked_at' | 'expires_at'>, now: Date): CredentialState {
  if (row.revoked_at) return 'revoked';
  if (row.expires_at && row.expires_at <= now) return 'expired';
  return 'active';
}

/** Each credential of one tenant with its state and flags, judged against the others. */
export function credentialViews(rows: readonly CredentialRow[], now: Date): CredentialView[] {
  const active = rows.filter((r) => credentialState(r, now) === 'active');
  const usedRecently = (r: CredentialRow) => r.last_used_at !== null && now.getTime() - r.last_used_at.getTime() < IDLE_MS;
  return rows.map((row) => {
    const state = credentialState(row, now);
    const flags: CredentialFlag[] = [];
    if (state === 'active') {
      if (row.expires_at && row.expires_at.getTime() - now.getTime() < EXPIRY_WARNING_MS) flags.push('expires soon');
      // A credential never used counts from its creation, so a new one is given a week.
      const idleSince = row.last_used_at ?? row.created_at;
      if (now.getTime() - idleSince.getTime() >= IDLE_MS && active.some((other) => other.id !== row.id && usedRecently(other))) flags.push('unused');
    }
    return {
      id: row.id,
      tenantId: row.tenant_id,
      kind: row.kind,
      label: row.label,
      state,
      flags,
      createdAt: row.created_at,
      expiresAt: row.expires_at,
      revokedAt: row.revoked_at,
      lastUsedAt: row.last_used_at,
    };
  });
}

/** A tenant's credentials (never their secrets) with state and flags, oldest first. */
export async function listTenantCredentials(db: Db, tenantId: string, now: Date = new Date()): Promise<CredentialView[]> {
  if (!(await findTenant(db, tenantId))) throw new ServiceError('not-found', `No tenant ${tenantId}.`);
  return credentialViews(await listCredentials(db, tenantId), now);
}

export interface CredentialRequest {
  label: string | null;
  /** Lifetime in milliseconds; undefined for no expiry. */
  lifetimeMs: number | undefined;
}

export function parseLabel(value: unknown): string | null {
  if (value === undefined || value === null) return null;
  if (typeof value !== 'string' || value.trim().length === 0 || value.length > 200) {
    throw new ServiceError('invalid', 'label must be text of 1 to 200 characters.');
  }
  return value.trim();
}

export function parseLifetime(value: unknown): number | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'string') throw new ServiceError('invalid', 'expires must be a duration such as 90d, 12h, 2w or 1y.');
  try {
    return parseDuration(value);
  } catch (error) {
    throw new ServiceError('invalid', `${(error as Error).message}.`);
  }
}

/** The admin API's body for a new credential: { label?, expires? }. */
export function parseCredentialRequest(body: unknown): CredentialRequest {
  const fields = body === undefined ? {} : body;
  if (typeof fields !== 'object' || fields === null || Array.isArray(fields)) throw new ServiceError('invalid', 'The body must be a JSON object.');
  const unknown = Object.keys(fields).filter((k) => k !== 'label' && k !== 'expires');
  if (unknown.length > 0) throw new ServiceError('invalid', `Unknown field ${unknown.join(', ')}; a credential takes label and expires.`);
  const { label, expires } = fields as { label?: unknown; expires?: unknown };
  return { label: parseLabel(label), lifetimeMs: parseLifetime(expires) };
}

/** A tenant that may be given credentials: it exists and is connected. */
async function connectedTenant(db: Db, id: string): Promise<TenantRow> {
  const row = await findTenant(db, id);
  if (!row) throw new ServiceError('not-found', `No tenant ${id}.`);
  if (row.disconnected_at) throw new ServiceError('conflict', `Tenant ${row.id} is disconnected; connect it first.`);
  return row;
}

export interface IssuedToken {
  credential: CredentialRow;
  token: string;
}

export async function issueSecretToken(db: Db, signing: TokenSettings, tenantId: string, request: CredentialRequest, actor: Actor): Promise<IssuedToken> {
  const tenant = await connectedTenant(db, tenantId);
  const expiresAt = request.lifetimeMs === undefined ? null : new Date(Date.now() + request.lifetimeMs);
  const credential = await inTransaction(db, async (trx) => {
    const row = await createCredential(trx, { tenantId: tenant.id, kind: 'token', label: request.label, expiresAt });
    await recordAudit(trx, credentialEvent(row, 'issue', actor));
    return row;
  });
  return { credential, token: signToken(signing, { tid: tenant.id, jti: credential.id }, expiresAt) };
}

export interface CreatedClient {
  credential: CredentialRow;
  clientSecret: string;
}

export async function createOAuthClient(db: Db, tenantId: string, request: CredentialRequest, actor: Actor): Promise<CreatedClient> {
  const tenant = await connectedTenant(db, tenantId);
  const clientSecret = generateClientSecret();
  const secretHash = await hashClientSecret(clientSecret);
  const expiresAt = request.lifetimeMs === undefined ? null : new Date(Date.now() + request.lifetimeMs);
  const credential = await inTransaction(db, async (trx) => {
    const row = await createCredential(trx, { tenantId: tenant.id, kind: 'client', label: request.label, secretHash, expiresAt });
    await recordAudit(trx, credentialEvent(row, 'issue', actor));
    return row;
  });
  return { credential, clientSecret };
}

export interface Revoked {
  credential: CredentialRow;
  /** It had been revoked before: nothing changed. */
  alreadyRevoked: boolean;
}

const KIND_NAMES: Record<CredentialKind, string> = { token: 'Secret Token', client: 'OAuth client' };

/**
 * Revokes a credential (of the given kind and tenant, when given). Revoking
 * one already revoked changes nothing and says so.
 */
export async function revokeCredential(db: Db, id: string, actor: Actor, scope: { kind?: CredentialKind; tenantId?: string } = {}): Promise<Revoked> {
  const what = scope.kind === undefined ? 'credential' : KIND_NAMES[scope.kind];
  const existing = await findCredential(db, id);
  if (!existing || (scope.tenantId !== undefined && existing.tenant_id !== scope.tenantId)) throw new ServiceError('not-found', `No ${what} ${id}.`);
  if (scope.kind !== undefined && existing.kind !== scope.kind) {
    // token revoke takes a credential of either kind.
    throw new ServiceError('not-found', `No ${what} ${id}: it is ${existing.kind === 'client' ? 'an' : 'a'} ${KIND_NAMES[existing.kind]}; revoke it with token revoke.`);
  }
  const revoked = await inTransaction(db, async (trx) => {
    const row = await revokeLiveCredential(trx, id, scope.kind);
    if (row) await recordAudit(trx, credentialEvent(row, 'revoke', actor));
    return row;
  });
  return revoked ? { credential: revoked, alreadyRevoked: false } : { credential: (await findCredential(db, id)) ?? existing, alreadyRevoked: true };
}

function credentialEvent(row: CredentialRow, operation: 'issue' | 'revoke', actor: Actor) {
  return {
    tenantId: row.tenant_id,
    action: 'credential' as const,
    objectType: 'credential' as const,
    objectId: row.id,
    objectRef: row.label,
    outcome: 'success' as const,
    details: { operation, kind: row.kind, ...(operation === 'issue' ? { expiresAt: row.expires_at?.toISOString() ?? null } : {}), ...auditVia(actor) },
  };
}

/**
 * Why Entra cannot reach the server at PUBLIC_URL, or undefined when it can:
 * Entra's provisioning service calls from Microsoft's cloud and only over
 * HTTPS, so a plain http:// address or one on this machine or a private
 * network never works as the Tenant URL.
 */
export function publicUrlProblem(publicUrl: string): string | undefined {
  let url: URL;
  try {
    url = new URL(publicUrl);
  } catch {
    return `PUBLIC_URL (${publicUrl}) is not a URL`;
  }
  const host = url.hostname.replace(/^\[|\]$/g, '').toLowerCase();
  const local =
    host === 'localhost' ||
    host.endsWith('.localhost') ||
    host.endsWith('.local') ||
    host.endsWith('.internal') ||
    host === '::1' ||
    host === '0.0.0.0' ||
    /^127\./.test(host) ||
    /^10\./.test(host) ||
    /^192\.168\./.test(host) ||
    /^172\.(1[6-9]|2\d|3[01])\./.test(host) ||
    /^169\.254\./.test(host) ||
    /^f[cd][0-9a-f]{2}:/.test(host) ||
    /^fe80:/.test(host) ||
    (!host.includes('.') && !host.includes(':'));
  if (url.protocol !== 'https:' && local) return `PUBLIC_URL is ${publicUrl}: not https:// and not an address Entra can reach from the internet`;
  if (url.protocol !== 'https:') return `PUBLIC_URL is ${publicUrl}: Entra only connects over https://`;
  if (local) return `PUBLIC_URL is ${publicUrl}: an address on this machine or a private network, which Entra cannot reach from the internet`;
  return undefined;
}

/** The warning token issue and client create print when publicUrlProblem finds one. */
export function publicUrlWarning(publicUrl: string): string | undefined {
  const problem = publicUrlProblem(publicUrl);
  return problem === undefined
    ? undefined
    : `${problem}, so the Tenant URL and the token endpoint made from it will not work in Entra. Set PUBLIC_URL to the https:// address of your proxy or load balancer ` +
        '(for example PUBLIC_URL=https://scim.example.org, with a certificate from a public authority) wherever the server and this command run, and issue the credential again.';
}
