// Liveness and readiness for load balancers and orchestrators.
import { setTimeout as sleep } from 'node:timers/promises';
import type { FastifyInstance } from 'fastify';
import { sql } from 'kysely';
import type { Db } from '../db/database.js';
import { RETRY_AFTER_SECONDS } from '../errors.js';

export interface HealthOptions {
  db: Db;
  /** How long readiness waits for the database before it answers 503. */
  timeoutMs: number;
}

const TIMED_OUT = Symbol('timed out');

export async function healthRoutes(app: FastifyInstance, options: HealthOptions): Promise<void> {
  app.get('/healthz', async () => ({ status: 'ok' }));

  // A probe that gets no answer counts as a failure only after the probe's own
  // timeout, and a database that stops answering would hold this query until
  // the client-side query timeout: readiness answers by its own deadline.
  app.get('/readyz', async (request, reply) => {
    const deadline = new AbortController();
    try {
      const outcome = await Promise.race([
        sql`SELECT 1`.execute(options.db),
        sleep(options.timeoutMs, TIMED_OUT, { signal: deadline.signal }),
      ]);
      if (outcome !== TIMED_OUT) return { status: 'ready' };
      request.log.warn({ timeoutMs: options.timeoutMs }, 'database did not answer the readiness check in time');
    } catch (error) {
      request.log.warn({ err: error }, 'database not reachable');
    } finally {
      deadline.abort();
    }
    return reply
      .code(503)
      .header('retry-after', String(RETRY_AFTER_SECONDS))
      .send({ status: 'unavailable', detail: 'The database is not reachable.' });
  });
}
