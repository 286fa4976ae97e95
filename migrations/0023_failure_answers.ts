// The failures of the last 24 hours, counted on every status read and every
// metrics scrape, add up the answers a tallied event stands for (a flood of
// throttled writes is one event a minute, plugins/activity.ts). The count
// itself comes from the failures' index alone; the few events that stand for
// more than one answer are found by this index, without reading every
// failure's row for its details.
// Frozen once merged.
import { type Kysely, sql } from 'kysely';

export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`CREATE INDEX audit_events_answers_idx ON audit_events (tenant_id, at) WHERE outcome = 'failure' AND details ? 'answers'`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`DROP INDEX audit_events_answers_idx`.execute(db);
}
