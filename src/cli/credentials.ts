// portal-scim token and portal-scim client: a tenant's Secret Tokens and
// OAuth clients for Entra, issued, listed with their state and flags, and
// revoked, through the same operations as the admin API.
import type { Command } from 'commander';
import type { Config } from '../config.js';
import {
  createOAuthClient,
  credentialViews,
  issueSecretToken,
  listTenantCredentials,
  parseLabel,
  publicUrlWarning,
  revokeCredential,
  type CredentialKind,
  type CredentialView,
} from '../services/credentials.js';
import { flagText, formatTime } from '../services/words.js';
import { durationOption, fields, table, uuidArgument, type CliContext } from './shared.js';

const CLI = { via: 'cli' } as const;

interface IssueOptions {
  tenant: string;
  expires?: number;
  label?: string;
  json?: boolean;
}

/** The credential carries the Tenant URL from PUBLIC_URL: say so when Entra cannot reach it. */
function warnAboutPublicUrl(ctx: CliContext, cfg: Config): void {
  const warning = publicUrlWarning(cfg.publicUrl);
  if (warning) ctx.io.err(`Warning: ${warning}`);
}

export function credentialJson(c: CredentialView) {
  return {
    id: c.id,
    kind: c.kind,
    label: c.label,
    state: c.state,
    flags: c.flags,
    createdAt: c.createdAt,
    expiresAt: c.expiresAt,
    revokedAt: c.revokedAt,
    lastUsedAt: c.lastUsedAt,
  };
}

/** The credentials table of token list, client list and status --tenant, with what each flag means below it. */
export function credentialsTable(credentials: readonly CredentialView[], now: Date): string {
  if (credentials.length === 0) return 'No credentials. Issue one with: portal-scim token issue --tenant ID';
  const rows = table([
    ['ID', 'KIND', 'STATE', 'LAST USED', 'EXPIRES', 'CREATED', 'LABEL', 'FLAGS'],
    ...credentials.map((c) => [
      c.id,
      c.kind,
      c.state,
      formatTime(c.lastUsedAt),
      formatTime(c.expiresAt),
      formatTime(c.createdAt),
      c.label ?? '',
      c.flags.join(', '),
    ]),
  ]);
  const notes = credentials.flatMap((c) => c.flags.map((flag) => `  ${c.id}: ${flagText(flag, c, now)}`));
  return notes.length > 0 ? `${rows}\n${notes.join('\n')}` : rows;
}

export function credentialCommands(program: Command, ctx: CliContext): void {
  const list = (kind: CredentialKind | undefined) => async (options: { tenant: string; json?: boolean }) => {
    await ctx.withDatabase(async ({ db }) => {
      const now = new Date();
      const credentials = (await listTenantCredentials(db, options.tenant, now)).filter((c) => kind === undefined || c.kind === kind);
      if (options.json) ctx.json(credentials.map(credentialJson));
      else ctx.out(credentialsTable(credentials, now));
    });
  };

  const revoke = (kind: CredentialKind | undefined, after: string) => async (id: string, options: { json?: boolean }) => {
    await ctx.withDatabase(async ({ db }, cfg) => {
      const result = await revokeCredential(db, id, CLI, kind === undefined ? {} : { kind });
      const [view] = credentialViews([result.credential], new Date());
      if (options.json) ctx.json({ ...(view ? credentialJson(view) : {}), alreadyRevoked: result.alreadyRevoked });
      else if (result.alreadyRevoked) ctx.out(`${id} was already revoked (at ${formatTime(result.credential.revoked_at)}); nothing changed.`);
      else ctx.out(`Revoked ${id}; servers refuse ${after} within ${cfg.credentialCacheSeconds} seconds.`);
    });
  };

  const token = program.command('token').description('Secret Tokens for Entra provisioning');
  token
    .command('issue')
    .description('issue a Secret Token for a tenant and print it with the Tenant URL')
    .requiredOption('--tenant <id>', 'the tenant id', uuidArgument('tenant'))
    .option('--expires <duration>', 'lifetime such as 90d, 12h, 1y (default: no expiry)', durationOption)
    .option('--label <text>', 'a note to recognise the token by')
    .option('--json', 'print JSON')
    .action(async (options: IssueOptions) => {
      await ctx.withDatabase(async ({ db }, cfg) => {
        const request = { label: parseLabel(options.label), lifetimeMs: options.expires };
        const { credential, token: secret } = await issueSecretToken(db, await ctx.signing(cfg), options.tenant, request, CLI);
        const tenantUrl = `${cfg.publicUrl}/scim/v2`;
        warnAboutPublicUrl(ctx, cfg);
        if (options.json) {
          ctx.json({ id: credential.id, tenantId: credential.tenant_id, tenantUrl, token: secret, expiresAt: credential.expires_at });
          return;
        }
        ctx.out(
          fields([
            ['Tenant URL', tenantUrl],
            ['Secret Token', secret],
            ['Credential id', `${credential.id} (revoke with: portal-scim token revoke ${credential.id})`],
            ['Expires', credential.expires_at ? formatTime(credential.expires_at) : 'never'],
          ]),
          'Paste both into the Provisioning page of the Entra enterprise application. The token is not shown again.',
        );
      });
    });

  token
    .command('list')
    .description("list a tenant's credentials, tokens and OAuth clients, with state, last use and flags (never their secrets)")
    .requiredOption('--tenant <id>', 'the tenant id', uuidArgument('tenant'))
    .option('--json', 'print JSON')
    .action(list(undefined));

  token
    .command('revoke')
    .description('revoke a credential; it stops working within seconds')
    .argument('<id>', 'the credential id', uuidArgument('credential'))
    .option('--json', 'print JSON')
    .action(revoke(undefined, 'it'));

  const client = program.command('client').description('OAuth 2.0 clients for Entra provisioning (client credentials grant)');
  client
    .command('create')
    .description('create an OAuth client for a tenant and print its id, secret and token URL')
    .requiredOption('--tenant <id>', 'the tenant id', uuidArgument('tenant'))
    .option('--expires <duration>', 'lifetime of the client such as 1y (default: no expiry)', durationOption)
    .option('--label <text>', 'a note to recognise the client by')
    .option('--json', 'print JSON')
    .action(async (options: IssueOptions) => {
      await ctx.withDatabase(async ({ db }, cfg) => {
        const request = { label: parseLabel(options.label), lifetimeMs: options.expires };
        const { credential, clientSecret } = await createOAuthClient(db, options.tenant, request, CLI);
        const tenantUrl = `${cfg.publicUrl}/scim/v2`;
        const tokenUrl = `${cfg.publicUrl}/oauth/token`;
        warnAboutPublicUrl(ctx, cfg);
        if (options.json) {
          ctx.json({ clientId: credential.id, clientSecret, tenantId: credential.tenant_id, tenantUrl, tokenUrl, expiresAt: credential.expires_at });
          return;
        }
        ctx.out(
          fields([
            ['Tenant URL', tenantUrl],
            ['Token Endpoint', tokenUrl],
            ['Client Identifier', credential.id],
            ['Client Secret', clientSecret],
            ['Expires', credential.expires_at ? formatTime(credential.expires_at) : 'never'],
          ]),
          'Choose "OAuth2 Client Credentials Grant" in Entra and paste these. The secret is not shown again.',
        );
      });
    });

  client
    .command('list')
    .description("list a tenant's OAuth clients, with state, last use and flags (never their secrets)")
    .requiredOption('--tenant <id>', 'the tenant id', uuidArgument('tenant'))
    .option('--json', 'print JSON')
    .action(list('client'));

  client
    .command('revoke')
    .description('revoke an OAuth client; it and the access tokens issued to it stop working within seconds')
    .argument('<client-id>', 'the client id', uuidArgument('client'))
    .option('--json', 'print JSON')
    .action(revoke('client', 'it and its access tokens'));
}
