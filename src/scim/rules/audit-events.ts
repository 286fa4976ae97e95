// Audit events: what the log keeps of every write, built as values that the
// write's own statement records (db/write-statements.ts) or that a refusal
// records (a conflict). They name the object and the changed attribute
// names, never attribute values.
import type { AuditEvent, PlannedAuditEvent } from '../../db/audit.js';
import type { Role } from '../../db/database.js';
import type { Json } from '../resource.js';
import { changedAttributes } from '../resource.js';
import type { AdminCollision } from './admin-guard.js';
import { adoptionDetails, type Adoption } from './adoption.js';
import { changeAction } from './deprovisioning.js';

/** Who writes: the credential and the request, on every event. */
export interface Actor {
  readonly tenantId: string;
  readonly credentialId: string;
  readonly requestId: string;
}

function planned(actor: Actor, event: Omit<PlannedAuditEvent, 'credentialId' | 'requestId'>): PlannedAuditEvent {
  return { ...event, credentialId: actor.credentialId, requestId: actor.requestId };
}

export function userCreated(actor: Actor, role: Role): PlannedAuditEvent {
  return planned(actor, { action: 'create', objectType: 'user', details: { role } });
}

export function userAdopted(actor: Actor, adoption: Adoption, values: Parameters<typeof adoptionDetails>[1]): PlannedAuditEvent {
  return planned(actor, { action: 'adopt', objectType: 'user', details: adoptionDetails(adoption, values) });
}

/**
 * The event of a change from one account to another (the SCIM attributes of
 * each, meta aside), or undefined when nothing changed: no attribute, and
 * not the role (which the tenant's role mapping may decide anew from the
 * same attributes).
 */
export function userChanged(
  actor: Actor,
  before: { attributes: Json; active: boolean; role: Role },
  after: { attributes: Json; active: boolean; role: Role },
): PlannedAuditEvent | undefined {
  const changed = changedAttributes(before.attributes, after.attributes);
  if (changed.length === 0 && before.role === after.role) return undefined;
  return planned(actor, {
    action: changeAction(before.active, after.active),
    objectType: 'user',
    details: { changed, ...(before.role !== after.role ? { role: after.role } : {}) },
  });
}

export function userDeleted(actor: Actor): PlannedAuditEvent {
  return planned(actor, { action: 'delete', objectType: 'user', details: {} });
}

export function classCreated(actor: Actor): PlannedAuditEvent {
  return planned(actor, { action: 'create', objectType: 'group', details: {}, memberCount: { key: 'membersAdded', listChanged: false } });
}

export function classAdopted(actor: Actor): PlannedAuditEvent {
  return planned(actor, { action: 'adopt', objectType: 'group', details: { matchedBy: 'externalId' }, memberCount: { key: 'membersAdded', listChanged: false } });
}

/** A change of a class: the attribute names that changed, and "members" with the count when memberships did. */
export function classChanged(actor: Actor, changed: readonly string[]): PlannedAuditEvent {
  return planned(actor, { action: 'update', objectType: 'group', details: { changed: [...changed] }, memberCount: { key: 'memberChanges', listChanged: true } });
}

export function classDeleted(actor: Actor): PlannedAuditEvent {
  return planned(actor, { action: 'delete', objectType: 'group', details: {} });
}

/** The event of a refusal by rule 3: the admin's id, the Entra user's userName. */
export function adminCollisionEvent(actor: Actor, collision: AdminCollision): AuditEvent {
  return {
    tenantId: actor.tenantId,
    action: 'conflict',
    objectType: 'user',
    objectId: collision.adminId,
    objectRef: collision.ref,
    outcome: 'conflict',
    credentialId: actor.credentialId,
    requestId: actor.requestId,
    details: { reason: 'admin-collision', ...(collision.entraObject === null ? {} : { externalId: collision.entraObject }) },
  };
}
