// A PostgreSQL that stops answering without closing its connections (the
// whole server stopped with SIGSTOP, as a network black hole would look):
// requests answer 503 with Retry-After by the client-side deadlines instead
// of hanging, readiness by its own shorter one, and once PostgreSQL answers
// again everything works without a restart, with no connection left inside a
// failed request's transaction.
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Writable } from 'node:stream';
import pg from 'pg';
import t from 'tap';
import { signingKeys } from '../src/auth/keys.js';
import { loadConfig } from '../src/config.js';
import { createLogger } from '../src/logger.js';
import { startServer } from '../src/server.js';
import { TEST_SECRET, tenantWithToken, testEnv } from './helpers/app.js';
import { GROUP, entraUser } from './helpers/scim.js';

/** The postmaster of the cluster and every process it started (backends, writers, autovacuum). */
async function clusterProcesses(clusterDir: string): Promise<number[]> {
  const postmaster = Number((await readFile(path.join(clusterDir, 'postmaster.pid'), 'utf8')).split('\n')[0]);
  const children: number[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const stat = await readFile(`/proc/${entry}/stat`, 'utf8').catch(() => '');
    // pid (comm) state ppid ...: comm may hold spaces, so read after its closing parenthesis.
    const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    if (ppid === postmaster) children.push(Number(entry));
  }
  return [postmaster, ...children];
}

function signalAll(pids: readonly number[], signal: NodeJS.Signals): void {
  for (const pid of pids) {
    try {
      process.kill(pid, signal);
    } catch {
      // Gone already.
    }
  }
}

t.test('a frozen PostgreSQL answers 503 within the deadlines, and all is well once it thaws', async (t) => {
  const dataDir = await mkdtemp(path.join(os.tmpdir(), 'portal-scim-frozen-'));
  t.teardown(() => rm(dataDir, { recursive: true, force: true }));
  const logLines: string[] = [];
  const logStream = new Writable({
    write(chunk: Buffer, _encoding, done) {
      logLines.push(...chunk.toString().split('\n').filter(Boolean));
      done();
    },
  });
  const config = loadConfig(
    testEnv({
      DATA_DIR: dataDir,
      PORT: '0',
      DATABASE_STATEMENT_TIMEOUT_MS: '1000',
      DATABASE_QUERY_TIMEOUT_MS: '2000',
      READINESS_TIMEOUT_MS: '500',
      // Requests pass authentication from memory, so they reach the handlers' own queries.
      CREDENTIAL_CACHE_SECONDS: '300',
    }),
  );
  const server = await startServer(config, createLogger('warn', logStream));
  t.teardown(() => server.close());
  const { app, database } = server;
  const tenant = await tenantWithToken(database.db, config, signingKeys(TEST_SECRET));
  const send = (method: 'GET' | 'POST', url: string, body?: unknown) =>
    app.inject({ method, url: `/scim/v2${url}`, headers: tenant.headers, ...(body === undefined ? {} : { payload: JSON.stringify(body) }) });
  const created = await send('POST', '/Users', entraUser(1));
  t.equal(created.statusCode, 201);
  const userId = created.json<{ id: string }>().id;
  const lookup = `/Users?filter=${encodeURIComponent('userName eq "pupil1@school.example"')}`;
  t.equal((await send('GET', lookup)).statusCode, 200, 'a lookup answers while PostgreSQL runs');
  t.equal((await app.inject({ method: 'GET', url: '/readyz' })).statusCode, 200);

  const frozen = await clusterProcesses(path.join(dataDir, 'postgres'));
  t.ok(frozen.length > 3, `the cluster runs ${frozen.length} processes`);
  // Whatever happens below, PostgreSQL is never left stopped: this runs before the other teardowns.
  const thaw = (): void => signalAll(frozen, 'SIGCONT');
  process.once('exit', thaw);
  t.teardown(() => {
    thaw();
    process.off('exit', thaw);
  });
  signalAll(frozen, 'SIGSTOP');

  const timed = async <T>(run: () => Promise<T>): Promise<[T, number]> => {
    const start = performance.now();
    const result = await run();
    return [result, Math.round(performance.now() - start)];
  };
  const [ready, readyMs] = await timed(() => app.inject({ method: 'GET', url: '/readyz' }));
  t.equal(ready.statusCode, 503, 'readiness answers 503 while PostgreSQL does not answer');
  t.equal(ready.headers['retry-after'], '5');
  t.match(ready.json(), { status: 'unavailable' });
  t.equal((await app.inject({ method: 'GET', url: '/healthz' })).statusCode, 200, 'liveness does not depend on the database');

  const timings: string[] = [`readyz ${readyMs} ms`];
  const failedWrites: string[] = [];
  for (const [what, method, url, body] of [
    ['lookup', 'GET', lookup, undefined],
    ['read by id', 'GET', `/Users/${userId}`, undefined],
    ['create', 'POST', '/Users', entraUser(2)],
    // A class created with members is written in a transaction of several statements.
    ['class create', 'POST', '/Groups', { schemas: [GROUP], displayName: 'Class 8A', externalId: 'class-8a', members: [{ value: userId }] }],
    ['second lookup', 'GET', lookup, undefined],
  ] as const) {
    const [res, ms] = await timed(() => send(method, url, body));
    t.equal(res.statusCode, 503, `${what}: 503, not a hang`);
    t.equal(res.headers['retry-after'], '5', `${what}: with Retry-After`);
    t.match(res.json(), { schemas: ['urn:ietf:params:scim:api:messages:2.0:Error'], status: '503' });
    timings.push(`${what} ${ms} ms`);
    if (method === 'POST') failedWrites.push(String(res.headers['x-request-id']));
  }
  t.comment(`time to 503 with PostgreSQL stopped: ${timings.join(', ')}`);

  thaw();
  let status = 503;
  for (let i = 0; i < 100 && status !== 200; i++) {
    status = (await app.inject({ method: 'GET', url: '/readyz' })).statusCode;
    if (status !== 200) await sleep(100);
  }
  t.equal(status, 200, 'ready again once PostgreSQL answers, without a restart');
  // Connections that gave up were ended, not returned to the pool: none of the
  // server's connections is left inside a transaction of a failed request
  // (a BEGIN that got no answer would otherwise run when PostgreSQL wakes,
  // and the next requests on that connection would run inside it, never
  // committed).
  const admin = new pg.Client({ connectionString: database.url });
  await admin.connect();
  t.teardown(() => admin.end());
  let stuck = -1;
  for (let i = 0; i < 50 && stuck !== 0; i++) {
    const { rows: activity } = await admin.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = 'portal-scim' AND state LIKE 'idle in transaction%'`,
    );
    stuck = activity[0]?.n ?? -1;
    if (stuck !== 0) await sleep(100);
  }
  t.equal(stuck, 0, 'no connection is idle inside a transaction');
  t.equal((await send('GET', lookup)).statusCode, 200, 'lookups answer again');
  t.equal((await send('GET', `/Users/${userId}`)).statusCode, 200, 'the user written before the freeze is there');

  // Entra's retry of the create: look up, then create only if it is not
  // there (the statement sent into the frozen server may have run once it
  // woke, as with any write whose answer was lost).
  const found = await send('GET', `/Users?filter=${encodeURIComponent('userName eq "pupil2@school.example"')}`);
  t.equal(found.statusCode, 200);
  if (found.json<{ totalResults: number }>().totalResults === 0) t.equal((await send('POST', '/Users', entraUser(2))).statusCode, 201);
  const rows = await database.db.selectFrom('accounts').select('user_name').orderBy('user_name').execute();
  t.same(rows.map((r) => r.user_name.toLowerCase()), ['pupil1@school.example', 'pupil2@school.example'], 'one account each: nothing lost, nothing doubled');
  const classes = await send('GET', `/Groups?filter=${encodeURIComponent('externalId eq "class-8a"')}`);
  if (classes.json<{ totalResults: number }>().totalResults === 0) {
    const retried = await send('POST', '/Groups', { schemas: [GROUP], displayName: 'Class 8A', externalId: 'class-8a', members: [{ value: userId }] });
    t.equal(retried.statusCode, 201, "Entra's retry of the class create succeeds");
  }
  const memberships = await database.db.selectFrom('class_memberships').select('account_id').execute();
  t.same(memberships, [{ account_id: userId }], 'the class has its one member');
  const answers = await Promise.all(Array.from({ length: 20 }, () => send('GET', lookup)));
  t.same([...new Set(answers.map((a) => a.statusCode))], [200], 'a burst of lookups on the pool all answer');

  // The failed creates' audit events could not be written while PostgreSQL
  // was stopped; it waited and is written now.
  let recorded: { outcome: string; details: unknown }[] = [];
  for (let i = 0; i < 100 && recorded.length < failedWrites.length; i++) {
    recorded = await database.db.selectFrom('audit_events').select(['outcome', 'details']).where('request_id', 'in', failedWrites).execute();
    if (recorded.length < failedWrites.length) await sleep(100);
  }
  t.match(
    recorded,
    failedWrites.map(() => ({ outcome: 'failure', details: { status: 503, detail: 'The database is unavailable; try again shortly.' } })),
    'the failed creates are in the audit log, with what Entra was told',
  );
  t.equal(recorded.length, failedWrites.length);

  t.notOk(logLines.some((l) => /"level":50/.test(l)), 'nothing was logged as an error (5xx details are warnings)');
});
