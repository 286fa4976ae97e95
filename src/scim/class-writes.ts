// The planners of class writes: for each SCIM write of a class (create,
// replace, patch, member batch, delete) the one function that decides it by
// the school rules into a write plan, from what is known of the rows. They
// read nothing themselves; the same planner serves the quick path (planned
// from an unlocked read, or from nothing) and the locked one.
import type { ClassRow } from '../db/columns.js';
import type { ClassPlan, ClassValues, MemberChange } from '../db/write-plan.js';
import { conflict } from '../errors.js';
import { classAdopted, classChanged, classCreated, classDeleted, type Actor } from './rules/audit-events.js';
import { notUsersError } from './rules/class-members.js';

/** Whether the tenant keeps synced class names unique (Microsoft's guidance; the default). */
export type NamePolicy = 'unique' | 'repeat';

/**
 * What a write knows of the rows in its way, read under lock: the named
 * members that are not users of the tenant (rule 5), whether another synced
 * class has the name, and for a create the manual class with its Entra object
 * id (rule 8). `unread`: nothing was read, and the plan's guards require it.
 */
export type ClassSituation = 'unread' | { notUsers: readonly string[]; nameTaken: boolean; adoptable?: ClassRow | undefined };

function refuse(situation: ClassSituation, name: string | undefined): void {
  if (situation === 'unread') return;
  if (situation.notUsers.length > 0) throw notUsersError(situation.notUsers);
  if (situation.nameTaken && name !== undefined) {
    throw conflict(`A group with displayName "${name}" already exists (group names are unique in this tenant, in any case).`);
  }
}

/** A create: a new class with its first members, or the adoption of the manual class rule 8 names. */
export function planClassCreate(actor: Actor, names: NamePolicy, values: ClassValues, members: readonly string[], situation: ClassSituation, newId: string): ClassPlan {
  refuse(situation, values.display_name);
  const uniqueName = names === 'unique';
  const adoptable = situation === 'unread' ? undefined : situation.adoptable;
  if (adoptable) {
    return {
      kind: 'update',
      tenantId: actor.tenantId,
      id: adoptable.id,
      values,
      adopt: true,
      members: { kind: 'edit', remove: [], add: members },
      guards: { version: adoptable.version, uniqueName, usersExist: members },
      events: { audit: classAdopted(actor) },
    };
  }
  return {
    kind: 'create',
    tenantId: actor.tenantId,
    id: newId,
    values,
    members,
    guards: { nothingToAdopt: true, uniqueName, usersExist: members },
    events: { audit: classCreated(actor) },
  };
}

/**
 * A change (PUT, PATCH, member batch) of a synced class: new values when an
 * attribute changed (a PUT of the class as it is writes none, and writes the
 * class only if its members change), and the members' net change. `row` is
 * the class as read (undefined for a member batch planned without a read:
 * any version), and `changed` the attribute names the values change.
 */
export function planClassChange(
  actor: Actor,
  names: NamePolicy,
  id: string,
  row: ClassRow | undefined,
  change: { values: ClassValues | undefined; changed: readonly string[]; members: MemberChange | undefined; named: readonly string[] },
  situation: ClassSituation,
): ClassPlan {
  const values = change.changed.length > 0 ? change.values : undefined;
  // Any change of the name, in case too: the database folds names with
  // lower(), which in a database whose ctype is C leaves letters other than
  // ASCII as they are, so "åk 8b" and "ÅK 8B" are two names there.
  const renamed = values !== undefined && values.display_name !== row?.display_name;
  refuse(situation, renamed ? values.display_name : undefined);
  return {
    kind: 'update',
    tenantId: actor.tenantId,
    id,
    values,
    adopt: false,
    members: change.members,
    guards: { version: row?.version, uniqueName: names === 'unique' && renamed, usersExist: change.named },
    events: { audit: classChanged(actor, change.changed) },
  };
}

export function planClassDelete(actor: Actor, id: string, row: ClassRow | undefined): ClassPlan {
  return { kind: 'delete', tenantId: actor.tenantId, id, guards: { version: row?.version }, events: { audit: classDeleted(actor) } };
}
