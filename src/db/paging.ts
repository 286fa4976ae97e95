// A page of a filtered list and the exact total in one round trip: the page
// query carries count(*) over () so Entra's lookups (one filter, one page)
// cost a single query. Only an empty page past the first, or count=0, needs a
// separate count.

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

/** The first page of a lookup: when it is empty there is nothing at all, so no count is needed. */
export function firstPage<R>(found: (R & { total_count: string })[]): Page<R> {
  const first = found[0];
  return first ? { rows: found.map(({ total_count: _total, ...row }) => row as unknown as R), total: Number(first.total_count) } : { rows: [], total: 0 };
}
