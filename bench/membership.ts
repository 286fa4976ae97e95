// Membership batches against a growing class: starts the server on a fresh
// database, grows one class to --members members in PATCH batches of
// --batch over loopback HTTP, then removes half, and prints the latency of
// the first and last batches. Flat figures mean cost does not grow with the
// class. Usage: npm run bench:members -- [--members 10000] [--batch 100]
import { randomBytes } from 'node:crypto';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { buildApp } from '../src/app.js';
import { signingKeys } from '../src/auth/keys.js';
import { signToken } from '../src/auth/tokens.js';
import { loadConfig } from '../src/config.js';
import { createCredential } from '../src/db/credentials.js';
import { createDb } from '../src/db/database.js';
import { openEmbeddedPostgres } from '../src/db/embedded.js';
import { migrateToLatest } from '../src/db/migrate.js';
import { createTenant } from '../src/db/tenants.js';

const { values } = parseArgs({ options: { members: { type: 'string', default: '10000' }, batch: { type: 'string', default: '100' } } });
const total = Number(values.members);
const batch = Number(values.batch);

const embedded = process.env.DATABASE_URL ? undefined : await openEmbeddedPostgres({ dataDir: '.data/bench', database: 'postgres' });
const adminUrl = process.env.DATABASE_URL ?? embedded?.adminUrl ?? '';
const name = `bench_${randomBytes(4).toString('hex')}`;
const admin = new pg.Client({ connectionString: adminUrl });
await admin.connect();
await admin.query(`CREATE DATABASE ${name}`);
const url = new URL(adminUrl);
url.pathname = `/${name}`;
const { db } = createDb(url.toString(), { poolSize: 10 });
try {
  await migrateToLatest(db);
  const secret = randomBytes(32).toString('hex');
  const config = loadConfig({ JWT_SECRET: secret, LOG_LEVEL: 'silent', PUBLIC_URL: 'http://127.0.0.1' });
  const keys = signingKeys(secret);
  const tenant = await createTenant(db, { name: 'Bench School' });
  const credential = await createCredential(db, { tenantId: tenant.id, kind: 'token' });
  const token = signToken({ keys, issuer: config.jwtIssuer, audience: config.jwtAudience }, { tid: tenant.id, jti: credential.id });
  const ids = (
    await db
      .insertInto('accounts')
      .values(Array.from({ length: total }, (_, i) => ({ tenant_id: tenant.id, managed_by: 'sync' as const, user_name: `m${i}@bench.example`, scim: '{}' })))
      .returning('id')
      .execute()
  ).map((r) => r.id);
  const app = await buildApp({ config, db, keys });
  const base = await app.listen({ port: 0, host: '127.0.0.1' });
  const headers = { authorization: `Bearer ${token}`, 'content-type': 'application/scim+json' };
  const send = async (method: string, path: string, body?: unknown): Promise<number> => {
    const started = performance.now();
    const res = await fetch(`${base}/scim/v2${path}`, { method, headers, ...(body ? { body: JSON.stringify(body) } : {}) });
    await res.arrayBuffer();
    if (!res.ok) throw new Error(`${method} ${path}: ${res.status}`);
    return performance.now() - started;
  };
  const group = (await (await fetch(`${base}/scim/v2/Groups`, { method: 'POST', headers, body: JSON.stringify({ schemas: ['urn:ietf:params:scim:schemas:core:2.0:Group'], displayName: 'Big class' }) })).json()) as { id: string };
  const op = (o: unknown) => ({ schemas: ['urn:ietf:params:scim:api:messages:2.0:PatchOp'], Operations: [o] });
  const adds: number[] = [];
  for (let i = 0; i < ids.length; i += batch) {
    adds.push(await send('PATCH', `/Groups/${group.id}`, op({ op: 'add', path: 'members', value: ids.slice(i, i + batch).map((value) => ({ value })) })));
  }
  const removes: number[] = [];
  for (let i = 0; i < ids.length / 2; i += batch) {
    removes.push(await send('PATCH', `/Groups/${group.id}`, op({ op: 'remove', path: 'members', value: ids.slice(i, i + batch).map((value) => ({ value })) })));
  }
  const getFull = await send('GET', `/Groups/${group.id}`);
  const getLean = await send('GET', `/Groups/${group.id}?excludedAttributes=members`);
  const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;
  const ms = (x: number): string => `${x.toFixed(1)} ms`;
  const firstAdds = adds.slice(0, 10);
  const lastAdds = adds.slice(-10);
  process.stdout.write(
    [
      `class of ${total} members, batches of ${batch}, over HTTP on 127.0.0.1 (${process.env.DATABASE_URL ? 'DATABASE_URL' : 'embedded PostgreSQL'})`,
      `add    first 10 batches median ${ms(median(firstAdds))}   last 10 batches median ${ms(median(lastAdds))}   ratio ${(median(lastAdds) / median(firstAdds)).toFixed(2)}`,
      `remove first 10 batches median ${ms(median(removes.slice(0, 10)))}   last 10 batches median ${ms(median(removes.slice(-10)))}`,
      `GET the class with ${total / 2} members ${ms(getFull)}; with excludedAttributes=members ${ms(getLean)}`,
      '',
    ].join('\n'),
  );
  await app.close();
} finally {
  await db.destroy();
  await admin.query(`DROP DATABASE ${name} WITH (FORCE)`);
  await admin.end();
  await embedded?.stop();
}
