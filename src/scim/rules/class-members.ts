// Rule 5: a class's members come from Entra, as set operations that never
// read the member list; members a portal user added by hand stay whatever
// Entra does; a member must be a user of the same tenant (no nested groups).
import type { MemberChange } from '../../db/write-plan.js';
import { badRequest, type ScimError } from '../../errors.js';

/** One member operation of a request, in its order. */
export type MemberOp = { kind: 'add' | 'remove' | 'replace'; ids: readonly string[] } | { kind: 'removeAll' };

/**
 * The net change of a request's member operations, applied in order to a set
 * that is never read: an edit (remove some, then add some, the two kept
 * disjoint so one statement touches each membership once) or a replacement.
 * undefined when the request names no member operation.
 */
export function netMemberChange(ops: readonly MemberOp[]): MemberChange | undefined {
  let change: MemberChange | undefined;
  for (const op of ops) {
    if (op.kind === 'removeAll') {
      change = { kind: 'replace', members: [] };
    } else if (op.kind === 'replace') {
      change = { kind: 'replace', members: [...new Set(op.ids)] };
    } else if (op.kind === 'add') {
      const ids = new Set(op.ids);
      change =
        change?.kind === 'replace'
          ? { kind: 'replace', members: [...new Set([...change.members, ...op.ids])] }
          : { kind: 'edit', remove: (change?.remove ?? []).filter((id) => !ids.has(id)), add: [...new Set([...(change?.add ?? []), ...op.ids])] };
    } else {
      const ids = new Set(op.ids);
      change =
        change?.kind === 'replace'
          ? { kind: 'replace', members: change.members.filter((id) => !ids.has(id)) }
          : { kind: 'edit', remove: [...new Set([...(change?.remove ?? []), ...op.ids])], add: (change?.add ?? []).filter((id) => !ids.has(id)) };
    }
  }
  return change;
}

/** Every id the operations name to add or to replace with: each must be a user of the tenant, even one a later operation removes again. */
export function namedMembers(ops: readonly MemberOp[]): string[] {
  return [...new Set(ops.flatMap((op) => (op.kind === 'add' || op.kind === 'replace' ? op.ids : [])))];
}

/** The refusal of members that are not users of the tenant, naming the first few. */
export function notUsersError(missing: readonly string[]): ScimError {
  const shown = missing.slice(0, 5).join(', ');
  return badRequest(
    'invalidValue',
    `Members must be users of this tenant (nested groups are not supported); not a user here: ${shown}${missing.length > 5 ? ` and ${missing.length - 5} more` : ''}.`,
  );
}
