// A tenant's health in one word, decided here for the status pages, the
// admin API, the CLI and the metrics alike: failing, silent, never synced,
// healthy or disconnected.
import type { Executor } from '../db/database.js';
import { listTenantOverview, type TenantOverviewRow, type TwoHours } from '../db/tenant-status.js';

/** Worst first: the order the overview sorts by. A disconnected tenant is off on purpose, so it comes last. */
export const HEALTH_STATES = ['failing', 'silent', 'never synced', 'healthy', 'disconnected'] as const;
export type Health = (typeof HEALTH_STATES)[number];

/** A tenant is failing when more than this share of its writes in the last hour failed. */
export const FAILING_SHARE = 0.1;

const HOUR_MS = 3_600_000;

/** One user or class by id: a DELETE elsewhere answered 404 (a wrong Tenant URL, say) stays a failure. */
const ONE_OBJECT = /^\/scim\/v2\/(?:users|groups)\/(?!\.search)[^/?]+\/?(?:\?|$)/i;

/**
 * Whether a SCIM request's answer is a failure for the tenant's health, its
 * request chart and its failure list. A DELETE of a user or class answered
 * 404 is not: the object is gone, which is what Entra asked for and what
 * Entra takes a 404 to mean. It is a retry whose first answer was lost, or
 * an account the portal now keeps by hand; neither is anything the operator
 * could act on, and one of them in a quiet hour would show a small school
 * failing.
 */
export function isFailedRequest(method: string, url: string, status: number): boolean {
  return status >= 400 && !(method === 'DELETE' && status === 404 && ONE_OBJECT.test(url));
}

export interface HealthSettings {
  /** No request for longer than this, once the tenant has synced, makes it silent. */
  silentAfterMs: number;
}

/**
 * The count of the last 60 minutes from two clock-hour buckets: all of the
 * current hour and the part of the previous one that is still within the
 * last hour (assuming its traffic was even).
 */
export function lastHour(counts: TwoHours, now: Date): number {
  const intoHour = (now.getTime() % HOUR_MS) / HOUR_MS;
  return counts.current + counts.previous * (1 - intoHour);
}

export interface HealthSignals {
  connected: boolean;
  lastRequestAt: Date | null;
  writes: TwoHours;
  writeFailures: TwoHours;
  /** Its credentials, when known: none working means every request Entra sends is refused. */
  credentials?: { issued: number; working: number };
  acceptsEntraToken?: boolean;
}

/**
 * Whether the tenant had credentials and none works now (each revoked or
 * expired) while Entra's own token is not accepted either: Entra's requests
 * are refused before they count as the tenant's writes, so its counts cannot show it.
 */
export function credentialsGone(signals: HealthSignals): boolean {
  const { credentials } = signals;
  return signals.connected && credentials !== undefined && credentials.issued > 0 && credentials.working === 0 && signals.acceptsEntraToken !== true;
}

export function tenantHealth(signals: HealthSignals, now: Date, settings: HealthSettings): Health {
  if (!signals.connected) return 'disconnected';
  if (credentialsGone(signals)) return 'failing';
  const writes = lastHour(signals.writes, now);
  const failures = lastHour(signals.writeFailures, now);
  if (failures > 0 && failures > FAILING_SHARE * writes) return 'failing';
  // The last request time is written a few seconds after the request; writes counted meanwhile mean it has synced.
  if (signals.lastRequestAt === null) return writes > 0 ? 'healthy' : 'never synced';
  if (now.getTime() - signals.lastRequestAt.getTime() > settings.silentAfterMs) return 'silent';
  return 'healthy';
}

export interface TenantOverview extends TenantOverviewRow {
  health: Health;
  /** Writes and failed writes of the last 60 minutes (rounded), as health judged them. */
  writesLastHour: number;
  writeFailuresLastHour: number;
}

export function withHealth(row: TenantOverviewRow, now: Date, settings: HealthSettings): TenantOverview {
  return {
    ...row,
    health: tenantHealth(row, now, settings),
    writesLastHour: Math.round(lastHour(row.writes, now)),
    writeFailuresLastHour: Math.round(lastHour(row.writeFailures, now)),
  };
}

/** Worst health first; within one state, by name. */
export function byHealth(a: { health: Health; name: string }, b: { health: Health; name: string }): number {
  return HEALTH_STATES.indexOf(a.health) - HEALTH_STATES.indexOf(b.health) || a.name.localeCompare(b.name);
}

/** Every tenant with its health, worst first. */
export async function tenantOverview(db: Executor, settings: HealthSettings, now: Date = new Date()): Promise<TenantOverview[]> {
  return (await listTenantOverview(db, now)).map((row) => withHealth(row, now, settings)).sort(byHealth);
}

export const healthSettings = (config: { silentAfterMinutes: number }): HealthSettings => ({ silentAfterMs: config.silentAfterMinutes * 60_000 });

function duration(ms: number): string {
  const minutes = Math.round(ms / 60_000);
  if (minutes < 120) return `${minutes} minutes`;
  const hours = Math.round(minutes / 60);
  return hours < 48 ? `${hours} hours` : `${Math.round(hours / 24)} days`;
}

/** Why a tenant has its health, in one line, for the tenant page and portal-scim status. */
export function healthReason(tenant: TenantOverview, now: Date, settings: HealthSettings): string {
  switch (tenant.health) {
    case 'failing':
      if (credentialsGone(tenant)) {
        return `no credential works: its Secret Tokens and OAuth clients have all expired or been revoked, so every request from Entra is refused; issue a new one (portal-scim token issue --tenant ${tenant.tenantId}) for the school to paste`;
      }
      return `${tenant.writeFailuresLastHour} of ${tenant.writesLastHour} writes failed in the last hour (more than ${FAILING_SHARE * 100}%)`;
    case 'silent':
      return `no request for ${duration(now.getTime() - (tenant.lastRequestAt?.getTime() ?? now.getTime()))} (silent after ${duration(settings.silentAfterMs)})`;
    case 'never synced':
      if (tenant.credentials.issued === 0 && !tenant.acceptsEntraToken) {
        return `no request from Entra yet, and no credential issued: issue a Secret Token (portal-scim token issue --tenant ${tenant.tenantId}) for the school to paste`;
      }
      return 'no request from Entra yet: the school has not started provisioning';
    case 'healthy':
      return `requests arrive; ${tenant.writeFailuresLastHour} of ${tenant.writesLastHour} writes failed in the last hour`;
    case 'disconnected':
      return 'disconnected: its credentials are revoked and its accounts and classes are manual';
  }
}
