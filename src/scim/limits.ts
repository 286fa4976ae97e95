// Every bound the server puts on what one request may carry, in one place, so
// hostile input meets a clear SCIM error instead of a slow or failed query.
// ServiceProviderConfig advertises the ones SCIM has a field for.
import { badRequest } from '../errors.js';

/** Nesting of a JSON body. A SCIM PatchOp nests six levels deep at most. */
export const MAX_JSON_DEPTH = 32;

/** A filter's length in characters, and its nesting of (), not () and []. */
export const MAX_FILTER_LENGTH = 4096;
export const MAX_FILTER_DEPTH = 32;

/** A PATCH path may name many members (members[value eq "a" or value eq "b" ...]). */
export const MAX_PATH_LENGTH = 65_536;

/** Operations in one PATCH request; also advertised as bulk.maxOperations. */
export const MAX_PATCH_OPERATIONS = 1000;

/**
 * Times one PATCH may read back an attribute it has just changed (a filtered
 * path after an earlier operation on the same attribute): each costs a
 * scimmy application of about a millisecond. The SCIM Validator's longest
 * message needs about a dozen.
 */
export const MAX_PATCH_REREADS = 100;

/** Member ids one request may name, over all its operations. */
export const MAX_MEMBERS_PER_REQUEST = 10_000;

/** Resources in one list response (advertised as filter.maxResults); a larger count is lowered to it. */
export const MAX_PAGE_SIZE = 1000;
export const DEFAULT_PAGE_SIZE = 100;
/**
 * What one list answer may carry, so that its size follows neither the count
 * asked for nor how large a tenant's resources were made: users' documents
 * up to this many bytes together, classes' members up to this many. A page
 * past it holds fewer resources (at least one), and itemsPerPage says how
 * many: a client pages on from startIndex as RFC 7644 §3.4.2.4 has it.
 */
export const LIST_DOCUMENT_BYTES = 4 * 1024 * 1024;
export const LIST_MEMBERS = 10_000;

/** How many of the sizes, from the first, fit in the budget: at least one, so a page always moves on. */
export function fitting(sizes: readonly number[], budget: number): number {
  let total = 0;
  for (let i = 0; i < sizes.length; i++) {
    total += sizes[i] ?? 0;
    if (total > budget) return Math.max(1, i);
  }
  return sizes.length;
}
/** The largest startIndex: PostgreSQL's integer range, far beyond any tenant's size. */
export const MAX_START_INDEX = 2_147_483_647;

/** A path parameter (an id) the router accepts; longer ones never name anything, and answer 404. */
export const MAX_PARAM_LENGTH = 8192;

/**
 * Characters of string values. The named attributes sit in indexed columns (a
 * btree entry holds at most 2704 bytes) or under a CHECK of the database;
 * every other string in a stored resource is held to MAX_STRING_LENGTH.
 */
export const MAX_USER_NAME_LENGTH = 512;
export const MAX_DISPLAY_NAME_LENGTH = 512;
export const MAX_EXTERNAL_ID_LENGTH = 512;
export const MAX_EMAIL_LENGTH = 320;
export const MAX_STRING_LENGTH = 4096;

const ATTRIBUTE_LENGTHS: Readonly<Record<string, number>> = {
  username: MAX_USER_NAME_LENGTH,
  displayname: MAX_DISPLAY_NAME_LENGTH,
  externalid: MAX_EXTERNAL_ID_LENGTH,
  'emails.value': MAX_EMAIL_LENGTH,
};
const SHORTEST_LIMIT = Math.min(MAX_STRING_LENGTH, ...Object.values(ATTRIBUTE_LENGTHS));

/**
 * Values of one multi-valued attribute of a user (e-mails, roles, addresses,
 * ...). Entra sends a handful; a PATCH that adds to them again and again would
 * otherwise grow the stored document, and every answer and list page that
 * carries it, without end.
 */
export const MAX_VALUES_PER_ATTRIBUTE = 100;

/**
 * Refuses a resource holding a string longer than its attribute allows, or
 * (with maxValues) a multi-valued attribute of more values, with 400
 * invalidValue naming the attribute. Walks the whole document, so extension
 * attributes and elements of multi-valued ones are covered too.
 */
export function checkStringLengths(resource: Record<string, unknown>, maxValues = Number.POSITIVE_INFINITY, before?: Record<string, unknown>): void {
  // The path is joined only for the error; most strings are below every limit.
  const path: string[] = [];
  // The same path as keys, to find what the document held there before.
  const keys: (string | number)[] = [];
  /** A change may keep (or shrink) what a document held before the limit, never grow it. */
  const heldBefore = (): number => {
    let at: unknown = before;
    for (const key of keys) at = typeof at === 'object' && at !== null ? (at as Record<string | number, unknown>)[key] : undefined;
    return Array.isArray(at) ? at.length : 0;
  };
  const visit = (value: unknown, key: string): void => {
    if (typeof value === 'string') {
      if (value.length <= SHORTEST_LIMIT) return;
      const limit = ATTRIBUTE_LENGTHS[key.toLowerCase()] ?? MAX_STRING_LENGTH;
      if (value.length > limit) {
        throw badRequest('invalidValue', `${path.join('')} is too long: ${value.length} characters, the limit is ${limit}.`);
      }
    } else if (Array.isArray(value)) {
      if (value.length > maxValues && value.length > heldBefore()) {
        throw badRequest('invalidValue', `${path.join('')} has ${value.length} values; the limit is ${maxValues}.`);
      }
      for (let i = 0; i < value.length; i++) {
        path.push(`[${i}]`);
        keys.push(i);
        visit(value[i], key);
        keys.pop();
        path.pop();
      }
    } else if (typeof value === 'object' && value !== null) {
      for (const [name, inner] of Object.entries(value)) {
        // Extension attributes are keyed by name alone, as in the core schema.
        const nested = path.length === 0 || key.startsWith('urn:') ? name : `${key}.${name}`;
        path.push(path.length === 0 ? name : `.${name}`);
        keys.push(name);
        visit(inner, nested);
        keys.pop();
        path.pop();
      }
    }
  };
  visit(resource, '');
}

/**
 * Members of one JSON object of a request. A SCIM resource has a few dozen
 * attributes, and a path-less PATCH value as many; lists (members, e-mails)
 * are arrays. An object of tens of thousands of names costs every step that
 * reads it (the schema's coercion about 20 µs a name): a one-megabyte body of
 * them, a second of CPU.
 */
export const MAX_JSON_OBJECT_MEMBERS = 256;

/**
 * Why JSON text is refused before it is parsed, if it is: arrays and objects
 * nested deeper than maxDepth, or an object of more than maxMembers names.
 * One pass over the characters, so a refused body costs no more than a flat one.
 */
export function jsonShapeProblem(text: string, maxDepth: number = MAX_JSON_DEPTH, maxMembers: number = MAX_JSON_OBJECT_MEMBERS): 'depth' | 'members' | undefined {
  // Per open level: the names of an object so far, or -1 for an array.
  const members = new Int32Array(maxDepth + 1);
  let depth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 0x5c) i++; // backslash: skip the escaped character
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) inString = true;
    else if (c === 0x7b || c === 0x5b) {
      if (++depth > maxDepth) return 'depth';
      members[depth] = c === 0x7b ? 0 : -1;
    } else if (c === 0x7d || c === 0x5d) depth--;
    // A name's colon, at an object's own level (a colon in a string was skipped).
    else if (c === 0x3a && depth > 0 && members[depth] !== -1 && ++members[depth]! > maxMembers) return 'members';
  }
  return undefined;
}
