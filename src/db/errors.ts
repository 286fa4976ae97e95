// The database-level errors the data layer raises and recognises: a database
// that cannot answer now (down, restarting, overloaded, a query out of time),
// a value it refuses, a unique or foreign-key violation. The layers above
// decide what each means for a request (plugins/errors.ts: 503, 400).

const UNAVAILABLE_NODE_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'ENOTFOUND', 'EHOSTUNREACH', 'EAI_AGAIN']);
const UNAVAILABLE_SQLSTATES = new Set([
  '57P01', // admin_shutdown
  '57P02', // crash_shutdown
  '57P03', // cannot_connect_now
  '53300', // too_many_connections
  '57014', // query_canceled (statement_timeout)
  '55P03', // lock_not_available (lock_timeout)
  '40001', // serialization_failure after our retries
  '40P01', // deadlock_detected after our retries
]);
const UNAVAILABLE_MESSAGES = [
  'timeout exceeded when trying to connect',
  'connection terminated',
  'connection timeout',
  'client has encountered a connection error',
  'cannot use a pool after calling end',
  'client was closed',
  'query read timeout', // pg's query_timeout: the server did not answer at all
  // SQLSTATE 55000, which also names errors that are no outage: a database closed for maintenance (ALLOW_CONNECTIONS false).
  'is not currently accepting connections',
];

/** Whether a failure means the database cannot answer now (worth a retry later). */
export function isDatabaseUnavailable(error: unknown, depth = 0): boolean {
  if (typeof error !== 'object' || error === null || depth > 4) return false;
  const { code, message, cause, errors, statusCode } = error as {
    code?: unknown;
    message?: unknown;
    cause?: unknown;
    errors?: unknown;
    statusCode?: unknown;
  };
  // An HTTP status on the error marks the request's own failure (a body cut
  // off by its client is ECONNRESET too), never the database's.
  if (statusCode !== undefined) return false;
  if (typeof code === 'string') {
    if (UNAVAILABLE_NODE_CODES.has(code) || UNAVAILABLE_SQLSTATES.has(code) || code.startsWith('08')) return true;
  }
  if (typeof message === 'string') {
    const lower = message.toLowerCase();
    if (UNAVAILABLE_MESSAGES.some((m) => lower.includes(m))) return true;
  }
  // AggregateError from a connect to several addresses (127.0.0.1 and ::1).
  if (Array.isArray(errors) && errors.some((e) => isDatabaseUnavailable(e, depth + 1))) return true;
  return isDatabaseUnavailable(cause, depth + 1);
}

/**
 * A value the request carried that PostgreSQL cannot store or compare: data
 * exceptions (class 22: a NUL character, an out-of-range number or date, an
 * invalid text representation) and check or not-null violations.
 */
export function isInvalidValue(error: unknown): boolean {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === 'string' && /^(22[0-9A-Z]{3}|23502|23514)$/.test(code);
}

/** A write refused by a unique index: the layer that knows what the index means says so. */
export class UniqueViolation extends Error {
  constructor(readonly constraint: string) {
    super(`unique violation of ${constraint}`);
    this.name = 'UniqueViolation';
  }
}

/** The UniqueViolation a driver error stands for, if it is one. */
export function uniqueViolation(error: unknown): UniqueViolation | undefined {
  const e = error as { code?: unknown; constraint?: unknown } | null;
  return e?.code === '23505' ? new UniqueViolation(typeof e.constraint === 'string' ? e.constraint : '') : undefined;
}

export function isUniqueViolation(error: unknown, constraint?: string): boolean {
  const e = error as { code?: unknown; constraint?: unknown } | null;
  if (error instanceof UniqueViolation) return constraint === undefined || error.constraint === constraint;
  return e?.code === '23505' && (constraint === undefined || e.constraint === constraint);
}

/** A row that names a row that does not exist, refused by the data layer itself where no foreign key checks it (migration 0024). */
export class ForeignKeyViolation extends Error {
  readonly code = '23503';
  constructor(readonly constraint: string) {
    super(`foreign key violation of ${constraint}`);
    this.name = 'ForeignKeyViolation';
  }
}

export function isForeignKeyViolation(error: unknown): boolean {
  return (error as { code?: unknown } | null)?.code === '23503';
}
