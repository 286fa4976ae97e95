// Rule 4: the portal role of a synced account, from Entra app roles, then our
// school extension (SDS Education_ObjectType or Graph primaryRole), then
// userType, through the tenant's mapping. Sync never grants admin. Also the
// shapes Entra gives app roles in, read into SCIM role elements.
import type { Role } from '../../db/database.js';
import { PORTAL_SCHEMA } from '../schemas.js';

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

  const roles = Array.isArray(resource.roles) ? (resource.roles as { value?: unknown; display?: unknown; primary?: unknown }[]) : [];
  const ordered = [...roles.filter((r) => r.primary === true), ...roles.filter((r) => r.primary !== true)];
  for (const role of ordered) {
    // An app role's value is what the admin typed; its display name may be the word the mapping knows.
    const found = lookup(mapping, role.value) ?? lookup(mapping, role.display);
    if (found) return found;
  }
  const extension = resource[PORTAL_SCHEMA] as { role?: unknown } | undefined;
  return lookup(mapping, extension?.role) ?? lookup(mapping, resource.userType) ?? 'student';
}

/** The type Entra gives every app role it sends. */
export const APP_ROLE_TYPE = 'WindowsAzureActiveDirectoryRole';

type Json = Record<string, unknown>;

function entry(object: Json, name: string): unknown {
  return Object.entries(object).find(([k]) => k.toLowerCase() === name)?.[1];
}

/**
 * The app role an element's value carries as JSON text, as Entra sends app
 * role assignments in a PATCH without aadOptscim062020 (and always in
 * provisioning on demand): {"id":"<guid>","value":"Teacher","displayName":"Teacher"}.
 * Undefined for any other value, which stays a plain role value.
 */
export function appRoleInValue(value: unknown): { value: string; display?: string } | undefined {
  if (typeof value !== 'string' || !value.trimStart().startsWith('{')) return undefined;
  let parsed: unknown;
  try {
    parsed = JSON.parse(value);
  } catch {
    return undefined;
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) return undefined;
  const role = entry(parsed as Json, 'value');
  if (typeof role !== 'string' || role.trim() === '') return undefined;
  const display = entry(parsed as Json, 'displayname');
  return { value: role, ...(typeof display === 'string' && display !== '' ? { display } : {}) };
}

/**
 * One element of roles (sub-attribute names already canonical) as the SCIM
 * role {value, display, type, primary} when Entra sent an app role: its value
 * as JSON text (primary false, as Microsoft sends every role of
 * AppRoleAssignmentsComplex), or display spelled displayName as
 * AppRoleAssignmentsComplex does in a POST. Any other element is returned as it is.
 */
export function decodeAppRole(element: Json): Json {
  const role = appRoleInValue(element.value);
  if (role) {
    return {
      value: role.value,
      ...(role.display !== undefined ? { display: role.display } : typeof element.display === 'string' ? { display: element.display } : {}),
      type: typeof element.type === 'string' ? element.type : APP_ROLE_TYPE,
      primary: element.primary === true,
    };
  }
  if (element.display !== undefined) return element;
  const key = Object.keys(element).find((k) => k.toLowerCase() === 'displayname');
  if (key === undefined) return element;
  const { [key]: display, ...rest } = element;
  return typeof display === 'string' ? { ...rest, display } : element;
}
