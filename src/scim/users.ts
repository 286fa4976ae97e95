// SCIM Users: the mappers between accounts rows and SCIM resources, and the
// operations the generic routes call.

import {
  adoptAccount,
  findAdminCollision,
  findAdoptableByAddress,
  findAdoptableByExternalId,
  deleteSyncedAccount,
  deleteSyncedAccountNow,
  findSyncedAccount,
  insertSyncedAccount,
  insertUnclaimedAccount,
  listSyncedAccounts,
  lookupSyncedAccounts,
  updateAccountAtVersion,
  updateSyncedAccount,
  type AccountResource,
  type AccountRow,
  type AccountValues,
} from '../db/accounts.js';
import { recordAudit, recordConflict, type AuditEvent } from '../db/audit.js';
import { isUuid } from '../db/ids.js';
import { ScimError, badRequest, notFound } from '../errors.js';
import { columnLookup, filterToSql, sortExpression } from './filter-sql.js';
import { normaliseResource, withManagerRef } from './entra-dialect.js';
import { patchUserDocument, stripServerAttributes } from './patch.js';
import { changedAttributes, checkIfMatch, meta, type Json, type RequestContext, type ResourceHandler } from './resource.js';
import { checkStringLengths } from './limits.js';
import { resolveRole } from './roles.js';
import { PORTAL_SCHEMA, USER_SCHEMA, coerceResource } from './schemas.js';

const ENDPOINT = '/Users';

/** The stored SCIM document plus id and meta, as clients see it. */
export function toScimUser(row: AccountResource, baseUrl: string): Json {
  return withManagerRef({ ...userAttributes(row), meta: meta('User', row.id, row.created_at, row.updated_at, row.version, baseUrl, ENDPOINT) }, baseUrl);
}

/** toScimUser without meta, which no comparison of attributes needs. */
function userAttributes(row: AccountResource): Json {
  const { schemas, ...rest } = row.scim as Json & { schemas?: string[] };
  return {
    schemas: Array.isArray(schemas) && schemas.length > 0 ? schemas : [USER_SCHEMA],
    id: row.id,
    ...(row.external_id !== null ? { externalId: row.external_id } : {}),
    userName: row.user_name,
    ...rest,
    active: row.active,
  };
}

function str(value: unknown): string | null {
  return typeof value === 'string' && value.trim() !== '' ? value : null;
}

/** The e-mail the portal links on: the work address, else the primary, else the first. */
function linkEmail(emails: unknown): string | null {
  if (!Array.isArray(emails)) return null;
  const list = emails.filter((e): e is { value: string; type?: string; primary?: boolean } => typeof (e as { value?: unknown })?.value === 'string');
  const chosen = list.find((e) => e.type?.toLowerCase() === 'work') ?? list.find((e) => e.primary === true) ?? list[0];
  return chosen ? chosen.value : null;
}

/** Validated SCIM document -> the account columns (rule 4 decides the role). */
export function fromScimUser(resource: Json, roleMapping: Readonly<Record<string, string>>): AccountValues {
  const userName = str(resource.userName);
  if (userName === null) throw badRequest('invalidValue', 'userName is required and must not be empty.');
  checkStringLengths(resource);
  const name = (resource.name ?? {}) as Json;
  const portal = (resource[PORTAL_SCHEMA] ?? {}) as Json;
  const { externalId, active, ...scim } = resource;
  return {
    user_name: userName,
    external_id: str(externalId),
    email: linkEmail(resource.emails),
    given_name: str(name.givenName),
    family_name: str(name.familyName),
    display_name: str(resource.displayName),
    school_id: str(portal.schoolId),
    grade: str(portal.grade),
    active: active !== false,
    role: resolveRole(resource, roleMapping),
    scim: { ...scim, ...(str(externalId) !== null ? { externalId } : {}) },
  };
}

/** Body -> validated document, for POST and PUT. */
function inbound(body: unknown): Json {
  const normalised = stripServerAttributes(normaliseResource('User', body));
  if (!Array.isArray(normalised.schemas) || !normalised.schemas.includes(USER_SCHEMA)) {
    // Entra always names the core schema; accept a body that forgot it.
    normalised.schemas = [USER_SCHEMA, ...(Array.isArray(normalised.schemas) ? (normalised.schemas as string[]) : [])];
  }
  const coerced = coerceResource('User', normalised);
  delete coerced.meta;
  return coerced;
}

async function requireAccount(ctx: RequestContext, id: string, forUpdate: boolean, db = ctx.db): Promise<AccountResource> {
  const row = isUuid(id) ? await findSyncedAccount(db, ctx.tenantId, id, forUpdate) : undefined;
  if (!row) throw notFound(`No user ${id}.`);
  return row;
}

/** The account's values after a PatchOp message, or undefined when it changes nothing. */
async function patchedValues(ctx: RequestContext, row: AccountResource, body: unknown): Promise<AccountValues | undefined> {
  const patched = await patchUserDocument(userAttributes(row), body);
  return patched === undefined ? undefined : fromScimUser(patched, ctx.roleMapping);
}

/** The addresses (lower-case) an account is known by: its userName and link e-mail. */
function addresses(values: AccountValues): string[] {
  return [...new Set([values.user_name, values.email].filter((a): a is string => a !== null).map((a) => a.toLowerCase()))];
}

function inVerifiedDomain(address: string, domains: readonly string[]): boolean {
  const at = address.lastIndexOf('@');
  return at > 0 && domains.includes(address.slice(at + 1));
}

/** Rule 3 refused a write; the conflict is recorded after the rollback. */
class AdminCollision extends Error {
  constructor(
    readonly adminId: string,
    readonly ref: string,
  ) {
    super('admin collision');
  }
}

async function refuseAdminCollision(ctx: RequestContext, collision: AdminCollision): Promise<never> {
  const detail =
    `The userName or e-mail "${collision.ref}" belongs to a portal admin account, which sync never changes. ` +
    'Give the Entra user another address, or ask the portal team to resolve the conflict.';
  await recordConflict(ctx.db, {
    tenantId: ctx.tenantId,
    kind: 'admin-collision',
    objectType: 'user',
    objectRef: collision.ref,
    accountId: collision.adminId,
    requestId: ctx.requestId,
    detail,
  });
  await recordAudit(ctx.db, {
    tenantId: ctx.tenantId,
    action: 'conflict',
    objectType: 'user',
    objectId: collision.adminId,
    objectRef: collision.ref,
    outcome: 'conflict',
    credentialId: ctx.credentialId,
    requestId: ctx.requestId,
    details: { reason: 'admin-collision' },
  });
  ctx.markAudited();
  throw new ScimError(409, 'uniqueness', detail);
}

async function withAdminGuard<T>(ctx: RequestContext, run: () => Promise<T>): Promise<T> {
  try {
    return await run();
  } catch (error) {
    if (error instanceof AdminCollision) return refuseAdminCollision(ctx, error);
    throw error;
  }
}

function auditAction(before: AccountResource, after: AccountResource): 'deactivate' | 'reactivate' | 'update' {
  if (before.active && !after.active) return 'deactivate';
  if (!before.active && after.active) return 'reactivate';
  return 'update';
}

/** The audit event of a change, or undefined when no attribute changed. */
function updateEvent(ctx: RequestContext, before: AccountResource, after: AccountResource): AuditEvent | undefined {
  const changed = changedAttributes(userAttributes(before), userAttributes(after));
  if (changed.length === 0) return undefined;
  return {
    tenantId: ctx.tenantId,
    action: auditAction(before, after),
    objectType: 'user',
    objectId: after.id,
    objectRef: after.user_name,
    outcome: 'success',
    credentialId: ctx.credentialId,
    requestId: ctx.requestId,
    details: { changed, ...(before.role !== after.role ? { role: after.role } : {}) },
  };
}

async function auditUpdate(trx: Parameters<typeof recordAudit>[0], ctx: RequestContext, before: AccountResource, after: AccountResource): Promise<void> {
  const event = updateEvent(ctx, before, after);
  if (event) await recordAudit(trx, event);
}

/** Stores a changed account after rule 3's check, and audits what changed. */
async function saveUpdate(trx: Parameters<typeof recordAudit>[0], ctx: RequestContext, row: AccountResource, values: AccountValues): Promise<AccountRow> {
  const admin = await findAdminCollision(trx, ctx.tenantId, addresses(values), row.id);
  if (admin) throw new AdminCollision(admin.id, values.user_name);
  const updated = await updateSyncedAccount(trx, ctx.tenantId, row.id, values);
  await auditUpdate(trx, ctx, row, updated);
  return updated;
}

/**
 * Writes the values a PatchOp made of `row` in one statement with its audit
 * event, while the account still has row's version and no admin collides.
 * Undefined when nothing was written: no values (the PATCH changes nothing,
 * or `row` is one this instance saw earlier and the message does not apply
 * to it), or the account moved on.
 */
async function patchAtVersion(ctx: RequestContext, row: AccountResource, values: AccountValues | undefined): Promise<Json | undefined> {
  if (values === undefined) return undefined;
  const saved = await updateAccountAtVersion(ctx.db, ctx.tenantId, row.id, row.version, values, addresses(values), updateEvent(ctx, row, { ...row, ...values }));
  return saved && toScimUser(ctx.seenAccounts.remember(ctx.tenantId, saved), ctx.baseUrl);
}

export const users: ResourceHandler = {
  name: 'User',
  endpoint: ENDPOINT,

  async create(ctx, body) {
    const values = fromScimUser(inbound(body), ctx.roleMapping);
    // Most creates collide with no admin and adopt nothing: one statement
    // writes the account and its audit event. Otherwise the path below decides.
    const known = addresses(values);
    const adoptable = known.filter((a) => inVerifiedDomain(a, ctx.verifiedDomains));
    const created = await insertUnclaimedAccount(ctx.db, ctx.tenantId, values, { known, adoptable }, { credentialId: ctx.credentialId, requestId: ctx.requestId });
    if (created) return toScimUser(ctx.seenAccounts.remember(ctx.tenantId, created), ctx.baseUrl);
    return withAdminGuard(ctx, () =>
      ctx.db.transaction().execute(async (trx) => {
        const admin = await findAdminCollision(trx, ctx.tenantId, known);
        if (admin) throw new AdminCollision(admin.id, values.user_name);
        // Rule 8, then rule 2: an account that was ours (same Entra object), else
        // a manual account with the same address in a verified domain.
        const byExternalId = values.external_id ? await findAdoptableByExternalId(trx, ctx.tenantId, values.external_id) : undefined;
        const candidate =
          byExternalId ??
          (await findAdoptableByAddress(trx, ctx.tenantId, adoptable));
        const audit = { tenantId: ctx.tenantId, objectType: 'user' as const, outcome: 'success' as const, credentialId: ctx.credentialId, requestId: ctx.requestId };
        if (candidate) {
          const adopted = await adoptAccount(trx, ctx.tenantId, candidate.id, values);
          await recordAudit(trx, {
            ...audit,
            action: 'adopt',
            objectId: adopted.id,
            objectRef: adopted.user_name,
            details: {
              matchedBy: byExternalId ? 'externalId' : 'address',
              portalAccount: { id: candidate.id, userName: candidate.user_name },
              entraObject: { externalId: values.external_id, userName: values.user_name },
            },
          });
          return toScimUser(adopted, ctx.baseUrl);
        }
        const row = await insertSyncedAccount(trx, ctx.tenantId, values);
        await recordAudit(trx, { ...audit, action: 'create', objectId: row.id, objectRef: row.user_name, details: { role: row.role } });
        return toScimUser(row, ctx.baseUrl);
      }),
    );
  },

  async get(ctx, id) {
    return toScimUser(ctx.seenAccounts.remember(ctx.tenantId, await requireAccount(ctx, id, false)), ctx.baseUrl);
  },

  async list(ctx, params) {
    // Entra's lookup before every create: a statement of its own.
    const lookup = params.filter && !params.sortBy && params.startIndex === 1 && params.count > 0 ? columnLookup('User', params.filter) : undefined;
    if (lookup) {
      const { rows, total } = await lookupSyncedAccounts(ctx.db, ctx.tenantId, lookup, params.count);
      return { total, resources: rows.map((r) => toScimUser(ctx.seenAccounts.remember(ctx.tenantId, r), ctx.baseUrl)) };
    }
    const where = params.filter ? filterToSql('User', params.filter) : undefined;
    const orderBy = params.sortBy ? sortExpression('User', params.sortBy) : undefined;
    const { rows, total } = await listSyncedAccounts(ctx.db, ctx.tenantId, {
      ...(where ? { where } : {}),
      ...(orderBy ? { orderBy } : {}),
      descending: params.descending,
      offset: params.startIndex - 1,
      limit: params.count,
    });
    return { total, resources: rows.map((r) => toScimUser(r, ctx.baseUrl)) };
  },

  async replace(ctx, id, body, ifMatch) {
    const resource = inbound(body);
    ctx.seenAccounts.forget(ctx.tenantId, id);
    return withAdminGuard(ctx, () =>
      ctx.db.transaction().execute(async (trx) => {
        const row = await requireAccount(ctx, id, true, trx);
        checkIfMatch(ifMatch, row.version);
        return toScimUser(await saveUpdate(trx, ctx, row, fromScimUser(resource, ctx.roleMapping)), ctx.baseUrl);
      }),
    );
  },

  async patch(ctx, id, body, ifMatch) {
    // The account as this instance last saw it (Entra's lookup or create just
    // before), changed in one statement if it still has that version.
    const seen = ifMatch === undefined ? ctx.seenAccounts.get(ctx.tenantId, id) : undefined;
    if (seen) {
      // A message the remembered user refuses may suit the current one: the
      // usual path below decides, and answers its own error.
      const saved = await patchAtVersion(ctx, seen, await patchedValues(ctx, seen, body).catch(() => undefined));
      if (saved) return saved;
    }
    // Read without a lock and write only if the row kept its version and no
    // admin collides; a concurrent change or a collision takes the locked path.
    const row = await requireAccount(ctx, id, false);
    checkIfMatch(ifMatch, row.version);
    const values = await patchedValues(ctx, row, body);
    if (values === undefined) return toScimUser(ctx.seenAccounts.remember(ctx.tenantId, row), ctx.baseUrl);
    const saved = await patchAtVersion(ctx, row, values);
    if (saved) return saved;
    ctx.seenAccounts.forget(ctx.tenantId, id);
    return withAdminGuard(ctx, () =>
      ctx.db.transaction().execute(async (trx) => {
        const row = await requireAccount(ctx, id, true, trx);
        checkIfMatch(ifMatch, row.version);
        const values = await patchedValues(ctx, row, body);
        if (values === undefined) return toScimUser(row, ctx.baseUrl);
        return toScimUser(await saveUpdate(trx, ctx, row, values), ctx.baseUrl);
      }),
    );
  },

  async remove(ctx, id, ifMatch) {
    ctx.seenAccounts.forget(ctx.tenantId, id);
    // Without If-Match the delete and its audit event are one statement.
    if (ifMatch === undefined && isUuid(id)) {
      if (await deleteSyncedAccountNow(ctx.db, ctx.tenantId, id, { credentialId: ctx.credentialId, requestId: ctx.requestId })) return;
      throw notFound(`No user ${id}.`);
    }
    await ctx.db.transaction().execute(async (trx) => {
      const row = await requireAccount(ctx, id, true, trx);
      checkIfMatch(ifMatch, row.version);
      await deleteSyncedAccount(trx, ctx.tenantId, row.id);
      await recordAudit(trx, {
        tenantId: ctx.tenantId,
        action: 'delete',
        objectType: 'user',
        objectId: row.id,
        objectRef: row.user_name,
        outcome: 'success',
        credentialId: ctx.credentialId,
        requestId: ctx.requestId,
      });
    });
  },
};
