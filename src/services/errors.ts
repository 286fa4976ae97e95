// The one error the tenant and credential operations raise for a request
// that cannot be done: the CLI prints its message, the admin API answers it
// as a SCIM error body (400, 404 or 409).
/** invalid input; no such object; a state that forbids it (a disconnected tenant); a value another object holds (a domain). */
export type ServiceErrorKind = 'invalid' | 'not-found' | 'conflict' | 'taken';

export class ServiceError extends Error {
  constructor(
    readonly kind: ServiceErrorKind,
    message: string,
  ) {
    super(message);
    this.name = 'ServiceError';
  }
}
