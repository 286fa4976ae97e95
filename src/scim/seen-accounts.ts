// The accounts this instance answered with or wrote lately, by tenant and id,
// as the base of the next PATCH of the same account. Entra looks a user up
// (or creates it) right before it changes it, so its usual change needs no
// read of its own: one statement instead of two. A remembered row is never an
// answer by itself: a change made from it is written only while the account
// still has the version it was remembered at (the version guard of
// write-statements.ts updateAccount), and everything else reads the account
// again. Every write of a synced account moves its version, whichever
// instance or tool makes it.
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
 * Freezes a row and everything in it, so nothing done to an answer made from
 * it can change the base of a later PATCH: code that tried would throw
 * (ES modules are strict), not change it. Every consumer copies what it
 * changes (userAttributes, applySimplePatch, project). Dates are left as they
 * are: nothing calls their setters.
 */
function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null && !(value instanceof Date) && !Object.isFrozen(value)) {
    for (const inner of Object.values(value)) deepFreeze(inner);
    Object.freeze(value);
  }
  return value;
}

export class SeenAccounts {
  // The rows themselves, frozen: about 8% more heap than their JSON text (V8
  // shares the keys and short strings of parsed documents), and no parse on
  // each PATCH.
  private readonly rows = new LRUCache<string, AccountResource>({ max: SEEN_ACCOUNTS_MAX });

  get(tenantId: string, id: string): AccountResource | undefined {
    return this.rows.get(`${tenantId}/${id}`);
  }

  /**
   * Remembers a row as read or written outside a transaction (never one that
   * may still roll back). What is kept is a copy of the row's fields, frozen
   * with the document it shares with `row`: the caller makes the answer from
   * row by copying, as every reader of a remembered row does.
   */
  remember<T extends AccountResource>(tenantId: string, row: T): T {
    const { id, external_id, user_name, active, scim, version, created_at, updated_at, role } = row;
    this.rows.set(`${tenantId}/${id}`, deepFreeze({ id, external_id, user_name, active, scim, version, created_at, updated_at, role }));
    return row;
  }

  forget(tenantId: string, id: string): void {
    this.rows.delete(`${tenantId}/${id}`);
  }

  get size(): number {
    return this.rows.size;
  }
}
