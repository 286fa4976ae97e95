// A page of a filtered list and the exact total in one round trip: the page
// query carries count(*) over () so Entra's lookups (one filter, one page)
// cost a single query. Only an empty page past the first, or count=0, needs a
// separate count.
import { sql, type RawBuilder } from 'kysely';
import { fixedStatement } from './database.js';

export interface Page<R> {
  rows: R[];
  total: number;
}

export async function readPage<R>(
  limit: number,
  offset: number,
  rows: () => Promise<(R & { total_count: string })[]>,
  count: () => Promise<number>,
): Promise<Page<R>> {
  if (limit > 0) {
    const found = await rows();
    if (found.length > 0 || offset === 0) return firstPage(found);
  }
  return { rows: [], total: await count() };
}

/** A first page (or any page that is not empty): its rows carry the total, and an empty first page means none at all. */
export function firstPage<R>(found: (R & { total_count: string })[]): Page<R> {
  const first = found[0];
  return first ? { rows: found.map(({ total_count: _total, ...row }) => row as unknown as R), total: Number(first.total_count) } : { rows: [], total: 0 };
}

/** A search for one value in one column. */
export interface ColumnLookup<C extends string> {
  column: C;
  value: string;
  /** Otherwise both sides are compared in lower case (lower(), as the column's index). */
  caseExact: boolean;
}

/** The condition of a one-column lookup, as filterToSql writes it: lower() on both sides unless the attribute is caseExact. */
export function lookupCondition(lookup: Omit<ColumnLookup<string>, 'value'>, value: unknown): RawBuilder<boolean> {
  return lookup.caseExact ? sql<boolean>`${sql.ref(lookup.column)} = ${value}::text` : sql<boolean>`lower(${sql.ref(lookup.column)}) = lower(${value}::text)`;
}

/** The values of a lookup statement. */
export type LookupParams = { tenantId: string; value: string; limit: number };

/** A fixed statement (see fixedStatement) per column and case rule of a lookup, made at its first use. */
export function statementPerLookup<C extends string, R>(
  build: (lookup: Omit<ColumnLookup<C>, 'value'>, p: LookupParams) => RawBuilder<R>,
): (lookup: ColumnLookup<C>) => ReturnType<typeof fixedStatement<LookupParams, R>> {
  const statements = new Map<string, ReturnType<typeof fixedStatement<LookupParams, R>>>();
  return ({ column, caseExact }) => {
    const key = `${column} ${caseExact}`;
    let statement = statements.get(key);
    if (statement === undefined) {
      statement = fixedStatement<LookupParams, R>((p) => build({ column, caseExact }, p));
      statements.set(key, statement);
    }
    return statement;
  };
}
