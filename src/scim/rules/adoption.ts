// Rules 2 and 8: which existing portal account a create from Entra takes
// over instead of making a new one. An account Entra synced before (same
// Entra object id, rule 8) comes first; else a manual account whose userName
// or e-mail is one of the new user's addresses in a verified domain (rule 2).
// Never an admin, a deleted account, or one linked to another Entra object:
// the reads that find candidates (db/accounts.ts) hold those conditions.
import type { AccountRow } from '../../db/columns.js';
import type { AdminGuard, AccountValues } from '../../db/write-plan.js';
import type { Json } from '../resource.js';

/** ASCII letters in lower case, the others as they are: the folding every database's lower() does at least. */
export const foldAscii = (address: string): string => address.replace(/[A-Z]/g, (c) => c.toLowerCase());

/** The e-mail the portal links on: the work address, else the primary, else the first. */
export function linkEmail(emails: unknown): string | null {
  if (!Array.isArray(emails)) return null;
  const list = emails.filter((e): e is { value: string; type?: string; primary?: boolean } => typeof (e as { value?: unknown })?.value === 'string');
  const chosen = list.find((e) => e.type?.toLowerCase() === 'work') ?? list.find((e) => e.primary === true) ?? list[0];
  return chosen ? chosen.value : null;
}

/**
 * The addresses an account is known by: its userName and link e-mail (one,
 * when they differ in the case of ASCII letters only). As Entra sent them:
 * the database folds both sides with lower(), as its unique indexes do,
 * which in a database whose ctype is C folds ASCII letters only; there
 * "Åsa" and "åsa" are two addresses, so both are checked.
 */
export function addresses(values: Pick<AccountValues, 'user_name' | 'email'>): AdminGuard {
  const userName = values.user_name;
  const email = values.email ?? undefined;
  return email === undefined || foldAscii(email) === foldAscii(userName) ? [userName] : [userName, email];
}

/**
 * Whether the address is in one of the tenant's verified domains, which are
 * ASCII (tenants.ts): its domain in any case of ASCII letters only. A fuller
 * folding would take the Kelvin sign (U+212A) for a K, and the server and
 * the preview, which fold in different places, would disagree about İ.
 */
export function inVerifiedDomain(address: string, domains: readonly string[]): boolean {
  const at = address.lastIndexOf('@');
  return at > 0 && domains.includes(foldAscii(address.slice(at + 1)));
}

/** For each address, whether rule 2 may adopt by it. */
export function adoptableAddresses(known: readonly string[], domains: readonly string[]): boolean[] {
  return known.map((address) => inVerifiedDomain(address, domains));
}

export type MatchedBy = 'externalId' | 'address';

export interface Adoption {
  candidate: AccountRow;
  matchedBy: MatchedBy;
}

/** Rule 8 before rule 2. */
export function chooseAdoption(byExternalId: AccountRow | undefined, byAddress: AccountRow | undefined): Adoption | undefined {
  if (byExternalId) return { candidate: byExternalId, matchedBy: 'externalId' };
  if (byAddress) return { candidate: byAddress, matchedBy: 'address' };
  return undefined;
}

/** What the audit log keeps of an adoption: both sides, by id and name only. */
export function adoptionDetails(adoption: Adoption, values: Pick<AccountValues, 'external_id' | 'user_name'>): Json {
  return {
    matchedBy: adoption.matchedBy,
    portalAccount: { id: adoption.candidate.id, userName: adoption.candidate.user_name },
    entraObject: { externalId: values.external_id, userName: values.user_name },
  };
}
