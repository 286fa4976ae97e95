// What the sync status reads about SCIM traffic: failed writes become audit
// events with outcome "failure" (kept until the database takes them), and each
// tenant's last request time is kept (written at most once per tenant every
// few seconds per instance).
import type { FastifyBaseLogger, FastifyInstance, FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';
import { recordAudit, type AuditAction, type AuditEvent } from '../db/audit.js';
import type { Db } from '../db/database.js';
import { isDatabaseUnavailable } from '../db/errors.js';
import { isUuid } from '../db/ids.js';
import { ScimError } from '../errors.js';

const WRITE_ACTIONS: Record<string, AuditAction> = { POST: 'create', PUT: 'update', PATCH: 'update', DELETE: 'delete' };
const LAST_REQUEST_EVERY_MS = 10_000;

async function activity(app: FastifyInstance, options: { db: Db }): Promise<void> {
  const { db } = options;
  const lastWritten = new Map<string, number>();
  const failedWrites = new FailedWriteRecorder(db, app.log);
  // Failures whose handler wrote their audit event itself (ScimError.audited),
  // seen on their way to the error renderer.
  const audited = new WeakSet<FastifyRequest>();
  app.addHook('onError', (request, _reply, error, done) => {
    if (error instanceof ScimError && error.audited) audited.add(request);
    done();
  });

  // Hooks with a callback, not async ones: a request that needs none of
  // their work gets no promise from them.
  app.addHook('onResponse', (request, _reply, done) => {
    const auth = request.auth;
    const now = Date.now();
    if (auth && (lastWritten.get(auth.tenant.id) ?? 0) + LAST_REQUEST_EVERY_MS < now) {
      lastWritten.set(auth.tenant.id, now);
      db.updateTable('tenants')
        .set({ last_request_at: new Date(now) })
        .where('id', '=', auth.tenant.id)
        .execute()
        .catch((error: unknown) => request.log.warn({ err: error }, 'could not record the last request time'));
    }
    done();
  });

  // Failed writes are recorded before the answer leaves, so whoever reads the
  // status after a failure sees it.
  app.addHook('onSend', (request, reply, payload, done) => {
    const auth = request.auth;
    const action = WRITE_ACTIONS[request.method];
    if (!auth || !action || reply.statusCode < 400 || audited.has(request)) {
      done(null, payload);
      return;
    }
    const [, resource = '', id] = /\/scim\/v2\/(Users|Groups)(?:\/([^/?]+))?/i.exec(request.url) ?? [];
    if (!resource) {
      done(null, payload);
      return;
    }
    failedWrites.record(
      {
        tenantId: auth.tenant.id,
        action,
        objectType: resource.toLowerCase() === 'users' ? 'user' : 'group',
        objectId: isUuid(id) ? id : null,
        outcome: 'failure',
        credentialId: auth.credentialId,
        requestId: request.id,
        details: { status: reply.statusCode },
      },
      request.log,
      () => done(null, payload),
      // A 503 says the database could not answer: the event would most likely wait for it in vain.
      reply.statusCode !== 503,
    );
  });

  app.addHook('onClose', async () => failedWrites.close());
}

const RETRY_FIRST_MS = 500;
const RETRY_MAX_MS = 30_000;
/** Failed writes kept while the database cannot take them; past this the oldest are dropped, so memory stays bounded. */
const MAX_WAITING_EVENTS = 10_000;

/**
 * Records failed writes as audit events. The first attempt is made before the
 * answer leaves, so a status read right after a failure sees it. When the
 * database cannot take it then (no connection free in time, or the database
 * is unavailable, often the very reason the write failed), the event waits in
 * memory and is written as soon as the database answers again, in order.
 * While some wait, and for answers that already say the database could not
 * answer, new events join them at once instead of holding their answers for
 * an attempt that would wait in vain.
 */
class FailedWriteRecorder {
  private readonly waiting: AuditEvent[] = [];
  private timer: NodeJS.Timeout | undefined;
  private draining: Promise<boolean> | undefined;
  private delayMs = RETRY_FIRST_MS;
  private closed = false;

  constructor(
    private readonly db: Db,
    private readonly log: FastifyBaseLogger,
  ) {}

  record(event: AuditEvent, log: FastifyBaseLogger, then: () => void, tryNow: boolean): void {
    if (!tryNow || this.waiting.length > 0) {
      this.enqueue(event, log);
      then();
      return;
    }
    recordAudit(this.db, event)
      .catch((error: unknown) => {
        if (isDatabaseUnavailable(error)) this.enqueue(event, log);
        else log.warn({ err: error }, 'could not record a failed write');
      })
      .finally(then);
  }

  private enqueue(event: AuditEvent, log: FastifyBaseLogger): void {
    if (this.waiting.length >= MAX_WAITING_EVENTS) {
      this.waiting.shift();
      this.log.warn({ waiting: this.waiting.length }, 'could not record a failed write: too many wait for the database; dropped the oldest');
    }
    this.waiting.push(event);
    log.debug({ waiting: this.waiting.length }, 'failed write waits for the database to be recorded');
    this.schedule();
  }

  private schedule(): void {
    if (this.closed || this.timer !== undefined || this.draining !== undefined) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      void this.drain();
    }, this.delayMs);
    this.timer.unref();
  }

  /** Writes the waiting events in order; stops at the first the database cannot take, to try again later. */
  private drain(): Promise<boolean> {
    this.draining ??= this.writeWaiting().finally(() => {
      this.draining = undefined;
      if (this.waiting.length > 0) this.schedule();
    });
    return this.draining;
  }

  private async writeWaiting(): Promise<boolean> {
    for (let event = this.waiting[0]; event !== undefined; event = this.waiting[0]) {
      try {
        await recordAudit(this.db, event);
      } catch (error) {
        if (isDatabaseUnavailable(error)) {
          this.delayMs = Math.min(this.delayMs * 2, RETRY_MAX_MS);
          return false;
        }
        this.log.warn({ err: error, requestId: event.requestId }, 'could not record a failed write');
      }
      // Not the first any more if the queue overflowed meanwhile.
      if (this.waiting[0] === event) this.waiting.shift();
    }
    this.delayMs = RETRY_FIRST_MS;
    return true;
  }

  /** One last attempt when the app closes; what the database cannot take then is lost, and the log says how much. */
  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.timer);
    this.timer = undefined;
    await this.draining;
    if (this.waiting.length > 0 && !(await this.drain())) {
      this.log.warn({ events: this.waiting.length }, 'could not record failed writes before closing');
      this.waiting.length = 0;
    }
  }
}

export const activityPlugin = fp(activity, { name: 'scim-activity', fastify: '5.x', dependencies: ['scim-auth'] });
