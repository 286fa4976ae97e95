// Sync conflicts for the portal team, as the CLI, the admin API and the
// status pages share them: a tenant's conflicts, and closing one by hand,
// resolved (the team fixed what was in the way) or dismissed (nothing to
// fix), with a note. Conflicts open, are seen again and close by success in
// the SCIM write path (db/audit.ts); each step, these included, is an audit
// event. Closing a closed conflict changes nothing and says so.
import { closeConflict, findConflict, listConflicts, type ConflictRow, type ConflictState } from '../db/audit.js';
import type { Executor } from '../db/database.js';
import { findTenant } from '../db/tenants.js';
import { auditVia, type Actor } from './actor.js';
import { ServiceError } from './errors.js';

export const CONFLICT_STATES: readonly ConflictState[] = ['open', 'closed', 'all'];
const MAX_NOTE = 1000;

/** How the team closes a conflict by hand. */
export type Closing = 'resolve' | 'dismiss';

export function parseNote(value: unknown): string | null {
  if (value === undefined || value === null) return null;
  if (typeof value !== 'string' || value.length > MAX_NOTE) throw new ServiceError('invalid', `note must be text of at most ${MAX_NOTE} characters.`);
  const note = value.trim();
  return note === '' ? null : note;
}

export function parseConflictState(value: unknown): ConflictState {
  if (value === undefined) return 'open';
  if (typeof value !== 'string' || !CONFLICT_STATES.includes(value as ConflictState)) {
    throw new ServiceError('invalid', `state must be one of ${CONFLICT_STATES.join(', ')}.`);
  }
  return value as ConflictState;
}

/** The admin API's body for closing a conflict: { note? }. */
export function parseClosingRequest(body: unknown): { note: string | null } {
  const fields = body === undefined || body === null ? {} : body;
  if (typeof fields !== 'object' || Array.isArray(fields)) throw new ServiceError('invalid', 'The body must be a JSON object.');
  const unknown = Object.keys(fields).filter((k) => k !== 'note');
  if (unknown.length > 0) throw new ServiceError('invalid', `Unknown field ${unknown.join(', ')}; closing a conflict takes a note.`);
  return { note: parseNote((fields as { note?: unknown }).note) };
}

export async function listTenantConflicts(db: Executor, tenantId: string, options: { state?: ConflictState; limit?: number } = {}): Promise<ConflictRow[]> {
  if (!(await findTenant(db, tenantId))) throw new ServiceError('not-found', `No tenant ${tenantId}.`);
  return listConflicts(db, tenantId, options);
}

export interface ClosedConflict {
  conflict: ConflictRow;
  /** It was closed before (by success or by hand): nothing changed. */
  alreadyClosed: boolean;
}

/**
 * Closes an open conflict as resolved or dismissed, with its audit event.
 * `tenantId` limits it to one tenant's conflicts (the admin API's path).
 */
export async function closeConflictByHand(
  db: Executor,
  id: string,
  closing: Closing,
  note: string | null,
  actor: Actor,
  scope: { tenantId?: string } = {},
): Promise<ClosedConflict> {
  const closed = await closeConflict(db, {
    id,
    ...(scope.tenantId === undefined ? {} : { tenantId: scope.tenantId }),
    resolution: closing === 'resolve' ? 'resolved' : 'dismissed',
    note,
    details: auditVia(actor),
  });
  if (closed) return { conflict: closed, alreadyClosed: false };
  const existing = await findConflict(db, id, scope.tenantId);
  if (!existing) throw new ServiceError('not-found', `No conflict ${id}.`);
  return { conflict: existing, alreadyClosed: true };
}

/** What the CLI and the status page say a conflict's state is. */
export function conflictStateText(conflict: ConflictRow): string {
  switch (conflict.resolution) {
    case null:
      return 'open';
    case 'succeeded':
      return 'closed: the write succeeded';
    case 'resolved':
      return 'resolved';
    case 'dismissed':
      return 'dismissed';
  }
}
