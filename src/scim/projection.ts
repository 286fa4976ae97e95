// attributes= and excludedAttributes= (RFC 7644 §3.4.2.5) on outgoing
// resources. schemas and id are always returned.
import { parsePatchPath } from './filter.js';
import { findExtension, resolveAttribute } from './schema-index.js';
import type { Json } from './resource.js';
import { definitionOf, type ResourceName } from './schemas.js';

interface Selected {
  /** Top-level key in the resource: an attribute name or an extension URN. */
  key: string;
  /** Attribute inside an extension. */
  inner?: string;
  sub?: string;
}

const ALWAYS = new Set(['schemas', 'id']);

function select(resource: ResourceName, list: string | undefined): Selected[] | undefined {
  if (list === undefined || list.trim() === '') return undefined;
  const out: Selected[] = [];
  for (const item of list.split(',').map((s) => s.trim()).filter(Boolean)) {
    // A whole extension by its URN.
    const extension = findExtension(definitionOf(resource), item);
    if (extension) {
      out.push({ key: extension.id });
      continue;
    }
    let parsed;
    try {
      parsed = parsePatchPath(item);
    } catch {
      continue;
    }
    const lower = parsed.path.name.toLowerCase();
    if (!parsed.path.uri && (lower === 'meta' || lower === 'id' || lower === 'externalid' || lower === 'schemas')) {
      out.push({ key: lower === 'externalid' ? 'externalId' : lower, ...(parsed.path.sub ? { sub: parsed.path.sub } : {}) });
      continue;
    }
    const found = resolveAttribute(resource, parsed.path);
    if (!found) continue; // unknown names are ignored, as scimmy and most servers do
    const sub = parsed.path.sub ?? parsed.sub;
    if (found.extension) out.push({ key: found.extension.id, inner: found.attribute.name, ...(sub ? { sub } : {}) });
    else out.push({ key: found.attribute.name, ...(sub ? { sub } : {}) });
  }
  return out;
}

function pick(value: unknown, sub: string | undefined): unknown {
  if (sub === undefined) return value;
  const one = (v: unknown): unknown => {
    if (typeof v !== 'object' || v === null) return undefined;
    const entry = Object.entries(v as Record<string, unknown>).find(([k]) => k.toLowerCase() === sub.toLowerCase());
    return entry ? { [entry[0]]: entry[1] } : undefined;
  };
  if (Array.isArray(value)) return value.map(one).filter((v) => v !== undefined);
  return one(value);
}

/** The value without the sub-attribute (of the object, or of each element); undefined when nothing is left. */
function drop(value: unknown, sub: string): unknown {
  const one = (v: unknown): unknown => {
    if (typeof v !== 'object' || v === null || Array.isArray(v)) return v;
    const kept = Object.entries(v as Record<string, unknown>).filter(([k]) => k.toLowerCase() !== sub.toLowerCase());
    return kept.length === 0 ? undefined : Object.fromEntries(kept);
  };
  if (Array.isArray(value)) {
    const left = value.map(one).filter((v) => v !== undefined);
    return left.length === 0 ? undefined : left;
  }
  return one(value);
}

/** Sets or, for undefined, removes a key. */
function put(target: Json, key: string, value: unknown): void {
  if (value === undefined) delete target[key];
  else target[key] = value;
}

function merge(target: Json, key: string, value: unknown): void {
  if (value === undefined) return;
  const existing = target[key];
  if (typeof existing === 'object' && existing !== null && !Array.isArray(existing) && typeof value === 'object' && value !== null && !Array.isArray(value)) {
    target[key] = { ...existing, ...value };
  } else target[key] = value;
}

export interface Projection {
  attributes?: string | undefined;
  excludedAttributes?: string | undefined;
}

export function project(resourceName: ResourceName, resource: Json, projection: Projection): Json {
  const included = select(resourceName, projection.attributes);
  if (included) {
    const out: Json = {};
    for (const key of ALWAYS) if (resource[key] !== undefined) out[key] = resource[key];
    for (const s of included) {
      const top = resource[s.key];
      if (top === undefined) continue;
      if (s.inner !== undefined) {
        const inner = (top as Json)[s.inner];
        if (inner !== undefined) merge(out, s.key, { [s.inner]: pick(inner, s.sub) });
      } else merge(out, s.key, pick(top, s.sub));
    }
    return out;
  }
  const excluded = select(resourceName, projection.excludedAttributes);
  if (!excluded) return resource;
  const out: Json = { ...resource };
  for (const s of excluded) {
    if (ALWAYS.has(s.key)) continue;
    if (s.inner !== undefined) {
      const ext = out[s.key];
      if (typeof ext === 'object' && ext !== null) {
        const copy = { ...(ext as Json) };
        put(copy, s.inner, s.sub === undefined ? undefined : drop(copy[s.inner], s.sub));
        out[s.key] = copy;
      }
    } else put(out, s.key, s.sub === undefined ? undefined : drop(out[s.key], s.sub));
  }
  return out;
}

/** True when the projection leaves a group's members out, so they need not be read. */
export function excludesMembers(projection: Projection): boolean {
  // Entra's class lookup, on every create of a class: no parse.
  if (projection.attributes === undefined && projection.excludedAttributes?.toLowerCase() === 'members') return true;
  const included = select('Group', projection.attributes);
  if (included) return !included.some((s) => s.key === 'members');
  return (select('Group', projection.excludedAttributes) ?? []).some((s) => s.key === 'members' && s.sub === undefined);
}
