// What every SCIM resource type offers the generic routes, and the pieces
// they share: request context, ETags, list parameters.
import type { FastifyBaseLogger } from 'fastify';
import type { ChangeNotifier } from '../db/change-notifier.js';
import type { Db } from '../db/database.js';
import type { TenantSettings } from '../db/tenants.js';
import { preconditionFailed } from '../errors.js';
import type { AttrPath, FilterNode } from './filter.js';
import type { SeenAccounts } from './seen-accounts.js';
import type { ResourceName } from './schemas.js';

export type Json = Record<string, unknown>;

/**
 * How a write is run. `quick` (the server's): one statement planned from what
 * is known without a lock, and the locked path only when a guard fails;
 * `locked`: always plan from freshly locked rows in a transaction (the
 * differential test holds the two to the same rows and answers).
 */
export type WriteStrategy = 'quick' | 'locked';

/** Request data that travels with every call: never kept in globals. */
export interface RequestContext {
  db: Db;
  tenant: TenantSettings;
  credentialId: string;
  requestId: string;
  /** PUBLIC_URL + /scim/v2, for meta.location. */
  baseUrl: string;
  log: FastifyBaseLogger;
  /** This app's recently seen accounts, the base of the next PATCH (seen-accounts.ts). */
  seenAccounts: SeenAccounts;
  writeStrategy: WriteStrategy;
  /** Told when a write has committed, to wake the change feed's readers. */
  changes: Pick<ChangeNotifier, 'changed'>;
}

export interface ListParams {
  filter: FilterNode | undefined;
  sortBy: AttrPath | undefined;
  descending: boolean;
  /** 1-based, as in SCIM. */
  startIndex: number;
  count: number;
  /** excludedAttributes=members: members are not read at all. */
  withMembers: boolean;
}

export interface ResourceHandler {
  name: ResourceName;
  endpoint: '/Users' | '/Groups';
  create(ctx: RequestContext, body: unknown): Promise<Json>;
  get(ctx: RequestContext, id: string, withMembers: boolean): Promise<Json>;
  list(ctx: RequestContext, params: ListParams): Promise<{ total: number; resources: Json[] }>;
  replace(ctx: RequestContext, id: string, body: unknown, ifMatch: string | undefined): Promise<Json>;
  /** The patched resource, or undefined to answer 204 No Content. */
  patch(ctx: RequestContext, id: string, body: unknown, ifMatch: string | undefined): Promise<Json | undefined>;
  remove(ctx: RequestContext, id: string, ifMatch: string | undefined): Promise<void>;
}

export const etag = (version: number): string => `W/"${version}"`;

/** If-Match: "*" or any listed tag (weak comparison) must name the current version. */
export function checkIfMatch(header: string | undefined, version: number): void {
  if (header === undefined) return;
  if (!listsVersion(header, String(version))) throw preconditionFailed(`The resource has changed: its version is ${etag(version)}, not ${header}.`);
}

/**
 * Whether an If-Match or If-None-Match list names a version: `*`, or its tag
 * weak, strong or bare. The server's tags are all weak (W/"n"), which RFC
 * 7232 §3.1 would let no If-Match match by strong comparison; Entra and the
 * SCIM Validator send back the tag they were given, so both headers compare
 * the version number.
 */
export function listsVersion(header: string, tag: string): boolean {
  const bare = (t: string): string => t.trim().replace(/^W\//, '').replace(/^"|"$/g, '');
  const current = bare(tag);
  return header.split(',').some((t) => t.trim() === '*' || bare(t) === current);
}

export function meta(resourceType: ResourceName, id: string, created: Date, lastModified: Date, version: number, baseUrl: string, endpoint: string): Json {
  return {
    resourceType,
    created: created.toISOString(),
    lastModified: lastModified.toISOString(),
    location: `${baseUrl}${endpoint}/${id}`,
    version: etag(version),
  };
}

/** Object keys in one order at every depth: a stored document (jsonb) does not keep the order it was written in. */
export function sortedKeys(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(sortedKeys);
  if (typeof value !== 'object' || value === null) return value;
  return Object.fromEntries(
    Object.keys(value)
      .sort()
      .map((k) => [k, sortedKeys((value as Json)[k])]),
  );
}

/** Whether two JSON values differ, whatever the order of their keys. */
export function differ(x: unknown, y: unknown): boolean {
  // Most attributes are untouched and keep their order: one comparison each.
  return JSON.stringify(x) !== JSON.stringify(y) && JSON.stringify(sortedKeys(x)) !== JSON.stringify(sortedKeys(y));
}

/** The attribute names a write changed: top level, and extension attributes as urn:...:name. */
export function changedAttributes(before: Json, after: Json): string[] {
  const names = new Set<string>();
  const visit = (a: Json, b: Json, prefix: string): void => {
    for (const key of new Set([...Object.keys(a), ...Object.keys(b)])) {
      if (key === 'schemas' || key === 'meta' || key === 'id') continue;
      const x = a[key];
      const y = b[key];
      // A change keeps the containers it did not touch.
      if (x === y) continue;
      if (key.startsWith('urn:') && typeof x === 'object' && typeof y === 'object' && x && y && !Array.isArray(x) && !Array.isArray(y)) {
        visit(x as Json, y as Json, `${key}:`);
      } else if (differ(x, y)) names.add(`${prefix}${key}`);
    }
  };
  visit(before, after, '');
  return [...names].sort();
}
