// A conflict is one per address (rule 3), so two Entra users refused for one
// admin's address, a new user and a rename of an existing one say, share
// it. The Entra object ids it refused let the portal team and the school
// tell them apart and find each in Entra: at most ten, the first ones seen.
// Frozen once merged.
import { type Kysely, sql } from 'kysely';

export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`ALTER TABLE sync_conflicts ADD COLUMN entra_objects text[] NOT NULL DEFAULT '{}'`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`ALTER TABLE sync_conflicts DROP COLUMN entra_objects`.execute(db);
}
