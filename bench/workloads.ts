// The benchmark's workloads: each server's client as a Side, Entra-shaped
// users, the initial sync in turns, the user and class operations as tasks,
// member batches at a class's sizes, the warm-up, and the scale seed.
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { promisify } from 'node:util';
import type pg from 'pg';
import { expect, run, type Client, type Measured, type Reply } from './driver.js';
import { log } from './report.js';

const USER = 'urn:ietf:params:scim:schemas:core:2.0:User';
const GROUP = 'urn:ietf:params:scim:schemas:core:2.0:Group';
const ENTERPRISE = 'urn:ietf:params:scim:schemas:extension:enterprise:2.0:User';
const PATCH_OP = 'urn:ietf:params:scim:api:messages:2.0:PatchOp';
/** The bench tenant's verified domain, which every user's userName is in. */
export const DOMAIN = 'bench.example';

/** The sizes of a run, from bench/run.ts's flags. */
export interface Sizes {
  users: number;
  classes: number;
  classSize: number;
  largeClasses: number[];
  requests: number;
  warmup: number;
  concurrency: number;
  memberClasses: number;
  grow: number;
  growMax: number;
  batch: number;
  cycles: number;
  fullGets: number;
  scaleAccounts: number;
  scaleTenants: number;
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
export interface Side {
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

export const userName = (prefix: string, n: number): string => `${prefix}${n}@${DOMAIN}`;

/** The name the initial sync gives its class of `size` members. */
const largeClassName = (size: number): string => `Large class ${size}`;

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

export function scimSide(client: Client): Side {
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

export function referenceSide(client: Client): Side {
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

export const check = (found: Found, expected: number, what: string): Reply => {
  if (found.found !== expected) throw new Error(`${what}: found ${found.found}, expected ${expected}`);
  return found.reply;
};

// ---------------------------------------------------------------- workloads

/** Request i of an operation: the replies it made. */
export type Task = (i: number) => Promise<Reply[]>;

/** How many turns a measurement in turns takes (see measureInTurns in settle.ts). */
export const TURNS = 6;

/** 0..n-1 in TURNS ranges [from, to). */
export const turnRanges = (n: number): [number, number][] =>
  Array.from({ length: TURNS }, (_, turn) => [Math.floor((turn * n) / TURNS), Math.floor(((turn + 1) * n) / TURNS)]);

/** Spreads i over 0..n-1 so consecutive requests hit different rows. */
export const spread = (i: number, n: number): number => (i * 7919) % n;

const chunks = <T>(list: readonly T[], size: number): T[][] => Array.from({ length: Math.ceil(list.length / size) }, (_, i) => list.slice(i * size, (i + 1) * size));

export interface Sync {
  /** Wall time of each part: users (lookup and create), classes (lookup and create), members. */
  partsMs: [number, number, number];
  userIds: string[];
  classIds: Map<string, string>;
}

/**
 * Entra's initial cycle as turns (see measureTurns): for every user a lookup
 * by userName then a create; for every class a lookup by displayName then a
 * create; then the members in PATCH batches, the batches of one class in
 * order, several classes at once. Each part in TURNS turns; run in order, the
 * turns are the whole cycle, and the Sync fills as they run.
 */
export function initialSyncTurns(side: Side, sizes: Sizes): { turns: (() => Promise<Measured>)[]; sync: Sync } {
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
      ...sizes.largeClasses.map((size) => ({ name: largeClassName(size), members: sync.userIds.slice(0, size) })),
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

export interface UserTasks {
  create: Task;
  findByUserName: Task;
  findByEmail: Task;
  patch: Task;
  delete: Task;
  createMore: Task;
}

/**
 * The user operations on the tenant the sync filled, as tasks of request i:
 * creates of users of their own, which PATCH and DELETE then change in the
 * same order; lookups of the synced users by userName and by e-mail; and
 * creates of further users for the scale check.
 */
export function userTasks(side: Side, sizes: Sizes): UserTasks {
  const created: string[] = [];
  return {
    create: async (i) => {
      const made = await side.createUser('p', i);
      created[i] = made.id;
      return [made.reply];
    },
    findByUserName: async (i) => [check(await side.findUser(userName('s', spread(i, sizes.users))), 1, 'userName lookup')],
    findByEmail: async (i) => [check(await side.findUserByEmail(userName('s', spread(i, sizes.users))), 1, 'e-mail lookup')],
    patch: async (i) => [await side.patchUser(created[i] ?? '', i)],
    delete: async (i) => [await side.deleteUser(created[i] ?? '')],
    createMore: async (i) => [(await side.createUser('q', i)).reply],
  };
}

/**
 * The class reads, Entra's lookup before every class change and a full read:
 * lookups of the sync's classes of --class-size and of its largest class, as
 * tasks, and --full-gets reads of the largest class with its members.
 */
export function classTasks(side: Side, sync: Sync, sizes: Sizes): { find: Task; findLarge: Task; getLarge: () => Promise<Measured> } {
  const largest = Math.max(0, ...sizes.largeClasses);
  const largeName = largeClassName(largest);
  return {
    find: async (i) => [check(await side.findClass(`Class ${spread(i, Math.max(1, sizes.classes))}`), 1, 'class lookup')],
    findLarge: async () => [check(await side.findClass(largeName), 1, 'large class lookup')],
    getLarge: () => {
      const id = sync.classIds.get(largeName) ?? '';
      return run(sizes.fullGets, 1, async () => [check(await side.getClass(id), largest, 'full class')]);
    },
  };
}

/** Many classes at once: --member-classes classes created, then each given --class-size members in one PATCH. */
export async function parallelMembers(side: Side, ids: readonly string[], sizes: Sizes): Promise<Measured> {
  const c = sizes.concurrency;
  const classIds: string[] = [];
  await run(sizes.memberClasses, c, async (i) => {
    const made = await side.createClass(`Member class ${i}`);
    classIds[i] = made.id;
    return [made.reply];
  });
  return run(sizes.memberClasses, c, async (i) => [
    await side.addMembers(classIds[i] ?? '', Array.from({ length: sizes.classSize }, (_, k) => ids[spread(i * sizes.classSize + k, sizes.users)] ?? '')),
  ]);
}

/** One server's classes and batch for addAtSizes: the class of 100 and the growing one. */
export interface AddAt {
  side: Side;
  classIds: readonly [string, string];
  batch: readonly string[];
}

/**
 * The cost of adding a batch at a class's size: add it, time it, remove it
 * again. In every cycle both classes of the SCIM server, then both of the
 * reference, so all four figures see the same moments of a noisy machine.
 * A server's first request after the other's turn is the slower one (its
 * caches are cold), so the two classes take the first place in turn.
 * Answers [SCIM, reference], each [class of 100, growing class].
 */
export async function addAtSizes(servers: readonly [AddAt, AddAt], cycles: number): Promise<[[Measured, Measured], [Measured, Measured]]> {
  const empty = (): Measured => ({ count: 0, errors: 0, wallMs: 0, latencies: [], failures: [] });
  const measured: [[Measured, Measured], [Measured, Measured]] = [
    [empty(), empty()],
    [empty(), empty()],
  ];
  for (let i = 0; i < cycles; i++) {
    for (const s of [0, 1] as const) {
      const { side, classIds, batch } = servers[s];
      for (const k of i % 2 === 0 ? ([0, 1] as const) : ([1, 0] as const)) {
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
export async function warmUp(side: Side, sizes: Sizes): Promise<void> {
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

/** Adds members to a class in PATCH batches of `batch`, one after another. */
export async function grow(side: Side, classId: string, members: readonly string[], batch: number): Promise<Measured> {
  const batches = chunks(members, batch);
  return run(batches.length, 1, async (i) => [await side.addMembers(classId, batches[i] ?? [])]);
}

// ---------------------------------------------------------------- scale

/** Set-based seed: accounts spread over tenants of their own, interleaved on the heap. */
export async function seedScale(pool: pg.Pool, accounts: number, tenants: number): Promise<void> {
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
