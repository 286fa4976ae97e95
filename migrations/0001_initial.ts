// The whole model: tenants and their settings, credentials, accounts, classes,
// class memberships, audit events, sync conflicts, and the views the portal reads.
// Every tenant-owned table is keyed by tenant_id first so a tenant's rows sit
// together and the schema can be distributed by tenant without a redesign.
// Frozen once merged: change the model in a new migration.
import { type Kysely, sql } from 'kysely';

const upStatements = [
  `CREATE TABLE tenants (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    verified_domains text[] NOT NULL DEFAULT '{}',
    role_mapping jsonb NOT NULL DEFAULT '{}'::jsonb,
    retention_days integer NOT NULL DEFAULT 30 CHECK (retention_days BETWEEN 0 AND 3650),
    disconnected_at timestamptz,
    last_request_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
  )`,

  // A credential is either a Secret Token (a signed JWT naming this row) or an
  // OAuth client whose secret is kept only as a slow hash.
  `CREATE TABLE credentials (
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id uuid NOT NULL DEFAULT gen_random_uuid(),
    kind text NOT NULL CHECK (kind IN ('token', 'client')),
    label text,
    secret_hash text,
    expires_at timestamptz,
    revoked_at timestamptz,
    last_used_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    CHECK (kind <> 'client' OR secret_hash IS NOT NULL)
  )`,
  // Token and OAuth requests name a credential by id alone.
  `CREATE UNIQUE INDEX credentials_id_key ON credentials (id)`,

  // The portal's accounts. Synced rows carry the SCIM resource Entra last wrote
  // in scim (everything but id and meta); the columns beside it are what the
  // portal and our lookups read.
  `CREATE TABLE accounts (
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id uuid NOT NULL DEFAULT gen_random_uuid(),
    managed_by text NOT NULL DEFAULT 'manual' CHECK (managed_by IN ('sync', 'manual')),
    role text NOT NULL DEFAULT 'student' CHECK (role IN ('student', 'teacher', 'staff', 'admin')),
    user_name text NOT NULL CHECK (length(user_name) BETWEEN 1 AND 512),
    external_id text,
    email text,
    given_name text,
    family_name text,
    display_name text,
    school_id text,
    grade text,
    active boolean NOT NULL DEFAULT true,
    scim jsonb NOT NULL DEFAULT '{}'::jsonb,
    version integer NOT NULL DEFAULT 1,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    deleted_at timestamptz,
    PRIMARY KEY (tenant_id, id)
  )`,
  // userName is unique among the synced, live accounts of a tenant in any case;
  // a manual account with the same name is adopted or left alone (rule 2).
  `CREATE UNIQUE INDEX accounts_synced_user_name_key ON accounts (tenant_id, lower(user_name))
    WHERE deleted_at IS NULL AND managed_by = 'sync'`,
  `CREATE INDEX accounts_user_name_idx ON accounts (tenant_id, lower(user_name)) WHERE deleted_at IS NULL`,
  `CREATE INDEX accounts_email_idx ON accounts (tenant_id, lower(email)) WHERE deleted_at IS NULL`,
  `CREATE INDEX accounts_external_id_idx ON accounts (tenant_id, external_id) WHERE deleted_at IS NULL`,
  `CREATE INDEX accounts_deleted_idx ON accounts (tenant_id, deleted_at) WHERE deleted_at IS NOT NULL`,

  `CREATE TABLE classes (
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id uuid NOT NULL DEFAULT gen_random_uuid(),
    managed_by text NOT NULL DEFAULT 'manual' CHECK (managed_by IN ('sync', 'manual')),
    display_name text NOT NULL CHECK (length(display_name) BETWEEN 1 AND 512),
    external_id text,
    school_id text,
    scim jsonb NOT NULL DEFAULT '{}'::jsonb,
    version integer NOT NULL DEFAULT 1,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id)
  )`,
  `CREATE UNIQUE INDEX classes_external_id_key ON classes (tenant_id, external_id) WHERE external_id IS NOT NULL`,
  `CREATE INDEX classes_display_name_idx ON classes (tenant_id, lower(display_name))`,

  // A member can be in a class through Entra (synced), by hand in the portal
  // (manual), or both; the row lives while either holds.
  `CREATE TABLE class_memberships (
    tenant_id uuid NOT NULL,
    class_id uuid NOT NULL,
    account_id uuid NOT NULL,
    synced boolean NOT NULL DEFAULT false,
    manual boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, class_id, account_id),
    FOREIGN KEY (tenant_id, class_id) REFERENCES classes (tenant_id, id) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, account_id) REFERENCES accounts (tenant_id, id) ON DELETE CASCADE,
    CHECK (synced OR manual)
  )`,
  `CREATE INDEX class_memberships_account_idx ON class_memberships (tenant_id, account_id)`,

  // What happened, for the school admin and the portal team. Attribute values
  // beyond what finds the object (object_ref) are never written here.
  `CREATE TABLE audit_events (
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id bigint GENERATED ALWAYS AS IDENTITY,
    at timestamptz NOT NULL DEFAULT now(),
    credential_id uuid,
    request_id text,
    action text NOT NULL,
    object_type text NOT NULL,
    object_id uuid,
    object_ref text,
    outcome text NOT NULL CHECK (outcome IN ('success', 'failure', 'conflict')),
    details jsonb NOT NULL DEFAULT '{}'::jsonb,
    PRIMARY KEY (tenant_id, id)
  )`,
  `CREATE INDEX audit_events_at_idx ON audit_events (tenant_id, at)`,

  // A change sync refused because it would touch what sync must not (an admin
  // account); open until the portal team resolves it.
  `CREATE TABLE sync_conflicts (
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id uuid NOT NULL DEFAULT gen_random_uuid(),
    at timestamptz NOT NULL DEFAULT now(),
    kind text NOT NULL,
    object_type text NOT NULL,
    object_ref text,
    account_id uuid,
    request_id text,
    detail text NOT NULL,
    resolved_at timestamptz,
    PRIMARY KEY (tenant_id, id)
  )`,
  `CREATE INDEX sync_conflicts_open_idx ON sync_conflicts (tenant_id, at) WHERE resolved_at IS NULL`,

  // The surface the learning portal reads (docs/database-contract.md).
  `CREATE VIEW portal_accounts AS
    SELECT tenant_id, id, role, user_name, email, given_name, family_name, display_name,
           external_id, school_id, grade, active, managed_by = 'sync' AS managed_by_sync,
           created_at, updated_at, deleted_at
      FROM accounts
     WHERE deleted_at IS NULL`,
  `CREATE VIEW portal_classes AS
    SELECT tenant_id, id, display_name, external_id, school_id, managed_by = 'sync' AS managed_by_sync,
           created_at, updated_at
      FROM classes`,
  `CREATE VIEW portal_class_memberships AS
    SELECT tenant_id, class_id, account_id, synced, manual, created_at
      FROM class_memberships`,
];

const downStatements = [
  'DROP VIEW portal_class_memberships',
  'DROP VIEW portal_classes',
  'DROP VIEW portal_accounts',
  'DROP TABLE sync_conflicts',
  'DROP TABLE audit_events',
  'DROP TABLE class_memberships',
  'DROP TABLE classes',
  'DROP TABLE accounts',
  'DROP TABLE credentials',
  'DROP TABLE tenants',
];

export async function up(db: Kysely<unknown>): Promise<void> {
  for (const statement of upStatements) await sql.raw(statement).execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  for (const statement of downStatements) await sql.raw(statement).execute(db);
}
