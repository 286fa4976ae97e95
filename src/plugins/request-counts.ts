// Counts SCIM requests per tenant and hour for the status page's chart, and of
// them the writes and failed writes the tenant's health is judged by. The
// counts gather in memory and are added to the database every few seconds,
// before the status page reads them, and when the app closes.
import type { FastifyInstance } from 'fastify';
import fp from 'fastify-plugin';
import type { Db } from '../db/database.js';
import { addRequestCounts, type RequestCount } from '../db/request-counts.js';
import { isFailedRequest } from '../services/health.js';

declare module 'fastify' {
  interface FastifyInstance {
    /** Writes the counts gathered so far; the status page calls it before it reads. */
    flushRequestCounts: () => Promise<void>;
  }
}

const FLUSH_EVERY_MS = 10_000;
const HOUR_MS = 3_600_000;
const WRITE_METHODS = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);
const RESOURCE = /^\/scim\/v2\/(?:users|groups)(?:\/(?!\.search)[^/?]*)?(?:\?|$)/i;

/** A change to a user or a class (a search is a POST that only reads). */
function isScimWrite(method: string, url: string): boolean {
  return WRITE_METHODS.has(method) && RESOURCE.test(url);
}

async function requestCounts(app: FastifyInstance, options: { db: Db }): Promise<void> {
  let pending = new Map<string, RequestCount>();

  // onSend, not onResponse: counted before the client has its answer, so a
  // status page read right after sees it.
  app.addHook('onSend', (request, reply, payload, done) => {
    const tenantId = request.auth?.tenant.id;
    if (!tenantId) {
      done(null, payload);
      return;
    }
    const hour = Math.floor(Date.now() / HOUR_MS) * HOUR_MS;
    const key = `${tenantId}/${hour}`;
    const count = pending.get(key) ?? { tenantId, hour: new Date(hour), requests: 0, failures: 0, writes: 0, writeFailures: 0 };
    const failed = isFailedRequest(request.method, request.url, reply.statusCode);
    count.requests += 1;
    if (failed) count.failures += 1;
    if (isScimWrite(request.method, request.url)) {
      count.writes += 1;
      if (failed) count.writeFailures += 1;
    }
    pending.set(key, count);
    done(null, payload);
  });

  async function flush(): Promise<void> {
    if (pending.size === 0) return;
    const counts = [...pending.values()];
    pending = new Map();
    try {
      await addRequestCounts(options.db, counts);
    } catch (error) {
      // Kept for the next flush: the database may be back by then.
      for (const c of counts) {
        const key = `${c.tenantId}/${c.hour.getTime()}`;
        const later = pending.get(key);
        pending.set(
          key,
          later
            ? {
                ...c,
                requests: c.requests + later.requests,
                failures: c.failures + later.failures,
                writes: c.writes + later.writes,
                writeFailures: c.writeFailures + later.writeFailures,
              }
            : c,
        );
      }
      throw error;
    }
  }

  const timer = setInterval(() => {
    flush().catch((error: unknown) => app.log.warn({ err: error }, 'could not store request counts; retrying'));
  }, FLUSH_EVERY_MS);
  timer.unref();
  app.decorate('flushRequestCounts', flush);
  app.addHook('onClose', async () => {
    clearInterval(timer);
    await flush().catch((error: unknown) => app.log.warn({ err: error }, 'request counts of the last seconds were not stored'));
  });
}

export const requestCountsPlugin = fp(requestCounts, { name: 'request-counts', fastify: '5.x' });
