// An example reader of portal-scim's change feed (docs/database-contract.md,
// "Following changes"). It keeps its cursor in a table of its own and moves
// it in the same transaction that applies the changes, so a crash at any
// moment loses nothing and applies nothing twice: the transaction either
// commits the changes with the cursor past them, or neither.
//
// Run: DATABASE_URL=postgres://... node consumer.js   (see README.md)
import pg from 'pg';

const settings = {
  url: process.env.DATABASE_URL,
  /** Several consumers can share the tables, each with its own cursor. */
  name: process.env.CONSUMER_NAME ?? 'example',
  batchSize: wholeNumber('CONSUMER_BATCH_SIZE', 500),
  /** A notification sent while this process was away is lost; the poll finds what it announced. */
  pollMs: wholeNumber('CONSUMER_POLL_MS', 30_000),
};

function wholeNumber(variable, fallback) {
  const raw = process.env[variable];
  if (raw === undefined || raw === '') return fallback;
  if (!/^[1-9]\d*$/.test(raw)) fail(`${variable} must be a whole number above 0, got "${raw}"`);
  return Number(raw);
}

function log(msg, fields = {}) {
  process.stdout.write(`${JSON.stringify({ time: new Date().toISOString(), msg, ...fields })}\n`);
}

function fail(message) {
  process.stderr.write(`change-consumer: ${message}\n`);
  process.exit(1);
}

if (!settings.url) fail('set DATABASE_URL to the database portal-scim writes');

/** Set by SIGTERM or SIGINT: the batch in hand commits, then the process ends. */
let stopping = false;

// The consumer's own tables. No unique constraint on the log's position:
// the cursor alone keeps a change from being applied twice.
const SCHEMA = `
  CREATE TABLE IF NOT EXISTS change_consumer_cursor (
    name text PRIMARY KEY,
    position numeric NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now());
  CREATE TABLE IF NOT EXISTS change_consumer_log (
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    consumer text NOT NULL,
    position numeric NOT NULL,
    tenant_id uuid NOT NULL,
    object_type text NOT NULL,
    object_id uuid NOT NULL,
    related_id uuid,
    action text NOT NULL,
    changed text[] NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now());
  CREATE TABLE IF NOT EXISTS change_consumer_accounts (
    tenant_id uuid NOT NULL,
    account_id uuid NOT NULL,
    last_action text NOT NULL,
    position numeric NOT NULL,
    PRIMARY KEY (tenant_id, account_id));
  CREATE TABLE IF NOT EXISTS change_consumer_memberships (
    tenant_id uuid NOT NULL,
    class_id uuid NOT NULL,
    account_id uuid NOT NULL,
    synced boolean NOT NULL,
    manual boolean NOT NULL,
    PRIMARY KEY (tenant_id, class_id, account_id));`;

async function connect(role) {
  const client = new pg.Client({ connectionString: settings.url, application_name: role });
  // A lost connection ends the process; run it under a supervisor that
  // restarts it, and it resumes from its cursor.
  client.on('error', (error) => fail(`${role}: ${error.message}`));
  await client.connect();
  return client;
}

async function prepare(db) {
  await db.query('BEGIN');
  // Two consumers starting at once create the tables once.
  await db.query(`SELECT pg_advisory_xact_lock(hashtext('change-consumer schema'))`);
  await db.query(SCHEMA);
  await db.query('INSERT INTO change_consumer_cursor (name) VALUES ($1) ON CONFLICT (name) DO NOTHING', [settings.name]);
  await db.query('COMMIT');
}

/**
 * What the portal does with a change. Here: a log of every change applied,
 * each account's last action, and a copy of the class memberships. Everything
 * it writes is in the caller's transaction.
 *
 * A row says that its object changed and how; where the object ended up is
 * in the views. Two transactions' changes of one object can come in the
 * opposite order of their commits (a member removed by one and added again
 * by another that had begun writing first lists `created` before `deleted`),
 * so the copy is made from the view when the row is applied, never from the
 * action alone. A portal does the same: it reads `portal_accounts` before it
 * ends an account's sessions (deactivated, deleted or purged, or a change
 * listing `active` while the account reads inactive), and re-points its own
 * rows after a `merged`.
 */
async function apply(db, change) {
  await db.query(
    `INSERT INTO change_consumer_log (consumer, position, tenant_id, object_type, object_id, related_id, action, changed)
     VALUES ($1, $2::numeric, $3, $4, $5, $6, $7, $8)`,
    [settings.name, change.position, change.tenant_id, change.object_type, change.object_id, change.related_id, change.action, change.changed],
  );
  if (change.object_type === 'account') {
    await db.query(
      `INSERT INTO change_consumer_accounts (tenant_id, account_id, last_action, position) VALUES ($1, $2, $3, $4::numeric)
       ON CONFLICT (tenant_id, account_id) DO UPDATE SET last_action = EXCLUDED.last_action, position = EXCLUDED.position`,
      [change.tenant_id, change.object_id, change.action, change.position],
    );
  }
  if (change.object_type === 'membership') {
    const now = await db.query('SELECT synced, manual FROM portal_class_memberships WHERE tenant_id = $1 AND class_id = $2 AND account_id = $3', [
      change.tenant_id,
      change.object_id,
      change.related_id,
    ]);
    const member = now.rows[0];
    if (member === undefined) {
      await db.query('DELETE FROM change_consumer_memberships WHERE tenant_id = $1 AND class_id = $2 AND account_id = $3', [change.tenant_id, change.object_id, change.related_id]);
    } else {
      await db.query(
        `INSERT INTO change_consumer_memberships (tenant_id, class_id, account_id, synced, manual) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (tenant_id, class_id, account_id) DO UPDATE SET synced = EXCLUDED.synced, manual = EXCLUDED.manual`,
        [change.tenant_id, change.object_id, change.related_id, member.synced, member.manual],
      );
    }
  }
}

/**
 * Makes the copy again from the views, and sets the cursor to the horizon:
 * for a consumer that starts after the prune removed changes, or was away
 * longer than the retention. One REPEATABLE READ transaction: the horizon,
 * read first, fixes the snapshot the copy is made from, and every change the
 * copy does not hold comes after it. False when another copy of this
 * consumer moved the cursor after that snapshot: the caller looks again.
 */
async function readTheViews(db, pruned) {
  await db.query('BEGIN ISOLATION LEVEL REPEATABLE READ');
  try {
    const horizon = (await db.query('SELECT portal_changes_horizon()::text AS position')).rows[0].position;
    await db.query('SELECT 1 FROM change_consumer_cursor WHERE name = $1 FOR UPDATE', [settings.name]);
    await db.query('DELETE FROM change_consumer_memberships');
    await db.query(
      `INSERT INTO change_consumer_memberships (tenant_id, class_id, account_id, synced, manual)
       SELECT tenant_id, class_id, account_id, synced, manual FROM portal_class_memberships`,
    );
    await db.query('UPDATE change_consumer_cursor SET position = $2::numeric, updated_at = now() WHERE name = $1', [settings.name, horizon]);
    await db.query('COMMIT');
    log('read the views again: the prune removed changes this consumer had not read', { pruned, position: horizon });
    return true;
  } catch (error) {
    await db.query('ROLLBACK').catch(() => undefined);
    // Another copy of this consumer moved the cursor after the snapshot: the caller looks again.
    if (error?.code === '40001') return false;
    throw error;
  }
}

/** Applies batches until the feed has nothing more; each batch and its cursor move commit together. */
async function drain(db) {
  // Behind what the prune removed: the feed cannot bring this consumer up to date, the views can.
  for (;;) {
    const behind = await db.query(
      'SELECT portal_changes_pruned()::text AS pruned FROM change_consumer_cursor WHERE name = $1 AND position < portal_changes_pruned()',
      [settings.name],
    );
    if (behind.rows.length === 0 || (await readTheViews(db, behind.rows[0].pruned))) break;
  }
  for (;;) {
    await db.query('BEGIN');
    try {
      // FOR UPDATE: a second consumer of the same name waits here, then reads the moved cursor.
      const cursor = await db.query('SELECT position::text AS position FROM change_consumer_cursor WHERE name = $1 FOR UPDATE', [settings.name]);
      const after = cursor.rows[0].position;
      // Positions are numeric: they travel as text, never as a JavaScript number.
      const page = await db.query('SELECT position::text AS position, tenant_id, object_type, object_id, related_id, action, changed FROM portal_changes($1::numeric, $2)', [
        after,
        settings.batchSize,
      ]);
      for (const change of page.rows) await apply(db, change);
      const last = page.rows.at(-1)?.position;
      if (last !== undefined) {
        await db.query('UPDATE change_consumer_cursor SET position = $2::numeric, updated_at = now() WHERE name = $1', [settings.name, last]);
      }
      await db.query('COMMIT');
      if (last !== undefined) log('applied', { changes: page.rows.length, position: last });
      if (page.rows.length < settings.batchSize || stopping) return;
    } catch (error) {
      await db.query('ROLLBACK').catch(() => undefined);
      throw error;
    }
  }
}

async function main() {
  const db = await connect('change-consumer');
  const listener = await connect('change-consumer-listen');
  await prepare(db);

  let pending = true; // read once at start: whatever came while this process was away
  let wake = () => undefined;
  const nudge = () => {
    pending = true;
    wake();
  };
  const stop = () => {
    stopping = true;
    wake();
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);

  listener.on('notification', nudge);
  await listener.query('LISTEN portal_changes');
  const poll = setInterval(nudge, settings.pollMs);
  log('following the change feed', { consumer: settings.name, batchSize: settings.batchSize, pollMs: settings.pollMs });

  while (!stopping) {
    if (!pending) await new Promise((resolve) => (wake = resolve));
    if (stopping) break;
    pending = false;
    await drain(db);
  }
  clearInterval(poll);
  await listener.end();
  await db.end();
  log('stopped');
}

main().catch((error) => fail(error instanceof Error ? error.message : String(error)));
