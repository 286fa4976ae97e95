// Entra's "Download users" CSV as the admin center writes it, a tenant's
// portal accounts before its first sync with one case of every preview
// outcome, and a fingerprint of the database, for the preview's tests.
import { sql } from 'kysely';
import type { Db } from '../../src/db/database.js';

/** The columns of the documented export (objectId); the newer export names it "id" and adds a few more. */
export const DOCUMENTED_HEADER = [
  'userPrincipalName',
  'displayName',
  'surname',
  'mail',
  'givenName',
  'objectId',
  'userType',
  'jobTitle',
  'department',
  'accountEnabled',
  'usageLocation',
  'streetAddress',
  'state',
  'country',
  'physicalDeliveryOfficeName',
  'city',
  'postalCode',
  'telephoneNumber',
  'mobile',
  'authenticationPhoneNumber',
  'authenticationAlternativePhoneNumber',
  'authenticationEmail',
  'alternateEmailAddress',
  'ageGroup',
  'consentProvidedForMinor',
  'legalAgeGroupClassification',
];
export const NEWER_HEADER = [
  'userPrincipalName',
  'displayName',
  'surname',
  'mail',
  'givenName',
  'id',
  'userType',
  'jobTitle',
  'department',
  'accountEnabled',
  'usageLocation',
  'streetAddress',
  'state',
  'country',
  'officeLocation',
  'city',
  'postalCode',
  'telephoneNumber',
  'mobilePhone',
  'alternateEmailAddress',
  'ageGroup',
  'consentProvidedForMinor',
  'legalAgeGroupClassification',
  'companyName',
  'creationType',
  'directorySynced',
  'invitationState',
  'identityIssuer',
  'createdDateTime',
];

export interface ExportUser {
  userPrincipalName: string;
  displayName: string;
  givenName: string;
  surname: string;
  mail: string;
  objectId: string;
  userType?: string;
}

const objectId = (n: number) => `0b0b0b0b-0000-4000-8000-${String(n).padStart(12, '0')}`;
export const OBJECT_RE_ADOPTED = objectId(4);
export const OBJECT_SYNCED = objectId(5);

/** One user per row, in this order: the header is row 1, so USERS[i] is row i + 2. */
export const USERS: ExportUser[] = [
  { userPrincipalName: 'anna.berg@school.example', displayName: 'Anna Berg', givenName: 'Anna', surname: 'Berg', mail: 'anna.berg@school.example', objectId: objectId(2) },
  { userPrincipalName: 'cecilia.lund@school.example', displayName: 'Cecilia Lund', givenName: 'Cecilia', surname: 'Lund', mail: 'cecilia.lund@school.example', objectId: objectId(3) },
  { userPrincipalName: 'ny.namn@school.example', displayName: 'Ny Namn', givenName: 'Ny', surname: 'Namn', mail: 'ny.namn@school.example', objectId: OBJECT_RE_ADOPTED },
  { userPrincipalName: 'synced.user@school.example', displayName: 'Synced User', givenName: 'Synced', surname: 'User', mail: 'synced.user@school.example', objectId: OBJECT_SYNCED },
  { userPrincipalName: 'rektor@school.example', displayName: 'Rektor', givenName: 'Rut', surname: 'Rektor', mail: 'rektor@school.example', objectId: objectId(6) },
  // A display name with a comma: Entra quotes it.
  { userPrincipalName: 'bo.ek@school.example', displayName: 'Ek, Bo', givenName: 'Bo', surname: 'Ek', mail: 'bo.ek@school.example', objectId: objectId(7) },
  { userPrincipalName: 'david.sund@school.example', displayName: 'David S', givenName: 'David', surname: 'S', mail: 'david.sund@school.example', objectId: objectId(8) },
  { userPrincipalName: 'erik_partner.example#EXT#@school.onmicrosoft.example', displayName: 'Erik Gäst', givenName: 'Erik', surname: 'Gäst', mail: 'erik@partner.example', objectId: objectId(9), userType: 'Guest' },
  { userPrincipalName: 'fia@school.example', displayName: 'Fia Ny', givenName: 'Fia', surname: 'Ny', mail: 'fia@school.example', objectId: objectId(10) },
  { userPrincipalName: 'gus@school.example', displayName: 'Gus Ny', givenName: 'Gus', surname: 'Ny', mail: 'gus@school.example', objectId: objectId(11) },
  { userPrincipalName: 'hanna@school.example', displayName: 'Hanna H', givenName: 'Hanna', surname: 'H', mail: 'hanna@school.example', objectId: objectId(12) },
  { userPrincipalName: 'hanna.h@school.example', displayName: 'Hanna Hansson', givenName: 'Hanna', surname: 'Hansson', mail: 'hanna.h@school.example', objectId: objectId(13) },
  { userPrincipalName: 'new.pupil@school.example', displayName: 'New Pupil', givenName: 'New', surname: 'Pupil', mail: '', objectId: objectId(14) },
];

/** What the preview says of each row, and why. */
export const EXPECTED: Record<number, { outcome: string; rule?: number; account?: string; suggested?: string; reasons?: string[]; outside?: string[] }> = {
  2: { outcome: 'adopt', rule: 2, account: 'anna' },
  3: { outcome: 'adopt', rule: 2, account: 'cecilia' },
  4: { outcome: 'adopt', rule: 8, account: 'reAdopted' },
  5: { outcome: 'already-synced', account: 'synced' },
  6: { outcome: 'admin-collision', rule: 3, account: 'admin' },
  7: { outcome: 'create', suggested: 'bo', reasons: ['same-name'] },
  8: { outcome: 'create', suggested: 'david', reasons: ['same-local-part'] },
  9: { outcome: 'create', suggested: 'erik', reasons: ['same-address', 'same-name'], outside: ['erik_partner.example#EXT#@school.onmicrosoft.example', 'erik@partner.example'] },
  10: { outcome: 'create' },
  11: { outcome: 'create' },
  12: { outcome: 'adopt', rule: 2, account: 'hanna' },
  13: { outcome: 'create', suggested: 'hanna', reasons: ['same-address'] },
  14: { outcome: 'create' },
};

function csvField(value: string): string {
  return /[",\r\n]/.test(value) ? `"${value.replace(/"/g, '""')}"` : value;
}

/** The export's text: CRLF line ends as Microsoft writes them, a byte order mark when asked. */
export function entraExport(users: readonly ExportUser[] = USERS, options: { header?: readonly string[]; bom?: boolean } = {}): string {
  const header = options.header ?? DOCUMENTED_HEADER;
  const lines = users.map((u) =>
    header
      .map((column) => {
        const value: Record<string, string> = {
          userPrincipalName: u.userPrincipalName,
          displayName: u.displayName,
          surname: u.surname,
          mail: u.mail,
          givenName: u.givenName,
          objectId: u.objectId,
          id: u.objectId,
          userType: u.userType ?? 'Member',
          accountEnabled: 'True',
          department: 'Norra skolan, högstadiet',
          usageLocation: 'SE',
          createdDateTime: '8/19/2021 1:25:31 PM',
        };
        return csvField(value[column] ?? '');
      })
      .join(','),
  );
  return `${options.bom ? '\uFEFF' : ''}${[header.join(','), ...lines].join('\r\n')}\r\n`;
}

/**
 * The tenant's accounts before its first sync (verified domain
 * school.example), one per case the preview tells apart; returns their ids
 * by name.
 */
export async function seedAccounts(db: Db, tenantId: string): Promise<Record<string, string>> {
  const rows = [
    { key: 'anna', managed_by: 'manual', role: 'student', user_name: 'Anna.Berg@School.example', email: null, given_name: 'Anna', family_name: 'Berg' },
    { key: 'cecilia', managed_by: 'manual', role: 'teacher', user_name: 'cecilia', email: 'cecilia.lund@school.example', given_name: 'Cecilia', family_name: 'Lund' },
    // Synced before a disconnect (rule 8): its address is long out of date.
    { key: 'reAdopted', managed_by: 'manual', role: 'student', user_name: 'old.name@school.example', email: null, external_id: OBJECT_RE_ADOPTED },
    { key: 'synced', managed_by: 'sync', role: 'student', user_name: 'synced.user@school.example', email: 'synced.user@school.example', external_id: OBJECT_SYNCED },
    { key: 'admin', managed_by: 'manual', role: 'admin', user_name: 'head@school.example', email: 'rektor@school.example' },
    { key: 'bo', managed_by: 'manual', role: 'student', user_name: 'bo@old.example', email: 'bo@old.example', given_name: 'Bo', family_name: 'Ek' },
    { key: 'david', managed_by: 'manual', role: 'student', user_name: 'david.sund@gmail.example', email: null, display_name: 'David Sund' },
    { key: 'erik', managed_by: 'manual', role: 'student', user_name: 'erik@partner.example', email: null, given_name: 'Erik', family_name: 'Gäst' },
    // Never adopted: deleted (rule 7), or linked to another Entra object.
    { key: 'fia', managed_by: 'manual', role: 'student', user_name: 'fia@school.example', email: null, deleted_at: new Date() },
    { key: 'gus', managed_by: 'manual', role: 'student', user_name: 'gus@school.example', email: null, external_id: 'another-entra-object' },
    { key: 'hanna', managed_by: 'manual', role: 'student', user_name: 'hanna.h@school.example', email: 'hanna@school.example' },
  ] as const;
  const ids: Record<string, string> = {};
  for (const [i, { key, ...row }] of rows.entries()) {
    const inserted = await db
      .insertInto('accounts')
      .values({ tenant_id: tenantId, scim: '{}', created_at: new Date(Date.UTC(2025, 0, 1 + i)), ...row })
      .returning('id')
      .executeTakeFirstOrThrow();
    ids[key] = inserted.id;
  }
  return ids;
}

/** Every row of every table the service owns, hashed: equal before and after means nothing was written. */
export async function snapshot(db: Db): Promise<Record<string, string>> {
  const tables = ['tenants', 'credentials', 'admin_credentials', 'accounts', 'classes', 'class_memberships', 'audit_events', 'sync_conflicts', 'request_counts', 'change_events'];
  const result: Record<string, string> = {};
  for (const table of tables) {
    const { rows } = await sql<{ n: string; h: string }>`SELECT count(*) AS n, md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), '')) AS h FROM ${sql.table(table)} x`.execute(db);
    result[table] = `${rows[0]?.n} ${rows[0]?.h}`;
  }
  return result;
}
