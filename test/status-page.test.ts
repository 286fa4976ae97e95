// The status pages in a real browser (headless Chromium): signed out they
// answer 401 with the sign-in form; an admin token signs in through the form
// and sets a session cookie; the overview shows a tenant's conflict, the
// tenant page its conflicts, audit events and traffic; every value is escaped
// and the Content-Security-Policy lets the page's own stylesheet apply.
import { readFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { chromium, type Page } from 'playwright-core';
import t from 'tap';
import { signAdminToken } from '../src/auth/tokens.js';
import { createAdminCredential } from '../src/db/admin-credentials.js';
import { testApp } from './helpers/app.js';
import { GROUP, entraUser } from './helpers/scim.js';

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
  t.same(cells.slice(2), ['2', '1', '1', '0', '1', '1'], 'accounts, classes, memberships, failures and conflicts of 24 h, open conflicts');
  t.equal(await row.locator('td.warn').count(), 2, 'conflicts are flagged');
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
