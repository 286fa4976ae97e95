// Requests through a wrong Tenant URL (without /scim/v2, ending in /Users, a
// slash too many) answer a SCIM 404 whose detail names the Tenant URL to use,
// and change nothing.
import t from 'tap';
import { PUBLIC_URL, testApp } from './helpers/app.js';
import { entraUser } from './helpers/scim.js';

const TENANT_URL = `${PUBLIC_URL}/scim/v2`;
const FILTER = `filter=${encodeURIComponent('userName eq "0b0c5a6c-3d3c-4f5a-9d9e-2a1b3c4d5e6f"')}`;

t.test('each wrong Tenant URL is answered with the right one', async (t) => {
  const { app, headers, db } = await testApp(t);
  const outside = (path: string) => `No SCIM endpoint at ${path}: set the Tenant URL to ${TENANT_URL} (Entra adds /Users and /Groups to it).`;
  const endsIn = (name: string) => `The Tenant URL ends in /${name}: set it to ${TENANT_URL}, without /Users or /Groups (Entra adds them).`;
  const doubled = (path: string) => `The request path ${path} has an empty segment (//): set the Tenant URL to ${TENANT_URL}, with no slash at its end.`;
  const cases: [string, string, string][] = [
    // The Tenant URL is PUBLIC_URL alone, or misses a part of /scim/v2.
    ['GET', `/Users?${FILTER}`, outside('/Users')],
    ['GET', `/users?${FILTER}`, outside('/users')],
    ['POST', '/Groups', outside('/Groups')],
    ['GET', `/scim/Users?${FILTER}`, outside('/scim/Users')],
    ['GET', `/v2/Users?${FILTER}`, outside('/v2/Users')],
    ['GET', `/api/scim/v2/Users?${FILTER}`, outside('/api/scim/v2/Users')],
    // /scim/v2 given twice.
    ['GET', `/scim/v2/scim/v2/Users?${FILTER}`, outside('/scim/v2/scim/v2/Users')],
    // The Tenant URL ends in /Users or /Groups: Entra appends its endpoint again.
    ['GET', `/scim/v2/Users/Users?${FILTER}`, endsIn('Users')],
    ['GET', `/scim/v2/users/USERS?${FILTER}`, endsIn('Users')],
    ['GET', `/scim/v2/Groups/Groups?${encodeURIComponent('excludedAttributes')}=members`, endsIn('Groups')],
    ['POST', '/scim/v2/Users/Users', endsIn('Users')],
    ['PATCH', '/scim/v2/Users/Users/00000000-0000-4000-8000-000000000001', endsIn('Users')],
    ['DELETE', '/scim/v2/Groups/Users', endsIn('Groups')],
    ['PUT', '/scim/v2/Users/Groups', endsIn('Users')],
    // A slash at the end of the Tenant URL, or before it.
    ['GET', `/scim/v2//Users?${FILTER}`, doubled('/scim/v2//Users')],
    ['POST', '/scim/v2//Users', doubled('/scim/v2//Users')],
    ['GET', `//scim/v2/Users?${FILTER}`, doubled('//scim/v2/Users')],
  ];
  for (const [method, url, detail] of cases) {
    const body = method === 'POST' || method === 'PUT' ? JSON.stringify(entraUser(1)) : method === 'PATCH' ? JSON.stringify({ schemas: [], Operations: [] }) : undefined;
    const res = await app.inject({ method: method as 'GET', url, headers, ...(body ? { payload: body } : {}) });
    t.equal(res.statusCode, 404, `${method} ${url}`);
    t.match(res.headers['content-type'], /^application\/scim\+json/, `${method} ${url}: SCIM content type`);
    t.same(res.json(), { schemas: ['urn:ietf:params:scim:api:messages:2.0:Error'], status: '404', detail }, `${method} ${url}`);
  }
  const accounts = await db.selectFrom('accounts').select(db.fn.countAll().as('n')).executeTakeFirstOrThrow();
  t.equal(Number(accounts.n), 0, 'no request through a wrong Tenant URL created an account');
});

t.test('inside /scim/v2 the answer still needs a credential; outside it names only the public Tenant URL', async (t) => {
  const { app } = await testApp(t);
  const inside = await app.inject({ method: 'GET', url: `/scim/v2/Users/Users?${FILTER}` });
  t.equal(inside.statusCode, 401, 'no credential, no answer inside the SCIM endpoint');
  const doubled = await app.inject({ method: 'GET', url: `/scim/v2//Users?${FILTER}` });
  t.equal(doubled.statusCode, 401);
  const outside = await app.inject({ method: 'GET', url: `/Users?${FILTER}` });
  t.equal(outside.statusCode, 404);
  t.match(outside.json(), { status: '404', detail: new RegExp(`set the Tenant URL to ${TENANT_URL.replace(/[./]/g, '\\$&')} `) });
});

t.test('paths that are not a wrong Tenant URL keep their own answers', async (t) => {
  const { app, headers } = await testApp(t);
  const missing = await app.inject({ method: 'GET', url: '/scim/v2/Users/00000000-0000-4000-8000-000000000009', headers });
  t.same(missing.json(), { schemas: ['urn:ietf:params:scim:api:messages:2.0:Error'], status: '404', detail: 'No user 00000000-0000-4000-8000-000000000009.' });
  const unknown = await app.inject({ method: 'GET', url: '/scim/v2/Nothing', headers });
  t.same(unknown.json().detail, 'No resource at GET /scim/v2/Nothing.');
  const root = await app.inject({ method: 'GET', url: '/favicon.ico' });
  t.same(root.json().detail, 'No resource at GET /favicon.ico.');
  const search = await app.inject({ method: 'GET', url: '/scim/v2/.search', headers });
  t.equal(search.statusCode, 405);
  t.equal(search.headers.allow, 'POST');
  t.equal(search.json().detail, 'GET is not supported here; use POST.');
});
