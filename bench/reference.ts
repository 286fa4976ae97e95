// The benchmark's reference server: plain fastify and pg, one SQL statement
// per request, no SCIM logic (no schemas, filters, rules, audit or
// authentication), over simple tables of its own in the schema "reference".
// It is what the same workloads cost when the server does nothing but the
// database write or read, so the SCIM server's figures are read as ratios to it.
import Fastify, { type FastifyInstance } from 'fastify';
import type pg from 'pg';

const SCHEMA = [
  'CREATE SCHEMA IF NOT EXISTS reference',
  `CREATE TABLE reference.accounts (
    tenant_id uuid NOT NULL,
    id uuid NOT NULL DEFAULT gen_random_uuid(),
    user_name text NOT NULL,
    external_id text,
    email text,
    given_name text,
    family_name text,
    display_name text,
    scim jsonb NOT NULL DEFAULT '{}'::jsonb,
    PRIMARY KEY (tenant_id, id)
  )`,
  'CREATE UNIQUE INDEX ON reference.accounts (tenant_id, lower(user_name))',
  'CREATE INDEX ON reference.accounts (tenant_id, lower(email))',
  `CREATE TABLE reference.classes (
    tenant_id uuid NOT NULL,
    id uuid NOT NULL DEFAULT gen_random_uuid(),
    display_name text NOT NULL,
    external_id text,
    scim jsonb NOT NULL DEFAULT '{}'::jsonb,
    PRIMARY KEY (tenant_id, id)
  )`,
  'CREATE INDEX ON reference.classes (tenant_id, lower(display_name))',
  `CREATE TABLE reference.memberships (
    tenant_id uuid NOT NULL,
    class_id uuid NOT NULL,
    account_id uuid NOT NULL,
    PRIMARY KEY (tenant_id, class_id, account_id),
    FOREIGN KEY (tenant_id, class_id) REFERENCES reference.classes (tenant_id, id) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, account_id) REFERENCES reference.accounts (tenant_id, id) ON DELETE CASCADE
  )`,
  'CREATE INDEX ON reference.memberships (tenant_id, account_id)',
];

export async function createReferenceSchema(pool: pg.Pool): Promise<void> {
  for (const statement of SCHEMA) await pool.query(statement);
}

type Body = Record<string, unknown>;

const text = (value: unknown): string | null => (typeof value === 'string' ? value : null);
const ids = (value: unknown): string[] => (Array.isArray(value) ? value.map((m) => String((m as { value?: unknown }).value ?? m)) : []);

/** The reference app over a pool; the tenant travels in the x-tenant header. */
export function buildReferenceApp(pool: pg.Pool): FastifyInstance {
  const app = Fastify({ logger: false });
  app.addContentTypeParser('application/scim+json', { parseAs: 'string' }, (_request, body, done) => {
    try {
      done(null, body === '' ? undefined : JSON.parse(body as string));
    } catch (error) {
      done(error as Error, undefined);
    }
  });
  const tenant = (headers: Record<string, unknown>): string => String(headers['x-tenant']);

  app.post('/users', async (request, reply) => {
    const b = request.body as Body;
    const name = (b.name ?? {}) as Body;
    const email = Array.isArray(b.emails) ? text((b.emails[0] as Body | undefined)?.value) : null;
    const { rows } = await pool.query(
      `INSERT INTO reference.accounts (tenant_id, user_name, external_id, email, given_name, family_name, display_name, scim)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING *`,
      [tenant(request.headers), text(b.userName), text(b.externalId), email, text(name.givenName), text(name.familyName), text(b.displayName), b],
    );
    return reply.code(201).send(rows[0]);
  });

  app.get('/users', async (request) => {
    const q = request.query as { userName?: string; email?: string };
    const { rows } =
      q.email !== undefined
        ? await pool.query('SELECT * FROM reference.accounts WHERE tenant_id = $1 AND lower(email) = lower($2)', [tenant(request.headers), q.email])
        : await pool.query('SELECT * FROM reference.accounts WHERE tenant_id = $1 AND lower(user_name) = lower($2)', [tenant(request.headers), q.userName ?? '']);
    return { totalResults: rows.length, Resources: rows };
  });

  app.patch('/users/:id', async (request, reply) => {
    const b = request.body as Body;
    const { rows } = await pool.query(
      `UPDATE reference.accounts SET display_name = $3, given_name = $4, family_name = $5,
         scim = scim || jsonb_build_object('displayName', $3::text, 'name', jsonb_build_object('givenName', $4::text, 'familyName', $5::text))
       WHERE tenant_id = $1 AND id = $2 RETURNING *`,
      [tenant(request.headers), (request.params as { id: string }).id, text(b.displayName), text(b.givenName), text(b.familyName)],
    );
    return rows[0] ? rows[0] : reply.code(404).send();
  });

  app.delete('/users/:id', async (request, reply) => {
    const { rowCount } = await pool.query('DELETE FROM reference.accounts WHERE tenant_id = $1 AND id = $2', [tenant(request.headers), (request.params as { id: string }).id]);
    return reply.code(rowCount ? 204 : 404).send();
  });

  app.post('/classes', async (request, reply) => {
    const b = request.body as Body;
    const { rows } = await pool.query('INSERT INTO reference.classes (tenant_id, display_name, external_id, scim) VALUES ($1, $2, $3, $4) RETURNING *', [
      tenant(request.headers),
      text(b.displayName),
      text(b.externalId),
      b,
    ]);
    return reply.code(201).send(rows[0]);
  });

  app.get('/classes', async (request) => {
    const q = request.query as { displayName?: string };
    const { rows } = await pool.query('SELECT * FROM reference.classes WHERE tenant_id = $1 AND lower(display_name) = lower($2)', [tenant(request.headers), q.displayName ?? '']);
    return { totalResults: rows.length, Resources: rows };
  });

  app.get('/classes/:id', async (request, reply) => {
    const { rows } = await pool.query(
      `SELECT c.*, COALESCE((SELECT json_agg(json_build_object('value', m.account_id, 'display', u.display_name) ORDER BY m.account_id)
                               FROM reference.memberships m JOIN reference.accounts u ON u.tenant_id = m.tenant_id AND u.id = m.account_id
                              WHERE m.tenant_id = c.tenant_id AND m.class_id = c.id), '[]') AS members
         FROM reference.classes c WHERE c.tenant_id = $1 AND c.id = $2`,
      [tenant(request.headers), (request.params as { id: string }).id],
    );
    return rows[0] ? rows[0] : reply.code(404).send();
  });

  // {add: [...]} or {remove: [...]}: one statement either way.
  app.patch('/classes/:id/members', async (request, reply) => {
    const b = request.body as Body;
    const params = [tenant(request.headers), (request.params as { id: string }).id];
    if (b.add !== undefined) {
      await pool.query(
        `INSERT INTO reference.memberships (tenant_id, class_id, account_id)
         SELECT $1, $2, id FROM unnest($3::uuid[]) AS ids(id) ON CONFLICT DO NOTHING`,
        [...params, ids(b.add)],
      );
    } else {
      await pool.query('DELETE FROM reference.memberships WHERE tenant_id = $1 AND class_id = $2 AND account_id = ANY($3::uuid[])', [...params, ids(b.remove)]);
    }
    return reply.code(204).send();
  });

  return app;
}
