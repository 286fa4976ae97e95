// SCIM Groups are the portal's classes. Member changes never go through
// scimmy's read-patch-write of the member list: they are split off the PATCH
// and applied in SQL as set operations, so a class of 10,000 costs what a
// class of 10 does. Each write reads what its planner (class-writes.ts)
// decides on and runs the plan the one way (write.ts).
import { randomUUID } from 'node:crypto';
import {
  countSyncedMembers,
  findAdoptableClass,
  findMemberCandidates,
  findSyncedClass,
  type ClassLock,
  isClassNameTaken,
  listSyncedClasses,
  listSyncedMembers,
  lookupSyncedClasses,
  type ClassRow,
  type Member,
} from '../db/classes.js';
import type { Executor } from '../db/database.js';
import { UniqueViolation } from '../db/errors.js';
import { isUuid } from '../db/ids.js';
import type { ClassPlan, ClassValues } from '../db/write-plan.js';
import { executeClassPlan, type ClassWrite } from '../db/write-statements.js';
import { badRequest, conflict, notFound } from '../errors.js';
import type { FilterNode } from './filter.js';
import { columnLookup, filterCriteria, sortKey } from './filter-criteria.js';
import { needsValue, normaliseResource, readPatchOperations, type RawOperation } from './entra-dialect.js';
import { planClassChange, planClassCreate, planClassDelete, type ClassSituation } from './class-writes.js';
import { patchGroupDocument } from './patch.js';
import { changedAttributes, checkIfMatch, meta, type Json, type RequestContext, type ResourceHandler } from './resource.js';
import { LIST_MEMBERS, MAX_MEMBERS_PER_REQUEST, checkStringLengths, fitting } from './limits.js';
import { namedMembers, netMemberChange, type MemberOp } from './rules/class-members.js';
import { resolvePatchPath } from './schema-index.js';
import { GROUP_SCHEMA, coerceResource } from './schemas.js';
import { actorOf, deleteSteps, runWrite, type Step, type Write } from './write.js';

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

function changedGroupAttributes(before: ClassRow, after: ClassValues): string[] {
  return changedAttributes({ ...before.scim, displayName: before.display_name }, { ...after.scim, displayName: after.display_name });
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

/** Ids named by a members[...] filter: value eq "id", joined by or. */
function idsFromMemberFilter(node: FilterNode): string[] {
  if (node.kind === 'compare' && node.op === 'eq' && node.path.name.toLowerCase() === 'value' && typeof node.value === 'string') {
    return [node.value.toLowerCase()];
  }
  if (node.kind === 'or') return node.nodes.flatMap(idsFromMemberFilter);
  throw badRequest('invalidFilter', 'A members filter in a path must be value eq "<id>" (or several joined by or).');
}

interface SplitPatch {
  memberChanges: MemberOp[];
  others: RawOperation[];
}

function isMembersKey(key: string): boolean {
  return key.toLowerCase() === 'members' || key.toLowerCase() === `${GROUP_SCHEMA.toLowerCase()}:members`;
}

/**
 * An add or a replace of members without a value names nobody: refused rather
 * than read as "no members", which a replace would apply to the whole class.
 */
function present(members: unknown, index: number, op: string): unknown {
  if (members === undefined || members === null) throw needsValue(index, op);
  return members;
}

/** Splits member operations (done in SQL) from the rest (done by scimmy). */
function splitPatch(body: unknown): SplitPatch {
  const memberChanges: MemberOp[] = [];
  const others: RawOperation[] = [];
  for (const [index, raw] of readPatchOperations(body).entries()) {
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
      if (op === 'add') memberChanges.push({ kind: 'add', ids: memberIds(present(value, index, op)) });
      else if (op === 'replace') memberChanges.push({ kind: 'replace', ids: memberIds(present(value, index, op)) });
      else if (op === 'remove') memberChanges.push(value === undefined || value === null ? { kind: 'removeAll' } : { kind: 'remove', ids: memberIds(value) });
      else others.push(raw);
      continue;
    }
    // Path-less: the value may carry members beside other attributes.
    if ((op === 'add' || op === 'replace') && typeof value === 'object' && value !== null && !Array.isArray(value)) {
      const rest: Json = {};
      for (const [k, v] of Object.entries(value as Json)) {
        if (isMembersKey(k)) memberChanges.push({ kind: op, ids: memberIds(present(v, index, op)) });
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

async function readClass(ctx: RequestContext, db: Executor, id: string, lock?: ClassLock): Promise<ClassRow> {
  const row = isUuid(id) ? await findSyncedClass(db, ctx.tenant.id, id, lock) : undefined;
  if (!row) throw notFound(`No group ${id}.`);
  return row;
}

/** What a locked read knows of the rows in a write's way (see ClassSituation). */
async function situation(ctx: RequestContext, trx: Executor, named: readonly string[], rename: { name: string; except: string | undefined } | undefined): Promise<Exclude<ClassSituation, 'unread'>> {
  const found = await findMemberCandidates(trx, ctx.tenant.id, named.filter(isUuid));
  const notUsers = named.filter((id) => !found.has(id));
  const nameTaken = rename !== undefined && ctx.tenant.classNames === 'unique' && (await isClassNameTaken(trx, ctx.tenant.id, rename.name, rename.except));
  return { notUsers, nameTaken };
}

interface Written extends ClassWrite {
  adopted: boolean;
}

type ClassStep = Step<ClassPlan, Written>;

/** Runs a class write; an externalId another class holds (or took meanwhile) is 409, naming the externalId the write planned. */
async function writeClass(
  ctx: RequestContext,
  externalId: () => string | null,
  ifMatch: string | undefined,
  write: Pick<Write<ClassPlan, Written>, 'quick' | 'locked'>,
): Promise<Written> {
  try {
    return await runWrite(ctx, {
      ...write,
      execute: async (db, plan, run) => {
        // The locked path plans from the row it holds; only If-Match asks it to check the version again.
        const written = await executeClassPlan(db, plan, run === 'locked' && ifMatch === undefined ? 'held' : 'guard');
        return written && { ...written, adopted: plan.kind === 'update' && plan.adopt };
      },
    });
  } catch (error) {
    if (error instanceof UniqueViolation && error.constraint === 'classes_external_id_key') {
      throw conflict(`A group with externalId "${externalId() ?? ''}" already exists.`);
    }
    throw error;
  }
}

function writtenRow(written: Written): ClassRow {
  if (!written.row) throw new Error('a class write that writes returns its row');
  return written.row;
}

/** The changed document of a PATCH's non-member operations, with the names it changes. */
async function patchedValues(ctx: RequestContext, row: ClassRow, others: readonly RawOperation[]): Promise<{ values: ClassValues | undefined; changed: string[] }> {
  const patched = await patchGroupDocument(toScimGroup(row, ctx.baseUrl, undefined), others);
  if (patched === undefined) return { values: undefined, changed: [] };
  const values = fromScimGroup(patched);
  return { values, changed: changedGroupAttributes(row, values) };
}

// Any change of the name, in case too, is checked against the other names:
// the database folds them with lower(), which in a database whose ctype is
// C leaves letters other than ASCII as they are.
const renameOf = (row: ClassRow, values: ClassValues | undefined) =>
  values !== undefined && values.display_name !== row.display_name ? { name: values.display_name, except: row.id } : undefined;

export const groups: ResourceHandler = {
  name: 'Group',
  endpoint: ENDPOINT,

  async create(ctx, body) {
    const { values, members } = inbound(body);
    const ids = members ?? [];
    const actor = actorOf(ctx);
    const id = randomUUID();
    const written = await writeClass(ctx, () => values.external_id, undefined, {
      // Most creates have no members and adopt nothing: the guards check it.
      quick: [async () => (ids.every(isUuid) ? { plan: planClassCreate(actor, ctx.tenant.classNames, values, ids, 'unread', id) } : undefined)],
      locked: async (trx) => {
        // Rule 8: a class this tenant synced before its disconnect is adopted again.
        const adoptable = values.external_id ? await findAdoptableClass(trx, ctx.tenant.id, values.external_id) : undefined;
        const known = await situation(ctx, trx, ids, { name: values.display_name, except: adoptable?.id });
        return { plan: planClassCreate(actor, ctx.tenant.classNames, values, ids, { ...known, adoptable }, id) };
      },
    });
    const row = writtenRow(written);
    return toScimGroup(row, ctx.baseUrl, members || written.adopted ? await listSyncedMembers(ctx.db, ctx.tenant.id, [row.id]) : []);
  },

  async get(ctx, id, withMembers) {
    const row = await readClass(ctx, ctx.db, id);
    return toScimGroup(row, ctx.baseUrl, withMembers ? await listSyncedMembers(ctx.db, ctx.tenant.id, [row.id]) : undefined);
  },

  async list(ctx, params) {
    // Entra's lookup before every create: a statement of its own.
    const lookup = params.filter && !params.sortBy && params.startIndex === 1 && params.count > 0 ? columnLookup('Group', params.filter) : undefined;
    const where = params.filter && !lookup ? filterCriteria('Group', params.filter) : undefined;
    const sortBy = params.sortBy ? sortKey('Group', params.sortBy) : undefined;
    const { rows, total } = lookup
      ? await lookupSyncedClasses(ctx.db, ctx.tenant.id, lookup, params.count)
      : await listSyncedClasses(ctx.db, ctx.tenant.id, {
          ...(where ? { where } : {}),
          ...(sortBy ? { sortBy } : {}),
          descending: params.descending,
          offset: params.startIndex - 1,
          limit: params.count,
        });
    if (!params.withMembers) return { total, resources: rows.map((r) => toScimGroup(r, ctx.baseUrl, undefined)) };
    const counts = await countSyncedMembers(ctx.db, ctx.tenant.id, rows.map((r) => r.id));
    const page = rows.slice(0, fitting(rows.map((r) => counts.get(r.id) ?? 0), LIST_MEMBERS));
    const byClass = new Map<string, Member[]>();
    for (const member of await listSyncedMembers(ctx.db, ctx.tenant.id, page.map((r) => r.id))) {
      const list = byClass.get(member.classId);
      if (list) list.push(member);
      else byClass.set(member.classId, [member]);
    }
    return { total, resources: page.map((r) => toScimGroup(r, ctx.baseUrl, byClass.get(r.id) ?? [])) };
  },

  async replace(ctx, id, body, ifMatch) {
    const { values, members } = inbound(body);
    const ids = members ?? [];
    const actor = actorOf(ctx);
    // PUT replaces the synced members; members added by hand stay (rule 5).
    const plan = (row: ClassRow, known: ClassSituation) =>
      planClassChange(actor, ctx.tenant.classNames, row.id, row, { values, changed: changedGroupAttributes(row, values), members: { kind: 'replace', members: ids }, named: ids }, known);
    const written = await writeClass(ctx, () => values.external_id, ifMatch, {
      quick: [
        async () => {
          if (!ids.every(isUuid)) return undefined;
          const row = await readClass(ctx, ctx.db, id);
          checkIfMatch(ifMatch, row.version);
          return { plan: plan(row, 'unread') };
        },
      ],
      locked: async (trx) => {
        const row = await readClass(ctx, trx, id, 'no key update');
        checkIfMatch(ifMatch, row.version);
        return { plan: plan(row, await situation(ctx, trx, ids, renameOf(row, values))) };
      },
    });
    // A replacement that changed nothing wrote no row: the class as it is now.
    const row = written.row ?? (await readClass(ctx, ctx.db, id));
    return toScimGroup(row, ctx.baseUrl, await listSyncedMembers(ctx.db, ctx.tenant.id, [row.id]));
  },

  async patch(ctx, id, body, ifMatch) {
    // The message is read and checked before the database is touched.
    const split = splitPatch(body);
    // Ids that are not user ids are no member to remove.
    const ops = split.memberChanges.map((op): MemberOp => (op.kind === 'remove' ? { kind: 'remove', ids: op.ids.filter(isUuid) } : op));
    const members = netMemberChange(ops);
    const named = namedMembers(ops);
    const { others } = split;
    const actor = actorOf(ctx);
    // Before the quick member batch, which would hand PostgreSQL the id to cast.
    if (!isUuid(id)) throw notFound(`No group ${String(id)}.`);
    let externalId: string | null = null;
    const fromRow = async (row: ClassRow, known: (values: ClassValues | undefined) => Promise<ClassSituation>): Promise<ClassStep> => {
      const { values, changed } = await patchedValues(ctx, row, others);
      if (values) externalId = values.external_id;
      if (values === undefined && members === undefined) return { done: { row, memberChanges: 0, adopted: false } };
      return { plan: planClassChange(actor, ctx.tenant.classNames, row.id, row, { values, changed, members, named }, await known(values)) };
    };
    await writeClass(ctx, () => externalId, ifMatch, {
      quick: [
        async () => {
          if (!named.every(isUuid)) return undefined;
          // Entra's member batch needs no read: the guards find the class and the users.
          if (others.length === 0 && ifMatch === undefined && members !== undefined) {
            return { plan: planClassChange(actor, ctx.tenant.classNames, id, undefined, { values: undefined, changed: [], members, named }, 'unread') };
          }
          const row = await readClass(ctx, ctx.db, id);
          checkIfMatch(ifMatch, row.version);
          return fromRow(row, async () => 'unread');
        },
      ],
      locked: async (trx) => {
        const row = await readClass(ctx, trx, id, 'no key update');
        checkIfMatch(ifMatch, row.version);
        return fromRow(row, (values) => situation(ctx, trx, named, renameOf(row, values)));
      },
    });
    return undefined;
  },

  async remove(ctx, id, ifMatch) {
    const actor = actorOf(ctx);
    if (!isUuid(id)) throw notFound(`No group ${String(id)}.`);
    await writeClass(ctx, () => null, ifMatch, deleteSteps(ifMatch, (db, forUpdate) => readClass(ctx, db ?? ctx.db, id, forUpdate ? 'update' : undefined), (row) => planClassDelete(actor, id, row)));
  },
};
