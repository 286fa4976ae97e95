// HTML of the status pages, rendered on the server: no script, one stylesheet
// allowed by its hash, every value escaped (tenant, class and user names come
// from schools).
import { createHash } from 'node:crypto';
import type { AuditEventRow, ConflictRow, FailureGroup } from '../db/audit.js';
import type { HourlyRequests } from '../db/request-counts.js';
import type { TenantStatus } from '../db/tenant-status.js';
import { conflictStateText } from '../services/conflicts.js';
import type { CredentialView } from '../services/credentials.js';
import { FAILURE_WINDOW_HOURS, failureStatusText } from '../services/failures.js';
import { healthReason, type Health, type HealthSettings, type TenantOverview } from '../services/health.js';
import { attention, noteOf, outcomeWords, type PreviewReport } from '../services/preview.js';
import { accountStateWord, connectionWord, flagText, formatTime } from '../services/words.js';

const STYLE = `
body { font: 15px/1.45 system-ui, sans-serif; margin: 0 auto; max-width: 72rem; padding: 1rem 1.5rem; color: #1b1f24; }
header { display: flex; justify-content: space-between; align-items: center; border-bottom: 1px solid #d0d7de; margin-bottom: 1rem; }
h1 { font-size: 1.4rem; } h2 { font-size: 1.1rem; margin-top: 2rem; }
table { border-collapse: collapse; width: 100%; } th, td { text-align: left; padding: .35rem .6rem; border-bottom: 1px solid #d0d7de; vertical-align: top; }
th { background: #f6f8fa; } td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
.warn { color: #9a3412; font-weight: 600; } .ok { color: #166534; } .muted { color: #57606a; }
code { font-size: .85em; word-break: break-all; }
form.signin { display: grid; gap: .6rem; max-width: 36rem; } input[type=password] { font: inherit; padding: .4rem; }
button { font: inherit; padding: .35rem .9rem; cursor: pointer; }
.error { background: #fff1f0; border: 1px solid #f5a3a3; padding: .6rem .8rem; }
svg { max-width: 100%; height: auto; } .legend span { margin-right: 1rem; }
.swatch-requests { color: #2563eb; } .swatch-failures { color: #dc2626; }
.health { display: inline-block; padding: .05rem .5rem; border-radius: .7rem; font-size: .85em; font-weight: 600; white-space: nowrap; }
.health-failing { background: #fee2e2; color: #991b1b; } .health-silent { background: #ffedd5; color: #9a3412; }
.health-never-synced { background: #e0e7ff; color: #3730a3; } .health-healthy { background: #dcfce7; color: #166534; }
.health-disconnected { background: #f3f4f6; color: #4b5563; }
tr.flagged td { background: #fff7ed; } .flags { color: #9a3412; }
form.close { display: flex; flex-wrap: wrap; gap: .3rem; } form.close input[type=text] { font: inherit; padding: .2rem .3rem; min-width: 10rem; }
td.detail { max-width: 28rem; } .objects code { display: inline-block; margin-right: .4rem; }
form.upload { display: grid; gap: .6rem; max-width: 40rem; margin: 1rem 0; } form.upload div { display: flex; gap: .6rem; }
tr.refused td { background: #fee2e2; } #users td { overflow-wrap: anywhere; }
`;

/** The Content-Security-Policy of every status page: nothing but this stylesheet and forms to ourselves. */
export const STATUS_CSP = [
  "default-src 'none'",
  `style-src 'sha256-${createHash('sha256').update(STYLE).digest('base64')}'`,
  "img-src 'self'",
  "form-action 'self'",
  "frame-ancestors 'none'",
  "base-uri 'none'",
].join('; ');

const ENTITIES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };

export function escapeHtml(value: unknown): string {
  const text =
    typeof value === 'string' ? value : typeof value === 'number' || typeof value === 'boolean' ? String(value) : value === null || value === undefined ? '' : JSON.stringify(value);
  return text.replace(/[&<>"']/g, (c) => ENTITIES[c] ?? c);
}

/** A trusted HTML fragment, built only by the functions here from escaped values. */
class Html {
  constructor(readonly text: string) {}
  toString(): string {
    return this.text;
  }
}

/** Template tag: interpolated values are escaped unless they are Html (or arrays of it). */
function html(strings: TemplateStringsArray, ...values: unknown[]): Html {
  let out = strings[0] ?? '';
  values.forEach((value, i) => {
    const parts = Array.isArray(value) ? value : [value];
    out += parts.map((v) => (v instanceof Html ? v.text : escapeHtml(v))).join('');
    out += strings[i + 1] ?? '';
  });
  return new Html(out);
}

const time = formatTime;

function page(title: string, body: Html, signedIn: boolean): string {
  const signOut = signedIn
    ? html`<form method="post" action="/status/sign-out"><button type="submit">Sign out</button></form>`
    : html``;
  return `<!doctype html>\n${html`<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>${title} · portal-scim</title>
<style>${new Html(STYLE)}</style>
</head>
<body>
<header><h1><a href="/status">portal-scim status</a></h1>${signOut}</header>
<main>
${body}
</main>
</body>
</html>
`.text}`;
}

export function signInPage(options: { message?: string; next: string }): string {
  const message = options.message ? html`<p class="error" role="alert">${options.message}</p>` : html``;
  return page(
    'Sign in',
    html`<h2>Sign in</h2>
${message}
<form class="signin" method="post" action="/status/session">
<label for="token">Admin token (from <code>portal-scim admin-token issue</code>)</label>
<input id="token" type="password" name="token" autocomplete="off" required>
<input type="hidden" name="next" value="${options.next}">
<button type="submit">Sign in</button>
</form>`,
    false,
  );
}

export function errorPage(status: number, message: string, signedIn: boolean): string {
  return page(`Error ${status}`, html`<h2>Error ${status}</h2><p class="error">${message}</p><p><a href="/status">Back to all tenants</a></p>`, signedIn);
}

const HOUR_MS = 3_600_000;

/** Requests per hour over the last 24 hours as an inline SVG bar chart; failures drawn over their hour's bar. */
export function requestChart(hourly: readonly HourlyRequests[], now: Date, label: string): Html {
  const last = Math.floor(now.getTime() / HOUR_MS) * HOUR_MS;
  const byHour = new Map(hourly.map((h) => [h.hour.getTime(), h]));
  const slots = Array.from({ length: 24 }, (_, i) => {
    const hour = last - (23 - i) * HOUR_MS;
    return { hour: new Date(hour), requests: byHour.get(hour)?.requests ?? 0, failures: byHour.get(hour)?.failures ?? 0 };
  });
  const total = slots.reduce((sum, s) => sum + s.requests, 0);
  const max = Math.max(1, ...slots.map((s) => s.requests));
  const [width, height, left, bottom, top] = [720, 190, 48, 24, 10];
  const plot = height - bottom - top;
  const step = (width - left - 8) / slots.length;
  const y = (n: number) => (top + plot - (n / max) * plot).toFixed(1);
  const bars = slots.map((s, i) => {
    const x = (left + i * step + 3).toFixed(1);
    const w = (step - 6).toFixed(1);
    const tip = `${time(s.hour)}: ${s.requests} requests, ${s.failures} failed`;
    const hourLabel = i % 3 === 0 ? html`<text x="${(left + i * step + step / 2).toFixed(1)}" y="${height - 6}" text-anchor="middle" font-size="11" fill="#57606a">${s.hour.toISOString().slice(11, 13)}</text>` : html``;
    return html`<g data-hour="${s.hour.toISOString()}" data-requests="${s.requests}" data-failures="${s.failures}"><title>${tip}</title>
<rect x="${x}" y="${y(s.requests)}" width="${w}" height="${((s.requests / max) * plot).toFixed(1)}" fill="#2563eb"/>
<rect x="${x}" y="${y(s.failures)}" width="${w}" height="${((s.failures / max) * plot).toFixed(1)}" fill="#dc2626"/>${hourLabel}</g>`;
  });
  return html`<figure>
<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 ${width} ${height}" width="${width}" height="${height}" role="img" aria-label="${`${label}: ${total} requests in the last 24 hours`}">
<line x1="${left}" y1="${top + plot}" x2="${width - 8}" y2="${top + plot}" stroke="#8c959f"/>
<text x="${left - 6}" y="${top + 10}" text-anchor="end" font-size="11" fill="#57606a">${max}</text>
<text x="${left - 6}" y="${top + plot}" text-anchor="end" font-size="11" fill="#57606a">0</text>
${bars}
</svg>
<figcaption class="legend">${label}, last 24 hours by hour (UTC): <span class="swatch-requests">■ requests</span><span class="swatch-failures">■ failed (4xx/5xx)</span> total ${total}</figcaption>
</figure>`;
}

const accountTotal = (status: TenantStatus) => status.accounts.reduce((sum, a) => sum + a.count, 0);

function flagged(n: number): Html {
  return n > 0 ? html`<td class="n warn">${n}</td>` : html`<td class="n">${n}</td>`;
}

function healthBadge(health: Health): Html {
  return html`<span class="health health-${health.replace(' ', '-')}">${health}</span>`;
}

/** Every tenant, worst health first: its id, verified domains, health and the figures health is judged by. */
export function overviewPage(tenants: readonly TenantOverview[], hourly: readonly HourlyRequests[], now: Date): string {
  const body = tenants.map(
    (t) => html`<tr data-tenant="${t.tenantId}" data-health="${t.health}">
<td><a href="/status/tenants/${t.tenantId}">${t.name}</a></td>
<td><code>${t.tenantId}</code></td>
<td>${t.verifiedDomains.join(', ')}</td>
<td>${healthBadge(t.health)}</td>
<td>${time(t.lastRequestAt)}</td>
<td class="n">${t.writesLastHour}</td>${flagged(t.writeFailuresLastHour)}${flagged(t.failures24h)}${flagged(t.openConflicts24h)}${flagged(t.openConflicts)}
</tr>`,
  );
  const counts = tenants.reduce<Partial<Record<Health, number>>>((sum, t) => ({ ...sum, [t.health]: (sum[t.health] ?? 0) + 1 }), {});
  const summary = Object.entries(counts).map(([health, n]) => html`${healthBadge(health as Health)} ${n} `);
  return page(
    'Tenants',
    html`${requestChart(hourly, now, 'SCIM requests of all tenants')}
<h2>Tenants</h2>
<p class="summary">${summary}</p>
<table id="tenants">
<thead><tr><th>Tenant</th><th>Id</th><th>Verified domains</th><th>Health</th><th>Last request</th><th class="n">Writes 1 h</th><th class="n">Failed 1 h</th><th class="n">Failures 24 h</th><th class="n">Conflicts 24 h</th><th class="n">Open conflicts</th></tr></thead>
<tbody>
${tenants.length > 0 ? body : html`<tr><td colspan="10" class="muted">No tenants yet: portal-scim tenant create.</td></tr>`}
</tbody>
</table>`,
    true,
  );
}

export interface TenantPageView {
  status: TenantStatus & TenantOverview;
  memberships: number;
  failures: readonly FailureGroup[];
  /** Open conflicts, each with the form that resolves or dismisses it. */
  conflicts: readonly ConflictRow[];
  closedConflicts: readonly ConflictRow[];
  /** The form token of the session (see routes/status.ts); undefined when signed in by an Authorization header, which needs none. */
  formToken: string | undefined;
  events: readonly AuditEventRow[];
  credentials: readonly CredentialView[];
  hourly: readonly HourlyRequests[];
  now: Date;
  health: HealthSettings;
}

export function tenantPage(view: TenantPageView): string {
  const { status, now } = view;
  const accounts = status.accounts.map((a) => html`<tr><td>${a.role}</td><td>${accountStateWord(a.active)}</td><td class="n">${a.count}</td></tr>`);
  const csrf = view.formToken === undefined ? html`` : html`<input type="hidden" name="csrf" value="${view.formToken}">`;
  const conflicts = view.conflicts.map(
    (c) => html`<tr data-conflict="${c.id}"><td>${time(c.at)}</td><td>${time(c.last_seen_at)}</td><td class="n">${c.seen_count}</td><td>${c.kind}</td><td>${c.object_type}</td><td>${c.object_ref ?? ''}</td><td>${c.entra_objects.map((o) => html`<code>${o}</code> `)}</td><td class="detail">${c.detail}</td><td><code>${c.request_id ?? ''}</code></td>
<td><form class="close" method="post" action="/status/tenants/${status.tenantId}/conflicts/${c.id}">${csrf}<input type="text" name="note" maxlength="1000" placeholder="note (optional)" aria-label="note"><button type="submit" name="action" value="resolve">Resolve</button><button type="submit" name="action" value="dismiss">Dismiss</button></form></td></tr>`,
  );
  const closed = view.closedConflicts.map(
    (c) => html`<tr data-conflict="${c.id}" data-resolution="${c.resolution ?? ''}"><td>${time(c.resolved_at)}</td><td>${conflictStateText(c)}</td><td>${c.kind}</td><td>${c.object_ref ?? ''}</td><td class="n">${c.seen_count}</td><td>${c.note ?? ''}</td></tr>`,
  );
  const failures = view.failures.map(
    (f) => html`<tr><td class="n">${f.count}</td><td>${failureStatusText(f)}</td><td class="detail">${f.message}</td><td>${time(f.lastAt)}</td><td class="objects">${f.objects.map((o) => html`<code>${o}</code>`)}</td><td class="detail">${f.latestDetail ?? ''}</td></tr>`,
  );
  const events = view.events.map(
    (e) => html`<tr class="${e.outcome === 'success' ? '' : 'warn'}"><td>${time(e.at)}</td><td>${e.action}</td><td>${e.object_type}</td><td>${e.object_ref ?? ''}</td><td>${e.outcome}</td><td><code>${JSON.stringify(e.details)}</code></td><td><code>${e.request_id ?? ''}</code></td></tr>`,
  );
  const credentials = view.credentials.map(
    (c) => html`<tr data-credential="${c.id}" data-state="${c.state}" class="${c.flags.length > 0 ? 'flagged' : ''}"><td><code>${c.id}</code></td><td>${c.kind}</td><td>${c.label ?? ''}</td><td>${c.state}</td><td>${time(c.lastUsedAt)}</td><td>${c.expiresAt ? time(c.expiresAt) : 'never'}</td><td>${time(c.createdAt)}</td><td class="flags">${c.flags.map((f) => html`<div data-flag="${f}"><strong>${f}</strong>: ${flagText(f, c, now)}</div>`)}</td></tr>`,
  );
  return page(
    status.name,
    html`<h2>${status.name}</h2>
<p><span class="muted">Tenant</span> <code>${status.tenantId}</code> · ${status.connected ? html`<span class="ok">${connectionWord(true)}</span>` : html`<span class="warn">${connectionWord(false)}</span>`} · <span class="muted">last request</span> ${time(status.lastRequestAt)} · <span class="muted">verified domains</span> ${status.verifiedDomains.join(', ') || 'none'}</p>
<p id="health">${healthBadge(status.health)} ${healthReason(status, now, view.health)}</p>
<p><a id="preview" href="/status/tenants/${status.tenantId}/preview">Preview the first sync</a> <span class="muted">from Entra's user export: who keeps an existing account, who gets a new one, who is probably the same person under another address</span></p>
<table id="summary">
<thead><tr><th class="n">Accounts</th><th class="n">Deleted</th><th class="n">Classes</th><th class="n">Memberships</th><th class="n">Writes 1 h</th><th class="n">Failed 1 h</th><th class="n">Failures 24 h</th><th class="n">Conflicts 24 h</th><th class="n">Open conflicts</th></tr></thead>
<tbody><tr><td class="n">${accountTotal(status)}</td><td class="n">${status.deletedAccounts}</td><td class="n">${status.classes}</td><td class="n">${view.memberships}</td><td class="n">${status.writesLastHour}</td>${flagged(status.writeFailuresLastHour)}${flagged(status.failures24h)}${flagged(status.openConflicts24h)}${flagged(status.openConflicts)}</tr></tbody>
</table>
${requestChart(view.hourly, now, `SCIM requests of ${status.name}`)}
<h2 id="credentials">Credentials</h2>
<table><thead><tr><th>Id</th><th>Kind</th><th>Label</th><th>State</th><th>Last used</th><th>Expires</th><th>Created</th><th>Flags</th></tr></thead><tbody>
${credentials.length > 0 ? credentials : html`<tr><td colspan="8" class="muted">No credentials: portal-scim token issue --tenant ${status.tenantId}</td></tr>`}
</tbody></table>
<h2>Accounts by role</h2>
<table><thead><tr><th>Role</th><th>State</th><th class="n">Accounts</th></tr></thead><tbody>
${accounts.length > 0 ? accounts : html`<tr><td colspan="3" class="muted">No synced accounts.</td></tr>`}
</tbody></table>
<h2 id="failures">Failed writes (${FAILURE_WINDOW_HOURS} h) by message</h2>
<table><thead><tr><th class="n">Count</th><th>Status</th><th>Message</th><th>Last</th><th>Latest objects</th><th>Latest detail, as Entra received it</th></tr></thead><tbody>
${failures.length > 0 ? failures : html`<tr><td colspan="6" class="muted">No failed writes.</td></tr>`}
</tbody></table>
<h2 id="conflicts">Open conflicts</h2>
<table><thead><tr><th>Opened</th><th>Last seen</th><th class="n">Seen</th><th>Kind</th><th>Object</th><th>Reference</th><th>Entra objects</th><th>Detail</th><th>Request</th><th>Close</th></tr></thead><tbody>
${conflicts.length > 0 ? conflicts : html`<tr><td colspan="10" class="muted">No open conflicts.</td></tr>`}
</tbody></table>
<h2 id="closed-conflicts">Recently closed conflicts</h2>
<table><thead><tr><th>Closed</th><th>How</th><th>Kind</th><th>Reference</th><th class="n">Seen</th><th>Note</th></tr></thead><tbody>
${closed.length > 0 ? closed : html`<tr><td colspan="6" class="muted">None closed yet.</td></tr>`}
</tbody></table>
<h2 id="audit">Recent audit events</h2>
<table><thead><tr><th>At</th><th>Action</th><th>Object</th><th>Reference</th><th>Outcome</th><th>Details</th><th>Request</th></tr></thead><tbody>
${events.length > 0 ? events : html`<tr><td colspan="7" class="muted">No audit events yet.</td></tr>`}
</tbody></table>`,
    true,
  );
}

export interface PreviewTenant {
  id: string;
  name: string;
}

/** The upload form of the first-sync preview; `csrf` ties the post to the signed-in session. */
function previewForm(tenant: PreviewTenant, csrf: string): Html {
  return html`<form class="upload" method="post" action="/status/tenants/${tenant.id}/preview" enctype="multipart/form-data">
<input type="hidden" name="csrf" value="${csrf}">
<label for="file">The CSV that <strong>Download users</strong> writes (Entra admin center, Users &gt; All users), as it is</label>
<input id="file" type="file" name="file" accept=".csv,text/csv" required>
<div><button type="submit" name="format" value="html">Show the preview</button><button type="submit" name="format" value="csv">Download it as CSV</button></div>
</form>`;
}

/** Before an upload, or after one that could not be read (`message`). */
export function previewUploadPage(view: { tenant: PreviewTenant; csrf: string; message?: string }): string {
  const message = view.message !== undefined ? html`<p class="error" role="alert">${view.message}</p>` : html``;
  return page(
    `First-sync preview: ${view.tenant.name}`,
    html`<h2>First-sync preview: ${view.tenant.name}</h2>
<p><a href="/status/tenants/${view.tenant.id}">Back to the tenant</a></p>
<p>Before the school starts provisioning, upload Entra's user export to see what the first sync will do with each user:
which existing portal account it takes over (by Entra object id, rule 8, or by address in a verified domain, rule 2),
who gets a new account, who is probably the same person as an existing account under another address,
and whose address belongs to a portal admin (rule 3). Nothing is written.</p>
${message}
${previewForm(view.tenant, view.csrf)}`,
    true,
  );
}

/** Rows the page lists; the CSV has every user. */
export const PREVIEW_PAGE_ROWS = 1000;

export function previewReportPage(view: { tenant: PreviewTenant; report: PreviewReport; csrf: string }): string {
  const { report } = view;
  const { totals } = report;
  const shown = [...report.users].sort((a, b) => attention(a) - attention(b) || a.row - b.row).slice(0, PREVIEW_PAGE_ROWS);
  const rows = shown.map((u) => {
    const shownAccount = u.outcome === 'create' ? u.probableMatches[0] : u.account;
    const urgency = attention(u);
    return html`<tr data-row="${u.row}" data-outcome="${u.outcome}" class="${urgency === 0 ? 'refused' : urgency <= 2 ? 'flagged' : ''}"><td class="n">${u.row}</td><td>${u.userPrincipalName}</td><td>${u.mail ?? ''}</td><td>${u.displayName ?? ''}</td><td>${outcomeWords(u)}</td><td>${shownAccount ? html`${shownAccount.userName}<br><code>${shownAccount.id}</code>` : ''}</td><td>${noteOf(u)}</td></tr>`;
  });
  const more =
    report.users.length > shown.length
      ? html`<p class="muted">The ${shown.length} users that need a look first, of ${report.users.length}; download the CSV for every user.</p>`
      : html``;
  const total = (label: string, n: number, id: string, flag = false) => html`<tr data-total="${id}"><th>${label}</th>${flag ? flagged(n) : html`<td class="n">${n}</td>`}</tr>`;
  return page(
    `First-sync preview: ${view.tenant.name}`,
    html`<h2>First-sync preview: ${view.tenant.name}</h2>
<p><a href="/status/tenants/${view.tenant.id}">Back to the tenant</a> · <span class="muted">verified domains</span> ${report.tenant.verifiedDomains.join(', ') || 'none'} · nothing was written</p>
<table id="totals"><tbody>
${total('Users in the file', totals.users, 'users')}
${total('Already synced', totals.alreadySynced, 'alreadySynced')}
${total('Adopt an existing account by Entra object id (rule 8)', totals.adoptByExternalId, 'adoptByExternalId')}
${total('Adopt an existing account by address (rule 2)', totals.adoptByAddress, 'adoptByAddress')}
${total('Create a new account', totals.create, 'create')}
${total('… of which probably the same person as an existing account', totals.probableMatches, 'probableMatches', true)}
${total('Refused: the address of a portal admin (rule 3)', totals.adminCollisions, 'adminCollisions', true)}
${total('Refused: invalid data', totals.invalid, 'invalid', true)}
${total('Users with an address outside the verified domains', totals.outsideVerifiedDomains, 'outsideVerifiedDomains', true)}
</tbody></table>
<h2 id="users-heading">Users</h2>
${more}
<table id="users"><thead><tr><th class="n">Row</th><th>User principal name</th><th>Mail</th><th>Display name</th><th>Outcome</th><th>Portal account</th><th>Note</th></tr></thead><tbody>
${rows.length > 0 ? rows : html`<tr><td colspan="7" class="muted">The file has no users.</td></tr>`}
</tbody></table>
<h2>Another file</h2>
${previewForm(view.tenant, view.csrf)}`,
    true,
  );
}
