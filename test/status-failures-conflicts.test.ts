// The tenant page in a real browser (headless Chromium) for what an operator
// acts on: failed writes grouped by message with counts, the latest objects
// and the latest detail as Entra received it; open conflicts with their
// sightings, each with a form to resolve or dismiss it with a note; and
// recently closed ones, whether the write later succeeded or the team closed
// them. The forms carry a token bound to the session: a form posted from
// another origin of the same site (which SameSite=Strict lets the cookie
// ride along with) is refused and closes nothing.
import { createServer } from 'node:http';
import { readFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { chromium, type Page } from 'playwright-core';
import t, { type Test } from 'tap';
import { signAdminToken } from '../src/auth/tokens.js';
import { createAdminCredential } from '../src/db/admin-credentials.js';
import { testApp, type TestApp } from './helpers/app.js';
import { entraUser } from './helpers/scim.js';

const BEFORE = path.join(os.tmpdir(), 'portal-scim-status-failures-conflicts.png');
const AFTER = path.join(os.tmpdir(), 'portal-scim-status-conflicts-closed.png');

/** What the checks read of a row in the page (the tests compile without the DOM's types). */
interface Row {
  getAttribute(name: string): string | null;
}

async function screenshot(page: Page, file: string, t: Test): Promise<void> {
  await page.screenshot({ path: file, fullPage: true });
  const png = await readFile(file);
  t.same([...png.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a], `a PNG screenshot at ${file}`);
}

async function conflictOf(env: TestApp, ref: string) {
  return env.db.selectFrom('sync_conflicts').selectAll().where('tenant_id', '=', env.tenant.id).where('object_ref', '=', ref).orderBy('at', 'desc').executeTakeFirstOrThrow();
}

t.test('tenant page: failures by message, the conflicts with their life, and closing one by a form protected against cross-site posts', async (t) => {
  const env = await testApp(t);
  const tenant = env.tenant.id;
  const credential = await createAdminCredential(env.db, 'conflicts page test', null);
  const adminToken = signAdminToken({ keys: env.keys, issuer: env.config.jwtIssuer, audience: env.config.jwtAudience }, credential.id);
  const base = await env.app.listen({ port: 0, host: '127.0.0.1' });
  const scim = (method: string, url: string, body: unknown) => fetch(`${base}/scim/v2${url}`, { method, headers: env.headers, body: JSON.stringify(body) });

  // Portal admins in the way of Entra's users 2, 3 and 4 (rule 3).
  const heads = new Map<number, string>();
  for (const n of [2, 3, 4]) {
    const row = await env.db
      .insertInto('accounts')
      .values({ tenant_id: tenant, managed_by: 'manual', role: 'admin', user_name: `head${n}`, email: `pupil${n}@school.example`, scim: '{}' })
      .returning('id')
      .executeTakeFirstOrThrow();
    heads.set(n, row.id);
  }
  t.equal((await scim('POST', '/Users', entraUser(1))).status, 201);
  for (const n of [2, 3, 4, 2]) t.equal((await scim('POST', '/Users', entraUser(n))).status, 409, `user ${n} is refused`);
  // Failed writes: Entra retries a duplicate userName three times; one user has none.
  for (const n of [11, 12, 11]) t.equal((await scim('POST', '/Users', entraUser(n, { userName: 'Pupil1@School.example' }))).status, 409);
  t.equal((await scim('POST', '/Users', { ...entraUser(13), userName: '' })).status, 400);

  const browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  t.teardown(() => browser.close());
  const context = await browser.newContext({ viewport: { width: 1500, height: 1000 } });
  const page = await context.newPage();
  const problems: string[] = [];
  page.on('console', (message) => {
    // The browser's favicon requests and the refused post answer 4xx; anything else (a CSP violation) is not expected.
    if (message.type() === 'error' && !message.text().startsWith('Failed to load resource')) problems.push(message.text());
  });

  t.equal((await page.goto(`${base}/status/tenants/${tenant}`))?.status(), 401);
  await page.fill('input[name=token]', adminToken);
  await Promise.all([page.waitForURL(`${base}/status/tenants/${tenant}`), page.click('button[type=submit]')]);

  // Failures by message, largest first.
  const failures = await page.locator('#failures + table tbody tr').evaluateAll((trs: { querySelectorAll(s: string): Iterable<{ textContent: string | null }> }[]) =>
    trs.map((tr) => [...tr.querySelectorAll('td')].map((td) => td.textContent ?? '')),
  );
  t.equal(failures.length, 2, 'two kinds of failure');
  t.same(failures[0]?.slice(0, 3), ['3', '409 uniqueness', 'A user with userName "…" already exists (userName is unique in any case).']);
  t.match(failures[0]?.[4], /^Pupil1@School\.example$/, 'the latest objects: the one userName all three retries sent');
  t.equal(failures[0]?.[5], 'A user with userName "Pupil1@School.example" already exists (userName is unique in any case).', 'the latest detail as Entra received it');
  t.same(failures[1]?.slice(0, 3), ['1', '400 invalidValue', 'userName is required and must not be empty.']);
  t.equal(failures[1]?.[4], '00000000-0000-4000-8000-000000000013', 'an object without a userName is named by its externalId');

  // Open conflicts, each with its form.
  const two = await conflictOf(env, 'Pupil2@School.example');
  const three = await conflictOf(env, 'Pupil3@School.example');
  const four = await conflictOf(env, 'Pupil4@School.example');
  const openIds = async () => (await page.locator('#conflicts + table tbody tr[data-conflict]').evaluateAll((trs: Row[]) => trs.map((tr) => tr.getAttribute('data-conflict')))).sort();
  t.same(await openIds(), [two.id, three.id, four.id].sort(), 'three open conflicts');
  const twoCells = await page.locator(`#conflicts + table tr[data-conflict="${two.id}"] td`).allInnerTexts();
  t.equal(twoCells[2], '2', "user 2's conflict was seen twice");
  t.equal(twoCells[5], 'Pupil2@School.example');
  t.equal(twoCells[6]?.trim(), '00000000-0000-4000-8000-000000000002', 'the Entra object it refused');
  t.ok((await page.locator(`tr[data-conflict="${two.id}"] input[name=csrf]`).inputValue()).length > 20, 'its form carries the session form token');
  t.equal(await page.locator('#closed-conflicts + table tbody tr').innerText(), 'None closed yet.');
  await screenshot(page, BEFORE, t);

  // Closed by success: user 2's admin gets another address; Entra's next retry succeeds.
  await env.db.updateTable('accounts').set({ email: 'head2@school.example' }).where('id', '=', heads.get(2) ?? '').execute();
  t.equal((await scim('POST', '/Users', entraUser(2))).status, 201);

  // A form on another origin of the same site posts to user 4's conflict: the cookie rides along, the token does not.
  const target = `${base}/status/tenants/${tenant}/conflicts/${four.id}`;
  const evil = createServer((_request, response) => {
    response.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    response.end(`<!doctype html><title>Prize</title>
<form id="plain" method="post" action="${target}"><input type="hidden" name="action" value="dismiss"><button id="no-token">Win</button></form>
<form id="forged" method="post" action="${target}"><input type="hidden" name="action" value="dismiss"><input type="hidden" name="csrf" value="forged-token-forged-token-forged-token-xx"><button id="forged-token">Win again</button></form>`);
  });
  await new Promise<void>((resolve) => evil.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => evil.close(() => resolve())));
  const evilUrl = `http://127.0.0.1:${(evil.address() as { port: number }).port}/`;
  for (const button of ['#no-token', '#forged-token']) {
    await page.goto(evilUrl);
    const [refused] = await Promise.all([page.waitForResponse((r) => r.url() === target), page.click(button)]);
    t.equal(refused.status(), 403, `the post without the session's token is refused (${button})`);
    t.match(await page.locator('main').innerText(), /did not come from a page of this session/, 'the session was seen (no sign-in form): the token is what refused it');
  }
  t.match(await conflictOf(env, 'Pupil4@School.example'), { id: four.id, resolution: null }, 'nothing was closed');

  // The team resolves user 3's conflict with a note and dismisses user 4's, from the page.
  await page.goto(`${base}/status/tenants/${tenant}`);
  await page.fill(`tr[data-conflict="${three.id}"] input[name=note]`, 'Head 3 got a new <address> & "name"');
  await Promise.all([page.waitForURL(`${base}/status/tenants/${tenant}#conflicts`), page.click(`tr[data-conflict="${three.id}"] button[value=resolve]`)]);
  await Promise.all([page.waitForURL(`${base}/status/tenants/${tenant}#conflicts`), page.click(`tr[data-conflict="${four.id}"] button[value=dismiss]`)]);

  t.same(await openIds(), [], 'no conflict is open any more');
  t.equal(await page.locator('#conflicts + table tbody tr').innerText(), 'No open conflicts.');
  const closed = await page.locator('#closed-conflicts + table tbody tr').evaluateAll((trs: (Row & { innerText: string })[]) =>
    trs.map((tr) => [tr.getAttribute('data-conflict'), tr.getAttribute('data-resolution'), tr.innerText]),
  );
  const byId = new Map(closed.map(([id, resolution, text]) => [id, { resolution, text }]));
  t.match(byId.get(two.id), { resolution: 'succeeded', text: /closed: the write succeeded\tadmin-collision\tPupil2@School\.example\t2/ });
  t.match(byId.get(three.id), { resolution: 'resolved', text: /resolved\tadmin-collision\tPupil3@School\.example\t1\tHead 3 got a new <address> & "name"/ });
  t.match(byId.get(four.id), { resolution: 'dismissed', text: /dismissed\tadmin-collision\tPupil4@School\.example\t1\t?$/ });
  t.match(await conflictOf(env, 'Pupil3@School.example'), { resolution: 'resolved', note: 'Head 3 got a new <address> & "name"' });
  t.match(await conflictOf(env, 'Pupil4@School.example'), { resolution: 'dismissed', note: null });
  const events = await env.db
    .selectFrom('audit_events')
    .select(['object_ref', 'details'])
    .where('tenant_id', '=', tenant)
    .where('action', '=', 'conflict-closed')
    .orderBy('id')
    .execute();
  t.same(
    events.map((e) => [e.object_ref, e.details.resolution, e.details.via ?? null, e.details.adminCredentialId ?? null]),
    [
      ['Pupil2@School.example', 'succeeded', null, null],
      ['Pupil3@School.example', 'resolved', 'status-page', credential.id],
      ['Pupil4@School.example', 'dismissed', 'status-page', credential.id],
    ],
    'each closing is an audit event; the page names the admin credential that signed in',
  );
  const auditActions = await page.locator('#audit + table tbody tr').evaluateAll((trs: { innerText: string }[]) => trs.map((tr) => tr.innerText.split('\t')[1]));
  t.same(auditActions.slice(0, 3), ['conflict-closed', 'conflict-closed', 'create'], 'the audit table shows the steps, newest first');
  t.equal(await page.locator('script').count(), 0, 'no script, not even from a note');
  await screenshot(page, AFTER, t);

  // An Authorization header cannot come from another site's form: with it, a post needs no form token.
  await env.db.updateTable('accounts').set({ email: 'pupil9@school.example' }).where('id', '=', heads.get(4) ?? '').execute();
  t.equal((await scim('POST', '/Users', entraUser(9))).status, 409);
  const nine = await conflictOf(env, 'Pupil9@School.example');
  const byHeader = await fetch(`${base}/status/tenants/${tenant}/conflicts/${nine.id}`, {
    method: 'POST',
    headers: { authorization: `Bearer ${adminToken}`, 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ action: 'resolve' }).toString(),
    redirect: 'manual',
  });
  t.equal(byHeader.status, 303);
  t.match(await conflictOf(env, 'Pupil9@School.example'), { resolution: 'resolved' });
  const signedOut = await fetch(`${base}/status/tenants/${tenant}/conflicts/${nine.id}`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ action: 'resolve' }).toString(),
  });
  t.equal(signedOut.status, 401, 'signed out: the sign-in form');
  t.same(problems, [], 'no console errors');
});
