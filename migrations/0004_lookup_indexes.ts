// Indexes of Entra's lookups. An e-mail filter (emails[type eq "work"].value
// eq "x") is narrowed by the link e-mail column (accounts_email_idx) or, for
// the few accounts with more than one address, by this partial index, so it
// never reads a whole tenant. The statistics on the second address tell the
// planner how few those accounts are (without them it guesses nearly all and
// reads the tenant). Frozen once merged.
import { type Kysely, sql } from 'kysely';

export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`CREATE INDEX accounts_several_emails_idx ON accounts (tenant_id)
    WHERE deleted_at IS NULL AND ((scim -> 'emails') -> 1) IS NOT NULL`.execute(db);
  await sql`CREATE STATISTICS accounts_several_emails_stats ON ((scim -> 'emails') -> 1) FROM accounts`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`DROP STATISTICS accounts_several_emails_stats`.execute(db);
  await sql`DROP INDEX accounts_several_emails_idx`.execute(db);
}
