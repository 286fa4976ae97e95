// SCIM requests (and of them, writes) per tenant and hour, and the other
// figures the status page reads beside tenantStatus: a tenant's memberships.
import { sql } from 'kysely';
import type { Db } from './database.js';

export interface RequestCount {
  tenantId: string;
  /** The start of the hour (UTC). */
  hour: Date;
  requests: number;
  failures: number;
  /** Of the requests, the SCIM writes (POST, PUT, PATCH, DELETE of users and groups) and those that failed. */
  writes: number;
  writeFailures: number;
}

/** Adds counts to what other instances (and earlier flushes) already stored. */
export async function addRequestCounts(db: Db, counts: readonly RequestCount[]): Promise<void> {
  if (counts.length === 0) return;
  await db
    .insertInto('request_counts')
    .values(
      counts.map((c) => ({ tenant_id: c.tenantId, hour: c.hour, requests: c.requests, failures: c.failures, writes: c.writes, write_failures: c.writeFailures })),
    )
    .onConflict((oc) =>
      oc.columns(['tenant_id', 'hour']).doUpdateSet({
        requests: sql<number>`request_counts.requests + excluded.requests`,
        failures: sql<number>`request_counts.failures + excluded.failures`,
        writes: sql<number>`request_counts.writes + excluded.writes`,
        write_failures: sql<number>`request_counts.write_failures + excluded.write_failures`,
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

/** Class memberships Entra made in one tenant (hand-added ones are the portal's). */
export async function countMemberships(db: Db, tenantId: string): Promise<number> {
  const row = await db
    .selectFrom('class_memberships')
    .select((eb) => eb.fn.countAll<string>().as('n'))
    .where('tenant_id', '=', tenantId)
    .where('synced', '=', true)
    .executeTakeFirstOrThrow();
  return Number(row.n);
}
