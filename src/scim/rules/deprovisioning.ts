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
