// npm run bench:preview: the first-sync preview of a municipality. Generates
// Entra's "Download users" export of 100,000 users (every column Microsoft
// writes) and a tenant with the portal accounts a school organisation has
// before its first sync: most of its users under the same e-mail, some under
// an old domain or another address, deleted and linked accounts, admins, and
// people who have left; other tenants fill the table around it. Then times
// the preview through the CLI (with --json and --csv) and the admin API of a
// server started with npm start's heap limit, and the service's steps on
// their own, with the SQL statements one preview runs and the longest the
// event loop waited. Prints the figures; the target is under 30 s.
//   npm run bench:preview -- [--users 100000] [--runs 3] [--keep]
import { createHash, randomBytes } from 'node:crypto';
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import type pg from 'pg';
import { signingKeys } from '../src/auth/keys.js';
import { signAdminToken } from '../src/auth/tokens.js';
import { runCli } from '../src/cli.js';
import { loadConfig } from '../src/config.js';
import { createAdminCredential } from '../src/db/admin-credentials.js';
import { createDb } from '../src/db/database.js';
import { migrateToLatest } from '../src/db/migrate.js';
import { previewCsv, previewFirstSync, readEntraUsers, type PreviewTotals } from '../src/services/preview.js';
import { benchDatabase, countingStatements } from './database.js';

const root = fileURLToPath(new URL('..', import.meta.url));
const TARGET_MS = 30_000;

const { values: args } = parseArgs({
  options: {
    users: { type: 'string', default: '100000' },
    runs: { type: 'string', default: '3' },
    keep: { type: 'boolean', default: false },
  },
});
const userCount = Number(args.users);
const runs = Number(args.runs);

const started = performance.now();
const log = (message: string): void => {
  process.stderr.write(`[${((performance.now() - started) / 1000).toFixed(1).padStart(6)} s] ${message}\n`);
};

const GIVEN = ['Alva', 'Elsa', 'Maja', 'Ella', 'Wilma', 'Saga', 'Ebba', 'Olivia', 'Astrid', 'Alice', 'Lilly', 'Vera', 'Selma', 'Freja', 'Ines', 'Signe', 'Ellen', 'Agnes', 'Clara', 'Iris',
  'Noah', 'Hugo', 'William', 'Liam', 'Lucas', 'Oliver', 'Adam', 'Elias', 'Matteo', 'Nils', 'Leo', 'Alexander', 'Vincent', 'Theo', 'Oscar', 'Ludvig', 'Frans', 'Sixten', 'Harry', 'Elton',
  'Anna', 'Eva', 'Karin', 'Maria', 'Sara', 'Lena', 'Emma', 'Ida', 'Erik', 'Lars', 'Karl', 'Johan', 'Per', 'Anders', 'Mikael', 'Jonas', 'Björn', 'Göran', 'Åsa', 'Örjan'];
const FAMILY = ['Andersson', 'Johansson', 'Karlsson', 'Nilsson', 'Eriksson', 'Larsson', 'Olsson', 'Persson', 'Svensson', 'Gustafsson', 'Pettersson', 'Jonsson', 'Jansson', 'Hansson', 'Bengtsson',
  'Jönsson', 'Lindberg', 'Jakobsson', 'Magnusson', 'Olofsson', 'Lindström', 'Lindqvist', 'Lindgren', 'Berg', 'Axelsson', 'Bergström', 'Lundberg', 'Lind', 'Lundgren', 'Lundqvist', 'Mattsson',
  'Berglund', 'Fredriksson', 'Sandberg', 'Henriksson', 'Forsberg', 'Sjöberg', 'Wallin', 'Ali', 'Mohammed', 'Engström', 'Eklund', 'Danielsson', 'Lundin', 'Håkansson', 'Björk', 'Bergman',
  'Gunnarsson', 'Holm', 'Wikström', 'Samuelsson', 'Isaksson', 'Fransson', 'Bergqvist', 'Nyström', 'Holmberg', 'Arvidsson', 'Löfgren', 'Söderberg', 'Nyberg', 'Blomqvist', 'Claesson',
  'Nordström', 'Mårtensson', 'Lundström', 'Ahmed', 'Viklund', 'Björklund', 'Eliasson', 'Pålsson', 'Hassan', 'Berggren', 'Sandström', 'Lund', 'Nordin', 'Ström', 'Åberg', 'Hermansson', 'Ekström', 'Holmgren'];

interface GeneratedUser {
  upn: string;
  mail: string;
  given: string;
  family: string;
  display: string;
  objectId: string;
  local: string;
  staff: boolean;
  guest: boolean;
}

const uuidOf = (seed: string): string => {
  const h = createHash('md5').update(seed).digest('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-4${h.slice(13, 16)}-8${h.slice(17, 20)}-${h.slice(20, 32)}`;
};
const ascii = (s: string) => s.normalize('NFD').replace(/[\u0300-\u036f]/g, '').toLowerCase();

function generateUser(g: number): GeneratedUser {
  const given = GIVEN[g % GIVEN.length] ?? 'Alva';
  const family = FAMILY[Math.floor(g / GIVEN.length) % FAMILY.length] ?? 'Berg';
  const local = `${ascii(given)}.${ascii(family)}${g}`;
  const staff = g % 10 === 0;
  const guest = g % 100 === 99;
  const upn = guest ? `${local}_partner.example#EXT#@kommun.onmicrosoft.example` : `${local}@${staff ? 'kommun.example' : 'elev.kommun.example'}`;
  const mail = guest ? `${local}@partner.example` : g % 33 === 0 ? '' : upn;
  return { upn, mail, given, family, display: `${given} ${family}`, objectId: uuidOf(`object ${g}`), local, staff, guest };
}

const HEADER = [
  'userPrincipalName', 'displayName', 'surname', 'mail', 'givenName', 'objectId', 'userType', 'jobTitle', 'department', 'accountEnabled', 'usageLocation', 'streetAddress', 'state',
  'country', 'physicalDeliveryOfficeName', 'city', 'postalCode', 'telephoneNumber', 'mobile', 'authenticationPhoneNumber', 'authenticationAlternativePhoneNumber', 'authenticationEmail',
  'alternateEmailAddress', 'ageGroup', 'consentProvidedForMinor', 'legalAgeGroupClassification',
];

/** The export as the admin center writes it: every column, quoted where a value has a comma. */
function exportCsv(users: readonly GeneratedUser[]): string {
  const quote = (v: string) => (/[",\r\n]/.test(v) ? `"${v.replace(/"/g, '""')}"` : v);
  const lines = users.map((u, g) =>
    [
      u.upn, u.display, u.family, u.mail, u.given, u.objectId, u.guest ? 'Guest' : 'Member', u.staff ? 'Lärare' : 'Elev', `Skola ${g % 40}, ${u.staff ? 'personal' : 'elever'}`, 'True', 'SE',
      `Skolvägen ${g % 200}`, '', 'Sverige', `Skola ${g % 40}`, 'Norrby', `${10000 + (g % 900)}`, '', '', '', '', '', '', u.staff ? 'Adult' : 'Minor', '', u.staff ? 'Adult' : 'MinorWithParentalConsent',
    ]
      .map(quote)
      .join(','),
  );
  return `\uFEFF${[HEADER.join(','), ...lines].join('\r\n')}\r\n`;
}

interface SeedAccount {
  managed_by: 'manual' | 'sync';
  role: 'student' | 'teacher' | 'admin';
  user_name: string;
  email: string | null;
  given_name: string | null;
  family_name: string | null;
  display_name: string | null;
  external_id: string | null;
  deleted: boolean;
}

/** The tenant's accounts before the first sync, by how each user of the export relates to one. */
function tenantAccounts(users: readonly GeneratedUser[]): SeedAccount[] {
  const accounts: SeedAccount[] = [];
  const account = (u: GeneratedUser, values: Partial<SeedAccount>) =>
    accounts.push({
      managed_by: 'manual',
      role: u.staff ? 'teacher' : 'student',
      user_name: u.upn,
      email: u.mail || null,
      given_name: u.given,
      family_name: u.family,
      display_name: u.display,
      external_id: null,
      deleted: false,
      ...values,
    });
  users.forEach((u, g) => {
    const slot = g % 100;
    if (u.guest) return;
    // Rule 2: the same e-mail, under the portal's own user name (a fifth under the same userName).
    if (slot < 70) account(u, { user_name: slot < 14 ? u.upn : `${u.local}`, email: u.upn });
    // Probably the same person: an old domain, or another address with the same name.
    else if (slot < 78) account(u, { user_name: `${u.local}@gamla.kommun.example`, email: `${u.local}@gamla.kommun.example` });
    else if (slot < 82) account(u, { user_name: `p${g}@gamla.kommun.example`, email: `p${g}@gamla.kommun.example` });
    // Never adopted: deleted, or linked to another Entra object.
    else if (slot < 84) account(u, { deleted: true });
    else if (slot < 85) account(u, { external_id: uuidOf(`other ${g}`) });
    // Rule 8: synced before a disconnect.
    else if (slot < 86) account(u, { user_name: `${u.local}@gamla.kommun.example`, email: null, external_id: u.objectId });
  });
  // People who have left: accounts no row of the export matches.
  for (let i = 0; i < users.length / 20; i++) {
    accounts.push({ managed_by: 'manual', role: 'student', user_name: `left${i}@elev.kommun.example`, email: `left${i}@elev.kommun.example`, given_name: 'Former', family_name: `Pupil ${i}`, display_name: null, external_id: null, deleted: false });
  }
  // Admins of the portal; a few hold a teacher's address.
  for (let i = 0; i < 40; i++) {
    const holder = users[i * 10];
    accounts.push({ managed_by: 'manual', role: 'admin', user_name: `admin${i}@kommun.example`, email: i < 8 && holder ? holder.upn : null, given_name: null, family_name: null, display_name: null, external_id: null, deleted: false });
  }
  return accounts;
}

async function seed(pool: pg.Pool, users: readonly GeneratedUser[]): Promise<{ tenantId: string; accounts: number }> {
  // Other tenants: 20 schools' worth of synced accounts around the one previewed.
  await pool.query(`INSERT INTO tenants (name, verified_domains) SELECT 'Skola ' || g, ARRAY['skola' || g || '.example'] FROM generate_series(1, 20) g`);
  await pool.query(`
    INSERT INTO accounts (tenant_id, managed_by, role, user_name, external_id, email, given_name, family_name, display_name, scim)
    SELECT t.id, 'sync', 'student', u, md5(g::text)::uuid::text, u, 'Elev', 'Nummer ' || g, 'Elev ' || g, '{}'::jsonb
      FROM generate_series(1, 200000) g
      JOIN (SELECT id, row_number() OVER (ORDER BY id) - 1 AS n FROM tenants) t ON t.n = g % 20
     CROSS JOIN LATERAL (SELECT 'elev' || g || '@skola' || (t.n + 1) || '.example' AS u) x`);
  const tenant = await pool.query<{ id: string }>(`INSERT INTO tenants (name, verified_domains) VALUES ('Norrby kommun', ARRAY['kommun.example', 'elev.kommun.example']) RETURNING id`);
  const tenantId = tenant.rows[0]?.id ?? '';
  const accounts = tenantAccounts(users);
  const step = 20_000;
  for (let from = 0; from < accounts.length; from += step) {
    const batch = accounts.slice(from, from + step);
    const column = <K extends keyof SeedAccount>(key: K) => batch.map((a) => a[key]);
    await pool.query(
      `INSERT INTO accounts (tenant_id, managed_by, role, user_name, email, given_name, family_name, display_name, external_id, deleted_at, scim, created_at)
       SELECT $1, m, r, u, e, gn, fn, dn, x, CASE WHEN d THEN now() - interval '3 days' END, '{}'::jsonb, now() - interval '2 years' + (i || ' seconds')::interval
         FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::boolean[]) WITH ORDINALITY AS a(m, r, u, e, gn, fn, dn, x, d, i)`,
      [tenantId, column('managed_by'), column('role'), column('user_name'), column('email'), column('given_name'), column('family_name'), column('display_name'), column('external_id'), column('deleted')],
    );
  }
  await pool.query('ANALYZE');
  return { tenantId, accounts: accounts.length };
}

async function freePort(): Promise<number> {
  const probe = net.createServer();
  await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
  const { port } = probe.address() as net.AddressInfo;
  await new Promise((resolve) => probe.close(resolve));
  return port;
}

async function waitUntilReady(base: string, exited: Promise<number | null>): Promise<void> {
  let stopped = false;
  void exited.then(() => (stopped = true));
  for (let i = 0; i < 600 && !stopped; i++) {
    if (await fetch(`${base}/readyz`).then((r) => r.ok, () => false)) return;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error('the server did not become ready');
}

const median = (samples: readonly number[]) => [...samples].sort((a, b) => a - b)[Math.floor(samples.length / 2)] ?? NaN;

async function main(): Promise<void> {
  const database = await benchDatabase(root, 'portal_scim_preview');
  const { version } = database;
  const { db: raw, pool } = createDb(database.url, { poolSize: 4, statementTimeoutMs: 600_000 });
  const { db, statements } = countingStatements(raw);
  const dir = await mkdtemp(path.join(os.tmpdir(), 'portal-scim-bench-preview-'));
  try {
    await migrateToLatest(raw);
    const users = Array.from({ length: userCount }, (_, g) => generateUser(g));
    const file = path.join(dir, 'users.csv');
    const csv = exportCsv(users);
    await writeFile(file, csv);
    log(`wrote the export: ${userCount} users, ${(Buffer.byteLength(csv) / 1024 / 1024).toFixed(1)} MiB`);
    const { tenantId, accounts } = await seed(pool, users);
    log(`seeded ${accounts} accounts in the tenant and 200,000 in 20 others`);

    // The service's steps, each on its own.
    const steps = { read: [] as number[], decide: [] as number[], csv: [] as number[], json: [] as number[] };
    // The longest the event loop waited while the CSV was read and the users decided: what a server's other requests would wait.
    const loopWaits: number[] = [];
    let totals: PreviewTotals | undefined;
    let perPreview = 0;
    const bytes = Buffer.from(csv);
    for (let i = 0; i < runs; i++) {
      const loop = monitorEventLoopDelay({ resolution: 10 });
      loop.enable();
      let t0 = performance.now();
      const parsed = await readEntraUsers(bytes);
      steps.read.push(performance.now() - t0);
      t0 = performance.now();
      const before = statements();
      const report = await previewFirstSync(db, tenantId, parsed);
      perPreview = statements() - before;
      steps.decide.push(performance.now() - t0);
      loop.disable();
      loopWaits.push(loop.max / 1e6);
      t0 = performance.now();
      previewCsv(report);
      steps.csv.push(performance.now() - t0);
      t0 = performance.now();
      JSON.stringify(report);
      steps.json.push(performance.now() - t0);
      totals = report.totals;
    }
    log('timed the service');

    // The CLI as an operator runs it: the file, the database, --json to stdout and --csv to a file.
    const secret = randomBytes(32).toString('hex');
    const env = { DATABASE_URL: database.url, JWT_SECRET: secret, LOG_LEVEL: 'silent', PUBLIC_URL: 'https://scim.example.org' };
    const cliTimes: number[] = [];
    for (let i = 0; i < runs; i++) {
      let printed = 0;
      const t0 = performance.now();
      const code = await runCli(['preview', '--tenant', tenantId, '--entra-users', file, '--csv', path.join(dir, 'report.csv'), '--json'], {
        out: (s) => (printed += s.length),
        err: (s) => process.stderr.write(`${s}\n`),
        env,
      });
      cliTimes.push(performance.now() - t0);
      if (code !== 0 || printed === 0) throw new Error(`portal-scim preview exited ${code}`);
    }
    log('timed the CLI');

    // The admin API of a server started as npm start starts it (node's heap
    // flags included), over loopback HTTP: the upload, the answer read to its end.
    const port = await freePort();
    const server = spawn(process.execPath, ['--max-semi-space-size=8', '--max-old-space-size=512', '--import', 'tsx', 'src/server.ts'], {
      cwd: root,
      env: { ...process.env, ...env, PORT: String(port), HOST: '127.0.0.1' },
      stdio: ['ignore', 'ignore', 'inherit'],
    });
    const exited = new Promise<number | null>((resolve) => server.on('exit', resolve));
    const apiTimes: number[] = [];
    let answer = 0;
    let peakRss = '?';
    try {
      const base = `http://127.0.0.1:${port}`;
      await waitUntilReady(base, exited);
      const credential = await createAdminCredential(raw, 'preview benchmark', null);
      const keys = signingKeys(secret);
      const config = loadConfig(env);
      const authorization = `Bearer ${signAdminToken({ keys, issuer: config.jwtIssuer, audience: config.jwtAudience }, credential.id)}`;
      for (let i = 0; i < runs; i++) {
        const t0 = performance.now();
        const response = await fetch(`${base}/admin/tenants/${tenantId}/preview`, { method: 'POST', headers: { authorization, 'content-type': 'text/csv' }, body: bytes });
        answer = (await response.arrayBuffer()).byteLength;
        apiTimes.push(performance.now() - t0);
        if (response.status !== 200) throw new Error(`the admin API answered ${response.status}`);
      }
      peakRss = /VmHWM:\s+(\d+) kB/.exec(await readFile(`/proc/${server.pid}/status`, 'utf8').catch(() => ''))?.[1] ?? '?';
    } finally {
      server.kill('SIGTERM');
      await exited;
    }
    log('timed the admin API');

    const fmt = (ms: number) => `${(ms / 1000).toFixed(2).padStart(7)} s`;
    const all = (samples: number[]) => samples.map((s) => (s / 1000).toFixed(2)).join(', ');
    const lines = [
      `portal-scim first-sync preview benchmark: an export of ${userCount.toLocaleString('en')} users (${(Buffer.byteLength(csv) / 1024 / 1024).toFixed(1)} MiB, ${HEADER.length} columns), a tenant with ${accounts.toLocaleString('en')} accounts, 200,000 in other tenants`,
      `${os.cpus().length} cores, node ${process.version}, PostgreSQL ${version}; ${runs} runs each, median (all runs)`,
      '',
      `read the CSV                 ${fmt(median(steps.read))}   (${all(steps.read)})`,
      `read accounts and decide     ${fmt(median(steps.decide))}   (${all(steps.decide)}), ${perPreview} SQL statements`,
      `report as CSV                ${fmt(median(steps.csv))}   (${all(steps.csv)})`,
      `report as JSON               ${fmt(median(steps.json))}   (${all(steps.json)})`,
      `longest event-loop wait while reading and deciding: ${Math.max(...loopWaits).toFixed(0)} ms`,
      `portal-scim preview --json --csv   ${fmt(median(cliTimes))}   (${all(cliTimes)})`,
      `POST /admin/tenants/{id}/preview   ${fmt(median(apiTimes))}   (${all(apiTimes)}), answer ${(answer / 1024 / 1024).toFixed(1)} MiB; server peak RSS ${peakRss === '?' ? '?' : `${(Number(peakRss) / 1024).toFixed(0)} MiB`} (--max-old-space-size=512)`,
      '',
      `outcomes: ${JSON.stringify(totals)}`,
      '',
      `${Math.max(median(cliTimes), median(apiTimes)) < TARGET_MS ? 'PASS' : 'MISS'}  ${userCount.toLocaleString('en')} rows under ${TARGET_MS / 1000} s (CLI ${(median(cliTimes) / 1000).toFixed(1)} s, admin API ${(median(apiTimes) / 1000).toFixed(1)} s)`,
    ];
    process.stdout.write(`${lines.join('\n')}\n`);
  } finally {
    await rm(dir, { recursive: true, force: true });
    await raw.destroy();
    await database.close({ keep: args.keep, log });
  }
}

await main();
