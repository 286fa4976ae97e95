// The first-sync preview page in a real browser (headless Chromium): linked
// from the tenant's status page, an upload form for Entra's export, the
// report with its totals and the users that need a look first, the same
// report as a CSV download, the upload form again with the reason for a file
// it cannot read; a post from another site or without the form's token is
// refused; nothing is written.
import { readFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parse } from 'csv-parse/sync';
import { chromium } from 'playwright-core';
import t from 'tap';
import { signAdminToken } from '../src/auth/tokens.js';
import { createAdminCredential } from '../src/db/admin-credentials.js';
import { testApp } from './helpers/app.js';
import { DOCUMENTED_HEADER, USERS, entraExport, seedAccounts, snapshot } from './helpers/entra-export.js';

const SCREENSHOT = path.join(os.tmpdir(), 'portal-scim-preview.png');

interface Row {
  getAttribute(name: string): string | null;
}

t.test('the first-sync preview page: upload, report, CSV download, errors; cross-site posts refused; nothing written', async (t) => {
  const env = await testApp(t);
  const tenant = env.tenant.id;
  const ids = await seedAccounts(env.db, tenant);
  const credential = await createAdminCredential(env.db, 'preview page test', null);
  const adminToken = signAdminToken({ keys: env.keys, issuer: env.config.jwtIssuer, audience: env.config.jwtAudience }, credential.id);
  const base = await env.app.listen({ port: 0, host: '127.0.0.1' });
  const before = await snapshot(env.db);

  const browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  t.teardown(() => browser.close());
  const context = await browser.newContext({ viewport: { width: 1400, height: 900 }, acceptDownloads: true });
  const page = await context.newPage();
  const problems: string[] = [];
  page.on('console', (message) => {
    // The 401 of the sign-in and the 400 asked for below are expected; anything else (a CSP violation) is not.
    if (message.type() === 'error' && !message.text().startsWith('Failed to load resource')) problems.push(message.text());
  });

  // Signed out, the preview page asks for the sign-in and comes back to it.
  t.equal((await page.goto(`${base}/status/tenants/${tenant}/preview`))?.status(), 401);
  t.equal(await page.locator('input[name=next]').inputValue(), `/status/tenants/${tenant}/preview`);
  await page.fill('input[name=token]', adminToken);
  await Promise.all([page.waitForURL(`${base}/status/tenants/${tenant}/preview`), page.click('button[type=submit]')]);

  // The tenant page links to it.
  await page.goto(`${base}/status/tenants/${tenant}`);
  await Promise.all([page.waitForURL(`${base}/status/tenants/${tenant}/preview`), page.click('a#preview')]);
  t.equal(await page.locator('h2').first().innerText(), 'First-sync preview: Test School');
  const csrf = await page.locator('form.upload input[name=csrf]').inputValue();
  t.match(csrf, /^[\w-]{43}$/, 'the form carries a token tied to the session');

  await page.setInputFiles('#file', { name: 'users.csv', mimeType: 'text/csv', buffer: Buffer.from(entraExport(USERS, { bom: true })) });
  const [shown] = await Promise.all([page.waitForResponse((r) => r.request().method() === 'POST'), page.click('button[value=html]')]);
  t.equal(shown.status(), 200);
  await page.waitForSelector('#totals');
  const totals = await page.locator('#totals tr').evaluateAll((trs: Row[]) => trs.map((tr) => tr.getAttribute('data-total')));
  t.same(totals, ['users', 'alreadySynced', 'adoptByExternalId', 'adoptByAddress', 'create', 'probableMatches', 'adminCollisions', 'invalid', 'outsideVerifiedDomains']);
  t.same(await page.locator('#totals td').allInnerTexts(), ['13', '1', '1', '3', '7', '4', '1', '0', '1'], 'the totals of each outcome');
  const rows = await page.locator('#users tbody tr').evaluateAll((trs: Row[]) => trs.map((tr) => [tr.getAttribute('data-row'), tr.getAttribute('data-outcome')]));
  t.same(
    rows,
    [
      ['6', 'admin-collision'],
      ['7', 'create'],
      ['8', 'create'],
      ['9', 'create'],
      ['12', 'adopt'],
      ['13', 'create'],
      ['10', 'create'],
      ['11', 'create'],
      ['14', 'create'],
      ['2', 'adopt'],
      ['3', 'adopt'],
      ['4', 'adopt'],
      ['5', 'already-synced'],
    ],
    'every user, those that need a look first: refused, then probably the same person as an existing account, or taking an account another row would take if Entra sent it first (row 12)',
  );
  const cells = (row: number) => page.locator(`#users tr[data-row="${row}"] td`).allInnerTexts();
  const bo = await cells(7);
  t.same(bo.slice(0, 5), ['7', 'bo.ek@school.example', 'bo.ek@school.example', 'Ek, Bo', 'create, probably same person']);
  t.match(bo[5], new RegExp(`^bo@old\\.example\\s+${ids.bo}$`), 'the existing account, by userName and id');
  t.match(bo[6], /probably the same person as bo@old\.example .*: same name\. Give both the same e-mail/);
  t.match((await cells(6))[6], /^Refused: the address belongs to the portal admin head@school\.example/);
  t.match((await cells(2))[4], 'adopt (rule 2)');
  t.match((await cells(4))[4], 'adopt (rule 8)');
  t.equal(await page.locator('script').count(), 0, 'no script');
  await page.screenshot({ path: SCREENSHOT, fullPage: true });
  const png = await readFile(SCREENSHOT);
  t.same([...png.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a], `a PNG screenshot at ${SCREENSHOT}`);

  // The report page offers the form again: this time as CSV.
  await page.setInputFiles('#file', { name: 'users.csv', mimeType: 'text/csv', buffer: Buffer.from(entraExport()) });
  const [download] = await Promise.all([page.waitForEvent('download'), page.click('button[value=csv]')]);
  t.equal(download.suggestedFilename(), `first-sync-preview-${tenant}.csv`);
  const records = parse<Record<string, string>>(await readFile(await download.path()), { bom: true, columns: true });
  t.same(
    records.map((r) => [r.row, r.outcome]),
    USERS.map((_, i) => [String(i + 2), expectedOutcome(i + 2)]),
    'one row per user, in file order',
  );
  t.match(records[5], { row: '7', suggestedAccountId: ids.bo });

  // A file it cannot read: the form again, with the reason.
  await page.goto(`${base}/status/tenants/${tenant}/preview`);
  await page.setInputFiles('#file', { name: 'users.csv', mimeType: 'text/csv', buffer: Buffer.from(entraExport(USERS, { header: DOCUMENTED_HEADER.filter((c) => c !== 'mail') })) });
  const [refused] = await Promise.all([page.waitForResponse((r) => r.request().method() === 'POST'), page.click('button[value=html]')]);
  t.equal(refused.status(), 400);
  await page.waitForSelector('[role=alert]');
  t.match(await page.locator('[role=alert]').innerText(), /^The file lacks the column "mail"\./);
  t.equal(await page.locator('form.upload #file').count(), 1, 'with the form to try again');

  // Posts that did not come from the form: another site, or no token.
  const [cookie] = await context.cookies(`${base}/status`);
  const post = (headers: Record<string, string>, fields: Record<string, string>) => {
    const form = new FormData();
    for (const [name, value] of Object.entries(fields)) form.append(name, value);
    form.append('file', new Blob([entraExport()], { type: 'text/csv' }), 'users.csv');
    return fetch(`${base}/status/tenants/${tenant}/preview`, { method: 'POST', headers, body: form, redirect: 'manual' });
  };
  const session = { cookie: `${cookie?.name}=${cookie?.value}` };
  for (const [label, headers, fields] of [
    ['from another origin', { ...session, origin: 'https://attacker.example' }, { csrf }],
    ['from another site, by Fetch Metadata', { ...session, 'sec-fetch-site': 'cross-site' }, { csrf }],
    ['without the token', session, {}],
    ['with another token', session, { csrf: 'x'.repeat(43) }],
  ] as const) {
    const res = await post(headers, fields);
    t.equal(res.status, 403, `refused ${label}`);
    t.notMatch(await res.text(), /bo@old\.example/, `no report ${label}`);
  }
  const same = await post({ ...session, origin: base, 'sec-fetch-site': 'same-origin' }, { csrf });
  t.equal(same.status, 200, 'the same post from the page itself is answered');
  const bearer = await post({ authorization: `Bearer ${adminToken}` }, {});
  t.equal(bearer.status, 200, 'a script with the admin token in its Authorization header needs no form token');
  t.equal((await post({}, { csrf })).status, 401, 'signed out: the sign-in form');
  // A form cut off in the middle of the file: a 400 that says so, not a 500.
  const cut = await fetch(`${base}/status/tenants/${tenant}/preview`, {
    method: 'POST',
    headers: { authorization: `Bearer ${adminToken}`, 'content-type': 'multipart/form-data; boundary=XX' },
    body: '--XX\r\nContent-Disposition: form-data; name="file"; filename="a.csv"\r\n\r\nabc',
  });
  t.equal(cut.status, 400);
  t.match(await cut.text(), /The upload was cut off or is not the preview form/);

  t.same(problems, [], 'no console errors (such as Content-Security-Policy violations)');
  t.same(await snapshot(env.db), before, 'nothing was written');
});

function expectedOutcome(row: number): string {
  return (
    {
      2: 'adopt (rule 2)',
      3: 'adopt (rule 2)',
      4: 'adopt (rule 8)',
      5: 'already synced',
      6: 'admin collision (rule 3)',
      7: 'create, probably same person',
      8: 'create, probably same person',
      9: 'create, probably same person',
      12: 'adopt (rule 2)',
      13: 'create, probably same person',
    }[row] ?? 'create'
  );
}
