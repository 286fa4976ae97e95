// SCIM requests per tenant and hour, and the other figures the status page
// reads beside tenantStatus: memberships per tenant.
import { sql } from 'kysely';
import type { Db } from './database.js';

export interface RequestCount {
  tenantId: string;
  /** The start of the hour (UTC). */
  hour: Date;
  requests: number;
  failures: number;
}

/** Adds counts to what other instances (and earlier flushes) already stored. */
export async function addRequestCounts(db: Db, counts: readonly RequestCount[]): Promise<void> {
  if (counts.length === 0) return;
  await db
    .insertInto('request_counts')
    .values(counts.map((c) => ({ tenant_id: c.tenantId, hour: c.hour, requests: c.requests, failures: c.failures })))
    .onConflict((oc) =>
      oc.columns(['tenant_id', 'hour']).doUpdateSet({
        requests: sql<number>`request_counts.requests + excluded.requests`,
        failures: sql<number>`request_counts.failures + excluded.failures`,
      }),
    )
    .execute();
}

export interface HourlyRequests {
  hour: Date;
  requests: number;
  failures: number;
}

/** Requests per hour since the given hour, for one tenant or (no tenant) all of them; hours without requests are left out. */
export async function listRequestsPerHour(db: Db, since: Date, tenantId?: string): Promise<HourlyRequests[]> {
  let query = db
    .selectFrom('request_counts')
    .select(['hour', (eb) => eb.fn.sum<string>('requests').as('requests'), (eb) => eb.fn.sum<string>('failures').as('failures')])
    .where('hour', '>=', since);
  if (tenantId !== undefined) query = query.where('tenant_id', '=', tenantId);
  const rows = await query.groupBy('hour').orderBy('hour').execute();
  return rows.map((r) => ({ hour: r.hour, requests: Number(r.requests), failures: Number(r.failures) }));
}

/** Class memberships Entra made, per tenant (hand-added ones are the portal's). */
export async function countMembershipsByTenant(db: Db): Promise<Map<string, number>> {
  const rows = await db
    .selectFrom('class_memberships')
    .select(['tenant_id', (eb) => eb.fn.countAll<string>().as('n')])
    .where('synced', '=', true)
    .groupBy('tenant_id')
    .execute();
  return new Map(rows.map((r) => [r.tenant_id, Number(r.n)]));
}
