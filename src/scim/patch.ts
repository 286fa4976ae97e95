// A PatchOp message applied to a stored SCIM document: the document it makes,
// or undefined when nothing changes. Pure document work, no database: the
// write planners (users.ts, groups.ts) turn the result into a write.
import SCIMMY from 'scimmy';
import { dedupeMultiValued, normalisePatch, scimmyOperation, type RawOperation } from './entra-dialect.js';
import type { Json } from './resource.js';
import { PATCH_OP_SCHEMA, coerceResource, toScimError } from './schemas.js';
import { applySimplePatch } from './simple-patch.js';

/** The attributes no client writes: id, meta, and the groups a user is in. */
export function stripServerAttributes(resource: Json): Json {
  const { id: _id, meta: _meta, groups: _groups, ...rest } = resource;
  return rest;
}

/**
 * The document a PatchOp message makes of a stored user (toScimUser, meta
 * aside), ready for fromScimUser, or undefined when it changes nothing.
 * Simple operations take the direct path (simple-patch.ts); the rest go
 * through scimmy, which validates the whole result. `scimmyOnly` is for the
 * test that compares them.
 */
export async function patchUserDocument(current: Json, body: unknown, options: { scimmyOnly?: boolean } = {}): Promise<Json | undefined> {
  const operations = normalisePatch('User', body, current);
  if (operations.length === 0) return undefined;
  const simple = options.scimmyOnly ? undefined : applySimplePatch(current, operations);
  if (simple) return simple.document && stripServerAttributes(simple.document);
  let patched: unknown;
  try {
    const instance = new SCIMMY.Schemas.User(current, 'both');
    patched = await new SCIMMY.Messages.PatchOp({ schemas: [PATCH_OP_SCHEMA], Operations: operations.map(scimmyOperation) }).apply(instance);
  } catch (error) {
    throw toScimError(error);
  }
  if (patched === undefined) return undefined;
  const resource = coerceResource('User', dedupeMultiValued(stripServerAttributes(JSON.parse(JSON.stringify(patched)) as Json)));
  delete resource.meta;
  return resource;
}

/**
 * The document the non-member operations of a group PatchOp make of a stored
 * class (toScimGroup without members), or undefined when they change
 * nothing. Members are set operations in SQL, never part of the document.
 */
export async function patchGroupDocument(current: Json, operations: readonly RawOperation[]): Promise<Json | undefined> {
  if (operations.length === 0) return undefined;
  const normalised = normalisePatch('Group', { schemas: [PATCH_OP_SCHEMA], Operations: operations }, current);
  if (normalised.length === 0) return undefined;
  let patched: unknown;
  try {
    patched = await new SCIMMY.Messages.PatchOp({ schemas: [PATCH_OP_SCHEMA], Operations: normalised.map(scimmyOperation) }).apply(
      new SCIMMY.Schemas.Group(current, 'both'),
    );
  } catch (error) {
    throw toScimError(error);
  }
  if (patched === undefined) return undefined;
  const json = JSON.parse(JSON.stringify(patched)) as Json;
  delete json.members;
  const coerced = coerceResource('Group', json);
  delete coerced.meta;
  return coerced;
}
