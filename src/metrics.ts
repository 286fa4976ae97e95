// Prometheus metrics of one app: HTTP requests by route, method, status and
// tenant; latency; the database pool; provisioning outcomes from the audit
// log; each tenant's last request and health. Every app has its own registry.
import { createServer, type Server } from 'node:http';
import type pg from 'pg';
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import { answersOf, type AuditObserver } from './db/audit.js';
import type { Db } from './db/database.js';
import { HEALTH_STATES, tenantOverview, type HealthSettings } from './services/health.js';

export interface RequestLabels {
  /** The route pattern (/scim/v2/Users/:id), never the raw URL. */
  route: string;
  method: string;
  status: number;
  /** Empty when the request carried no tenant credential. */
  tenant: string;
}

export interface Metrics {
  readonly registry: Registry;
  observeRequest(labels: RequestLabels, seconds: number): void;
  /** Counts audit events: created, adopted, updated, deactivated, deleted, conflicts, failures. */
  readonly countAudit: AuditObserver;
}

const PREFIX = 'portal_scim_';

export function createMetrics(options: { db: Db; pool?: pg.Pool | undefined; health: HealthSettings }): Metrics {
  const { db, pool, health } = options;
  const registry = new Registry();
  const registers = [registry];

  const requests = new Counter({
    name: `${PREFIX}http_requests_total`,
    help: 'HTTP requests answered, by route pattern, method, status and tenant.',
    labelNames: ['route', 'method', 'status', 'tenant'] as const,
    registers,
  });
  const duration = new Histogram({
    name: `${PREFIX}http_request_duration_seconds`,
    help: 'Time to answer an HTTP request, by route pattern and method.',
    labelNames: ['route', 'method'] as const,
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers,
  });
  const provisioning = new Counter({
    name: `${PREFIX}provisioning_events_total`,
    help: 'Audit events by tenant, object type (user, group), action (create, adopt, update, deactivate, reactivate, delete, conflict) and outcome (success, failure, conflict).',
    labelNames: ['tenant', 'object', 'action', 'outcome'] as const,
    registers,
  });

  if (pool) {
    const poolGauge = (name: string, help: string, read: (p: pg.Pool) => number) =>
      new Gauge({
        name: `${PREFIX}db_pool_${name}`,
        help,
        registers,
        collect() {
          this.set(read(pool));
        },
      });
    poolGauge('connections', 'Connections the database pool holds, busy or idle.', (p) => p.totalCount);
    poolGauge('idle_connections', 'Idle connections in the database pool.', (p) => p.idleCount);
    poolGauge('waiting_requests', 'Queries waiting for a free connection of the database pool.', (p) => p.waitingCount);
  }

  // Read from the database at scrape time, so every instance reports the
  // fleet's view and a restart loses nothing.
  new Gauge({
    name: `${PREFIX}tenant_last_request_timestamp_seconds`,
    help: "Unix time of each connected tenant's last SCIM request (written at most every few seconds).",
    labelNames: ['tenant'] as const,
    registers,
    async collect() {
      this.reset();
      const rows = await db
        .selectFrom('tenants')
        .select(['id', 'last_request_at'])
        .where('disconnected_at', 'is', null)
        .where('last_request_at', 'is not', null)
        .execute()
        .catch(() => []);
      for (const row of rows) if (row.last_request_at) this.set({ tenant: row.id }, row.last_request_at.getTime() / 1000);
    },
  });

  // A state set: 1 for each tenant's one health, 0 for the others, so an
  // alert is a comparison (state="failing" == 1) and a graph stacks them.
  new Gauge({
    name: `${PREFIX}tenant_health`,
    help: 'Health of each tenant, one series per state (failing, silent, never synced, healthy, disconnected): 1 for its state, 0 for the others.',
    labelNames: ['tenant', 'state'] as const,
    registers,
    async collect() {
      this.reset();
      const tenants = await tenantOverview(db, health).catch(() => []);
      for (const tenant of tenants) {
        for (const state of HEALTH_STATES) this.set({ tenant: tenant.tenantId, state }, state === tenant.health ? 1 : 0);
      }
    },
  });

  return {
    registry,
    observeRequest(labels, seconds) {
      requests.inc({ route: labels.route, method: labels.method, status: String(labels.status), tenant: labels.tenant });
      duration.observe({ route: labels.route, method: labels.method }, seconds);
    },
    countAudit(event) {
      provisioning.inc({ tenant: event.tenantId, object: event.objectType, action: event.action, outcome: event.outcome }, answersOf(event));
    },
  };
}

/**
 * Serves the registry on a port of its own, without a credential: for a
 * Prometheus inside the private network only, never a public address.
 */
export async function listenMetrics(registry: Registry, host: string, port: number): Promise<Server> {
  const server = createServer((request, response) => {
    if (request.method !== 'GET' || request.url?.split('?')[0] !== '/metrics') {
      response.writeHead(404, { 'content-type': 'text/plain; charset=utf-8' }).end('Not found: GET /metrics\n');
      return;
    }
    registry
      .metrics()
      .then((text) => response.writeHead(200, { 'content-type': registry.contentType }).end(text))
      .catch(() => response.writeHead(500, { 'content-type': 'text/plain; charset=utf-8' }).end('metrics failed\n'));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  return server;
}
