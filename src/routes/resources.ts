// One route module for every SCIM resource type: the HTTP side of Users and
// Groups (RFC 7644 §3), with ETags, list parameters, .search and 405s; and
// the search from the root over both.
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Config } from '../config.js';
import type { ChangeNotifier } from '../db/change-notifier.js';
import type { Db } from '../db/database.js';
import { ScimError, badRequest, preconditionFailed } from '../errors.js';
import { parseFilter, parsePatchPath } from '../scim/filter.js';
import { excludesMembers, project, type Projection } from '../scim/projection.js';
import { listsVersion, type Json, type ListParams, type RequestContext, type ResourceHandler, type WriteStrategy } from '../scim/resource.js';
import { rootSearch } from '../scim/root-search.js';
import { DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, MAX_START_INDEX } from '../scim/limits.js';
import { LIST_RESPONSE_SCHEMA, SEARCH_REQUEST_SCHEMA } from '../scim/schemas.js';
import type { SeenAccounts } from '../scim/seen-accounts.js';
import { isEndpointName, tenantUrlMistake } from './tenant-url.js';

/** An integer of any size (a huge one may come back as Infinity; callers bound it). */
function integerParam(name: string, value: unknown): number | undefined {
  if (value === undefined || value === null || value === '') return undefined;
  if (typeof value === 'number' && Number.isInteger(value)) return value;
  if (typeof value === 'string' && /^\s*[-+]?\d+\s*$/.test(value)) return Number(value);
  throw badRequest('invalidValue', `${name} must be an integer.`);
}

function stringParam(name: string, value: unknown): string | undefined {
  if (value === undefined || value === null) return undefined;
  if (Array.isArray(value)) return value.map((v) => stringParam(name, v)).join(',');
  if (typeof value !== 'string') throw badRequest('invalidValue', `${name} must be a string.`);
  return value;
}

/** attributes= and excludedAttributes=; a parameter given twice is one list. */
function projectionParams(input: { attributes?: unknown; excludedAttributes?: unknown }): Projection {
  return {
    attributes: stringParam('attributes', input.attributes),
    excludedAttributes: stringParam('excludedAttributes', input.excludedAttributes),
  };
}

interface ListInput {
  filter?: unknown;
  startIndex?: unknown;
  count?: unknown;
  sortBy?: unknown;
  sortOrder?: unknown;
  attributes?: unknown;
  excludedAttributes?: unknown;
}

function listParams(input: ListInput): { params: ListParams; projection: Projection } {
  const filterText = stringParam('filter', input.filter);
  // RFC 7644 §3.4.2.4: below 1 means 1, a negative count means 0, and a
  // server may return fewer than count; past the largest startIndex is an error.
  const startIndex = Math.max(1, integerParam('startIndex', input.startIndex) ?? 1);
  if (startIndex > MAX_START_INDEX) throw badRequest('invalidValue', `startIndex must be at most ${MAX_START_INDEX}.`);
  const count = Math.min(MAX_PAGE_SIZE, Math.max(0, integerParam('count', input.count) ?? DEFAULT_PAGE_SIZE));
  const sortByText = stringParam('sortBy', input.sortBy);
  const sortOrder = stringParam('sortOrder', input.sortOrder)?.toLowerCase();
  if (sortOrder !== undefined && sortOrder !== 'ascending' && sortOrder !== 'descending') {
    throw badRequest('invalidValue', 'sortOrder must be "ascending" or "descending".');
  }
  let sortBy;
  if (sortByText !== undefined && sortByText.trim() !== '') {
    try {
      const parsed = parsePatchPath(sortByText);
      if (parsed.filter) throw new Error('filtered');
      sortBy = parsed.path;
    } catch {
      throw badRequest('invalidValue', `sortBy "${sortByText}" is not an attribute name.`);
    }
  }
  const projection = projectionParams(input);
  return {
    params: {
      filter: filterText !== undefined ? parseFilter(filterText) : undefined,
      sortBy,
      descending: sortOrder === 'descending',
      startIndex,
      count,
      withMembers: !excludesMembers(projection),
    },
    projection,
  };
}

function header(request: FastifyRequest, name: string): string | undefined {
  const value = request.headers[name];
  return Array.isArray(value) ? value.join(',') : value;
}

/** The resource as the projection asks for it, with its version as ETag even when meta is left out. */
function sendResource(reply: FastifyReply, name: ResourceHandler['name'], resource: Json, projection: Projection, status = 200): FastifyReply {
  const version = (resource.meta as { version?: string } | undefined)?.version;
  if (version) reply.header('etag', version);
  return reply.code(status).send(project(name, resource, projection));
}

/** A SearchRequest body (RFC 7644 §3.4.3) as list parameters. */
function searchInput(body: unknown): ListInput {
  const input = (body ?? {}) as Json;
  if (typeof input !== 'object' || Array.isArray(input)) throw badRequest('invalidSyntax', 'The search body must be a JSON object.');
  const schemas = input.schemas;
  if (!Array.isArray(schemas) || !schemas.includes(SEARCH_REQUEST_SCHEMA)) {
    throw badRequest('invalidSyntax', `A search body must list the schema ${SEARCH_REQUEST_SCHEMA}.`);
  }
  const joined = (v: unknown): unknown => (Array.isArray(v) ? v.join(',') : v);
  return { ...input, attributes: joined(input.attributes), excludedAttributes: joined(input.excludedAttributes) };
}

function listResponse(params: ListParams, total: number, resources: Json[]): Json {
  return { schemas: [LIST_RESPONSE_SCHEMA], totalResults: total, startIndex: params.startIndex, itemsPerPage: resources.length, Resources: resources };
}

/** attributes= or excludedAttributes= was given: the client wants the resource back (RFC 7644 §3.5.2). */
function asksForResource(projection: Projection): boolean {
  return Boolean(projection.attributes?.trim() || projection.excludedAttributes?.trim());
}

interface ContextOptions {
  config: Config;
  db: Db;
  seenAccounts: SeenAccounts;
  writeStrategy: WriteStrategy;
  changes: ChangeNotifier;
}

function requestContext(request: FastifyRequest, { config, db, seenAccounts, writeStrategy, changes }: ContextOptions): RequestContext {
  const auth = request.auth;
  if (!auth) throw new ScimError(401, undefined, 'Authentication required.');
  return {
    db,
    tenant: auth.tenant,
    credentialId: auth.credentialId,
    requestId: request.id,
    baseUrl: `${config.publicUrl}/scim/v2`,
    log: request.log,
    seenAccounts,
    writeStrategy,
    changes,
  };
}

export interface ResourceRouteOptions extends ContextOptions {
  handler: ResourceHandler;
}

export async function resourceRoutes(app: FastifyInstance, options: ResourceRouteOptions): Promise<void> {
  const { handler, config } = options;
  const endpoint = handler.endpoint;
  const context = (request: FastifyRequest): RequestContext => requestContext(request, options);
  const tenantUrl = `${config.publicUrl}/scim/v2`;

  /** An id that is an endpoint's name: the Tenant URL was given with /Users or /Groups at its end. */
  const checkId = (request: FastifyRequest, id: string): void => {
    const mistake = isEndpointName(id) ? tenantUrlMistake(request.url, tenantUrl) : undefined;
    if (mistake) throw mistake;
  };

  const list = async (request: FastifyRequest, input: ListInput) => {
    const { params, projection } = listParams(input);
    const { total, resources } = await handler.list(context(request), params);
    return listResponse(params, total, resources.map((r) => project(handler.name, r, projection)));
  };

  app.get(endpoint, async (request) => list(request, request.query as ListInput));

  app.post(`${endpoint}/.search`, async (request) => list(request, searchInput(request.body)));

  app.post(endpoint, async (request, reply) => {
    const query = projectionParams(request.query as Projection);
    const created = await handler.create(context(request), request.body);
    reply.header('location', (created.meta as { location: string }).location);
    return sendResource(reply, handler.name, created, query, 201);
  });

  app.get(`${endpoint}/:id`, async (request, reply) => {
    const { id } = request.params as { id: string };
    checkId(request, id);
    const query = projectionParams(request.query as Projection);
    const resource = await handler.get(context(request), id, !excludesMembers(query));
    const version = (resource.meta as { version: string }).version;
    const ifNoneMatch = header(request, 'if-none-match');
    if (ifNoneMatch && listsVersion(ifNoneMatch, version)) {
      return reply.code(304).header('etag', version).send();
    }
    return sendResource(reply, handler.name, resource, query);
  });

  /**
   * If-None-Match on a change (RFC 7232 §3.2): `*` or a listed version means
   * "not if it is there as I last saw it". No client of ours sends it; it is
   * read before the write, so it is a courtesy, not a lock: If-Match is that.
   * Nothing there, the write itself answers (a 404, or a disconnected
   * tenant's 401).
   */
  const checkIfNoneMatch = async (request: FastifyRequest, id: string): Promise<void> => {
    const ifNoneMatch = header(request, 'if-none-match');
    if (ifNoneMatch === undefined) return;
    let version: string;
    try {
      version = ((await handler.get(context(request), id, false)).meta as { version: string }).version;
    } catch (error) {
      if (error instanceof ScimError && error.status === 404) return;
      throw error;
    }
    if (listsVersion(ifNoneMatch, version)) throw preconditionFailed(`The resource is there at ${version}, which If-None-Match: ${ifNoneMatch} excludes.`);
  };

  app.put(`${endpoint}/:id`, async (request, reply) => {
    const { id } = request.params as { id: string };
    checkId(request, id);
    await checkIfNoneMatch(request, id);
    const query = projectionParams(request.query as Projection);
    const resource = await handler.replace(context(request), id, request.body, header(request, 'if-match'));
    return sendResource(reply, handler.name, resource, query);
  });

  app.patch(`${endpoint}/:id`, async (request, reply) => {
    const { id } = request.params as { id: string };
    checkId(request, id);
    await checkIfNoneMatch(request, id);
    const query = projectionParams(request.query as Projection);
    const ctx = context(request);
    let resource = await handler.patch(ctx, id, request.body, header(request, 'if-match'));
    // A group PATCH answers 204, unless the client asked for the resource.
    if (resource === undefined && asksForResource(query)) resource = await handler.get(ctx, id, !excludesMembers(query));
    if (resource === undefined) return reply.code(204).send();
    return sendResource(reply, handler.name, resource, query);
  });

  app.delete(`${endpoint}/:id`, async (request, reply) => {
    const { id } = request.params as { id: string };
    checkId(request, id);
    await checkIfNoneMatch(request, id);
    await handler.remove(context(request), id, header(request, 'if-match'));
    return reply.code(204).send();
  });

  app.route({ method: ['PUT', 'PATCH', 'DELETE'], url: endpoint, config: { methodNotAllowed: true }, handler: notAllowed('GET, POST') });
  app.route({ method: ['GET', 'PUT', 'PATCH', 'DELETE'], url: `${endpoint}/.search`, config: { methodNotAllowed: true }, handler: notAllowed('POST') });
  const notAllowedOnId = notAllowed('GET, PUT, PATCH, DELETE');
  app.route({
    method: ['POST'],
    url: `${endpoint}/:id`,
    config: { methodNotAllowed: true },
    handler: async (request, reply) => {
      checkId(request, (request.params as { id: string }).id);
      return notAllowedOnId(request, reply);
    },
  });
}

function notAllowed(allow: string) {
  return async (request: FastifyRequest, reply: FastifyReply): Promise<never> => {
    reply.header('allow', allow);
    throw new ScimError(405, undefined, `${request.method} is not supported here; use ${allow}.`);
  };
}

export interface RootSearchRouteOptions extends ContextOptions {
  handlers: readonly ResourceHandler[];
}

/** POST /.search at the root (RFC 7644 §3.4.3): Users and Groups in one list. */
export async function rootSearchRoutes(app: FastifyInstance, options: RootSearchRouteOptions): Promise<void> {
  app.post('/.search', async (request) => {
    const { params, projection } = listParams(searchInput(request.body));
    const { total, resources } = await rootSearch(requestContext(request, options), options.handlers, params);
    return listResponse(params, total, resources.map(({ handler, resource }) => project(handler.name, resource, projection)));
  });
  app.route({ method: ['GET', 'PUT', 'PATCH', 'DELETE'], url: '/.search', config: { methodNotAllowed: true }, handler: notAllowed('POST') });
}
