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

/** A request past the share: let it go on, or answer it 503. */
interface Waiter {
  admit: () => void;
  refuse: () => void;
}

interface Share {
  running: number;
  /** Requests past the share, in order. */
  waiting: Waiter[];
  /** When one of the tenant's requests last finished, or its first began. */
  progressAt: number;
  /** While some wait: the one timer that gives up on them when the share is stuck. */
  timer: NodeJS.Timeout | undefined;
}

async function tenantShare(app: FastifyInstance, options: TenantShareOptions): Promise<void> {
  // Per app, like every other state; a tenant without requests has no entry.
  const shares = new Map<string, Share>();

  function release(tenantId: string, share: Share): void {
    share.progressAt = Date.now();
    const next = share.waiting.shift();
    if (next) {
      // The slot passes straight to the next request in line.
      if (share.waiting.length === 0) stopWatching(share);
      next.admit();
      return;
    }
    share.running -= 1;
    if (share.running === 0) shares.delete(tenantId);
  }

  function stopWatching(share: Share): void {
    clearTimeout(share.timer);
    share.timer = undefined;
  }

  /**
   * One timer per share with requests waiting: when none of the tenant's
   * requests has finished for the queue timeout, the share is stuck and every
   * waiting request answers 503; while they keep finishing, the timer waits on.
   */
  function watch(share: Share): void {
    if (share.timer !== undefined) return;
    const check = (): void => {
      const stuckFor = Date.now() - share.progressAt;
      if (stuckFor < options.queueTimeoutMs) {
        share.timer = setTimeout(check, options.queueTimeoutMs - stuckFor);
        return;
      }
      share.timer = undefined;
      for (const waiter of share.waiting.splice(0)) waiter.refuse();
    };
    share.timer = setTimeout(check, options.queueTimeoutMs);
  }

  /** Frees the slot once the answer has gone or the connection has: a response always ends with 'close'. */
  function holdUntilAnswered(reply: FastifyReply, tenantId: string, share: Share): void {
    reply.raw.once('close', () => release(tenantId, share));
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
      share = { running: 0, waiting: [], progressAt: Date.now(), timer: undefined };
      shares.set(tenantId, share);
    }
    if (share.running < options.concurrency) {
      share.running += 1;
      holdUntilAnswered(reply, tenantId, share);
      done();
      return;
    }
    const current = share;
    current.waiting.push({
      admit: () => {
        holdUntilAnswered(reply, tenantId, current);
        done();
      },
      refuse: () => {
        request.log.info({ concurrency: options.concurrency, stuckForMs: Date.now() - current.progressAt }, "none of the tenant's requests in progress is finishing; answered 503");
        done(unavailable('This tenant has too many requests in progress; retry shortly.'));
      },
    });
    watch(current);
    request.log.debug({ waiting: current.waiting.length }, "waiting for the tenant's share of the server");
  });
}

export const tenantSharePlugin = fp(tenantShare, { name: 'tenant-share', fastify: '5.x', dependencies: ['scim-auth'] });
