// Sync health of a tenant, for the CLI, the admin API and the status pages:
// accounts by role and state, classes, failures and open conflicts.
import { sql } from 'kysely';
import type { Executor } from './database.js';

export interface TenantStatus {
  tenantId: string;
  name: string;
  connected: boolean;
  lastRequestAt: Date | null;
  accounts: { role: string; active: boolean; count: number }[];
  deletedAccounts: number;
  classes: number;
  failures24h: number;
  openConflicts24h: number;
  openConflicts: number;
}

/** Sync health of one tenant, for the CLI and the admin API. */
export async function tenantStatus(db: Executor, tenantId: string): Promise<TenantStatus | undefined> {
  const tenant = await db.selectFrom('tenants').selectAll().where('id', '=', tenantId).executeTakeFirst();
  if (!tenant) return undefined;
  const since = sql<Date>`now() - interval '24 hours'`;
  const [accounts, deleted, classes, failures, conflicts] = await Promise.all([
    db
      .selectFrom('accounts')
      .select(['role', 'active', (eb) => eb.fn.countAll<string>().as('n')])
      .where('tenant_id', '=', tenantId)
      .where('managed_by', '=', 'sync')
      .where('deleted_at', 'is', null)
      .groupBy(['role', 'active'])
      .orderBy('role')
      .orderBy('active', 'desc')
      .execute(),
    db
      .selectFrom('accounts')
      .select((eb) => eb.fn.countAll<string>().as('n'))
      .where('tenant_id', '=', tenantId)
      .where('deleted_at', 'is not', null)
      .executeTakeFirstOrThrow(),
    db
      .selectFrom('classes')
      .select((eb) => eb.fn.countAll<string>().as('n'))
      .where('tenant_id', '=', tenantId)
      .where('managed_by', '=', 'sync')
      .executeTakeFirstOrThrow(),
    db
      .selectFrom('audit_events')
      .select((eb) => eb.fn.countAll<string>().as('n'))
      .where('tenant_id', '=', tenantId)
      .where('outcome', '=', 'failure')
      .where('at', '>', since)
      .executeTakeFirstOrThrow(),
    db
      .selectFrom('sync_conflicts')
      .select([
        (eb) => eb.fn.countAll<string>().as('open'),
        (eb) => eb.fn.count<string>(sql`CASE WHEN at > now() - interval '24 hours' THEN 1 END`).as('recent'),
      ])
      .where('tenant_id', '=', tenantId)
      .where('resolved_at', 'is', null)
      .executeTakeFirstOrThrow(),
  ]);
  return {
    tenantId,
    name: tenant.name,
    connected: tenant.disconnected_at === null,
    lastRequestAt: tenant.last_request_at,
    accounts: accounts.map((r) => ({ role: r.role, active: r.active, count: Number(r.n) })),
    deletedAccounts: Number(deleted.n),
    classes: Number(classes.n),
    failures24h: Number(failures.n),
    openConflicts24h: Number(conflicts.recent),
    openConflicts: Number(conflicts.open),
  };
}
