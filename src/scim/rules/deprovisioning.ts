// Rules 6 and 7: deactivation keeps everything (active=false blocks sign-in;
// the account, its memberships and licences stay, so active=true restores
// it), deletion removes (the account leaves the portal's view at once, its
// memberships go, the row is purged after the tenant's retention period).
import type { AuditAction } from '../../db/audit.js';

/** The audit action of a change of an account: a change of `active` is a deactivation or a reactivation. */
export function changeAction(wasActive: boolean, isActive: boolean): Extract<AuditAction, 'update' | 'deactivate' | 'reactivate'> {
  if (wasActive && !isActive) return 'deactivate';
  if (!wasActive && isActive) return 'reactivate';
  return 'update';
}

/** SCIM `active`: absent means active; only false deactivates. */
export function isActive(value: unknown): boolean {
  return value !== false;
}

/**
 * `active` after a replace (PUT): as sent, or, when the message does not say,
 * the account's own state. RFC 7644 §3.5.1 lets a server keep or default an
 * omitted attribute; defaulting to active would let a PUT that simply left it
 * out give a deactivated leaver sign-in again.
 */
export function activeAfterReplace(sent: unknown, current: boolean): boolean {
  return sent === undefined ? current : isActive(sent);
}
