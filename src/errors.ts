// The one error type every layer throws for a request that must fail: it
// carries the HTTP status and SCIM scimType the error renderer sends, and
// whether the failure's audit event is already written.
import { isDatabaseUnavailable, isForeignKeyViolation, isInvalidValue } from './db/errors.js';
export type ScimType =
  | 'invalidFilter'
  | 'tooMany'
  | 'uniqueness'
  | 'mutability'
  | 'invalidSyntax'
  | 'invalidPath'
  | 'noTarget'
  | 'invalidValue'
  | 'invalidVers'
  | 'sensitive';

/**
 * A detail longer than this is cut where it leaves the server. Details quote
 * what the request sent (an op, a path, a value), and a request may be a
 * megabyte: the answer and the failed write's audit event need only its
 * beginning. The log folds the whole detail (plugins/errors.ts), so a value
 * is folded away before anything is cut.
 */
export const MAX_DETAIL_LENGTH = 1000;

export function clippedDetail(detail: string): string {
  if (detail.length <= MAX_DETAIL_LENGTH) return detail;
  let end = MAX_DETAIL_LENGTH - 1;
  // Not between the two halves of a character outside the BMP: PostgreSQL refuses half of one.
  const last = detail.charCodeAt(end - 1);
  if (last >= 0xd800 && last <= 0xdbff) end -= 1;
  return `${detail.slice(0, end)}…`;
}

export class ScimError extends Error {
  constructor(
    readonly status: number,
    readonly scimType: ScimType | undefined,
    readonly detail: string,
    readonly headers: Readonly<Record<string, string>> = {},
    /** The handler already wrote this failure's audit event (a refusal it records itself, such as a conflict). */
    readonly audited = false,
  ) {
    super(detail);
    this.name = 'ScimError';
  }
}

export const badRequest = (scimType: ScimType | undefined, detail: string): ScimError =>
  new ScimError(400, scimType, detail);

export const notFound = (detail: string): ScimError => new ScimError(404, undefined, detail);

export const conflict = (detail: string): ScimError => new ScimError(409, 'uniqueness', detail);

export const preconditionFailed = (detail: string): ScimError => new ScimError(412, undefined, detail);

const CHALLENGE = 'Bearer realm="portal-scim"';

/** 401 with the SCIM API's Bearer challenge (RFC 6750); `invalid_token` when a token was sent and is refused. */
export function unauthorized(detail: string, error?: 'invalid_token'): ScimError {
  const challenge = error ? `${CHALLENGE}, error="${error}"` : CHALLENGE;
  return new ScimError(401, undefined, detail, { 'www-authenticate': challenge });
}

/** Retry-After in seconds for answers that tell Entra to come back soon. */
export const RETRY_AFTER_SECONDS = 5;

export const unavailable = (detail: string): ScimError =>
  new ScimError(503, undefined, detail, { 'retry-after': String(RETRY_AFTER_SECONDS) });

/**
 * The SCIM error a database failure stands for: 503 for a database that
 * cannot answer now (Entra retries it; a 404 would make it think the object
 * gone), 400 invalidValue for a value it refuses, 409 for a row deleted under
 * the request; undefined for the rest.
 */
export function databaseError(error: unknown): ScimError | undefined {
  if (isDatabaseUnavailable(error)) return unavailable('The database is unavailable; try again shortly.');
  if (isInvalidValue(error)) return badRequest('invalidValue', 'A value in the request cannot be stored (for example a NUL character, or a number or date out of range).');
  // A row the request writes names one deleted while it ran (its tenant, by hand): a conflict with that delete, not a fault.
  if (isForeignKeyViolation(error)) return new ScimError(409, undefined, 'Something this request refers to was deleted while it ran (its tenant, for example).');
  return undefined;
}
