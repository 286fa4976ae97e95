// Sync health of tenants, for the CLI, the admin API, the status pages and
// the metrics: every tenant's overview in one statement (each figure read
// through its tenant-led index, so 300 tenants cost 300 short index scans,
// never a scan of the accounts), and one tenant's accounts by role and state.
import { sql, type Expression, type SqlBool } from 'kysely';
import { answersIn } from './audit.js';
import type { Executor } from './database.js';

/** Two clock hours of one figure: the hour now running and the one before it. */
export interface TwoHours {
  current: number;
  previous: number;
}

export interface TenantOverviewRow {
  tenantId: string;
  name: string;
  verifiedDomains: string[];
  connected: boolean;
  lastRequestAt: Date | null;
  createdAt: Date;
  /** SCIM writes, and failed ones, of the current and the previous clock hour. */
  writes: TwoHours;
  writeFailures: TwoHours;
  failures24h: number;
  openConflicts24h: number;
  openConflicts: number;
  /** Its Secret Tokens and OAuth clients: how many were ever issued, and how many work now (neither revoked nor expired). */
  credentials: { issued: number; working: number };
  /** It accepts the token Entra signs itself, which needs no credential of ours. */
  acceptsEntraToken: boolean;
}

export interface TenantStatus extends TenantOverviewRow {
  accounts: { role: string; active: boolean; count: number }[];
  deletedAccounts: number;
  classes: number;
}

const HOUR_MS = 3_600_000;

function overviewQuery(db: Executor, now: Date, where?: (tenant: Expression<string>) => Expression<SqlBool>) {
  const hour = new Date(Math.floor(now.getTime() / HOUR_MS) * HOUR_MS);
  const previousHour = new Date(hour.getTime() - HOUR_MS);
  const since = new Date(now.getTime() - 24 * HOUR_MS);
  let query = db
    .selectFrom('tenants as t')
    .leftJoinLateral(
      (eb) =>
        eb
          .selectFrom('request_counts as r')
          .select([
            sql<string>`coalesce(sum(r.writes) FILTER (WHERE r.hour = ${hour}), 0)`.as('writes_now'),
            sql<string>`coalesce(sum(r.writes) FILTER (WHERE r.hour = ${previousHour}), 0)`.as('writes_before'),
            sql<string>`coalesce(sum(r.write_failures) FILTER (WHERE r.hour = ${hour}), 0)`.as('failures_now'),
            sql<string>`coalesce(sum(r.write_failures) FILTER (WHERE r.hour = ${previousHour}), 0)`.as('failures_before'),
          ])
          .whereRef('r.tenant_id', '=', 't.id')
          .where('r.hour', '>=', previousHour)
          .as('w'),
      (join) => join.onTrue(),
    )
    .leftJoinLateral(
      (eb) =>
        eb
          .selectFrom('audit_events as a')
          .select((e) => e.fn.countAll<string>().as('n'))
          .whereRef('a.tenant_id', '=', 't.id')
          .where('a.at', '>', since)
          .where('a.outcome', '=', 'failure')
          .as('f'),
      (join) => join.onTrue(),
    )
    // An event that stands for several throttled answers counts each of them (audit_events_answers_idx finds them).
    .leftJoinLateral(
      (eb) =>
        eb
          .selectFrom('audit_events as x')
          .select(sql<string>`coalesce(sum(${answersIn('x.details')} - 1), 0)`.as('more'))
          .whereRef('x.tenant_id', '=', 't.id')
          .where('x.at', '>', since)
          .where('x.outcome', '=', 'failure')
          .where(sql<boolean>`x.details ? 'answers'`)
          .as('fa'),
      (join) => join.onTrue(),
    )
    .leftJoinLateral(
      (eb) =>
        eb
          .selectFrom('sync_conflicts as c')
          .select([(e) => e.fn.countAll<string>().as('open'), sql<string>`count(*) FILTER (WHERE c.last_seen_at > ${since})`.as('recent')])
          .whereRef('c.tenant_id', '=', 't.id')
          .where('c.resolved_at', 'is', null)
          .as('c'),
      (join) => join.onTrue(),
    )
    .leftJoinLateral(
      (eb) =>
        eb
          .selectFrom('credentials as k')
          .select([
            (e) => e.fn.countAll<string>().as('issued'),
            sql<string>`count(*) FILTER (WHERE k.revoked_at IS NULL AND (k.expires_at IS NULL OR k.expires_at > ${now}))`.as('working'),
          ])
          .whereRef('k.tenant_id', '=', 't.id')
          .as('k'),
      (join) => join.onTrue(),
    )
    .select([
      't.id',
      't.name',
      't.verified_domains',
      't.accept_entra_token',
      'k.issued',
      'k.working',
      't.disconnected_at',
      't.last_request_at',
      't.created_at',
      'w.writes_now',
      'w.writes_before',
      'w.failures_now',
      'w.failures_before',
      'f.n as failures',
      'fa.more as failures_more',
      'c.open',
      'c.recent',
    ]);
  if (where) query = query.where((eb) => where(eb.ref('t.id')));
  return query.orderBy('t.created_at').orderBy('t.id');
}

type OverviewSqlRow = Awaited<ReturnType<ReturnType<typeof overviewQuery>['execute']>>[number];

function toOverview(row: OverviewSqlRow): TenantOverviewRow {
  return {
    tenantId: row.id,
    name: row.name,
    verifiedDomains: row.verified_domains,
    connected: row.disconnected_at === null,
    lastRequestAt: row.last_request_at,
    createdAt: row.created_at,
    writes: { current: Number(row.writes_now ?? 0), previous: Number(row.writes_before ?? 0) },
    writeFailures: { current: Number(row.failures_now ?? 0), previous: Number(row.failures_before ?? 0) },
    failures24h: Number(row.failures ?? 0) + Number(row.failures_more ?? 0),
    openConflicts24h: Number(row.recent ?? 0),
    openConflicts: Number(row.open ?? 0),
    credentials: { issued: Number(row.issued ?? 0), working: Number(row.working ?? 0) },
    acceptsEntraToken: row.accept_entra_token,
  };
}

/** Every tenant's overview, oldest tenant first; one statement however many tenants there are. */
export async function listTenantOverview(db: Executor, now: Date = new Date()): Promise<TenantOverviewRow[]> {
  return (await overviewQuery(db, now).execute()).map(toOverview);
}

/** One tenant's overview and its synced accounts by role and state, classes and deleted accounts. */
export async function tenantStatus(db: Executor, tenantId: string, now: Date = new Date()): Promise<TenantStatus | undefined> {
  const [overview, accounts, deleted, classes] = await Promise.all([
    overviewQuery(db, now, (id) => sql<SqlBool>`${id} = ${tenantId}`).executeTakeFirst(),
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
  ]);
  if (!overview) return undefined;
  return {
    ...toOverview(overview),
    accounts: accounts.map((r) => ({ role: r.role, active: r.active, count: Number(r.n) })),
    deletedAccounts: Number(deleted.n),
    classes: Number(classes.n),
  };
}
