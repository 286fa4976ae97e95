// One tenant's share of the instance: at most so many of its SCIM requests are
// handled at once, so a tenant whose requests are stuck (waiting on a locked
// class, say) holds only part of the database pool and the other tenants keep
// being answered. Requests past the share wait their turn in order. While the
// tenant's requests keep finishing they wait (a burst of a busy tenant is
// served, only spread out); once none has finished for the queue timeout, the
// share is stuck and they answer 503 with Retry-After, which Entra retries.
import type { FastifyInstance, FastifyReply } from 'fastify';
import fp from 'fastify-plugin';
import { unavailable } from '../errors.js';

export interface TenantShareOptions {
  /** Requests of one tenant handled at once. */
  concurrency: number;
  /** How long a request past the share waits while none of the tenant's requests finishes. */
  queueTimeoutMs: number;
}

interface Waiter {
  admit: () => void;
  timer: NodeJS.Timeout | undefined;
}

interface Share {
  running: number;
  waiting: Waiter[];
  /** When one of the tenant's requests last finished, or its first began. */
  progressAt: number;
}

async function tenantShare(app: FastifyInstance, options: TenantShareOptions): Promise<void> {
  // Per app, like every other state; a tenant without requests has no entry.
  const shares = new Map<string, Share>();

  function release(tenantId: string, share: Share): void {
    share.progressAt = Date.now();
    const next = share.waiting.shift();
    if (next) {
      // The slot passes straight to the next request in line.
      clearTimeout(next.timer);
      next.admit();
      return;
    }
    share.running -= 1;
    if (share.running === 0) shares.delete(tenantId);
  }

  /** Frees the slot once the answer has gone, or the connection has, whichever comes first. */
  function holdUntilAnswered(reply: FastifyReply, tenantId: string, share: Share): void {
    let held = true;
    const done = (): void => {
      if (!held) return;
      held = false;
      reply.raw.off('finish', done);
      reply.raw.off('close', done);
      release(tenantId, share);
    };
    reply.raw.once('finish', done);
    reply.raw.once('close', done);
  }

  // After authentication and the rate limit: only a known tenant's admitted requests count.
  app.addHook('preHandler', (request, reply, done) => {
    const tenantId = request.auth?.tenant.id;
    if (tenantId === undefined) {
      done();
      return;
    }
    let share = shares.get(tenantId);
    if (share === undefined) {
      share = { running: 0, waiting: [], progressAt: Date.now() };
      shares.set(tenantId, share);
    }
    if (share.running < options.concurrency) {
      share.running += 1;
      holdUntilAnswered(reply, tenantId, share);
      done();
      return;
    }
    const current = share;
    const waiter: Waiter = {
      admit: () => {
        holdUntilAnswered(reply, tenantId, current);
        done();
      },
      timer: undefined,
    };
    const giveUpWhenStuck = (): void => {
      const stuckFor = Date.now() - current.progressAt;
      if (stuckFor < options.queueTimeoutMs) {
        waiter.timer = setTimeout(giveUpWhenStuck, options.queueTimeoutMs - stuckFor);
        return;
      }
      const index = current.waiting.indexOf(waiter);
      if (index !== -1) current.waiting.splice(index, 1);
      request.log.info({ concurrency: options.concurrency, stuckForMs: stuckFor }, "none of the tenant's requests in progress is finishing; answered 503");
      done(unavailable('This tenant has too many requests in progress; retry shortly.'));
    };
    waiter.timer = setTimeout(giveUpWhenStuck, options.queueTimeoutMs);
    current.waiting.push(waiter);
    request.log.debug({ waiting: current.waiting.length }, "waiting for the tenant's share of the server");
  });
}

export const tenantSharePlugin = fp(tenantShare, { name: 'tenant-share', fastify: '5.x', dependencies: ['scim-auth'] });
