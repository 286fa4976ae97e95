// What the sync status reads about SCIM traffic: failed writes become audit
// events with outcome "failure" that say why (the SCIM error Entra received)
// and of which object, kept until the database takes them, and each tenant's
// last request time is kept (written at most once per tenant every few
// seconds per instance).
import type { FastifyBaseLogger, FastifyInstance, FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';
import { recordAudit, type AuditAction, type AuditEvent } from '../db/audit.js';
import type { Db, JsonObject } from '../db/database.js';
import { isDatabaseUnavailable } from '../db/errors.js';
import { isUuid } from '../db/ids.js';
import { isFailedRequest } from '../services/health.js';
import { ScimError, clippedDetail } from '../errors.js';
import { failureMessage } from './errors.js';

const WRITE_ACTIONS: Record<string, AuditAction> = { POST: 'create', PUT: 'update', PATCH: 'update', DELETE: 'delete' };
const LAST_REQUEST_EVERY_MS = 10_000;
/**
 * Too many requests for the tenant: the answer changed nothing, Entra retries
 * later, and a client past its rate limit can send them as fast as it likes
 * (every other failure comes within the limit).
 */
const THROTTLED = 429;
/** Within this long, one tenant's throttled writes are one event more, whatever their number. */
const TALLY_WINDOW_MS = 60_000;
/** A user or a class, by id or not; a search (a POST that only reads) is no write. */
const RESOURCE = /^\/scim\/v2\/(users|groups)(?:\/((?!\.search)[^/?]*))?\/?(?:\?|$)/i;
/** References longer than this are cut: a request refused for its size must not fill the audit log. */
const MAX_REFERENCE = 256;

export interface FailedWrite {
  tenantId: string;
  credentialId: string;
  requestId: string;
  method: string;
  url: string;
  /** The parsed request body (undefined when it was none or could not be read). */
  body: unknown;
  status: number;
  /** The SCIM error the answer carried, when the error renderer sent one. */
  error: ScimError | null;
}

/** A value PostgreSQL can store (text holds no NUL), cut to MAX_REFERENCE. */
const clip = (value: string): string => {
  const storable = storableText(value);
  return storable.length > MAX_REFERENCE ? `${storable.slice(0, MAX_REFERENCE)}…` : storable;
};

/** PostgreSQL's text and jsonb hold no NUL character: it is kept as U+FFFD, so the failure is still recorded. */
const storableText = (value: string): string => value.replaceAll('\u0000', '\uFFFD');

function reference(body: unknown, key: string): string | undefined {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) return undefined;
  const value = (body as Record<string, unknown>)[key];
  return typeof value === 'string' && value !== '' ? clip(value) : undefined;
}

/**
 * The audit event of a failed SCIM write, or undefined for a request that is
 * no write of a user or class. It keeps what Entra received (status,
 * scimType and detail, as sent), the message the failure groups under, and
 * what names the object: the userName or displayName and externalId from the
 * body, the id in the path. No other value of the body.
 */
export function failedWriteEvent(write: FailedWrite): AuditEvent | undefined {
  const action = WRITE_ACTIONS[write.method];
  const [, resource, id] = RESOURCE.exec(write.url) ?? [];
  if (!action || !resource) return undefined;
  const objectType = resource.toLowerCase() === 'users' ? 'user' : 'group';
  const externalId = reference(write.body, 'externalId');
  const details: JsonObject = { status: write.status };
  if (write.error) {
    if (write.error.scimType) details.scimType = write.error.scimType;
    details.detail = storableText(clippedDetail(write.error.detail));
    details.message = storableText(failureMessage(write.error.detail));
  }
  if (externalId !== undefined) details.externalId = externalId;
  // An id that is no UUID names no row; it is kept as it was asked for.
  if (id && !isUuid(id)) details.id = clip(id);
  return {
    tenantId: write.tenantId,
    action,
    objectType,
    objectId: isUuid(id) ? id.toLowerCase() : null,
    objectRef: reference(write.body, objectType === 'user' ? 'userName' : 'displayName') ?? null,
    outcome: 'failure',
    credentialId: write.credentialId,
    requestId: write.requestId,
    details,
    // The time Entra got its answer: an event that waits out an outage is written later.
    at: new Date(),
  };
}

async function activity(app: FastifyInstance, options: { db: Db }): Promise<void> {
  const { db } = options;
  const lastWritten = new Map<string, number>();
  const failedWrites = new FailedWriteRecorder(db, app.log);
  const throttled = new ThrottledTally(failedWrites);
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
    const event =
      auth && isFailedRequest(request.method, request.url, reply.statusCode) && !audited.has(request)
        ? failedWriteEvent({
            tenantId: auth.tenant.id,
            credentialId: auth.credentialId,
            requestId: request.id,
            method: request.method,
            url: request.url,
            body: request.body,
            status: reply.statusCode,
            error: reply.scimError,
          })
        : undefined;
    if (!event || (reply.statusCode === THROTTLED && throttled.tallied(event))) {
      done(null, payload);
      return;
    }
    failedWrites.record(
      event,
      request.log,
      () => done(null, payload),
      // A 503 says the database could not answer: the event would most likely wait for it in vain.
      reply.statusCode !== 503,
    );
  });

  app.addHook('onClose', async () => {
    throttled.close();
    await failedWrites.close();
  });
}

/**
 * Keeps a flood of throttled writes from becoming a flood of writes. A client
 * past its tenant's rate limit is answered at once with nothing written;
 * recording each refusal as an event would give the database a write for
 * every one, the load the limit spares it. A tenant's first throttled write
 * is recorded as it comes; the others in the next minute are counted, and
 * one event, the latest, stands for them (`details.answers`, which the
 * failure counts add up).
 */
class ThrottledTally {
  private readonly open = new Map<string, { answers: number; latest: AuditEvent; timer: NodeJS.Timeout }>();

  constructor(private readonly recorder: FailedWriteRecorder) {}

  /** True when the event is counted into its window; false when it opens one and is to be recorded now. */
  tallied(event: AuditEvent): boolean {
    const key = event.tenantId;
    const window = this.open.get(key);
    if (window) {
      window.answers += 1;
      window.latest = event;
      return true;
    }
    const timer = setTimeout(() => this.end(key, false), TALLY_WINDOW_MS);
    timer.unref();
    this.open.set(key, { answers: 0, latest: event, timer });
    return false;
  }

  private end(key: string, closing: boolean): void {
    const window = this.open.get(key);
    if (!window) return;
    this.open.delete(key);
    clearTimeout(window.timer);
    if (window.answers === 0) return;
    const event = { ...window.latest, details: { ...window.latest.details, answers: window.answers } };
    if (closing) this.recorder.waitFor(event);
    else this.recorder.record(event, this.recorder.log, () => undefined, true);
  }

  /** The counted answers join the events the recorder writes before the app closes. */
  close(): void {
    for (const key of [...this.open.keys()]) this.end(key, true);
  }
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
    readonly log: FastifyBaseLogger,
  ) {}

  /** Written with the waiting events, in order: for an event with no answer to hold. */
  waitFor(event: AuditEvent): void {
    this.enqueue(event, this.log);
  }

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

export const activityPlugin = fp(activity, { name: 'scim-activity', fastify: '5.x', dependencies: ['scim-auth', 'scim-errors'] });
