// SCIM Groups are the portal's classes. Member changes never go through
// scimmy's read-patch-write of the member list: they are split off the PATCH
// and applied in SQL as set operations, so a class of 10,000 costs what a
// class of 10 does.
import {
  addSyncedMembers,
  addSyncedMembersNow,
  adoptClass,
  findAdoptableClass,
  deleteSyncedClass,
  findMemberCandidates,
  findSyncedClass,
  insertSyncedClass,
  insertUnclaimedClass,
  listSyncedClasses,
  lookupSyncedClasses,
  listSyncedMembers,
  removeSyncedMembers,
  replaceSyncedMembers,
  updateSyncedClass,
  type ClassRow,
  type ClassValues,
  type Member,
} from '../db/classes.js';
import { recordAudit, type AuditAction } from '../db/audit.js';
import type { Database } from '../db/database.js';
import { isUuid } from '../db/ids.js';
import { badRequest, notFound } from '../errors.js';
import type { Transaction } from 'kysely';
import type { FilterNode } from './filter.js';
import { columnLookup, filterToSql, sortExpression } from './filter-sql.js';
import { normaliseResource, readPatchOperations, type RawOperation } from './entra-dialect.js';
import { patchGroupDocument } from './patch.js';
import { resolvePatchPath } from './schema-index.js';
import { changedAttributes, checkIfMatch, meta, type Json, type RequestContext, type ResourceHandler } from './resource.js';
import { MAX_MEMBERS_PER_REQUEST, checkStringLengths } from './limits.js';
import { GROUP_SCHEMA, coerceResource } from './schemas.js';

const ENDPOINT = '/Groups';

export function toScimGroup(row: ClassRow, baseUrl: string, members: Member[] | undefined): Json {
  const { schemas, ...rest } = row.scim as Json & { schemas?: string[] };
  return {
    schemas: Array.isArray(schemas) && schemas.length > 0 ? schemas : [GROUP_SCHEMA],
    id: row.id,
    ...(row.external_id !== null ? { externalId: row.external_id } : {}),
    ...rest,
    displayName: row.display_name,
    ...(members
      ? {
          members: members.map((m) => ({
            value: m.accountId,
            ...(m.display !== null ? { display: m.display } : {}),
            type: 'User',
            $ref: `${baseUrl}/Users/${m.accountId}`,
          })),
        }
      : {}),
    meta: meta('Group', row.id, row.created_at, row.updated_at, row.version, baseUrl, ENDPOINT),
  };
}

function changedGroupAttributes(before: ClassRow, after: ClassRow): string[] {
  return changedAttributes(
    { ...(before.scim), displayName: before.display_name },
    { ...(after.scim), displayName: after.display_name },
  );
}

function fromScimGroup(resource: Json): ClassValues {
  const displayName = typeof resource.displayName === 'string' ? resource.displayName.trim() : '';
  if (displayName === '') throw badRequest('invalidValue', 'displayName is required and must not be empty.');
  checkStringLengths(resource);
  const { externalId, displayName: _d, members: _m, id: _id, meta: _meta, ...scim } = resource;
  const external = typeof externalId === 'string' && externalId !== '' ? externalId : null;
  return {
    display_name: displayName,
    external_id: external,
    school_id: null,
    scim: { ...scim, ...(external !== null ? { externalId: external } : {}) },
  };
}

/** Member ids of a members value ([{value}], {value}, or "id"); anything else is invalidValue. */
function memberIds(value: unknown): string[] {
  const list: unknown[] = Array.isArray(value) ? (value as unknown[]) : value === undefined || value === null ? [] : [value];
  tooManyMembers(list.length);
  const ids = list.map((m) => {
    const id = typeof m === 'string' ? m : typeof m === 'object' && m !== null ? Object.entries(m as Record<string, unknown>).find(([k]) => k.toLowerCase() === 'value')?.[1] : undefined;
    if (typeof id !== 'string' || id.trim() === '') throw badRequest('invalidValue', 'Every member needs a "value" with the id of a user.');
    return id.trim().toLowerCase();
  });
  return [...new Set(ids)];
}

function tooManyMembers(count: number): void {
  if (count > MAX_MEMBERS_PER_REQUEST) {
    throw badRequest('invalidValue', `At most ${MAX_MEMBERS_PER_REQUEST} members may be named in one request; this one names ${count}.`);
  }
}

/** Rule 5: a member must be a user of this tenant; nested groups are not supported. */
async function validMembers(trx: Transaction<Database>, ctx: RequestContext, ids: string[]): Promise<string[]> {
  const malformed = ids.filter((id) => !isUuid(id));
  const found = await findMemberCandidates(trx, ctx.tenantId, ids.filter(isUuid));
  const missing = [...malformed, ...ids.filter((id) => isUuid(id) && !found.has(id))];
  if (missing.length > 0) {
    const shown = missing.slice(0, 5).join(', ');
    throw badRequest(
      'invalidValue',
      `Members must be users of this tenant (nested groups are not supported); not a user here: ${shown}${missing.length > 5 ? ` and ${missing.length - 5} more` : ''}.`,
    );
  }
  return ids;
}

/** Ids named by a members[...] filter: value eq "id", joined by or. */
function idsFromMemberFilter(node: FilterNode): string[] {
  if (node.kind === 'compare' && node.op === 'eq' && node.path.name.toLowerCase() === 'value' && typeof node.value === 'string') {
    return [node.value.toLowerCase()];
  }
  if (node.kind === 'or') return node.nodes.flatMap(idsFromMemberFilter);
  throw badRequest('invalidFilter', 'A members filter in a path must be value eq "<id>" (or several joined by or).');
}

type MemberChange = { kind: 'add' | 'remove' | 'replace'; ids: string[] } | { kind: 'removeAll' };

interface SplitPatch {
  memberChanges: MemberChange[];
  others: RawOperation[];
}

function isMembersKey(key: string): boolean {
  return key.toLowerCase() === 'members' || key.toLowerCase() === `${GROUP_SCHEMA.toLowerCase()}:members`;
}

/** Splits member operations (done in SQL) from the rest (done by scimmy). */
function splitPatch(body: unknown): SplitPatch {
  const memberChanges: MemberChange[] = [];
  const others: RawOperation[] = [];
  for (const raw of readPatchOperations(body)) {
    const op = raw.op.toLowerCase();
    const { path, value } = raw;
    if (typeof path === 'string' && path.trim() !== '') {
      const trimmed = path.trim();
      if (!/^((urn:ietf:params:scim:schemas:core:2\.0:group:)?members)\b/i.test(trimmed)) {
        others.push(raw);
        continue;
      }
      const resolved = resolvePatchPath('Group', trimmed);
      if (resolved.sub) throw badRequest('invalidPath', 'Member sub-attributes cannot be changed; add or remove the member.');
      if (resolved.filter) {
        if (op !== 'remove') throw badRequest('invalidPath', 'A members filter is only supported for remove.');
        memberChanges.push({ kind: 'remove', ids: idsFromMemberFilter(resolved.filter) });
        continue;
      }
      if (op === 'add') memberChanges.push({ kind: 'add', ids: memberIds(value) });
      else if (op === 'replace') memberChanges.push({ kind: 'replace', ids: memberIds(value) });
      else if (op === 'remove') memberChanges.push(value === undefined || value === null ? { kind: 'removeAll' } : { kind: 'remove', ids: memberIds(value) });
      else others.push(raw);
      continue;
    }
    // Path-less: the value may carry members beside other attributes.
    if ((op === 'add' || op === 'replace') && typeof value === 'object' && value !== null && !Array.isArray(value)) {
      const rest: Json = {};
      for (const [k, v] of Object.entries(value as Json)) {
        if (isMembersKey(k)) memberChanges.push({ kind: op, ids: memberIds(v) });
        else rest[k] = v;
      }
      if (Object.keys(rest).length > 0) others.push({ ...raw, value: rest });
      continue;
    }
    others.push(raw);
  }
  tooManyMembers(memberChanges.reduce((n, change) => n + (change.kind === 'removeAll' ? 0 : change.ids.length), 0));
  return { memberChanges, others };
}

async function requireClass(ctx: RequestContext, id: string, forUpdate: boolean, db: Transaction<Database> | RequestContext['db'] = ctx.db): Promise<ClassRow> {
  const row = isUuid(id) ? await findSyncedClass(db, ctx.tenantId, id, forUpdate) : undefined;
  if (!row) throw notFound(`No group ${id}.`);
  return row;
}

function inbound(body: unknown): { values: ClassValues; members: string[] | undefined } {
  const normalised = normaliseResource('Group', body);
  const memberKey = Object.keys(normalised).find(isMembersKey);
  const members = memberKey === undefined ? undefined : memberIds(normalised[memberKey]);
  if (memberKey !== undefined) delete normalised[memberKey];
  delete normalised.id;
  delete normalised.meta;
  if (!Array.isArray(normalised.schemas) || normalised.schemas.length === 0) normalised.schemas = [GROUP_SCHEMA];
  const coerced = coerceResource('Group', normalised);
  delete coerced.meta;
  return { values: fromScimGroup(coerced), members };
}

async function audit(
  trx: Transaction<Database>,
  ctx: RequestContext,
  action: AuditAction,
  row: ClassRow,
  details: Json = {},
): Promise<void> {
  await recordAudit(trx, {
    tenantId: ctx.tenantId,
    action,
    objectType: 'group',
    objectId: row.id,
    objectRef: row.display_name,
    outcome: 'success',
    credentialId: ctx.credentialId,
    requestId: ctx.requestId,
    details,
  });
}

export const groups: ResourceHandler = {
  name: 'Group',
  endpoint: ENDPOINT,

  async create(ctx, body) {
    const { values, members } = inbound(body);
    // Most creates have no members and adopt nothing: one statement writes the
    // class and its audit event. Otherwise the path below decides.
    if (!members || members.length === 0) {
      const created = await insertUnclaimedClass(ctx.db, ctx.tenantId, values, { credentialId: ctx.credentialId, requestId: ctx.requestId });
      if (created) return toScimGroup(created, ctx.baseUrl, []);
    }
    return ctx.db.transaction().execute(async (trx) => {
      // Rule 8: a class this tenant synced before its disconnect is adopted again.
      const previous = values.external_id ? await findAdoptableClass(trx, ctx.tenantId, values.external_id) : undefined;
      const row = previous ? await adoptClass(trx, ctx.tenantId, previous.id, values) : await insertSyncedClass(trx, ctx.tenantId, values);
      let added = 0;
      if (members && members.length > 0) {
        added = await addSyncedMembers(trx, ctx.tenantId, row.id, await validMembers(trx, ctx, members));
      }
      await audit(trx, ctx, previous ? 'adopt' : 'create', row, { membersAdded: added, ...(previous ? { matchedBy: 'externalId' } : {}) });
      return toScimGroup(row, ctx.baseUrl, members || previous ? await listSyncedMembers(trx, ctx.tenantId, [row.id]) : []);
    });
  },

  async get(ctx, id, withMembers) {
    const row = await requireClass(ctx, id, false);
    return toScimGroup(row, ctx.baseUrl, withMembers ? await listSyncedMembers(ctx.db, ctx.tenantId, [row.id]) : undefined);
  },

  async list(ctx, params) {
    // Entra's lookup before every create: a statement of its own.
    const lookup = params.filter && !params.sortBy && params.startIndex === 1 && params.count > 0 ? columnLookup('Group', params.filter) : undefined;
    const where = params.filter && !lookup ? filterToSql('Group', params.filter) : undefined;
    const orderBy = params.sortBy ? sortExpression('Group', params.sortBy) : undefined;
    const { rows, total } = lookup
        ? await lookupSyncedClasses(ctx.db, ctx.tenantId, lookup, params.count)
        : await listSyncedClasses(ctx.db, ctx.tenantId, {
            ...(where ? { where } : {}),
            ...(orderBy ? { orderBy } : {}),
            descending: params.descending,
            offset: params.startIndex - 1,
            limit: params.count,
          });
    if (!params.withMembers) return { total, resources: rows.map((r) => toScimGroup(r, ctx.baseUrl, undefined)) };
    const members = await listSyncedMembers(ctx.db, ctx.tenantId, rows.map((r) => r.id));
    return {
      total,
      resources: rows.map((r) => toScimGroup(r, ctx.baseUrl, members.filter((m) => m.classId === r.id))),
    };
  },

  async replace(ctx, id, body, ifMatch) {
    const { values, members } = inbound(body);
    return ctx.db.transaction().execute(async (trx) => {
      const row = await requireClass(ctx, id, true, trx);
      checkIfMatch(ifMatch, row.version);
      // PUT replaces the synced members; members added by hand stay (rule 5).
      const memberChanges = await replaceSyncedMembers(trx, ctx.tenantId, row.id, await validMembers(trx, ctx, members ?? []));
      const updated = await updateSyncedClass(trx, ctx.tenantId, row.id, values);
      const changed = changedGroupAttributes(row, updated);
      await audit(trx, ctx, 'update', updated, { changed: memberChanges > 0 ? [...changed, 'members'] : changed, memberChanges });
      return toScimGroup(updated, ctx.baseUrl, await listSyncedMembers(trx, ctx.tenantId, [row.id]));
    });
  },

  async patch(ctx, id, body, ifMatch) {
    // The message is read and checked before the database is touched.
    const { memberChanges, others } = splitPatch(body);
    // Entra's member batch (one add and nothing else) is one statement when
    // the class and every member are valid; anything else takes the path below.
    const [only, ...more] = memberChanges;
    if (ifMatch === undefined && others.length === 0 && more.length === 0 && only?.kind === 'add' && isUuid(id) && only.ids.every((m) => isUuid(m))) {
      const added = await addSyncedMembersNow(ctx.db, ctx.tenantId, id, only.ids, { credentialId: ctx.credentialId, requestId: ctx.requestId });
      if (added !== undefined) return undefined;
    }
    await ctx.db.transaction().execute(async (trx) => {
      const row = await requireClass(ctx, id, true, trx);
      checkIfMatch(ifMatch, row.version);
      let changed = 0;
      for (const change of memberChanges) {
        if (change.kind === 'add') changed += await addSyncedMembers(trx, ctx.tenantId, row.id, await validMembers(trx, ctx, change.ids));
        else if (change.kind === 'replace') {
          changed += await replaceSyncedMembers(trx, ctx.tenantId, row.id, await validMembers(trx, ctx, change.ids));
        } else if (change.kind === 'remove') changed += await removeSyncedMembers(trx, ctx.tenantId, row.id, change.ids.filter(isUuid));
        else changed += await removeSyncedMembers(trx, ctx.tenantId, row.id, 'all');
      }
      const patched = await patchGroupDocument(toScimGroup(row, ctx.baseUrl, undefined), others);
      const values = patched && fromScimGroup(patched);
      if (values || changed > 0) {
        const updated = await updateSyncedClass(trx, ctx.tenantId, row.id, values);
        const names = changedGroupAttributes(row, updated);
        await audit(trx, ctx, 'update', updated, { changed: changed > 0 ? [...names, 'members'] : names, memberChanges: changed });
      }
    });
    return undefined;
  },

  async remove(ctx, id, ifMatch) {
    await ctx.db.transaction().execute(async (trx) => {
      const row = await requireClass(ctx, id, true, trx);
      checkIfMatch(ifMatch, row.version);
      await deleteSyncedClass(trx, ctx.tenantId, row.id);
      await audit(trx, ctx, 'delete', row);
    });
  },
};
