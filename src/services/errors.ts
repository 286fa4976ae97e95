// The one error the tenant and credential operations raise for a request
// that cannot be done: the CLI prints its message, the admin API answers it
// as a SCIM error body (400, 404 or 409).
export type ServiceErrorKind = 'invalid' | 'not-found' | 'conflict';

export class ServiceError extends Error {
  constructor(
    readonly kind: ServiceErrorKind,
    message: string,
  ) {
    super(message);
    this.name = 'ServiceError';
  }
}
