// Small helpers to speak SCIM to the app in tests.
import type { FastifyInstance, LightMyRequestResponse } from 'fastify';

export const USER = 'urn:ietf:params:scim:schemas:core:2.0:User';
export const GROUP = 'urn:ietf:params:scim:schemas:core:2.0:Group';
export const ENTERPRISE = 'urn:ietf:params:scim:schemas:extension:enterprise:2.0:User';
export const PORTAL = 'urn:ietf:params:scim:schemas:extension:portal:2.0:User';
export const PATCH_OP = 'urn:ietf:params:scim:api:messages:2.0:PatchOp';
export const ADSCIM_GROUP = 'http://schemas.microsoft.com/2006/11/ResourceManagement/ADSCIM/2.0/Group';

export type Send = (method: string, url: string, body?: unknown, headers?: Record<string, string>) => Promise<LightMyRequestResponse>;

export function client(app: FastifyInstance, auth: Record<string, string>): Send {
  return (method, url, body, headers = {}) =>
    app.inject({
      method: method as 'GET',
      url: `/scim/v2${url}`,
      headers: { ...auth, ...headers },
      ...(body === undefined ? {} : typeof body === 'string' ? { payload: body } : { payload: JSON.stringify(body) }),
    });
}

/** An Entra-shaped user, as the default attribute mappings send it. */
export function entraUser(n: number, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    schemas: [USER, ENTERPRISE],
    externalId: `00000000-0000-4000-8000-${String(n).padStart(12, '0')}`,
    userName: `Pupil${n}@School.example`,
    active: true,
    displayName: `Pupil ${n}`,
    name: { givenName: 'Pupil', familyName: `Number ${n}`, formatted: `Pupil Number ${n}` },
    emails: [{ primary: true, type: 'work', value: `pupil${n}@school.example` }],
    [ENTERPRISE]: { employeeNumber: String(1000 + n), department: 'Norra skolan' },
    ...extra,
  };
}

export const patch = (...operations: unknown[]) => ({ schemas: [PATCH_OP], Operations: operations });
