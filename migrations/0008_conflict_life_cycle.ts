// A sync conflict has a life cycle: one open conflict per tenant, kind and
// object (its reference in any case), which a retry of the same refusal
// updates (last seen, count) instead of adding a row; it closes when the
// same object later succeeds ('succeeded') or when the portal team resolves
// or dismisses it with a note. The unique partial index is both the upsert's
// arbiter and the one probe a successful user write makes to close its
// object's conflicts. Frozen once merged.
import { type Kysely, sql } from 'kysely';

export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`ALTER TABLE sync_conflicts
    ADD COLUMN last_seen_at timestamptz,
    ADD COLUMN seen_count integer NOT NULL DEFAULT 1 CHECK (seen_count > 0),
    ADD COLUMN resolution text CHECK (resolution IN ('succeeded', 'resolved', 'dismissed')),
    ADD COLUMN note text`.execute(db);
  await sql`UPDATE sync_conflicts SET last_seen_at = at`.execute(db);
  await sql`ALTER TABLE sync_conflicts ALTER COLUMN last_seen_at SET NOT NULL, ALTER COLUMN last_seen_at SET DEFAULT now()`.execute(db);
  // Conflicts closed before this migration have no resolution on record: the
  // only way to close one was by hand.
  await sql`UPDATE sync_conflicts SET resolution = 'resolved' WHERE resolved_at IS NOT NULL`.execute(db);
  await sql`ALTER TABLE sync_conflicts ADD CONSTRAINT sync_conflicts_closed_check CHECK ((resolved_at IS NULL) = (resolution IS NULL))`.execute(db);

  // Until now every refusal added a row. The open rows of one object become
  // one: the first keeps its id, opening time and request, and takes the
  // others' count and latest sighting; the others go (each refusal stays in
  // the audit log). A conflict without a reference names no object and is
  // closed as it is.
  await sql`UPDATE sync_conflicts SET resolved_at = now(), resolution = 'dismissed', note = 'no object reference'
     WHERE resolved_at IS NULL AND object_ref IS NULL`.execute(db);
  await sql`WITH ranked AS (
      SELECT tenant_id, id, row_number() OVER same AS n, count(*) OVER same AS seen, max(at) OVER same AS last_seen
        FROM sync_conflicts
       WHERE resolved_at IS NULL
      WINDOW same AS (PARTITION BY tenant_id, object_type, lower(object_ref), kind ORDER BY at, id
                      ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)
    ), kept AS (
      UPDATE sync_conflicts c SET seen_count = r.seen, last_seen_at = r.last_seen
        FROM ranked r WHERE r.n = 1 AND r.seen > 1 AND c.tenant_id = r.tenant_id AND c.id = r.id
    )
    DELETE FROM sync_conflicts c USING ranked r WHERE r.n > 1 AND c.tenant_id = r.tenant_id AND c.id = r.id`.execute(db);

  await sql`CREATE UNIQUE INDEX sync_conflicts_open_object_idx ON sync_conflicts (tenant_id, object_type, lower(object_ref), kind)
    WHERE resolved_at IS NULL`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`DROP INDEX sync_conflicts_open_object_idx`.execute(db);
  await sql`ALTER TABLE sync_conflicts DROP CONSTRAINT sync_conflicts_closed_check`.execute(db);
  await sql`ALTER TABLE sync_conflicts DROP COLUMN note, DROP COLUMN resolution, DROP COLUMN seen_count, DROP COLUMN last_seen_at`.execute(db);
}
