// Recorded request bodies of Entra and the SCIM Validator, one file per shape
// under test/fixtures/entra/, and a reader of the paths they name.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

type Json = Record<string, unknown>;

export function fixture(name: string): Json {
  return JSON.parse(readFileSync(fileURLToPath(new URL(`../fixtures/entra/${name}.json`, import.meta.url)), 'utf8')) as Json;
}

const isObject = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);

function read(object: unknown, name: string): unknown {
  return isObject(object) ? object[name] : undefined;
}

/**
 * Every value a PATCH path of the shapes Entra sends names in a resource:
 * `a`, `a.b`, `urn:...:a` and `a[b eq "x"].c` (one comparison, booleans as
 * "True"). More than one value means the path matches several elements.
 */
export function valuesAt(resource: Json, path: string): unknown[] {
  const urn = /^(urn:.+):([^:]+)$/.exec(path);
  if (urn) return [read(read(resource, urn[1] ?? ''), urn[2] ?? '')].filter((v) => v !== undefined);
  const filtered = /^(\w+)\[(\w+) eq "([^"]*)"\]\.(\w+)$/.exec(path);
  if (filtered) {
    const [, attribute = '', key = '', expected = '', sub = ''] = filtered;
    const elements = read(resource, attribute);
    const matches = (element: unknown): boolean => {
      const actual = read(element, key);
      return typeof actual === 'boolean' ? String(actual) === expected.toLowerCase() : actual === expected;
    };
    return (Array.isArray(elements) ? elements : []).filter(matches).map((e) => read(e, sub));
  }
  const [top = '', sub] = path.split('.');
  const value = sub === undefined ? read(resource, top) : read(read(resource, top), sub);
  return value === undefined ? [] : [value];
}

/** Each path and value a PatchOp message sets, path-less values by their keys. */
export function pathsSet(message: Json): [string, unknown][] {
  const operations = message.Operations as { op: string; path?: string; value: unknown }[];
  return operations.flatMap((o) => (o.path === undefined ? Object.entries(o.value as Json) : [[o.path, o.value] as [string, unknown]]));
}
