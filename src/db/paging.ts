// A page of a filtered list and the exact total in one round trip: the page
// query carries count(*) over () so Entra's lookups (one filter, one page)
// cost a single query. Only an empty page past the first, or count=0, needs a
// separate count.
import type { Compilable, Kysely } from 'kysely';
import { preparedComment, type Database, type PlannedTable } from './database.js';

/** Runs a page query, as a prepared statement on these tables when its text is one of a few fixed shapes (see PREPARED). */
export async function executePage<R>(db: Kysely<Database>, query: Compilable<R>, preparedOnTables: PlannedTable[] | undefined): Promise<R[]> {
  const compiled = query.compile();
  if (!preparedOnTables) return (await db.executeQuery(compiled)).rows;
  return (await db.executeQuery<R>({ ...compiled, sql: `${preparedComment(preparedOnTables)} ${compiled.sql}` })).rows;
}

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
    const first = found[0];
    if (first) return { rows: found.map(({ total_count: _total, ...row }) => row as unknown as R), total: Number(first.total_count) };
    if (offset === 0) return { rows: [], total: 0 };
  }
  return { rows: [], total: await count() };
}
