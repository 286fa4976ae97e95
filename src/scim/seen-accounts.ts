// The accounts this instance answered with or wrote lately, by tenant and id,
// as the base of the next PATCH of the same account. Entra looks a user up
// (or creates it) right before it changes it, so its usual change needs no
// read of its own: one statement instead of two. A remembered row is never an
// answer by itself: a change made from it is written only while the account
// still has the version it was remembered at (updateAccountAtVersion), and
// everything else reads the account again. Every write of a synced account
// moves its version, whichever instance or tool makes it.
import { LRUCache } from 'lru-cache';
import type { AccountResource } from '../db/accounts.js';

/**
 * How many accounts an instance remembers: the accounts of a few thousand
 * requests of a provisioning cycle, about 1.2 KB each (12 MB in all).
 * lru-cache (also a dependency of npm itself) keeps the most recently used
 * ones in O(1) per operation.
 */
export const SEEN_ACCOUNTS_MAX = 10_000;

/**
 * A remembered row is kept as one JSON text: a fraction of the memory of the
 * parsed row (its strings, dates and document objects), and every get hands
 * out a copy of its own, so nothing done to an answer can change the base of
 * a later PATCH.
 */
type SeenRow = Omit<AccountResource, 'created_at' | 'updated_at'> & { created_at: string; updated_at: string };

export class SeenAccounts {
  private readonly rows = new LRUCache<string, string>({ max: SEEN_ACCOUNTS_MAX });

  get(tenantId: string, id: string): AccountResource | undefined {
    const text = this.rows.get(`${tenantId}/${id}`);
    if (text === undefined) return undefined;
    const row = JSON.parse(text) as SeenRow;
    return { ...row, created_at: new Date(row.created_at), updated_at: new Date(row.updated_at) };
  }

  /** Remembers a row as read or written outside a transaction (never one that may still roll back). */
  remember<T extends AccountResource>(tenantId: string, row: T): T {
    const { id, external_id, user_name, active, scim, version, created_at, updated_at, role } = row;
    this.rows.set(`${tenantId}/${id}`, JSON.stringify({ id, external_id, user_name, active, scim, version, created_at, updated_at, role }));
    return row;
  }

  forget(tenantId: string, id: string): void {
    this.rows.delete(`${tenantId}/${id}`);
  }

  get size(): number {
    return this.rows.size;
  }
}
