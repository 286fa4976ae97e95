// Tenant operations the CLI and the admin API share: creating a tenant,
// changing its settings, disconnecting and connecting it. Each validates its
// input, writes, and records its audit event; a verified domain belongs to
// one tenant only, and so does an Entra tenant (rule 13).
import { entraCredentialId } from '../auth/entra-token.js';
import { recordAudit } from '../db/audit.js';
import { inTransaction, type ClassNames, type Db, type Role } from '../db/database.js';
import { isUniqueViolation } from '../db/errors.js';
import {
  connectTenant as connectTenantRow,
  createTenant as createTenantRow,
  disconnectTenant as disconnectTenantRows,
  DOMAIN_OWNER_CONSTRAINT,
  ENTRA_TENANT_CONSTRAINT,
  findDomainOwners,
  findEntraTenantOwner,
  findTenant,
  updateTenantSettings,
  type TenantRow,
} from '../db/tenants.js';
import { isUuid } from '../db/ids.js';
import { auditVia, type Actor } from './actor.js';
import { ServiceError } from './errors.js';

const DOMAIN = /^(?=.{1,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$/i;
export const SYNC_ROLES: readonly Role[] = ['student', 'teacher', 'staff'];

export function parseTenantName(value: unknown): string {
  const name = typeof value === 'string' ? value.trim() : '';
  if (name.length === 0 || name.length > 200) throw new ServiceError('invalid', 'The name must be 1 to 200 characters.');
  return name;
}

export function parseDomain(value: unknown): string {
  if (typeof value !== 'string' || !DOMAIN.test(value)) {
    throw new ServiceError('invalid', `"${String(value)}" is not a domain name such as school.example.`);
  }
  return value.toLowerCase();
}

export function parseDomains(value: unknown): string[] {
  if (!Array.isArray(value)) throw new ServiceError('invalid', 'verifiedDomains must be a list of domain names.');
  return [...new Set(value.map(parseDomain))];
}

/** One entry of a role mapping: a source value (trimmed, any case) and a role sync may grant; shown is the entry as given. */
export function parseRoleMapEntry(source: unknown, role: unknown, shown = `${String(source)}=${String(role)}`): [string, Role] {
  const key = typeof source === 'string' ? source.trim().toLowerCase() : '';
  const mapped = typeof role === 'string' ? (role.trim().toLowerCase() as Role) : undefined;
  if (key === '' || key.length > 200 || mapped === undefined || !SYNC_ROLES.includes(mapped)) {
    throw new ServiceError(
      'invalid',
      `"${shown}" is not SOURCE=ROLE with ROLE one of ${SYNC_ROLES.join(', ')} (sync never grants admin).`,
    );
  }
  return [key, mapped];
}

export function parseRoleMapping(value: unknown): Record<string, Role> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new ServiceError('invalid', 'roleMapping must be an object from source values to student, teacher or staff.');
  }
  return Object.fromEntries(Object.entries(value).map(([source, role]) => parseRoleMapEntry(source, role)));
}

export function parseRetentionDays(value: unknown): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value > 3650) {
    throw new ServiceError('invalid', 'retentionDays must be a whole number from 0 to 3650.');
  }
  return value;
}

export function parseClassNames(value: unknown): ClassNames {
  if (value !== 'unique' && value !== 'repeat') throw new ServiceError('invalid', 'classNames must be "unique" or "repeat".');
  return value;
}

/** An Entra tenant id (the tid of Entra's tokens), lower-case; null unbinds. */
export function parseEntraTenantId(value: unknown): string | null {
  if (value === null) return null;
  if (typeof value !== 'string' || !isUuid(value.trim())) {
    const shown = typeof value === 'string' ? `"${value}"` : JSON.stringify(value);
    throw new ServiceError('invalid', `${shown} is not an Entra tenant id: give the Tenant ID from the Entra admin center's Overview page, a GUID.`);
  }
  return value.trim().toLowerCase();
}

export function parseAcceptEntraToken(value: unknown): boolean {
  if (typeof value !== 'boolean') throw new ServiceError('invalid', 'acceptEntraToken must be true or false.');
  return value;
}

export interface TenantChanges {
  name?: string;
  verifiedDomains?: string[];
  roleMapping?: Record<string, Role>;
  retentionDays?: number;
  /** Whether synced class names are unique in the tenant (Microsoft's SCIM guidance) or repeat across its schools. */
  classNames?: ClassNames;
  /** Rule 13: the Entra tenant this tenant is bound to; null unbinds. */
  entraTenantId?: string | null;
  /** Whether Entra's own bearer token (for the bound Entra tenant) is accepted instead of a Secret Token. */
  acceptEntraToken?: boolean;
}

export interface NewTenantInput extends TenantChanges {
  name: string;
}

const TENANT_FIELDS = ['name', 'verifiedDomains', 'roleMapping', 'retentionDays', 'classNames', 'entraTenantId', 'acceptEntraToken'] as const;

function objectBody(body: unknown): Record<string, unknown> {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new ServiceError('invalid', 'The body must be a JSON object.');
  const unknown = Object.keys(body).filter((k) => !(TENANT_FIELDS as readonly string[]).includes(k));
  if (unknown.length > 0) throw new ServiceError('invalid', `Unknown field ${unknown.join(', ')}; a tenant has ${TENANT_FIELDS.join(', ')}.`);
  return body as Record<string, unknown>;
}

/** The admin API's body of a tenant change: any of TENANT_FIELDS. */
export function parseTenantChanges(body: unknown): TenantChanges {
  const fields = objectBody(body);
  const changes: TenantChanges = {
    ...(fields.name !== undefined ? { name: parseTenantName(fields.name) } : {}),
    ...(fields.verifiedDomains !== undefined ? { verifiedDomains: parseDomains(fields.verifiedDomains) } : {}),
    ...(fields.roleMapping !== undefined ? { roleMapping: parseRoleMapping(fields.roleMapping) } : {}),
    ...(fields.retentionDays !== undefined ? { retentionDays: parseRetentionDays(fields.retentionDays) } : {}),
    ...(fields.classNames !== undefined ? { classNames: parseClassNames(fields.classNames) } : {}),
    ...(fields.entraTenantId !== undefined ? { entraTenantId: parseEntraTenantId(fields.entraTenantId) } : {}),
    ...(fields.acceptEntraToken !== undefined ? { acceptEntraToken: parseAcceptEntraToken(fields.acceptEntraToken) } : {}),
  };
  if (Object.keys(changes).length === 0) throw new ServiceError('invalid', `Nothing to change: give any of ${TENANT_FIELDS.join(', ')}.`);
  return changes;
}

/** The admin API's body of a new tenant: name, and optionally its other settings. */
export function parseNewTenant(body: unknown): NewTenantInput {
  const fields = objectBody(body);
  return { ...parseTenantChanges({ ...fields, name: fields.name ?? '' }), name: parseTenantName(fields.name) };
}

/** Refuses domains another tenant holds, naming it. */
async function checkDomainsFree(db: Db, domains: readonly string[], tenantId?: string): Promise<void> {
  const [taken] = await findDomainOwners(db, domains, tenantId);
  if (taken) throw domainTaken(taken.domain, taken.tenantId, taken.name);
}

function domainTaken(domain: string, tenantId: string, name: string): ServiceError {
  return new ServiceError('taken', `The domain ${domain} is already a verified domain of tenant ${name} (${tenantId}); a domain belongs to one tenant only.`);
}

/** Refuses an Entra tenant another tenant is bound to, naming it. */
async function checkEntraTenantFree(db: Db, entraTenantId: string | null | undefined, tenantId?: string): Promise<void> {
  if (!entraTenantId) return;
  const owner = await findEntraTenantOwner(db, entraTenantId, tenantId);
  if (owner) throw entraTenantTaken(entraTenantId, owner.tenantId, owner.name);
}

function entraTenantTaken(entraTenantId: string, tenantId: string, name: string): ServiceError {
  return new ServiceError('taken', `The Entra tenant ${entraTenantId} is already bound to tenant ${name} (${tenantId}); an Entra tenant belongs to one tenant only.`);
}

/** What a write claims that no other tenant may hold. */
interface Claims {
  verifiedDomains?: readonly string[] | undefined;
  entraTenantId?: string | null | undefined;
}

async function checkClaimsFree(db: Db, claims: Claims, tenantId?: string): Promise<void> {
  if (claims.verifiedDomains !== undefined) await checkDomainsFree(db, claims.verifiedDomains, tenantId);
  await checkEntraTenantFree(db, claims.entraTenantId, tenantId);
}

/** The database refused a claim (another tenant made it meanwhile): the same answer as the check before. */
async function claimRace<T>(db: Db, claims: Claims, tenantId: string | undefined, write: () => Promise<T>): Promise<T> {
  try {
    return await write();
  } catch (error) {
    if (claims.verifiedDomains !== undefined && isUniqueViolation(error, DOMAIN_OWNER_CONSTRAINT)) {
      await checkDomainsFree(db, claims.verifiedDomains, tenantId);
      throw new ServiceError('taken', 'A verified domain of this request belongs to another tenant; a domain belongs to one tenant only.');
    }
    if (claims.entraTenantId && isUniqueViolation(error, ENTRA_TENANT_CONSTRAINT)) {
      await checkEntraTenantFree(db, claims.entraTenantId, tenantId);
      throw new ServiceError('taken', `The Entra tenant ${claims.entraTenantId} is already bound to another tenant; an Entra tenant belongs to one tenant only.`);
    }
    throw error;
  }
}

/** Entra's own token names an Entra tenant: a tenant accepts it only while bound to one. */
function checkEntraTokenBinding(changes: TenantChanges, before?: TenantRow): void {
  if (changes.acceptEntraToken !== true) return;
  const bound = changes.entraTenantId !== undefined ? changes.entraTenantId : (before?.entra_tenant_id ?? null);
  if (bound === null) {
    throw new ServiceError('invalid', "Entra's own token can only be accepted by a tenant bound to its Entra tenant: give the Entra tenant id too (entraTenantId, or --entra-tenant).");
  }
}

export async function createTenant(db: Db, input: NewTenantInput, actor: Actor): Promise<TenantRow> {
  const domains = input.verifiedDomains ?? [];
  checkEntraTokenBinding(input);
  const claims = { verifiedDomains: domains, entraTenantId: input.entraTenantId };
  await checkClaimsFree(db, claims);
  return claimRace(db, claims, undefined, () =>
    inTransaction(db, async (trx) => {
      const created = await createTenantRow(trx, { name: input.name, verifiedDomains: domains });
      const settings = {
        ...(input.roleMapping !== undefined ? { roleMapping: input.roleMapping } : {}),
        ...(input.retentionDays !== undefined ? { retentionDays: input.retentionDays } : {}),
        ...(input.classNames !== undefined ? { classNames: input.classNames } : {}),
        ...(input.entraTenantId !== undefined ? { entraTenantId: input.entraTenantId } : {}),
        ...(input.acceptEntraToken !== undefined ? { acceptEntraToken: input.acceptEntraToken } : {}),
      };
      const row = Object.keys(settings).length > 0 ? ((await updateTenantSettings(trx, created.id, settings)) ?? created) : created;
      await recordAudit(trx, {
        tenantId: row.id,
        action: 'create',
        objectType: 'tenant',
        objectId: row.id,
        objectRef: row.name,
        outcome: 'success',
        details: { verifiedDomains: row.verified_domains, ...(row.entra_tenant_id ? { entraTenantId: row.entra_tenant_id } : {}), ...auditVia(actor) },
      });
      return row;
    }),
  );
}

export interface SettingsChanged {
  tenant: TenantRow;
  /** The settings given, by their API names. */
  changed: (keyof TenantChanges)[];
}

export async function changeTenantSettings(db: Db, id: string, changes: TenantChanges, actor: Actor): Promise<SettingsChanged> {
  const changed = TENANT_FIELDS.filter((k) => changes[k] !== undefined);
  if (changed.length === 0) throw new ServiceError('invalid', `Nothing to change: give any of ${TENANT_FIELDS.join(', ')}.`);
  if (changes.acceptEntraToken === true && changes.entraTenantId === undefined) {
    const before = await findTenant(db, id);
    if (!before) throw new ServiceError('not-found', `No tenant ${id}.`);
    checkEntraTokenBinding(changes, before);
  } else {
    checkEntraTokenBinding(changes);
  }
  const claims = { verifiedDomains: changes.verifiedDomains, entraTenantId: changes.entraTenantId };
  await checkClaimsFree(db, claims, id);
  const tenant = await claimRace(db, claims, id, () =>
    inTransaction(db, async (trx) => {
      const row = await updateTenantSettings(trx, id, changes);
      if (!row) return undefined;
      const binding = changes.entraTenantId !== undefined ? { entraTenantId: row.entra_tenant_id } : {};
      await recordAudit(trx, { tenantId: id, action: 'settings', objectType: 'tenant', objectId: id, objectRef: row.name, outcome: 'success', details: { changed, ...binding, ...auditVia(actor) } });
      return row;
    }),
  );
  if (!tenant) throw new ServiceError('not-found', `No tenant ${id}.`);
  return { tenant, changed };
}

export interface Disconnected {
  tenant: TenantRow;
  /** It was disconnected before: nothing changed. */
  alreadyDisconnected: boolean;
  credentials: number;
  accounts: number;
  classes: number;
}

/** Rule 8: revokes the tenant's credentials and turns its synced accounts and classes manual; nothing is deleted. */
export async function disconnectTenant(db: Db, id: string, actor: Actor): Promise<Disconnected> {
  const before = await findTenant(db, id);
  if (!before) throw new ServiceError('not-found', `No tenant ${id}.`);
  if (before.disconnected_at) return { tenant: before, alreadyDisconnected: true, credentials: 0, accounts: 0, classes: 0 };
  const result = await disconnectTenantRows(db, id);
  if (!result) throw new ServiceError('not-found', `No tenant ${id}.`);
  await recordAudit(db, { tenantId: id, action: 'disconnect', objectType: 'tenant', objectId: id, objectRef: before.name, outcome: 'success', details: { ...result, ...auditVia(actor) } });
  return { tenant: (await findTenant(db, id)) ?? before, alreadyDisconnected: false, ...result };
}

export interface Connected {
  tenant: TenantRow;
  /** It was connected before: nothing changed. */
  alreadyConnected: boolean;
}

export async function connectTenant(db: Db, id: string, actor: Actor): Promise<Connected> {
  const before = await findTenant(db, id);
  if (!before) throw new ServiceError('not-found', `No tenant ${id}.`);
  if (!before.disconnected_at) return { tenant: before, alreadyConnected: true };
  const tenant = await inTransaction(db, async (trx) => {
    const row = await connectTenantRow(trx, id);
    if (row) await recordAudit(trx, { tenantId: id, action: 'connect', objectType: 'tenant', objectId: id, objectRef: row.name, outcome: 'success', details: auditVia(actor) });
    return row;
  });
  if (!tenant) throw new ServiceError('not-found', `No tenant ${id}.`);
  return { tenant, alreadyConnected: false };
}

/** A tenant's settings as the CLI and the admin API show them. */
export function tenantSettings(row: TenantRow) {
  return {
    id: row.id,
    name: row.name,
    verifiedDomains: row.verified_domains,
    roleMapping: row.role_mapping,
    retentionDays: row.retention_days,
    classNames: row.class_names,
    entraTenantId: row.entra_tenant_id,
    acceptEntraToken: row.accept_entra_token,
    /** The credential id audit events record for requests made with Entra's own token. */
    entraTokenCredentialId: row.accept_entra_token ? entraCredentialId(row.id) : null,
    connected: row.disconnected_at === null,
    disconnectedAt: row.disconnected_at,
    lastRequestAt: row.last_request_at,
    createdAt: row.created_at,
  };
}
