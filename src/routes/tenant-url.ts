// Requests that reach the server through a wrong Tenant URL: without /scim/v2,
// with /Users or /Groups at its end, with a slash too many. They answer a SCIM
// 404 whose detail names the Tenant URL to use, so the admin reading Entra's
// provisioning log (or Test Connection's message) knows what to change.
import { notFound, type ScimError } from '../errors.js';

/** The SCIM endpoints a client appends to the Tenant URL (RFC 7644 §3.2), by lower-case name. */
const ENDPOINTS = new Map(['Users', 'Groups', 'Me', 'Schemas', 'ResourceTypes', 'ServiceProviderConfig', 'Bulk', '.search'].map((e) => [e.toLowerCase(), e]));

export function isEndpointName(segment: string): boolean {
  return ENDPOINTS.has(segment.toLowerCase());
}

/**
 * The error for a request a wrong Tenant URL made, or undefined when the
 * path does not look like one. `url` is the request URL, `tenantUrl` the
 * right one ($PUBLIC_URL/scim/v2).
 */
export function tenantUrlMistake(url: string, tenantUrl: string): ScimError | undefined {
  const path = url.split('?')[0] ?? '';
  if (path.includes('//')) {
    return notFound(`The request path ${path} has an empty segment (//): set the Tenant URL to ${tenantUrl}, with no slash at its end.`);
  }
  const segments = path.split('/').filter((s) => s !== '');
  const underBase = segments[0]?.toLowerCase() === 'scim' && segments[1]?.toLowerCase() === 'v2';
  const rest = underBase ? segments.slice(2) : segments;
  const [first = '', second] = rest;
  if (underBase && isEndpointName(first) && second !== undefined && isEndpointName(second)) {
    const name = ENDPOINTS.get(first.toLowerCase()) ?? first;
    return notFound(`The Tenant URL ends in /${name}: set it to ${tenantUrl}, without /Users or /Groups (Entra adds them).`);
  }
  if ((!underBase || first.toLowerCase() === 'scim') && rest.some(isEndpointName)) {
    return notFound(`No SCIM endpoint at ${path}: set the Tenant URL to ${tenantUrl} (Entra adds /Users and /Groups to it).`);
  }
  return undefined;
}
