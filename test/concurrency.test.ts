// Concurrency and process faults on real server processes: parallel member
// PATCHes lose nothing, parallel creates of one userName make one account, two
// processes on one database behave as one, revocation reaches both, a SIGKILL
// mid-request leaves nothing half-written, and the logs of the whole run hold
// no secret and no request body.
import t, { type Test } from 'tap';
import { signingKeys } from '../src/auth/keys.js';
import { runCli } from '../src/cli.js';
import { loadConfig } from '../src/config.js';
import type { Db } from '../src/db/database.js';
import { TEST_SECRET, tenantWithToken, testEnv } from './helpers/app.js';
import { testDatabase } from './helpers/database.js';
import { startServerProcess, type ServerProcess } from './helpers/process.js';
import { GROUP, USER, entraUser, patch } from './helpers/scim.js';

interface Answer {
  status: number;
  body: Record<string, unknown>;
}

function sender(headers: Record<string, string>) {
  return async (base: string, method: string, path: string, body?: unknown): Promise<Answer> => {
    const res = await fetch(`${base}/scim/v2${path}`, {
      method,
      headers,
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    const text = await res.text();
    return { status: res.status, body: text === '' ? {} : (JSON.parse(text) as Record<string, unknown>) };
  };
}

async function setup(t: Test, processes: number, env: Record<string, string> = {}) {
  const database = await testDatabase(t);
  const config = loadConfig(testEnv());
  const keys = signingKeys(TEST_SECRET);
  const tenant = await tenantWithToken(database.db, config, keys);
  const servers: ServerProcess[] = [];
  for (let i = 0; i < processes; i++) {
    const server = await startServerProcess({ DATABASE_URL: database.url, ...env });
    t.teardown(() => server.stop());
    servers.push(server);
  }
  return { ...database, tenant, servers, urls: servers.map((s) => s.url), send: sender(tenant.headers) };
}

/** Runs the parallel write scenarios with requests spread over the given servers. */
async function parallelWrites(t: Test, urls: string[], db: Db, tenantId: string, send: ReturnType<typeof sender>) {
  const at = (i: number): string => urls[i % urls.length] ?? '';

  // One userName, twelve creates at once: one account, eleven 409 uniqueness.
  const same = await Promise.all(
    Array.from({ length: 12 }, (_, i) => send(at(i), 'POST', '/Users', entraUser(900, { externalId: undefined, displayName: `Try ${i}` }))),
  );
  t.same(same.map((a) => a.status).sort(), [201, ...Array<number>(11).fill(409)], 'one create wins');
  t.ok(same.filter((a) => a.status === 409).every((a) => a.body.scimType === 'uniqueness'));
  const rows = await db.selectFrom('accounts').select('id').where('tenant_id', '=', tenantId).where('user_name', 'ilike', 'pupil900@school.example').execute();
  t.equal(rows.length, 1, 'exactly one account row');

  // 200 users; a class starting with users 160..199.
  const ids: string[] = [];
  for (let start = 0; start < 200; start += 20) {
    const created = await Promise.all(Array.from({ length: 20 }, (_, k) => send(at(k), 'POST', '/Users', entraUser(start + k))));
    for (const c of created) {
      t.equal(c.status, 201);
      ids.push(String(c.body.id));
    }
  }
  const initial = ids.slice(160, 200);
  const group = await send(at(0), 'POST', '/Groups', {
    schemas: [GROUP],
    displayName: 'Class 7B',
    externalId: 'class-7b',
    members: initial.map((value) => ({ value })),
  });
  t.equal(group.status, 201);
  const groupId = String(group.body.id);

  // Sixteen PATCHes add ten users each while four remove the initial forty.
  const adds = Array.from({ length: 16 }, (_, i) => ids.slice(i * 10, i * 10 + 10));
  const removes = Array.from({ length: 4 }, (_, i) => initial.slice(i * 10, i * 10 + 10));
  const requests = [
    ...adds.map((batch) => patch({ op: 'Add', path: 'members', value: batch.map((value) => ({ value })) })),
    ...removes.map((batch) => patch({ op: 'Remove', path: 'members', value: batch.map((value) => ({ value })) })),
  ];
  const answers = await Promise.all(requests.map((body, i) => send(at(i), 'PATCH', `/Groups/${groupId}`, body)));
  t.same([...new Set(answers.map((a) => a.status))], [204], 'every PATCH succeeded');

  const expected = ids.slice(0, 160).sort();
  const members = await db
    .selectFrom('class_memberships')
    .select('account_id')
    .where('tenant_id', '=', tenantId)
    .where('class_id', '=', groupId)
    .execute();
  t.same(members.map((m) => m.account_id).sort(), expected, 'the rows hold every add and no removed member');
  const read = await send(at(1), 'GET', `/Groups/${groupId}`);
  t.same((read.body.members as { value: string }[]).map((m) => m.value).sort(), expected, 'and SCIM shows the same');
  const audits = await db.selectFrom('audit_events').select('id').where('tenant_id', '=', tenantId).where('object_id', '=', groupId).where('action', '=', 'update').execute();
  t.equal(audits.length, 20, 'each PATCH left one audit event');
}

t.test('parallel writes on one server process', async (t) => {
  const { urls, db, tenant, send } = await setup(t, 1);
  await parallelWrites(t, urls, db, tenant.tenant.id, send);
});

t.test('two server processes on one database: parallel writes, revocation, and clean logs', async (t) => {
  const { urls, db, tenant, send, servers, url: databaseUrl } = await setup(t, 2, { CREDENTIAL_CACHE_SECONDS: '2', LOG_LEVEL: 'debug' });
  const [a = '', b = ''] = urls;
  await parallelWrites(t, urls, db, tenant.tenant.id, send);

  // A user with personal data and a password Entra may send: none of it may be logged.
  const marker = await send(a, 'POST', '/Users', {
    schemas: [USER],
    userName: 'hedvig.lindqvist@school.example',
    name: { givenName: 'Hedvigmarker', familyName: 'Lindqvistmarker' },
    password: 'Passw0rd-never-logged',
    emails: [{ type: 'work', value: 'hedvig.lindqvist@school.example', primary: true }],
  });
  t.equal(marker.status, 201);
  const lookup = await send(b, 'GET', `/Users?filter=${encodeURIComponent('userName eq "hedvig.lindqvist@school.example"')}`);
  t.equal(lookup.body.totalResults, 1, 'the other process sees the user at once');

  // OAuth: a client made with the CLI, a token from one process used on the other.
  const env = testEnv({ DATABASE_URL: databaseUrl });
  const out: string[] = [];
  const io = { out: (s: string) => out.push(s), err: (s: string) => out.push(s), env };
  t.equal(await runCli(['client', 'create', '--tenant', tenant.tenant.id, '--json'], io), 0);
  const { clientId, clientSecret } = JSON.parse(out.pop() ?? '{}') as { clientId: string; clientSecret: string };
  const tokenRequest = (secret: string) =>
    fetch(`${a}/oauth/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ grant_type: 'client_credentials', client_id: clientId, client_secret: secret }),
    });
  t.equal((await tokenRequest('wrong-secret-never-logged')).status, 401);
  const issued = (await (await tokenRequest(clientSecret)).json()) as { access_token: string };
  const bearer = (token: string) => sender({ authorization: `Bearer ${token}`, 'content-type': 'application/scim+json' });
  t.equal((await bearer(issued.access_token)(b, 'GET', '/Users?count=1')).status, 200, 'an access token from A works on B');
  const signatureAt = tenant.token.lastIndexOf('.') + 1;
  const forged = `${tenant.token.slice(0, signatureAt)}${tenant.token[signatureAt] === 'A' ? 'B' : 'A'}${tenant.token.slice(signatureAt + 1)}`;
  t.equal((await bearer(forged)(b, 'GET', '/Users')).status, 401, 'a forged token is refused');

  // Revocation: the Secret Token stops on both processes within the cache time.
  t.equal(await runCli(['token', 'revoke', tenant.credentialId], io), 0);
  for (const base of [a, b]) {
    let status = 200;
    for (let i = 0; i < 40 && status === 200; i++) {
      await new Promise((resolve) => setTimeout(resolve, 250));
      status = (await send(base, 'GET', '/Users?count=1')).status;
    }
    t.equal(status, 401, `${base === a ? 'A' : 'B'} refuses the revoked token within seconds`);
  }
  t.equal((await bearer(issued.access_token)(a, 'GET', '/Users?count=1')).status, 200, "the client's token is a separate credential and still works");

  for (const server of servers) t.equal(await server.stop(), 0, 'the process stops cleanly');
  const log = servers.flatMap((s) => s.lines).join('\n');
  t.ok(log.includes('"msg":"request completed"'), 'the log has the requests in it');
  const secrets: [string, string][] = [
    ['the Secret Token', tenant.token],
    ['its signature', tenant.token.split('.')[2] ?? ''],
    ['the client secret', clientSecret],
    ['a wrong client secret', 'wrong-secret-never-logged'],
    ['the access token', issued.access_token],
    ['the password', 'Passw0rd-never-logged'],
    ['a given name', 'Hedvigmarker'],
    ['a family name', 'Lindqvistmarker'],
    ['a userName', 'hedvig.lindqvist'],
    ['a userName in a filter', 'pupil900'],
    ['a display name from a body', 'Class 7B'],
  ];
  for (const [what, value] of secrets) t.notOk(log.includes(value), `${what} is not in the log`);
  t.notMatch(log, /bearer\s+ey/i, 'no Authorization header value');
  t.notMatch(log, /"authorization":"(?!\[redacted\])/i);
});

t.test('SIGKILL in the middle of a PATCH leaves none of it applied', async (t) => {
  const { urls, db, tenant, send, servers, pool, url } = await setup(t, 1);
  const [base = ''] = urls;
  const server = servers[0];
  const ids: string[] = [];
  for (let i = 0; i < 20; i++) ids.push(String((await send(base, 'POST', '/Users', entraUser(i))).body.id));
  const group = await send(base, 'POST', '/Groups', { schemas: [GROUP], displayName: 'Class 9C' });
  const groupId = String(group.body.id);

  // Hold a lock on the last account of the second batch, so the PATCH writes
  // its first batch and then waits inside its transaction.
  const locker = await pool.connect();
  t.teardown(() => locker.release());
  await locker.query('BEGIN');
  await locker.query('SELECT 1 FROM accounts WHERE tenant_id = $1 AND id = $2 FOR UPDATE', [tenant.tenant.id, ids[19]]);
  const body = patch(
    { op: 'Add', path: 'members', value: ids.slice(0, 10).map((value) => ({ value })) },
    { op: 'Add', path: 'members', value: ids.slice(10, 20).map((value) => ({ value })) },
    { op: 'Replace', path: 'displayName', value: 'Renamed' },
  );
  const pending = send(base, 'PATCH', `/Groups/${groupId}`, body).catch((error: unknown) => error);

  let blocked: number | undefined;
  for (let i = 0; i < 200 && blocked === undefined; i++) {
    await new Promise((resolve) => setTimeout(resolve, 50));
    const { rows } = await pool.query<{ pid: number }>(
      `SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'`,
    );
    blocked = rows[0]?.pid;
  }
  t.ok(blocked, 'the PATCH is inside its transaction, waiting on the lock');
  const { rows: written } = await pool.query<{ n: string }>(
    `SELECT count(*) AS n FROM class_memberships WHERE class_id = $1`,
    [groupId],
  );
  t.equal(written[0]?.n, '0', 'its first batch is not visible to others while it runs');

  t.equal(await server?.stop('SIGKILL'), null, 'the process is killed');
  t.type(await pending, Error, 'the client sees the connection drop');
  await locker.query('COMMIT');

  // The orphaned backend finishes its statement, finds its client gone and rolls back.
  let alive = true;
  for (let i = 0; i < 200 && alive; i++) {
    await new Promise((resolve) => setTimeout(resolve, 50));
    const { rows } = await pool.query('SELECT 1 FROM pg_stat_activity WHERE pid = $1', [blocked]);
    alive = rows.length > 0;
  }
  t.notOk(alive, 'the backend of the killed process has ended');
  const members = await db.selectFrom('class_memberships').select('account_id').where('class_id', '=', groupId).execute();
  t.same(members, [], 'no membership of the first batch survived');
  const row = await db.selectFrom('classes').select(['display_name', 'version']).where('id', '=', groupId).executeTakeFirstOrThrow();
  t.equal(row.display_name, 'Class 9C', 'the rename was not applied');
  const audits = await db.selectFrom('audit_events').select('action').where('object_id', '=', groupId).execute();
  t.same(audits.map((a) => a.action), ['create'], 'no audit event for the killed request');

  // A new process applies the same PATCH whole.
  const again = await startServerProcess({ DATABASE_URL: url });
  t.teardown(() => again.stop());
  t.equal((await send(again.url, 'PATCH', `/Groups/${groupId}`, body)).status, 204);
  const after = await db.selectFrom('class_memberships').select('account_id').where('class_id', '=', groupId).execute();
  t.equal(after.length, 20, 'retried, the PATCH applies in full');
});
