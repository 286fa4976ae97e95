// The one error type every layer throws for a request that must fail: it
// carries the HTTP status and SCIM scimType the error renderer sends.
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

export class ScimError extends Error {
  constructor(
    readonly status: number,
    readonly scimType: ScimType | undefined,
    readonly detail: string,
    readonly headers: Readonly<Record<string, string>> = {},
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

/** Retry-After in seconds for answers that tell Entra to come back soon. */
export const RETRY_AFTER_SECONDS = 5;

export const unavailable = (detail: string): ScimError =>
  new ScimError(503, undefined, detail, { 'retry-after': String(RETRY_AFTER_SECONDS) });
