// Rule 4: the portal role of a synced account, from Entra app roles, then our
// school extension (SDS Education_ObjectType or Graph primaryRole), then
// userType, through the tenant's mapping. Sync never grants admin.
import type { Role } from '../db/database.js';
import { PORTAL_SCHEMA } from './schemas.js';

export type SyncRole = Exclude<Role, 'admin'>;

/** Source values (lower-cased) -> role, before a tenant's own mapping. */
export const DEFAULT_ROLE_MAPPING: Readonly<Record<string, SyncRole>> = {
  student: 'student',
  pupil: 'student',
  elev: 'student',
  teacher: 'teacher',
  faculty: 'teacher',
  'lärare': 'teacher',
  laerer: 'teacher',
  'lærer': 'teacher',
};

const SYNC_ROLES = new Set<string>(['student', 'teacher', 'staff']);

function lookup(mapping: Readonly<Record<string, string>>, value: unknown): SyncRole | undefined {
  if (typeof value !== 'string') return undefined;
  const role = mapping[value.trim().toLowerCase()];
  return role !== undefined && SYNC_ROLES.has(role) ? (role as SyncRole) : undefined;
}

/**
 * The defaults with a tenant's mapping over them, made once per mapping
 * object: a tenant's settings are read once per credential check and shared
 * by its requests, and every create and change resolves a role.
 */
const mergedMappings = new WeakMap<Readonly<Record<string, string>>, Readonly<Record<string, string>>>();

function merged(tenantMapping: Readonly<Record<string, string>>): Readonly<Record<string, string>> {
  let mapping = mergedMappings.get(tenantMapping);
  if (mapping === undefined) {
    const built: Record<string, string> = { ...DEFAULT_ROLE_MAPPING };
    for (const [k, v] of Object.entries(tenantMapping)) built[k.toLowerCase()] = v;
    mapping = built;
    mergedMappings.set(tenantMapping, mapping);
  }
  return mapping;
}

const NO_MAPPING: Readonly<Record<string, string>> = {};

export function resolveRole(resource: Record<string, unknown>, tenantMapping: Readonly<Record<string, string>> = NO_MAPPING): SyncRole {
  const mapping = merged(tenantMapping);

  const roles = Array.isArray(resource.roles) ? (resource.roles as { value?: unknown; primary?: unknown }[]) : [];
  const ordered = [...roles.filter((r) => r.primary === true), ...roles.filter((r) => r.primary !== true)];
  for (const role of ordered) {
    const found = lookup(mapping, role.value);
    if (found) return found;
  }
  const extension = resource[PORTAL_SCHEMA] as { role?: unknown } | undefined;
  return lookup(mapping, extension?.role) ?? lookup(mapping, resource.userType) ?? 'student';
}
