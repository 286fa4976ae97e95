// portal-scim admin-token: credentials of the admin API, the status pages
// and /metrics, for the portal team.
import type { Command } from 'commander';
import { parseLabel } from '../services/credentials.js';
import { issueAdminToken, listAdminTokens, revokeAdminToken } from '../services/admin-tokens.js';
import { formatTime } from '../services/words.js';
import { durationOption, fields, table, uuidArgument, type CliContext } from './shared.js';

export function adminTokenCommands(program: Command, ctx: CliContext): void {
  const adminToken = program.command('admin-token').description('credentials of the admin API (/admin), the status pages and /metrics, for the portal team');

  adminToken
    .command('issue')
    .description('issue an admin API token')
    .option('--expires <duration>', 'lifetime such as 90d (default: no expiry)', durationOption)
    .option('--label <text>', 'a note to recognise the token by')
    .option('--json', 'print JSON')
    .action(async (options: { expires?: number; label?: string; json?: boolean }) => {
      await ctx.withDatabase(async ({ db }, cfg) => {
        const { credential, token } = await issueAdminToken(db, await ctx.signing(cfg), parseLabel(options.label), options.expires);
        if (options.json) {
          ctx.json({ id: credential.id, token, adminUrl: `${cfg.publicUrl}/admin`, expiresAt: credential.expires_at });
          return;
        }
        ctx.out(
          fields([
            ['Admin API', `${cfg.publicUrl}/admin`],
            ['Status pages', `${cfg.publicUrl}/status`],
            ['Admin token', token],
            ['Credential id', `${credential.id} (revoke with: portal-scim admin-token revoke ${credential.id})`],
            ['Expires', credential.expires_at ? formatTime(credential.expires_at) : 'never'],
          ]),
        );
      });
    });

  adminToken
    .command('list')
    .description('list admin API tokens and their state (never the tokens)')
    .option('--json', 'print JSON')
    .action(async (options: { json?: boolean }) => {
      await ctx.withDatabase(async ({ db }) => {
        const tokens = await listAdminTokens(db);
        if (options.json) ctx.json(tokens);
        else if (tokens.length === 0) ctx.out('No admin tokens. Issue one with: portal-scim admin-token issue --label NAME');
        else {
          ctx.out(
            table([
              ['ID', 'STATE', 'EXPIRES', 'CREATED', 'LABEL'],
              ...tokens.map((t) => [t.id, t.state, formatTime(t.expiresAt), formatTime(t.createdAt), t.label ?? '']),
            ]),
          );
        }
      });
    });

  adminToken
    .command('revoke')
    .description('revoke an admin API token')
    .argument('<id>', 'the credential id', uuidArgument('credential'))
    .action(async (id: string) => {
      await ctx.withDatabase(async ({ db }, cfg) => {
        const result = await revokeAdminToken(db, id);
        if (result.alreadyRevoked) ctx.out(`${id} was already revoked (at ${formatTime(result.credential.revoked_at)}); nothing changed.`);
        else ctx.out(`Revoked ${id}; servers refuse it within ${cfg.credentialCacheSeconds} seconds.`);
      });
    });
}
