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

/**
 * The value with only the sub-attributes asked for (of the object, or of each
 * element; an element with none of them goes), all of it for undefined;
 * undefined when nothing is left, as an unassigned attribute is left out.
 */
function pick(value: unknown, subs: ReadonlySet<string> | undefined): unknown {
  if (subs === undefined) return value;
  const one = (v: unknown): unknown => {
    if (typeof v !== 'object' || v === null || Array.isArray(v)) return undefined;
    const kept = Object.entries(v as Record<string, unknown>).filter(([k]) => subs.has(k.toLowerCase()));
    return kept.length === 0 ? undefined : Object.fromEntries(kept);
  };
  if (!Array.isArray(value)) return one(value);
  const left = value.map(one).filter((v) => v !== undefined);
  return left.length === 0 ? undefined : left;
}

/**
 * The selections grouped by attribute: emails.value and emails.type ask for
 * one attribute with two sub-attributes, and a name without a sub-attribute
 * asks for all of it.
 */
function wanted(selected: readonly Selected[]): { key: string; inner: string | undefined; subs: Set<string> | undefined }[] {
  const byAttribute = new Map<string, { key: string; inner: string | undefined; subs: Set<string> | undefined }>();
  for (const s of selected) {
    const id = `${s.key}\u0000${s.inner ?? ''}`;
    let entry = byAttribute.get(id);
    if (entry === undefined) {
      entry = { key: s.key, inner: s.inner, subs: s.sub === undefined ? undefined : new Set() };
      byAttribute.set(id, entry);
    }
    if (s.sub === undefined) entry.subs = undefined;
    else entry.subs?.add(s.sub.toLowerCase());
  }
  return [...byAttribute.values()];
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

export interface Projection {
  attributes?: string | undefined;
  excludedAttributes?: string | undefined;
}

export function project(resourceName: ResourceName, resource: Json, projection: Projection): Json {
  const included = select(resourceName, projection.attributes);
  if (included) {
    const out: Json = {};
    for (const key of ALWAYS) if (resource[key] !== undefined) out[key] = resource[key];
    const selections = wanted(included);
    // An extension asked for whole is not cut down by one of its attributes asked for too.
    const whole = new Set(selections.filter((w) => w.inner === undefined && w.subs === undefined).map((w) => w.key));
    for (const { key, inner, subs } of selections) {
      const top = resource[key];
      if (top === undefined || ALWAYS.has(key) || (inner !== undefined && whole.has(key))) continue;
      if (inner === undefined) {
        put(out, key, pick(top, subs));
        continue;
      }
      const value = pick((top as Json)[inner], subs);
      if (value !== undefined) out[key] = { ...(out[key] ?? {}), [inner]: value };
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
        put(out, s.key, Object.keys(copy).length === 0 ? undefined : copy);
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
