// The planners of user writes: for each SCIM write of a user (create,
// replace, patch, delete) the one function that decides it by the school
// rules, from what is known of the rows, into a write plan. They read
// nothing themselves; the same planner serves the quick path (planned from
// a remembered or unlocked read, or from nothing) and the locked one.
import type { AccountResource, AccountRow } from '../db/columns.js';
import type { PlannedSettle } from '../db/audit.js';
import type { AccountValues, AccountWritePlan, DeletePlan } from '../db/write-plan.js';
import { addressesTaken, refuseAdminCollision } from './rules/admin-guard.js';
import { addresses, adoptableAddresses, chooseAdoption } from './rules/adoption.js';
import { userAdopted, userChanged, userCreated, userDeleted, type Actor } from './rules/audit-events.js';
import type { Json } from './resource.js';

/** A create or change that writes closes the open conflicts of its userName: the refused object has now succeeded. */
function settles(actor: Actor, values: AccountValues): PlannedSettle {
  return { objectRef: values.user_name, credentialId: actor.credentialId, requestId: actor.requestId };
}

/**
 * What a create knows of the accounts in its way, read under lock: an admin
 * holding one of its addresses (rule 3), an account with its Entra object id
 * (synced already, or manual: rule 8) or a manual one with an adoptable
 * address (rule 2). `unread`: nothing was read, and the plan's guards
 * require that nothing is there.
 */
export type CreateSituation = 'unread' | { admin: AccountRow | undefined; byExternalId: AccountRow | undefined; byAddress: AccountRow | undefined };

/**
 * A create: a new account, or the adoption of the account rule 8 or 2 names,
 * or the synced account that already is the Entra object (Entra creates it
 * again when it lost track of it: its history stays); refused by rule 3.
 */
export function planUserCreate(actor: Actor, verifiedDomains: readonly string[], values: AccountValues, situation: CreateSituation, newId: string): AccountWritePlan {
  const known = addresses(values);
  if (situation !== 'unread') {
    refuseAdminCollision(situation.admin, values);
    const adoption = chooseAdoption(situation.byExternalId, situation.byAddress);
    if (adoption) {
      return {
        kind: 'update',
        tenantId: actor.tenantId,
        id: adoption.candidate.id,
        values,
        adopt: adoption.candidate.managed_by === 'manual',
        guards: { version: adoption.candidate.version, noAdmin: known },
        events: { audit: userAdopted(actor, adoption, values), settles: settles(actor, values) },
      };
    }
  }
  return {
    kind: 'create',
    tenantId: actor.tenantId,
    id: newId,
    values,
    guards: { noAdmin: known, nothingToAdopt: { adoptable: adoptableAddresses(known, verifiedDomains) } },
    events: { audit: userCreated(actor, values.role), settles: settles(actor, values) },
  };
}

/**
 * A change (PUT or PATCH) of `row` into `values`: written while the account
 * keeps row's version. `admin` is the admin holding one of the addresses the
 * change takes (addressesTaken, read under lock), or `unread` for the guard
 * to check.
 */
export function planUserChange(
  actor: Actor,
  row: AccountResource,
  attributes: { before: Json; after: Json },
  values: AccountValues,
  admin: AccountRow | undefined | 'unread',
): AccountWritePlan {
  if (admin !== 'unread') refuseAdminCollision(admin, values);
  return {
    kind: 'update',
    tenantId: actor.tenantId,
    id: row.id,
    values,
    adopt: false,
    guards: { version: row.version, noAdmin: addressesTaken(row, values) },
    events: {
      audit: userChanged(actor, { attributes: attributes.before, active: row.active, role: row.role }, { attributes: attributes.after, active: values.active, role: values.role }),
      settles: settles(actor, values),
    },
  };
}

/** A delete (rule 7) of the account read (the one an alias names, after a merge), at its version; without a read, of whatever version of `id` is live. */
export function planUserDelete(actor: Actor, id: string, row: AccountResource | undefined): DeletePlan {
  return { kind: 'delete', tenantId: actor.tenantId, id: row?.id ?? id, guards: { version: row?.version }, events: { audit: userDeleted(actor) } };
}
