// The status pages in a real browser (headless Chromium): signed out they
// answer 401 with the sign-in form; an admin token signs in through the form
// and sets a session cookie; the overview shows each tenant's health, worst
// first, and its conflicts; the tenant page its health, credentials with their
// state and flags, conflicts, audit events and traffic; every value is escaped
// and the Content-Security-Policy lets the page's own stylesheet apply.
import { readFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { chromium, type Page } from 'playwright-core';
import t, { type Test } from 'tap';
import { signAdminToken } from '../src/auth/tokens.js';
import { createAdminCredential } from '../src/db/admin-credentials.js';
import { createCredential } from '../src/db/credentials.js';
import { tenantWithToken, testApp } from './helpers/app.js';
import { GROUP, USER, entraUser } from './helpers/scim.js';

const SCREENSHOT = path.join(os.tmpdir(), 'portal-scim-status-tenant.png');
const SCHOOL_NAME = `<script>alert("x")</script> Norra & "Söder" skolan`;

t.test('status pages: sign-in, tenant overview with a conflict, tenant page, sign-out', async (t) => {
  const env = await testApp(t);
  const tenant = env.tenant.id;
  await env.db.updateTable('tenants').set({ name: SCHOOL_NAME }).where('id', '=', tenant).execute();
  const credential = await createAdminCredential(env.db, 'status test', null);
  const adminToken = signAdminToken({ keys: env.keys, issuer: env.config.jwtIssuer, audience: env.config.jwtAudience }, credential.id);
  const base = await env.app.listen({ port: 0, host: '127.0.0.1' });

  // Provision through the real SCIM HTTP API; user 2 collides with a portal admin (rule 3).
  await env.db
    .insertInto('accounts')
    .values({ tenant_id: tenant, managed_by: 'manual', role: 'admin', user_name: 'head', email: 'pupil2@school.example', scim: '{}' })
    .execute();
  const scim = (method: string, url: string, body: unknown) =>
    fetch(`${base}/scim/v2${url}`, { method, headers: env.headers, body: JSON.stringify(body) });
  const created = await scim('POST', '/Users', entraUser(1));
  t.equal(created.status, 201);
  const userId = ((await created.json()) as { id: string }).id;
  t.equal((await scim('POST', '/Users', entraUser(2))).status, 409, 'the admin collision is refused');
  t.equal((await scim('POST', '/Users', entraUser(3))).status, 201);
  t.equal((await scim('POST', '/Groups', { schemas: [GROUP], displayName: '7A <b>', members: [{ value: userId }] })).status, 201);

  // Signed out: 401 with the sign-in form, for people and for scripts.
  for (const url of ['/status', `/status/tenants/${tenant}`]) {
    const res = await fetch(`${base}${url}`, { redirect: 'manual' });
    t.equal(res.status, 401, `${url} signed out`);
    t.match(res.headers.get('content-type'), /^text\/html/);
    t.match(res.headers.get('www-authenticate'), /portal-scim-admin/);
    const body = await res.text();
    t.match(body, /<form class="signin" method="post" action="\/status\/session">/, `${url} shows the sign-in form`);
    t.notMatch(body, /Norra/, `${url} shows no tenant data`);
  }
  t.equal((await fetch(`${base}/status`, { headers: { authorization: `Bearer ${env.token}` } })).status, 401, "a tenant's SCIM token does not open the pages");
  const withHeader = await fetch(`${base}/status`, { headers: { authorization: `Bearer ${adminToken}` } });
  t.equal(withHeader.status, 200, 'the admin token in the Authorization header opens them');
  const csp = withHeader.headers.get('content-security-policy') ?? '';
  t.match(csp, /default-src 'none'/);
  t.match(csp, /style-src 'sha256-[\w+/=]+'/);
  t.notMatch(csp, /unsafe-inline|script-src/, 'no inline code allowed, no script needed');
  t.equal(withHeader.headers.get('cache-control'), 'no-store');
  const wrong = await fetch(`${base}/status/session`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ token: env.token, next: '/status' }).toString(),
    redirect: 'manual',
  });
  t.equal(wrong.status, 401, 'a SCIM token does not sign in');
  t.equal(wrong.headers.get('set-cookie'), null, 'and sets no cookie');
  t.match(await wrong.text(), /not an admin token/);

  const browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  t.teardown(() => browser.close());
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  const problems: string[] = [];
  page.on('console', (message) => {
    // The 401s and the 404 asked for below are expected; anything else (such as a
    // Content-Security-Policy violation) is not.
    if (message.type() === 'error' && !message.text().startsWith('Failed to load resource')) problems.push(message.text());
  });
  page.on('dialog', (dialog) => {
    problems.push(`dialog: ${dialog.message()}`);
    void dialog.dismiss();
  });

  const signedOut = await page.goto(`${base}/status`);
  t.equal(signedOut?.status(), 401);
  await page.fill('input[name=token]', adminToken);
  await Promise.all([page.waitForURL(`${base}/status`), page.click('button[type=submit]')]);
  t.ok(await page.isVisible('text=Sign out'), 'signed in');

  const [cookie, ...otherCookies] = await context.cookies(`${base}/status`);
  t.same(otherCookies, [], 'one cookie');
  t.match(cookie, { name: 'portal_scim_status', path: '/status', httpOnly: true, sameSite: 'Strict', secure: true });
  t.not(cookie?.value, adminToken, 'the cookie holds a session, not the admin token');
  const lifetime = (cookie?.expires ?? 0) - Date.now() / 1000;
  t.ok(lifetime > 0 && lifetime <= 8 * 3600 + 60, 'the session ends within 8 hours');

  const row = page.locator(`tr[data-tenant="${tenant}"]`);
  const cells = await row.locator('td').allInnerTexts();
  t.equal(cells[0], SCHOOL_NAME, 'the school name shows as text, escaped');
  t.same(cells.slice(1, 4), [tenant, 'school.example', 'failing'], 'its id, verified domains and health: one of four writes failed in the last hour');
  t.same(cells.slice(5), ['4', '1', '0', '1', '1'], 'writes and failed writes of the hour, failures and conflicts of 24 h, open conflicts');
  t.equal(await row.locator('td.warn').count(), 3, 'the failed write and the conflicts are flagged');
  t.equal(await page.locator('script').count(), 0, 'no script element, not even the school name');
  t.equal(
    await page.evaluate<string>('getComputedStyle(document.querySelector("th")).backgroundColor'),
    'rgb(246, 248, 250)',
    'the stylesheet applies under the Content-Security-Policy',
  );
  const traffic = await chartTotals(page);
  t.same(traffic, { requests: 4, failures: 1 }, 'the chart counts the SCIM requests of the last hours');

  await Promise.all([page.waitForURL(`${base}/status/tenants/${tenant}`), row.locator('a').click()]);
  t.equal(await page.locator('h2').first().innerText(), SCHOOL_NAME);
  t.same(
    await page.locator('#summary tbody td').allInnerTexts(),
    ['2', '0', '1', '1', '4', '1', '0', '1', '1'],
    'accounts, deleted, classes, memberships, writes and failed writes of the hour, failures and conflicts of 24 h, open conflicts',
  );
  t.match(await page.locator('#health').innerText(), /^failing 1 of 4 writes failed in the last hour/);
  const conflicts = await page.locator('#conflicts + table tbody tr').allInnerTexts();
  t.equal(conflicts.length, 1, 'one open conflict');
  t.match(conflicts[0], /admin-collision/);
  t.match(conflicts[0], /Pupil2@School\.example/);
  const events = await page.locator('#audit + table tbody tr').allInnerTexts();
  const actions = events.map((e) => e.split('\t')[1]);
  t.same(actions, ['create', 'create', 'conflict', 'create'], 'the audit events, newest first');
  t.match(events[0], /7A <b>/, 'the class name shows as text');
  t.match(events[2], /conflict\tuser\tPupil2@School\.example\tconflict/);
  t.same(await chartTotals(page), { requests: 4, failures: 1 });

  await page.screenshot({ path: SCREENSHOT, fullPage: true });
  const png = await readFile(SCREENSHOT);
  t.ok(png.length > 1000, `a screenshot at ${SCREENSHOT}`);
  t.same([...png.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a], 'it is a PNG');

  // Sign out clears the session; a page asked for afterwards shows the form,
  // and signing in there leads back to it.
  await Promise.all([page.waitForURL(`${base}/status`), page.click('text=Sign out')]);
  t.same(await context.cookies(`${base}/status`), [], 'the cookie is gone');
  const again = await page.goto(`${base}/status/tenants/${tenant}`);
  t.equal(again?.status(), 401);
  t.equal(await page.locator('input[name=next]').inputValue(), `/status/tenants/${tenant}`);
  await page.fill('input[name=token]', adminToken);
  await Promise.all([page.waitForURL(`${base}/status/tenants/${tenant}`), page.click('button[type=submit]')]);
  t.equal(await page.locator('#conflicts + table tbody tr').count(), 1, 'back on the tenant page after signing in');

  const unknown = await page.goto(`${base}/status/tenants/6f1c1d9e-3a57-4d5e-9f0e-2b8f0c6a1d11`);
  t.equal(unknown?.status(), 404);
  t.same(problems, [], 'no console errors (such as Content-Security-Policy violations) and no dialogs');
});

async function chartTotals(page: Page): Promise<{ requests: number; failures: number }> {
  const bars = await page.locator('svg g[data-hour]').evaluateAll((groups) =>
    groups.map((g) => ({ requests: Number(g.getAttribute('data-requests')), failures: Number(g.getAttribute('data-failures')) })),
  );
  if (bars.length !== 24) throw new Error(`expected 24 hourly bars, found ${bars.length}`);
  return bars.reduce((sum, b) => ({ requests: sum.requests + b.requests, failures: sum.failures + b.failures }), { requests: 0, failures: 0 });
}

/** What the checks read of a table row in the page (the tests compile without the DOM's types). */
interface Row {
  getAttribute(name: string): string | null;
  querySelector(selector: string): { textContent: string | null } | null;
  querySelectorAll(selector: string): Iterable<{ getAttribute(name: string): string | null }>;
}

const HEALTH_SCREENSHOT = path.join(os.tmpdir(), 'portal-scim-status-health.png');
const CREDENTIALS_SCREENSHOT = path.join(os.tmpdir(), 'portal-scim-status-credentials.png');
const DAY = 86_400_000;

async function screenshot(page: Page, file: string, t: Test): Promise<void> {
  await page.screenshot({ path: file, fullPage: true });
  const png = await readFile(file);
  t.same([...png.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a], `a PNG screenshot at ${file}`);
}

t.test("status pages: every tenant's health, worst first, and a tenant's credentials with state, last use and flags", async (t) => {
  const env = await testApp(t, { SILENT_AFTER_MINUTES: '120' });
  const credential = await createAdminCredential(env.db, 'health test', null);
  const adminToken = signAdminToken({ keys: env.keys, issuer: env.config.jwtIssuer, audience: env.config.jwtAudience }, credential.id);
  const base = await env.app.listen({ port: 0, host: '127.0.0.1' });
  const post = (headers: Record<string, string>, body: unknown) =>
    fetch(`${base}/scim/v2/Users`, { method: 'POST', headers, body: JSON.stringify(body) });
  const lastRequestWritten = async (tenantId: string) => {
    // The last request time is written just after the answer; wait for it rather than for a time.
    for (let i = 0; i < 200; i++) {
      const row = await env.db.selectFrom('tenants').select('last_request_at').where('id', '=', tenantId).executeTakeFirstOrThrow();
      if (row.last_request_at) return;
      await new Promise((resolve) => setTimeout(resolve, 25));
    }
    throw new Error('the last request time was never written');
  };

  // Failing: two of three writes refused. Healthy: writes that succeed. The
  // test app's own tenant keeps the credentials to look at.
  const failing = await tenantWithToken(env.db, env.config, env.keys, 'Failing School', ['failing.example']);
  t.equal((await post(failing.headers, entraUser(1, { userName: 'Pupil1@failing.example', emails: [] }))).status, 201);
  t.equal((await post(failing.headers, { schemas: [USER] })).status, 400);
  t.equal((await post(failing.headers, { schemas: [USER], userName: '' })).status, 400);
  const healthy = await tenantWithToken(env.db, env.config, env.keys, 'Healthy School', ['healthy.example']);
  t.equal((await post(healthy.headers, entraUser(2, { userName: 'Pupil2@healthy.example', emails: [] }))).status, 201);
  t.equal((await post(env.headers, entraUser(3))).status, 201);
  for (const id of [failing.tenant.id, healthy.tenant.id, env.tenant.id]) await lastRequestWritten(id);
  const silent = await tenantWithToken(env.db, env.config, env.keys, 'Silent School', ['silent.example']);
  await env.db.updateTable('tenants').set({ last_request_at: new Date(Date.now() - 3 * 3_600_000) }).where('id', '=', silent.tenant.id).execute();
  const fresh = await tenantWithToken(env.db, env.config, env.keys, 'New School', ['new.example']);
  const gone = await tenantWithToken(env.db, env.config, env.keys, 'Gone School', ['gone.example']);
  await env.db.updateTable('tenants').set({ disconnected_at: new Date() }).where('id', '=', gone.tenant.id).execute();

  // The test tenant's credentials: its token, just used; an older token the
  // school stopped using; a client expiring soon; a revoked and an expired token.
  const add = async (kind: 'token' | 'client', label: string, values: { created?: number; used?: number | null; expires?: number; revoked?: boolean }) => {
    const row = await createCredential(env.db, { tenantId: env.tenant.id, kind, label, secretHash: kind === 'client' ? 'scrypt$1$1$1$x$y' : null });
    const now = Date.now();
    await env.db
      .updateTable('credentials')
      .set({
        created_at: new Date(now - (values.created ?? 0)),
        last_used_at: values.used === undefined || values.used === null ? null : new Date(now - values.used),
        expires_at: values.expires === undefined ? null : new Date(now + values.expires),
        revoked_at: values.revoked ? new Date(now - DAY) : null,
      })
      .where('id', '=', row.id)
      .execute();
    return row.id;
  };
  const oldToken = await add('token', 'Entra 2025', { created: 200 * DAY, used: 10 * DAY });
  const expiring = await add('client', 'Validator client', { created: 30 * DAY, used: DAY, expires: 5 * DAY + 3_600_000 });
  const revoked = await add('token', 'Leaked', { created: 60 * DAY, revoked: true });
  const expired = await add('token', 'Trial', { created: 60 * DAY, expires: -DAY });

  const browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  t.teardown(() => browser.close());
  const context = await browser.newContext({ viewport: { width: 1400, height: 900 }, extraHTTPHeaders: { authorization: `Bearer ${adminToken}` } });
  const page = await context.newPage();
  const problems: string[] = [];
  page.on('console', (message) => {
    // The browser's own favicon request is answered 404; anything else (such as a CSP violation) is not expected.
    if (message.type() === 'error' && !message.text().startsWith('Failed to load resource')) problems.push(message.text());
  });

  t.equal((await page.goto(`${base}/status`))?.status(), 200);
  const rows = page.locator('#tenants tbody tr');
  const order = await rows.evaluateAll((trs: Row[]) => trs.map((tr) => [tr.getAttribute('data-health'), tr.querySelector('a')?.textContent]));
  t.same(
    order,
    [
      ['failing', 'Failing School'],
      ['silent', 'Silent School'],
      ['never synced', 'New School'],
      ['healthy', 'Healthy School'],
      ['healthy', 'Test School'],
      ['disconnected', 'Gone School'],
    ],
    'worst first: failing, silent, never synced, healthy, disconnected',
  );
  const failingCells = await page.locator(`tr[data-tenant="${failing.tenant.id}"] td`).allInnerTexts();
  t.same(failingCells.slice(1, 4), [failing.tenant.id, 'failing.example', 'failing'], 'id, verified domains and health');
  t.same(failingCells.slice(5, 7), ['3', '2'], 'three writes in the hour, two failed');
  t.equal(
    await page.evaluate<string>(`getComputedStyle(document.querySelector('tr[data-tenant="${silent.tenant.id}"] .health')).backgroundColor`),
    'rgb(255, 237, 213)',
    'each health has its colour under the Content-Security-Policy',
  );
  t.match(await page.locator('.summary').innerText(), /failing 1\s+silent 1\s+never synced 1\s+healthy 2\s+disconnected 1/);
  t.equal(await page.locator(`tr[data-tenant="${fresh.tenant.id}"]`).getAttribute('data-health'), 'never synced');
  await screenshot(page, HEALTH_SCREENSHOT, t);

  t.equal((await page.goto(`${base}/status/tenants/${silent.tenant.id}`))?.status(), 200);
  t.match(await page.locator('#health').innerText(), /^silent no request for 3 hours \(silent after 2 hours\)/);

  t.equal((await page.goto(`${base}/status/tenants/${env.tenant.id}`))?.status(), 200);
  t.match(await page.locator('#health').innerText(), /^healthy /);
  const credentials = page.locator('#credentials + table tbody tr');
  const states = await credentials.evaluateAll((trs: Row[]) =>
    trs.map((tr) => [tr.getAttribute('data-credential'), tr.getAttribute('data-state'), [...tr.querySelectorAll('[data-flag]')].map((f) => f.getAttribute('data-flag'))]),
  );
  t.same(
    states.sort(),
    [
      [env.credentialId, 'active', []],
      [oldToken, 'active', ['unused']],
      [expiring, 'active', ['expires soon']],
      [revoked, 'revoked', []],
      [expired, 'expired', []],
    ].sort(),
    'state and flags of each credential',
  );
  const oldRow = await page.locator(`tr[data-credential="${oldToken}"]`).innerText();
  t.match(oldRow, /unused: not used for 10 days while another credential is in use/);
  t.match(await page.locator(`tr[data-credential="${expiring}"]`).innerText(), /expires soon: expires in 5 days/);
  const used = await page.locator(`tr[data-credential="${env.credentialId}"] td`).nth(4).innerText();
  t.match(used, /^\d{4}-\d\d-\d\d \d\d:\d\d UTC$/, 'the token Entra uses shows when it was last used');
  t.equal(await page.locator(`tr[data-credential="${revoked}"] td`).nth(4).innerText(), 'never');
  await screenshot(page, CREDENTIALS_SCREENSHOT, t);
  t.same(problems, [], 'no console errors');
});
