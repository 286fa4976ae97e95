// Entra sends an app role on POST as {"primary":"True","type":...,"value":"Teacher"}
// and, in a PATCH without aadOptscim062020, as an Add whose element's value
// is JSON text. An Add of the role the user already has (RFC 7644 §3.5.2.1:
// a value already present is no change) must leave one Teacher role and
// write nothing: no second Teacher role, no new version, no audit event and
// no feed row.
import t from 'tap';
import { testApp } from './helpers/app.js';
import { client, entraUser, patch } from './helpers/scim.js';

t.test('an Add of the app role a user got on POST keeps one copy and writes nothing', async (t) => {
  const env = await testApp(t);
  const scim = client(env.app, env.headers);
  const created = await scim('POST', '/Users', entraUser(1, { roles: [{ primary: 'True', type: 'WindowsAzureActiveDirectoryRole', value: 'Teacher' }] }));
  t.equal(created.statusCode, 201);
  const id = created.json().id as string;
  const feedBefore = (await env.db.selectFrom('change_events').select('position').execute()).length;

  const res = await scim('PATCH', `/Users/${id}`, patch({ op: 'Add', path: 'roles', value: [{ value: '{"id":"8d4c1b1e-0000-4000-8000-000000000001","value":"Teacher","displayName":"Teacher"}' }] }));
  t.equal(res.statusCode, 200);
  const roles = (await scim('GET', `/Users/${id}`)).json().roles as { value: string }[];
  t.equal(roles.filter((r) => r.value === 'Teacher').length, 1, `one Teacher role, found ${JSON.stringify(roles)}`);
  t.equal(res.json().meta.version, 'W/"1"', 'no new version');
  t.equal((await env.db.selectFrom('change_events').select('position').execute()).length, feedBefore, 'nothing in the change feed');
  t.equal((await env.db.selectFrom('audit_events').select('id').where('action', '=', 'update').execute()).length, 0, 'no update event');
});

t.test('an Add of another app role, or of the same value with another type, is kept', async (t) => {
  const env = await testApp(t);
  const scim = client(env.app, env.headers);
  const created = await scim('POST', '/Users', entraUser(1, { roles: [{ primary: 'True', type: 'WindowsAzureActiveDirectoryRole', value: 'Teacher' }] }));
  const id = created.json().id as string;
  const res = await scim(
    'PATCH',
    `/Users/${id}`,
    patch({ op: 'Add', path: 'roles', value: [{ value: '{"id":"8d4c1b1e-0000-4000-8000-000000000002","value":"Mentor","displayName":"Mentor"}' }, { value: 'Teacher', type: 'subject' }] }),
  );
  t.equal(res.statusCode, 200, res.body);
  t.same(
    (res.json().roles as { value: string; type?: string }[]).map((r) => [r.value, r.type]),
    [
      ['Teacher', 'WindowsAzureActiveDirectoryRole'],
      ['Mentor', 'WindowsAzureActiveDirectoryRole'],
      ['Teacher', 'subject'],
    ],
  );
  t.equal(res.json().meta.version, 'W/"2"');
  const row = await env.db.selectFrom('accounts').select(['version', 'role']).where('id', '=', id).executeTakeFirstOrThrow();
  t.same(row, { version: 2, role: 'teacher' });
});
