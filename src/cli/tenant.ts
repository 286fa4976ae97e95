// portal-scim tenant: create, list, set, disconnect and connect school
// organisations, through the same operations as the admin API.
import { InvalidArgumentError, type Command } from 'commander';
import type { ClassNames, Role } from '../db/database.js';
import { listTenants, type TenantRow } from '../db/tenants.js';
import { healthSettings, tenantOverview } from '../services/health.js';
import { entraCredentialId } from '../auth/entra-token.js';
import {
  changeTenantSettings,
  connectTenant,
  createTenant,
  disconnectTenant,
  parseEntraTenantId,
  parseTenantName,
  tenantSettings,
  type TenantChanges,
} from '../services/tenants.js';
import { connectionWord, formatTime } from '../services/words.js';
import { domainOption, fields, roleMapOption, table, usageError, uuidArgument, wholeNumber, type CliContext } from './shared.js';

const CLI = { via: 'cli' } as const;

function settingsLines(row: TenantRow): string {
  const mapping = Object.entries(row.role_mapping);
  return fields([
    ['Name', row.name],
    ['Verified domains', row.verified_domains.join(', ') || 'none (no account is adopted by e-mail)'],
    ['Role mapping', mapping.length > 0 ? mapping.map(([source, role]) => `${source} → ${role}`).join(', ') : 'the defaults'],
    ['Retention', `${row.retention_days} days`],
    ['State', connectionWord(row.disconnected_at === null)],
    ['Class names', row.class_names === 'unique' ? 'unique (a second synced class of a name is refused)' : 'may repeat (match groups on externalId)'],
    ['Entra tenant', row.entra_tenant_id ?? 'not bound (no Microsoft login is linked to an account)'],
    [
      "Entra's own token",
      row.accept_entra_token ? `accepted (audit events name it as credential ${entraCredentialId(row.id)})` : 'refused (a Secret Token is needed)',
    ],
  ]);
}

interface SettingOptions {
  name?: string;
  domain?: string[] | undefined;
  domains?: boolean;
  roleMap?: Record<string, Role> | false;
  retentionDays?: number;
  classNames?: ClassNames;
  entraTenant?: string | false;
  acceptEntraToken?: boolean;
}

function changesFrom(command: Command, options: SettingOptions): TenantChanges {
  const name = options.name === undefined ? undefined : parseNameOption(command, options.name);
  const domains = options.domains === false ? [] : options.domain;
  const roleMapping = options.roleMap === false ? {} : options.roleMap;
  const entraTenantId = options.entraTenant === false ? null : options.entraTenant;
  return {
    ...(name !== undefined ? { name } : {}),
    ...(domains !== undefined ? { verifiedDomains: domains } : {}),
    ...(roleMapping !== undefined ? { roleMapping } : {}),
    ...(options.retentionDays !== undefined ? { retentionDays: options.retentionDays } : {}),
    ...(options.classNames !== undefined ? { classNames: options.classNames } : {}),
    ...(entraTenantId !== undefined ? { entraTenantId } : {}),
    ...(options.acceptEntraToken !== undefined ? { acceptEntraToken: options.acceptEntraToken } : {}),
  };
}

function classNamesOption(value: string): ClassNames {
  if (value !== 'unique' && value !== 'repeat') throw new InvalidArgumentError(`"${value}" is not unique or repeat.`);
  return value;
}

function entraTenantOption(value: string): string {
  try {
    return parseEntraTenantId(value) ?? '';
  } catch (error) {
    throw new InvalidArgumentError((error as Error).message);
  }
}

function parseNameOption(command: Command, value: string): string {
  try {
    return parseTenantName(value);
  } catch {
    throw usageError(command, '--name must be 1 to 200 characters.');
  }
}

export function tenantCommands(program: Command, ctx: CliContext): void {
  const tenant = program.command('tenant').description('school organisations');

  tenant
    .command('create')
    .description('create a tenant (one school organisation)')
    .requiredOption('--name <name>', 'the organisation name')
    .option('--domain <domain>', 'a verified e-mail domain (repeat for several); a domain belongs to one tenant only', domainOption, [])
    .option('--role-map <source=role>', 'map a source value to student, teacher or staff (repeat for several)', roleMapOption)
    .option('--retention-days <days>', 'days a deleted account is kept before purge (default 30)', wholeNumber(0, 3650))
    .option('--entra-tenant <tid>', "the organisation's Entra tenant id (rule 13); an Entra tenant belongs to one tenant only", entraTenantOption)
    .option('--accept-entra-token', "accept the token Entra signs itself when the Secret Token field is empty (needs --entra-tenant)")
    .option('--json', 'print JSON')
    .action(async (options: SettingOptions & { name: string; domain: string[]; json?: boolean }, command: Command) => {
      const changes = changesFrom(command, options);
      await ctx.withDatabase(async ({ db }) => {
        const row = await createTenant(db, { ...changes, name: changes.name ?? '' }, CLI);
        if (options.json) {
          ctx.json(tenantSettings(row));
          return;
        }
        ctx.out(`Created tenant ${row.id} (${row.name}).`, settingsLines(row), `Next: portal-scim token issue --tenant ${row.id}`);
      });
    });

  tenant
    .command('list')
    .description('list tenants with their state and health')
    .option('--json', 'print JSON')
    .action(async (options: { json?: boolean }) => {
      await ctx.withDatabase(async ({ db }, cfg) => {
        const [rows, overview] = await Promise.all([listTenants(db), tenantOverview(db, healthSettings(cfg))]);
        const health = new Map(overview.map((o) => [o.tenantId, o.health]));
        if (options.json) {
          ctx.json(rows.map((r) => ({ ...tenantSettings(r), health: health.get(r.id) })));
          return;
        }
        if (rows.length === 0) {
          ctx.out('No tenants. Create one with: portal-scim tenant create --name "Example School" --domain school.example');
          return;
        }
        ctx.out(
          table([
            ['ID', 'NAME', 'DOMAINS', 'STATE', 'HEALTH', 'LAST REQUEST'],
            ...rows.map((r) => [
              r.id,
              r.name,
              r.verified_domains.join(',') || '-',
              connectionWord(r.disconnected_at === null),
              health.get(r.id) ?? '',
              formatTime(r.last_request_at),
            ]),
          ]),
        );
      });
    });

  tenant
    .command('set')
    .description("change a tenant's settings: name, verified domains, role mapping, retention, class names, Entra tenant, Entra's own token")
    .argument('<id>', 'the tenant id', uuidArgument('tenant'))
    .option('--name <name>', 'the organisation name')
    .option('--domain <domain>', 'a verified e-mail domain; the list given replaces the old one (repeat for several)', domainOption)
    .option('--no-domains', 'remove every verified domain (no account is adopted by e-mail)')
    .option('--role-map <source=role>', 'map a source value (app role, SDS ObjectType, primaryRole, userType) to student, teacher or staff; the list given replaces the old one', roleMapOption)
    .option('--no-role-map', 'clear the role mapping (the defaults apply)')
    .option('--retention-days <days>', 'days a deleted account is kept before purge', wholeNumber(0, 3650))
    .option('--class-names <unique|repeat>', 'unique: a second synced class with a name answers 409, as Microsoft expects (the default); repeat: names may repeat across schools (match groups on externalId)', classNamesOption)
    .option('--entra-tenant <tid>', "bind the tenant to its organisation's Entra tenant id (rule 13); an Entra tenant belongs to one tenant only", entraTenantOption)
    .option('--no-entra-tenant', "remove the binding (no Microsoft login is linked, Entra's own token is refused)")
    .option('--accept-entra-token', 'accept the token Entra signs itself when the Secret Token field is empty (the tenant must be bound)')
    .option('--no-accept-entra-token', "refuse Entra's own token again (the default)")
    .option('--json', 'print JSON')
    .action(async (id: string, options: SettingOptions & { json?: boolean }, command: Command) => {
      const changes = changesFrom(command, options);
      if (Object.keys(changes).length === 0) {
        throw usageError(
          command,
          'Nothing to change: give --name, --domain, --no-domains, --role-map, --no-role-map, --retention-days, --class-names, --entra-tenant, --no-entra-tenant, --accept-entra-token or --no-accept-entra-token.',
        );
      }
      await ctx.withDatabase(async ({ db }) => {
        const { tenant: row, changed } = await changeTenantSettings(db, id, changes, CLI);
        if (options.json) {
          ctx.json({ ...tenantSettings(row), changed });
          return;
        }
        const names: Record<keyof TenantChanges, string> = {
          name: 'name',
          verifiedDomains: 'verified domains',
          roleMapping: 'role mapping',
          retentionDays: 'retention',
          classNames: 'class names',
          entraTenantId: 'Entra tenant',
          acceptEntraToken: "Entra's own token",
        };
        ctx.out(`Updated tenant ${row.id}: ${changed.map((c) => names[c]).join(', ')}.`, settingsLines(row));
      });
    });

  tenant
    .command('disconnect')
    .description("revoke the tenant's credentials and turn synced accounts and classes into manual ones (nothing is deleted)")
    .argument('<id>', 'the tenant id', uuidArgument('tenant'))
    .option('--json', 'print JSON')
    .action(async (id: string, options: { json?: boolean }) => {
      await ctx.withDatabase(async ({ db }, cfg) => {
        const result = await disconnectTenant(db, id, CLI);
        if (options.json) {
          ctx.json({ ...tenantSettings(result.tenant), alreadyDisconnected: result.alreadyDisconnected, credentials: result.credentials, accounts: result.accounts, classes: result.classes });
        } else if (result.alreadyDisconnected) {
          ctx.out(`Tenant ${id} was already disconnected (since ${formatTime(result.tenant.disconnected_at)}); nothing changed.`);
        } else {
          ctx.out(
            `Disconnected ${id}: ${count(result.credentials, 'credential')} revoked (refused within ${cfg.credentialCacheSeconds} seconds), ` +
              `${count(result.accounts, 'account')} and ${count(result.classes, 'class', 'classes')} ${result.accounts + result.classes === 1 ? 'is' : 'are'} now manual. Nothing was deleted.`,
          );
        }
      });
    });

  tenant
    .command('connect')
    .description('connect a disconnected tenant again; issue a new token, and Entra adopts its accounts and classes by external id')
    .argument('<id>', 'the tenant id', uuidArgument('tenant'))
    .option('--json', 'print JSON')
    .action(async (id: string, options: { json?: boolean }) => {
      await ctx.withDatabase(async ({ db }) => {
        const result = await connectTenant(db, id, CLI);
        if (options.json) ctx.json({ ...tenantSettings(result.tenant), alreadyConnected: result.alreadyConnected });
        else if (result.alreadyConnected) ctx.out(`Tenant ${id} was already connected; nothing changed.`);
        else ctx.out(`Connected ${id}. Next: portal-scim token issue --tenant ${id}`);
      });
    });
}

/** "1 class", "2 classes". */
function count(n: number, one: string, many = `${one}s`): string {
  return `${n} ${n === 1 ? one : many}`;
}
