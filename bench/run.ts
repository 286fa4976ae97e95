// npm run bench: the SCIM server and a reference server (plain fastify + pg,
// one statement per request, bench/reference.ts) under the same Entra-shaped
// workloads over loopback HTTP, each in a process of its own on a fresh
// database. Prints req/s, p50 and p99 per operation with the ratio to the
// reference of the same run, the server's memory, a scale check with a
// million accounts, and PASS/MISS per target. Only ratios of one run compare:
// the machine's speed and noise cancel out of them, the more so as the
// initial sync, the user operations and the class lookups run in turns of
// both servers (measureTurns).
//   npm run bench -- [--quick] [--users 20000] [--scale-accounts 1000000] ...
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { readdir, readFile } from 'node:fs/promises';
import { randomBytes, randomUUID } from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs, promisify } from 'node:util';
import pg from 'pg';
import { signingKeys } from '../src/auth/keys.js';
import { signToken } from '../src/auth/tokens.js';
import { loadConfig } from '../src/config.js';
import { createCredential } from '../src/db/credentials.js';
import { createDb } from '../src/db/database.js';
import { openEmbeddedPostgres } from '../src/db/embedded.js';
import { migrateToLatest } from '../src/db/migrate.js';
import { createTenant } from '../src/db/tenants.js';
import { Client, expect, median, percentile, run, throughput, type Measured, type Reply } from './driver.js';
import { createReferenceSchema } from './reference.js';
import type { ServerMessage } from './serve.js';

const USER = 'urn:ietf:params:scim:schemas:core:2.0:User';
const GROUP = 'urn:ietf:params:scim:schemas:core:2.0:Group';
const ENTERPRISE = 'urn:ietf:params:scim:schemas:extension:enterprise:2.0:User';
const PATCH_OP = 'urn:ietf:params:scim:api:messages:2.0:PatchOp';
const DOMAIN = 'bench.example';
const root = fileURLToPath(new URL('..', import.meta.url));

// ---------------------------------------------------------------- sizes

const FULL = {
  users: 20_000,
  classes: 800,
  'class-size': 25,
  'large-classes': '5000,2000,1000',
  requests: 3000,
  warmup: 500,
  concurrency: 16,
  'member-classes': 300,
  grow: 5000,
  'grow-max': 10_000,
  batch: 50,
  cycles: 20,
  'full-gets': 20,
  'scale-accounts': 1_000_000,
  'scale-tenants': 300,
};
const QUICK: typeof FULL = {
  ...FULL,
  users: 1000,
  classes: 40,
  'large-classes': '300,200',
  requests: 300,
  warmup: 100,
  'member-classes': 30,
  grow: 300,
  'grow-max': 600,
  cycles: 5,
  'full-gets': 5,
  'scale-accounts': 20_000,
  'scale-tenants': 10,
};

const { values: args } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    profile: { type: 'string' },
    ...Object.fromEntries(Object.keys(FULL).map((k) => [k, { type: 'string' as const }])),
  },
});
const base = args.quick ? QUICK : FULL;
const option = (name: keyof typeof FULL): string => (args as unknown as Record<string, string | undefined>)[name] ?? String(base[name]);
const count = (name: keyof typeof FULL): number => {
  const n = Number(option(name));
  if (!Number.isInteger(n) || n < 0) throw new Error(`--${name} must be a whole number`);
  return n;
};
const sizes = {
  users: count('users'),
  classes: count('classes'),
  classSize: count('class-size'),
  largeClasses: option('large-classes')
    .split(',')
    .filter((s) => s.trim() !== '')
    .map(Number),
  requests: count('requests'),
  warmup: count('warmup'),
  concurrency: Math.max(1, count('concurrency')),
  memberClasses: count('member-classes'),
  grow: count('grow'),
  growMax: count('grow-max'),
  batch: Math.max(1, count('batch')),
  cycles: Math.max(1, count('cycles')),
  fullGets: Math.max(1, count('full-gets')),
  scaleAccounts: count('scale-accounts'),
  scaleTenants: Math.max(1, count('scale-tenants')),
};
if (sizes.growMax + sizes.batch > sizes.users || Math.max(0, ...sizes.largeClasses) > sizes.users || sizes.requests > sizes.users) {
  throw new Error('--users must be at least --grow-max + --batch, every large class, and --requests');
}

// ---------------------------------------------------------------- servers

interface Server {
  child: ChildProcess;
  url: string;
  /** Resident set size now, and the largest it has been since the process started. */
  rss(): Promise<{ now: number; peak: number }>;
  /** The V8 heap's spaces and memory outside it, as one line for the log. */
  memory(): Promise<string>;
  /** CPU time the process has used so far, microseconds. */
  cpu(): Promise<number>;
  stop(): Promise<void>;
}

function message<T extends ServerMessage['type']>(child: ChildProcess, type: T): Promise<Extract<ServerMessage, { type: T }>> {
  return new Promise((resolve, reject) => {
    const onMessage = (m: ServerMessage): void => {
      if (m.type !== type) return;
      cleanup();
      resolve(m as Extract<ServerMessage, { type: T }>);
    };
    const onExit = (code: number | null): void => {
      cleanup();
      reject(new Error(`the server process exited (code ${code})`));
    };
    const cleanup = (): void => {
      child.off('message', onMessage);
      child.off('exit', onExit);
    };
    child.on('message', onMessage);
    child.on('exit', onExit);
  });
}

const BUILD = path.join(root, '.data/bench/build');

/**
 * Compiles the servers to JavaScript, as npm start runs them: a TypeScript
 * loader in the server process would add its own memory to the figure.
 */
async function build(): Promise<void> {
  const migrations = (await readdir(path.join(root, 'migrations'))).filter((f) => f.endsWith('.ts')).map((f) => path.join('migrations', f));
  const options = ['--ignoreConfig', '--outDir', BUILD, '--rootDir', '.', '--module', 'NodeNext', '--moduleResolution', 'NodeNext', '--target', 'ES2023'];
  options.push('--esModuleInterop', '--skipLibCheck', '--resolveJsonModule', '--types', 'node', '--noCheck');
  await promisify(execFile)(process.execPath, [path.join(root, 'node_modules/typescript/bin/tsc'), ...options, 'bench/serve.ts', ...migrations], { cwd: root });
}

/** The node flags of npm start (package.json), so the server runs here as it does in production. */
async function startFlags(): Promise<string[]> {
  const start = (JSON.parse(await readFile(path.join(root, 'package.json'), 'utf8')) as { scripts: Record<string, string> }).scripts.start ?? '';
  return /\bnode((?:\s+--[\w-]+(?:=\S+)?)*)\s+dist\//.exec(start)?.[1]?.trim().split(/\s+/) ?? [];
}

async function startServerProcess(kind: 'scim' | 'reference', env: NodeJS.ProcessEnv, nodeArgs: string[] = []): Promise<Server> {
  const child = spawn(process.execPath, [...nodeArgs, path.join(BUILD, 'bench/serve.js'), kind], {
    cwd: root,
    env,
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  const { url } = await message(child, 'ready');
  return {
    child,
    url,
    async rss() {
      const reply = message(child, 'rss');
      child.send({ type: 'rss' });
      const { rss, peakRss } = await reply;
      return { now: rss, peak: peakRss };
    },
    async memory() {
      const reply = message(child, 'rss');
      child.send({ type: 'rss' });
      const { detail } = await reply;
      const spaces = Object.entries(detail.spaces).map(([name, s]) => `${name} ${s.usedMb}/${s.committedMb}`);
      return `heap MB used/committed: ${spaces.join(', ')}; external ${detail.externalMb}`;
    },
    async cpu() {
      const reply = message(child, 'cpu');
      child.send({ type: 'cpu' });
      return (await reply).micros;
    },
    async stop() {
      if (child.exitCode !== null) return;
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.disconnect();
      await exited;
    },
  };
}

// ---------------------------------------------------------------- the two sides

interface Found {
  reply: Reply;
  found: number;
}
interface Created {
  reply: Reply;
  id: string;
}

/** The operations of a workload, as each server spells them. */
interface Side {
  label: string;
  findUser(userName: string): Promise<Found>;
  findUserByEmail(email: string): Promise<Found>;
  createUser(prefix: string, n: number): Promise<Created>;
  patchUser(id: string, n: number): Promise<Reply>;
  deleteUser(id: string): Promise<Reply>;
  findClass(displayName: string): Promise<Found>;
  createClass(displayName: string): Promise<Created>;
  addMembers(classId: string, ids: readonly string[]): Promise<Reply>;
  removeMembers(classId: string, ids: readonly string[]): Promise<Reply>;
  getClass(classId: string): Promise<Found>;
}

const userName = (prefix: string, n: number): string => `${prefix}${n}@${DOMAIN}`;

/** A user as Entra's default mappings send it, with the enterprise extension. */
function entraUser(prefix: string, n: number): Record<string, unknown> {
  const name = `${prefix}${n}`;
  return {
    schemas: [USER, ENTERPRISE],
    externalId: randomUUID(),
    userName: userName(prefix, n),
    active: true,
    displayName: `Pupil ${name}`,
    name: { givenName: 'Pupil', familyName: name, formatted: `Pupil ${name}` },
    emails: [{ primary: true, type: 'work', value: userName(prefix, n) }],
    [ENTERPRISE]: { employeeNumber: String(100000 + n), department: 'Norra skolan', organization: 'Bench kommun' },
  };
}

const json = (reply: Reply): Record<string, unknown> => JSON.parse(reply.body) as Record<string, unknown>;
const total = (reply: Reply): number => Number(json(reply).totalResults);
const filter = (text: string): string => encodeURIComponent(text);

function scimSide(client: Client): Side {
  const members = (ids: readonly string[]) => ids.map((value) => ({ value }));
  return {
    label: 'SCIM',
    async findUser(name) {
      const reply = expect(await client.send('GET', `/Users?filter=${filter(`userName eq "${name}"`)}`), 200);
      return { reply, found: total(reply) };
    },
    async findUserByEmail(email) {
      const reply = expect(await client.send('GET', `/Users?filter=${filter(`emails[type eq "work"].value eq "${email}"`)}`), 200);
      return { reply, found: total(reply) };
    },
    async createUser(prefix, n) {
      const reply = expect(await client.send('POST', '/Users', entraUser(prefix, n)), 201);
      return { reply, id: String(json(reply).id) };
    },
    async patchUser(id, n) {
      return expect(
        await client.send('PATCH', `/Users/${id}`, {
          schemas: [PATCH_OP],
          Operations: [
            { op: 'Replace', path: 'displayName', value: `Changed ${n}` },
            { op: 'Replace', path: 'name.givenName', value: `Given ${n}` },
            { op: 'Replace', path: 'name.familyName', value: `Family ${n}` },
          ],
        }),
        200,
      );
    },
    async deleteUser(id) {
      return expect(await client.send('DELETE', `/Users/${id}`), 204);
    },
    async findClass(displayName) {
      const reply = expect(await client.send('GET', `/Groups?filter=${filter(`displayName eq "${displayName}"`)}&excludedAttributes=members`), 200);
      return { reply, found: total(reply) };
    },
    async createClass(displayName) {
      const reply = expect(await client.send('POST', '/Groups', { schemas: [GROUP], externalId: randomUUID(), displayName }), 201);
      return { reply, id: String(json(reply).id) };
    },
    async addMembers(classId, ids) {
      return expect(await client.send('PATCH', `/Groups/${classId}`, { schemas: [PATCH_OP], Operations: [{ op: 'Add', path: 'members', value: members(ids) }] }), 204);
    },
    async removeMembers(classId, ids) {
      return expect(await client.send('PATCH', `/Groups/${classId}`, { schemas: [PATCH_OP], Operations: [{ op: 'Remove', path: 'members', value: members(ids) }] }), 204);
    },
    async getClass(classId) {
      const reply = expect(await client.send('GET', `/Groups/${classId}`), 200);
      return { reply, found: (json(reply).members as unknown[] | undefined)?.length ?? 0 };
    },
  };
}

function referenceSide(client: Client): Side {
  return {
    label: 'reference',
    async findUser(name) {
      const reply = expect(await client.send('GET', `/users?userName=${encodeURIComponent(name)}`), 200);
      return { reply, found: total(reply) };
    },
    async findUserByEmail(email) {
      const reply = expect(await client.send('GET', `/users?email=${encodeURIComponent(email)}`), 200);
      return { reply, found: total(reply) };
    },
    async createUser(prefix, n) {
      const reply = expect(await client.send('POST', '/users', entraUser(prefix, n)), 201);
      return { reply, id: String(json(reply).id) };
    },
    async patchUser(id, n) {
      return expect(await client.send('PATCH', `/users/${id}`, { displayName: `Changed ${n}`, givenName: `Given ${n}`, familyName: `Family ${n}` }), 200);
    },
    async deleteUser(id) {
      return expect(await client.send('DELETE', `/users/${id}`), 204);
    },
    async findClass(displayName) {
      const reply = expect(await client.send('GET', `/classes?displayName=${encodeURIComponent(displayName)}`), 200);
      return { reply, found: total(reply) };
    },
    async createClass(displayName) {
      const reply = expect(await client.send('POST', '/classes', { externalId: randomUUID(), displayName }), 201);
      return { reply, id: String(json(reply).id) };
    },
    async addMembers(classId, ids) {
      return expect(await client.send('PATCH', `/classes/${classId}/members`, { add: ids }), 204);
    },
    async removeMembers(classId, ids) {
      return expect(await client.send('PATCH', `/classes/${classId}/members`, { remove: ids }), 204);
    },
    async getClass(classId) {
      const reply = expect(await client.send('GET', `/classes/${classId}`), 200);
      return { reply, found: (json(reply).members as unknown[] | undefined)?.length ?? 0 };
    },
  };
}

const check = (found: Found, expected: number, what: string): Reply => {
  if (found.found !== expected) throw new Error(`${what}: found ${found.found}, expected ${expected}`);
  return found.reply;
};

// ---------------------------------------------------------------- workloads

interface Sync {
  /** Wall time of each part: users (lookup and create), classes (lookup and create), members. */
  partsMs: [number, number, number];
  userIds: string[];
  classIds: Map<string, string>;
}

const chunks = <T>(list: readonly T[], size: number): T[][] => Array.from({ length: Math.ceil(list.length / size) }, (_, i) => list.slice(i * size, (i + 1) * size));

/** 0..n-1 in TURNS ranges [from, to). */
const turnRanges = (n: number): [number, number][] => Array.from({ length: TURNS }, (_, turn) => [Math.floor((turn * n) / TURNS), Math.floor(((turn + 1) * n) / TURNS)]);

/**
 * Entra's initial cycle as turns (see measureTurns): for every user a lookup
 * by userName then a create; for every class a lookup by displayName then a
 * create; then the members in PATCH batches, the batches of one class in
 * order, several classes at once. Each part in TURNS turns; run in order, the
 * turns are the whole cycle, and the Sync fills as they run.
 */
function initialSyncTurns(side: Side): { turns: (() => Promise<Measured>)[]; sync: Sync } {
  const c = sizes.concurrency;
  const sync: Sync = { partsMs: [0, 0, 0], userIds: [], classIds: new Map() };
  const part = (k: 0 | 1 | 2, work: () => Promise<Measured>) => async () => {
    const measured = await work();
    sync.partsMs[k] += measured.wallMs;
    return measured;
  };
  // The classes and their members, once every user has its id.
  let classList: { name: string; members: string[] }[] | undefined;
  const classes = () =>
    (classList ??= [
      ...sizes.largeClasses.map((size) => ({ name: `Large class ${size}`, members: sync.userIds.slice(0, size) })),
      ...Array.from({ length: sizes.classes }, (_, i) => ({
        name: `Class ${i}`,
        members: Array.from({ length: sizes.classSize }, (_, k) => sync.userIds[(i * sizes.classSize + k) % sizes.users] ?? ''),
      })),
    ]);
  const classCount = sizes.largeClasses.length + sizes.classes;
  const users = turnRanges(sizes.users).map(([from, to]) =>
    part(0, () =>
      run(to - from, c, async (j) => {
        const i = from + j;
        const lookup = check(await side.findUser(userName('s', i)), 0, 'user lookup');
        const created = await side.createUser('s', i);
        sync.userIds[i] = created.id;
        return [lookup, created.reply];
      }),
    ),
  );
  const created = turnRanges(classCount).map(([from, to]) =>
    part(1, () =>
      run(to - from, c, async (j) => {
        const spec = classes()[from + j];
        if (!spec) return [];
        const lookup = check(await side.findClass(spec.name), 0, 'class lookup');
        const made = await side.createClass(spec.name);
        sync.classIds.set(spec.name, made.id);
        return [lookup, made.reply];
      }),
    ),
  );
  // Largest classes first, so their sequential batches do not trail at the end.
  const members = turnRanges(classCount).map(([from, to]) =>
    part(2, () =>
      run(to - from, c, async (j) => {
        const spec = classes()[from + j];
        const id = spec ? sync.classIds.get(spec.name) : undefined;
        if (!spec || !id) return [];
        const replies: Reply[] = [];
        for (const batch of chunks(spec.members, sizes.batch)) replies.push(await side.addMembers(id, batch));
        return replies;
      }),
    ),
  );
  return { turns: [...users, ...created, ...members], sync };
}

/** One server's classes and batch for addAtSizes: the class of 100 and the growing one. */
interface AddAt {
  side: Side;
  classIds: readonly [string, string];
  batch: readonly string[];
}

/**
 * The cost of adding a batch at a class's size: add it, time it, remove it
 * again. In every cycle both classes of the SCIM server, then both of the
 * reference, so all four figures see the same moments of a noisy machine.
 * Answers [SCIM, reference], each [class of 100, growing class].
 */
async function addAtSizes(servers: readonly [AddAt, AddAt]): Promise<[[Measured, Measured], [Measured, Measured]]> {
  const empty = (): Measured => ({ count: 0, errors: 0, wallMs: 0, latencies: [], failures: [] });
  const measured: [[Measured, Measured], [Measured, Measured]] = [
    [empty(), empty()],
    [empty(), empty()],
  ];
  for (let i = 0; i < sizes.cycles; i++) {
    for (const s of [0, 1] as const) {
      const { side, classIds, batch } = servers[s];
      for (const k of [0, 1] as const) {
        const added = await side.addMembers(classIds[k], batch);
        await side.removeMembers(classIds[k], batch);
        measured[s][k].latencies.push(added.ms);
        measured[s][k].count++;
        measured[s][k].wallMs += added.ms;
      }
    }
  }
  return measured;
}

/** Each user operation --warmup times on a side, on users of its own, unmeasured. */
async function warmUp(side: Side): Promise<void> {
  const ids: string[] = [];
  const c = sizes.concurrency;
  const w = sizes.warmup;
  const runs = [
    await run(w, c, async (i) => {
      const made = await side.createUser('w', i);
      ids[i] = made.id;
      return [made.reply];
    }),
    await run(w, c, async (i) => [check(await side.findUser(userName('w', i)), 1, 'warm-up lookup')]),
    await run(w, c, async (i) => [await side.patchUser(ids[i] ?? '', i)]),
    await run(w, c, async (i) => [await side.deleteUser(ids[i] ?? '')]),
  ];
  const failures = runs.flatMap((m) => m.failures);
  if (failures.length > 0) throw new Error(`warm-up on ${side.label}: ${failures.join('; ')}`);
}

async function grow(side: Side, classId: string, members: readonly string[]): Promise<Measured> {
  const batches = chunks(members, sizes.batch);
  return run(batches.length, 1, async (i) => [await side.addMembers(classId, batches[i] ?? [])]);
}

/** Spreads i over 0..n-1 so consecutive requests hit different rows. */
const spread = (i: number, n: number): number => (i * 7919) % n;

// ---------------------------------------------------------------- report

interface Row {
  name: string;
  scim: Measured;
  reference: Measured;
  /** CPU microseconds per request of each side's server and of PostgreSQL, where measured. */
  cpu?: { scim: Cpu; reference: Cpu };
}

interface Cpu {
  server: number;
  postgres: number;
}

/**
 * CPU time of every PostgreSQL process on this machine so far, microseconds
 * (Linux /proc; NaN elsewhere or for a remote server). Only the side being
 * measured sends queries, so a difference belongs to it.
 */
async function postgresCpu(): Promise<number> {
  let ticks = 0;
  try {
    for (const pid of await readdir('/proc')) {
      if (!/^\d+$/.test(pid)) continue;
      const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
      const close = stat.lastIndexOf(')');
      if (!stat.slice(0, close).endsWith('(postgres')) continue;
      const fields = stat.slice(close + 2).split(' ');
      ticks += Number(fields[11]) + Number(fields[12]);
    }
  } catch {
    return NaN;
  }
  return ticks * 10_000; // USER_HZ is 100 on Linux
}

/** Runs ANALYZE when it is due (see main); called only between measurements. */
let analyzeIfDue = async (): Promise<void> => undefined;

/** Probes of each side's server CPU, set once the servers run. */
let cpuProbes: { scim: () => Promise<number>; reference: () => Promise<number> } | undefined;

async function measuredCpu(server: () => Promise<number>, work: () => Promise<Measured>): Promise<[Measured, Cpu | undefined]> {
  await analyzeIfDue();
  if (!cpuProbes) return [await work(), undefined];
  const [s0, p0] = [await server(), await postgresCpu()];
  const measured = await work();
  const [s1, p1] = [await server(), await postgresCpu()];
  const n = Math.max(1, measured.count);
  // A PostgreSQL process that ended meanwhile (the seed's connections) takes its time along: no figure then.
  return [measured, { server: (s1 - s0) / n, postgres: p1 >= p0 ? (p1 - p0) / n : NaN }];
}

const rows: Row[] = [];
const targets: { name: string; figure: string; pass: boolean }[] = [];

const stats = (m: Measured) => ({ rps: throughput(m), p50: median(m.latencies), p99: percentile(m.latencies, 99) });
const fmt = (x: number, digits = 1): string => (Number.isFinite(x) ? x.toFixed(digits) : '-');
const ratio = (a: number, b: number): string => `${fmt(a / b, 2)}x`;

function pad(cells: string[][]): string {
  const widths = cells[0]?.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? '').length))) ?? [];
  return cells.map((r) => r.map((cell, i) => (i === 0 ? cell.padEnd(widths[i] ?? 0) : cell.padStart(widths[i] ?? 0))).join('  ')).join('\n');
}

function printRows(): void {
  const header = ['operation', 'req/s', 'x ref', 'p50 ms', 'x ref', 'p99 ms', 'x ref', 'ref req/s', 'ref p50', 'ref p99', 'errors', 'cpu us', 'x ref', 'pg us', 'x ref'];
  const body = rows.map(({ name, scim, reference, cpu }) => {
    const s = stats(scim);
    const r = stats(reference);
    const cpuCells = cpu
      ? [fmt(cpu.scim.server, 0), ratio(cpu.scim.server, cpu.reference.server), fmt(cpu.scim.postgres, 0), ratio(cpu.scim.postgres, cpu.reference.postgres)]
      : ['', '', '', ''];
    return [name, fmt(s.rps, 0), ratio(s.rps, r.rps), fmt(s.p50), ratio(s.p50, r.p50), fmt(s.p99), ratio(s.p99, r.p99), fmt(r.rps, 0), fmt(r.p50), fmt(r.p99), String(scim.errors + reference.errors), ...cpuCells];
  });
  process.stdout.write(`\n${pad([header, ...body])}\n`);
  process.stdout.write('cpu us: CPU microseconds per request of the server process; pg us: of all PostgreSQL processes (local servers only)\n');
}

function target(name: string, figure: string, pass: boolean): void {
  targets.push({ name, figure, pass });
}

function log(text: string): void {
  process.stderr.write(`# ${text}\n`);
}

async function measure(name: string, scim: () => Promise<Measured>, reference: () => Promise<Measured>): Promise<Row> {
  const [scimMeasured, scimCpu] = await measuredCpu(() => cpuProbes?.scim() ?? Promise.resolve(NaN), scim);
  const [referenceMeasured, referenceCpu] = await measuredCpu(() => cpuProbes?.reference() ?? Promise.resolve(NaN), reference);
  const row: Row = { name, scim: scimMeasured, reference: referenceMeasured, ...(scimCpu && referenceCpu ? { cpu: { scim: scimCpu, reference: referenceCpu } } : {}) };
  rows.push(row);
  logRow(row);
  return row;
}

function logRow(row: Row): void {
  const s = stats(row.scim);
  const r = stats(row.reference);
  log(`${row.name}: ${fmt(s.rps, 0)} req/s (reference ${fmt(r.rps, 0)}), p99 ${fmt(s.p99)} ms (reference ${fmt(r.p99)})`);
  for (const failure of [...row.scim.failures, ...row.reference.failures]) log(`  failure: ${failure}`);
}

/** How many turns a measurement in turns takes (see measureInTurns). */
const TURNS = 6;

type Task = (i: number) => Promise<Reply[]>;

/**
 * Requests 0..n-1 of an operation on both servers, in turns: a sixth on the
 * SCIM server, the same sixth on the reference, and so on.
 */
async function measureInTurns(name: string, n: number, scim: Task, reference: Task): Promise<Row> {
  const c = sizes.concurrency;
  return measureTurns(
    name,
    turnRanges(n).map(([from, to]) => [() => run(to - from, c, (j) => scim(from + j)), () => run(to - from, c, (j) => reference(from + j))] as const),
  );
}

/**
 * A workload cut into turns, each run on the SCIM server and then on the
 * reference. This machine's speed drifts by tens of percent over seconds; in
 * turns, a drift falls on both sides instead of on whichever ran second. A
 * side's figures add up its turns.
 */
async function measureTurns(name: string, turns: readonly (readonly [() => Promise<Measured>, () => Promise<Measured>])[]): Promise<Row> {
  const sides = [0, 1].map(() => ({
    measured: { count: 0, errors: 0, wallMs: 0, latencies: [] as number[], failures: [] as string[] } satisfies Measured,
    cpu: { server: 0, postgres: 0 },
  }));
  const probes = [() => cpuProbes?.scim() ?? Promise.resolve(NaN), () => cpuProbes?.reference() ?? Promise.resolve(NaN)];
  for (const turn of turns) {
    for (const [k, side] of sides.entries()) {
      const [m, cpu] = await measuredCpu(probes[k] ?? (() => Promise.resolve(NaN)), turn[k] ?? (() => run(0, 1, async () => [])));
      side.measured.count += m.count;
      side.measured.errors += m.errors;
      side.measured.wallMs += m.wallMs;
      side.measured.latencies.push(...m.latencies);
      side.measured.failures.push(...m.failures.slice(0, Math.max(0, 5 - side.measured.failures.length)));
      side.cpu.server += (cpu?.server ?? NaN) * m.count;
      side.cpu.postgres += (cpu?.postgres ?? NaN) * m.count;
    }
  }
  const [s, r] = sides.map(({ measured, cpu }) => ({
    measured,
    cpu: { server: cpu.server / Math.max(1, measured.count), postgres: cpu.postgres / Math.max(1, measured.count) },
  }));
  if (!s || !r) throw new Error('two sides');
  const row: Row = { name, scim: s.measured, reference: r.measured, ...(cpuProbes ? { cpu: { scim: s.cpu, reference: r.cpu } } : {}) };
  rows.push(row);
  logRow(row);
  return row;
}

/** The throughput and p99 targets of an operation (>= 0.5x reference req/s, p99 <= 3x). */
function userTargets(row: Row): void {
  const s = stats(row.scim);
  const r = stats(row.reference);
  target(`${row.name}: req/s >= 0.5x reference`, ratio(s.rps, r.rps), s.rps / r.rps >= 0.5 && row.scim.errors === 0);
  target(`${row.name}: p99 <= 3x reference`, ratio(s.p99, r.p99), s.p99 / r.p99 <= 3);
}

// ---------------------------------------------------------------- scale

/** Set-based seed: accounts spread over tenants of their own, interleaved on the heap. */
async function seedScale(pool: pg.Pool, accounts: number, tenants: number): Promise<void> {
  await pool.query(`INSERT INTO tenants (name, verified_domains) SELECT 'Scale school ' || g, ARRAY['scale' || g || '.example'] FROM generate_series(1, $1::int) g`, [tenants]);
  const ids = (await pool.query<{ id: string }>(`SELECT id FROM tenants WHERE name LIKE 'Scale school %' ORDER BY id`)).rows.map((r) => r.id);
  const columns = (g: string) => `
      (ARRAY[${ids.map((id) => `'${id}'::uuid`).join(',')}])[1 + ${g} % ${ids.length}] AS tenant_id,
      'user' || ${g} || '@scale.example' AS user_name,
      md5(${g}::text)::uuid::text AS external_id,
      'Scale ' || ${g} AS display_name`;
  const step = 100_000;
  for (let from = 1; from <= accounts; from += step) {
    const to = Math.min(accounts, from + step - 1);
    await Promise.all([
      pool.query(`
        INSERT INTO accounts (tenant_id, managed_by, role, user_name, external_id, email, given_name, family_name, display_name, active, scim)
        SELECT tenant_id, 'sync', CASE WHEN g % 12 = 0 THEN 'teacher' ELSE 'student' END, user_name, external_id, user_name, 'Scale', display_name, display_name, true,
               jsonb_build_object('schemas', jsonb_build_array('${USER}'), 'userName', user_name, 'externalId', external_id, 'displayName', display_name,
                                  'name', jsonb_build_object('givenName', 'Scale', 'familyName', display_name),
                                  'emails', jsonb_build_array(jsonb_build_object('value', user_name, 'type', 'work', 'primary', true)))
          FROM (SELECT g, ${columns('g')} FROM generate_series(${from}, ${to}) g) s`),
      pool.query(`
        INSERT INTO reference.accounts (tenant_id, user_name, external_id, email, given_name, family_name, display_name, scim)
        SELECT tenant_id, user_name, external_id, user_name, 'Scale', display_name, display_name,
               jsonb_build_object('userName', user_name, 'displayName', display_name,
                                  'emails', jsonb_build_array(jsonb_build_object('value', user_name, 'type', 'work', 'primary', true)))
          FROM (SELECT g, ${columns('g')} FROM generate_series(${from}, ${to}) g) s`),
    ]);
    log(`seeded ${to} of ${accounts} accounts`);
  }
  await pool.query('ANALYZE accounts');
  await pool.query('ANALYZE reference.accounts');
  // Write the seed out now, so its checkpoint does not fall into the
  // measurement, and let the kernel write back its dirty pages (gigabytes on
  // the local server), which slowed both servers' CPU for a while after.
  await pool.query('CHECKPOINT');
  await promisify(execFile)('sync').catch(() => undefined);
}

/**
 * Waits for the machine and the servers to settle after the seed. For some
 * seconds after its minute of bulk writes, this machine ran both node servers
 * at up to four times their CPU per request (the reference's per lookup: 737
 * µs right after the seed, then 311, 269 and 200 µs, and about 180 µs from
 * the sixth round on; settling took 10 to 42 s over four runs). And a server
 * idle through the seed has had V8 drop compiled code, which it compiles
 * again on the next requests. Both would be charged to the million accounts.
 * So: rounds of unmeasured lookups on both servers, until each server's CPU
 * per lookup in its last three rounds is within 10% of their median, for at
 * most 90 seconds.
 */
async function settle(sides: readonly { side: Side; server: Server }[]): Promise<void> {
  const started = performance.now();
  const costs = sides.map((): number[] => []);
  const round = 1000;
  const steady = (c: readonly number[]): boolean => {
    const last = c.slice(-3);
    const mid = median(last);
    return last.length === 3 && (!Number.isFinite(mid) || last.every((x) => Math.abs(x - mid) <= 0.1 * mid));
  };
  while (performance.now() - started < 90_000 && !costs.every(steady)) {
    for (const [k, { side, server }] of sides.entries()) {
      const before = await server.cpu();
      await run(round, sizes.concurrency, async (i) => [check(await side.findUser(userName('s', spread(i * 7, sizes.users))), 1, 'settling lookup')]);
      costs[k]?.push(((await server.cpu()) - before) / round);
    }
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
  const report = sides.map(({ side }, k) => `${side.label} ${(costs[k] ?? []).map((c) => fmt(c, 0)).join(', ')}`);
  log(`settled in ${fmt((performance.now() - started) / 1000)} s; CPU per lookup (µs): ${report.join('; ')}`);
}

// ---------------------------------------------------------------- main

async function main(): Promise<void> {
  const startedAt = performance.now();
  log('compiling the servers');
  await build();
  const embedded = process.env.DATABASE_URL ? undefined : await openEmbeddedPostgres({ dataDir: path.resolve(root, '.data/bench'), database: 'postgres' });
  const adminUrl = process.env.DATABASE_URL ?? embedded?.adminUrl ?? '';
  const name = `portal_scim_bench_${process.pid}`;
  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  const version = (await admin.query<{ server_version: string }>('SHOW server_version')).rows[0]?.server_version ?? '?';
  await admin.query(`CREATE DATABASE ${name}`);
  const url = new URL(adminUrl);
  url.pathname = `/${name}`;
  const databaseUrl = url.toString();
  const { db, pool } = createDb(databaseUrl, { poolSize: 4, statementTimeoutMs: 600_000 });
  const servers: Server[] = [];
  try {
    await migrateToLatest(db);
    await createReferenceSchema(pool);
    // PostgreSQL analyzes a growing table by itself (autovacuum, every minute
    // by default). Where a server has that turned off, the benchmark does it
    // at the same pace, so plans rest on statistics as they would in
    // production: between measurements, where its own CPU falls on neither side.
    const autovacuum = (await pool.query<{ autovacuum: string }>('SHOW autovacuum')).rows[0]?.autovacuum === 'on';
    if (!autovacuum) {
      let analyzedAt = performance.now();
      analyzeIfDue = async () => {
        if (performance.now() - analyzedAt < 60_000) return;
        await pool.query('ANALYZE').catch((error: unknown) => log(`ANALYZE failed: ${String(error)}`));
        analyzedAt = performance.now();
      };
    }
    const secret = randomBytes(32).toString('hex');
    const config = loadConfig({ JWT_SECRET: secret });
    const tenant = await createTenant(db, { name: 'Bench School', verifiedDomains: [DOMAIN] });
    const credential = await createCredential(db, { tenantId: tenant.id, kind: 'token' });
    const token = signToken({ keys: signingKeys(secret), issuer: config.jwtIssuer, audience: config.jwtAudience }, { tid: tenant.id, jti: credential.id });

    // The per-tenant rate limit is a policy, not a capacity: off, so the
    // benchmark measures what the server can do.
    const env = { ...process.env, DATABASE_URL: databaseUrl, JWT_SECRET: secret, LOG_LEVEL: 'warn', PORT: '0', HOST: '127.0.0.1', PUBLIC_URL: 'http://127.0.0.1', RATE_LIMIT_PER_SECOND: '0' };
    const profile = args.profile ? ['--cpu-prof', `--cpu-prof-dir=${path.resolve(args.profile)}`] : [];
    const scimServer = await startServerProcess('scim', env, [...(await startFlags()), ...profile]);
    servers.push(scimServer);
    const referenceServer = await startServerProcess('reference', env);
    servers.push(referenceServer);
    cpuProbes = { scim: () => scimServer.cpu(), reference: () => referenceServer.cpu() };
    const scimClient = new Client(`${scimServer.url}/scim/v2`, { authorization: `Bearer ${token}` });
    const referenceClient = new Client(referenceServer.url, { 'x-tenant': randomUUID() });
    const scim = scimSide(scimClient);
    const reference = referenceSide(referenceClient);
    const c = sizes.concurrency;
    const n = sizes.requests;

    process.stdout.write(
      `portal-scim benchmark: ${os.cpus().length} cores, ${fmt(os.totalmem() / 2 ** 30, 0)} GiB, node ${process.version}, ` +
        `PostgreSQL ${version} (${process.env.DATABASE_URL ? 'DATABASE_URL' : 'embedded'}${autovacuum ? '' : ', autovacuum off: ANALYZE every 60 s instead'}), concurrency ${c}\n` +
        `sizes: ${JSON.stringify(sizes)}\n` +
        `server node flags (as npm start): ${(await startFlags()).join(' ') || 'none'}\n`,
    );

    // (7) Initial sync first, on an empty tenant, as Entra's first cycle.
    log(`initial sync: ${sizes.users} users, ${sizes.classes} classes of ${sizes.classSize} and classes of ${sizes.largeClasses.join(', ')}`);
    const [scimPlan, referencePlan] = [initialSyncTurns(scim), initialSyncTurns(reference)];
    const sync = await measureTurns(
      'initial sync (all requests)',
      scimPlan.turns.map((turn, i) => [turn, referencePlan.turns[i] ?? (() => Promise.reject(new Error('the two plans differ')))] as const),
    );
    const [scimSync, referenceSync] = [scimPlan.sync, referencePlan.sync];
    const rss = await scimServer.rss();
    const referenceRss = await referenceServer.rss();
    const mb = (bytes: number): string => `${fmt(bytes / 2 ** 20)} MB`;
    log(`initial sync wall: ${fmt(sync.scim.wallMs / 1000)} s (reference ${fmt(sync.reference.wallMs / 1000)} s); RSS ${mb(rss.now)}, at most ${mb(rss.peak)}`);
    const parts = ['users', 'classes', 'members'].map((part, i) => `${part} ${fmt((scimSync.partsMs[i] ?? 0) / 1000)} s (reference ${fmt((referenceSync.partsMs[i] ?? 0) / 1000)} s)`);
    log(`initial sync parts: ${parts.join(', ')}`);
    log(`server memory after initial sync: ${await scimServer.memory()}`);

    // (1)-(3), (6): users, on the tenant the sync filled.
    // Both servers first run each user operation --warmup times, uncounted, on
    // users of their own: the initial sync never changes or deletes a user, so
    // V8 would otherwise compile those paths inside the measurement. A
    // running server has long compiled them. Then each operation is
    // measured in turns (measureInTurns).
    log(`warm-up: ${sizes.warmup} creates, lookups, PATCHes and deletes on each server`);
    for (const side of [scim, reference]) await warmUp(side);
    const created: [string[], string[]] = [[], []];
    const createUser = (side: Side, into: string[]) => async (i: number) => {
      const made = await side.createUser('p', i);
      into[i] = made.id;
      return [made.reply];
    };
    const post = await measureInTurns('POST /Users', n, createUser(scim, created[0]), createUser(reference, created[1]));
    const lookupUser = (side: Side) => async (i: number) => [check(await side.findUser(userName('s', spread(i, sizes.users))), 1, 'userName lookup')];
    const get = await measureInTurns('GET /Users?filter=userName eq', n, lookupUser(scim), lookupUser(reference));
    const lookupEmail = (side: Side) => async (i: number) => [check(await side.findUserByEmail(userName('s', spread(i, sizes.users))), 1, 'e-mail lookup')];
    await measureInTurns('GET /Users?filter=emails[type eq "work"].value eq', n, lookupEmail(scim), lookupEmail(reference));
    const patchUser = (side: Side, ids: string[]) => async (i: number) => [await side.patchUser(ids[i] ?? '', i)];
    const patchRow = await measureInTurns('PATCH /Users (3 Replace)', n, patchUser(scim, created[0]), patchUser(reference, created[1]));
    const deleteUser = (side: Side, ids: string[]) => async (i: number) => [await side.deleteUser(ids[i] ?? '')];
    const del = await measureInTurns('DELETE /Users', n, deleteUser(scim, created[0]), deleteUser(reference, created[1]));

    // (5) Class lookups, Entra's before every class change, and a full read.
    const lookupClass = (side: Side) => async (i: number) => [check(await side.findClass(`Class ${spread(i, Math.max(1, sizes.classes))}`), 1, 'class lookup')];
    const classLookup = sizes.classes > 0 ? await measureInTurns('GET /Groups?filter=displayName eq (excl. members)', n, lookupClass(scim), lookupClass(reference)) : undefined;
    const largest = Math.max(0, ...sizes.largeClasses);
    const largeName = `Large class ${largest}`;
    const lookupLarge = (side: Side) => async () => [check(await side.findClass(largeName), 1, 'large class lookup')];
    const largeLookup = largest > 0 ? await measureInTurns(`  same, the ${largest}-member class`, n, lookupLarge(scim), lookupLarge(reference)) : undefined;
    const fullGet = (side: Side, id: string) => run(sizes.fullGets, 1, async () => [check(await side.getClass(id), largest, 'full class')]);
    const full =
      largest > 0
        ? await measure(
            `GET /Groups/{id}, ${largest} members`,
            () => fullGet(scim, scimSync.classIds.get(largeName) ?? ''),
            () => fullGet(reference, referenceSync.classIds.get(largeName) ?? ''),
          )
        : undefined;

    // (4) Membership: many classes at once, then one class growing.
    const parallelMembers = async (side: Side, ids: string[]) => {
      const classIds: string[] = [];
      await run(sizes.memberClasses, c, async (i) => {
        const made = await side.createClass(`Member class ${i}`);
        classIds[i] = made.id;
        return [made.reply];
      });
      return run(sizes.memberClasses, c, async (i) => [
        await side.addMembers(classIds[i] ?? '', Array.from({ length: sizes.classSize }, (_, k) => ids[spread(i * sizes.classSize + k, sizes.users)] ?? '')),
      ]);
    };
    await measure(`PATCH /Groups add ${sizes.classSize}, ${sizes.memberClasses} classes`, () => parallelMembers(scim, scimSync.userIds), () => parallelMembers(reference, referenceSync.userIds));

    // One class grows in batches; a class of 100 is measured beside it at
    // every size, so "at 100" and "at 10,000" are figures of the same moments.
    const sides = [scim, reference] as const;
    const ids = [scimSync.userIds, referenceSync.userIds] as const;
    const growing = await Promise.all(sides.map((side) => side.createClass('Growing class')));
    const small = await Promise.all(sides.map((side) => side.createClass('Class of 100')));
    const cycleBatch = (k: 0 | 1) => ids[k].slice(sizes.users - sizes.batch);
    const growTo = async (k: 0 | 1, from: number, to: number) => grow(sides[k], growing[k]?.id ?? '', ids[k].slice(from, to));
    await Promise.all(([0, 1] as const).map((k) => grow(sides[k], small[k]?.id ?? '', ids[k].slice(0, 100))));
    const paired: { size: number; small: Row; big: Row }[] = [];
    let current = 0;
    for (const size of [...new Set([sizes.grow, sizes.growMax])].filter((s) => s >= 100).sort((a, b) => a - b)) {
      await measure(`PATCH /Groups add ${sizes.batch}, growing ${current} -> ${size}`, () => growTo(0, current, size), () => growTo(1, current, size));
      current = size;
      const [s, r] = await addAtSizes([
        { side: scim, classIds: [small[0]?.id ?? '', growing[0]?.id ?? ''], batch: cycleBatch(0) },
        { side: reference, classIds: [small[1]?.id ?? '', growing[1]?.id ?? ''], batch: cycleBatch(1) },
      ]);
      const row = (name: string, k: 0 | 1): Row => ({ name, scim: s[k], reference: r[k] });
      const pair = { size, small: row(`PATCH /Groups add ${sizes.batch} at 100 members (beside ${size})`, 0), big: row(`PATCH /Groups add ${sizes.batch} at ${size} members`, 1) };
      rows.push(pair.small, pair.big);
      paired.push(pair);
    }

    // (3) Scale: a million accounts of other tenants in the same tables.
    let scaleGet: Row | undefined;
    let scalePost: Row | undefined;
    if (sizes.scaleAccounts > 0) {
      log(`seeding ${sizes.scaleAccounts} accounts over ${sizes.scaleTenants} tenants`);
      const seedStarted = performance.now();
      await seedScale(pool, sizes.scaleAccounts, sizes.scaleTenants);
      log(`seeded in ${fmt((performance.now() - seedStarted) / 1000)} s`);
      await settle([
        { side: scim, server: scimServer },
        { side: reference, server: referenceServer },
      ]);
      scaleGet = await measureInTurns(`GET /Users?filter=userName eq, +${sizes.scaleAccounts} accounts`, n, lookupUser(scim), lookupUser(reference));
      const createOther = (side: Side) => async (i: number) => [(await side.createUser('q', i)).reply];
      scalePost = await measureInTurns(`POST /Users, +${sizes.scaleAccounts} accounts`, n, createOther(scim), createOther(reference));
    }

    // ------------------------------------------------------------ targets
    const syncRatio = sync.scim.wallMs / sync.reference.wallMs;
    target('initial sync wall time <= 2.0x reference, no errors', `${fmt(sync.scim.wallMs / 1000)} s / ${fmt(sync.reference.wallMs / 1000)} s = ${fmt(syncRatio, 2)}x, ${sync.scim.errors} errors`, syncRatio <= 2 && sync.scim.errors === 0);
    for (const row of [post, get, patchRow, del]) userTargets(row);
    const last = paired.find((p) => p.size === sizes.growMax) ?? paired[paired.length - 1];
    if (last) {
      const costRatio = median(last.big.scim.latencies) / median(last.small.scim.latencies);
      target(
        `add ${sizes.batch} members: at ${last.size} within 20% of at 100`,
        `${fmt(median(last.big.scim.latencies))} ms / ${fmt(median(last.small.scim.latencies))} ms = ${fmt(costRatio, 2)}x`,
        Math.abs(costRatio - 1) <= 0.2,
      );
      for (const row of [last.small, last.big]) {
        const r = median(row.reference.latencies) / median(row.scim.latencies);
        target(`${row.name.replace('PATCH /Groups ', '')}: >= 0.5x reference`, `${fmt(r, 2)}x`, r >= 0.5);
      }
    }
    for (const row of [classLookup, largeLookup]) {
      if (!row) continue;
      const r = stats(row.scim).rps / stats(row.reference).rps;
      target(`${row.name.trim()}: req/s >= 0.5x reference`, `${fmt(r, 2)}x`, r >= 0.5 && row.scim.errors === 0);
    }
    if (full) target(`full GET of the ${largest}-member class < 50 ms (p50)`, `${fmt(median(full.scim.latencies))} ms (p99 ${fmt(percentile(full.scim.latencies, 99))} ms)`, median(full.scim.latencies) < 50);
    // The RSS of one moment depends on when V8 last collected; the largest
    // it has been (from the server's start to the end of the sync) does not.
    target(
      'server RSS after initial sync <= 150 MB (the largest so far)',
      `${mb(rss.peak)}, now ${mb(rss.now)} (reference ${mb(referenceRss.peak)}, ${mb(referenceRss.now)})`,
      rss.peak <= 150 * 2 ** 20,
    );
    for (const [row, before] of [
      [scaleGet, get],
      [scalePost, post],
    ] as const) {
      if (!row) continue;
      const r = stats(before.scim).rps / stats(row.scim).rps;
      target(`${row.name}: req/s within 1.5x of ${sizes.users} accounts`, `${fmt(stats(row.scim).rps, 0)} vs ${fmt(stats(before.scim).rps, 0)} req/s = ${fmt(r, 2)}x`, r <= 1.5 && row.scim.errors === 0);
    }

    printRows();
    const end = await scimServer.rss();
    process.stdout.write(
      `\nserver RSS after initial sync: ${mb(rss.now)}, at most ${mb(rss.peak)} (reference ${mb(referenceRss.now)}, at most ${mb(referenceRss.peak)}); ` +
        `at the end ${mb(end.now)}, at most ${mb(end.peak)}\n\n`,
    );
    process.stdout.write(`${pad([['target', 'figure', 'result'], ...targets.map((t) => [t.name, t.figure, t.pass ? 'PASS' : 'MISS'])])}\n`);
    process.stdout.write(`\n${targets.filter((t) => t.pass).length} of ${targets.length} targets met; whole run ${fmt((performance.now() - startedAt) / 1000, 0)} s\n`);
    scimClient.close();
    referenceClient.close();
  } finally {
    for (const server of servers) await server.stop().catch(() => undefined);
    await db.destroy();
    await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
    await admin.end();
    await embedded?.stop();
  }
}

await main();
