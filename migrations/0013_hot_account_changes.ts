// A change of a user's attributes (Entra's usual PATCH) can be a HOT update:
// PostgreSQL writes the new row version beside the old one on the same page
// and adds no index entries, when no indexed column changes and the page has
// room. The index of accounts with several e-mail addresses (migration 0004)
// read the SCIM document in its condition, so every change of the document
// counted as a change of an indexed column and wrote an entry in each of the
// table's indexes. The condition now reads a stored column computed from the
// document, which a change of a name or a display name leaves as it was;
// and pages are filled to 90% so a changed row has room beside the old one
// (the space of old versions is reclaimed as the page is next read).
// Frozen once merged.
import { type Kysely, sql } from 'kysely';
import { analyzeWithRows } from './0012_domain_checks.js';

export async function up(db: Kysely<unknown>): Promise<void> {
  // Before the column: adding a stored column rewrites the table, with this fill.
  await sql`ALTER TABLE accounts SET (fillfactor = 90)`.execute(db);
  await sql`ALTER TABLE accounts ADD COLUMN several_emails boolean NOT NULL
    GENERATED ALWAYS AS (((scim -> 'emails') -> 1) IS NOT NULL) STORED`.execute(db);
  await sql`DROP STATISTICS accounts_several_emails_stats`.execute(db);
  await sql`DROP INDEX accounts_several_emails_idx`.execute(db);
  await sql`CREATE INDEX accounts_several_emails_idx ON accounts (tenant_id) WHERE deleted_at IS NULL AND several_emails`.execute(db);
  // The new column's statistics tell the planner how few accounts have
  // several addresses (as 0004's statistics did); without them it guesses
  // half and an e-mail lookup reads the whole tenant.
  await analyzeWithRows(db, ['accounts']);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`ALTER TABLE accounts RESET (fillfactor)`.execute(db);
  await sql`DROP INDEX accounts_several_emails_idx`.execute(db);
  await sql`ALTER TABLE accounts DROP COLUMN several_emails`.execute(db);
  await sql`CREATE INDEX accounts_several_emails_idx ON accounts (tenant_id)
    WHERE deleted_at IS NULL AND ((scim -> 'emails') -> 1) IS NOT NULL`.execute(db);
  await sql`CREATE STATISTICS accounts_several_emails_stats ON ((scim -> 'emails') -> 1) FROM accounts`.execute(db);
  await analyzeWithRows(db, ['accounts']);
}
