// A tenant's recent failed writes as the status pages, the admin API and the
// CLI show them: grouped by message (values, ids and numbers folded, so one
// kind of failure is one line), largest first, with counts, the latest detail
// as Entra received it and the latest objects.
import { listFailureGroups, type FailureGroup } from '../db/audit.js';
import type { Executor } from '../db/database.js';
import { ServiceError } from './errors.js';

/** The window the figures "failures 24 h" and the groups cover. */
export const FAILURE_WINDOW_HOURS = 24;
const HOUR_MS = 3_600_000;

/** The admin API's ?hours=: 1 to 168 (a week), 24 when not given. */
export function parseFailureHours(value: unknown): number {
  if (value === undefined) return FAILURE_WINDOW_HOURS;
  const hours = typeof value === 'string' && /^\d{1,3}$/.test(value) ? Number(value) : Number.NaN;
  if (!(hours >= 1 && hours <= 168)) throw new ServiceError('invalid', 'hours must be a whole number from 1 to 168.');
  return hours;
}

export function recentFailures(db: Executor, tenantId: string, now: Date, options: { hours?: number; groups?: number } = {}): Promise<FailureGroup[]> {
  const hours = options.hours ?? FAILURE_WINDOW_HOURS;
  return listFailureGroups(db, tenantId, new Date(now.getTime() - hours * HOUR_MS), { groups: options.groups ?? 10, objects: 5 });
}

/** "409 uniqueness": the status and scimType a group's latest failure answered. */
export function failureStatusText(group: FailureGroup): string {
  return [group.status ?? '', group.scimType ?? ''].filter((part) => part !== '').join(' ');
}
