// Runs a write the one way every SCIM write runs: plan once, execute once.
// A plan made from what is known without a lock (a remembered or unlocked
// read, or nothing for a create) is executed as one guarded statement; when a
// guard fails, because the rows it was planned from changed meanwhile, the
// same planner runs again on rows read and locked in a transaction, and the
// same statement runs there (a user write's quick statement only guards
// against conflicts to settle, which the locked one settles). Refusals a
// planner makes (rule 3) are recorded after the transaction, so they outlive
// its rollback.
import { recordConflict } from '../db/audit.js';
import { inTransaction, type Executor } from '../db/database.js';
import { findTenant } from '../db/tenants.js';
import type { ExecutionPath } from '../db/write-plan.js';
import { lockConnectedTenant } from '../db/write-statements.js';
import { ScimError, unauthorized, unavailable } from '../errors.js';
import { AdminCollision, adminCollisionError } from './rules/admin-guard.js';
import { adminCollisionEvent, type Actor } from './rules/audit-events.js';
import { checkIfMatch, type RequestContext } from './resource.js';

/** What a planner decided: a plan to execute, or an answer that needs no write. */
export type Step<P, W> = { plan: P } | { done: W };

export interface Write<P, W> {
  /** Planners from what is known without a lock, tried in order; undefined skips one. */
  quick: readonly (() => Promise<Step<P, W> | undefined>)[];
  /** The planner on rows read, and locked, in the transaction it is given. */
  locked: (trx: Executor) => Promise<Step<P, W>>;
  /**
   * Renders and runs a plan: what it wrote, or undefined when a guard failed.
   * `quick` is the statement outside the locked path's transaction, which may
   * leave a rare part of the plan to the locked one by guarding against it.
   */
  execute: (db: Executor, plan: P, run: ExecutionPath) => Promise<W | undefined>;
}

/**
 * Rule 8: the tenant was disconnected after this request's token was
 * checked. The disconnect revoked the token, so the answer is the one the
 * token check now gives.
 */
const tenantDisconnected = (): ScimError =>
  unauthorized('The tenant has been disconnected and its tokens revoked; nothing was written.', 'invalid_token');

/** Whether the request's tenant has been disconnected since its token was checked; a failed read keeps the answer it was checked for. */
async function tenantDisconnectedNow(ctx: RequestContext): Promise<boolean> {
  const tenant = await findTenant(ctx.db, ctx.tenant.id).catch(() => undefined);
  return tenant !== undefined && tenant.disconnected_at !== null;
}

/** A locked plan whose guard still fails lost to a write that needs no lock of ours (a new admin); it is tried again, then answered 503. */
const LOCKED_ATTEMPTS = 3;

/**
 * The planners of a delete: without If-Match planned from nothing (the guard
 * finds the live row, or the locked path answers 404); with it, from the row
 * read and its version compared.
 */
export function deleteSteps<R extends { version: number }, P, W>(
  ifMatch: string | undefined,
  read: (db: Executor | undefined, forUpdate: boolean) => Promise<R>,
  plan: (row: R | undefined) => P,
): Pick<Write<P, W>, 'quick' | 'locked'> {
  const fromRow = async (db: Executor | undefined, forUpdate: boolean): Promise<Step<P, W>> => {
    const row = await read(db, forUpdate);
    checkIfMatch(ifMatch, row.version);
    return { plan: plan(row) };
  };
  return {
    quick: [async () => (ifMatch === undefined ? { plan: plan(undefined) } : fromRow(undefined, false))],
    locked: (trx) => fromRow(trx, true),
  };
}

export function actorOf(ctx: RequestContext): Actor {
  return { tenantId: ctx.tenant.id, credentialId: ctx.credentialId, requestId: ctx.requestId };
}

export async function runWrite<P, W>(ctx: RequestContext, write: Write<P, W>): Promise<W> {
  const written = await writeOnce(ctx, write);
  ctx.changes.changed();
  return written;
}

async function writeOnce<P, W>(ctx: RequestContext, write: Write<P, W>): Promise<W> {
  try {
    if (ctx.writeStrategy === 'quick') {
      for (const quick of write.quick) {
        const step = await quick();
        if (step === undefined) continue;
        if ('done' in step) return step.done;
        const written = await write.execute(ctx.db, step.plan, 'quick');
        if (written !== undefined) return written;
      }
    }
    for (let attempt = 0; attempt < LOCKED_ATTEMPTS; attempt++) {
      const written = await inTransaction(ctx.db, async (trx) => {
        if (!(await lockConnectedTenant(trx, ctx.tenant.id))) throw tenantDisconnected();
        const step = await write.locked(trx);
        return 'done' in step ? step.done : write.execute(trx, step.plan, 'locked');
      });
      if (written !== undefined) return written;
    }
    throw unavailable('The resource kept changing while it was written; retry shortly.');
  } catch (error) {
    if (error instanceof AdminCollision) throw await refuse(ctx, error);
    // A disconnect turns the tenant's objects manual, so a write that meets
    // one finds its object gone. The truth is the revoked token, as the
    // token check would now answer, not a 404 that sends Entra to recreate it.
    if (error instanceof ScimError && error.status === 404 && (await tenantDisconnectedNow(ctx))) throw tenantDisconnected();
    throw error;
  }
}

/** Rule 3: opens the object's conflict (or counts the refusal on the open one) with its audit event, and the 409 that says so. */
async function refuse(ctx: RequestContext, collision: AdminCollision): Promise<ScimError> {
  const error = adminCollisionError(collision);
  const actor = actorOf(ctx);
  await recordConflict(
    ctx.db,
    {
      tenantId: actor.tenantId,
      kind: 'admin-collision',
      objectType: 'user',
      objectRef: collision.ref,
      accountId: collision.adminId,
      requestId: actor.requestId,
      detail: error.detail,
      entraObject: collision.entraObject,
    },
    adminCollisionEvent(actor, collision),
  );
  return error;
}
