// A PatchOp message applied to a stored SCIM document: the document it makes,
// or undefined when nothing changes. Pure document work, no database: the
// write planners (users.ts, groups.ts) turn the result into a write.
import SCIMMY from 'scimmy';
import { dedupeMultiValued, keepOnePrimary, expandStep, patchSteps, scimmyOperation, type PatchOperation, type PatchStep, type RawOperation } from './entra-dialect.js';
import { badRequest } from '../errors.js';
import { MAX_PATCH_REREADS } from './limits.js';
import { differ, type Json } from './resource.js';
import { PATCH_OP_SCHEMA, coerceResource, toScimError, type ResourceName } from './schemas.js';
import { applySimplePatch } from './simple-patch.js';

/** The attributes no client writes: id, meta, and the groups a user is in. */
export function stripServerAttributes(resource: Json): Json {
  const { id: _id, meta: _meta, groups: _groups, ...rest } = resource;
  return rest;
}

/**
 * The resource as the operations so far leave it, worked out by scimmy
 * (the same for the direct path and for scimmy's), one batch at a time on
 * the instance the last batch made.
 */
class WorkingDocument {
  document: Json;
  private instance: SCIMMY.Types.Schema | undefined;
  /** scimmy refused the operations: the message fails when they are applied. */
  refused = false;

  constructor(
    private readonly resource: ResourceName,
    current: Json,
  ) {
    this.document = current;
  }

  async apply(operations: readonly PatchOperation[]): Promise<void> {
    if (operations.length === 0 || this.refused) return;
    const Schema = this.resource === 'User' ? SCIMMY.Schemas.User : SCIMMY.Schemas.Group;
    try {
      this.instance ??= new Schema(this.document, 'both');
      const message = new SCIMMY.Messages.PatchOp({ schemas: [PATCH_OP_SCHEMA], Operations: operations.map(scimmyOperation) });
      const patched = await message.apply(this.instance);
      if (patched !== undefined) {
        this.instance = patched;
        this.document = JSON.parse(JSON.stringify(patched)) as Json;
      }
    } catch {
      this.refused = true;
    }
  }
}

/**
 * The canonical operations of a message's steps, each expanded against the
 * document as the earlier steps of the message left it: the SCIM Validator
 * sends emails[type eq "work"].value, then emails[type eq "work"].primary, in
 * one PATCH to a user without a work address, and both must land on the one
 * element the first creates. The document is worked out only when a step
 * reads an attribute an earlier step changed; otherwise every step sees
 * `current`. All the operations are then applied to `current` at once, as
 * before.
 */
export async function canonicalOperations(resource: ResourceName, current: Json, steps: readonly PatchStep[]): Promise<PatchOperation[]> {
  const operations: PatchOperation[] = [];
  const working = new WorkingDocument(resource, current);
  let settled = 0;
  let rereads = 0;
  const changed = new Set<string>();
  for (const step of steps) {
    // Once scimmy refuses the operations so far, the whole message fails when
    // they are applied: the later steps are still read and checked, against
    // the last document, so their own errors come first as before.
    if (step.reads && !working.refused && changed.has(step.key)) {
      if (++rereads > MAX_PATCH_REREADS) {
        throw badRequest(
          'invalidValue',
          `A PATCH request may read back an attribute it has just changed at most ${MAX_PATCH_REREADS} times. Send the operations in several requests.`,
        );
      }
      await working.apply(operations.slice(settled));
      settled = operations.length;
      changed.clear();
    }
    const expanded = expandStep(resource, step, working.document);
    if (expanded.length > 0) changed.add(step.key);
    operations.push(...expanded);
  }
  return operations;
}

/**
 * The document a PatchOp message makes of a stored user (toScimUser, meta
 * aside), ready for fromScimUser, or undefined when it changes nothing.
 * Simple operations take the direct path (simple-patch.ts); the rest go
 * through scimmy, which validates the whole result. `scimmyOnly` is for the
 * test that compares them.
 */
export async function patchUserDocument(current: Json, body: unknown, options: { scimmyOnly?: boolean } = {}): Promise<Json | undefined> {
  const operations = await canonicalOperations('User', current, patchSteps('User', body, current.id));
  if (operations.length === 0) return undefined;
  const simple = options.scimmyOnly ? undefined : applySimplePatch(current, operations);
  if (simple) return simple.document && keepOnePrimary(stripServerAttributes(simple.document), current);
  let patched: unknown;
  try {
    const instance = new SCIMMY.Schemas.User(current, 'both');
    patched = await new SCIMMY.Messages.PatchOp({ schemas: [PATCH_OP_SCHEMA], Operations: operations.map(scimmyOperation) }).apply(instance);
  } catch (error) {
    throw toScimError(error);
  }
  if (patched === undefined) return undefined;
  const resource = keepOnePrimary(dedupeMultiValued(coerceResource('User', stripServerAttributes(JSON.parse(JSON.stringify(patched)) as Json))), current);
  delete resource.meta;
  // An add of a value the user has already: scimmy appends it, and without
  // its copy the user is as it was. No change, so no write and no new version.
  // A document stored with two primaries (from before keepOnePrimary) is put
  // right with a change, never alone. stripServerAttributes makes the copy
  // keepOnePrimary may change: it replaces keys, never the values in them.
  if (!differ(stripServerAttributes(resource), keepOnePrimary(stripServerAttributes(current)))) return undefined;
  return resource;
}

/**
 * The document the non-member operations of a group PatchOp make of a stored
 * class (toScimGroup without members), or undefined when they change
 * nothing. Members are set operations in SQL, never part of the document.
 */
export async function patchGroupDocument(current: Json, operations: readonly RawOperation[]): Promise<Json | undefined> {
  if (operations.length === 0) return undefined;
  const steps = patchSteps('Group', { schemas: [PATCH_OP_SCHEMA], Operations: operations }, current.id);
  const normalised = await canonicalOperations('Group', current, steps);
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
