// Class writes take their locks in one order: the tenant's turn, the class
// row, then the turn on a unique name. A rename on the quick path meets a
// locked-path write of the same class (which holds the row FOR UPDATE and
// then takes the name's turn): one waits for the other, and neither is
// aborted as a deadlock. The locked path is played by a transaction of the
// test, so the order is forced and each wait is seen in pg_blocking_pids.
import t from 'tap';
import { testApp } from './helpers/app.js';
import { holder, untilBlocked, watcher, connection } from './helpers/locks.js';
import { GROUP, client, patch } from './helpers/scim.js';

t.test('a rename waits for the class row before it takes the name, so a write holding the row can take the name', async (t) => {
  const env = await testApp(t);
  const scim = client(env.app, env.headers);
  const created = await scim('POST', '/Groups', { schemas: [GROUP], displayName: 'Class 8A', externalId: 'g-8a' });
  t.equal(created.statusCode, 201);
  const id = created.json().id as string;

  const blockedBy = watcher(await connection(t, env));
  const { hold, pid: holdPid } = await holder(t, env);
  await hold.query('SELECT 1 FROM classes WHERE tenant_id = $1 AND id = $2 FOR UPDATE', [env.tenant.id, id]);

  const renamed = scim('PATCH', `/Groups/${id}`, patch({ op: 'Replace', path: 'displayName', value: 'Class 8B' }));
  const waiting = await untilBlocked(blockedBy, holdPid, 1, renamed);
  t.equal(waiting?.length, 1, 'the rename waits for the class row held by the other write');

  // What the locked path does next: the name's turn, while it holds the row.
  const turn = await hold.query<{ free: boolean }>('SELECT class_name_is_free($1, $2, $3) AS free', [env.tenant.id, 'Class 8B', id]);
  t.same(turn.rows, [{ free: true }], 'the other write takes the name at once: the waiting rename does not hold it');
  await hold.query('COMMIT');

  const answer = await renamed;
  t.equal(answer.statusCode, 204);
  const rows = await env.db.selectFrom('classes').select(['display_name', 'version']).where('tenant_id', '=', env.tenant.id).execute();
  t.same(rows, [{ display_name: 'Class 8B', version: 2 }]);
  const events = await env.db.selectFrom('audit_events').select(['action', 'outcome']).where('tenant_id', '=', env.tenant.id).where('object_type', '=', 'group').orderBy('id').execute();
  t.same(events, [
    { action: 'create', outcome: 'success' },
    { action: 'update', outcome: 'success' },
  ]);
});
