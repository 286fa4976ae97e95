// Accounts and audit events name their tenant without a foreign key (migration
// 0024): what the keys kept still holds. A row the portal writes names a
// tenant that exists, an event of its own too, a tenant's rows go with it,
// and a tenant delete neither leaves behind a write in flight nor lets one in
// after it.
import { randomUUID } from 'node:crypto';
import { sql } from 'kysely';
import t from 'tap';
import { recordAudit } from '../src/db/audit.js';
import { ForeignKeyViolation } from '../src/db/errors.js';
import { testApp } from './helpers/app.js';
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

/** Waits until PostgreSQL shows a lock of `table` not granted in this database (other test files run beside this one). */
async function waitsOn(db: Db, table: string): Promise<boolean> {
  const waiting = async () =>
    (
      await sql<{ n: number }>`SELECT count(*)::int AS n FROM pg_locks
        WHERE locktype = 'relation' AND NOT granted AND relation = ${table}::regclass
          AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`.execute(db)
    ).rows[0]?.n ?? 0;
  for (let i = 0; i < 500 && (await waiting()) === 0; i++) await new Promise((resolve) => setTimeout(resolve, 20));
  return (await waiting()) > 0;
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

t.test('a tenant delete waits for an audit event in flight and takes it along', async (t) => {
  const env = await testApp(t);
  const tenant = env.tenant.id;
  let release = (): void => undefined;
  const held = new Promise<void>((resolve) => (release = resolve));
  let written = (): void => undefined;
  const eventWritten = new Promise<void>((resolve) => (written = resolve));
  const inFlight = env.db.transaction().execute(async (trx) => {
    await recordAudit(trx, { tenantId: tenant, action: 'settings', objectType: 'tenant', outcome: 'success', details: {} });
    written();
    await held;
  });
  await eventWritten;
  let deleted = false;
  const deleting = sql`DELETE FROM tenants WHERE id = ${tenant}::uuid`.execute(env.db).then(() => (deleted = true));
  t.ok(await waitsOn(env.db, 'audit_events'), 'the delete waits for the write in flight');
  t.notOk(deleted, 'and has not deleted the tenant');
  release();
  await inFlight;
  await deleting;
  t.equal(await count(env.db, 'audit_events', tenant), 0, 'the event committed in flight went with its tenant');
});

t.test('a write that comes while a tenant is being deleted waits, then finds no tenant', async (t) => {
  const env = await testApp(t);
  const tenant = env.tenant.id;
  let release = (): void => undefined;
  const held = new Promise<void>((resolve) => (release = resolve));
  let done = (): void => undefined;
  const deletedInFlight = new Promise<void>((resolve) => (done = resolve));
  const deleting = env.db.transaction().execute(async (trx) => {
    await sql`DELETE FROM tenants WHERE id = ${tenant}::uuid`.execute(trx);
    done();
    await held;
  });
  await deletedInFlight;
  const event = failure(() => recordAudit(env.db, { tenantId: tenant, action: 'settings', objectType: 'tenant', outcome: 'success', details: {} }));
  t.ok(await waitsOn(env.db, 'audit_events'), 'the audit event waits for the delete');
  release();
  await deleting;
  t.equal((await event)?.code, '23503', 'then is refused: its tenant is gone');
  t.equal(await count(env.db, 'audit_events', tenant), 0, 'nothing is left of the tenant');
});
