// The schema attribute index: attribute, sub-attribute and extension names
// looked up case-insensitively (RFC 7643 §2.1) in per-definition indexes built
// once, and PATCH paths resolved against them into canonical form.
import { LRUCache } from 'lru-cache';
import SCIMMY from 'scimmy';
import { ScimError, badRequest } from '../errors.js';
import { parsePatchPath, type AttrPath, type FilterNode } from './filter.js';
import { definitionOf, type ResourceName } from './schemas.js';

type Attribute = SCIMMY.Types.Attribute;
type SchemaDefinition = SCIMMY.Types.SchemaDefinition;

/** Canonical attribute lookup: case-insensitive, within one schema definition. */
// scimmy types a definition's attributes as Attribute[]; extensions sit there too.
function members(definition: SchemaDefinition): (Attribute | SchemaDefinition)[] {
  return definition.attributes;
}

// The lookups below run for every key of every request: each definition's
// names are indexed once, lower-cased (the schemas are fixed at load).
function indexed<K extends object, V>(cache: WeakMap<K, Map<string, V>>, owner: K, entries: () => [string, V][]): Map<string, V> {
  let index = cache.get(owner);
  if (index === undefined) {
    index = new Map(entries());
    cache.set(owner, index);
  }
  return index;
}

const attributeIndex = new WeakMap<SchemaDefinition, Map<string, Attribute>>();
const subAttributeIndex = new WeakMap<Attribute, Map<string, Attribute>>();
const extensionIndex = new WeakMap<SchemaDefinition, Map<string, SchemaDefinition>>();

export function findAttribute(definition: SchemaDefinition, name: string): Attribute | undefined {
  return indexed(attributeIndex, definition, () =>
    members(definition)
      .filter((a): a is Attribute => a instanceof SCIMMY.Types.Attribute)
      .map((a) => [a.name.toLowerCase(), a]),
  ).get(name.toLowerCase());
}

export function findSub(attribute: Attribute, name: string): Attribute | undefined {
  return indexed(subAttributeIndex, attribute, () => (attribute.subAttributes ?? []).map((a) => [a.name.toLowerCase(), a])).get(name.toLowerCase());
}

export function findExtension(definition: SchemaDefinition, uri: string): SchemaDefinition | undefined {
  return indexed(extensionIndex, definition, () => definitionOfExtensions(definition).map((e) => [e.id.toLowerCase(), e])).get(uri.toLowerCase());
}

export function definitionOfExtensions(definition: SchemaDefinition): SchemaDefinition[] {
  return members(definition).filter((a): a is SchemaDefinition => a instanceof SCIMMY.Types.SchemaDefinition);
}

/** A resolved PATCH path: canonical names and the scimmy attribute it targets. */
export interface ResolvedPath {
  /** The canonical path text for scimmy, e.g. emails[type eq "work"].value. */
  text: string;
  /** Top-level attribute name (canonical), or the extension URN + ':' + name. */
  attribute: string;
  definition: Attribute;
  filter?: FilterNode;
  sub?: Attribute;
  extension?: SchemaDefinition;
}

function invalidPath(text: string, why: string): ScimError {
  return badRequest('invalidPath', `The path "${text}" ${why}.`);
}

/** Resolves an attribute reference case-insensitively against the resource's schemas. */
export function resolveAttribute(
  resource: ResourceName,
  path: AttrPath,
): { attribute: Attribute; extension?: SchemaDefinition; name: string } | undefined {
  const definition = definitionOf(resource);
  let scope = definition;
  let extension: SchemaDefinition | undefined;
  if (path.uri !== undefined && path.uri.toLowerCase() !== definition.id.toLowerCase()) {
    extension = findExtension(definition, path.uri);
    if (!extension) return undefined;
    scope = extension;
  }
  let attribute = findAttribute(scope, path.name);
  if (!attribute && path.uri === undefined) {
    // A bare extension attribute name (Entra sends "manager"): accept it when
    // exactly one extension declares it.
    const owners = definitionOfExtensions(definition).filter((e) => findAttribute(e, path.name));
    if (owners.length === 1 && owners[0]) {
      extension = owners[0];
      attribute = findAttribute(extension, path.name);
    }
  }
  if (!attribute) return undefined;
  return { attribute, name: extension ? `${extension.id}:${attribute.name}` : attribute.name, ...(extension ? { extension } : {}) };
}

export function renderValue(value: unknown): string {
  return JSON.stringify(value);
}

/** Renders a valuePath filter with canonical attribute names for scimmy. */
function renderFilter(attribute: Attribute, node: FilterNode): string {
  switch (node.kind) {
    case 'compare': {
      const sub = findSub(attribute, node.path.name);
      return `${sub?.name ?? node.path.name} ${node.op} ${renderValue(node.value)}`;
    }
    case 'present': {
      const sub = findSub(attribute, node.path.name);
      return `${sub?.name ?? node.path.name} pr`;
    }
    case 'and':
      return node.nodes.map((n) => renderFilter(attribute, n)).join(' and ');
    case 'or':
      return node.nodes.map((n) => `(${renderFilter(attribute, n)})`).join(' or ');
    case 'not':
      return `not (${renderFilter(attribute, node.node)})`;
    case 'valuePath':
      throw badRequest('invalidPath', 'Nested filters are not supported in a path.');
  }
}

/**
 * Resolved paths by resource and path text. Entra sends the same few paths in
 * every PATCH, and the schemas do not change while the server runs, so each
 * text is parsed and resolved once. A path that fails is not kept: its error
 * is made again each time. Bounded, since the texts come from clients.
 */
const resolvedPaths = new LRUCache<string, Readonly<ResolvedPath>>({ max: 1000 });

export function resolvePatchPath(resource: ResourceName, text: string): Readonly<ResolvedPath> {
  const key = `${resource} ${text}`;
  let resolved = resolvedPaths.get(key);
  if (!resolved) {
    resolved = Object.freeze(resolveNewPatchPath(resource, text));
    resolvedPaths.set(key, resolved);
  }
  return resolved;
}

function resolveNewPatchPath(resource: ResourceName, text: string): ResolvedPath {
  let parsed: ReturnType<typeof parsePatchPath>;
  try {
    parsed = parsePatchPath(text);
  } catch (error) {
    if (error instanceof ScimError) throw badRequest('invalidPath', error.detail);
    throw error;
  }
  const found = resolveAttribute(resource, parsed.path);
  if (!found) throw invalidPath(text, 'does not name an attribute of this resource');
  const subName = parsed.path.sub ?? parsed.sub;
  let sub: Attribute | undefined;
  if (subName !== undefined) {
    sub = findSub(found.attribute, subName);
    // The path names the sub-attribute already: a second quoted value would fold into the first in the log (plugins/errors.ts).
    if (!sub) throw invalidPath(text, `names no sub-attribute of ${found.attribute.name}`);
  }
  if (parsed.filter && !found.attribute.config.multiValued) {
    throw invalidPath(text, 'filters an attribute that is not multi-valued');
  }
  const filterText = parsed.filter ? `[${renderFilter(found.attribute, parsed.filter)}]` : '';
  return {
    text: `${found.name}${filterText}${sub ? `.${sub.name}` : ''}`,
    attribute: found.name,
    definition: found.attribute,
    ...(parsed.filter ? { filter: parsed.filter } : {}),
    ...(sub ? { sub } : {}),
    ...(found.extension ? { extension: found.extension } : {}),
  };
}

