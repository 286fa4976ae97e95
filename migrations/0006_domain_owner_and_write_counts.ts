// A verified domain belongs to one tenant only: adoption by e-mail (rule 2)
// must never have two tenants to choose from. A trigger refuses a domain that
// another tenant holds, under a lock that serialises domain changes, so two
// tenants claiming one domain at once cannot both pass. And request_counts
// keeps SCIM writes and failed writes apart from reads, for the share of
// failed writes that makes a tenant "failing"; the overview gets the indexes
// its figures need. Frozen once merged.
import { type Kysely, sql } from 'kysely';

export async function up(db: Kysely<unknown>): Promise<void> {
  // Stops with the domain and tenants to fix rather than leaving a duplicate behind.
  await sql`DO $$
    DECLARE shared record;
    BEGIN
      SELECT lower(d) AS domain, string_agg(DISTINCT id::text, ', ') AS tenants INTO shared
        FROM tenants, unnest(verified_domains) d
       GROUP BY lower(d) HAVING count(DISTINCT id) > 1
       LIMIT 1;
      IF FOUND THEN
        RAISE EXCEPTION 'the domain % is a verified domain of several tenants (%): keep it on one (portal-scim tenant set ID --domain ...) and migrate again', shared.domain, shared.tenants;
      END IF;
    END $$`.execute(db);
  await sql`CREATE INDEX tenants_verified_domains_idx ON tenants USING gin (verified_domains)`.execute(db);
  await sql`CREATE FUNCTION tenants_verified_domain_owner() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE taken record;
    BEGIN
      IF cardinality(NEW.verified_domains) = 0 THEN
        RETURN NEW;
      END IF;
      PERFORM pg_advisory_xact_lock(hashtext('portal_scim.tenants_verified_domain_owner'));
      SELECT t.id, d AS domain INTO taken
        FROM unnest(NEW.verified_domains) d
        JOIN tenants t ON t.verified_domains @> ARRAY[d] AND t.id <> NEW.id
       LIMIT 1;
      IF FOUND THEN
        RAISE EXCEPTION 'the domain % is a verified domain of tenant %', taken.domain, taken.id
          USING ERRCODE = 'unique_violation', CONSTRAINT = 'tenants_verified_domain_owner';
      END IF;
      RETURN NEW;
    END $$`.execute(db);
  await sql`CREATE TRIGGER tenants_verified_domain_owner BEFORE INSERT OR UPDATE OF verified_domains ON tenants
    FOR EACH ROW EXECUTE FUNCTION tenants_verified_domain_owner()`.execute(db);

  await sql`ALTER TABLE request_counts
    ADD COLUMN writes bigint NOT NULL DEFAULT 0,
    ADD COLUMN write_failures bigint NOT NULL DEFAULT 0`.execute(db);
  // Failed writes of the last day per tenant, for the overview, without
  // reading every event of the day: a tenant's events lie scattered among
  // the other tenants' on the heap.
  await sql`CREATE INDEX audit_events_failures_idx ON audit_events (tenant_id, at) WHERE outcome = 'failure'`.execute(db);
  // The overview's chart reads the last 24 hours of every tenant; the counts are kept, so without it that read grows with every month.
  await sql`CREATE INDEX request_counts_hour_idx ON request_counts (hour)`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`DROP INDEX request_counts_hour_idx`.execute(db);
  await sql`DROP INDEX audit_events_failures_idx`.execute(db);
  await sql`ALTER TABLE request_counts DROP COLUMN write_failures, DROP COLUMN writes`.execute(db);
  await sql`DROP TRIGGER tenants_verified_domain_owner ON tenants`.execute(db);
  await sql`DROP FUNCTION tenants_verified_domain_owner()`.execute(db);
  await sql`DROP INDEX tenants_verified_domains_idx`.execute(db);
}
