// SCIM Users: the mappers between accounts rows and SCIM resources, and the
// operations the generic routes call. Each write reads what its planner
// (user-writes.ts) decides on and runs the plan the one way (write.ts).
import { randomUUID } from 'node:crypto';
import {
  findAdminCollision,
  findAdoptableByAddress,
  findByExternalId,
  findSyncedAccount,
  listSyncedAccounts,
  lookupSyncedAccounts,
  type AccountResource,
} from '../db/accounts.js';
import { findAliasTarget } from '../db/account-repairs.js';
import type { Executor } from '../db/database.js';
import { UniqueViolation } from '../db/errors.js';
import { isUuid } from '../db/ids.js';
import type { AccountValues, AccountWritePlan, DeletePlan } from '../db/write-plan.js';
import { executeAccountDelete, executeAccountPlan, type DeletedAccount } from '../db/write-statements.js';
import { badRequest, conflict, notFound } from '../errors.js';
import { columnLookup, filterCriteria, sortKey } from './filter-criteria.js';
import { keepOnePrimary, normaliseResource, withManagerRef } from './entra-dialect.js';
import { patchUserDocument, stripServerAttributes } from './patch.js';
import { checkIfMatch, meta, type Json, type RequestContext, type ResourceHandler } from './resource.js';
import { LIST_DOCUMENT_BYTES, MAX_VALUES_PER_ATTRIBUTE, checkStringLengths } from './limits.js';
import { resolveRole } from './rules/roles.js';
import { addresses, inVerifiedDomain, linkEmail } from './rules/adoption.js';
import { addressesTaken } from './rules/admin-guard.js';
import { activeAfterReplace, isActive } from './rules/deprovisioning.js';
import { PORTAL_SCHEMA, USER_SCHEMA, coerceResource } from './schemas.js';
import { planUserChange, planUserCreate, planUserDelete } from './user-writes.js';
import { actorOf, deleteSteps, runWrite, type Step, type Write } from './write.js';

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

/** Validated SCIM document -> the account columns (rule 4 decides the role). */
export function fromScimUser(resource: Json, roleMapping: Readonly<Record<string, string>>, before?: Json): AccountValues {
  const userName = str(resource.userName);
  if (userName === null) throw badRequest('invalidValue', 'userName is required and must not be empty.');
  checkStringLengths(resource, MAX_VALUES_PER_ATTRIBUTE, before);
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
    active: isActive(active),
    role: resolveRole(resource, roleMapping),
    scim: withoutEmptyObjects({ ...scim, ...(str(externalId) !== null ? { externalId } : {}) }),
  };
}

/**
 * The document without attributes or extensions left with nothing in them (a
 * PATCH that removed every part of name, an extension whose attributes were
 * all unknown): an unassigned attribute is left out, not stored empty (RFC 7643 §2.5).
 */
function withoutEmptyObjects(document: Json): Json {
  for (const key in document) {
    const value = document[key];
    // A key whose value is undefined is no value: JSON leaves it out.
    if (typeof value === 'object' && value !== null && !Array.isArray(value) && Object.values(value).every((v) => v === undefined)) delete document[key];
  }
  return document;
}

/** Body -> validated document, for POST and PUT. */
function inbound(body: unknown): Json {
  const normalised = stripServerAttributes(normaliseResource('User', body));
  if (!Array.isArray(normalised.schemas) || !normalised.schemas.includes(USER_SCHEMA)) {
    // Entra always names the core schema; accept a body that forgot it.
    normalised.schemas = [USER_SCHEMA, ...(Array.isArray(normalised.schemas) ? (normalised.schemas as string[]) : [])];
  }
  const coerced = keepOnePrimary(coerceResource('User', normalised));
  delete coerced.meta;
  return coerced;
}

/**
 * The synced account an id names: its own, or after a merge the kept
 * account's, as Entra keeps using the absorbed account's id (an alias).
 */
async function readAccount(ctx: RequestContext, db: Executor, id: string, forUpdate: boolean): Promise<AccountResource> {
  if (!isUuid(id)) throw notFound(`No user ${String(id)}.`);
  let row = await findSyncedAccount(db, ctx.tenant.id, id, forUpdate);
  if (!row) {
    const target = await findAliasTarget(db, ctx.tenant.id, id);
    if (target !== undefined) row = await findSyncedAccount(db, ctx.tenant.id, target, forUpdate);
  }
  if (!row) throw notFound(`No user ${id}.`);
  return row;
}

type UserStep = Step<AccountWritePlan, AccountResource>;

/**
 * What a step does with a change that has no event, which changes nothing:
 * `answer` with the account as read (a PUT of the account as it is: no
 * write, no new version, nothing in the change feed), or `write` it anyway
 * (a PATCH, which compares documents itself and whose remembered account is
 * never an answer by itself, see seen-accounts.ts).
 */
type Unchanged = 'answer' | 'write';

/** The plan of a change of `row` into `values`; `admin` as planUserChange takes it. */
function changeStep(ctx: RequestContext, row: AccountResource, values: AccountValues, admin: Parameters<typeof planUserChange>[4], unchanged: Unchanged): UserStep {
  const attributes = { before: userAttributes(row), after: userAttributes({ ...row, ...values }) };
  const plan = planUserChange(actorOf(ctx), row, attributes, values, admin);
  return unchanged === 'answer' && plan.events.audit === undefined ? { done: row } : { plan };
}

/** A change planned from the account read and locked in `trx`, with rule 3 read for the addresses it takes. */
async function lockedChange(
  ctx: RequestContext,
  trx: Executor,
  id: string,
  ifMatch: string | undefined,
  valuesOf: (row: AccountResource) => Promise<AccountValues | undefined>,
  unchanged: Unchanged,
): Promise<UserStep> {
  const row = await readAccount(ctx, trx, id, true);
  checkIfMatch(ifMatch, row.version);
  const values = await valuesOf(row);
  if (values === undefined) return { done: row };
  if (unchanged === 'answer') {
    // A change that changes nothing is answered before rule 3 is read, as the quick path answers it.
    const nothing = changeStep(ctx, row, values, 'unread', unchanged);
    if ('done' in nothing) return nothing;
  }
  return changeStep(ctx, row, values, await findAdminCollision(trx, ctx.tenant.id, addressesTaken(row, values), row.id), unchanged);
}

/** Runs a user write; a userName taken meanwhile by a concurrent create is 409, as Entra expects. */
async function writeUser(ctx: RequestContext, userName: () => string, write: Pick<Write<AccountWritePlan, AccountResource>, 'quick' | 'locked'>): Promise<AccountResource> {
  try {
    return await runWrite(ctx, { ...write, execute: executeAccountPlan });
  } catch (error) {
    if (error instanceof UniqueViolation && error.constraint === 'accounts_synced_user_name_key') {
      throw conflict(`A user with userName "${userName()}" already exists (userName is unique in any case).`);
    }
    throw error;
  }
}

/** The answer of a write, remembered as the base of the account's next PATCH (seen-accounts.ts). */
function answer(ctx: RequestContext, row: AccountResource): Json {
  return toScimUser(ctx.seenAccounts.remember(ctx.tenant.id, row), ctx.baseUrl);
}

export const users: ResourceHandler = {
  name: 'User',
  endpoint: ENDPOINT,

  async create(ctx, body) {
    const values = fromScimUser(inbound(body), ctx.tenant.roleMapping);
    const actor = actorOf(ctx);
    const { verifiedDomains } = ctx.tenant;
    const known = addresses(values);
    const id = randomUUID();
    const written = await writeUser(ctx, () => values.user_name, {
      // Most creates collide with no admin and adopt nothing: the guards check it.
      quick: [async () => ({ plan: planUserCreate(actor, verifiedDomains, values, 'unread', id) })],
      locked: async (trx) => {
        const admin = await findAdminCollision(trx, actor.tenantId, known);
        const byExternalId = values.external_id === null ? undefined : await findByExternalId(trx, actor.tenantId, values.external_id);
        if (byExternalId?.managed_by === 'sync') {
          // Entra creates again the object it already has here (it lost track
          // of it). Sent as it is, it changes nothing: no version, no feed row, no event.
          const unchanged = changeStep(ctx, byExternalId, values, admin, 'answer');
          if ('done' in unchanged) return unchanged;
        }
        const adoptable = known.filter((a) => inVerifiedDomain(a, verifiedDomains));
        const byAddress = byExternalId ? undefined : await findAdoptableByAddress(trx, actor.tenantId, adoptable);
        return { plan: planUserCreate(actor, verifiedDomains, values, { admin, byExternalId, byAddress }, id) };
      },
    });
    return answer(ctx, written);
  },

  async get(ctx, id) {
    return answer(ctx, await readAccount(ctx, ctx.db, id, false));
  },

  async list(ctx, params) {
    // Entra's lookup before every create: a statement of its own.
    const lookup = params.filter && !params.sortBy && params.startIndex === 1 && params.count > 0 ? columnLookup('User', params.filter) : undefined;
    if (lookup) {
      const { rows, total } = await lookupSyncedAccounts(ctx.db, ctx.tenant.id, lookup, params.count);
      return { total, resources: rows.map((r) => answer(ctx, r)) };
    }
    const where = params.filter ? filterCriteria('User', params.filter) : undefined;
    const sortBy = params.sortBy ? sortKey('User', params.sortBy) : undefined;
    const query = {
      ...(where ? { where } : {}),
      ...(sortBy ? { sortBy } : {}),
      descending: params.descending,
      offset: params.startIndex - 1,
      limit: params.count,
    };
    const { rows, total } = await listSyncedAccounts(ctx.db, ctx.tenant.id, query, LIST_DOCUMENT_BYTES);
    return { total, resources: rows.map((r) => toScimUser(r, ctx.baseUrl)) };
  },

  async replace(ctx, id, body, ifMatch) {
    const resource = inbound(body);
    const values = fromScimUser(resource, ctx.tenant.roleMapping);
    const valuesFor = (row: AccountResource): AccountValues => ({ ...values, active: activeAfterReplace(resource.active, row.active) });
    return forgetting(ctx, id, async () => {
      const written = await writeUser(ctx, () => values.user_name, {
        quick: [
          async () => {
            const row = await readAccount(ctx, ctx.db, id, false);
            checkIfMatch(ifMatch, row.version);
            return changeStep(ctx, row, valuesFor(row), 'unread', 'answer');
          },
        ],
        locked: (trx) => lockedChange(ctx, trx, id, ifMatch, async (row) => valuesFor(row), 'answer'),
      });
      return answer(ctx, written);
    });
  },

  async patch(ctx, id, body, ifMatch) {
    const valuesOf = async (row: AccountResource): Promise<AccountValues | undefined> => {
      const stored = userAttributes(row);
      const patched = await patchUserDocument(stored, body);
      // A document stored with more values than the limit may keep them; a PATCH only may not add more.
      return patched === undefined ? undefined : fromScimUser(patched, ctx.tenant.roleMapping, stored);
    };
    let userName = '';
    const tracked = async (row: AccountResource) => {
      const values = await valuesOf(row);
      if (values) userName = values.user_name;
      return values;
    };
    return forgetting(ctx, id, async () => {
      const written = await writeUser(ctx, () => userName, {
        quick: [
          // The account as this instance last saw it (Entra's lookup or create
          // just before). A message that the remembered user refuses, or that
          // changes nothing of it, may still suit the current one: the read below decides.
          async () => {
            const seen = ifMatch === undefined ? ctx.seenAccounts.get(ctx.tenant.id, id) : undefined;
            const values = seen && (await tracked(seen).catch(() => undefined));
            return seen && values && changeStep(ctx, seen, values, 'unread', 'write');
          },
          async () => {
            const row = await readAccount(ctx, ctx.db, id, false);
            checkIfMatch(ifMatch, row.version);
            const values = await tracked(row);
            return values === undefined ? { done: row } : changeStep(ctx, row, values, 'unread', 'write');
          },
        ],
        locked: (trx) => lockedChange(ctx, trx, id, ifMatch, tracked, 'write'),
      });
      return answer(ctx, written);
    });
  },

  async remove(ctx, id, ifMatch) {
    const actor = actorOf(ctx);
    if (!isUuid(id)) throw notFound(`No user ${String(id)}.`);
    ctx.seenAccounts.forget(ctx.tenant.id, id);
    await runWrite(ctx, {
      ...deleteSteps<AccountResource, DeletePlan, DeletedAccount>(ifMatch, (db, forUpdate) => readAccount(ctx, db ?? ctx.db, id, forUpdate), (row) => planUserDelete(actor, id, row)),
      execute: executeAccountDelete,
    });
  },
};

/** A write that fails leaves this instance's remembered account behind: the next PATCH reads it again. */
async function forgetting<T>(ctx: RequestContext, id: string, run: () => Promise<T>): Promise<T> {
  try {
    return await run();
  } catch (error) {
    ctx.seenAccounts.forget(ctx.tenant.id, id);
    throw error;
  }
}
