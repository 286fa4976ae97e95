// A member who leaves a class because their account was deleted changes the
// class as SCIM shows it, so the class's version must move too (RFC 7644
// §3.14: an ETag changes whenever the resource does). The delete cannot
// write the class row: it holds the account while a class write holds the
// class and waits for its members' accounts, and a merge holds accounts
// while it writes memberships, so a row lock of the class there would wait
// in a circle. Each departure is a row of its own instead, inserted (never
// updated, no foreign key) and so never waiting on anyone; a class's version
// as SCIM shows it is its row's version plus its departures. Both only grow,
// and every change moves one of them, so no two states of a class share a
// version. A class delete takes its departures with it; the hourly job
// removes any a delete racing the class's delete left behind.
// Frozen once merged.
import { type Kysely, sql } from 'kysely';

export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`CREATE TABLE class_departures (
    tenant_id uuid NOT NULL,
    class_id uuid NOT NULL,
    id uuid NOT NULL DEFAULT gen_random_uuid(),
    account_id uuid NOT NULL,
    departed_at timestamp with time zone NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (tenant_id, class_id, id)
  )`.execute(db);
  await sql`COMMENT ON TABLE class_departures IS
    'Synced members who left a class because their account was deleted: each moves the class''s SCIM version by one. Not for the portal.'`.execute(db);
  await sql`CREATE OR REPLACE FUNCTION accounts_leave_classes() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      -- An account in no class is spared a DELETE that finds nothing, and
      -- the statement triggers that would fire for it.
      IF EXISTS (SELECT 1 FROM class_memberships WHERE tenant_id = NEW.tenant_id AND account_id = NEW.id) THEN
        WITH gone AS (
          DELETE FROM class_memberships WHERE tenant_id = NEW.tenant_id AND account_id = NEW.id
          RETURNING tenant_id, class_id, account_id, synced
        )
        INSERT INTO class_departures (tenant_id, class_id, account_id)
        SELECT tenant_id, class_id, account_id FROM gone WHERE synced;
      END IF;
      RETURN NULL;
    END $$`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  // The departures go into the rows' versions and times, so no version is ever shown twice nor a time go back.
  await sql`UPDATE classes c SET version = c.version + d.n, updated_at = greatest(c.updated_at, d.last)
      FROM (SELECT tenant_id, class_id, count(*)::integer AS n, max(departed_at) AS last FROM class_departures GROUP BY tenant_id, class_id) d
     WHERE c.tenant_id = d.tenant_id AND c.id = d.class_id`.execute(db);
  await sql`CREATE OR REPLACE FUNCTION accounts_leave_classes() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      -- An account in no class is spared a DELETE that finds nothing, and
      -- the statement triggers that would fire for it.
      IF EXISTS (SELECT 1 FROM class_memberships WHERE tenant_id = NEW.tenant_id AND account_id = NEW.id) THEN
        DELETE FROM class_memberships WHERE tenant_id = NEW.tenant_id AND account_id = NEW.id;
      END IF;
      RETURN NULL;
    END $$`.execute(db);
  await sql`DROP TABLE class_departures`.execute(db);
}
