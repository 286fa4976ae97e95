// attributes= and excludedAttributes= (RFC 7644 §3.4.2.5) on outgoing
// resources. schemas and id are always returned.
import { parsePatchPath } from './filter.js';
import { resolveAttribute } from './schema-index.js';
import type { Json } from './resource.js';
import type { ResourceName } from './schemas.js';

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
        delete copy[s.inner];
        out[s.key] = copy;
      }
    } else if (s.sub === undefined) delete out[s.key];
  }
  return out;
}

/** True when the projection leaves a group's members out, so they need not be read. */
export function excludesMembers(projection: Projection): boolean {
  const included = projection.attributes?.split(',').map((s) => s.trim().toLowerCase());
  if (included && included.some(Boolean)) return !included.some((a) => a === 'members' || a.startsWith('members.') || a.endsWith(':members'));
  return (projection.excludedAttributes ?? '').split(',').some((a) => ['members', `urn:ietf:params:scim:schemas:core:2.0:group:members`].includes(a.trim().toLowerCase()));
}
