// Reads the process environment once, validates it and returns a frozen Config.
// Every error names the variable that is wrong, so a bad deployment fails at start.
import { readFileSync } from 'node:fs';
import path from 'node:path';

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

export interface Config {
  readonly port: number;
  readonly host: string;
  /** Connection string of the PostgreSQL server; undefined means the embedded one. */
  readonly databaseUrl: string | undefined;
  /** Where the embedded database and the generated signing key live. */
  readonly dataDir: string;
  /** Base URL clients reach us at, without a trailing slash (meta.location, Tenant URL). */
  readonly publicUrl: string;
  readonly logLevel: LogLevel;
  /** HS256 key for credentials; undefined means the generated key in the data directory. */
  readonly jwtSecret: string | undefined;
  /** Older keys still accepted for verification while credentials are rotated. */
  readonly jwtPreviousSecrets: readonly string[];
  readonly jwtIssuer: string;
  readonly jwtAudience: string;
  /** How long a credential lookup (and so a revocation) may be served from memory. */
  readonly credentialCacheSeconds: number;
  readonly databasePoolSize: number;
  /** Milliseconds a query may run before it is cancelled and the request answers 503. */
  readonly databaseStatementTimeoutMs: number;
  /** Milliseconds a statement may wait for a row or table lock before it gives up and the request answers 503. */
  readonly databaseLockTimeoutMs: number;
  /**
   * Milliseconds the server waits for any answer to a query before it gives
   * up on the connection: the statement timeout lives in PostgreSQL and cannot
   * fire when the database stops answering altogether.
   */
  readonly databaseQueryTimeoutMs: number;
  /** How long /readyz waits for the database before it answers 503. */
  readonly readinessTimeoutMs: number;
  /** SCIM requests of one tenant handled at once per instance, so one tenant cannot hold the whole pool; 0 for no limit. */
  readonly tenantConcurrency: number;
  /** How long a request past its tenant's share waits while none of the tenant's requests finishes, before it answers 503. */
  readonly tenantQueueTimeoutMs: number;
  readonly bodyLimitBytes: number;
  /** Time a client has to send a request's headers and body before it is answered 408 and closed. */
  readonly requestTimeoutMs: number;
  /** Answers one connection may have waiting to be sent before a connection that keeps asking is closed. */
  readonly connectionOutputLimitBytes: number;
  /** The same over all connections together. */
  readonly outputLimitBytes: number;
  /** Open client connections; past it new ones are closed at once, before the process runs out of file descriptors. */
  readonly maxConnections: number;
  readonly shutdownTimeoutMs: number;
  /** Lifetime of access tokens issued at /oauth/token. */
  readonly oauthTokenSeconds: number;
  /** Sustained SCIM requests per second each tenant may send; 0 turns the limit off. */
  readonly rateLimitPerSecond: number;
  /** Which proxies' X-Forwarded-For to believe: false, true, or addresses and CIDR ranges. */
  readonly trustProxy: boolean | string;
  /** Event-loop delay beyond which requests are shed with 503; 0 turns shedding off. */
  readonly maxEventLoopDelayMs: number;
  /** A second port serving GET /metrics without a credential (private network only); undefined for none. */
  readonly metricsPort: number | undefined;
  /** A tenant that has synced and sent no request for longer than this is "silent". */
  readonly silentAfterMinutes: number;
  /** Days a change stays in the change feed before the hourly job prunes it. */
  readonly changeFeedRetentionDays: number;
  /** Where Microsoft publishes the keys that sign Entra's own bearer tokens (a JWKS document). */
  readonly entraJwksUrl: string;
  /** How long a fetch of those keys may take before the request is refused. */
  readonly entraJwksTimeoutMs: number;
  /** A token signed with a key not among those fetched fetches them again, at most this often. */
  readonly entraJwksCooldownSeconds: number;
}

export class ConfigError extends Error {
  constructor(
    readonly variable: string,
    message: string,
  ) {
    super(`${variable}: ${message}`);
    this.name = 'ConfigError';
  }
}

type Env = Readonly<Record<string, string | undefined>>;

function read(env: Env, name: string): string | undefined {
  const value = env[name];
  return value === undefined || value.trim() === '' ? undefined : value.trim();
}

/** The process's soft limit of open files, where Linux tells it; undefined elsewhere. */
export function openFileLimit(limits = '/proc/self/limits'): number | undefined {
  try {
    const line = /^Max open files\s+(\d+)/m.exec(readFileSync(limits, 'utf8'));
    return line?.[1] === undefined ? undefined : Number(line[1]);
  } catch {
    return undefined;
  }
}

/**
 * 10,000 connections (Entra holds a few per school), fewer where the open-file
 * limit is lower: a quarter of the files, or 256 at least, are left for the
 * database pool, the log and what the process opens itself. A process that
 * runs out accepts nothing and cannot even read its own memory use.
 */
export function defaultMaxConnections(files = openFileLimit()): number {
  if (files === undefined) return 10_000;
  return Math.max(16, Math.min(10_000, files - Math.max(256, Math.ceil(files / 4))));
}

function integer(env: Env, name: string, fallback: number, min: number, max: number): number {
  const raw = read(env, name);
  if (raw === undefined) return fallback;
  if (!/^\d+$/.test(raw)) throw new ConfigError(name, `must be a whole number, got "${raw}"`);
  const value = Number(raw);
  if (value < min || value > max) {
    throw new ConfigError(name, `must be between ${min} and ${max}, got ${value}`);
  }
  return value;
}

function url(env: Env, name: string, protocols: readonly string[]): string | undefined {
  const raw = read(env, name);
  if (raw === undefined) return undefined;
  let parsed: URL;
  try {
    parsed = new URL(raw);
  } catch {
    throw new ConfigError(name, 'is not a valid URL');
  }
  if (!protocols.includes(parsed.protocol)) {
    throw new ConfigError(name, `must start with ${protocols.map((p) => `${p}//`).join(' or ')}`);
  }
  return raw;
}

function secret(env: Env, name: string): string | undefined {
  const value = read(env, name);
  if (value !== undefined && Buffer.byteLength(value) < 32) {
    throw new ConfigError(name, 'must be at least 32 characters long');
  }
  return value;
}

/** Microsoft's keys for tokens whose issuer is https://sts.windows.net/<tenant>/ (v1 tokens). */
export const MICROSOFT_JWKS_URL = 'https://login.microsoftonline.com/common/discovery/keys';

const LOOPBACK_HOSTS = new Set(['127.0.0.1', 'localhost', '[::1]']);

/** The key document must come over TLS; plain http only from this machine (a test's key server). */
function jwksUrl(env: Env): string {
  const raw = url(env, 'ENTRA_JWKS_URL', ['https:', 'http:']);
  if (raw === undefined) return MICROSOFT_JWKS_URL;
  const parsed = new URL(raw);
  if (parsed.protocol === 'http:' && !LOOPBACK_HOSTS.has(parsed.hostname)) {
    throw new ConfigError('ENTRA_JWKS_URL', 'must start with https:// (http:// only for a loopback address)');
  }
  return raw;
}

function trustProxy(env: Env): boolean | string {
  const raw = read(env, 'TRUST_PROXY');
  if (raw === undefined || raw.toLowerCase() === 'false') return false;
  if (raw.toLowerCase() === 'true') return true;
  const entries = raw.split(',').map((s) => s.trim());
  if (entries.some((e) => !/^[0-9a-f.:]+(?:\/\d{1,3})?$/i.test(e))) {
    throw new ConfigError('TRUST_PROXY', 'must be true, false, or comma-separated addresses and CIDR ranges of the proxies');
  }
  return entries.join(',');
}

export function loadConfig(env: Env = process.env, cwd: string = process.cwd()): Config {
  const port = integer(env, 'PORT', 8080, 0, 65535);
  const metricsPort = read(env, 'METRICS_PORT') === undefined ? undefined : integer(env, 'METRICS_PORT', 0, 1, 65535);
  if (metricsPort !== undefined && metricsPort === port) throw new ConfigError('METRICS_PORT', `must differ from PORT (${port})`);
  const host = read(env, 'HOST') ?? '127.0.0.1';
  const databaseUrl = url(env, 'DATABASE_URL', ['postgres:', 'postgresql:']);
  const dataDir = path.resolve(cwd, read(env, 'DATA_DIR') ?? '.data');

  const rawPublicUrl = url(env, 'PUBLIC_URL', ['http:', 'https:']);
  const publicUrl = (rawPublicUrl ?? `http://localhost:${port}`).replace(/\/+$/, '');
  if (rawPublicUrl !== undefined && /[?#]/.test(rawPublicUrl)) {
    throw new ConfigError('PUBLIC_URL', 'must not contain a query or a fragment');
  }

  const logLevel = (read(env, 'LOG_LEVEL') ?? 'info').toLowerCase();
  if (!(LOG_LEVELS as readonly string[]).includes(logLevel)) {
    throw new ConfigError('LOG_LEVEL', `must be one of ${LOG_LEVELS.join(', ')}`);
  }

  const jwtSecret = secret(env, 'JWT_SECRET');
  const previous = (read(env, 'JWT_PREVIOUS_SECRETS') ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
  for (const key of previous) {
    if (Buffer.byteLength(key) < 32) {
      throw new ConfigError('JWT_PREVIOUS_SECRETS', 'every key must be at least 32 characters long');
    }
  }

  const databaseStatementTimeoutMs = integer(env, 'DATABASE_STATEMENT_TIMEOUT_MS', 15000, 100, 600000);
  const databaseLockTimeoutMs = integer(env, 'DATABASE_LOCK_TIMEOUT_MS', Math.min(5000, Math.floor(databaseStatementTimeoutMs / 3)), 10, 600000);
  if (databaseLockTimeoutMs >= databaseStatementTimeoutMs) {
    throw new ConfigError('DATABASE_LOCK_TIMEOUT_MS', `must be less than DATABASE_STATEMENT_TIMEOUT_MS (${databaseStatementTimeoutMs})`);
  }
  const databaseQueryTimeoutMs = integer(env, 'DATABASE_QUERY_TIMEOUT_MS', databaseStatementTimeoutMs + 1000, 100, 601000);
  if (databaseQueryTimeoutMs <= databaseStatementTimeoutMs) {
    throw new ConfigError('DATABASE_QUERY_TIMEOUT_MS', `must be more than DATABASE_STATEMENT_TIMEOUT_MS (${databaseStatementTimeoutMs})`);
  }
  const databasePoolSize = integer(env, 'DATABASE_POOL_SIZE', 10, 1, 200);
  // Three quarters of the pool: a tenant whose requests are stuck leaves the rest to the others.
  const tenantConcurrency = integer(env, 'TENANT_CONCURRENCY', Math.max(1, Math.floor((databasePoolSize * 3) / 4)), 0, 10000);
  const connectionOutputLimitBytes = integer(env, 'CONNECTION_OUTPUT_LIMIT_BYTES', 1048576, 65536, 1073741824);
  const outputLimitBytes = integer(env, 'OUTPUT_LIMIT_BYTES', 67108864, 65536, 17179869184);
  if (outputLimitBytes < connectionOutputLimitBytes) {
    throw new ConfigError('OUTPUT_LIMIT_BYTES', `must be at least CONNECTION_OUTPUT_LIMIT_BYTES (${connectionOutputLimitBytes})`);
  }

  return Object.freeze({
    port,
    host,
    databaseUrl,
    dataDir,
    publicUrl,
    logLevel: logLevel as LogLevel,
    jwtSecret,
    jwtPreviousSecrets: Object.freeze(previous),
    jwtIssuer: read(env, 'JWT_ISSUER') ?? 'portal-scim',
    jwtAudience: read(env, 'JWT_AUDIENCE') ?? 'portal-scim',
    credentialCacheSeconds: integer(env, 'CREDENTIAL_CACHE_SECONDS', 5, 0, 300),
    databasePoolSize,
    databaseStatementTimeoutMs,
    databaseLockTimeoutMs,
    databaseQueryTimeoutMs,
    readinessTimeoutMs: integer(env, 'READINESS_TIMEOUT_MS', 1000, 50, 60000),
    tenantConcurrency,
    tenantQueueTimeoutMs: integer(env, 'TENANT_QUEUE_TIMEOUT_MS', 2000, 0, 60000),
    bodyLimitBytes: integer(env, 'BODY_LIMIT_BYTES', 1048576, 1024, 67108864),
    requestTimeoutMs: integer(env, 'REQUEST_TIMEOUT_MS', 30000, 100, 3600000),
    connectionOutputLimitBytes,
    outputLimitBytes,
    maxConnections: integer(env, 'MAX_CONNECTIONS', defaultMaxConnections(), 16, 1_000_000),
    shutdownTimeoutMs: integer(env, 'SHUTDOWN_TIMEOUT_MS', 10000, 100, 600000),
    oauthTokenSeconds: integer(env, 'OAUTH_TOKEN_SECONDS', 3600, 60, 86400),
    rateLimitPerSecond: integer(env, 'RATE_LIMIT_PER_SECOND', 50, 0, 100000),
    maxEventLoopDelayMs: integer(env, 'MAX_EVENT_LOOP_DELAY_MS', 1000, 0, 60000),
    metricsPort,
    trustProxy: trustProxy(env),
    silentAfterMinutes: integer(env, 'SILENT_AFTER_MINUTES', 120, 5, 43200),
    changeFeedRetentionDays: integer(env, 'CHANGE_FEED_RETENTION_DAYS', 30, 1, 3650),
    entraJwksUrl: jwksUrl(env),
    entraJwksTimeoutMs: integer(env, 'ENTRA_JWKS_TIMEOUT_MS', 5000, 100, 60000),
    entraJwksCooldownSeconds: integer(env, 'ENTRA_JWKS_COOLDOWN_SECONDS', 30, 0, 3600),
  });
}
