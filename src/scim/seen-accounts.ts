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
 * requests of a provisioning cycle, about 10 MB. lru-cache (also a dependency
 * of npm itself) keeps the most recently used ones in O(1) per operation.
 */
export const SEEN_ACCOUNTS_MAX = 10_000;

/**
 * A remembered row keeps its document as JSON text: a third of the memory of
 * the parsed object, and every get hands out a copy of its own, so nothing
 * done to an answer can change the base of a later PATCH.
 */
interface Seen {
  row: Omit<AccountResource, 'scim'>;
  scim: string;
}

export class SeenAccounts {
  private readonly rows = new LRUCache<string, Seen>({ max: SEEN_ACCOUNTS_MAX });

  get(tenantId: string, id: string): AccountResource | undefined {
    const seen = this.rows.get(`${tenantId}/${id}`);
    return seen && { ...seen.row, scim: JSON.parse(seen.scim) as AccountResource['scim'] };
  }

  /** Remembers a row as read or written outside a transaction (never one that may still roll back). */
  remember<T extends AccountResource>(tenantId: string, row: T): T {
    const { id, external_id, user_name, active, scim, version, created_at, updated_at, role } = row;
    this.rows.set(`${tenantId}/${id}`, { row: { id, external_id, user_name, active, version, created_at, updated_at, role }, scim: JSON.stringify(scim) });
    return row;
  }

  forget(tenantId: string, id: string): void {
    this.rows.delete(`${tenantId}/${id}`);
  }

  get size(): number {
    return this.rows.size;
  }
}
