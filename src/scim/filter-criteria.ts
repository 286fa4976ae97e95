// Resolves a parsed SCIM filter (RFC 7644 §3.4.2.2) into search criteria the
// repositories render as SQL (db/filter-sql.ts): attribute names looked up
// case-insensitively in the schemas, promoted to their columns where the
// mapper keeps one, and every comparison checked against the attribute's type
// here, so a filter that cannot apply answers 400 invalidFilter.
import type SCIMMY from 'scimmy';
import type { AccountsTable, ClassesTable } from '../db/database.js';
import type { Collection, Criterion, Scalar, SortKey, ValueType } from '../db/filter-sql.js';
import type { ColumnLookup } from '../db/paging.js';
import { badRequest, type ScimError } from '../errors.js';
import type { AttrPath, CompareOp, FilterNode, FilterValue } from './filter.js';
import { resolveAttribute } from './schema-index.js';
import { GROUP_SCHEMA, type ResourceName, USER_SCHEMA } from './schemas.js';

type Attribute = SCIMMY.Types.Attribute;

/** A multi-valued attribute: compared through `any` over its elements. */
interface Multi {
  kind: 'multi';
  collection: Collection;
  /** A field of one element by sub-attribute name ('' for the element itself, of a multi-valued simple attribute). */
  field: (sub: string) => Scalar | undefined;
  /** The element's own value when the filter names no sub-attribute (emails eq "x" compares value). */
  self: () => Scalar | undefined;
}

type Target = ({ kind: 'scalar' } & Scalar) | Multi;

const invalid = (detail: string): ScimError => badRequest('invalidFilter', detail);

function describe(path: AttrPath): string {
  return `${path.uri ? `${path.uri}:` : ''}${path.name}${path.sub ? `.${path.sub}` : ''}`;
}

function valueType(attribute: Attribute): ValueType {
  switch (attribute.type) {
    case 'boolean':
      return 'boolean';
    case 'dateTime':
      return 'dateTime';
    case 'decimal':
    case 'integer':
      return 'number';
    case 'complex':
      return 'complex';
    default:
      return 'string';
  }
}

function scalarOf(ref: Scalar['ref'], attribute: Attribute): { kind: 'scalar' } & Scalar {
  return { kind: 'scalar', ref, type: valueType(attribute), caseExact: Boolean(attribute.config.caseExact) };
}

function column<C extends string>(name: C, type: ValueType, caseExact: boolean, cast?: 'text'): { kind: 'scalar' } & Scalar {
  return { kind: 'scalar', ref: { in: 'row', column: name, ...(cast ? { cast } : {}) }, type, caseExact };
}

type UserColumn = keyof AccountsTable;
type GroupColumn = keyof ClassesTable;

// Attributes the mappers keep in a column of their own, by canonical path (lower case).
const USER_COLUMNS: Record<string, { kind: 'scalar' } & Scalar> = {
  id: column<UserColumn>('id', 'string', true, 'text'),
  username: column<UserColumn>('user_name', 'string', false),
  externalid: column<UserColumn>('external_id', 'string', true),
  displayname: column<UserColumn>('display_name', 'string', false),
  active: column<UserColumn>('active', 'boolean', false),
  'name.givenname': column<UserColumn>('given_name', 'string', false),
  'name.familyname': column<UserColumn>('family_name', 'string', false),
  'meta.created': column<UserColumn>('created_at', 'dateTime', false),
  'meta.lastmodified': column<UserColumn>('updated_at', 'dateTime', false),
  'meta.resourcetype': { kind: 'scalar', ref: { in: 'constant', value: 'User' }, type: 'string', caseExact: true },
};

const GROUP_COLUMNS: Record<string, { kind: 'scalar' } & Scalar> = {
  id: column<GroupColumn>('id', 'string', true, 'text'),
  displayname: column<GroupColumn>('display_name', 'string', false),
  externalid: column<GroupColumn>('external_id', 'string', true),
  'meta.created': column<GroupColumn>('created_at', 'dateTime', false),
  'meta.lastmodified': column<GroupColumn>('updated_at', 'dateTime', false),
  'meta.resourcetype': { kind: 'scalar', ref: { in: 'constant', value: 'Group' }, type: 'string', caseExact: true },
};

const MEMBER_FIELDS: Record<string, Scalar> = {
  // An id in any case, as /Schemas says (caseExact false) and PATCH reads it.
  value: { ref: { in: 'member', field: 'value' }, type: 'string', caseExact: false },
  display: { ref: { in: 'member', field: 'display' }, type: 'string', caseExact: false },
  type: { ref: { in: 'member', field: 'type' }, type: 'string', caseExact: false },
};

/**
 * A table's own entry for a name from the request: never one every object
 * inherits (`constructor` would otherwise resolve, to a function).
 */
function own<T>(table: Record<string, T>, name: string): T | undefined {
  return Object.hasOwn(table, name) ? table[name] : undefined;
}

const members: Multi = {
  kind: 'multi',
  collection: { kind: 'members' },
  field: (sub) => own(MEMBER_FIELDS, sub.toLowerCase()),
  self: () => MEMBER_FIELDS.value,
};

/** The elements of a multi-valued attribute of the document at `path`. */
function elements(path: string[], attribute: Attribute): Multi {
  if (attribute.type !== 'complex') {
    // A multi-valued simple attribute: elements are the values themselves.
    const self = (): Scalar => ({ ref: { in: 'element', path: [] }, type: valueType(attribute), caseExact: Boolean(attribute.config.caseExact) });
    return { kind: 'multi', collection: { kind: 'elements', path }, field: (sub) => (sub === '' ? self() : undefined), self };
  }
  const field = (sub: string): Scalar | undefined => {
    const found = attribute.subAttributes?.find((s) => s.name.toLowerCase() === sub.toLowerCase());
    return found ? { ref: { in: 'element', path: [found.name] }, type: valueType(found), caseExact: Boolean(found.config.caseExact) } : undefined;
  };
  return { kind: 'multi', collection: { kind: 'elements', path }, field, self: () => field('value') };
}

/** Resolves a filter attribute, or fails with invalidFilter. */
function resolve(resource: ResourceName, path: AttrPath): Target {
  const key = `${path.name}${path.sub ? `.${path.sub}` : ''}`.toLowerCase();
  // Only the resource's own core schema: a User's URN names no attribute of a Group.
  const core = !path.uri || path.uri.toLowerCase() === (resource === 'User' ? USER_SCHEMA : GROUP_SCHEMA).toLowerCase();
  const columns = resource === 'User' ? USER_COLUMNS : GROUP_COLUMNS;
  if (core) {
    const promoted = own(columns, key);
    if (promoted) return promoted;
    if (resource === 'Group' && path.name.toLowerCase() === 'members') {
      if (!path.sub) return members;
      const field = own(MEMBER_FIELDS, path.sub.toLowerCase());
      if (!field) throw invalid(`Unknown attribute "${describe(path)}" in filter.`);
      return { ...members, self: () => field, field: () => field };
    }
    if (path.name.toLowerCase() === 'meta') throw invalid(`Unknown attribute "${describe(path)}" in filter.`);
  }
  const found = resolveAttribute(resource, path);
  if (!found) throw invalid(`Unknown attribute "${describe(path)}" in filter.`);
  const base = found.extension ? [found.extension.id] : [];
  const attribute = found.attribute;
  const node = [...base, attribute.name];

  if (attribute.config.multiValued) {
    const multi = elements(node, attribute);
    if (!path.sub) return multi;
    const sub = multi.field(path.sub);
    if (!sub) throw invalid(`Unknown attribute "${describe(path)}" in filter.`);
    return { ...multi, self: () => sub, field: () => sub };
  }
  if (path.sub) {
    const sub = attribute.subAttributes?.find((s) => s.name.toLowerCase() === path.sub?.toLowerCase());
    if (!sub) throw invalid(`Unknown attribute "${describe(path)}" in filter.`);
    return scalarOf({ in: 'document', path: [...node, sub.name] }, sub);
  }
  return scalarOf({ in: 'document', path: node }, attribute);
}

/** A comparison the attribute's type allows, or invalidFilter saying why not. */
function comparison(scalar: Scalar, op: CompareOp, value: FilterValue, label: string): Criterion {
  if (value === null) {
    if (op !== 'eq' && op !== 'ne') throw invalid(`"${op}" cannot compare ${label} with null.`);
    return { kind: 'compare', scalar, op, value };
  }
  switch (scalar.type) {
    case 'boolean': {
      const bool = typeof value === 'string' && /^(true|false)$/i.test(value) ? value.toLowerCase() === 'true' : value;
      if (typeof bool !== 'boolean') throw invalid(`${label} is a boolean; compare it with true or false.`);
      if (op !== 'eq' && op !== 'ne') throw invalid(`${label} is a boolean; only eq and ne apply.`);
      return { kind: 'compare', scalar, op, value: bool };
    }
    case 'dateTime':
      if (typeof value !== 'string' || !isDateTime(value)) {
        throw invalid(`${label} is a date and time; compare it with a quoted ISO 8601 value.`);
      }
      return ordered(scalar, op, value, label);
    case 'number':
      if (typeof value !== 'number') throw invalid(`${label} is a number; compare it with a number.`);
      return ordered(scalar, op, value, label);
    case 'complex':
      throw invalid(`${label} is complex; compare one of its sub-attributes.`);
    case 'string':
      if (typeof value !== 'string') throw invalid(`${label} is a string; compare it with a quoted value.`);
      return { kind: 'compare', scalar, op, value };
  }
}

/** eq, ne and the orderings; co, sw and ew apply to strings only. */
function ordered(scalar: Scalar, op: CompareOp, value: string | number, label: string): Criterion {
  if (op === 'co' || op === 'sw' || op === 'ew') throw invalid(`"${op}" does not apply to ${label}.`);
  return { kind: 'compare', scalar, op, value };
}

function toCriterion(resource: ResourceName, node: FilterNode, element?: (path: AttrPath) => Target): Criterion {
  const lookup = element ?? ((path: AttrPath) => resolve(resource, path));
  switch (node.kind) {
    case 'compare': {
      const target = lookup(node.path);
      const label = `"${describe(node.path)}"`;
      if (target.kind === 'multi') {
        // emails eq "x" compares each element's value; emails.value eq "x" any element.
        const value = target.self();
        if (!value) throw invalid(`${label} has no value to compare; name a sub-attribute.`);
        return { kind: 'any', collection: target.collection, where: comparison(value, node.op, node.value, label) };
      }
      return comparison(target, node.op, node.value, label);
    }
    case 'present': {
      const target = lookup(node.path);
      if (target.kind === 'multi') return { kind: 'any', collection: target.collection, where: undefined };
      return { kind: 'present', scalar: target };
    }
    case 'and':
    case 'or':
      return { kind: node.kind, criteria: node.nodes.map((n) => toCriterion(resource, n, element)) };
    case 'not':
      return { kind: 'not', criterion: toCriterion(resource, node.node, element) };
    case 'valuePath': {
      if (element) throw invalid('A filter in brackets cannot hold another one.');
      const target = resolve(resource, node.path);
      if (target.kind !== 'multi') throw invalid(`"${describe(node.path)}" is not multi-valued; brackets do not apply.`);
      return {
        kind: 'any',
        collection: target.collection,
        where: toCriterion(resource, node.filter, (path) => {
          if (path.uri || path.sub) throw invalid('Inside brackets name sub-attributes only.');
          const scalar = target.field(path.name);
          if (!scalar) throw invalid(`Unknown attribute "${describe(node.path)}.${path.name}" in filter.`);
          return { kind: 'scalar', ...scalar };
        }),
      };
    }
  }
}

/** An ISO 8601 date and time (xsd:dateTime, RFC 7643 §2.3.5; the time may be left out) of a real day: what PostgreSQL's timestamptz reads alike. */
const DATE_TIME = /^(\d{4})-(\d{2})-(\d{2})(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?)?(?:Z|[+-](?:0\d|1[0-5]):[0-5]\d)?$/i;

function isDateTime(text: string): boolean {
  const match = DATE_TIME.exec(text);
  if (!match || Number.isNaN(Date.parse(text.replace(' ', 'T')))) return false;
  const [year, month, day] = [Number(match[1]), Number(match[2]), Number(match[3])];
  // PostgreSQL counts no year 0, and offsets up to 15:59.
  if (year === 0) return false;
  // setUTCFullYear, not Date.UTC, which reads the years 0 to 99 as 1900 to 1999.
  const date = new Date(0);
  date.setUTCFullYear(year, month - 1, day);
  return date.getUTCFullYear() === year && date.getUTCMonth() === month - 1 && date.getUTCDate() === day;
}

/** The search criteria of a filter over Users or Groups. */
export function filterCriteria(resource: ResourceName, node: FilterNode): Criterion {
  return toCriterion(resource, node);
}

export type UserLookup = ColumnLookup<'user_name' | 'external_id'>;
export type GroupLookup = ColumnLookup<'display_name' | 'external_id'>;

const LOOKUP_COLUMNS = {
  User: new Map<Target | undefined, UserLookup['column']>([
    [USER_COLUMNS.username, 'user_name'],
    [USER_COLUMNS.externalid, 'external_id'],
  ]),
  Group: new Map<Target | undefined, GroupLookup['column']>([
    [GROUP_COLUMNS.displayname, 'display_name'],
    [GROUP_COLUMNS.externalid, 'external_id'],
  ]),
};

/**
 * Entra's lookups (userName or externalId of Users, displayName or externalId
 * of Groups, eq a string) as a search of the column that holds them: the same
 * condition the criteria make of the filter, for a statement of its own (a
 * fixed, prepared text).
 */
export function columnLookup(resource: 'User', node: FilterNode): UserLookup | undefined;
export function columnLookup(resource: 'Group', node: FilterNode): GroupLookup | undefined;
export function columnLookup(resource: ResourceName, node: FilterNode): UserLookup | GroupLookup | undefined {
  if (node.kind !== 'compare' || node.op !== 'eq' || typeof node.value !== 'string') return undefined;
  let target: Target;
  try {
    target = resolve(resource, node.path);
  } catch {
    return undefined;
  }
  if (target.kind !== 'scalar') return undefined;
  const column = LOOKUP_COLUMNS[resource].get(target);
  return column && { column, value: node.value, caseExact: target.caseExact };
}

/** What to sort by, for sortBy. Multi-valued attributes sort by their primary (or first) value. */
export function sortKey(resource: ResourceName, path: AttrPath): SortKey {
  let target: Target;
  try {
    target = resolve(resource, path);
  } catch {
    throw badRequest('invalidValue', `Cannot sort by unknown attribute "${describe(path)}".`);
  }
  if (target.kind === 'scalar') {
    if (target.type === 'complex') throw badRequest('invalidValue', `Cannot sort by complex attribute "${describe(path)}".`);
    return { kind: 'scalar', scalar: target };
  }
  if (target.collection.kind !== 'elements' || resource === 'Group') throw badRequest('invalidValue', `Cannot sort by "${describe(path)}".`);
  return { kind: 'elements', path: target.collection.path, sub: path.sub ?? 'value' };
}
