// Tenant operations the CLI and the admin API share: creating a tenant,
// changing its settings, disconnecting and connecting it. Each validates its
// input, writes, and records its audit event; a verified domain belongs to
// one tenant only.
import { recordAudit } from '../db/audit.js';
import type { ClassNames, Db, Role } from '../db/database.js';
import { isUniqueViolation } from '../db/errors.js';
import {
  connectTenant as connectTenantRow,
  createTenant as createTenantRow,
  disconnectTenant as disconnectTenantRows,
  DOMAIN_OWNER_CONSTRAINT,
  findDomainOwners,
  findTenant,
  updateTenantSettings,
  type TenantRow,
} from '../db/tenants.js';
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

export interface TenantChanges {
  name?: string;
  verifiedDomains?: string[];
  roleMapping?: Record<string, Role>;
  retentionDays?: number;
  /** Whether synced class names are unique in the tenant (Microsoft's SCIM guidance) or repeat across its schools. */
  classNames?: ClassNames;
}

export interface NewTenantInput extends TenantChanges {
  name: string;
}

const TENANT_FIELDS = ['name', 'verifiedDomains', 'roleMapping', 'retentionDays', 'classNames'] as const;

function objectBody(body: unknown): Record<string, unknown> {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new ServiceError('invalid', 'The body must be a JSON object.');
  const unknown = Object.keys(body).filter((k) => !(TENANT_FIELDS as readonly string[]).includes(k));
  if (unknown.length > 0) throw new ServiceError('invalid', `Unknown field ${unknown.join(', ')}; a tenant has ${TENANT_FIELDS.join(', ')}.`);
  return body as Record<string, unknown>;
}

/** The admin API's body of a tenant change: any of name, verifiedDomains, roleMapping, retentionDays, classNames. */
export function parseTenantChanges(body: unknown): TenantChanges {
  const fields = objectBody(body);
  const changes: TenantChanges = {
    ...(fields.name !== undefined ? { name: parseTenantName(fields.name) } : {}),
    ...(fields.verifiedDomains !== undefined ? { verifiedDomains: parseDomains(fields.verifiedDomains) } : {}),
    ...(fields.roleMapping !== undefined ? { roleMapping: parseRoleMapping(fields.roleMapping) } : {}),
    ...(fields.retentionDays !== undefined ? { retentionDays: parseRetentionDays(fields.retentionDays) } : {}),
    ...(fields.classNames !== undefined ? { classNames: parseClassNames(fields.classNames) } : {}),
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

/** The database refused a domain (another tenant claimed it meanwhile): the same answer as the check before. */
async function domainRace<T>(db: Db, domains: readonly string[] | undefined, tenantId: string | undefined, write: () => Promise<T>): Promise<T> {
  try {
    return await write();
  } catch (error) {
    if (domains === undefined || !isUniqueViolation(error, DOMAIN_OWNER_CONSTRAINT)) throw error;
    await checkDomainsFree(db, domains, tenantId);
    throw new ServiceError('taken', 'A verified domain of this request belongs to another tenant; a domain belongs to one tenant only.');
  }
}

export async function createTenant(db: Db, input: NewTenantInput, actor: Actor): Promise<TenantRow> {
  const domains = input.verifiedDomains ?? [];
  await checkDomainsFree(db, domains);
  return domainRace(db, domains, undefined, () =>
    db.transaction().execute(async (trx) => {
      const created = await createTenantRow(trx, { name: input.name, verifiedDomains: domains });
      const row =
        input.roleMapping !== undefined || input.retentionDays !== undefined || input.classNames !== undefined
          ? ((await updateTenantSettings(trx, created.id, {
              ...(input.roleMapping !== undefined ? { roleMapping: input.roleMapping } : {}),
              ...(input.retentionDays !== undefined ? { retentionDays: input.retentionDays } : {}),
              ...(input.classNames !== undefined ? { classNames: input.classNames } : {}),
            })) ?? created)
          : created;
      await recordAudit(trx, {
        tenantId: row.id,
        action: 'create',
        objectType: 'tenant',
        objectId: row.id,
        objectRef: row.name,
        outcome: 'success',
        details: { verifiedDomains: row.verified_domains, ...auditVia(actor) },
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
  if (changes.verifiedDomains !== undefined) await checkDomainsFree(db, changes.verifiedDomains, id);
  const tenant = await domainRace(db, changes.verifiedDomains, id, () =>
    db.transaction().execute(async (trx) => {
      const row = await updateTenantSettings(trx, id, changes);
      if (!row) return undefined;
      await recordAudit(trx, { tenantId: id, action: 'settings', objectType: 'tenant', objectId: id, objectRef: row.name, outcome: 'success', details: { changed, ...auditVia(actor) } });
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
  const tenant = await db.transaction().execute(async (trx) => {
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
    connected: row.disconnected_at === null,
    disconnectedAt: row.disconnected_at,
    lastRequestAt: row.last_request_at,
    createdAt: row.created_at,
  };
}
