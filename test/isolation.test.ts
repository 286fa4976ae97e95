// Rule 10: a credential of one tenant never reads or changes another tenant's
// data, nor learns that an id exists there. Tenant A's token is sent to every
// SCIM route and method with tenant B's ids, names and external ids; every
// answer must be what an unknown id gets, carry nothing of B's that the
// request did not name, and leave B's rows exactly as they were. A SCIM route
// added without coverage here fails the test.
import { randomUUID } from 'node:crypto';
import type { LightMyRequestResponse } from 'fastify';
import t from 'tap';
import { testApp, tenantWithToken } from './helpers/app.js';
import { ENTERPRISE, GROUP, PATCH_OP, USER, client, entraUser, patch } from './helpers/scim.js';
import { scimErrorProblem, tenantRows } from './helpers/trust.js';

const SEARCH = 'urn:ietf:params:scim:api:messages:2.0:SearchRequest';
const METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'] as const;

t.test("tenant A's credential cannot reach tenant B's users, groups or memberships on any route", async (t) => {
  const a = await testApp(t);
  const b = await tenantWithToken(a.db, a.config, a.keys, 'Other School', ['other.example']);
  const scimA = client(a.app, a.headers);
  const scimB = client(a.app, b.headers);

  // Which route each request reached, to prove every SCIM route was exercised.
  const reached = new Set<string>();
  a.app.addHook('onRequest', async (request) => {
    if (request.headers.authorization === a.headers.authorization && request.routeOptions.url) {
      reached.add(`${request.method} ${request.routeOptions.url}`);
    }
  });

  // Tenant B: three users, one of them deactivated, and a class with two members.
  const bUsers: { id: string; userName: string; externalId: string; displayName: string; employeeNumber: string }[] = [];
  for (const n of [1, 2, 3]) {
    const body = entraUser(n, {
      userName: `secret.pupil${n}@other.example`,
      externalId: randomUUID(),
      displayName: `Hidden Pupil ${n}`,
      emails: [{ type: 'work', value: `secret.pupil${n}@other.example` }],
      [ENTERPRISE]: { employeeNumber: `B-${n}-${randomUUID()}` },
      active: n !== 3,
    });
    const res = await scimB('POST', '/Users', body);
    t.equal(res.statusCode, 201);
    bUsers.push({
      id: res.json().id as string,
      userName: body.userName as string,
      externalId: body.externalId as string,
      displayName: body.displayName as string,
      employeeNumber: (body[ENTERPRISE] as { employeeNumber: string }).employeeNumber,
    });
  }
  const bGroupBody = { schemas: [GROUP], displayName: `Hidden Class ${randomUUID()}`, externalId: randomUUID(), members: bUsers.slice(0, 2).map((u) => ({ value: u.id })) };
  const bGroupRes = await scimB('POST', '/Groups', bGroupBody);
  t.equal(bGroupRes.statusCode, 201);
  const bGroup = { id: bGroupRes.json().id as string, displayName: bGroupBody.displayName, externalId: bGroupBody.externalId };

  // Tenant A: one user and one class of its own.
  const aUser = (await scimA('POST', '/Users', entraUser(10))).json().id as string;
  const aGroup = (await scimA('POST', '/Groups', { schemas: [GROUP], displayName: 'Own class', members: [{ value: aUser }] })).json().id as string;

  const bIds = [...bUsers.map((u) => u.id), bGroup.id];
  const markers = [
    ...bIds,
    ...bUsers.flatMap((u) => [u.userName, u.externalId, u.displayName, u.employeeNumber]),
    bGroup.displayName,
    bGroup.externalId,
    'other.example',
  ];
  const before = await tenantRows(a.db, b.tenant.id);

  let checked = 0;
  /** The checks every cross-tenant answer must pass. */
  const isolated = async (label: string, res: LightMyRequestResponse, sent: string, statuses: number[]) => {
    t.ok(statuses.includes(res.statusCode), `${label}: status ${res.statusCode} is one of ${statuses.join(', ')}`);
    if (res.statusCode >= 400 && res.body !== '') t.equal(scimErrorProblem(res), undefined, `${label}: a SCIM error`);
    const leaked = markers.filter((m) => !sent.toLowerCase().includes(m.toLowerCase()) && res.body.toLowerCase().includes(m.toLowerCase()));
    t.same(leaked, [], `${label}: nothing of tenant B's in the answer`);
    t.same(await tenantRows(a.db, b.tenant.id), before, `${label}: tenant B's rows unchanged`);
    checked++;
  };

  const bodyFor = (method: string, url: string, id: string): unknown => {
    const groups = /\/Groups/i.test(url);
    if (method === 'PATCH') {
      return groups
        ? patch({ op: 'replace', path: 'displayName', value: 'Taken over' }, { op: 'add', path: 'members', value: [{ value: aUser }] }, { op: 'remove', path: `members[value eq "${bUsers[0]?.id ?? ''}"]` })
        : patch({ op: 'replace', path: 'active', value: false }, { op: 'replace', path: 'userName', value: 'taken.over@school.example' });
    }
    if (method === 'PUT' || method === 'POST') {
      return groups
        ? { schemas: [GROUP], id, displayName: 'Taken over', members: [{ value: aUser }] }
        : { schemas: [USER], id, userName: 'taken.over@school.example', active: false };
    }
    return undefined;
  };

  // 1. Every route with a parameter, every method, with each of B's ids: the
  //    answer is exactly the one an id that exists nowhere gets.
  const scimRoutes = a.app.routeTable.filter((r) => r.url.toLowerCase().startsWith('/scim/v2/'));
  t.ok(scimRoutes.length >= 15, 'the route table lists the SCIM routes');
  const urls = [...new Set(scimRoutes.map((r) => r.url))];
  for (const url of urls.filter((u) => u.includes(':'))) {
    const path = url.slice('/scim/v2'.length);
    for (const method of METHODS) {
      const registered = scimRoutes.some((r) => r.url === url && (r.method === method || (method === 'HEAD' && r.method === 'GET')));
      for (const id of bIds) {
        const unknown = randomUUID();
        const body = bodyFor(method, url, id);
        const send = (value: string) => scimA(method, path.replace(/:[A-Za-z]+/g, value), body === undefined ? undefined : JSON.parse(JSON.stringify(body).replaceAll(id, value)));
        const res = await send(id);
        const control = await send(unknown);
        const label = `${method} ${path} with B's ${id === bGroup.id ? 'group' : 'user'} id`;
        await isolated(label, res, `${path} ${JSON.stringify(body ?? '')} ${id}`, registered ? [404] : [404, 405]);
        t.equal(res.statusCode, control.statusCode, `${label}: same status as an unknown id`);
        t.equal(res.body.replaceAll(id, '<id>'), control.body.replaceAll(unknown, '<id>'), `${label}: same body as an unknown id`);
        if (method === 'OPTIONS' || !registered) reached.add(`${method} ${url}`);
      }
    }
  }

  // 2. Collection routes: B's names, external ids and ids in filters, searches
  //    and writes of A's own resources.
  const bUser = bUsers[0] ?? { id: '', userName: '', externalId: '', displayName: '', employeeNumber: '' };
  const userFilters = [
    `userName eq "${bUser.userName}"`,
    `userName eq "${bUser.userName.toUpperCase()}"`,
    `externalId eq "${bUser.externalId}"`,
    `id eq "${bUser.id}"`,
    `displayName eq "${bUser.displayName}"`,
    `emails[type eq "work"].value eq "${bUser.userName}"`,
    `emails.value co "other.example"`,
    `userName sw "secret"`,
    `${ENTERPRISE}:employeeNumber eq "${bUser.employeeNumber}"`,
    `active eq false`,
    `userName pr`,
    `not (userName eq "nobody")`,
  ];
  const groupFilters = [
    `displayName eq "${bGroup.displayName}"`,
    `externalId eq "${bGroup.externalId}"`,
    `id eq "${bGroup.id}"`,
    `members.value eq "${bUser.id}"`,
    `members[value eq "${bUser.id}"]`,
    `members.display eq "${bUser.displayName}"`,
    `displayName co "Hidden"`,
    `members pr`,
  ];
  const lists = async (endpoint: string, filters: string[], ownIds: string[]) => {
    for (const filter of filters) {
      for (const via of ['GET', '.search'] as const) {
        const res =
          via === 'GET'
            ? await scimA('GET', `${endpoint}?filter=${encodeURIComponent(filter)}&count=1000`)
            : await scimA('POST', `${endpoint}/.search`, { schemas: [SEARCH], filter, count: 1000 });
        const label = `${via} ${endpoint} filter ${filter}`;
        await isolated(label, res, filter, [200]);
        const found = (res.json<{ Resources: { id: string }[] }>().Resources).map((r) => r.id);
        t.ok(found.every((id) => ownIds.includes(id)), `${label}: only tenant A's resources`);
      }
    }
    const all = await scimA('GET', `${endpoint}?count=1000&sortBy=displayName`);
    await isolated(`GET ${endpoint}`, all, '', [200]);
    t.same(all.json<{ Resources: { id: string }[] }>().Resources.map((r) => r.id).sort(), [...ownIds].sort(), `GET ${endpoint}: exactly tenant A's resources`);
  };
  await lists('/Users', userFilters, [aUser]);
  await lists('/Groups', groupFilters, [aGroup]);

  // 3. The remaining collection routes and methods, without ids, before A
  //    holds anything named like B's (which it may, as the next part shows).
  for (const url of urls.filter((u) => !u.includes(':'))) {
    const path = url.slice('/scim/v2'.length);
    for (const method of METHODS) {
      if (reached.has(`${method} ${url}`) && method !== 'GET') continue;
      const registered = scimRoutes.some((r) => r.url === url && (r.method === method || (method === 'HEAD' && r.method === 'GET')));
      const body =
        method === 'GET' || method === 'HEAD' || method === 'DELETE' || method === 'OPTIONS'
          ? undefined
          : url.endsWith('/.search')
            ? { schemas: [SEARCH], filter: `id eq "${bUser.id}" or id eq "${bGroup.id}"` }
            : method === 'POST'
              ? bodyFor('POST', url, randomUUID())
              : { schemas: [PATCH_OP], Operations: [] };
      const res = await scimA(method, path, body);
      // Unregistered methods on .search reach /:id with the id ".search": a body is read before any lookup.
      const statuses = registered ? [200, 201] : [400, 404, 405];
      await isolated(`${method} ${path}`, res, JSON.stringify(body ?? ''), statuses);
      if (method === 'OPTIONS' || !registered) reached.add(`${method} ${url}`);
    }
  }

  // 4. Writes of A's own group and users naming B's users and groups.
  const memberRefusal = async (label: string, send: (ids: string[]) => Promise<LightMyRequestResponse>, ids: string[]) => {
    const res = await send(ids);
    const unknown = ids.map(() => randomUUID());
    const control = await send(unknown);
    await isolated(label, res, JSON.stringify(ids), [400]);
    t.equal(res.json().scimType, 'invalidValue', `${label}: invalidValue`);
    let masked = res.body;
    ids.forEach((id) => (masked = masked.replaceAll(id, '<id>')));
    let maskedControl = control.body;
    unknown.forEach((id) => (maskedControl = maskedControl.replaceAll(id, '<id>')));
    t.equal(masked, maskedControl, `${label}: the same refusal as for ids that exist nowhere`);
  };
  const members = (ids: string[]) => ids.map((value) => ({ value }));
  await memberRefusal('PATCH add B users to A group', (ids) => scimA('PATCH', `/Groups/${aGroup}`, patch({ op: 'add', path: 'members', value: members(ids) })), bUsers.map((u) => u.id));
  await memberRefusal('PATCH Entra-style Add of one B user', (ids) => scimA('PATCH', `/Groups/${aGroup}`, patch({ op: 'Add', path: 'members', value: members(ids) })), [bUser.id]);
  await memberRefusal('PATCH replace members with B users', (ids) => scimA('PATCH', `/Groups/${aGroup}`, patch({ op: 'replace', path: 'members', value: members(ids) })), [bUser.id]);
  await memberRefusal('PATCH path-less add of B members', (ids) => scimA('PATCH', `/Groups/${aGroup}`, patch({ op: 'add', value: { members: members(ids) } })), [bUser.id]);
  await memberRefusal('PATCH add B group as a nested member', (ids) => scimA('PATCH', `/Groups/${aGroup}`, patch({ op: 'add', path: 'members', value: members(ids) })), [bGroup.id]);
  await memberRefusal('PUT A group with B members', (ids) => scimA('PUT', `/Groups/${aGroup}`, { schemas: [GROUP], displayName: 'Own class', members: members(ids) }), [bUser.id]);
  await memberRefusal('POST group with B members', (ids) => scimA('POST', '/Groups', { schemas: [GROUP], displayName: 'New class', members: members(ids) }), [bUser.id]);

  const removal = await scimA('PATCH', `/Groups/${aGroup}`, patch({ op: 'remove', path: `members[value eq "${bUser.id}"]` }, { op: 'Remove', path: 'members', value: members([bUser.id]) }));
  await isolated('PATCH remove B user from A group', removal, bUser.id, [204]);

  // A may create its own user and class with B's userName and external ids: they
  // are new resources of A, never B's rows adopted or changed.
  const sameNames = await scimA('POST', '/Users', entraUser(11, { userName: bUser.userName, externalId: bUser.externalId }));
  await isolated('POST user with B userName and externalId', sameNames, `${bUser.userName} ${bUser.externalId}`, [201]);
  t.notOk(bIds.includes(sameNames.json().id as string), 'a new id, not B\'s');
  const sameClass = await scimA('POST', '/Groups', { schemas: [GROUP], displayName: bGroup.displayName, externalId: bGroup.externalId });
  await isolated('POST group with B displayName and externalId', sameClass, `${bGroup.displayName} ${bGroup.externalId}`, [201]);
  t.notOk(bIds.includes(sameClass.json().id as string), 'a new id, not B\'s');
  const manager = await scimA('PATCH', `/Users/${aUser}`, patch({ op: 'replace', path: `${ENTERPRISE}:manager`, value: bUser.id }));
  await isolated('PATCH manager naming a B user', manager, bUser.id, [200]);

  // Every SCIM route was exercised with A's credential, and every method on each of their URLs.
  const missing = scimRoutes.map((r) => `${r.method} ${r.url}`).filter((route) => !reached.has(route));
  t.same(missing, [], 'every SCIM route in the route table was exercised');
  const matrix = urls.flatMap((url) => METHODS.map((m) => `${m} ${url}`)).filter((route) => !reached.has(route) && !route.startsWith('HEAD '));
  t.same(matrix, [], 'every method on every SCIM URL was exercised');

  // B still sees its own data, unchanged.
  const own = await scimB('GET', `/Groups/${bGroup.id}`);
  t.equal(own.statusCode, 200);
  t.same((own.json<{ members: { value: string }[] }>().members).map((m) => m.value).sort(), bUsers.slice(0, 2).map((u) => u.id).sort(), "B's class keeps its members");
  t.ok(checked > 100, `${checked} cross-tenant requests checked`);
});
