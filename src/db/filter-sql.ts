// Search criteria into SQL: one condition over a repository's table
// (accounts or classes, under the alias the repository gives), from promoted
// columns where we have them (indexed, case-folded with lower()), the stored
// SCIM document (jsonb) for every other attribute, and EXISTS over array
// elements or memberships for multi-valued attributes. Nothing is filtered in
// memory. The SCIM layer resolves a filter into these criteria (names,
// types, and which comparisons apply); here they are only rendered.
import { sql, type RawBuilder } from 'kysely';

type Sql = RawBuilder<unknown>;
export type Condition = RawBuilder<boolean>;

export type CompareOp = 'eq' | 'ne' | 'co' | 'sw' | 'ew' | 'gt' | 'ge' | 'lt' | 'le';
export type ValueType = 'string' | 'boolean' | 'dateTime' | 'number' | 'complex';

/** Where a compared value lives. */
export type ValueRef =
  /** A column of the row (promoted out of the document). */
  | { in: 'row'; column: string; cast?: 'text' }
  /** A constant of the table (meta.resourceType). */
  | { in: 'constant'; value: string }
  /** A node of the row's stored SCIM document. */
  | { in: 'document'; path: readonly string[] }
  /** A node of the element being tested (path [] is the element itself). */
  | { in: 'element'; path: readonly string[] }
  /** A field of the class member being tested. */
  | { in: 'member'; field: 'value' | 'display' | 'type' };

export interface Scalar {
  ref: ValueRef;
  type: ValueType;
  caseExact: boolean;
}

/** What `any` tests each of: the elements of a multi-valued attribute of the document, or a class's synced members. */
export type Collection = { kind: 'elements'; path: readonly string[] } | { kind: 'members' };

export type Criterion =
  | { kind: 'compare'; scalar: Scalar; op: CompareOp; value: string | number | boolean | null }
  | { kind: 'present'; scalar: Scalar }
  | { kind: 'any'; collection: Collection; where: Criterion | undefined }
  | { kind: 'and' | 'or'; criteria: readonly Criterion[] }
  | { kind: 'not'; criterion: Criterion };

/** What to sort by: a value of the row, or the primary (else first) element of a multi-valued attribute. */
export type SortKey = { kind: 'scalar'; scalar: Scalar } | { kind: 'elements'; path: readonly string[]; sub: string };

/** The table a repository searches: its alias in the query, and whether its rows have members (classes). */
export interface SearchTable {
  alias: 'a' | 'c';
  /** Columns whose value as SCIM shows it is an expression of the row (a class's lastModified), not the column. */
  shown?: Readonly<Record<string, Sql>>;
}

function documentNode(table: SearchTable, path: readonly string[]): Sql {
  return path.reduce<Sql>((node, key) => sql`${node} -> ${key}`, sql.ref(`${table.alias}.scim`));
}

function elementNode(path: readonly string[]): Sql {
  return path.reduce<Sql>((node, key) => sql`${node} -> ${key}`, sql`e.value`);
}

const MEMBER_FIELDS = { value: sql`m.account_id::text`, display: sql`u.display_name`, type: sql`'User'::text` } as const;

/** A value as text, and as its jsonb node where it has one (for typed comparisons). */
function value(table: SearchTable, ref: ValueRef): { text: Sql; json?: Sql } {
  switch (ref.in) {
    case 'row': {
      const column = table.shown?.[ref.column] ?? sql.ref(`${table.alias}.${ref.column}`);
      return { text: ref.cast ? sql`${column}::text` : column };
    }
    case 'constant':
      return { text: sql`${ref.value}::text` };
    case 'document': {
      const json = documentNode(table, ref.path);
      return { text: sql`(${json} #>> '{}')`, json };
    }
    case 'element': {
      const json = elementNode(ref.path);
      return { text: sql`(${json} #>> '{}')`, json };
    }
    case 'member':
      return { text: MEMBER_FIELDS[ref.field] };
  }
}

function likeEscape(text: string): string {
  return text.replace(/[\\%_]/g, (c) => `\\${c}`);
}

/** eq, ne and the orderings. */
function ordered(actual: Sql, op: CompareOp, expected: Sql): Condition {
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
    case 'co':
    case 'sw':
    case 'ew':
      throw new Error(`${op} compares strings only`);
  }
}

function compare(table: SearchTable, scalar: Scalar, op: CompareOp, expected: string | number | boolean | null): Condition {
  const { text, json } = value(table, scalar.ref);
  if (expected === null) return op === 'eq' ? sql<boolean>`(${text} IS NULL)` : sql<boolean>`(${text} IS NOT NULL)`;
  switch (scalar.type) {
    case 'boolean': {
      const actual = json ?? text;
      const wanted = json ? sql`to_jsonb(${expected}::boolean)` : sql`${expected}::boolean`;
      return op === 'eq' ? sql<boolean>`(${actual} IS NOT DISTINCT FROM ${wanted})` : sql<boolean>`(${actual} IS DISTINCT FROM ${wanted})`;
    }
    case 'dateTime':
      // A row's times keep microseconds, and SCIM shows them to the
      // millisecond: a client compares with what it was shown.
      return ordered(json ? sql`(${text})::timestamptz` : sql`date_trunc('milliseconds', ${text})`, op, sql`${expected}::timestamptz`);
    case 'number':
      return ordered(json ? sql`(CASE WHEN jsonb_typeof(${json}) = 'number' THEN (${json})::numeric END)` : text, op, sql`${expected}::numeric`);
    case 'complex':
      throw new Error('a complex value is not compared');
    case 'string': {
      const wanted = String(expected);
      const fold = !scalar.caseExact;
      const actual = fold ? sql`lower(${text})` : text;
      // Both sides folded by lower(), which in a database whose ctype is C
      // folds ASCII letters only; a pattern folded here would miss there.
      const like = (pattern: string) => (fold ? sql`lower(${pattern})` : sql`${pattern}`);
      switch (op) {
        case 'co':
          return sql<boolean>`(${actual} LIKE ${like(`%${likeEscape(wanted)}%`)})`;
        case 'sw':
          return sql<boolean>`(${actual} LIKE ${like(`${likeEscape(wanted)}%`)})`;
        case 'ew':
          return sql<boolean>`(${actual} LIKE ${like(`%${likeEscape(wanted)}`)})`;
        default:
          return ordered(actual, op, fold ? sql`lower(${wanted})` : sql`${wanted}`);
      }
    }
  }
}

function present(table: SearchTable, scalar: Scalar): Condition {
  const { text, json } = value(table, scalar.ref);
  if (json) return sql<boolean>`(${json} IS NOT NULL AND ${json} NOT IN ('null'::jsonb, '""'::jsonb, '[]'::jsonb, '{}'::jsonb))`;
  return scalar.type === 'string' ? sql<boolean>`(${text} IS NOT NULL AND ${text} <> '')` : sql<boolean>`(${text} IS NOT NULL)`;
}

function any(table: SearchTable, collection: Collection, where: Condition): Condition {
  if (collection.kind === 'members') {
    const row = table.alias;
    return sql<boolean>`EXISTS (SELECT 1 FROM class_memberships m JOIN accounts u ON u.tenant_id = m.tenant_id AND u.id = m.account_id
      WHERE m.tenant_id = ${sql.ref(`${row}.tenant_id`)} AND m.class_id = ${sql.ref(`${row}.id`)} AND m.synced AND ${where})`;
  }
  const array = documentNode(table, collection.path);
  return sql<boolean>`EXISTS (SELECT 1 FROM jsonb_array_elements(CASE WHEN jsonb_typeof(${array}) = 'array' THEN ${array} ELSE '[]'::jsonb END) AS e(value) WHERE ${where})`;
}

// Two-valued logic: a comparison on a missing value is false, so "not" matches
// it. Only "not" needs the COALESCE: under and/or, and in a WHERE, unknown
// already acts as false, and a bare comparison keeps its index usable.
const definite = (condition: Condition): Condition => sql<boolean>`COALESCE(${condition}, false)`;

function render(table: SearchTable, criterion: Criterion): Condition {
  switch (criterion.kind) {
    case 'compare':
      return compare(table, criterion.scalar, criterion.op, criterion.value);
    case 'present':
      return present(table, criterion.scalar);
    case 'any':
      return any(table, criterion.collection, criterion.where ? render(table, criterion.where) : sql<boolean>`true`);
    case 'and':
      return sql<boolean>`(${sql.join(criterion.criteria.map((c) => render(table, c)), sql` AND `)})`;
    case 'or':
      return sql<boolean>`(${sql.join(criterion.criteria.map((c) => render(table, c)), sql` OR `)})`;
    case 'not':
      return sql<boolean>`(NOT ${definite(render(table, criterion.criterion))})`;
  }
}

/** The value of an element's `value eq "x"` (alone or in an and), for the e-mail prefilter. */
function elementValueEquals(criterion: Criterion | undefined): string | undefined {
  if (!criterion) return undefined;
  if (criterion.kind === 'compare') {
    const { ref } = criterion.scalar;
    const isValue = ref.in === 'element' && ref.path.length === 1 && ref.path[0] === 'value';
    return criterion.op === 'eq' && typeof criterion.value === 'string' && isValue ? criterion.value : undefined;
  }
  return criterion.kind === 'and' ? criterion.criteria.map(elementValueEquals).find((v) => v !== undefined) : undefined;
}

/**
 * An indexed condition every account matching an e-mail value criterion
 * meets: the link e-mail column holds the value, or the account has more
 * than one address (accounts_several_emails_idx). With a single address the
 * column is that address (the mapper makes it so), so nothing is lost.
 */
function emailPrefilter(table: SearchTable, criterion: Criterion): Condition | undefined {
  if (table.alias !== 'a' || criterion.kind !== 'any' || criterion.collection.kind !== 'elements') return undefined;
  const path = criterion.collection.path;
  if (path.length !== 1 || path[0] !== 'emails') return undefined;
  const wanted = elementValueEquals(criterion.where);
  return wanted === undefined ? undefined : sql<boolean>`(lower(a.email) = lower(${wanted}) OR a.several_emails)`;
}

/** The SQL condition of search criteria over the repository's table. */
export function criteriaToSql(table: SearchTable, criterion: Criterion): Condition {
  const condition = render(table, criterion);
  const prefilter = emailPrefilter(table, criterion);
  return prefilter ? sql<boolean>`(${prefilter} AND ${condition})` : condition;
}

/** The SQL expression of a sort key over the repository's table. */
export function sortToSql(table: SearchTable, key: SortKey): Sql {
  if (key.kind === 'scalar') {
    const { text } = value(table, key.scalar.ref);
    return key.scalar.caseExact || key.scalar.type !== 'string' ? text : sql`lower(${text})`;
  }
  const node = documentNode(table, key.path);
  return sql`(SELECT lower(e.value ->> ${key.sub}) FROM jsonb_array_elements(CASE WHEN jsonb_typeof(${node}) = 'array' THEN ${node} ELSE '[]'::jsonb END) AS e(value)
    ORDER BY (e.value ->> 'primary') = 'true' DESC NULLS LAST LIMIT 1)`;
}
