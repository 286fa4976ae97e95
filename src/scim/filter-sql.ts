// Translates a parsed SCIM filter into one SQL condition over accounts (a) or
// classes (c): promoted columns where we have them (indexed, case-folded with
// lower()), the stored SCIM document (jsonb) for every other attribute, and
// EXISTS over array elements or memberships for multi-valued attributes.
// Nothing is ever filtered in memory.
import { sql, type RawBuilder } from 'kysely';
import type SCIMMY from 'scimmy';
import { badRequest, type ScimError } from '../errors.js';
import type { ColumnLookup } from '../db/paging.js';
import type { AttrPath, CompareOp, FilterNode, FilterValue } from './filter.js';
import { resolveAttribute } from './schema-index.js';
import type { ResourceName } from './schemas.js';

type Attribute = SCIMMY.Types.Attribute;
type Sql = RawBuilder<unknown>;
export type Condition = RawBuilder<boolean>;

type ValueType = 'string' | 'boolean' | 'dateTime' | 'decimal' | 'integer' | 'reference' | 'binary' | 'complex';

/** A single value the filter can compare: a column, or a jsonb node. */
interface Scalar {
  kind: 'scalar';
  /** SQL text of the value (column, or jsonb ->> text). */
  text: Sql;
  /** The jsonb node when the value lives in the document (for typed comparisons). */
  json?: Sql;
  type: ValueType;
  caseExact: boolean;
}

/** A multi-valued complex attribute: compared through EXISTS over its elements. */
interface Multi {
  kind: 'multi';
  exists: (condition: (element: (sub: string) => Scalar | undefined) => Condition) => Condition;
  attribute: Attribute | undefined;
}

type Target = Scalar | Multi;

const invalid = (detail: string): ScimError => badRequest('invalidFilter', detail);

function describe(path: AttrPath): string {
  return `${path.uri ? `${path.uri}:` : ''}${path.name}${path.sub ? `.${path.sub}` : ''}`;
}

function jsonScalar(json: Sql, attribute: Attribute): Scalar {
  return {
    kind: 'scalar',
    text: sql`(${json} #>> '{}')`,
    json,
    type: attribute.type,
    caseExact: Boolean(attribute.config.caseExact),
  };
}

function column(text: Sql, type: ValueType, caseExact: boolean): Scalar {
  return { kind: 'scalar', text, type, caseExact };
}

function jsonElements(array: Sql, attribute: Attribute): Multi {
  return {
    kind: 'multi',
    attribute,
    exists: (condition) => {
      const element = (sub: string): Scalar | undefined => {
        const found = attribute.subAttributes?.find((s) => s.name.toLowerCase() === sub.toLowerCase());
        return found ? jsonScalar(sql`e.value -> ${found.name}`, found) : undefined;
      };
      return sql<boolean>`EXISTS (SELECT 1 FROM jsonb_array_elements(CASE WHEN jsonb_typeof(${array}) = 'array' THEN ${array} ELSE '[]'::jsonb END) AS e(value) WHERE ${condition(element)})`;
    },
  };
}

// Columns promoted out of the document, by canonical path.
const USER_COLUMNS: Record<string, Scalar> = {
  id: column(sql`a.id::text`, 'string', true),
  username: column(sql`a.user_name`, 'string', false),
  externalid: column(sql`a.external_id`, 'string', true),
  displayname: column(sql`a.display_name`, 'string', false),
  active: column(sql`a.active`, 'boolean', false),
  'name.givenname': column(sql`a.given_name`, 'string', false),
  'name.familyname': column(sql`a.family_name`, 'string', false),
  'meta.created': column(sql`a.created_at`, 'dateTime', false),
  'meta.lastmodified': column(sql`a.updated_at`, 'dateTime', false),
  'meta.resourcetype': column(sql`'User'::text`, 'string', true),
};

const GROUP_COLUMNS: Record<string, Scalar> = {
  id: column(sql`c.id::text`, 'string', true),
  displayname: column(sql`c.display_name`, 'string', false),
  externalid: column(sql`c.external_id`, 'string', true),
  'meta.created': column(sql`c.created_at`, 'dateTime', false),
  'meta.lastmodified': column(sql`c.updated_at`, 'dateTime', false),
  'meta.resourcetype': column(sql`'Group'::text`, 'string', true),
};

const MEMBER_FIELDS: Record<string, Scalar> = {
  value: column(sql`m.account_id::text`, 'string', true),
  display: column(sql`u.display_name`, 'string', false),
  type: column(sql`'User'::text`, 'string', false),
};

const members: Multi = {
  kind: 'multi',
  attribute: undefined,
  exists: (condition) =>
    sql<boolean>`EXISTS (SELECT 1 FROM class_memberships m JOIN accounts u ON u.tenant_id = m.tenant_id AND u.id = m.account_id
      WHERE m.tenant_id = c.tenant_id AND m.class_id = c.id AND m.synced AND ${condition((sub) => MEMBER_FIELDS[sub.toLowerCase()])})`,
};

/** Resolves a filter attribute to SQL, or fails with invalidFilter. */
function resolve(resource: ResourceName, path: AttrPath): Target {
  const key = `${path.name}${path.sub ? `.${path.sub}` : ''}`.toLowerCase();
  const core = !path.uri || /^urn:ietf:params:scim:schemas:core:2\.0:(user|group)$/i.test(path.uri);
  const columns = resource === 'User' ? USER_COLUMNS : GROUP_COLUMNS;
  if (core) {
    const promoted = columns[key];
    if (promoted) return promoted;
    if (resource === 'Group' && path.name.toLowerCase() === 'members') {
      if (!path.sub) return members;
      const field = MEMBER_FIELDS[path.sub.toLowerCase()];
      if (!field) throw invalid(`Unknown attribute "${describe(path)}" in filter.`);
      return { ...members, exists: (condition) => members.exists(() => condition(() => field)) };
    }
    if (path.name.toLowerCase() === 'meta') throw invalid(`Unknown attribute "${describe(path)}" in filter.`);
  }
  const found = resolveAttribute(resource, path);
  if (!found) throw invalid(`Unknown attribute "${describe(path)}" in filter.`);
  const document = resource === 'User' ? sql`a.scim` : sql`c.scim`;
  const base = found.extension ? sql`${document} -> ${found.extension.id}` : document;
  const node = sql`${base} -> ${found.attribute.name}`;
  const attribute = found.attribute;

  if (attribute.config.multiValued) {
    if (attribute.type !== 'complex') {
      // A multi-valued simple attribute: elements are the values themselves.
      return {
        kind: 'multi',
        attribute,
        exists: (condition) =>
          sql<boolean>`EXISTS (SELECT 1 FROM jsonb_array_elements(CASE WHEN jsonb_typeof(${node}) = 'array' THEN ${node} ELSE '[]'::jsonb END) AS e(value) WHERE ${condition(() => jsonScalar(sql`e.value`, attribute))})`,
      };
    }
    const multi = jsonElements(node, attribute);
    if (!path.sub) return multi;
    const sub = path.sub;
    if (!attribute.subAttributes?.some((s) => s.name.toLowerCase() === sub.toLowerCase())) {
      throw invalid(`Unknown attribute "${describe(path)}" in filter.`);
    }
    return { ...multi, exists: (condition) => multi.exists((element) => condition(() => element(sub))) };
  }
  if (path.sub) {
    const sub = attribute.subAttributes?.find((s) => s.name.toLowerCase() === path.sub?.toLowerCase());
    if (!sub) throw invalid(`Unknown attribute "${describe(path)}" in filter.`);
    return jsonScalar(sql`${node} -> ${sub.name}`, sub);
  }
  return jsonScalar(node, attribute);
}

function likeEscape(value: string): string {
  return value.replace(/[\\%_]/g, (c) => `\\${c}`);
}

function compareScalar(target: Scalar, op: CompareOp, value: FilterValue, label: string): Condition {
  if (value === null) {
    if (op === 'eq') return sql<boolean>`(${target.text} IS NULL)`;
    if (op === 'ne') return sql<boolean>`(${target.text} IS NOT NULL)`;
    throw invalid(`"${op}" cannot compare ${label} with null.`);
  }
  switch (target.type) {
    case 'boolean': {
      const bool = typeof value === 'string' && /^(true|false)$/i.test(value) ? value.toLowerCase() === 'true' : value;
      if (typeof bool !== 'boolean') throw invalid(`${label} is a boolean; compare it with true or false.`);
      if (op !== 'eq' && op !== 'ne') throw invalid(`${label} is a boolean; only eq and ne apply.`);
      const actual = target.json ? sql`${target.json}` : target.text;
      const expected = target.json ? sql`to_jsonb(${bool}::boolean)` : sql`${bool}::boolean`;
      return op === 'eq'
        ? sql<boolean>`(${actual} IS NOT DISTINCT FROM ${expected})`
        : sql<boolean>`(${actual} IS DISTINCT FROM ${expected})`;
    }
    case 'dateTime': {
      if (typeof value !== 'string' || Number.isNaN(Date.parse(value))) {
        throw invalid(`${label} is a date and time; compare it with a quoted ISO 8601 value.`);
      }
      const actual = target.json ? sql`(${target.text})::timestamptz` : target.text;
      return ordered(actual, op, sql`${value}::timestamptz`, label);
    }
    case 'integer':
    case 'decimal': {
      if (typeof value !== 'number') throw invalid(`${label} is a number; compare it with a number.`);
      const actual = target.json
        ? sql`(CASE WHEN jsonb_typeof(${target.json}) = 'number' THEN (${target.json})::numeric END)`
        : target.text;
      return ordered(actual, op, sql`${value}::numeric`, label);
    }
    case 'complex':
      throw invalid(`${label} is complex; compare one of its sub-attributes.`);
    case 'string':
    case 'reference':
    case 'binary': {
      if (typeof value !== 'string') throw invalid(`${label} is a string; compare it with a quoted value.`);
      const fold = !target.caseExact;
      const actual = fold ? sql`lower(${target.text})` : target.text;
      const expected = fold ? sql`lower(${value})` : sql`${value}`;
      switch (op) {
        case 'co':
          return sql<boolean>`(${actual} LIKE ${`%${likeEscape(fold ? value.toLowerCase() : value)}%`})`;
        case 'sw':
          return sql<boolean>`(${actual} LIKE ${`${likeEscape(fold ? value.toLowerCase() : value)}%`})`;
        case 'ew':
          return sql<boolean>`(${actual} LIKE ${`%${likeEscape(fold ? value.toLowerCase() : value)}`})`;
        default:
          return ordered(actual, op, expected, label);
      }
    }
  }
}

/** eq, ne and the orderings; co, sw and ew are string-only and handled by the caller. */
function ordered(actual: Sql, op: CompareOp, expected: Sql, label: string): Condition {
  switch (op) {
    case 'eq':
      return sql<boolean>`(${actual} = ${expected})`;
    case 'ne':
      return sql<boolean>`(${actual} IS DISTINCT FROM ${expected})`;
    case 'gt':
      return sql<boolean>`(${actual} > ${expected})`;
    case 'ge':
      return sql<boolean>`(${actual} >= ${expected})`;
    case 'lt':
      return sql<boolean>`(${actual} < ${expected})`;
    case 'le':
      return sql<boolean>`(${actual} <= ${expected})`;
    default:
      throw invalid(`"${op}" does not apply to ${label}.`);
  }
}

function present(target: Target): Condition {
  if (target.kind === 'multi') return target.exists(() => sql<boolean>`true`);
  if (target.json) {
    return sql<boolean>`(${target.json} IS NOT NULL AND ${target.json} NOT IN ('null'::jsonb, '""'::jsonb, '[]'::jsonb, '{}'::jsonb))`;
  }
  return target.type === 'string' ? sql<boolean>`(${target.text} IS NOT NULL AND ${target.text} <> '')` : sql<boolean>`(${target.text} IS NOT NULL)`;
}

// Two-valued logic: a comparison on a missing value is false, so "not" matches
// it. Only "not" needs the COALESCE: under and/or, and in a WHERE, unknown
// already acts as false, and a bare comparison keeps its index usable.
const definite = (condition: Condition): Condition => sql<boolean>`COALESCE(${condition}, false)`;

/** The value of a `value eq "x"` condition (alone or in an and), for the e-mail prefilter. */
function valueEquals(node: FilterNode): string | undefined {
  if (node.kind === 'compare') {
    const { path, op, value } = node;
    return op === 'eq' && typeof value === 'string' && !path.uri && !path.sub && path.name.toLowerCase() === 'value' ? value : undefined;
  }
  return node.kind === 'and' ? node.nodes.map(valueEquals).find((v) => v !== undefined) : undefined;
}

/**
 * An indexed condition every account matching an e-mail value filter meets:
 * the link e-mail column holds the value, or the account has more than one
 * address (accounts_several_emails_idx). With a single address the column is
 * that address (fromScimUser), so nothing is lost.
 */
function emailPrefilter(resource: ResourceName, node: FilterNode): Condition | undefined {
  if (resource !== 'User') return undefined;
  const path = node.kind === 'compare' || node.kind === 'valuePath' ? node.path : undefined;
  if (!path || path.name.toLowerCase() !== 'emails' || (path.uri && !/^urn:ietf:params:scim:schemas:core:2\.0:user$/i.test(path.uri))) return undefined;
  let value: string | undefined;
  if (node.kind === 'compare' && (!path.sub || path.sub.toLowerCase() === 'value')) value = valueEquals({ ...node, path: { name: 'value' } });
  if (node.kind === 'valuePath' && !path.sub) value = valueEquals(node.filter);
  return value === undefined ? undefined : sql<boolean>`(lower(a.email) = lower(${value}) OR ((a.scim -> 'emails') -> 1) IS NOT NULL)`;
}

function compile(resource: ResourceName, node: FilterNode, element?: (path: AttrPath) => Target): Condition {
  const lookup = element ?? ((path: AttrPath) => resolve(resource, path));
  switch (node.kind) {
    case 'compare': {
      const target = lookup(node.path);
      const label = `"${describe(node.path)}"`;
      if (target.kind === 'multi') {
        // emails eq "x" compares each element's value; emails.value eq "x" any element.
        return target.exists((field) => {
          const value = target.attribute?.type === 'complex' || target.attribute === undefined ? field('value') : field('');
          if (!value) throw invalid(`${label} has no value to compare; name a sub-attribute.`);
          return compareScalar(value, node.op, node.value, label);
        });
      }
      return compareScalar(target, node.op, node.value, label);
    }
    case 'present':
      return present(lookup(node.path));
    case 'and':
      return sql<boolean>`(${sql.join(node.nodes.map((n) => compile(resource, n, element)), sql` AND `)})`;
    case 'or':
      return sql<boolean>`(${sql.join(node.nodes.map((n) => compile(resource, n, element)), sql` OR `)})`;
    case 'not':
      return sql<boolean>`(NOT ${definite(compile(resource, node.node, element))})`;
    case 'valuePath': {
      if (element) throw invalid('A filter in brackets cannot hold another one.');
      const target = resolve(resource, node.path);
      if (target.kind !== 'multi') throw invalid(`"${describe(node.path)}" is not multi-valued; brackets do not apply.`);
      return target.exists((field) =>
        compile(resource, node.filter, (path) => {
          if (path.uri || path.sub) throw invalid('Inside brackets name sub-attributes only.');
          const scalar = field(path.name);
          if (!scalar) throw invalid(`Unknown attribute "${describe(node.path)}.${path.name}" in filter.`);
          return scalar;
        }),
      );
    }
  }
}

export type UserLookup = ColumnLookup<'user_name' | 'external_id'>;
export type GroupLookup = ColumnLookup<'display_name' | 'external_id'>;

const LOOKUP_COLUMNS = {
  User: new Map<Scalar | undefined, UserLookup['column']>([
    [USER_COLUMNS.username, 'user_name'],
    [USER_COLUMNS.externalid, 'external_id'],
  ]),
  Group: new Map<Scalar | undefined, GroupLookup['column']>([
    [GROUP_COLUMNS.displayname, 'display_name'],
    [GROUP_COLUMNS.externalid, 'external_id'],
  ]),
};

/**
 * Entra's lookups (userName or externalId of Users, displayName or externalId
 * of Groups, eq a string) as a search of the column that holds them: the same
 * condition filterToSql makes of the filter, for a statement of its own (a
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

/** The SQL condition for a filter over Users (alias a) or Groups (alias c). */
export function filterToSql(resource: ResourceName, node: FilterNode): Condition {
  const condition = compile(resource, node);
  const prefilter = emailPrefilter(resource, node);
  return prefilter ? sql<boolean>`(${prefilter} AND ${condition})` : condition;
}

/** The SQL expression to sort by, for sortBy. Multi-valued attributes sort by their primary (or first) value. */
export function sortExpression(resource: ResourceName, path: AttrPath): Sql {
  let target: Target;
  try {
    target = resolve(resource, path);
  } catch {
    throw badRequest('invalidValue', `Cannot sort by unknown attribute "${describe(path)}".`);
  }
  if (target.kind === 'scalar') {
    if (target.type === 'complex') throw badRequest('invalidValue', `Cannot sort by complex attribute "${describe(path)}".`);
    return target.caseExact || target.type !== 'string' ? target.text : sql`lower(${target.text})`;
  }
  const document = resource === 'User' ? sql`a.scim` : sql`c.scim`;
  if (!target.attribute || resource === 'Group') throw badRequest('invalidValue', `Cannot sort by "${describe(path)}".`);
  const found = resolveAttribute(resource, path);
  const node = found?.extension ? sql`${document} -> ${found.extension.id} -> ${target.attribute.name}` : sql`${document} -> ${target.attribute.name}`;
  const sub = path.sub ?? 'value';
  return sql`(SELECT lower(e.value ->> ${sub}) FROM jsonb_array_elements(CASE WHEN jsonb_typeof(${node}) = 'array' THEN ${node} ELSE '[]'::jsonb END) AS e(value)
    ORDER BY (e.value ->> 'primary') = 'true' DESC NULLS LAST LIMIT 1)`;
}
