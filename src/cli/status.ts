// portal-scim status: every tenant's health, worst first, or one tenant's
// sync in detail: accounts, failures grouped by message, open conflicts and
// credentials. The same figures and words as the status pages.
import type { Command } from 'commander';
import { listOpenConflicts } from '../db/audit.js';
import { failureStatusText, recentFailures } from '../services/failures.js';
import { tenantStatus } from '../db/tenant-status.js';
import { listTenantCredentials } from '../services/credentials.js';
import { healthReason, healthSettings, tenantOverview, withHealth } from '../services/health.js';
import { ServiceError } from '../services/errors.js';
import { accountStateWord, connectionWord, formatTime } from '../services/words.js';
import { conflictJson } from './conflicts.js';
import { credentialJson, credentialsTable } from './credentials.js';
import { fields, table, uuidArgument, type CliContext } from './shared.js';

export function statusCommands(program: Command, ctx: CliContext): void {
  program
    .command('status')
    .description("every tenant's health, worst first; with --tenant, one tenant's sync: accounts, failures, open conflicts and credentials")
    .option('--tenant <id>', 'the tenant id', uuidArgument('tenant'))
    .option('--json', 'print JSON')
    .action(async (options: { tenant?: string; json?: boolean }) => {
      if (options.tenant === undefined) await overview(ctx, options.json === true);
      else await oneTenant(ctx, options.tenant, options.json === true);
    });
}

async function overview(ctx: CliContext, json: boolean): Promise<void> {
  await ctx.withDatabase(async ({ db }, cfg) => {
    const tenants = await tenantOverview(db, healthSettings(cfg));
    if (json) {
      ctx.json({ tenants });
      return;
    }
    if (tenants.length === 0) {
      ctx.out('No tenants. Create one with: portal-scim tenant create --name "Example School" --domain school.example');
      return;
    }
    ctx.out(
      table([
        ['HEALTH', 'TENANT', 'ID', 'DOMAINS', 'LAST REQUEST', 'WRITES 1 H', 'FAILED 1 H', 'OPEN CONFLICTS'],
        ...tenants.map((t) => [
          t.health,
          t.name,
          t.tenantId,
          t.verifiedDomains.join(',') || '-',
          formatTime(t.lastRequestAt),
          String(t.writesLastHour),
          String(t.writeFailuresLastHour),
          String(t.openConflicts),
        ]),
      ]),
    );
  });
}

async function oneTenant(ctx: CliContext, id: string, json: boolean): Promise<void> {
  await ctx.withDatabase(async ({ db }, cfg) => {
    const now = new Date();
    const status = await tenantStatus(db, id, now);
    if (!status) throw new ServiceError('not-found', `No tenant ${id}.`);
    const [conflicts, credentials, failures] = await Promise.all([listOpenConflicts(db, id, 20), listTenantCredentials(db, id, now), recentFailures(db, id, now)]);
    const settings = healthSettings(cfg);
    const tenant = withHealth(status, now, settings);
    if (json) {
      ctx.json({
        ...status,
        health: tenant.health,
        writesLastHour: tenant.writesLastHour,
        writeFailuresLastHour: tenant.writeFailuresLastHour,
        failures,
        conflicts: conflicts.map((c) => ({ ...conflictJson(c), at: c.at })),
        credentials: credentials.map(credentialJson),
      });
      return;
    }
    ctx.out(
      fields([
        ['Tenant', `${status.name} (${status.tenantId}), ${connectionWord(status.connected)}`],
        ['Health', `${tenant.health}: ${healthReason(tenant, now, settings)}`],
        ['Verified domains', status.verifiedDomains.join(', ') || 'none'],
        ['Last request', formatTime(status.lastRequestAt)],
        ['Writes (1 h)', `${tenant.writesLastHour}, ${tenant.writeFailuresLastHour} failed`],
        ['Classes', String(status.classes)],
      ]),
      `Deleted accounts awaiting purge: ${status.deletedAccounts}`,
      // The status page's words when there is nothing to count.
      status.accounts.length > 0
        ? table([['ROLE', 'STATE', 'ACCOUNTS'], ...status.accounts.map((a) => [a.role, accountStateWord(a.active), String(a.count)])])
        : 'No synced accounts.',
      `Failures (24 h):        ${status.failures24h}`,
      ...failures.flatMap((f) => [
        `  ${String(f.count).padStart(5)}× ${failureStatusText(f)}  ${f.message}`,
        `         last ${formatTime(f.lastAt)}${f.objects.length > 0 ? `; latest: ${f.objects.join(', ')}` : ''}`,
      ]),
      `Open conflicts (24 h):  ${status.openConflicts24h} (all open: ${status.openConflicts})`,
      ...conflicts.map((c) => `  ${c.id}  ${c.kind}  ${c.object_ref ?? ''}  seen ${c.seen_count}×, last ${formatTime(c.last_seen_at)}  ${c.detail}`),
      'Credentials:',
      credentialsTable(credentials, now),
    );
  });
}
