// The first-sync preview from Entra's "Download users" CSV, through the CLI
// and the admin API: each outcome with its account and rule (adopt by rule 8
// and 2, already synced, create, probably the same person, admin collision,
// outside the verified domains), the export with and without a byte order
// mark, quoted fields with commas, extra columns, both of Microsoft's
// headers, clear errors for a file it cannot read, nothing written; and the
// server, sent the same users as Entra sends them, does what the preview said.
import { mkdtemp, readFile, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parse } from 'csv-parse/sync';
import { sql } from 'kysely';
import t, { type Test } from 'tap';
import { signAdminToken } from '../src/auth/tokens.js';
import { runCli } from '../src/cli.js';
import { createAdminCredential } from '../src/db/admin-credentials.js';
import type { PreviewReport } from '../src/services/preview.js';
import { testApp, testEnv, type TestApp } from './helpers/app.js';
import { DOCUMENTED_HEADER, EXPECTED, NEWER_HEADER, USERS, entraExport, seedAccounts, snapshot, type ExportUser } from './helpers/entra-export.js';
import { USER, client } from './helpers/scim.js';

async function cli(env: TestApp, ...argv: string[]) {
  const out: string[] = [];
  const err: string[] = [];
  const code = await runCli(argv, { out: (s) => out.push(s), err: (s) => err.push(s), env: testEnv({ DATABASE_URL: env.database.url }) });
  return { code, out: out.join('\n'), err: err.join('\n') };
}

async function tempFile(name: string, content: string | Buffer): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'portal-scim-preview-'));
  const file = path.join(dir, name);
  await writeFile(file, content);
  return file;
}

/** Checks every row of a report against EXPECTED, by account name. */
function checkRows(t: Test, report: PreviewReport, ids: Record<string, string>): void {
  t.same(
    report.users.map((u) => u.row),
    USERS.map((_, i) => i + 2),
    'one entry per user, in file order, numbered as a spreadsheet numbers the rows',
  );
  for (const user of report.users) {
    const expected = EXPECTED[user.row];
    if (!expected) throw new Error(`no expectation for row ${user.row}`);
    const label = `row ${user.row} (${user.userPrincipalName})`;
    t.equal(user.outcome, expected.outcome, `${label}: ${expected.outcome}`);
    t.equal(user.rule, expected.rule, `${label}: rule ${expected.rule ?? 'none'}`);
    t.equal(user.account?.id, expected.account === undefined ? undefined : ids[expected.account], `${label}: the account ${expected.account ?? 'none'}`);
    t.equal(user.probableMatches[0]?.id, expected.suggested === undefined ? undefined : ids[expected.suggested], `${label}: probably ${expected.suggested ?? 'nobody'}`);
    if (expected.reasons) t.same(user.probableMatches[0]?.reasons, expected.reasons, `${label}: because of ${expected.reasons.join(', ')}`);
    t.same(user.outsideVerifiedDomains, expected.outside ?? [], `${label}: addresses outside the verified domains`);
  }
  t.same(report.totals, {
    users: 13,
    alreadySynced: 1,
    adopt: 4,
    adoptByExternalId: 1,
    adoptByAddress: 3,
    create: 7,
    probableMatches: 4,
    adminCollisions: 1,
    invalid: 0,
    outsideVerifiedDomains: 1,
  });
}

t.test('portal-scim preview: each outcome, by which rule, with the account it concerns; table, --json and --csv; nothing written', async (t) => {
  const env = await testApp(t);
  const ids = await seedAccounts(env.db, env.tenant.id);
  const file = await tempFile('users.csv', entraExport());
  const before = await snapshot(env.db);

  const json = await cli(env, 'preview', '--tenant', env.tenant.id, '--entra-users', file, '--json');
  t.equal(json.code, 0, json.err);
  const report = JSON.parse(json.out) as PreviewReport;
  t.same(report.tenant, { id: env.tenant.id, name: 'Test School', verifiedDomains: ['school.example'] });
  checkRows(t, report, ids);
  const row = (n: number) => report.users.find((u) => u.row === n);
  t.match(row(2), { matchedBy: 'userName', account: { userName: 'Anna.Berg@School.example' } }, "rule 2 compares addresses in any case, the account's userName first");
  t.match(row(3), { matchedBy: 'email', account: { userName: 'cecilia', email: 'cecilia.lund@school.example' } });
  t.match(row(4), { matchedBy: 'externalId' });
  t.match(row(5), { matchedBy: 'externalId' });
  t.match(row(7), { displayName: 'Ek, Bo' }, 'a quoted field keeps its comma');
  t.match(row(13)?.probableMatches[0], { adoptedByRow: 12 }, 'the account row 12 takes is named, with the row that takes it');
  t.equal(row(14)?.mail, null, 'an empty mail is no e-mail');
  t.same(await snapshot(env.db), before, 'nothing was written');

  const csvFile = path.join(path.dirname(file), 'report.csv');
  const text = await cli(env, 'preview', '--tenant', env.tenant.id, '--entra-users', file, '--csv', csvFile);
  t.equal(text.code, 0, text.err);
  const lines = text.out.split('\n');
  t.match(lines[0], new RegExp(`^First-sync preview of Test School \\(${env.tenant.id}\\); verified domains: school\\.example\\. Nothing was written\\.$`));
  t.match(lines[2], /^ROW +USER PRINCIPAL NAME +OUTCOME +PORTAL ACCOUNT +NOTE$/);
  const line = (n: number) => lines.find((l) => l.startsWith(`${n} `)) ?? '';
  t.match(line(2), new RegExp(`^2 +anna\\.berg@school\\.example +adopt \\(rule 2\\) +Anna\\.Berg@School\\.example \\(${ids.anna}\\) +by userName$`));
  t.match(line(4), new RegExp(`adopt \\(rule 8\\) +old\\.name@school\\.example \\(${ids.reAdopted}\\) +by Entra object id$`));
  t.match(line(5), /already synced +synced\.user@school\.example \(.*\) +by Entra object id$/);
  t.match(line(6), new RegExp(`admin collision \\(rule 3\\) +head@school\\.example \\(${ids.admin}\\) +address of a portal admin$`));
  t.match(line(7), new RegExp(`create, probably same person +- +probably bo@old\\.example \\(${ids.bo}\\): same name$`));
  t.match(line(8), /probably david\.sund@gmail\.example \(.*\): same local part$/);
  t.match(line(9), /probably erik@partner\.example \(.*\): same address, same name; outside verified domains: erik_partner\.example#EXT#@school\.onmicrosoft\.example, erik@partner\.example$/);
  t.match(line(13), /probably hanna\.h@school\.example \(.*\): same address, taken by row 12$/);
  t.match(line(14), /^14 +new\.pupil@school\.example +create +-$/);
  t.match(text.out, /Users in the file: +13\nAlready synced: +1\nAdopt an account: +4 \(rule 8, by Entra object id: 1; rule 2, by address: 3\)\nCreate an account: +7, of which 4 probably the same person as an existing account\nRefused, portal admin: +1 \(rule 3\)\nRefused, invalid: +0\nOutside verified domains: +1 user\n/);
  t.match(lines.at(-1), `Wrote the report of 13 users to ${csvFile}.`);

  const bytes = await readFile(csvFile);
  t.same([...bytes.subarray(0, 3)], [0xef, 0xbb, 0xbf], 'the CSV starts with a byte order mark, so spreadsheets read it as UTF-8');
  const records = parse<Record<string, string>>(bytes, { bom: true, columns: true });
  t.equal(records.length, 13, 'one row per user');
  t.match(records[0], { row: '2', userPrincipalName: 'anna.berg@school.example', outcome: 'adopt (rule 2)', rule: '2', portalAccountId: ids.anna, suggestedAccountId: '' });
  t.match(records[4], { row: '6', outcome: 'admin collision (rule 3)', rule: '3', portalAccountId: ids.admin, portalAccountEmail: 'rektor@school.example' });
  t.match(records[5], {
    row: '7',
    displayName: 'Ek, Bo',
    outcome: 'create, probably same person',
    portalAccountId: '',
    suggestedAccountId: ids.bo,
    suggestedAccountUserName: 'bo@old.example',
    suggestedBecause: 'same name',
    note: /^New account, but probably the same person as bo@old\.example .*Give both the same e-mail in a verified domain before the first sync/,
  });
  t.match(records[7], {
    row: '9',
    suggestedAccountId: ids.erik,
    suggestedBecause: 'same address, same name',
    outsideVerifiedDomains: 'erik_partner.example#EXT#@school.onmicrosoft.example erik@partner.example',
    note: /verify that domain for the tenant/,
  });
  t.match(records[11], { row: '13', suggestedAccountId: ids.hanna, note: /Row 12 matches that account too/ });
  t.same(await snapshot(env.db), before, 'nothing was written');
});

t.test('the export with and without a byte order mark, with either header of Microsoft, and with extra columns reads the same', async (t) => {
  const env = await testApp(t);
  const ids = await seedAccounts(env.db, env.tenant.id);
  const reports: PreviewReport[] = [];
  for (const [name, content] of [
    ['documented header, no BOM', entraExport(USERS, { header: DOCUMENTED_HEADER })],
    ['documented header, BOM', entraExport(USERS, { header: DOCUMENTED_HEADER, bom: true })],
    ['newer header (id), BOM', entraExport(USERS, { header: NEWER_HEADER, bom: true })],
    ['the six columns only, in another order, LF line ends', entraExport(USERS, { header: ['mail', 'id', 'surname', 'givenName', 'displayName', 'userPrincipalName'] }).replace(/\r\n/g, '\n')],
  ] as const) {
    const result = await cli(env, 'preview', '--tenant', env.tenant.id, '--entra-users', await tempFile('users.csv', content), '--json');
    t.equal(result.code, 0, `${name}: ${result.err}`);
    const report = JSON.parse(result.out) as PreviewReport;
    t.equal(report.users[0]?.userPrincipalName, 'anna.berg@school.example', `${name}: the first user's name has no byte order mark`);
    reports.push(report);
  }
  checkRows(t, reports[0] as PreviewReport, ids);
  for (const report of reports.slice(1)) t.same(report, reports[0], 'the same report');
});

t.test('a file the preview cannot read is a clear error naming what is wrong, and nothing runs', async (t) => {
  const env = await testApp(t);
  await seedAccounts(env.db, env.tenant.id);
  const without = (column: string) => entraExport(USERS, { header: DOCUMENTED_HEADER.filter((c) => c !== column) });
  const cases: [string, string | Buffer, RegExp][] = [
    ['no mail column', without('mail'), /^portal-scim: The file lacks the column "mail"\. Use the file that "Download users" \(Entra admin center, Users > All users\) writes, as it is\.$/],
    ['no object id column', without('objectId'), /lacks the column "objectId" \(or "id"\)\./],
    ['neither names', entraExport(USERS, { header: ['userPrincipalName', 'mail', 'objectId'] }), /lacks the columns "displayName", "givenName" and "surname"\./],
    ['semicolons', 'userPrincipalName;displayName;surname;mail;givenName;objectId\r\na@school.example;A;B;a@school.example;A;1\r\n', /separated by semicolons/],
    ['Windows-1252', Buffer.from(`${DOCUMENTED_HEADER.join(',')}\r\n${'G\xf6ran@school.example,'.padEnd(30, ',')}\r\n`, 'latin1'), /not UTF-8 text/],
    ['UTF-16', Buffer.from(`\uFEFF${entraExport()}`, 'utf16le'), /UTF-16 text/],
    ['a row of another length', `${entraExport()}x@school.example,X\r\n`, /^portal-scim: Row 15 has 2 fields, the header 26: the file is not valid CSV\.$/],
    ['a quote never closed', `${entraExport()}"x@school.example,X\r\n`, /a quoted field is never closed/],
    ['a row without userPrincipalName', `${entraExport()},Nobody,,,,${'1'.repeat(8)}${','.repeat(20)}\r\n`, /^portal-scim: Row 15 has no userPrincipalName\.$/],
    ['a repeated user', entraExport([...USERS, { ...(USERS[0] as ExportUser), userPrincipalName: 'ANNA.BERG@school.example', objectId: 'x' }]), /Row 15 repeats the userPrincipalName of row 2\./],
    ['an empty file', '', /^portal-scim: The file is empty\./],
  ];
  const before = await snapshot(env.db);
  for (const [name, content, message] of cases) {
    const result = await cli(env, 'preview', '--tenant', env.tenant.id, '--entra-users', await tempFile('users.csv', content));
    t.equal(result.code, 1, `${name}: exit code 1`);
    t.match(result.err, message, `${name}: says why`);
    t.equal(result.out, '', `${name}: no report`);
  }
  const missing = await cli(env, 'preview', '--tenant', env.tenant.id, '--entra-users', '/nonexistent/users.csv');
  t.match(missing, { code: 1, err: /^portal-scim: Cannot read \/nonexistent\/users\.csv: no such file\.$/ });
  const unknown = await cli(env, 'preview', '--tenant', '6f1c1d9e-3a57-4d5e-9f0e-2b8f0c6a1d11', '--entra-users', await tempFile('users.csv', entraExport()));
  t.match(unknown, { code: 1, err: /^portal-scim: No tenant 6f1c1d9e-3a57-4d5e-9f0e-2b8f0c6a1d11\.$/ });
  const usage = await cli(env, 'preview', '--tenant', env.tenant.id);
  t.match(usage, { code: 1, err: /required option '--entra-users <file>' not specified\n\(see portal-scim preview --help\)/ });
  t.same(await snapshot(env.db), before, 'nothing was written');
});

t.test('POST /admin/tenants/{id}/preview: the same report for the uploaded export, as JSON or CSV; SCIM errors for what it cannot read; nothing written', async (t) => {
  const env = await testApp(t);
  const ids = await seedAccounts(env.db, env.tenant.id);
  const credential = await createAdminCredential(env.db, 'preview test', null);
  const authorization = `Bearer ${signAdminToken({ keys: env.keys, issuer: env.config.jwtIssuer, audience: env.config.jwtAudience }, credential.id)}`;
  const upload = (payload: string | Buffer, headers: Record<string, string> = {}, tenant = env.tenant.id) =>
    env.app.inject({ method: 'POST', url: `/admin/tenants/${tenant}/preview`, headers: { authorization, 'content-type': 'text/csv', ...headers }, payload });
  const before = await snapshot(env.db);

  const res = await upload(entraExport(USERS, { header: NEWER_HEADER, bom: true }));
  t.equal(res.statusCode, 200);
  t.match(res.headers['content-type'], /^application\/json/);
  checkRows(t, res.json<PreviewReport>(), ids);
  const cli = await runCli(['preview', '--tenant', env.tenant.id, '--entra-users', await tempFile('u.csv', entraExport()), '--json'], {
    out: (s) => t.same(JSON.parse(s), res.json(), 'the same report as the CLI'),
    err: (s) => t.fail(s),
    env: testEnv({ DATABASE_URL: env.database.url }),
  });
  t.equal(cli, 0);

  const csv = await upload(entraExport(), { accept: 'text/csv' });
  t.equal(csv.statusCode, 200);
  t.match(csv.headers['content-type'], /^text\/csv; charset=utf-8/);
  t.equal(csv.headers['content-disposition'], `attachment; filename="first-sync-preview-${env.tenant.id}.csv"`);
  const records = parse<Record<string, string>>(csv.rawPayload, { bom: true, columns: true });
  t.same(
    records.map((r) => [r.row, r.outcome, r.portalAccountId || r.suggestedAccountId]),
    [
      ['2', 'adopt (rule 2)', ids.anna],
      ['3', 'adopt (rule 2)', ids.cecilia],
      ['4', 'adopt (rule 8)', ids.reAdopted],
      ['5', 'already synced', ids.synced],
      ['6', 'admin collision (rule 3)', ids.admin],
      ['7', 'create, probably same person', ids.bo],
      ['8', 'create, probably same person', ids.david],
      ['9', 'create, probably same person', ids.erik],
      ['10', 'create', ''],
      ['11', 'create', ''],
      ['12', 'adopt (rule 2)', ids.hanna],
      ['13', 'create, probably same person', ids.hanna],
      ['14', 'create', ''],
    ],
    'each row with its outcome and account',
  );

  const scimError = (status: number, detail: RegExp, scimType?: string) => ({
    schemas: ['urn:ietf:params:scim:api:messages:2.0:Error'],
    status: String(status),
    ...(scimType ? { scimType } : {}),
    detail,
  });
  const missing = await upload(entraExport(USERS, { header: DOCUMENTED_HEADER.filter((c) => c !== 'surname') }));
  t.equal(missing.statusCode, 400);
  t.match(missing.headers['content-type'], /^application\/scim\+json/);
  t.match(missing.json(), scimError(400, /^The file lacks the column "surname"\./, 'invalidValue'));
  const json = await upload(JSON.stringify({ users: [] }), { 'content-type': 'application/json' });
  t.equal(json.statusCode, 415);
  t.match(json.json(), scimError(415, /as the body, with Content-Type: text\/csv/));
  const empty = await env.app.inject({ method: 'POST', url: `/admin/tenants/${env.tenant.id}/preview`, headers: { authorization } });
  t.equal(empty.statusCode, 400, 'no body');
  t.match(empty.json(), scimError(400, /with Content-Type: text\/csv/, 'invalidValue'));
  const unknown = await upload(entraExport(), {}, '6f1c1d9e-3a57-4d5e-9f0e-2b8f0c6a1d11');
  t.equal(unknown.statusCode, 404);
  const noToken = await upload(entraExport(), { authorization: '' });
  t.equal(noToken.statusCode, 401);
  const scimToken = await upload(entraExport(), { authorization: `Bearer ${env.token}` });
  t.equal(scimToken.statusCode, 401, "a tenant's SCIM token does not open it");
  t.same(await snapshot(env.db), before, 'nothing was written');
});

/** Sends a user to the server as Entra's provisioning does: its lookup by userName, then the create. */
async function provision(send: ReturnType<typeof client>, user: ExportUser): Promise<{ outcome: string; id?: string | undefined }> {
  const lookup = await send('GET', `/Users?filter=${encodeURIComponent(`userName eq "${user.userPrincipalName}"`)}`);
  const found = lookup.json<{ totalResults: number; Resources: { id: string }[] }>();
  if (found.totalResults > 0) return { outcome: 'already-synced', id: found.Resources[0]?.id };
  const created = await send('POST', '/Users', {
    schemas: [USER],
    externalId: user.objectId,
    userName: user.userPrincipalName,
    active: true,
    displayName: user.displayName,
    name: { givenName: user.givenName, familyName: user.surname },
    ...(user.mail !== '' ? { emails: [{ type: 'work', value: user.mail, primary: true }] } : {}),
  });
  if (created.statusCode === 409) return { outcome: 'refused' };
  if (created.statusCode !== 201) throw new Error(`create answered ${created.statusCode}: ${created.body}`);
  return { outcome: 'written', id: created.json<{ id: string }>().id };
}

t.test('sent the same users as Entra sends them, in the same order, the server does what the preview said', async (t) => {
  const env = await testApp(t);
  const ids = await seedAccounts(env.db, env.tenant.id);
  const existing = new Set(Object.values(ids));
  const file = await tempFile('users.csv', entraExport());
  const result = await cli(env, 'preview', '--tenant', env.tenant.id, '--entra-users', file, '--json');
  const report = JSON.parse(result.out) as PreviewReport;

  const send = client(env.app, env.headers);
  for (const [i, user] of USERS.entries()) {
    const previewed = report.users[i];
    const done = await provision(send, user);
    const label = `row ${i + 2} (${user.userPrincipalName}): ${previewed?.outcome ?? '?'}`;
    switch (previewed?.outcome) {
      case 'already-synced':
        t.same(done, { outcome: 'already-synced', id: previewed.account?.id }, label);
        break;
      case 'adopt':
        t.same(done, { outcome: 'written', id: previewed.account?.id }, `${label}: the server adopted the account the preview named`);
        break;
      case 'create':
        t.equal(done.outcome, 'written', label);
        t.notOk(existing.has(done.id ?? ''), `${label}: a new account`);
        break;
      case 'admin-collision':
        t.same(done, { outcome: 'refused' }, `${label}: 409`);
        break;
      default:
        t.fail(label);
    }
  }
  const again = JSON.parse((await cli(env, 'preview', '--tenant', env.tenant.id, '--entra-users', file, '--json')).out) as PreviewReport;
  t.same(
    again.users.map((u) => [u.row, u.outcome, u.matchedBy]),
    USERS.map((_, i) => (i + 2 === 6 ? [6, 'admin-collision', undefined] : [i + 2, 'already-synced', 'externalId'])),
    'a run after the first sync: every user synced is found by its object id, and the admin collision stays',
  );
  const adopted = await env.db.selectFrom('audit_events').select(['object_id', sql<string>`details->>'matchedBy'`.as('matched_by')]).where('action', '=', 'adopt').orderBy('id').execute();
  t.same(
    adopted.map((a) => [a.object_id, a.matched_by]),
    [
      [ids.anna, 'address'],
      [ids.cecilia, 'address'],
      [ids.reAdopted, 'externalId'],
      [ids.hanna, 'address'],
    ],
    'the audit log records the adoptions the preview announced, by the rules it named',
  );
});

t.test('a user the server would refuse as invalid, and one synced under its userName by another object id, are told apart', async (t) => {
  const env = await testApp(t);
  const renamed = await env.db
    .insertInto('accounts')
    .values({ tenant_id: env.tenant.id, managed_by: 'sync', user_name: 'Moved@School.example', external_id: 'an-older-object', scim: '{}' })
    .returning('id')
    .executeTakeFirstOrThrow();
  const users: ExportUser[] = [
    { userPrincipalName: 'long@school.example', displayName: 'x'.repeat(600), givenName: 'Long', surname: 'Name', mail: 'long@school.example', objectId: 'obj-long' },
    { userPrincipalName: 'moved@school.example', displayName: 'Moved', givenName: 'Mo', surname: 'Ved', mail: '', objectId: 'obj-moved' },
  ];
  const result = await cli(env, 'preview', '--tenant', env.tenant.id, '--entra-users', await tempFile('users.csv', entraExport(users)), '--json');
  const report = JSON.parse(result.out) as PreviewReport;
  t.match(report.users[0], { outcome: 'invalid', problem: 'displayName is too long: 600 characters, the limit is 512.' });
  t.match(report.users[1], { outcome: 'already-synced', matchedBy: 'userName', account: { id: renamed.id } }, "Entra's lookup by userName finds it, in any case");
  t.match(report.totals, { users: 2, invalid: 1, alreadySynced: 1 });

  const send = client(env.app, env.headers);
  t.same(await provision(send, users[1] as ExportUser), { outcome: 'already-synced', id: renamed.id });
  const refused = await send('POST', '/Users', { schemas: [USER], userName: 'long@school.example', displayName: 'x'.repeat(600) });
  t.equal(refused.statusCode, 400, 'the server refuses it as the preview said');
  t.match(refused.json(), { scimType: 'invalidValue', detail: 'displayName is too long: 600 characters, the limit is 512.' });
});
