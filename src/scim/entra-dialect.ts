// The Entra dialect: rewrites the shapes Microsoft Entra ID and the SCIM
// Validator really send (both PATCH dialects, string booleans, any case of
// attribute names, manager as a bare id, app roles as JSON text, filtered
// paths on missing values, whole extensions as a path) into the strict
// RFC 7644 forms scimmy accepts. Every rewrite here answers
// one bullet of the dialect (docs/entra-setup.md and entra-dialect.md).
import type SCIMMY from 'scimmy';
import { badRequest, type ScimError } from '../errors.js';
import { parsePatchPath, type FilterNode } from './filter.js';
import { sortedKeys } from './resource.js';
import { MAX_PATCH_OPERATIONS } from './limits.js';
import { findAttribute, findExtension, findSub, renderValue, resolvePatchPath, type ResolvedPath } from './schema-index.js';
import { appRoleInValue, decodeAppRole } from './rules/roles.js';
import { ENTERPRISE_SCHEMA, PATCH_OP_SCHEMA, definitionOf, type ResourceName } from './schemas.js';

type Json = Record<string, unknown>;
type Attribute = SCIMMY.Types.Attribute;
type SchemaDefinition = SCIMMY.Types.SchemaDefinition;

export const MANAGER_PATH = `${ENTERPRISE_SCHEMA}:manager`;
/** Attributes no client may change. */
const READ_ONLY = new Set(['id', 'meta', 'groups']);

export const isObject = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);

function toBoolean(value: unknown): unknown {
  if (typeof value === 'string' && /^(true|false)$/i.test(value.trim())) return value.trim().toLowerCase() === 'true';
  return value;
}

/** Coerces string booleans, recursively, where the schema says boolean; canonicalises sub-attribute keys. */
export function normaliseValue(attribute: Attribute | undefined, value: unknown): unknown {
  if (attribute === undefined || value === null || value === undefined) return value;
  if (Array.isArray(value)) return value.map((v) => normaliseValue(attribute, v));
  if (attribute.type === 'boolean') return toBoolean(value);
  if (attribute.type === 'complex' && isObject(value)) {
    const out: Json = {};
    for (const [key, v] of Object.entries(value)) {
      if (v === null) continue;
      const sub = findSub(attribute, key);
      out[sub?.name ?? key] = sub ? normaliseValue(sub, v) : v;
    }
    return isAppRoles(attribute) ? decodeAppRole(out) : out;
  }
  return value;
}

/** The User's roles, where Entra sends app role assignments. */
function isAppRoles(attribute: Attribute): boolean {
  return attribute.name === 'roles' && attribute.type === 'complex' && attribute.config.multiValued === true;
}

/** Entra's manager shapes ("id", {value}, [{$ref:null,value}], "") -> {value} or undefined (removal). */
export function normaliseManager(value: unknown): Json | undefined {
  let v = value;
  if (Array.isArray(v)) v = v[0];
  if (typeof v === 'string') return v.trim() === '' ? undefined : { value: v };
  if (isObject(v)) {
    const entry = Object.entries(v).find(([k]) => k.toLowerCase() === 'value');
    const id = entry?.[1];
    return typeof id === 'string' && id.trim() !== '' ? { value: id } : undefined;
  }
  return undefined;
}

/**
 * The user as clients see it: manager with its $ref (the user it names, at
 * PUBLIC_URL, as group members get theirs). Only {value} is stored, so the
 * reference follows PUBLIC_URL. `resource` is not modified.
 */
export function withManagerRef(resource: Json, baseUrl: string): Json {
  const enterprise = resource[ENTERPRISE_SCHEMA];
  if (!isObject(enterprise) || !isObject(enterprise.manager) || typeof enterprise.manager.value !== 'string') return resource;
  const manager = { ...enterprise.manager, $ref: `${baseUrl}/Users/${encodeURIComponent(enterprise.manager.value)}` };
  return { ...resource, [ENTERPRISE_SCHEMA]: { ...enterprise, manager } };
}

const wholeExtension = (index: number): ScimError => badRequest('invalidValue', `Operation ${index + 1}: the value of a whole extension must be an object of its attributes.`);

/** An add or a replace without a value (RFC 7644 §3.5.2.1, §3.5.2.3): of an attribute, or of a class's members. */
export const needsValue = (index: number, op: string): ScimError => badRequest('invalidValue', `Operation ${index + 1}: ${op} needs a value.`);

/** Normalises a POST/PUT body: known schemas only, canonical keys, booleans, manager. */
export function normaliseResource(resource: ResourceName, body: unknown): Json {
  if (!isObject(body)) throw badRequest('invalidSyntax', 'The request body must be a JSON object.');
  const definition = definitionOf(resource);
  const known = (id: string): boolean => id.toLowerCase() === definition.id.toLowerCase() || findExtension(definition, id) !== undefined;
  const out: Json = {};
  for (const [key, value] of Object.entries(body)) {
    if (value === null || value === undefined) continue;
    const lower = key.toLowerCase();
    if (lower === 'schemas') {
      // Entra adds a Microsoft schema to groups; keep only the ones we serve.
      const list = Array.isArray(value) ? value.filter((s): s is string => typeof s === 'string') : [];
      out.schemas = list.filter(known).map((s) => canonicalSchemaId(definition, s));
      continue;
    }
    if (lower.startsWith('urn:')) {
      const extension = findExtension(definition, key);
      if (extension) {
        if (!isObject(value)) throw badRequest('invalidValue', `The value of ${extension.id} must be an object of its attributes.`);
        out[extension.id] = normaliseExtension(extension, value);
        continue;
      }
      // A flat key such as urn:...:enterprise:2.0:User:employeeNumber.
      const parsed = safePath(key);
      const ext = parsed?.path.uri ? findExtension(definition, parsed.path.uri) : undefined;
      if (ext && parsed) {
        const target = (out[ext.id] as Json | undefined) ?? {};
        Object.assign(target, normaliseExtension(ext, { [parsed.path.name]: value }));
        out[ext.id] = target;
        continue;
      }
      if (parsed?.path.uri && parsed.path.uri.toLowerCase() === definition.id.toLowerCase()) {
        const attribute = findAttribute(definition, parsed.path.name);
        if (attribute) out[attribute.name] = normaliseValue(attribute, value);
      }
      continue;
    }
    const attribute = findAttribute(definition, key);
    out[attribute?.name ?? key] = normaliseValue(attribute, value);
  }
  return out;
}

function canonicalSchemaId(definition: SchemaDefinition, id: string): string {
  if (id.toLowerCase() === definition.id.toLowerCase()) return definition.id;
  return findExtension(definition, id)?.id ?? id;
}

function normaliseExtension(extension: SchemaDefinition, value: Json): Json {
  const out: Json = {};
  for (const [key, v] of Object.entries(value)) {
    if (v === null || v === undefined) continue;
    const attribute = findAttribute(extension, key);
    const name = attribute?.name ?? key;
    if (extension.id === ENTERPRISE_SCHEMA && name === 'manager') {
      const manager = normaliseManager(v);
      if (manager) out.manager = manager;
      continue;
    }
    out[name] = normaliseValue(attribute, v);
  }
  return out;
}

function safePath(text: string): ReturnType<typeof parsePatchPath> | undefined {
  try {
    return parsePatchPath(text);
  } catch {
    return undefined;
  }
}

// ---------------------------------------------------------------------------
// PATCH

export interface PatchOperation {
  op: 'add' | 'replace' | 'remove';
  path?: string;
  value?: unknown;
  /** The attribute the path names, when it has no filter (for the direct path in simple-patch.ts). */
  target?: Readonly<ResolvedPath>;
}

/** The operation as scimmy's PatchOp message takes it. */
export function scimmyOperation({ op, path, value }: PatchOperation): Omit<PatchOperation, 'target'> {
  return { op, ...(path !== undefined ? { path } : {}), ...(value !== undefined ? { value } : {}) };
}

/** Evaluates a valuePath filter against one element of a multi-valued attribute. */
export function matchesElement(attribute: Attribute, node: FilterNode, element: unknown): boolean {
  if (!isObject(element)) return false;
  const read = (name: string): unknown => {
    const entry = Object.entries(element).find(([k]) => k.toLowerCase() === name.toLowerCase());
    return entry?.[1];
  };
  switch (node.kind) {
    case 'present': {
      const v = read(node.path.name);
      return v !== undefined && v !== null && v !== '';
    }
    case 'compare': {
      const sub = findSub(attribute, node.path.name);
      let actual = read(node.path.name);
      let expected: unknown = node.value;
      if (sub?.type === 'boolean') {
        actual = toBoolean(actual);
        expected = toBoolean(expected);
      }
      if (typeof actual === 'string' && typeof expected === 'string' && !sub?.config.caseExact) {
        actual = actual.toLowerCase();
        expected = expected.toLowerCase();
      }
      switch (node.op) {
        case 'eq':
          return actual === expected;
        case 'ne':
          return actual !== expected;
        case 'co':
          return typeof actual === 'string' && typeof expected === 'string' && actual.includes(expected);
        case 'sw':
          return typeof actual === 'string' && typeof expected === 'string' && actual.startsWith(expected);
        case 'ew':
          return typeof actual === 'string' && typeof expected === 'string' && actual.endsWith(expected);
        case 'gt':
        case 'ge':
        case 'lt':
        case 'le': {
          if (actual === undefined || actual === null || expected === null) return false;
          const a = actual as string | number;
          const b = expected as string | number;
          return node.op === 'gt' ? a > b : node.op === 'ge' ? a >= b : node.op === 'lt' ? a < b : a <= b;
        }
      }
      return false;
    }
    case 'and':
      return node.nodes.every((n) => matchesElement(attribute, n, element));
    case 'or':
      return node.nodes.some((n) => matchesElement(attribute, n, element));
    case 'not':
      return !matchesElement(attribute, node.node, element);
    case 'valuePath':
      return false;
  }
}

/** The element an equality-only filter describes: type eq "work" -> {type: "work"}. */
function elementFromFilter(attribute: Attribute, node: FilterNode): Json | undefined {
  if (node.kind === 'compare' && node.op === 'eq') {
    const sub = findSub(attribute, node.path.name);
    if (!sub) return undefined;
    return { [sub.name]: sub.type === 'boolean' ? toBoolean(node.value) : node.value };
  }
  if (node.kind === 'and') {
    const parts = node.nodes.map((n) => elementFromFilter(attribute, n));
    if (parts.some((p) => p === undefined)) return undefined;
    return Object.assign({}, ...parts) as Json;
  }
  return undefined;
}

/** The attribute names a filter compares or tests, lower case. */
function filterNames(node: FilterNode): Set<string> {
  switch (node.kind) {
    case 'compare':
    case 'present':
      return new Set([node.path.name.toLowerCase()]);
    case 'and':
    case 'or':
      return new Set(node.nodes.flatMap((n) => [...filterNames(n)]));
    case 'not':
      return filterNames(node.node);
    case 'valuePath':
      return new Set([node.path.name.toLowerCase()]);
  }
}

export interface RawOperation {
  op: string;
  path?: unknown;
  value?: unknown;
}

/** Reads a PatchOp message: its schema, and each operation's op, path and value in any key case. */
export function readPatchOperations(body: unknown): RawOperation[] {
  if (!isObject(body)) throw badRequest('invalidSyntax', 'The PATCH body must be a JSON object.');
  const schemas = body.schemas;
  if (!Array.isArray(schemas) || !schemas.some((s) => typeof s === 'string' && s.toLowerCase() === PATCH_OP_SCHEMA.toLowerCase())) {
    throw badRequest('invalidSyntax', `A PATCH body must list the schema ${PATCH_OP_SCHEMA}.`);
  }
  const key = Object.keys(body).find((k) => k.toLowerCase() === 'operations');
  const operations = key === undefined ? [] : body[key];
  if (!Array.isArray(operations)) throw badRequest('invalidSyntax', 'Operations must be an array.');
  if (operations.length > MAX_PATCH_OPERATIONS) {
    throw badRequest(
      'invalidValue',
      `A PATCH request may carry at most ${MAX_PATCH_OPERATIONS} operations; this one has ${operations.length}. Send them in several requests.`,
    );
  }
  return operations.map((raw, i) => {
    if (!isObject(raw)) throw badRequest('invalidSyntax', `Operation ${i + 1} must be an object.`);
    const get = (name: string): unknown => Object.entries(raw).find(([k]) => k.toLowerCase() === name)?.[1];
    const op = get('op');
    if (typeof op !== 'string') throw badRequest('invalidSyntax', `Operation ${i + 1} has no "op".`);
    return { op, path: get('path'), value: get('value') };
  });
}

type Op = PatchOperation['op'];

/**
 * One change of a PatchOp message, on one attribute: a path-less value and a
 * whole extension's value are split by key. Read and checked (op, path,
 * mutability, value shapes) before any document is looked at; expandStep
 * turns it into canonical operations against the document as the message's
 * earlier steps left it.
 */
export type PatchStep = AttributeStep | ExtensionRemoval;

interface AttributeStep {
  kind: 'attribute';
  op: Op;
  /** The path as the client wrote it, for messages. */
  text: string;
  resolved: Readonly<ResolvedPath>;
  /** The value, normalised (string booleans, key case, manager, app roles); undefined for a remove without one. */
  value: unknown;
  /** The top-level key of the document it changes: an attribute name or an extension URN. */
  key: string;
  /** Whether its expansion depends on the document (a filter, or a value that means "remove if present"). */
  reads: boolean;
}

/** remove of a whole extension: every attribute of it the document has. */
interface ExtensionRemoval {
  kind: 'extension';
  op: 'remove';
  extension: SchemaDefinition;
  key: string;
  reads: true;
}

/**
 * Reads a PatchOp message of either Entra dialect into steps, one attribute
 * each. `id` is the resource's id: Entra's path-less group replace repeats
 * it, and the same value is no change.
 */
export function patchSteps(resource: ResourceName, body: unknown, id: unknown): PatchStep[] {
  const definition = definitionOf(resource);
  const steps: PatchStep[] = [];
  readPatchOperations(body).forEach((raw, index) => {
    const op = raw.op.toLowerCase();
    if (op !== 'add' && op !== 'replace' && op !== 'remove') {
      throw badRequest('invalidSyntax', `Operation ${index + 1} has an unknown op "${raw.op}"; use add, replace or remove.`);
    }
    const add = (text: string, value: unknown): void => {
      const step = attributeStep(resource, op, text, value, id);
      if (step) steps.push(step);
    };
    /** An object of attributes: a path-less value, or a whole extension's value. */
    const addEach = (value: Json): void => {
      for (const [key, v] of Object.entries(value)) {
        if (key.toLowerCase() === 'schemas') continue;
        const ext = findExtension(definition, key);
        if (ext) {
          if (!isObject(v)) throw wholeExtension(index);
          for (const [name, inner] of Object.entries(v)) add(`${ext.id}:${name}`, inner);
          continue;
        }
        add(key, v);
      }
    };
    if (raw.path === undefined || raw.path === null || raw.path === '') {
      if (op === 'remove') throw badRequest('noTarget', `Operation ${index + 1}: remove needs a path.`);
      if (!isObject(raw.value)) {
        throw badRequest('invalidValue', `Operation ${index + 1}: without a path the value must be an object of attributes.`);
      }
      addEach(raw.value);
      return;
    }
    if (typeof raw.path !== 'string') throw badRequest('invalidPath', `Operation ${index + 1}: path must be a string.`);
    if (op !== 'remove' && raw.value === undefined) {
      throw needsValue(index, op);
    }
    // A path that is only an extension URN names the whole extension: its
    // value is an object of the extension's attributes, merged in as a
    // path-less value is (RFC 7644 §3.5.2.1, §3.5.2.3).
    const extension = findExtension(definition, raw.path.trim());
    if (extension) {
      if (op === 'remove') {
        steps.push({ kind: 'extension', op, extension, key: extension.id, reads: true });
        return;
      }
      if (!isObject(raw.value)) {
        throw wholeExtension(index);
      }
      addEach({ [extension.id]: raw.value });
      return;
    }
    add(raw.path, raw.value);
  });
  return steps;
}

function attributeStep(resource: ResourceName, op: Op, text: string, value: unknown, id: unknown): AttributeStep | undefined {
  const resolved = resolvePatchPath(resource, text);
  const top = resolved.definition.name;
  if (!resolved.extension && READ_ONLY.has(top)) {
    if (top === 'id' && op !== 'remove' && value === id) return undefined;
    throw badRequest('mutability', `The attribute "${top}" is read-only.`);
  }
  if (resolved.definition.config.mutable === false || resolved.definition.config.mutable === 'immutable') {
    throw badRequest('mutability', `The attribute "${top}" cannot be changed.`);
  }
  const key = resolved.extension ? resolved.extension.id : top;
  if (resolved.attribute === MANAGER_PATH) {
    // Any Entra shape; "" or an empty value removes it.
    const manager = op === 'remove' ? undefined : normaliseManager(value);
    return { kind: 'attribute', op: manager ? 'replace' : 'remove', text, resolved, value: manager, key, reads: false };
  }
  const target = resolved.sub ?? resolved.definition;
  let normalised = normaliseValue(target, op === 'remove' && isAppRoles(target) ? appRolesToRemove(value) : value);
  if (resolved.sub?.name === 'value' && isAppRoles(resolved.definition)) normalised = appRoleInValue(normalised)?.value ?? normalised;
  // null or "" for a simple attribute means "no value": remove it if present.
  const empty = op !== 'remove' && (normalised === null || (normalised === '' && target.type !== 'complex'));
  return { kind: 'attribute', op, text, resolved, value: normalised, key, reads: empty || resolved.filter !== undefined };
}

/** An app role Entra removes is named by its value alone: the stored element may differ in the rest. */
function appRolesToRemove(value: unknown): unknown {
  const one = (element: unknown): unknown => {
    if (!isObject(element)) return element;
    const role = appRoleInValue(Object.entries(element).find(([k]) => k.toLowerCase() === 'value')?.[1]);
    return role ? { value: role.value } : element;
  };
  return Array.isArray(value) ? value.map(one) : one(value);
}

function readAttribute(current: Json, resolved: ResolvedPath): unknown {
  if (resolved.extension) {
    const ext = current[resolved.extension.id];
    return isObject(ext) ? ext[resolved.definition.name] : undefined;
  }
  return current[resolved.definition.name];
}

/**
 * The canonical operations of one step, against `document` (the resource as
 * the message's earlier steps left it): complex values merged per
 * sub-attribute (RFC 7644 §3.5.2.3), a filtered path on a value that does not
 * exist yet made an add of that element, an empty value made a removal.
 */
export function expandStep(resource: ResourceName, step: PatchStep, document: Json): PatchOperation[] {
  if (step.kind === 'extension') {
    const present = document[step.extension.id];
    if (!isObject(present)) return [];
    return Object.keys(present).map((name) => {
      const text = `${step.extension.id}:${name}`;
      return { op: 'remove' as const, path: text, target: resolvePatchPath(resource, text) };
    });
  }
  const { op, resolved, value } = step;
  if (resolved.attribute === MANAGER_PATH) {
    return op === 'remove' ? [{ op: 'remove', path: MANAGER_PATH }] : [{ op: 'replace', path: MANAGER_PATH, value }];
  }
  const target = resolved.sub ?? resolved.definition;
  const direct = resolved.filter ? {} : { target: resolved };
  if (op === 'remove') {
    if (resolved.filter && value === undefined) return removeMatching(resolved, resolved.filter, document);
    return [{ op, path: resolved.text, ...(value !== undefined ? { value } : {}), ...direct }];
  }

  if (value === null || (value === '' && target.type !== 'complex')) {
    if (resolved.filter) return removeMatching(resolved, resolved.filter, document);
    return readAttribute(document, resolved) === undefined ? [] : [{ op: 'remove', path: resolved.text, ...direct }];
  }

  if (resolved.filter) {
    const existing = readAttribute(document, resolved);
    const elements: unknown[] = Array.isArray(existing) ? existing : [];
    const matching = elements.filter((e) => matchesElement(resolved.definition, resolved.filter as FilterNode, e));
    const prefix = resolved.extension ? `${resolved.extension.id}:` : '';
    if (matching.length === 0) {
      // Entra adds emails[type eq "work"].value to a user with no work e-mail:
      // create the element the filter describes.
      const element = elementFromFilter(resolved.definition, resolved.filter);
      if (!element) throw badRequest('noTarget', `No value matches the path "${step.text}".`);
      const added = resolved.sub ? { ...element, [resolved.sub.name]: value } : { ...element, ...(isObject(value) ? value : {}) };
      return [{ op: 'add', path: `${prefix}${resolved.definition.name}`, value: [added] }];
    }
    // scimmy refuses to change the sub-attribute its own filter compares
    // (emails[value eq "x"].value): it looks the element up again after the
    // change and finds none. The whole attribute with that element changed,
    // in its place, is the same change.
    const sub = resolved.sub;
    const only = matching.length === 1 ? matching[0] : undefined;
    if (sub && isObject(only) && filterNames(resolved.filter).has(sub.name.toLowerCase())) {
      return [{ op: 'replace', path: `${prefix}${resolved.definition.name}`, value: elements.map((e) => (e === only ? { ...only, [sub.name]: value } : e)) }];
    }
    // scimmy compares filter values case-sensitively: name the stored values.
    const element = elementFromFilter(resolved.definition, resolved.filter);
    if (element && isObject(only)) {
      const exact = Object.keys(element)
        .map((k) => `${k} eq ${renderValue(Object.entries(only).find(([sk]) => sk.toLowerCase() === k.toLowerCase())?.[1] ?? element[k])}`)
        .join(' and ');
      return [{ op, path: `${prefix}${resolved.definition.name}[${exact}]${resolved.sub ? `.${resolved.sub.name}` : ''}`, value }];
    }
    return [{ op, path: resolved.text, value }];
  }

  // Replace of a singular complex attribute merges its sub-attributes.
  if (op === 'replace' && !resolved.sub && target.type === 'complex' && !target.config.multiValued && isObject(value)) {
    return Object.entries(value).map(([k, v]) => {
      const sub = findSub(target, k);
      const text = `${resolved.text}.${k}`;
      return { op: 'replace' as const, path: text, value: v, ...(sub ? { target: { ...resolved, text, sub } } : {}) };
    });
  }
  return [{ op, path: resolved.text, value, ...direct }];
}

/**
 * A remove through a value filter (emails[type eq "work"], or its .value):
 * the elements it matches, compared as the schema says (a type or an
 * address in any case), which scimmy's own remove compares exactly. Written
 * as the attribute without them; an element that loses its value goes
 * whole, as nothing is left of it to show. Nothing matched, nothing changes.
 */
function removeMatching(resolved: ResolvedPath, filter: FilterNode, document: Json): PatchOperation[] {
  const existing = readAttribute(document, resolved);
  const elements: unknown[] = Array.isArray(existing) ? existing : [];
  const matching = new Set(elements.filter((e) => matchesElement(resolved.definition, filter, e)));
  if (matching.size === 0) return [];
  const sub = resolved.sub?.name.toLowerCase();
  const kept = elements.flatMap((element) => {
    if (!matching.has(element)) return [element];
    if (sub === undefined || sub === 'value' || !isObject(element)) return [];
    const rest = Object.entries(element).filter(([k]) => k.toLowerCase() !== sub);
    return rest.length === 0 ? [] : [Object.fromEntries(rest)];
  });
  const path = `${resolved.extension ? `${resolved.extension.id}:` : ''}${resolved.definition.name}`;
  return kept.length === 0 ? [{ op: 'remove', path }] : [{ op: 'replace', path, value: kept }];
}

/**
 * At most one element of a multi-valued attribute is primary (RFC 7643
 * §2.4): one that a PATCH made primary takes it from the others (RFC 7644
 * §3.5.2); of several sent primary at once, the first keeps it. `before` is
 * the document a PATCH started from; a POST or PUT has none.
 */
export function keepOnePrimary(resource: Json, before?: Json): Json {
  const isPrimary = (element: unknown): element is Json => isObject(element) && element.primary === true;
  for (const [key, value] of Object.entries(resource)) {
    const previous = before?.[key];
    if (!Array.isArray(value)) {
      // A copy: the extension object may be the stored document's own.
      if (key.startsWith('urn:') && isObject(value)) resource[key] = keepOnePrimary({ ...value }, isObject(previous) ? previous : undefined);
      continue;
    }
    const primaries = value.filter(isPrimary);
    if (primaries.length < 2) continue;
    // An element was primary before when a primary one had its type and value,
    // or its type at its place while that one is gone (the PATCH changed its
    // value in place; not a removal before it, which moves the places).
    const was = (Array.isArray(previous) ? (previous as unknown[]) : []).map((e) => (isPrimary(e) ? e : undefined));
    const same = (a: Json, b: Json): boolean => a.type === b.type && a.value === b.value;
    const gone = (p: Json): boolean => !(value as unknown[]).some((e) => isObject(e) && same(e, p));
    const wasPrimary = (element: Json, index: number): boolean =>
      was.some((p, i) => p !== undefined && p.type === element.type && (p.value === element.value || (i === index && gone(p))));
    const kept = primaries.find((e) => !wasPrimary(e, value.indexOf(e))) ?? primaries[0];
    resource[key] = (value as unknown[]).map((e) => (isPrimary(e) && e !== kept ? { ...e, primary: false } : e));
  }
  return resource;
}

/**
 * What makes an element of a multi-valued attribute the same as another: an
 * app role is its value and type (Entra adds a role the user has with its
 * display and without the primary flag it sent on POST); anything else is
 * the whole element, whatever the order of its keys.
 */
function sameness(key: string, element: unknown): string {
  if (key === 'roles' && isObject(element) && typeof element.value === 'string') return JSON.stringify([element.value, element.type ?? null]);
  return JSON.stringify(sortedKeys(element));
}

/**
 * Removes the duplicates that an add to a multi-valued attribute can leave:
 * the stored value and the one added come with their keys in different
 * orders, and an app role added again comes in another shape. The first,
 * stored, one stays.
 */
export function dedupeMultiValued(resource: Json): Json {
  for (const [key, value] of Object.entries(resource)) {
    if (Array.isArray(value)) {
      const seen = new Set<string>();
      resource[key] = value.filter((v) => {
        const k = sameness(key, v);
        if (seen.has(k)) return false;
        seen.add(k);
        return true;
      });
    } else if (isObject(value) && key.startsWith('urn:')) {
      dedupeMultiValued(value);
    }
  }
  return resource;
}
