// Signing out of the status pages ends that session on every instance: the
// session is a signed cookie, so a copy taken before the sign-out would
// otherwise open the pages, with pupils' names in their conflicts, until it
// expires. A row per ended session, kept until the session would have
// expired anyway; the admin credential's own revocation still ends all of
// its sessions at once.
// Frozen once merged.
import { type Kysely, sql } from 'kysely';

export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`CREATE TABLE admin_session_ends (
    credential_id uuid NOT NULL REFERENCES admin_credentials (id) ON DELETE CASCADE,
    session_id uuid NOT NULL,
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (credential_id, session_id)
  )`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`DROP TABLE admin_session_ends`.execute(db);
}
