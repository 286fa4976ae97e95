// The preview of a tenant's first sync, from the CSV that the Entra admin
// center's "Download users" writes: for each user, what the server will do
// when Entra creates it (adopt which portal account by rule 8 or 2, create a
// new one, refuse it by rule 3), decided by the server's own planner on
// accounts read for the whole file at once; and what the school's admin should
// fix first: an existing account that is probably the same person under
// another address, an address outside the verified domains. Writes nothing.
// The CLI, the admin API and the status page all show this one report.
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { CsvError, parse } from 'csv-parse';
import { stringify } from 'csv-stringify/sync';
import type { Executor } from '../db/database.js';
import { readPreviewAccounts, type KeyedAccount, type PreviewAccounts } from '../db/preview.js';
import { ScimError } from '../errors.js';
import { AdminCollision } from '../scim/rules/admin-guard.js';
import { addresses, inVerifiedDomain } from '../scim/rules/adoption.js';
import { USER_SCHEMA } from '../scim/schemas.js';
import { planUserCreate } from '../scim/user-writes.js';
import { fromScimUser } from '../scim/users.js';
import { ServiceError } from './errors.js';
import { localPart, personNames } from './person-keys.js';

/** One user of the export, with the columns the default attribute mapping sends (see product.md, "Attribute mapping"). */
export interface EntraUser {
  /** The row in the file as a spreadsheet numbers it: the header is row 1. */
  row: number;
  userPrincipalName: string;
  mail: string | null;
  displayName: string | null;
  givenName: string | null;
  surname: string | null;
  objectId: string | null;
}

type Field = Exclude<keyof EntraUser, 'row'>;

/**
 * The columns read, by the header Microsoft writes (compared without regard to
 * case). The older export names the object id "objectId", the newer one "id".
 * Every other column is ignored.
 */
const COLUMNS: readonly { field: Field; headers: readonly string[] }[] = [
  { field: 'userPrincipalName', headers: ['userPrincipalName'] },
  { field: 'objectId', headers: ['objectId', 'id'] },
  { field: 'mail', headers: ['mail'] },
  { field: 'displayName', headers: ['displayName'] },
  { field: 'givenName', headers: ['givenName'] },
  { field: 'surname', headers: ['surname'] },
];

/**
 * The largest export the admin API and the status page take: about 200,000
 * users with every column Entra writes, which the server's heap holds with
 * its report. The CLI reads larger files.
 */
export const PREVIEW_MAX_BYTES = 64 * 1024 * 1024;

/** Longest row accepted: far beyond any user's, short enough that a quote left open fails at once. */
const MAX_ROW_CHARACTERS = 65_536;

const unreadable = (message: string) => new ServiceError('invalid', message);

const EXPORT_HINT = 'Use the file that "Download users" (Entra admin center, Users > All users) writes, as it is.';

/** UTF-8 text of the source, without its byte order mark; anything else is a clear error. */
async function* utf8Text(source: AsyncIterable<Uint8Array>): AsyncGenerator<string> {
  // fatal: a file saved as Windows-1252 would otherwise turn names into U+FFFD.
  const decoder = new TextDecoder('utf-8', { fatal: true });
  let first = true;
  for await (const chunk of source) {
    if (first && chunk.length >= 2 && ((chunk[0] === 0xff && chunk[1] === 0xfe) || (chunk[0] === 0xfe && chunk[1] === 0xff))) {
      throw unreadable(`The file is UTF-16 text; the preview reads UTF-8 (with or without a byte order mark). ${EXPORT_HINT}`);
    }
    first = first && chunk.length === 0;
    try {
      yield decoder.decode(chunk, { stream: true });
    } catch {
      throw unreadable(`The file is not UTF-8 text. ${EXPORT_HINT}`);
    }
  }
  try {
    yield decoder.decode();
  } catch {
    throw unreadable(`The file is not UTF-8 text. ${EXPORT_HINT}`);
  }
}

function csvProblem(error: CsvError): ServiceError {
  const line = typeof error.lines === 'number' ? ` at line ${error.lines}` : '';
  switch (error.code) {
    case 'CSV_QUOTE_NOT_CLOSED':
      return unreadable(`The file is not valid CSV: a quoted field is never closed (the file ends${line}).`);
    case 'CSV_MAX_RECORD_SIZE':
      return unreadable(`The file is not valid CSV${line}: a row longer than ${MAX_ROW_CHARACTERS} characters (a quote left open?).`);
    default:
      return unreadable(`The file is not valid CSV${line}: a quote in the middle of a field, or text after a closing quote.`);
  }
}

function headerIndexes(header: readonly string[]): Record<Field, number> {
  const names = header.map((h) => h.trim().toLowerCase());
  const found: Partial<Record<Field, number>> = {};
  const missing: string[] = [];
  for (const { field, headers } of COLUMNS) {
    const index = headers.map((h) => names.indexOf(h.toLowerCase())).find((i) => i >= 0);
    if (index === undefined) missing.push(`"${headers[0] ?? ''}"${headers.length > 1 ? ` (or ${headers.slice(1).map((h) => `"${h}"`).join(', ')})` : ''}`);
    else found[field] = index;
  }
  if (missing.length > 0) {
    const semicolons = header.length === 1 && (header[0] ?? '').includes(';');
    throw unreadable(
      semicolons
        ? `The file's columns are separated by semicolons; Entra's export separates them by commas. ${EXPORT_HINT}`
        : `The file lacks the column${missing.length > 1 ? 's' : ''} ${missing.length > 1 ? `${missing.slice(0, -1).join(', ')} and ${missing.at(-1) ?? ''}` : (missing[0] ?? '')}. ${EXPORT_HINT}`,
    );
  }
  return found as Record<Field, number>;
}

/**
 * Reads Entra's "Download users" CSV: UTF-8 with or without a byte order
 * mark, quoted fields, any other columns ignored. Streams the source, so a
 * large file never blocks the event loop for long.
 */
export async function readEntraUsers(source: AsyncIterable<Uint8Array> | Uint8Array): Promise<EntraUser[]> {
  const chunks = source instanceof Uint8Array ? chunked(source) : source;
  const users: EntraUser[] = [];
  let indexes: Record<Field, number> | undefined;
  let headerFields = 0;
  let row = 0;
  const seenUserNames = new Map<string, number>();
  const seenObjectIds = new Map<string, number>();
  // Rows of another length are counted here, to name the row as a spreadsheet numbers it.
  const parser = parse({ bom: true, trim: true, skip_empty_lines: true, relax_column_count: true, max_record_size: MAX_ROW_CHARACTERS });
  const take = (record: string[]): void => {
    row += 1;
    if (indexes === undefined) {
      indexes = headerIndexes(record);
      headerFields = record.length;
      return;
    }
    if (record.every((field) => field === '')) return;
    if (record.length !== headerFields) throw unreadable(`Row ${row} has ${record.length} fields, the header ${headerFields}: the file is not valid CSV.`);
    const value = (field: Field) => {
      const text = record[indexes?.[field] ?? -1] ?? '';
      return text === '' ? null : text;
    };
    const userPrincipalName = value('userPrincipalName');
    if (userPrincipalName === null) throw unreadable(`Row ${row} has no userPrincipalName.`);
    const user: EntraUser = {
      row,
      userPrincipalName,
      mail: value('mail'),
      displayName: value('displayName'),
      givenName: value('givenName'),
      surname: value('surname'),
      objectId: value('objectId'),
    };
    const earlier = seenUserNames.get(userPrincipalName.toLowerCase());
    if (earlier !== undefined) throw unreadable(`Row ${row} repeats the userPrincipalName of row ${earlier}.`);
    seenUserNames.set(userPrincipalName.toLowerCase(), row);
    if (user.objectId !== null) {
      const same = seenObjectIds.get(user.objectId);
      if (same !== undefined) throw unreadable(`Row ${row} repeats the object id of row ${same}.`);
      seenObjectIds.set(user.objectId, row);
    }
    users.push(user);
  };
  // A row the preview refuses stops the reading; the pipeline then reports
  // only that it was cut short, so the refusal is kept here.
  let refusal: ServiceError | undefined;
  try {
    await pipeline(Readable.from(utf8Text(chunks)), parser, async (records: AsyncIterable<string[]>) => {
      for await (const record of records) {
        try {
          take(record);
        } catch (error) {
          if (!(error instanceof ServiceError)) throw error;
          refusal = error;
          return;
        }
      }
    });
  } catch (error) {
    if (refusal) throw refusal;
    if (error instanceof CsvError) throw csvProblem(error);
    throw error;
  }
  if (refusal) throw refusal;
  if (indexes === undefined) throw unreadable(`The file is empty. ${EXPORT_HINT}`);
  return users;
}

async function* chunked(bytes: Uint8Array): AsyncGenerator<Uint8Array> {
  const size = 256 * 1024;
  for (let at = 0; at < bytes.length; at += size) yield bytes.subarray(at, at + size);
}

export type PreviewOutcome = 'already-synced' | 'adopt' | 'create' | 'admin-collision' | 'invalid';

export interface PortalAccountRef {
  id: string;
  userName: string;
  email: string | null;
  displayName: string | null;
}

export type MatchReason = 'same-address' | 'same-local-part' | 'same-name';

export interface ProbableMatch extends PortalAccountRef {
  reasons: MatchReason[];
  /** When another row of the file adopts this account (by rule 8 or 2) before this one could: that row. */
  adoptedByRow?: number;
}

export interface PreviewUser {
  row: number;
  userPrincipalName: string;
  mail: string | null;
  displayName: string | null;
  objectId: string | null;
  outcome: PreviewOutcome;
  /** The rule that decides it: 8 or 2 for an adoption, 3 for an admin collision. */
  rule?: 2 | 3 | 8;
  /** How the account was found: by the Entra object id, or the account's userName or e-mail. */
  matchedBy?: 'externalId' | 'userName' | 'email';
  /** The account adopted, already synced, or the admin in the way. */
  account?: PortalAccountRef;
  /** For a new account: existing accounts that are probably the same person, likeliest first (at most 5). */
  probableMatches: ProbableMatch[];
  /**
   * For an adoption by address (rule 2): later rows of the file whose
   * addresses match the same account, so that each of them would take it if
   * Entra sent it first. Entra's order is its own.
   */
  contestedBy?: number[];
  /** For an adoption by address: the account is deactivated in the portal (a leaver's, whose address may have been given to someone new). */
  deactivated?: true;
  /** For an adoption by address: other portal accounts with the same address, which stay as they are (at most 5). */
  alsoMatching?: PortalAccountRef[];
  /** The user's addresses (userPrincipalName, mail) outside the tenant's verified domains: rule 2 never adopts by them. */
  outsideVerifiedDomains: string[];
  /** Why the server would refuse the user's data (outcome invalid). */
  problem?: string;
}

export interface PreviewTotals {
  users: number;
  alreadySynced: number;
  adopt: number;
  adoptByExternalId: number;
  adoptByAddress: number;
  create: number;
  /** New accounts with an existing account that is probably the same person. */
  probableMatches: number;
  adminCollisions: number;
  invalid: number;
  /** Users with an address outside the verified domains. */
  outsideVerifiedDomains: number;
}

export interface PreviewReport {
  tenant: { id: string; name: string; verifiedDomains: string[] };
  totals: PreviewTotals;
  users: PreviewUser[];
}

const MAX_PROBABLE_MATCHES = 5;
/** Users decided (or accounts indexed) between two turns of the event loop, so the server keeps answering during a large preview. */
const PER_TURN = 2000;
const nextTurn = () => new Promise((resolve) => setImmediate(resolve));
const REASON_WEIGHT: Record<MatchReason, number> = { 'same-address': 4, 'same-local-part': 2, 'same-name': 1 };

/** The resource Entra sends for the user under the default attribute mapping. */
function entraResource(user: EntraUser): Record<string, unknown> {
  return {
    schemas: [USER_SCHEMA],
    externalId: user.objectId,
    userName: user.userPrincipalName,
    active: true,
    ...(user.displayName !== null ? { displayName: user.displayName } : {}),
    name: { ...(user.givenName !== null ? { givenName: user.givenName } : {}), ...(user.surname !== null ? { familyName: user.surname } : {}) },
    ...(user.mail !== null ? { emails: [{ type: 'work', value: user.mail, primary: true }] } : {}),
  };
}

const ref = (account: KeyedAccount): PortalAccountRef => ({ id: account.id, userName: account.user_name, email: account.email, displayName: account.display_name });

function push<K, V>(map: Map<K, V[]>, key: K, value: V): void {
  const list = map.get(key);
  if (list) list.push(value);
  else map.set(key, [value]);
}

function folded(read: PreviewAccounts, address: string): string {
  const key = read.folded.get(address);
  if (key === undefined) throw new Error('the preview has no folded form of an address of the export');
  return key;
}

/** The accounts the preview reads, indexed the ways the server's reads and the probable-match search look them up. */
class AccountIndex {
  readonly syncedByExternalId = new Map<string, KeyedAccount>();
  readonly syncedByUserName = new Map<string, KeyedAccount>();
  readonly adminByAddress = new Map<string, KeyedAccount>();
  readonly adoptableByExternalId = new Map<string, KeyedAccount[]>();
  readonly unlinkedByAddress = new Map<string, KeyedAccount[]>();
  readonly unlinkedByLocalPart = new Map<string, KeyedAccount[]>();
  readonly unlinkedByName = new Map<string, KeyedAccount[]>();

  /** Built a few thousand accounts per turn of the event loop, as the users are decided. */
  static async of(read: PreviewAccounts): Promise<AccountIndex> {
    const index = new AccountIndex(read);
    for (const [i, a] of read.unlinked.entries()) {
      if (i > 0 && i % PER_TURN === 0) await nextTurn();
      index.addUnlinked(a);
    }
    return index;
  }

  private constructor(read: PreviewAccounts) {
    for (const a of read.syncedByExternalId) if (a.external_id !== null) this.syncedByExternalId.set(a.external_id, a);
    for (const a of read.syncedByUserName) this.syncedByUserName.set(a.input, a);
    for (const a of read.admins) {
      for (const key of [a.user_name_key, a.email_key]) if (key !== null && !this.adminByAddress.has(key)) this.adminByAddress.set(key, a);
    }
    for (const a of read.adoptableByExternalId) if (a.external_id !== null) push(this.adoptableByExternalId, a.external_id, a);
  }

  private addUnlinked(a: KeyedAccount): void {
    const keys = new Set([a.user_name_key, a.email_key].filter((k): k is string => k !== null));
    for (const key of keys) push(this.unlinkedByAddress, key, a);
    for (const part of new Set([...keys].map(localPart))) push(this.unlinkedByLocalPart, part, a);
    for (const name of personNames(a.given_name, a.family_name, a.display_name)) push(this.unlinkedByName, name, a);
  }
}

/** A stand-in for the credential and request a real create has: the planner's audit event is built and dropped. */
const previewActor = (tenantId: string) => ({ tenantId, credentialId: '', requestId: '' });
const NO_ID = '00000000-0000-0000-0000-000000000000';
const NONE_CLAIMED: ReadonlyMap<string, number> = new Map();

/**
 * What the server will do with each user of the export when Entra creates
 * them in file order. Entra's order is its own: where two rows would adopt
 * the same account, the later row is told which row takes it.
 */
export async function previewFirstSync(db: Executor, tenantId: string, users: readonly EntraUser[]): Promise<PreviewReport> {
  const read = await readPreviewAccounts(db, tenantId, {
    externalIds: users.flatMap((u) => (u.objectId === null ? [] : [u.objectId])),
    userNames: users.map((u) => u.userPrincipalName),
    addresses: users.flatMap((u) => (u.mail === null ? [u.userPrincipalName] : [u.userPrincipalName, u.mail])),
  });
  if (!read) throw new ServiceError('not-found', `No tenant ${tenantId}.`);
  const { tenant } = read;
  const index = await AccountIndex.of(read);
  const actor = previewActor(tenant.id);
  /** Accounts adopted by an earlier row: synced from then on, so no later create can adopt them. */
  const claimed = new Map<string, number>();
  /** The row that adopted each account by address, to tell it of later rows that match the account too. */
  const adoptedByAddress = new Map<string, PreviewUser>();
  const decided: PreviewUser[] = [];

  for (const [i, user] of users.entries()) {
    if (i > 0 && i % PER_TURN === 0) await nextTurn();
    const base = {
      row: user.row,
      userPrincipalName: user.userPrincipalName,
      mail: user.mail,
      displayName: user.displayName,
      objectId: user.objectId,
      probableMatches: [] as ProbableMatch[],
      outsideVerifiedDomains: [...new Map([user.userPrincipalName, user.mail].flatMap((a) => (a === null || inVerifiedDomain(a, tenant.verifiedDomains) ? [] : [[a.toLowerCase(), a] as const]))).values()],
    };
    let values;
    try {
      values = fromScimUser(entraResource(user), tenant.roleMapping);
    } catch (error) {
      if (!(error instanceof ScimError)) throw error;
      decided.push({ ...base, outcome: 'invalid', problem: error.detail });
      continue;
    }
    // The addresses as the server's reads compare them: folded by the database.
    const known = addresses(values).map((a) => folded(read, a));
    const admin = known.map((a) => index.adminByAddress.get(a)).find((a) => a !== undefined);
    const synced = (values.external_id !== null ? index.syncedByExternalId.get(values.external_id) : undefined) ?? index.syncedByUserName.get(user.userPrincipalName);

    if (synced) {
      // Entra finds it by its lookup and updates it; rule 3 refuses the update as it would a create.
      if (admin) decided.push({ ...base, outcome: 'admin-collision', rule: 3, account: ref(admin) });
      else decided.push({ ...base, outcome: 'already-synced', matchedBy: synced.external_id === values.external_id ? 'externalId' : 'userName', account: ref(synced) });
      continue;
    }

    // The reads of the server's locked create (scim/users.ts), answered from the index.
    const byExternalId = values.external_id === null ? undefined : index.adoptableByExternalId.get(values.external_id)?.find((a) => !claimed.has(a.id));
    const adoptable = known.filter((a) => inVerifiedDomain(a, tenant.verifiedDomains));
    const byAddress = byExternalId ? undefined : firstByAddress(index, adoptable, claimed);
    // Had Entra sent this row first, it would have taken an account an earlier row adopts by address.
    if (!admin && !byExternalId) {
      // The account this row takes when it comes first: the one rule 2 ranks first of all its matches.
      const first = firstByAddress(index, adoptable, NONE_CLAIMED);
      const earlier = first && adoptedByAddress.get(first.id);
      if (earlier) (earlier.contestedBy ??= []).push(user.row);
    }
    let plan;
    try {
      plan = planUserCreate(actor, tenant.verifiedDomains, values, { admin, byExternalId, byAddress }, NO_ID);
    } catch (error) {
      if (!(error instanceof AdminCollision) || !admin) throw error;
      decided.push({ ...base, outcome: 'admin-collision', rule: 3, account: ref(admin) });
      continue;
    }
    if (plan.kind === 'update') {
      const adopted = plan.id === byExternalId?.id ? byExternalId : byAddress;
      if (!adopted) throw new Error('the planner adopted an account the preview did not offer');
      claimed.set(adopted.id, user.row);
      const byRule2 = adopted !== byExternalId;
      const others = byRule2 ? [...new Set(adoptable.flatMap((a) => index.unlinkedByAddress.get(a) ?? []))].filter((a) => a.id !== adopted.id && !claimed.has(a.id)) : [];
      const adoption: PreviewUser = {
        ...base,
        outcome: 'adopt',
        rule: byRule2 ? 2 : 8,
        matchedBy: byRule2 ? (adoptable.includes(adopted.user_name_key) ? 'userName' : 'email') : 'externalId',
        account: ref(adopted),
        ...(byRule2 && !adopted.active ? { deactivated: true as const } : {}),
        ...(others.length > 0 ? { alsoMatching: others.slice(0, MAX_PROBABLE_MATCHES).map(ref) } : {}),
      };
      if (byRule2) adoptedByAddress.set(adopted.id, adoption);
      decided.push(adoption);
      continue;
    }
    decided.push({ ...base, outcome: 'create', probableMatches: probableMatches(index, user, known, claimed) });
  }
  return { tenant: { id: tenant.id, name: tenant.name, verifiedDomains: tenant.verifiedDomains }, totals: totalsOf(decided), users: decided };
}

/**
 * Rule 2's candidate as findAdoptableByAddress orders them: an account whose
 * userName is one of the addresses before one whose e-mail is, then the
 * oldest; one that an earlier row adopted is no longer manual.
 */
function firstByAddress(index: AccountIndex, adoptable: readonly string[], claimed: ReadonlyMap<string, number>): KeyedAccount | undefined {
  const candidates = [...new Set(adoptable.flatMap((a) => index.unlinkedByAddress.get(a) ?? []))].filter((a) => !claimed.has(a.id));
  const byUserName = (a: KeyedAccount) => (adoptable.includes(a.user_name_key) ? 0 : 1);
  candidates.sort((a, b) => byUserName(a) - byUserName(b) || a.created_at.getTime() - b.created_at.getTime() || a.id.localeCompare(b.id));
  return candidates[0];
}

/**
 * Accounts rule 2 could adopt if the addresses agreed, that are probably this
 * person: the same address where rule 2 may not adopt by it (outside the
 * verified domains, or taken by another row), the same local part in another
 * domain, or the same name.
 */
function probableMatches(index: AccountIndex, user: EntraUser, known: readonly string[], claimed: ReadonlyMap<string, number>): ProbableMatch[] {
  const found = new Map<string, { account: KeyedAccount; reasons: Set<MatchReason> }>();
  const add = (account: KeyedAccount, reason: MatchReason) => {
    const entry = found.get(account.id) ?? { account, reasons: new Set<MatchReason>() };
    entry.reasons.add(reason);
    found.set(account.id, entry);
  };
  for (const address of known) for (const a of index.unlinkedByAddress.get(address) ?? []) add(a, 'same-address');
  for (const part of new Set(known.map(localPart))) for (const a of index.unlinkedByLocalPart.get(part) ?? []) if (!found.get(a.id)?.reasons.has('same-address')) add(a, 'same-local-part');
  for (const name of personNames(user.givenName, user.surname, user.displayName)) for (const a of index.unlinkedByName.get(name) ?? []) add(a, 'same-name');

  const score = (reasons: Set<MatchReason>) => [...reasons].reduce((sum, r) => sum + REASON_WEIGHT[r], 0);
  return [...found.values()]
    .filter(({ account, reasons }) => !claimed.has(account.id) || reasons.has('same-address'))
    .sort((a, b) => score(b.reasons) - score(a.reasons) || a.account.created_at.getTime() - b.account.created_at.getTime() || a.account.id.localeCompare(b.account.id))
    .slice(0, MAX_PROBABLE_MATCHES)
    .map(({ account, reasons }) => {
      const takenBy = claimed.get(account.id);
      return {
        ...ref(account),
        reasons: (['same-address', 'same-local-part', 'same-name'] as const).filter((r) => reasons.has(r)),
        ...(takenBy !== undefined ? { adoptedByRow: takenBy } : {}),
      };
    });
}

function totalsOf(users: readonly PreviewUser[]): PreviewTotals {
  const totals: PreviewTotals = {
    users: users.length,
    alreadySynced: 0,
    adopt: 0,
    adoptByExternalId: 0,
    adoptByAddress: 0,
    create: 0,
    probableMatches: 0,
    adminCollisions: 0,
    invalid: 0,
    outsideVerifiedDomains: 0,
  };
  for (const u of users) {
    switch (u.outcome) {
      case 'already-synced':
        totals.alreadySynced += 1;
        break;
      case 'adopt':
        totals.adopt += 1;
        if (u.rule === 8) totals.adoptByExternalId += 1;
        else totals.adoptByAddress += 1;
        break;
      case 'create':
        totals.create += 1;
        if (u.probableMatches.length > 0) totals.probableMatches += 1;
        break;
      case 'admin-collision':
        totals.adminCollisions += 1;
        break;
      case 'invalid':
        totals.invalid += 1;
        break;
    }
    if (u.outsideVerifiedDomains.length > 0) totals.outsideVerifiedDomains += 1;
  }
  return totals;
}

/** The outcome in a few words, as the table, the CSV and the page show it. */
export function outcomeWords(user: PreviewUser): string {
  switch (user.outcome) {
    case 'already-synced':
      return 'already synced';
    case 'adopt':
      return `adopt (rule ${user.rule ?? ''})`;
    case 'create':
      return user.probableMatches.length > 0 ? 'create, probably same person' : 'create';
    case 'admin-collision':
      return 'admin collision (rule 3)';
    case 'invalid':
      return 'invalid';
  }
}

const accountWords = (a: PortalAccountRef): string => `${a.userName}${a.email !== null && a.email.toLowerCase() !== a.userName.toLowerCase() ? ` <${a.email}>` : ''} (${a.id})`;

const REASON_WORDS: Record<MatchReason, string> = {
  'same-address': 'same address',
  'same-local-part': 'same local part in another domain',
  'same-name': 'same name',
};

/** What to know or do about the user, in a sentence or two for the school's admin. */
export function noteOf(user: PreviewUser): string {
  const parts: string[] = [];
  switch (user.outcome) {
    case 'already-synced':
      parts.push(`Already synced as ${accountWords(user.account as PortalAccountRef)}, found by its ${user.matchedBy === 'externalId' ? 'Entra object id' : 'userName'}.`);
      break;
    case 'adopt':
      parts.push(
        user.rule === 8
          ? `Takes over ${accountWords(user.account as PortalAccountRef)}, linked to this Entra object.`
          : `Takes over ${accountWords(user.account as PortalAccountRef)}, whose ${user.matchedBy === 'userName' ? 'userName' : 'e-mail'} is this user's address.`,
      );
      if (user.contestedBy) {
        const rows = user.contestedBy;
        parts.push(
          `Row${rows.length > 1 ? 's' : ''} ${rows.join(', ')} match${rows.length > 1 ? '' : 'es'} that account too and take${rows.length > 1 ? '' : 's'} it if Entra sends ${rows.length > 1 ? 'them' : 'it'} first; fix the e-mails so that only the right user matches it, or have the portal team link the account to its Entra user.`,
        );
      }
      if (user.deactivated) {
        parts.push('The account is deactivated in the portal: if its address was given to someone new, that person takes over the old account and its history; check before the first sync.');
      }
      if (user.alsoMatching) {
        const n = user.alsoMatching.length;
        parts.push(`${n} other portal account${n > 1 ? 's have' : ' has'} this address too and stay${n > 1 ? '' : 's'} as ${n > 1 ? 'they are' : 'it is'}: ${user.alsoMatching.map(accountWords).join(', ')}.`);
      }
      break;
    case 'create': {
      const [best, ...others] = user.probableMatches;
      if (best) {
        const fix =
          best.adoptedByRow !== undefined
            ? `Row ${best.adoptedByRow} matches that account too and takes it if Entra sends it first; fix the e-mails so that only the right user matches it.`
            : best.reasons.includes('same-address')
              ? "Rule 2 never adopts by an address outside the tenant's verified domains: verify that domain for the tenant, or give both an address in a verified domain."
              : 'Give both the same e-mail in a verified domain before the first sync to keep that account.';
        parts.push(
          `New account, but probably the same person as ${accountWords(best)}: ${best.reasons.map((r) => REASON_WORDS[r]).join(', ')}.` +
            (others.length > 0 ? ` ${others.length} more candidate${others.length > 1 ? 's' : ''}.` : '') +
            ` ${fix}`,
        );
      } else {
        parts.push('New account.');
      }
      break;
    }
    case 'admin-collision':
      parts.push(
        `Refused: the address belongs to the portal admin ${accountWords(user.account as PortalAccountRef)}, which sync never changes. Give the Entra user another address, or ask the portal team.`,
      );
      break;
    case 'invalid':
      parts.push(`Refused: ${user.problem ?? 'the server refuses this user.'}`);
      break;
  }
  if (user.outsideVerifiedDomains.length > 0) parts.push(`Outside the verified domains, never adopted by: ${user.outsideVerifiedDomains.join(', ')}.`);
  return parts.join(' ');
}

/** The header of previewCsv, one column per fact the school's admin may sort or filter on. */
export const PREVIEW_CSV_COLUMNS = [
  'row',
  'userPrincipalName',
  'mail',
  'displayName',
  'objectId',
  'outcome',
  'rule',
  'portalAccountId',
  'portalAccountUserName',
  'portalAccountEmail',
  'suggestedAccountId',
  'suggestedAccountUserName',
  'suggestedAccountEmail',
  'suggestedAccountDisplayName',
  'suggestedBecause',
  'outsideVerifiedDomains',
  'note',
] as const;

/**
 * Spreadsheets run a cell that starts with = + - @ or a control character as
 * a formula; Entra's own export passes such names through as they are. The
 * report is opened by people, so those cells start with an apostrophe.
 */
function cell(value: string | number | null | undefined): string {
  const text = value === null || value === undefined ? '' : String(value);
  return /^[=+\-@\t\r]/.test(text) ? `'${text}` : text;
}

/** The report as CSV, one row per user (UTF-8 with a byte order mark, which spreadsheets need to read it as UTF-8). */
export function previewCsv(report: PreviewReport): string {
  const rows = report.users.map((u) => {
    const suggested = u.probableMatches[0];
    return [
      u.row,
      u.userPrincipalName,
      u.mail,
      u.displayName,
      u.objectId,
      outcomeWords(u),
      u.rule,
      u.account?.id,
      u.account?.userName,
      u.account?.email,
      suggested?.id,
      suggested?.userName,
      suggested?.email,
      suggested?.displayName,
      suggested?.reasons.map((r) => REASON_WORDS[r]).join(', '),
      u.outsideVerifiedDomains.join(' '),
      noteOf(u),
    ].map(cell);
  });
  return stringify([[...PREVIEW_CSV_COLUMNS], ...rows], { bom: true, record_delimiter: 'windows' });
}

/** How much a user needs the school admin's eye: the page lists the most urgent first. */
export function attention(user: PreviewUser): number {
  switch (user.outcome) {
    case 'admin-collision':
    case 'invalid':
      return 0;
    case 'create':
      return user.probableMatches.length > 0 ? 1 : user.outsideVerifiedDomains.length > 0 ? 2 : 3;
    case 'adopt':
      return user.contestedBy || user.deactivated || user.alsoMatching ? 1 : 4;
    case 'already-synced':
      return 5;
  }
}
