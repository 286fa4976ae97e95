// SCIM Users: the mappers between accounts rows and SCIM resources, and the
// operations the generic routes call.
import SCIMMY from 'scimmy';

import {
  countSyncedAccounts,
  deleteSyncedAccount,
  findSyncedAccount,
  insertSyncedAccount,
  listSyncedAccounts,
  updateSyncedAccount,
  type AccountRow,
  type AccountValues,
} from '../db/accounts.js';
import { isUuid } from '../db/ids.js';
import { badRequest, notFound } from '../errors.js';
import { filterToSql, sortExpression } from './filter-sql.js';
import { dedupeMultiValued, normalisePatch, normaliseResource } from './normalise.js';
import { checkIfMatch, meta, type Json, type RequestContext, type ResourceHandler } from './resource.js';
import { resolveRole } from './roles.js';
import { PATCH_OP_SCHEMA, PORTAL_SCHEMA, USER_SCHEMA, coerceResource, toScimError } from './schemas.js';

const ENDPOINT = '/Users';

/** The stored SCIM document plus id and meta, as clients see it. */
export function toScimUser(row: AccountRow, baseUrl: string): Json {
  const { schemas, ...rest } = row.scim as Json & { schemas?: string[] };
  return {
    schemas: Array.isArray(schemas) && schemas.length > 0 ? schemas : [USER_SCHEMA],
    id: row.id,
    ...(row.external_id !== null ? { externalId: row.external_id } : {}),
    userName: row.user_name,
    ...rest,
    active: row.active,
    meta: meta('User', row.id, row.created_at, row.updated_at, row.version, baseUrl, ENDPOINT),
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
  if (userName.length > 512) throw badRequest('invalidValue', 'userName must be at most 512 characters.');
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

function stripServerAttributes(resource: Json): Json {
  const { id: _id, meta: _meta, groups: _groups, ...rest } = resource;
  return rest;
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

async function requireAccount(ctx: RequestContext, id: string, forUpdate: boolean, db = ctx.db): Promise<AccountRow> {
  const row = isUuid(id) ? await findSyncedAccount(db, ctx.tenantId, id, forUpdate) : undefined;
  if (!row) throw notFound(`No user ${id}.`);
  return row;
}

async function applyPatch(current: Json, body: unknown): Promise<Json | undefined> {
  const operations = normalisePatch('User', body, current);
  if (operations.length === 0) return undefined;
  let patched: unknown;
  try {
    const instance = new SCIMMY.Schemas.User(current, 'both');
    patched = await new SCIMMY.Messages.PatchOp({ schemas: [PATCH_OP_SCHEMA], Operations: operations }).apply(instance);
  } catch (error) {
    throw toScimError(error);
  }
  if (patched === undefined) return undefined;
  return dedupeMultiValued(stripServerAttributes(JSON.parse(JSON.stringify(patched)) as Json));
}

export const users: ResourceHandler = {
  name: 'User',
  endpoint: ENDPOINT,

  async create(ctx, body) {
    const values = fromScimUser(inbound(body), ctx.roleMapping);
    const row = await insertSyncedAccount(ctx.db, ctx.tenantId, values);
    return toScimUser(row, ctx.baseUrl);
  },

  async get(ctx, id) {
    return toScimUser(await requireAccount(ctx, id, false), ctx.baseUrl);
  },

  async list(ctx, params) {
    const where = params.filter ? filterToSql('User', params.filter) : undefined;
    const orderBy = params.sortBy ? sortExpression('User', params.sortBy) : undefined;
    const [total, rows] = await Promise.all([
      countSyncedAccounts(ctx.db, ctx.tenantId, where),
      listSyncedAccounts(ctx.db, ctx.tenantId, {
        ...(where ? { where } : {}),
        ...(orderBy ? { orderBy } : {}),
        descending: params.descending,
        offset: params.startIndex - 1,
        limit: params.count,
      }),
    ]);
    return { total, resources: rows.map((r) => toScimUser(r, ctx.baseUrl)) };
  },

  async replace(ctx, id, body, ifMatch) {
    const resource = inbound(body);
    return ctx.db.transaction().execute(async (trx) => {
      const row = await requireAccount(ctx, id, true, trx);
      checkIfMatch(ifMatch, row.version);
      const updated = await updateSyncedAccount(trx, ctx.tenantId, row.id, fromScimUser(resource, ctx.roleMapping));
      return toScimUser(updated, ctx.baseUrl);
    });
  },

  async patch(ctx, id, body, ifMatch) {
    return ctx.db.transaction().execute(async (trx) => {
      const row = await requireAccount(ctx, id, true, trx);
      checkIfMatch(ifMatch, row.version);
      const current = toScimUser(row, ctx.baseUrl);
      const patched = await applyPatch(current, body);
      if (patched === undefined) return current;
      const resource = coerceResource('User', patched);
      delete resource.meta;
      const updated = await updateSyncedAccount(trx, ctx.tenantId, row.id, fromScimUser(resource, ctx.roleMapping));
      return toScimUser(updated, ctx.baseUrl);
    });
  },

  async remove(ctx, id, ifMatch) {
    await ctx.db.transaction().execute(async (trx) => {
      const row = await requireAccount(ctx, id, true, trx);
      checkIfMatch(ifMatch, row.version);
      await deleteSyncedAccount(trx, ctx.tenantId, row.id);
    });
  },
};

