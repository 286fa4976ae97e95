// SCIM requests per tenant and hour, for the status page's traffic chart: the
// audit log holds writes and failures only, not Entra's reads. Each instance
// adds its counts every few seconds. Frozen once merged.
import { type Kysely, sql } from 'kysely';

export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`CREATE TABLE request_counts (
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    hour timestamptz NOT NULL,
    requests bigint NOT NULL DEFAULT 0,
    failures bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, hour)
  )`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`DROP TABLE request_counts`.execute(db);
}
