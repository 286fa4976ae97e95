// npm run bench: the SCIM server and a reference server (plain fastify + pg,
// one statement per request, bench/reference.ts) under the same Entra-shaped
// workloads over loopback HTTP, each in a process of its own on a fresh
// database. Prints req/s, p50 and p99 per operation with the ratio to the
// reference of the same run, the server's memory, a scale check with a
// million accounts, and PASS/MISS per target. Only ratios of one run compare:
// the machine's speed and noise cancel out of them, the more so as the
// initial sync, the user operations and the class lookups run in turns of
// both servers (measureTurns in settle.ts).
// This module owns the flags, building and starting the servers, and the
// order of the workloads (workloads.ts), measurements (settle.ts) and report
// (report.ts).
//   npm run bench -- [--quick] [--users 20000] [--scale-accounts 1000000] ...
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { readdir, readFile } from 'node:fs/promises';
import { randomBytes, randomUUID } from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs, promisify } from 'node:util';
import { signingKeys } from '../src/auth/keys.js';
import { signToken } from '../src/auth/tokens.js';
import { loadConfig } from '../src/config.js';
import { createCredential } from '../src/db/credentials.js';
import { createDb } from '../src/db/database.js';
import { migrateToLatest } from '../src/db/migrate.js';
import { createTenant } from '../src/db/tenants.js';
import { benchDatabase } from './database.js';
import { Client } from './driver.js';
import { createReferenceSchema } from './reference.js';
import { createReport, fmt, log, mb, printRows, printTargets, setTargets, type Row, type Rss } from './report.js';
import type { ServerMessage } from './serve.js';
import { measure, measureFeedCost, measureInTurns, measureTurns, settle, type Meter } from './settle.js';
import {
  DOMAIN,
  addAtSizes,
  classTasks,
  grow,
  initialSyncTurns,
  parallelMembers,
  referenceSide,
  scimSide,
  seedScale,
  userTasks,
  warmUp,
  type Sizes,
} from './workloads.js';

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

/** The command line: the sizes (--quick, then each size's flag) and where --profile writes the server's CPU profile. */
function parseOptions(): { sizes: Sizes; profile: string | undefined; noFeedCost: boolean } {
  const { values: args } = parseArgs({
    options: {
      quick: { type: 'boolean', default: false },
      profile: { type: 'string' },
      'no-feed-cost': { type: 'boolean', default: false },
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
  const sizes: Sizes = {
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
  return { sizes, profile: args.profile, noFeedCost: args['no-feed-cost'] === true };
}

// ---------------------------------------------------------------- servers

interface Server {
  child: ChildProcess;
  url: string;
  /** Resident set size now, and the largest it has been since the process started. */
  rss(): Promise<Rss>;
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

// ---------------------------------------------------------------- main

async function main(): Promise<void> {
  const { sizes, profile: profileDir, noFeedCost } = parseOptions();
  const startedAt = performance.now();
  log('compiling the servers');
  await build();
  const database = await benchDatabase(root, 'portal_scim_bench');
  const { url: databaseUrl, version } = database;
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
    let analyzeIfDue = async (): Promise<void> => undefined;
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
    const tokenFor = async (name: string, verifiedDomains: string[]) => {
      const tenant = await createTenant(db, { name, verifiedDomains });
      const credential = await createCredential(db, { tenantId: tenant.id, kind: 'token' });
      return signToken({ keys: signingKeys(secret), issuer: config.jwtIssuer, audience: config.jwtAudience }, { tid: tenant.id, jti: credential.id });
    };
    const token = await tokenFor('Bench School', [DOMAIN]);
    // Two more tenants, alike, for what the change feed costs (measureFeedCost).
    const feedTokens = [await tokenFor('Feed School', []), await tokenFor('No Feed School', [])] as const;

    // The per-tenant rate limit is a policy, not a capacity: off, so the
    // benchmark measures what the server can do.
    const env = { ...process.env, DATABASE_URL: databaseUrl, JWT_SECRET: secret, LOG_LEVEL: 'warn', PORT: '0', HOST: '127.0.0.1', PUBLIC_URL: 'http://127.0.0.1', RATE_LIMIT_PER_SECOND: '0' };
    const profile = profileDir ? ['--cpu-prof', `--cpu-prof-dir=${path.resolve(profileDir)}`] : [];
    const scimServer = await startServerProcess('scim', env, [...(await startFlags()), ...profile]);
    servers.push(scimServer);
    const referenceServer = await startServerProcess('reference', env);
    servers.push(referenceServer);
    const report = createReport();
    const meter: Meter = {
      report,
      concurrency: sizes.concurrency,
      cpu: { scim: () => scimServer.cpu(), reference: () => referenceServer.cpu() },
      analyzeIfDue,
    };
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
    const [scimPlan, referencePlan] = [initialSyncTurns(scim, sizes), initialSyncTurns(reference, sizes)];
    const sync = await measureTurns(
      meter,
      'initial sync (all requests)',
      scimPlan.turns.map((turn, i) => [turn, referencePlan.turns[i] ?? (() => Promise.reject(new Error('the two plans differ')))] as const),
    );
    const [scimSync, referenceSync] = [scimPlan.sync, referencePlan.sync];
    const rss = await scimServer.rss();
    const referenceRss = await referenceServer.rss();
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
    for (const side of [scim, reference]) await warmUp(side, sizes);
    const [scimUsers, referenceUsers] = [userTasks(scim, sizes), userTasks(reference, sizes)];
    const post = await measureInTurns(meter, 'POST /Users', n, scimUsers.create, referenceUsers.create);
    const get = await measureInTurns(meter, 'GET /Users?filter=userName eq', n, scimUsers.findByUserName, referenceUsers.findByUserName);
    await measureInTurns(meter, 'GET /Users?filter=emails[type eq "work"].value eq', n, scimUsers.findByEmail, referenceUsers.findByEmail);
    const patchRow = await measureInTurns(meter, 'PATCH /Users (3 Replace)', n, scimUsers.patch, referenceUsers.patch);
    const del = await measureInTurns(meter, 'DELETE /Users', n, scimUsers.delete, referenceUsers.delete);

    // (5) Class lookups, Entra's before every class change, and a full read.
    const [scimClasses, referenceClasses] = [classTasks(scim, scimSync, sizes), classTasks(reference, referenceSync, sizes)];
    const classLookup = sizes.classes > 0 ? await measureInTurns(meter, 'GET /Groups?filter=displayName eq (excl. members)', n, scimClasses.find, referenceClasses.find) : undefined;
    const largest = Math.max(0, ...sizes.largeClasses);
    const largeLookup = largest > 0 ? await measureInTurns(meter, `  same, the ${largest}-member class`, n, scimClasses.findLarge, referenceClasses.findLarge) : undefined;
    const full = largest > 0 ? await measure(meter, `GET /Groups/{id}, ${largest} members`, scimClasses.getLarge, referenceClasses.getLarge) : undefined;

    // (4) Membership: many classes at once, then one class growing.
    await measure(
      meter,
      `PATCH /Groups add ${sizes.classSize}, ${sizes.memberClasses} classes`,
      () => parallelMembers(scim, scimSync.userIds, sizes),
      () => parallelMembers(reference, referenceSync.userIds, sizes),
    );

    // One class grows in batches; a class of 100 is measured beside it at
    // every size, so "at 100" and "at 10,000" are figures of the same moments.
    const sides = [scim, reference] as const;
    const ids = [scimSync.userIds, referenceSync.userIds] as const;
    const growing = await Promise.all(sides.map((side) => side.createClass('Growing class')));
    const small = await Promise.all(sides.map((side) => side.createClass('Class of 100')));
    const cycleBatch = (k: 0 | 1) => ids[k].slice(sizes.users - sizes.batch);
    const growTo = async (k: 0 | 1, from: number, to: number) => grow(sides[k], growing[k]?.id ?? '', ids[k].slice(from, to), sizes.batch);
    await Promise.all(([0, 1] as const).map((k) => grow(sides[k], small[k]?.id ?? '', ids[k].slice(0, 100), sizes.batch)));
    const paired: { size: number; small: Row; big: Row }[] = [];
    let current = 0;
    for (const size of [...new Set([sizes.grow, sizes.growMax])].filter((s) => s >= 100).sort((a, b) => a - b)) {
      await measure(meter, `PATCH /Groups add ${sizes.batch}, growing ${current} -> ${size}`, () => growTo(0, current, size), () => growTo(1, current, size));
      current = size;
      const [s, r] = await addAtSizes(
        [
          { side: scim, classIds: [small[0]?.id ?? '', growing[0]?.id ?? ''], batch: cycleBatch(0) },
          { side: reference, classIds: [small[1]?.id ?? '', growing[1]?.id ?? ''], batch: cycleBatch(1) },
        ],
        sizes.cycles,
      );
      const row = (name: string, k: 0 | 1): Row => ({ name, scim: s[k], reference: r[k] });
      const pair = { size, small: row(`PATCH /Groups add ${sizes.batch} at 100 members (beside ${size})`, 0), big: row(`PATCH /Groups add ${sizes.batch} at ${size} members`, 1) };
      report.rows.push(pair.small, pair.big);
      paired.push(pair);
    }

    // The change feed's cost: half the initial sync again for two tenants,
    // one with the feed's triggers on and one with them off, in alternating
    // turns. Before the scale check, whose seed ends with a CHECKPOINT: its
    // writes would otherwise fall on the measurements after it.
    let feed: Parameters<typeof setTargets>[1]['feed'];
    if (!noFeedCost) {
      const half = Math.ceil(sizes.users / 2);
      const feedSizes: Sizes = { ...sizes, users: half, classes: Math.ceil(sizes.classes / 2), largeClasses: sizes.largeClasses.filter((size) => size <= half) };
      log(`change feed cost: ${half} users, ${feedSizes.classes} classes and classes of ${feedSizes.largeClasses.join(', ')}, for a tenant with the feed on and one with it off`);
      const feedClients = feedTokens.map((t) => new Client(`${scimServer.url}/scim/v2`, { authorization: `Bearer ${t}` }));
      const [onPlan, offPlan] = feedClients.map((client) => initialSyncTurns(scimSide(client), feedSizes));
      feed = await measureFeedCost(meter, pool, onPlan?.turns ?? [], offPlan?.turns ?? []);
      for (const client of feedClients) client.close();
      log(`change feed cost: ${fmt(feed.on.wallMs / 1000)} s on, ${fmt(feed.off.wallMs / 1000)} s off`);
    }

    // (3) Scale: a million accounts of other tenants in the same tables.
    let scaleGet: Row | undefined;
    let scalePost: Row | undefined;
    if (sizes.scaleAccounts > 0) {
      log(`seeding ${sizes.scaleAccounts} accounts over ${sizes.scaleTenants} tenants`);
      const seedStarted = performance.now();
      await seedScale(pool, sizes.scaleAccounts, sizes.scaleTenants);
      log(`seeded in ${fmt((performance.now() - seedStarted) / 1000)} s`);
      await settle(
        [
          { side: scim, cpu: meter.cpu.scim },
          { side: reference, cpu: meter.cpu.reference },
        ],
        sizes,
      );
      scaleGet = await measureInTurns(meter, `GET /Users?filter=userName eq, +${sizes.scaleAccounts} accounts`, n, scimUsers.findByUserName, referenceUsers.findByUserName);
      scalePost = await measureInTurns(meter, `POST /Users, +${sizes.scaleAccounts} accounts`, n, scimUsers.createMore, referenceUsers.createMore);
    }

    setTargets(report, {
      sync,
      users: { post, get, patch: patchRow, delete: del },
      userCount: sizes.users,
      growth: { batch: sizes.batch, growMax: sizes.growMax, paired },
      classLookup,
      largeLookup,
      full: full ? { row: full, members: largest } : undefined,
      rss: { scim: rss, reference: referenceRss },
      scale: { get: scaleGet, post: scalePost },
      feed,
    });
    printRows(report);
    const end = await scimServer.rss();
    process.stdout.write(
      `\nserver RSS after initial sync: ${mb(rss.now)}, at most ${mb(rss.peak)} (reference ${mb(referenceRss.now)}, at most ${mb(referenceRss.peak)}); ` +
        `at the end ${mb(end.now)}, at most ${mb(end.peak)}\n\n`,
    );
    printTargets(report, performance.now() - startedAt);
    scimClient.close();
    referenceClient.close();
  } finally {
    for (const server of servers) await server.stop().catch(() => undefined);
    await db.destroy();
    await database.close();
  }
}

await main();
