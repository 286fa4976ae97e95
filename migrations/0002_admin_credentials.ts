// Credentials of the portal team's admin API (/admin): not tied to a tenant,
// kept apart from SCIM credentials so neither can stand in for the other.
// Frozen once merged.
import { type Kysely, sql } from 'kysely';

export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`CREATE TABLE admin_credentials (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    label text,
    expires_at timestamptz,
    revoked_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now()
  )`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`DROP TABLE admin_credentials`.execute(db);
}
