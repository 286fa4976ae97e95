// Rule 3: admin accounts are never touched by sync. A create whose userName
// or e-mail is an admin's, or a change that takes such an address, is
// refused with 409 and recorded as a conflict for the portal team; the admin
// account is unchanged. A change that keeps the addresses the account had
// is written even when an admin made later holds one of them: it touches no
// admin, and refusing it would keep a leaver active (rule 6) until Entra
// deletes the user.
import type { AccountRow } from '../../db/columns.js';
import { ScimError } from '../../errors.js';
import type { AccountResource } from '../../db/columns.js';
import type { AccountValues, AdminGuard } from '../../db/write-plan.js';
import { addresses, foldAscii, linkEmail } from './adoption.js';

/** A write that rule 3 refuses; the conflict is recorded after the write's transaction ends. */
export class AdminCollision extends Error {
  constructor(
    readonly adminId: string,
    /** The Entra user's userName, as the conflict and the audit log name it. */
    readonly ref: string,
    /** Of the Entra user's addresses, the one the admin holds: the userName, or the e-mail. */
    readonly address: string,
    /** The Entra user's object id (externalId), when it has one: two users refused for one address are told apart by it. */
    readonly entraObject: string | null = null,
  ) {
    super('admin collision');
    this.name = 'AdminCollision';
  }
}

/**
 * Refuses the write when an admin holds one of its addresses, naming the one
 * it holds. The database compared them with lower(), which folds ASCII
 * letters everywhere and the others only where its ctype is not C: an
 * address equal to one of the admin's under ASCII folding is held in any
 * database; only when neither is did the database fold other letters too.
 */
export function refuseAdminCollision(
  admin: Pick<AccountRow, 'id' | 'user_name' | 'email'> | undefined,
  values: { user_name: string; email: string | null; external_id?: string | null },
): void {
  if (!admin) return;
  const held = (fold: (s: string) => string) => {
    const own = new Set([admin.user_name, admin.email].flatMap((a) => (a === null ? [] : [fold(a)])));
    if (own.has(fold(values.user_name))) return values.user_name;
    if (values.email !== null && own.has(fold(values.email))) return values.email;
    return undefined;
  };
  const address = held(foldAscii) ?? held((s) => s.toLowerCase()) ?? values.user_name;
  throw new AdminCollision(admin.id, values.user_name, address, values.external_id ?? null);
}

/**
 * The addresses a change of `row` into `values` takes: those of its new
 * addresses the account does not hold already, equal in ASCII letters' case
 * (the folding every database's lower() does; an address that differs in
 * other letters only is guarded as a new one).
 */
export function addressesTaken(row: Pick<AccountResource, 'user_name' | 'scim'>, values: Pick<AccountValues, 'user_name' | 'email'>): AdminGuard {
  const held = new Set([row.user_name, linkEmail((row.scim as { emails?: unknown } | null)?.emails)].flatMap((a) => (a === null ? [] : [foldAscii(a)])));
  const taken = addresses(values).filter((a) => !held.has(foldAscii(a)));
  return taken.length === 2 ? [taken[0]!, taken[1]!] : taken.length === 1 ? [taken[0]!] : [];
}

/** The 409 of a refusal: what the school's admin reads in Entra's log and the portal team in the conflict; its audit event is written with the conflict. */
export function adminCollisionError(collision: AdminCollision): ScimError {
  return new ScimError(
    409,
    'uniqueness',
    `The userName or e-mail "${collision.address}" belongs to a portal admin account, which sync never changes. ` +
      'Give the Entra user another address, or ask the portal team to resolve the conflict.',
    {},
    true,
  );
}
