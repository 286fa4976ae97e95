// Checks shared by the hostile-input, fuzz and isolation tests: the shape of a
// SCIM error answer, a tenant's rows to compare before and after, and the
// integrity of memberships.
import type { LightMyRequestResponse } from 'fastify';
import { sql } from 'kysely';
import type { Db } from '../../src/db/database.js';

export const ERROR_SCHEMA = 'urn:ietf:params:scim:api:messages:2.0:Error';

/** Why a response is not a SCIM error with this status (and scimType), or undefined when it is. */
export function scimErrorProblem(res: LightMyRequestResponse, status?: number, scimType?: string): string | undefined {
  if (status !== undefined && res.statusCode !== status) return `status ${res.statusCode}, expected ${status}: ${res.body.slice(0, 300)}`;
  if (!/^application\/scim\+json/.test(String(res.headers['content-type']))) return `content type ${String(res.headers['content-type'])}`;
  let body: { schemas?: unknown; status?: unknown; scimType?: unknown; detail?: unknown };
  try {
    body = JSON.parse(res.body) as typeof body;
  } catch {
    return `body is not JSON: ${res.body.slice(0, 200)}`;
  }
  if (JSON.stringify(body.schemas) !== JSON.stringify([ERROR_SCHEMA])) return `schemas ${JSON.stringify(body.schemas)}`;
  if (body.status !== String(res.statusCode)) return `status field ${JSON.stringify(body.status)} for ${res.statusCode}`;
  if (typeof body.detail !== 'string' || body.detail === '') return 'no detail';
  if (scimType !== undefined && body.scimType !== scimType) return `scimType ${JSON.stringify(body.scimType)}, expected ${scimType}: ${body.detail}`;
  return undefined;
}

/** Every row of a tenant's accounts, classes and memberships, in a stable order. */
export async function tenantRows(db: Db, tenantId: string): Promise<unknown> {
  const accounts = await db.selectFrom('accounts').selectAll().where('tenant_id', '=', tenantId).orderBy('id').execute();
  const classes = await db.selectFrom('classes').selectAll().where('tenant_id', '=', tenantId).orderBy('id').execute();
  const memberships = await db
    .selectFrom('class_memberships')
    .selectAll()
    .where('tenant_id', '=', tenantId)
    .orderBy('class_id')
    .orderBy('account_id')
    .execute();
  return JSON.parse(JSON.stringify({ accounts, classes, memberships })) as unknown;
}

/**
 * Integrity the schema's keys do not spell out: memberships of synced classes
 * point at live accounts of the same tenant, every synced userName is unique in
 * any case, and stored SCIM documents are JSON objects. Returns the violations.
 */
export async function integrityProblems(db: Db): Promise<string[]> {
  const problems: string[] = [];
  const orphans = await sql<{ n: string }>`
    SELECT count(*) AS n FROM class_memberships m
     WHERE NOT EXISTS (SELECT 1 FROM accounts a WHERE a.tenant_id = m.tenant_id AND a.id = m.account_id AND a.deleted_at IS NULL)
        OR NOT EXISTS (SELECT 1 FROM classes c WHERE c.tenant_id = m.tenant_id AND c.id = m.class_id)`.execute(db);
  if (orphans.rows[0]?.n !== '0') problems.push(`${orphans.rows[0]?.n ?? '?'} memberships without a live account or class of their tenant`);
  const duplicates = await sql<{ n: string }>`
    SELECT count(*) AS n FROM (SELECT 1 FROM accounts WHERE managed_by = 'sync' AND deleted_at IS NULL
      GROUP BY tenant_id, lower(user_name) HAVING count(*) > 1) d`.execute(db);
  if (duplicates.rows[0]?.n !== '0') problems.push(`${duplicates.rows[0]?.n ?? '?'} duplicate synced userNames`);
  const documents = await sql<{ n: string }>`
    SELECT (SELECT count(*) FROM accounts WHERE jsonb_typeof(scim) <> 'object')
         + (SELECT count(*) FROM classes WHERE jsonb_typeof(scim) <> 'object') AS n`.execute(db);
  if (documents.rows[0]?.n !== '0') problems.push(`${documents.rows[0]?.n ?? '?'} stored documents that are not objects`);
  const versions = await sql<{ n: string }>`
    SELECT (SELECT count(*) FROM accounts WHERE version < 1) + (SELECT count(*) FROM classes WHERE version < 1) AS n`.execute(db);
  if (versions.rows[0]?.n !== '0') problems.push(`${versions.rows[0]?.n ?? '?'} rows with a version below 1`);
  return problems;
}
