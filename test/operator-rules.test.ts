// The rules the portal team's views rest on, without a database: a tenant's
// health from its signals, the last hour from two clock-hour buckets, the
// order worst first, and the flags of credentials.
import t from 'tap';
import type { CredentialRow } from '../src/db/credentials.js';
import { credentialViews } from '../src/services/credentials.js';
import { byHealth, lastHour, tenantHealth, type HealthSignals } from '../src/services/health.js';
import { ServiceError } from '../src/services/errors.js';
import { parseNewTenant, parseRoleMapping, parseTenantChanges } from '../src/services/tenants.js';

const HOUR = 3_600_000;
const DAY = 24 * HOUR;
// 15 minutes into an hour: a quarter of the previous hour is outside the last 60 minutes.
const NOW = new Date(Date.UTC(2026, 10, 30, 12, 15));
const settings = { silentAfterMs: 2 * HOUR };

interface SignalValues {
  connected?: boolean;
  lastRequestAt?: Date | null;
  /** Current and previous clock hour. */
  writes?: [number, number];
  failures?: [number, number];
}

function signals(values: SignalValues = {}): HealthSignals {
  const [current, previous] = values.writes ?? [0, 0];
  const [failedNow, failedBefore] = values.failures ?? [0, 0];
  return {
    connected: values.connected ?? true,
    lastRequestAt: values.lastRequestAt === undefined ? new Date(NOW.getTime() - 60_000) : values.lastRequestAt,
    writes: { current, previous },
    writeFailures: { current: failedNow, previous: failedBefore },
  };
}

t.test('health: disconnected, failing, never synced, silent, healthy', async (t) => {
  const cases: [string, HealthSignals, string][] = [
    ['disconnected wins over everything', signals({ connected: false, failures: [9, 9], writes: [9, 9] }), 'disconnected'],
    ['no request ever', signals({ lastRequestAt: null }), 'never synced'],
    ['writes counted before the last request time is written', signals({ lastRequestAt: null, writes: [3, 0] }), 'healthy'],
    ['more than a tenth of the writes failed', signals({ writes: [10, 0], failures: [2, 0] }), 'failing'],
    ['exactly a tenth failed is not failing', signals({ writes: [10, 0], failures: [1, 0] }), 'healthy'],
    ['failures without writes counted (a failing tenant that never got a write through)', signals({ lastRequestAt: null, failures: [1, 0], writes: [1, 0] }), 'failing'],
    ['failing and silent at once: failing', signals({ lastRequestAt: new Date(NOW.getTime() - 3 * HOUR), writes: [0, 4], failures: [0, 4] }), 'failing'],
    ['quiet for longer than the limit', signals({ lastRequestAt: new Date(NOW.getTime() - 2 * HOUR - 1000) }), 'silent'],
    ['quiet for exactly the limit', signals({ lastRequestAt: new Date(NOW.getTime() - 2 * HOUR) }), 'healthy'],
    ['requests, no failures', signals({ writes: [40, 100] }), 'healthy'],
  ];
  for (const [label, input, expected] of cases) t.equal(tenantHealth(input, NOW, settings), expected, label);
});

t.test('health: a connected tenant none of whose credentials works is failing, whatever its counts say', async (t) => {
  const working = (issued: number, live: number, acceptsEntraToken = false) => ({ credentials: { issued, working: live }, acceptsEntraToken });
  const cases: [string, HealthSignals, string][] = [
    ['every credential expired or revoked, requests a minute ago', { ...signals({ writes: [5, 0] }), ...working(2, 0) }, 'failing'],
    ['and never a request', { ...signals({ lastRequestAt: null }), ...working(1, 0) }, 'failing'],
    ['one of two still works', { ...signals({ writes: [5, 0] }), ...working(2, 1) }, 'healthy'],
    ['none issued yet: not started', { ...signals({ lastRequestAt: null }), ...working(0, 0) }, 'never synced'],
    ["none works, but Entra's own token is accepted", { ...signals({ writes: [5, 0] }), ...working(1, 0, true) }, 'healthy'],
    ['disconnected: its credentials were revoked on purpose', { ...signals({ connected: false }), ...working(2, 0) }, 'disconnected'],
  ];
  for (const [label, input, expected] of cases) t.equal(tenantHealth(input, NOW, settings), expected, label);
});

t.test('the last hour counts the whole current hour and the part of the previous one still within 60 minutes', async (t) => {
  t.equal(lastHour({ current: 10, previous: 40 }, NOW), 40, '10 + 40 × 3/4');
  t.equal(lastHour({ current: 10, previous: 40 }, new Date(Date.UTC(2026, 10, 30, 12, 0))), 50, 'at the full hour, all of the previous one');
  // 4 failures of 40 writes in the previous hour and none since: 3 of 30 is not more than a tenth.
  t.equal(tenantHealth(signals({ writes: [0, 40], failures: [0, 4] }), NOW, settings), 'healthy');
  t.equal(tenantHealth(signals({ writes: [0, 40], failures: [0, 5] }), NOW, settings), 'failing');
});

t.test('worst first: failing, silent, never synced, healthy, disconnected; by name within one', async (t) => {
  const tenants = [
    { name: 'B', health: 'healthy' as const },
    { name: 'Z', health: 'disconnected' as const },
    { name: 'A', health: 'healthy' as const },
    { name: 'C', health: 'never synced' as const },
    { name: 'D', health: 'silent' as const },
    { name: 'E', health: 'failing' as const },
  ];
  t.same(tenants.sort(byHealth).map((x) => x.name), ['E', 'D', 'C', 'A', 'B', 'Z']);
});

function credential(id: string, values: { created?: number; used?: number; expires?: number; revoked?: boolean; kind?: 'token' | 'client' }): CredentialRow {
  return {
    tenant_id: 'tenant',
    id,
    kind: values.kind ?? 'token',
    label: null,
    secret_hash: null,
    created_at: new Date(NOW.getTime() - (values.created ?? 0)),
    last_used_at: values.used === undefined ? null : new Date(NOW.getTime() - values.used),
    expires_at: values.expires === undefined ? null : new Date(NOW.getTime() + values.expires),
    revoked_at: values.revoked ? new Date(NOW.getTime() - DAY) : null,
  };
}

t.test("credential flags: expires within 14 days; unused for a week while another of the tenant's is in use", async (t) => {
  const flags = (rows: CredentialRow[]) => Object.fromEntries(credentialViews(rows, NOW).map((v) => [v.id, `${v.state}${v.flags.length ? ` ${v.flags.join(',')}` : ''}`]));
  t.same(
    flags([
      credential('old', { created: 90 * DAY, used: 8 * DAY }),
      credential('new', { created: 9 * DAY, used: HOUR }),
      credential('soon', { created: 300 * DAY, used: HOUR, expires: 13 * DAY }),
      credential('later', { created: 300 * DAY, used: HOUR, expires: 15 * DAY }),
      credential('never-used', { created: 8 * DAY }),
      credential('fresh', { created: DAY }),
      credential('gone', { created: 90 * DAY, used: 30 * DAY, revoked: true }),
      credential('over', { created: 90 * DAY, used: 30 * DAY, expires: -DAY }),
    ]),
    {
      old: 'active unused',
      new: 'active',
      soon: 'active expires soon',
      later: 'active',
      'never-used': 'active unused',
      fresh: 'active',
      gone: 'revoked',
      over: 'expired',
    },
  );
  t.same(flags([credential('alone', { created: 90 * DAY, used: 30 * DAY })]), { alone: 'active' }, 'a tenant whose only credential is quiet has a silent tenant, not an unused credential');
  t.same(
    flags([credential('a', { created: 90 * DAY, used: 30 * DAY }), credential('b', { created: 90 * DAY, used: 10 * DAY })]),
    { a: 'active', b: 'active' },
    'neither is in use: nothing to tell apart',
  );
  t.same(
    flags([credential('a', { created: 90 * DAY, used: 30 * DAY }), credential('b', { created: 90 * DAY, used: HOUR, revoked: true })]),
    { a: 'active', b: 'revoked' },
    'a revoked credential is not "in use"',
  );
});

t.test('tenant input is parsed at the edge: typed values or a ServiceError saying what is wrong', async (t) => {
  t.same(parseNewTenant({ name: ' X ', verifiedDomains: ['A.example', 'a.example'] }), { name: 'X', verifiedDomains: ['a.example'] });
  t.same(parseRoleMapping({ ' Lärare ': 'Teacher' }), { lärare: 'teacher' });
  t.same(parseTenantChanges({ retentionDays: 0 }), { retentionDays: 0 });
  for (const [label, run, message] of [
    ['admin is never mapped', () => parseRoleMapping({ boss: 'admin' }), /sync never grants admin/],
    ['an empty source', () => parseRoleMapping({ ' ': 'student' }), /is not SOURCE=ROLE/],
    ['a fractional retention', () => parseTenantChanges({ retentionDays: 1.5 }), /retentionDays must be a whole number/],
    ['null', () => parseNewTenant(null), /must be a JSON object/],
    ['a long name', () => parseNewTenant({ name: 'x'.repeat(201) }), /name must be 1 to 200/],
  ] as const) {
    t.throws(run, { name: 'ServiceError', kind: 'invalid', message }, label);
    t.throws(run, ServiceError);
  }
});
