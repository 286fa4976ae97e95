// npm run bench:overview: the portal team's overview at scale. Seeds 300
// tenants and 1,000,000 accounts (with classes, memberships, a month of
// audit events, request counts, conflicts and credentials) into a fresh
// database, then times GET /status, GET /admin/tenants and GET /metrics over
// loopback HTTP, and counts the SQL statements each request runs (a number
// that grows with the tenants would be an N+1). Prints the figures; the
// target is an answer within 300 ms.
//   npm run bench:overview -- [--tenants 300] [--accounts 1000000] [--runs 30] [--keep]
import { randomBytes } from 'node:crypto';
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import type pg from 'pg';
import { buildApp } from '../src/app.js';
import { signingKeys } from '../src/auth/keys.js';
import { signAdminToken } from '../src/auth/tokens.js';
import { loadConfig } from '../src/config.js';
import { createAdminCredential } from '../src/db/admin-credentials.js';
import { createDb } from '../src/db/database.js';
import { migrateToLatest } from '../src/db/migrate.js';
import { benchDatabase, countingStatements } from './database.js';

const root = fileURLToPath(new URL('..', import.meta.url));
const USER = 'urn:ietf:params:scim:schemas:core:2.0:User';
const TARGET_MS = 300;

const { values: args } = parseArgs({
  options: {
    tenants: { type: 'string', default: '300' },
    accounts: { type: 'string', default: '1000000' },
    runs: { type: 'string', default: '30' },
    keep: { type: 'boolean', default: false },
  },
});
const tenants = Number(args.tenants);
const accounts = Number(args.accounts);
const runs = Number(args.runs);

const started = performance.now();
const log = (message: string): void => {
  process.stderr.write(`[${((performance.now() - started) / 1000).toFixed(1).padStart(6)} s] ${message}\n`);
};

/** Set-based seed of a portal at scale; every tenant-owned row is spread over the tenants round robin. */
async function seed(pool: pg.Pool): Promise<void> {
  // Tenants in every state the overview tells apart: most sync every few
  // minutes; some went quiet hours ago, some never synced, a few are disconnected.
  await pool.query(
    `INSERT INTO tenants (name, verified_domains, created_at, last_request_at, disconnected_at)
     SELECT 'School ' || g, ARRAY['school' || g || '.example', 'elev.school' || g || '.example'],
            now() - (g || ' hours')::interval,
            CASE WHEN g % 30 = 1 THEN NULL WHEN g % 30 = 2 THEN now() - interval '5 hours' ELSE now() - ((g % 10) || ' minutes')::interval END,
            CASE WHEN g % 60 = 3 THEN now() - interval '2 days' END
       FROM generate_series(1, $1::int) g`,
    [tenants],
  );
  await pool.query(`CREATE TEMP TABLE seed_tenants AS SELECT row_number() OVER (ORDER BY id) - 1 AS n, id FROM tenants`);
  await pool.query(`CREATE INDEX ON seed_tenants (n)`);

  await pool.query(
    `INSERT INTO credentials (tenant_id, kind, label, created_at, last_used_at, expires_at)
     SELECT id, 'token', 'Entra', now() - interval '200 days', now() - interval '8 days', NULL FROM seed_tenants
     UNION ALL
     SELECT id, 'token', 'Entra 2', now() - interval '20 days', now() - interval '1 minute', now() + ((n % 40) || ' days')::interval FROM seed_tenants`,
  );

  const step = 100_000;
  for (let from = 0; from < accounts; from += step) {
    const to = Math.min(accounts, from + step) - 1;
    await pool.query(`
      INSERT INTO accounts (tenant_id, managed_by, role, user_name, external_id, email, given_name, family_name, display_name, active, scim, created_at)
      SELECT t.id, 'sync', CASE WHEN g % 12 = 0 THEN 'teacher' ELSE 'student' END, u, md5(g::text)::uuid::text, u, 'Pupil', 'Number ' || g, 'Pupil ' || g, g % 50 <> 0,
             jsonb_build_object('schemas', jsonb_build_array('${USER}'), 'userName', u, 'externalId', md5(g::text)::uuid::text, 'displayName', 'Pupil ' || g,
                                'name', jsonb_build_object('givenName', 'Pupil', 'familyName', 'Number ' || g),
                                'emails', jsonb_build_array(jsonb_build_object('value', u, 'type', 'work', 'primary', true))),
             now() - interval '30 days'
        FROM generate_series(${from}, ${to}) g
        JOIN seed_tenants t ON t.n = g % ${tenants}
        CROSS JOIN LATERAL (SELECT 'pupil' || g || '@school' || (t.n + 1) || '.example' AS u) x`);
    log(`seeded ${to + 1} of ${accounts} accounts`);
  }
  // Classes of 25, every account in one; each account's create in the audit log a month ago.
  await pool.query(`
    INSERT INTO classes (tenant_id, managed_by, display_name, external_id, scim)
    SELECT t.id, 'sync', 'Class ' || c, 'class-' || c, '{}'::jsonb
      FROM seed_tenants t CROSS JOIN generate_series(0, ceil(${accounts}::numeric / ${tenants} / 25)::int - 1) c`);
  await pool.query(`
    INSERT INTO class_memberships (tenant_id, class_id, account_id, synced)
    SELECT a.tenant_id, c.id, a.id, true
      FROM (SELECT tenant_id, id, (row_number() OVER (PARTITION BY tenant_id ORDER BY id) - 1) / 25 AS k FROM accounts) a
      JOIN classes c ON c.tenant_id = a.tenant_id AND c.external_id = 'class-' || a.k`);
  log('seeded classes and memberships');
  await pool.query(`
    INSERT INTO audit_events (tenant_id, at, action, object_type, object_id, object_ref, outcome, details)
    SELECT tenant_id, created_at, 'create', 'user', id, user_name, 'success', '{}'::jsonb FROM accounts`);
  // The last day: 200 writes per tenant, of which some tenants had failures.
  await pool.query(`
    INSERT INTO audit_events (tenant_id, at, action, object_type, object_ref, outcome, details)
    SELECT t.id, now() - ((i * 7) || ' minutes')::interval, 'update', 'user', 'pupil' || i || '@school.example',
           CASE WHEN t.n % 25 = 4 AND i % 3 = 0 THEN 'failure' ELSE 'success' END, '{}'::jsonb
      FROM seed_tenants t CROSS JOIN generate_series(1, 200) i`);
  await pool.query(`
    INSERT INTO sync_conflicts (tenant_id, at, kind, object_type, object_ref, detail)
    SELECT t.id, now() - ((i * 5) || ' hours')::interval, 'admin-collision', 'user', 'head' || i || '@school.example', 'collides with a portal admin'
      FROM seed_tenants t CROSS JOIN generate_series(1, 3) i WHERE t.n % 7 = 0`);
  // A month of hourly request counts per tenant.
  await pool.query(`
    INSERT INTO request_counts (tenant_id, hour, requests, failures, writes, write_failures)
    SELECT t.id, date_trunc('hour', now()) - (h || ' hours')::interval, 120, CASE WHEN t.n % 25 = 4 THEN 30 ELSE 1 END, 60,
           CASE WHEN t.n % 25 = 4 THEN 30 ELSE 0 END
      FROM seed_tenants t CROSS JOIN generate_series(0, 30 * 24 - 1) h`);
  log('seeded audit events, conflicts and request counts');
  await pool.query('ANALYZE');
  await pool.query('CHECKPOINT');
}

function stats(samples: readonly number[]): { median: number; p95: number; max: number } {
  const sorted = [...samples].sort((a, b) => a - b);
  const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)] ?? NaN;
  return { median: at(0.5), p95: at(0.95), max: sorted[sorted.length - 1] ?? NaN };
}

async function main(): Promise<void> {
  const database = await benchDatabase(root, 'portal_scim_overview');
  const { version } = database;
  const { db: raw, pool } = createDb(database.url, { poolSize: 10, statementTimeoutMs: 600_000 });
  const { db, statements } = countingStatements(raw);
  try {
    await migrateToLatest(raw);
    log(`seeding ${tenants} tenants and ${accounts} accounts`);
    await seed(pool);
    const size = (await pool.query<{ size: string }>(`SELECT pg_size_pretty(pg_database_size(current_database())) AS size`)).rows[0]?.size;

    const secret = randomBytes(32).toString('hex');
    const config = loadConfig({ JWT_SECRET: secret, LOG_LEVEL: 'silent', PUBLIC_URL: 'https://scim.example.org', RATE_LIMIT_PER_SECOND: '0' });
    const keys = signingKeys(secret);
    const app = await buildApp({ config, db, pool, keys });
    const base = await app.listen({ port: 0, host: '127.0.0.1' });
    const credential = await createAdminCredential(raw, 'overview benchmark', null);
    const authorization = `Bearer ${signAdminToken({ keys, issuer: config.jwtIssuer, audience: config.jwtAudience }, credential.id)}`;

    const results: { path: string; median: number; p95: number; max: number; statements: number; bytes: number }[] = [];
    for (const target of ['/status', '/admin/tenants', '/metrics']) {
      const get = async () => {
        const response = await fetch(`${base}${target}`, { headers: { authorization } });
        if (response.status !== 200) throw new Error(`${target} answered ${response.status}`);
        return (await response.text()).length;
      };
      for (let i = 0; i < 5; i++) await get();
      const samples: number[] = [];
      const before = statements();
      let bytes = 0;
      for (let i = 0; i < runs; i++) {
        const t0 = performance.now();
        bytes = await get();
        samples.push(performance.now() - t0);
      }
      results.push({ path: target, ...stats(samples), statements: (statements() - before) / runs, bytes });
      log(`measured GET ${target}`);
    }
    await app.close();

    const fmt = (ms: number) => `${ms.toFixed(1).padStart(7)} ms`;
    const lines = [
      `portal-scim overview benchmark: ${tenants} tenants, ${accounts.toLocaleString('en')} accounts (database ${size}), ${runs} runs each after 5 unmeasured`,
      `${os.cpus().length} cores, node ${process.version}, PostgreSQL ${version}`,
      '',
      `${'request'.padEnd(22)}${'median'.padStart(10)}${'p95'.padStart(10)}${'max'.padStart(10)}   statements   answer`,
      ...results.map(
        (r) =>
          `GET ${r.path.padEnd(18)}${fmt(r.median)}${fmt(r.p95)}${fmt(r.max)}   ${r.statements.toFixed(1).padStart(10)}   ${(r.bytes / 1024).toFixed(0)} KiB`,
      ),
      '',
      ...results
        .filter((r) => r.path !== '/metrics')
        .map((r) => `${r.p95 < TARGET_MS ? 'PASS' : 'MISS'}  GET ${r.path} p95 under ${TARGET_MS} ms (${r.p95.toFixed(1)} ms)`),
    ];
    process.stdout.write(`${lines.join('\n')}\n`);
  } finally {
    await raw.destroy();
    await database.close({ keep: args.keep, log });
  }
}

await main();
