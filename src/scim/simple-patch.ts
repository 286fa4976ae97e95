// The direct path of a PATCH: operations that set or remove one singular
// string or boolean attribute, or a sub-attribute of a singular complex one
// (name.givenName), are applied to the stored document here. That is all
// Entra's default attribute mappings send after a user exists, and it spares
// scimmy's schema instance and PatchOp, which cost milliseconds per request.
// Anything else (a filter, a multi-valued, reference or canonical-valued
// target, a required attribute's removal, a container that does not exist
// yet) answers undefined, and the caller hands the whole message to scimmy.
// test/simple-patch.test.ts checks over generated documents and messages that
// both paths give the same account.
import { isDeepStrictEqual } from 'node:util';
import type SCIMMY from 'scimmy';
import { isObject, type PatchOperation } from './entra-dialect.js';

type Json = Record<string, unknown>;
type Attribute = SCIMMY.Types.Attribute;

/** A singular, writable string or boolean attribute without canonical values. */
function isSimple(attribute: Attribute): boolean {
  const { multiValued, mutable, returned, canonicalValues } = attribute.config;
  const canonical = Array.isArray(canonicalValues) && canonicalValues.length > 0;
  return !multiValued && mutable === true && returned !== false && !canonical && (attribute.type === 'string' || attribute.type === 'boolean');
}

function fits(attribute: Attribute, value: unknown): boolean {
  return attribute.type === 'string' ? typeof value === 'string' : typeof value === 'boolean';
}

/** One change: the container (the document, an extension or a complex attribute) and the key in it. */
interface Step {
  /** Keys from the document to the container: [] for the document itself. */
  container: string[];
  key: string;
  /** undefined removes the key. */
  value: unknown;
}

function step(operation: PatchOperation): Step | undefined {
  const target = operation.target;
  if (!target || target.filter) return undefined;
  const top = target.definition;
  if (top.config.multiValued || top.config.mutable !== true) return undefined;
  const base = target.extension ? [target.extension.id] : [];
  const remove = operation.op === 'remove';
  if (remove && operation.value !== undefined) return undefined;
  const leaf = target.sub ?? top;
  if (!isSimple(leaf) || (remove && leaf.config.required)) return undefined;
  if (!remove && !fits(leaf, operation.value)) return undefined;
  if (target.sub) return { container: [...base, top.name], key: target.sub.name, value: remove ? undefined : operation.value };
  return { container: base, key: top.name, value: remove ? undefined : operation.value };
}

/**
 * The document after the operations: `{ document }`, with document undefined
 * when nothing changes; undefined when an operation is not for this path.
 * `current` is not modified.
 */
export function applySimplePatch(current: Json, operations: readonly PatchOperation[]): { document: Json | undefined } | undefined {
  const steps: Step[] = [];
  for (const operation of operations) {
    const s = step(operation);
    if (!s) return undefined;
    steps.push(s);
  }
  const document: Json = { ...current };
  // Containers copied so far; the others are still current's and must not change.
  const copies = new Set<Json>([document]);
  const touched = new Set<string>();
  for (const { container, key, value } of steps) {
    let holder = document;
    for (const name of container) {
      const next = holder[name];
      // A container that does not exist yet is scimmy's to create.
      if (!isObject(next)) return undefined;
      if (!copies.has(next)) {
        const copy = { ...next };
        copies.add(copy);
        holder[name] = copy;
      }
      holder = holder[name] as Json;
    }
    touched.add(container[0] ?? key);
    if (value === undefined) {
      // Removing what is not there, or the last value of a container, is scimmy's to judge.
      if (!Object.hasOwn(holder, key)) return undefined;
      delete holder[key];
      if (container.length > 0 && Object.keys(holder).length === 0) return undefined;
    } else {
      holder[key] = value;
    }
  }
  const changed = [...touched].some((k) => !isDeepStrictEqual(document[k], current[k]));
  return { document: changed ? document : undefined };
}
