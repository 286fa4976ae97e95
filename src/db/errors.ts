// Recognises PostgreSQL failures that mean "the database cannot answer now"
// (it is down, restarting, overloaded, or a query ran out of time), so they
// reach the client as 503 and never as 404 or 500.
import { badRequest, unavailable, type ScimError } from '../errors.js';

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
];

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

// A value the request carried that PostgreSQL cannot store or compare: data
// exceptions (class 22: a NUL character, an out-of-range number or date, an
// invalid text representation) and check or not-null violations.
function isInvalidValue(error: unknown): boolean {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === 'string' && /^(22[0-9A-Z]{3}|23502|23514)$/.test(code);
}

/**
 * The SCIM error a database failure stands for: 503 for a database that cannot
 * answer now, 400 invalidValue for a value it refuses; undefined for the rest.
 */
export function databaseError(error: unknown): ScimError | undefined {
  if (isDatabaseUnavailable(error)) return unavailable('The database is unavailable; try again shortly.');
  if (isInvalidValue(error)) return badRequest('invalidValue', 'A value in the request cannot be stored (for example a NUL character, or a number or date out of range).');
  return undefined;
}

export function isUniqueViolation(error: unknown, constraint?: string): boolean {
  const e = error as { code?: unknown; constraint?: unknown } | null;
  return e?.code === '23505' && (constraint === undefined || e.constraint === constraint);
}
