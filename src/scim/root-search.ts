// A search from the server root (RFC 7644 §3.4.3): Users and Groups together,
// with the filter, paging and sorting of the per-resource searches. Each
// resource type answers its own part through its handler's list; this module
// only says what the filter means for each type and stitches the pages.
import { badRequest } from '../errors.js';
import type { AttrPath, FilterNode } from './filter.js';
import { filterCriteria, sortKey } from './filter-criteria.js';
import { MAX_PAGE_SIZE } from './limits.js';
import type { Json, ListParams, RequestContext, ResourceHandler } from './resource.js';
import { resolveAttribute } from './schema-index.js';
import type { ResourceName } from './schemas.js';

/**
 * How far into a root search sorted by an attribute that Users and Groups
 * both have a page may start: both lists are read from their start and
 * merged, so this bounds what one request reads.
 */
export const MAX_ROOT_SORT_WINDOW = 10 * MAX_PAGE_SIZE;

/** Whether the resource type has the attribute a filter or sortBy names. */
function hasAttribute(resource: ResourceName, path: AttrPath): boolean {
  try {
    // Resolving is all a presence test does that can fail for a known name.
    filterCriteria(resource, { kind: 'present', path });
    return true;
  } catch {
    return false;
  }
}

function leafPath(node: FilterNode): AttrPath | undefined {
  return node.kind === 'compare' || node.kind === 'present' || node.kind === 'valuePath' ? node.path : undefined;
}

/**
 * The filter as it applies to one resource type: "for filtered attributes
 * that are not part of a particular resource type, the service provider
 * SHALL treat the attribute as if there is no attribute value" (RFC 7644
 * §3.4.2). A comparison on no value is false (ne is true, as in the criteria's
 * two-valued logic); true and false fold away, and stand for "every
 * resource" and "none".
 */
function filterFor(resource: ResourceName, node: FilterNode): FilterNode | boolean {
  const path = leafPath(node);
  if (path) {
    if (hasAttribute(resource, path)) return node;
    return node.kind === 'compare' && (node.op === 'ne' ? node.value !== null : node.op === 'eq' && node.value === null);
  }
  switch (node.kind) {
    case 'not': {
      const inner = filterFor(resource, node.node);
      return typeof inner === 'boolean' ? !inner : { kind: 'not', node: inner };
    }
    case 'and':
    case 'or': {
      const stop = node.kind === 'or';
      const kept: FilterNode[] = [];
      for (const part of node.nodes.map((n) => filterFor(resource, n))) {
        if (part === stop) return stop;
        if (typeof part !== 'boolean') kept.push(part);
      }
      if (kept.length === 0) return !stop;
      return kept.length === 1 ? (kept[0] as FilterNode) : { kind: node.kind, nodes: kept };
    }
    default:
      return node;
  }
}

/** Every attribute the filter names must belong to one resource type at least; else the per-resource error. */
function checkNames(resources: readonly ResourceName[], node: FilterNode): void {
  const path = leafPath(node);
  if (path) {
    if (!resources.some((r) => hasAttribute(r, path))) filterCriteria(resources[0] ?? 'User', node);
    return;
  }
  if (node.kind === 'not') checkNames(resources, node.node);
  else if (node.kind === 'and' || node.kind === 'or') for (const n of node.nodes) checkNames(resources, n);
}

/** A resource's value for sortBy, as the SQL sort sees it: case-folded unless case-exact, a multi-valued attribute by its primary (or first) element. */
function sortValue(resource: ResourceName, document: Json, path: AttrPath): unknown {
  const found = resolveAttribute(resource, path);
  if (!found) return undefined;
  let value: unknown = found.extension ? (document[found.extension.id] as Json | undefined)?.[found.attribute.name] : document[found.attribute.name];
  let caseExact = found.attribute.config.caseExact === true;
  const subName = path.sub ?? (Array.isArray(value) ? 'value' : undefined);
  if (Array.isArray(value)) value = value.find((e) => (e as Json | null)?.primary === true) ?? value[0];
  if (subName !== undefined) {
    const sub = found.attribute.subAttributes?.find((s) => s.name.toLowerCase() === subName.toLowerCase());
    caseExact = sub?.config.caseExact === true && !found.attribute.config.multiValued;
    value = typeof value === 'object' && value !== null && sub ? (value as Json)[sub.name] : undefined;
  }
  return typeof value === 'string' && !caseExact ? value.toLowerCase() : value;
}

interface Entry {
  handler: ResourceHandler;
  resource: Json;
  key: unknown;
}

/**
 * Two sorted lists in one order, missing values last in both directions and
 * ties by id, as each list's SQL orders them. Values of the two types are
 * compared by code point: each list keeps PostgreSQL's order, and the merge
 * is the same for every page.
 */
function compareEntries(descending: boolean) {
  return (a: Entry, b: Entry): number => {
    const missingA = a.key === undefined || a.key === null;
    const missingB = b.key === undefined || b.key === null;
    if (missingA !== missingB) return missingA ? 1 : -1;
    if (!missingA && a.key !== b.key) {
      const order = (a.key as string) < (b.key as string) ? -1 : 1;
      return descending ? -order : order;
    }
    return String(a.resource.id) < String(b.resource.id) ? -1 : 1;
  };
}

function merge(lists: Entry[][], compare: (a: Entry, b: Entry) => number): Entry[] {
  const heads = lists.map(() => 0);
  const out: Entry[] = [];
  for (;;) {
    let best = -1;
    for (let i = 0; i < lists.length; i++) {
      const candidate = lists[i]?.[heads[i] ?? 0];
      const current = best < 0 ? undefined : lists[best]?.[heads[best] ?? 0];
      if (candidate && (!current || compare(candidate, current) < 0)) best = i;
    }
    if (best < 0) return out;
    out.push(lists[best]?.[heads[best] ?? 0] as Entry);
    heads[best] = (heads[best] ?? 0) + 1;
  }
}

export interface RootSearchResult {
  total: number;
  resources: { handler: ResourceHandler; resource: Json }[];
}

/** One page of a root search over the handlers' resource types, in the handlers' order when nothing sorts them. */
export async function rootSearch(ctx: RequestContext, handlers: readonly ResourceHandler[], params: ListParams): Promise<RootSearchResult> {
  const names = handlers.map((h) => h.name);
  if (params.filter) checkNames(names, params.filter);
  const { sortBy } = params;
  if (sortBy && !names.some((r) => hasAttribute(r, sortBy))) sortKey(names[0] ?? 'User', sortBy);
  const parts = handlers
    .map((handler) => ({ handler, filter: params.filter ? filterFor(handler.name, params.filter) : true, sorts: sortBy !== undefined && hasAttribute(handler.name, sortBy) }))
    .filter((part) => part.filter !== false)
    // Resources without the sortBy attribute come last, as missing values do.
    .sort((a, b) => Number(b.sorts) - Number(a.sorts));
  const paramsFor = (part: (typeof parts)[number], startIndex: number, count: number, withMembers: boolean): ListParams => ({
    filter: part.filter === true ? undefined : (part.filter as FilterNode),
    sortBy: part.sorts ? sortBy : undefined,
    descending: params.descending,
    startIndex,
    count,
    withMembers,
  });

  const sorted = parts.filter((p) => p.sorts);
  if (sortBy && sorted.length > 1) {
    // The sortBy attribute is in several types: their lists are merged.
    const window = params.startIndex - 1 + params.count;
    if (window > MAX_ROOT_SORT_WINDOW) {
      throw badRequest(
        'tooMany',
        `A search from the root sorted by an attribute of both Users and Groups can page up to ${MAX_ROOT_SORT_WINDOW} results; search /Users or /Groups instead.`,
      );
    }
    const lists = await Promise.all(
      sorted.map(async (part) => {
        const { total, resources } = await part.handler.list(ctx, paramsFor(part, 1, window, false));
        return {
          part,
          total,
          // A list answer holds fewer resources than asked when they are large (LIST_DOCUMENT_BYTES).
          cut: resources.length < Math.min(window, total),
          entries: resources.map((resource) => ({ handler: part.handler, resource, key: sortValue(part.handler.name, resource, sortBy) })),
        };
      }),
    );
    const merged = merge(lists.map((l) => l.entries), compareEntries(params.descending));
    // Past the last entry of a list that was cut, the merge no longer knows what comes next.
    let known = window;
    for (const list of lists) if (list.cut) known = Math.min(known, merged.indexOf(list.entries.at(-1) as Entry) + 1);
    if (known <= params.startIndex - 1 && params.count > 0) {
      throw badRequest('tooMany', 'This search from the root, sorted by an attribute of both Users and Groups, reaches past what one answer may read; search /Users or /Groups instead.');
    }
    const page = merged.slice(params.startIndex - 1, known);
    const resources = await withMembers(ctx, page, params.withMembers);
    let total = lists.reduce((n, l) => n + l.total, 0);
    // Types without the attribute follow, as the concatenation below does, once every sorted one has been read to its end.
    const complete = known === window || !lists.some((l) => l.cut);
    const rest = await concatenated(ctx, parts.filter((p) => !p.sorts), paramsFor, Math.max(0, params.startIndex - 1 - total), complete ? params.count - page.length : 0, params.withMembers);
    total += rest.total;
    return { total, resources: [...resources, ...rest.resources] };
  }
  return concatenated(ctx, parts, paramsFor, params.startIndex - 1, params.count, params.withMembers);
}

type PartParams<P> = (part: P, startIndex: number, count: number, withMembers: boolean) => ListParams;

/** The page at `offset` of the parts' lists one after another. */
async function concatenated<P extends { handler: ResourceHandler }>(
  ctx: RequestContext,
  parts: readonly P[],
  paramsFor: PartParams<P>,
  offset: number,
  count: number,
  withMembers: boolean,
): Promise<RootSearchResult> {
  let total = 0;
  const resources: RootSearchResult['resources'] = [];
  // A list cut short by what one answer may carry ends the page: the next page starts there.
  let cut = false;
  for (const part of parts) {
    const skip = Math.max(0, offset - total);
    const wanted = cut ? 0 : Math.max(0, count - resources.length);
    const list = await part.handler.list(ctx, paramsFor(part, skip + 1, wanted, withMembers));
    total += list.total;
    resources.push(...list.resources.map((resource) => ({ handler: part.handler, resource })));
    if (list.resources.length < Math.min(wanted, Math.max(0, list.total - skip))) cut = true;
  }
  return { total, resources };
}

/** The merged page's groups read again with their members, when the search wants them. */
async function withMembers(ctx: RequestContext, page: Entry[], wanted: boolean): Promise<RootSearchResult['resources']> {
  if (!wanted) return page;
  const byHandler = new Map<ResourceHandler, string[]>();
  for (const { handler, resource } of page) {
    if (handler.name === 'Group') byHandler.set(handler, [...(byHandler.get(handler) ?? []), String(resource.id)]);
  }
  const fresh = new Map<string, Json>();
  for (const [handler, ids] of byHandler) {
    // Classes with many members come fewer to a list (LIST_MEMBERS): the rest are read in further lists.
    for (let left = ids; left.length > 0; ) {
      const filter: FilterNode = { kind: 'or', nodes: left.map((id) => ({ kind: 'compare', path: { name: 'id' }, op: 'eq', value: id })) };
      const { resources } = await handler.list(ctx, { filter, sortBy: undefined, descending: false, startIndex: 1, count: left.length, withMembers: true });
      if (resources.length === 0) break;
      for (const resource of resources) fresh.set(String(resource.id), resource);
      left = left.filter((id) => !fresh.has(id));
    }
  }
  return page.map(({ handler, resource }) => ({ handler, resource: fresh.get(String(resource.id)) ?? resource }));
}
