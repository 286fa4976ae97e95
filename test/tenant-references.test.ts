// Accounts and audit events name their tenant without a foreign key (migration
// 0024): what the keys kept still holds. A row the portal writes names a
// tenant that exists, an event of its own too, a tenant's rows go with it
// (by DELETE or TRUNCATE ... CASCADE),
// and a tenant delete neither leaves behind a write in flight nor lets one in
// after it.
import { randomUUID } from 'node:crypto';
import { sql } from 'kysely';
import t, { type Test } from 'tap';
import { recordAudit } from '../src/db/audit.js';
import type { Executor } from '../src/db/database.js';
import { ForeignKeyViolation } from '../src/db/errors.js';
import { runCli } from '../src/cli.js';
import { testApp, testEnv, type TestApp } from './helpers/app.js';
import { GROUP, client, entraUser } from './helpers/scim.js';

type Db = Awaited<ReturnType<typeof testApp>>['db'];

const count = async (db: Db, table: string, tenantId: string): Promise<number> =>
  (await sql<{ n: number }>`SELECT count(*)::int AS n FROM ${sql.table(table)} WHERE tenant_id = ${tenantId}::uuid`.execute(db)).rows[0]?.n ?? -1;

/** The error a statement failed with, or undefined. */
async function failure(run: () => Promise<unknown>): Promise<{ code?: string; constraint?: string } | undefined> {
  try {
    await run();
    return undefined;
  } catch (error) {
    return error as { code?: string; constraint?: string };
  }
}

/** Waits until a session of this database waits for a lock in a statement that starts with `statement` (other test files run beside this one). */
async function waitsOn(db: Db, statement: string): Promise<boolean> {
  const waiting = async () =>
    (
      await sql<{ n: number }>`SELECT count(*)::int AS n FROM pg_stat_activity
        WHERE datname = current_database() AND wait_event_type = 'Lock' AND ltrim(query) LIKE ${`${statement}%`}`.execute(db)
    ).rows[0]?.n ?? 0;
  for (let i = 0; i < 500 && (await waiting()) === 0; i++) await new Promise((resolve) => setTimeout(resolve, 20));
  return (await waiting()) > 0;
}

/** Runs `work` in a transaction that stays open until `release` is called; resolves once `work` is done. */
async function heldOpen(db: Db, work: (trx: Executor) => Promise<unknown>): Promise<{ release: () => void; committed: Promise<void> }> {
  let release = (): void => undefined;
  const held = new Promise<void>((resolve) => (release = resolve));
  let done = (): void => undefined;
  const workDone = new Promise<void>((resolve) => (done = resolve));
  const committed = db.transaction().execute(async (trx) => {
    await work(trx);
    done();
    await held;
  });
  await Promise.race([workDone, committed]);
  return { release, committed };
}

t.test("deleting a tenant deletes its accounts, their memberships and its audit events", async (t) => {
  const env = await testApp(t);
  const scim = client(env.app, env.headers);
  const user = await scim('POST', '/Users', entraUser(1));
  t.equal(user.statusCode, 201);
  const group = await scim('POST', '/Groups', { schemas: [GROUP], displayName: 'Class 7A', members: [{ value: user.json().id }] });
  t.equal(group.statusCode, 201);
  const tenant = env.tenant.id;
  t.ok((await count(env.db, 'audit_events', tenant)) >= 2, 'the writes were audited');
  t.equal(await count(env.db, 'class_memberships', tenant), 1);

  await sql`DELETE FROM tenants WHERE id = ${tenant}::uuid`.execute(env.db);
  for (const table of ['accounts', 'class_memberships', 'classes', 'audit_events', 'credentials']) {
    t.equal(await count(env.db, table, tenant), 0, `no ${table} rows are left`);
  }
});

/** Rows of a whole table, every tenant's. */
const rows = async (db: Db, table: string): Promise<number> => (await sql<{ n: number }>`SELECT count(*)::int AS n FROM ${sql.table(table)}`.execute(db)).rows[0]?.n ?? -1;

const TRUNCATED = ['tenants', 'accounts', 'audit_events', 'class_memberships', 'account_aliases', 'classes', 'credentials'];

/** Two tenants; one with synced accounts (one an alias of another), a member of a class, a manual account and audit events. */
async function schoolsToTruncate(t: Test): Promise<{ env: TestApp; io: { out: () => void; err: () => void; env: Record<string, string> } }> {
  const env = await testApp(t);
  const scim = client(env.app, env.headers);
  const kept = await scim('POST', '/Users', entraUser(1));
  const absorbed = await scim('POST', '/Users', entraUser(2));
  t.equal(kept.statusCode, 201);
  t.equal(absorbed.statusCode, 201);
  t.equal((await scim('POST', '/Groups', { schemas: [GROUP], displayName: 'Class 7A', members: [{ value: kept.json().id }] })).statusCode, 201);
  await sql`INSERT INTO accounts (tenant_id, managed_by, role, user_name) VALUES (${env.tenant.id}::uuid, 'manual', 'teacher', 'hand@school.example')`.execute(env.db);
  await sql`INSERT INTO account_aliases (tenant_id, alias_id, account_id) VALUES (${env.tenant.id}::uuid, ${absorbed.json().id}::uuid, ${kept.json().id}::uuid)`.execute(env.db);
  const io = { out: () => undefined, err: () => undefined, env: testEnv({ DATABASE_URL: env.database.url }) };
  t.equal(await runCli(['tenant', 'create', '--name', 'Other School'], io), 0, 'a second tenant');
  for (const table of TRUNCATED) t.ok((await rows(env.db, table)) > 0, `${table} has rows`);
  return { env, io };
}

const rowCounts = async (db: Db): Promise<number[]> => Promise.all(TRUNCATED.map((table) => rows(db, table)));

t.test('TRUNCATE tenants CASCADE empties accounts, their memberships and aliases, and audit events; the feed lists each account as purged', async (t) => {
  const { env, io } = await schoolsToTruncate(t);
  const before = await rowCounts(env.db);
  const plain = await failure(() => sql`TRUNCATE tenants`.execute(env.db));
  t.equal(plain?.code, '0A000', 'without CASCADE it is refused, as the other keys to tenants refuse it');
  const repeatable = await failure(() => env.db.transaction().setIsolationLevel('repeatable read').execute((trx) => sql`TRUNCATE tenants CASCADE`.execute(trx)));
  t.equal(repeatable?.code, '55000', 'at REPEATABLE READ, whose deletes would miss rows committed meanwhile, it is refused');
  t.same(await rowCounts(env.db), before, 'and neither changed a row');

  const accountIds = (await sql<{ id: string }>`SELECT id FROM accounts ORDER BY id`.execute(env.db)).rows.map((r) => r.id);
  t.equal(accountIds.length, 3);
  await sql`TRUNCATE tenants CASCADE`.execute(env.db);
  const purged = await sql<{ id: string }>`SELECT object_id AS id FROM change_events WHERE object_type = 'account' AND action = 'purged' ORDER BY object_id`.execute(env.db);
  t.same(purged.rows.map((r) => r.id), accountIds, "the portal's change feed lists each account as purged");
  t.same(await rowCounts(env.db), TRUNCATED.map(() => 0), `no row is left in ${TRUNCATED.join(', ')}`);
  t.equal(await runCli(['tenant', 'create', '--name', 'New School'], io), 0, 'a tenant can be created again');
  t.equal(await rows(env.db, 'audit_events'), 1, 'with its own audit event');
});

t.test('a TRUNCATE that lists accounts, audit events and the change feed empties them all and leaves no event behind', async (t) => {
  const { env } = await schoolsToTruncate(t);
  await sql`TRUNCATE accounts, audit_events, change_events, tenants CASCADE`.execute(env.db);
  t.same(await rowCounts(env.db), TRUNCATED.map(() => 0), `no row is left in ${TRUNCATED.join(', ')}`);
  t.equal(await rows(env.db, 'change_events'), 0, 'nor in the change feed');
});

t.test('a manual account names a tenant that exists, as the foreign key kept it', async (t) => {
  const env = await testApp(t);
  const missing = randomUUID();
  const insert = (tenantId: string, userName: string) =>
    sql`INSERT INTO accounts (tenant_id, managed_by, role, user_name, email) VALUES (${tenantId}::uuid, 'manual', 'student', ${userName}, ${userName})`.execute(env.db);
  const refused = await failure(() => insert(missing, 'nobody@school.example'));
  t.equal(refused?.code, '23503', 'a foreign key violation');
  t.equal(refused?.constraint, 'accounts_tenant_id_fkey', "named as the key was");
  t.equal(await count(env.db, 'accounts', missing), 0);

  await insert(env.tenant.id, 'teacher@school.example');
  t.equal(await count(env.db, 'accounts', env.tenant.id), 1, 'an existing tenant takes it');
  const moved = await failure(() => sql`UPDATE accounts SET tenant_id = ${missing}::uuid WHERE tenant_id = ${env.tenant.id}::uuid`.execute(env.db));
  t.equal(moved?.code, '23503', 'nor can an account move to a tenant that does not exist');
});

t.test('an audit event of its own needs its tenant', async (t) => {
  const env = await testApp(t);
  const missing = randomUUID();
  const event = { action: 'settings', objectType: 'tenant', outcome: 'success', details: {} } as const;
  const refused = await failure(() => recordAudit(env.db, { ...event, tenantId: missing }));
  t.ok(refused instanceof ForeignKeyViolation, 'refused');
  t.equal(refused?.code, '23503');
  t.equal(await count(env.db, 'audit_events', missing), 0, 'and not written');
  await recordAudit(env.db, { ...event, tenantId: env.tenant.id });
  t.equal(await count(env.db, 'audit_events', env.tenant.id), 1, 'an existing tenant takes it');
});

t.test("a tenant's id stays while it has accounts or audit events", async (t) => {
  const env = await testApp(t);
  const scim = client(env.app, env.headers);
  t.equal((await scim('POST', '/Users', entraUser(1))).statusCode, 201);
  const refused = await failure(() => sql`UPDATE tenants SET id = gen_random_uuid() WHERE id = ${env.tenant.id}::uuid`.execute(env.db));
  t.equal(refused?.code, '23503');
  t.equal(await count(env.db, 'accounts', env.tenant.id), 1, 'the tenant and its account are as they were');
});

const inFlight = {
  'an audit event of its own': async (trx: Executor, tenant: string) => {
    await recordAudit(trx, { tenantId: tenant, action: 'settings', objectType: 'tenant', outcome: 'success', details: {} });
  },
  "a portal's manual account": async (trx: Executor, tenant: string) => {
    await sql`INSERT INTO accounts (tenant_id, managed_by, role, user_name) VALUES (${tenant}::uuid, 'manual', 'teacher', 'hand@school.example')`.execute(trx);
  },
  "a SCIM write in the tenant's turn": async (trx: Executor, tenant: string) => {
    await sql`SELECT tenant_is_connected(${tenant}::uuid)`.execute(trx);
    await sql`INSERT INTO accounts (tenant_id, managed_by, user_name) VALUES (${tenant}::uuid, 'sync', 'synced@school.example')`.execute(trx);
  },
};

for (const [name, write] of Object.entries(inFlight)) {
  t.test(`a tenant delete waits for ${name} in flight and takes it along`, async (t) => {
    const env = await testApp(t);
    const tenant = env.tenant.id;
    const writing = await heldOpen(env.db, (trx) => write(trx, tenant));
    let deleted = false;
    const deleting = sql`DELETE FROM tenants WHERE id = ${tenant}::uuid`.execute(env.db).then(() => (deleted = true));
    t.ok(await waitsOn(env.db, 'DELETE FROM tenants'), 'the delete waits for the write in flight');
    t.notOk(deleted, 'and has not finished');
    writing.release();
    await writing.committed;
    await deleting;
    t.equal(await count(env.db, 'audit_events', tenant), 0, 'no audit event is left');
    t.equal(await count(env.db, 'accounts', tenant), 0, 'no account is left');
  });
}

t.test('a write that comes while a tenant is being deleted waits, then finds no tenant', async (t) => {
  const env = await testApp(t);
  const tenant = env.tenant.id;
  const deleting = await heldOpen(env.db, (trx) => sql`DELETE FROM tenants WHERE id = ${tenant}::uuid`.execute(trx));
  const event = failure(() => recordAudit(env.db, { tenantId: tenant, action: 'settings', objectType: 'tenant', outcome: 'success', details: {} }));
  const account = failure(() =>
    sql`INSERT INTO accounts (tenant_id, managed_by, role, user_name) VALUES (${tenant}::uuid, 'manual', 'teacher', 'late@school.example')`.execute(env.db),
  );
  t.ok(await waitsOn(env.db, 'INSERT INTO audit_events'), 'the audit event waits for the delete');
  t.ok(await waitsOn(env.db, 'INSERT INTO accounts'), "and so does the portal's account");
  deleting.release();
  await deleting.committed;
  t.equal((await event)?.code, '23503', 'then the event is refused: its tenant is gone');
  t.equal((await account)?.code, '23503', 'and so is the account');
  t.equal(await count(env.db, 'audit_events', tenant), 0, 'nothing is left of the tenant');
  t.equal(await count(env.db, 'accounts', tenant), 0);
});

t.test('a request that meets a tenant delete answers a conflict, not a server error', async (t) => {
  // testApp fails the test on any 5xx answer but 503.
  const env = await testApp(t);
  const out: string[] = [];
  const io = { out: (s: string) => out.push(s), err: (s: string) => out.push(s), env: testEnv({ DATABASE_URL: env.database.url }) };
  t.equal(await runCli(['admin-token', 'issue', '--json'], io), 0, 'an admin token');
  const { token } = JSON.parse(out.pop() ?? '{}') as { token: string };
  const tenant = env.tenant.id;
  const deleting = await heldOpen(env.db, (trx) => sql`DELETE FROM tenants WHERE id = ${tenant}::uuid`.execute(trx));
  const issuing = env.app.inject({
    method: 'POST',
    url: `/admin/tenants/${tenant}/tokens`,
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    payload: { label: 'Entra' },
  });
  t.ok(await waitsOn(env.db, 'insert into "credentials"'), 'the new credential waits for the delete');
  deleting.release();
  await deleting.committed;
  const answer = await issuing;
  t.equal(answer.statusCode, 409, 'then meets the tenant gone');
  t.match(answer.json().detail, /was deleted while it ran/);
  t.equal(await count(env.db, 'credentials', tenant), 0, 'and writes nothing');
});
