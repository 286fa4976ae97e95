// The two executions of one write plan, held to each other: the server's
// quick path (one guarded statement planned from what the instance knows
// without a lock) and the locked path (planned from rows read and locked in
// a transaction). Generated sequences of Entra's writes run against two
// databases, one app each way, with identical seeds: manual accounts to
// adopt, an admin in the way, a manual class to adopt. Races that fail the
// version guard are made by another writer changing a user after the quick
// app remembered it; the portal keeps members by hand and drops its marks
// with the database contract's statements. Every answer, and afterwards every row, audit event and
// conflict, must be the same on both sides (ids compared by what they name).
import { randomUUID } from 'node:crypto';
import fc from 'fast-check';
import type { FastifyInstance, LightMyRequestResponse } from 'fastify';
import { CompiledQuery, sql } from 'kysely';
import t from 'tap';
import { buildApp } from '../src/app.js';
import { signingKeys } from '../src/auth/keys.js';
import { signToken } from '../src/auth/tokens.js';
import { loadConfig } from '../src/config.js';
import type { Db } from '../src/db/database.js';
import { TEST_SECRET, testEnv } from './helpers/app.js';
import { testDatabase } from './helpers/database.js';
import { handMembershipSql } from './helpers/contract-sql.js';
import { GROUP, entraUser, patch } from './helpers/scim.js';

const SEED = Number(process.env.FUZZ_SEED ?? 20261130);
const RUNS = Number(process.env.FUZZ_RUNS ?? 60);
const USERS = 6;
const CLASSES = 3;

type Command =
  | { kind: 'createUser'; n: number }
  | {
      kind: 'patchUser';
      n: number;
      change: 'name' | 'deactivate' | 'reactivate' | 'admin-address' | 'rename' | 'work-email' | 'same';
      ifMatch: boolean;
      /** Another writer changes the user first: what the quick side remembers of it is stale, and its version guard fails. */
      raced: boolean;
    }
  | { kind: 'putUser'; n: number; ifMatch: boolean }
  | { kind: 'deleteUser'; n: number; ifMatch: boolean }
  | { kind: 'getUser'; n: number }
  | { kind: 'otherWriter'; n: number }
  | { kind: 'createClass'; c: number; members: number[]; name: number }
  | { kind: 'patchClass'; c: number; add: number[]; remove: number[]; rename: number | undefined; ifMatch: boolean }
  | { kind: 'putClass'; c: number; members: number[]; name: number }
  | { kind: 'deleteClass'; c: number }
  | { kind: 'portalKeeps'; c: number; n: number }
  | { kind: 'portalDrops'; c: number; n: number };

const user = fc.integer({ min: 1, max: USERS });
const klass = fc.integer({ min: 1, max: CLASSES });
const members = fc.oneof(fc.constant<number[]>([]), fc.uniqueArray(user, { minLength: 1, maxLength: 4 }));
const command: fc.Arbitrary<Command> = fc.oneof(
  { weight: 4, arbitrary: fc.record({ kind: fc.constant('createUser' as const), n: user }) },
  {
    weight: 5,
    arbitrary: fc.record({
      kind: fc.constant('patchUser' as const),
      n: user,
      change: fc.constantFrom('name', 'deactivate', 'reactivate', 'admin-address', 'rename', 'work-email', 'same'),
      ifMatch: fc.boolean(),
      raced: fc.boolean(),
    }),
  },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('putUser' as const), n: user, ifMatch: fc.boolean() }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('deleteUser' as const), n: user, ifMatch: fc.boolean() }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('getUser' as const), n: user }) },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('otherWriter' as const), n: user }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('createClass' as const), c: klass, members, name: klass }) },
  {
    weight: 3,
    arbitrary: fc.record({ kind: fc.constant('patchClass' as const), c: klass, add: members, remove: members, rename: fc.option(klass, { nil: undefined }), ifMatch: fc.boolean() }),
  },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('putClass' as const), c: klass, members, name: klass }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('deleteClass' as const), c: klass }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('portalKeeps' as const), c: klass, n: user }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('portalDrops' as const), c: klass, n: user }) },
);

interface Side {
  app: FastifyInstance;
  db: Db;
  tenantId: string;
  /** What each label (u3, c2, m1) names now on this side. */
  ids: Map<string, string>;
  /** Every id this side has seen, named by its label and generation (u3 created again after a delete is u3#2). */
  names: Map<string, string>;
  /** The version this side last answered for each label, for If-Match. */
  versions: Map<string, string>;
}

const userExternalId = (n: number) => `00000000-0000-4000-8000-${String(n).padStart(12, '0')}`;

/** The same tenant, credential and manual rows on both sides, with the same ids. */
async function seed(db: Db, tenantId: string, credentialId: string, ids: Map<string, string>): Promise<void> {
  await db.insertInto('tenants').values({ id: tenantId, name: 'Differential School', verified_domains: ['school.example'] }).execute();
  await db.insertInto('credentials').values({ tenant_id: tenantId, id: credentialId, kind: 'token' }).execute();
  const manual = (label: string, values: { user_name: string; email?: string; external_id?: string; role?: 'teacher' | 'admin' }) =>
    db
      .insertInto('accounts')
      .values({ tenant_id: tenantId, id: ids.get(label) ?? '', managed_by: 'manual', role: values.role ?? 'teacher', user_name: values.user_name, email: values.email ?? null, external_id: values.external_id ?? null, scim: '{}' })
      .execute();
  // Rule 2: user 2's address; rule 8: user 3's Entra object; rule 3: user 5's address belongs to an admin.
  await manual('m1', { user_name: 'lena.teacher', email: 'pupil2@school.example' });
  await manual('m2', { user_name: 'old.pupil3', external_id: userExternalId(3) });
  await manual('m3', { user_name: 'principal', email: 'pupil5@school.example', role: 'admin' });
  await db.insertInto('classes').values({ tenant_id: tenantId, id: ids.get('m4') ?? '', managed_by: 'manual', display_name: 'Old class 2', external_id: 'class-2', scim: '{}' }).execute();
}

function request(side: Side, headers: Record<string, string>, method: string, url: string, body?: unknown, extra: Record<string, string> = {}): Promise<LightMyRequestResponse> {
  return side.app.inject({ method: method as 'GET', url: `/scim/v2${url}`, headers: { ...headers, ...extra }, ...(body === undefined ? {} : { payload: JSON.stringify(body) }) });
}

const idOf = (side: Side, label: string): string => side.ids.get(label) ?? '00000000-0000-4000-8000-00000000ffff';

/** Another instance changes the user: what the quick side remembers of it is now stale. */
async function otherWriter(side: Side, label: string): Promise<void> {
  const id = side.ids.get(label);
  if (id === undefined) return;
  await sql`UPDATE accounts SET display_name = 'Changed elsewhere',
            scim = scim || '{"displayName": "Changed elsewhere", "title": "Changed elsewhere"}'::jsonb,
            version = version + 1 WHERE id = ${id}::uuid AND managed_by = 'sync'`.execute(side.db);
}

/** The portal keeps a member by hand, or drops its own mark, with the database contract's statements: on a class and a user this side has made (picked by the numbers, both sides alike). */
async function portal(side: Side, tenantId: string, cmd: { kind: 'portalKeeps' | 'portalDrops'; c: number; n: number }): Promise<string> {
  const made = (pattern: RegExp) => [...side.ids.keys()].filter((label) => pattern.test(label)).sort();
  const [classes, users] = [made(/^c\d+$/), made(/^u\d+$/)];
  const [classLabel, userLabel] = [classes[cmd.c % Math.max(1, classes.length)], users[cmd.n % Math.max(1, users.length)]];
  const [classId, accountId] = [classLabel && side.ids.get(classLabel), userLabel && side.ids.get(userLabel)];
  if (!classId || !accountId) return 'portal: nothing to do';
  const params = [tenantId, classId, accountId];
  const { add, remove } = handMembershipSql();
  try {
    if (cmd.kind === 'portalKeeps') {
      await side.db.executeQuery(CompiledQuery.raw(add, params));
    } else {
      await side.db.transaction().execute(async (trx) => {
        for (const statement of remove) await trx.executeQuery(CompiledQuery.raw(statement, params));
      });
    }
    return 'portal: done';
  } catch (error) {
    // A class or account deleted since: the membership's foreign keys refuse it, on both sides alike.
    return `portal: ${(error as { code?: string }).code ?? 'error'}`;
  }
}

/** Runs one command on a side; returns the answer with ids written as labels. */
async function run(side: Side, headers: Record<string, string>, cmd: Command, requestId: string): Promise<string> {
  const h = { 'x-request-id': requestId };
  const ifMatch = (label: string, wanted: boolean): Record<string, string> => (wanted ? { 'if-match': side.versions.get(label) ?? 'W/"0"' } : {});
  let res: LightMyRequestResponse;
  let label: string | undefined;
  switch (cmd.kind) {
    case 'createUser':
      label = `u${cmd.n}`;
      res = await request(side, headers, 'POST', '/Users', entraUser(cmd.n), h);
      break;
    case 'patchUser': {
      label = `u${cmd.n}`;
      if (cmd.raced) await otherWriter(side, label);
      const op = {
        name: { op: 'Replace', path: 'displayName', value: `Renamed ${cmd.n}` },
        deactivate: { op: 'Replace', path: 'active', value: 'False' },
        reactivate: { op: 'Add', path: 'active', value: 'True' },
        'admin-address': { op: 'replace', path: 'userName', value: 'PRINCIPAL' },
        rename: { op: 'replace', value: { userName: `moved${cmd.n}@school.example`, 'name.givenName': 'Moved' } },
        'work-email': { op: 'Add', path: 'emails[type eq "work"].value', value: `new${cmd.n}@school.example` },
        same: { op: 'Replace', path: 'displayName', value: `Pupil ${cmd.n}` },
      }[cmd.change];
      res = await request(side, headers, 'PATCH', `/Users/${idOf(side, label)}`, patch(op), { ...h, ...ifMatch(label, cmd.ifMatch) });
      break;
    }
    case 'putUser':
      label = `u${cmd.n}`;
      res = await request(side, headers, 'PUT', `/Users/${idOf(side, label)}`, { ...entraUser(cmd.n), title: 'Replaced' }, { ...h, ...ifMatch(label, cmd.ifMatch) });
      break;
    case 'deleteUser':
      label = `u${cmd.n}`;
      res = await request(side, headers, 'DELETE', `/Users/${idOf(side, label)}`, undefined, { ...h, ...ifMatch(label, cmd.ifMatch) });
      break;
    case 'getUser':
      label = `u${cmd.n}`;
      res = await request(side, headers, 'GET', `/Users/${idOf(side, label)}`, undefined, h);
      break;
    case 'otherWriter':
      await otherWriter(side, `u${cmd.n}`);
      return 'other writer';
    case 'portalKeeps':
    case 'portalDrops':
      return portal(side, side.tenantId, cmd);
    case 'createClass':
      label = `c${cmd.c}`;
      res = await request(
        side,
        headers,
        'POST',
        '/Groups',
        { schemas: [GROUP], displayName: `Class ${cmd.name}`, externalId: `class-${cmd.c}`, ...(cmd.members.length > 0 ? { members: cmd.members.map((n) => ({ value: idOf(side, `u${n}`) })) } : {}) },
        h,
      );
      break;
    case 'patchClass': {
      label = `c${cmd.c}`;
      const ops = [
        ...(cmd.add.length > 0 ? [{ op: 'Add', path: 'members', value: cmd.add.map((n) => ({ value: idOf(side, `u${n}`) })) }] : []),
        ...(cmd.remove.length > 0 ? [{ op: 'Remove', path: 'members', value: cmd.remove.map((n) => ({ value: idOf(side, `u${n}`) })) }] : []),
        ...(cmd.rename !== undefined ? [{ op: 'Replace', path: 'displayName', value: `Class ${cmd.rename}` }] : []),
      ];
      res = await request(side, headers, 'PATCH', `/Groups/${idOf(side, label)}`, patch(...ops), { ...h, ...ifMatch(label, cmd.ifMatch) });
      break;
    }
    case 'putClass':
      label = `c${cmd.c}`;
      res = await request(
        side,
        headers,
        'PUT',
        `/Groups/${idOf(side, label)}`,
        { schemas: [GROUP], displayName: `Class ${cmd.name}`, externalId: `class-${cmd.c}`, members: cmd.members.map((n) => ({ value: idOf(side, `u${n}`) })) },
        h,
      );
      break;
    case 'deleteClass':
      label = `c${cmd.c}`;
      res = await request(side, headers, 'DELETE', `/Groups/${idOf(side, label)}`, undefined, h);
      break;
  }
  const body = res.body === '' ? undefined : (JSON.parse(res.body) as Record<string, unknown>);
  if (res.statusCode === 201 && body && typeof body.id === 'string') {
    side.ids.set(label, body.id);
    // An adopted account or class keeps the name it was seeded with.
    if (!side.names.has(body.id)) side.names.set(body.id, `${label}#${[...side.names.values()].filter((n) => n.startsWith(`${label}#`)).length + 1}`);
  }
  const version = res.headers.etag;
  if (typeof version === 'string') side.versions.set(label, version);
  // Members are listed in id order, and ids differ between the sides: compare them in label order.
  if (Array.isArray(body?.members)) {
    const key = (m: unknown) => labelled(side, String((m as { value?: unknown }).value));
    (body.members as unknown[]).sort((a, b) => key(a).localeCompare(key(b)));
  }
  if (body?.meta && typeof body.meta === 'object') {
    const meta = body.meta as Record<string, unknown>;
    delete meta.created;
    delete meta.lastModified;
  }
  return labelled(side, `${res.statusCode} ${res.headers.etag ?? ''} ${res.headers.location ?? ''} ${JSON.stringify(body ?? null)}`);
}

/** A text with every id this side knows written as its label. */
function labelled(side: Side, text: string): string {
  let out = text;
  for (const [id, name] of side.names) out = out.split(id).join(`<${name}>`);
  return out;
}

/** Every row of the tenant that a write may touch, ids as labels, times left out. */
async function state(side: Side, tenantId: string): Promise<string> {
  const accounts = await sql`SELECT id, managed_by, role, user_name, external_id, email, given_name, family_name, display_name, school_id, grade,
       active, scim, version, deleted_at IS NOT NULL AS deleted FROM accounts WHERE tenant_id = ${tenantId}::uuid`.execute(side.db);
  const classes = await sql`SELECT id, managed_by, display_name, external_id, school_id, scim, version FROM classes WHERE tenant_id = ${tenantId}::uuid`.execute(side.db);
  const memberships = await sql`SELECT class_id, account_id, synced, manual FROM class_memberships WHERE tenant_id = ${tenantId}::uuid`.execute(side.db);
  const departures = await sql`SELECT class_id, account_id FROM class_departures WHERE tenant_id = ${tenantId}::uuid`.execute(side.db);
  // A conflict's id is named by its object and the request that opened it; its audit events name it by that.
  const conflictIds = await sql<{ id: string; object_ref: string; request_id: string }>`SELECT id, object_ref, request_id FROM sync_conflicts
       WHERE tenant_id = ${tenantId}::uuid`.execute(side.db);
  for (const c of conflictIds.rows) side.names.set(c.id, `conflict ${c.object_ref.toLowerCase()} ${c.request_id}`);
  const events = await sql`SELECT action, object_type, object_id, object_ref, outcome, credential_id, request_id, details
       FROM audit_events WHERE tenant_id = ${tenantId}::uuid ORDER BY id`.execute(side.db);
  const conflicts = await sql`SELECT id, kind, object_type, object_ref, account_id, request_id, detail, seen_count, resolution, resolved_at IS NOT NULL AS closed
       FROM sync_conflicts WHERE tenant_id = ${tenantId}::uuid ORDER BY lower(object_ref), request_id`.execute(side.db);
  const sorted = (rows: unknown[]) => rows.map((r) => labelled(side, JSON.stringify(r))).sort();
  return JSON.stringify(
    {
      accounts: sorted(accounts.rows),
      classes: sorted(classes.rows),
      memberships: sorted(memberships.rows),
      departures: sorted(departures.rows),
      events: events.rows.map((r) => labelled(side, JSON.stringify(r))),
      conflicts: conflicts.rows.map((r) => labelled(side, JSON.stringify(r))),
    },
    null,
    1,
  );
}

t.test('the quick and the locked execution of the same plans write the same rows and events and answer the same', async (t) => {
  const env = testEnv();
  const config = loadConfig(env);
  const keys = signingKeys(TEST_SECRET);
  const databases = [await testDatabase(t), await testDatabase(t)] as const;
  const quickApp = await buildApp({ config, db: databases[0].db, pool: databases[0].pool, keys, writeStrategy: 'quick' });
  const lockedApp = await buildApp({ config, db: databases[1].db, pool: databases[1].pool, keys, writeStrategy: 'locked' });
  t.teardown(() => Promise.all([quickApp.close(), lockedApp.close()]));

  let tried = 0;
  const statuses = new Set<string>();
  await fc.assert(
    // Most sequences start with a few users, so the writes after them have something to change.
    fc.asyncProperty(fc.uniqueArray(user, { maxLength: USERS }), fc.array(command, { minLength: 4, maxLength: 24 }), async (first, rest) => {
      const commands: Command[] = [...first.map((n): Command => ({ kind: 'createUser', n })), ...rest];
      const tenantId = randomUUID();
      const credentialId = randomUUID();
      const seeded = new Map(['m1', 'm2', 'm3', 'm4'].map((label) => [label, randomUUID()]));
      const sides: Side[] = [
        { app: quickApp, db: databases[0].db, tenantId, ids: new Map(seeded), names: new Map([...seeded].map(([label, id]) => [id, label])), versions: new Map() },
        { app: lockedApp, db: databases[1].db, tenantId, ids: new Map(seeded), names: new Map([...seeded].map(([label, id]) => [id, label])), versions: new Map() },
      ];
      // A verified domain belongs to one tenant: the last run's tenant gives it up.
      for (const side of sides) await sql`DELETE FROM tenants WHERE verified_domains @> ARRAY['school.example']`.execute(side.db);
      for (const side of sides) await seed(side.db, tenantId, credentialId, side.ids);
      const token = signToken({ keys, issuer: config.jwtIssuer, audience: config.jwtAudience }, { tid: tenantId, jti: credentialId });
      const headers = { authorization: `Bearer ${token}`, 'content-type': 'application/scim+json' };
      for (const [i, cmd] of commands.entries()) {
        const requestId = `r${i}`;
        const [quick, locked] = [await run(sides[0] as Side, headers, cmd, requestId), await run(sides[1] as Side, headers, cmd, requestId)];
        if (quick !== locked) throw new Error(`answers differ at ${i} ${JSON.stringify(cmd)}:\nquick:  ${quick}\nlocked: ${locked}`);
        statuses.add(`${cmd.kind} ${cmd.kind.startsWith('portal') ? quick : quick.slice(0, 3)}`);
      }
      const [quick, locked] = [await state(sides[0] as Side, tenantId), await state(sides[1] as Side, tenantId)];
      if (quick !== locked) throw new Error(`rows differ after ${JSON.stringify(commands)}:\nquick:  ${quick}\nlocked: ${locked}`);
      tried++;
    }),
    {
      seed: SEED,
      numRuns: RUNS,
      // Always among the runs: the race the version guard exists for.
      examples: [
        [
          [1, 2],
          [
            { kind: 'getUser', n: 1 },
            { kind: 'patchUser', n: 1, change: 'deactivate', ifMatch: false, raced: true },
            { kind: 'patchUser', n: 2, change: 'admin-address', ifMatch: false, raced: true },
          ],
        ],
      ],
    },
  );
  t.equal(tried, RUNS, `${RUNS} sequences wrote the same on both sides`);
  t.comment([...statuses].sort().join(', '));
  // The generators must reach the interesting answers, or the comparison says little.
  for (const expected of ['createUser 201', 'createUser 409', 'patchUser 200', 'patchUser 409', 'patchUser 412', 'deleteUser 204', 'deleteUser 404', 'createClass 201', 'createClass 409', 'patchClass 204', 'patchClass 400', 'putClass 200', 'deleteClass 204', 'portalKeeps portal: done', 'portalDrops portal: done']) {
    t.ok(statuses.has(expected), `some sequence answered ${expected}`);
  }
});
