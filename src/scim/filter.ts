// Owns the SCIM filter (RFC 7644 §3.4.2.2) and PATCH path (§3.5.2) syntax: text in, AST out.
import { ScimError, type ScimType } from '../errors.js';
import { MAX_FILTER_DEPTH, MAX_FILTER_LENGTH, MAX_PATH_LENGTH } from './limits.js';

export type CompareOp = 'eq' | 'ne' | 'co' | 'sw' | 'ew' | 'gt' | 'ge' | 'lt' | 'le';
export type FilterValue = string | number | boolean | null;
/** An attribute reference as written: uri is the schema URN prefix when one was given (e.g.
 * 'urn:ietf:params:scim:schemas:extension:enterprise:2.0:User'), name the attribute, sub the sub-attribute.
 * Case is preserved exactly as written (callers resolve names case-insensitively). */
export interface AttrPath {
  uri?: string;
  name: string;
  sub?: string;
}
export type FilterNode =
  | { kind: 'compare'; path: AttrPath; op: CompareOp; value: FilterValue }
  | { kind: 'present'; path: AttrPath }
  | { kind: 'and'; nodes: FilterNode[] }
  | { kind: 'or'; nodes: FilterNode[] }
  | { kind: 'not'; node: FilterNode }
  | { kind: 'valuePath'; path: AttrPath; filter: FilterNode };
export interface PatchPath {
  path: AttrPath;
  filter?: FilterNode;
  sub?: string;
}
export interface FilterLimits {
  maxLength?: number;
  maxDepth?: number;
}

export const DEFAULT_MAX_FILTER_LENGTH = MAX_FILTER_LENGTH;
export const DEFAULT_MAX_FILTER_DEPTH = MAX_FILTER_DEPTH;

const COMPARE_OPS: ReadonlySet<string> = new Set<CompareOp>(['eq', 'ne', 'co', 'sw', 'ew', 'gt', 'ge', 'lt', 'le']);
// Words that can never be attribute names here, so a misplaced operator gets a
// precise message instead of being taken for an attribute called "eq".
const RESERVED = new Set([...COMPARE_OPS, 'pr', 'and', 'or', 'not']);

type Punct = '(' | ')' | '[' | ']';
type Token =
  | { type: 'word'; text: string; pos: number; spaced: boolean }
  | { type: 'string'; value: string; raw: string; pos: number; spaced: boolean }
  | { type: Punct; pos: number; spaced: boolean }
  | { type: 'end'; pos: number; spaced: boolean };

/** Thrown inside the parser with a source offset; turned into a ScimError at the API boundary. */
class SyntaxFault extends Error {
  constructor(
    message: string,
    readonly pos: number,
  ) {
    super(message);
  }
}

const isSpace = (c: string): boolean => c === ' ' || c === '\t' || c === '\n' || c === '\r';
const isPunct = (c: string): c is Punct => c === '(' || c === ')' || c === '[' || c === ']';
const isHex = (c: string): boolean => /^[0-9a-fA-F]$/.test(c);

const ESCAPES: Readonly<Record<string, string>> = {
  '"': '"',
  '\\': '\\',
  '/': '/',
  b: '\b',
  f: '\f',
  n: '\n',
  r: '\r',
  t: '\t',
};

// One pass over the text; every character is looked at a bounded number of
// times, so hostile input cannot make parsing super-linear.
function tokenize(text: string): Token[] {
  const tokens: Token[] = [];
  let i = 0;
  while (true) {
    const before = i;
    while (i < text.length && isSpace(text.charAt(i))) i++;
    const spaced = i > before;
    if (i >= text.length) {
      tokens.push({ type: 'end', pos: text.length, spaced });
      return tokens;
    }
    const start = i;
    const c = text.charAt(i);
    if (isPunct(c)) {
      tokens.push({ type: c, pos: start, spaced });
      i++;
    } else if (c === '"') {
      i++;
      let value = '';
      let closed = false;
      while (i < text.length) {
        const ch = text.charAt(i);
        if (ch === '"') {
          closed = true;
          i++;
          break;
        }
        if (ch === '\\') {
          const esc = text.charAt(i + 1);
          if (esc === 'u') {
            const hex = text.slice(i + 2, i + 6);
            if (hex.length !== 4 || ![...hex].every(isHex)) {
              throw new SyntaxFault('invalid \\u escape in string (expected four hex digits)', i);
            }
            value += String.fromCharCode(parseInt(hex, 16));
            i += 6;
          } else {
            const decoded = ESCAPES[esc];
            if (decoded === undefined) {
              throw new SyntaxFault(esc === '' ? 'unterminated string' : `invalid escape "\\${esc}" in string`, i);
            }
            value += decoded;
            i += 2;
          }
          continue;
        }
        if (ch.charCodeAt(0) < 0x20) {
          throw new SyntaxFault('control character in string (use a JSON escape such as \\n)', i);
        }
        value += ch;
        i++;
      }
      if (!closed) throw new SyntaxFault('unterminated string (missing closing \'"\')', start);
      tokens.push({ type: 'string', value, raw: text.slice(start, i), pos: start, spaced });
    } else {
      while (i < text.length) {
        const ch = text.charAt(i);
        if (isSpace(ch) || isPunct(ch) || ch === '"') break;
        i++;
      }
      tokens.push({ type: 'word', text: text.slice(start, i), pos: start, spaced });
    }
  }
}

const clip = (s: string): string => (s.length > 40 ? `${s.slice(0, 37)}...` : s);

function describe(token: Token): string {
  switch (token.type) {
    case 'word':
      return `"${clip(token.text)}"`;
    case 'string':
      return `string ${clip(token.raw)}`;
    case 'end':
      return 'the end of the text';
    default:
      return `'${token.type}'`;
  }
}

const ATTR_NAME = /^[A-Za-z][A-Za-z0-9_-]*$/;
const isAttrName = (s: string): boolean => s === '$ref' || ATTR_NAME.test(s);
const JSON_NUMBER = /^-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?$/;

function attrPath(uri: string | undefined, name: string, sub: string | undefined): AttrPath {
  const path: AttrPath = { name };
  if (uri !== undefined) path.uri = uri;
  if (sub !== undefined) path.sub = sub;
  return path;
}

/** Splits `[urn:...:]name[.sub]`; the sub-attribute is taken only from the part after the URN. */
function parseAttrWord(word: string, pos: number): AttrPath {
  let uri: string | undefined;
  let rest = word;
  if (word.slice(0, 4).toLowerCase() === 'urn:') {
    const colon = word.lastIndexOf(':');
    uri = word.slice(0, colon);
    rest = word.slice(colon + 1);
    const segments = uri.split(':');
    if (segments.length < 2 || segments.some((s) => s === '')) {
      throw new SyntaxFault(`invalid schema URN "${clip(uri)}"`, pos);
    }
    if (rest === '') throw new SyntaxFault(`missing attribute name after schema URN "${clip(uri)}"`, pos);
  }
  const parts = rest.split('.');
  if (parts.length > 2) {
    throw new SyntaxFault(`attribute path "${clip(word)}" is nested too deeply (only attr.subAttr is allowed)`, pos);
  }
  const [name = '', sub] = parts;
  if (!isAttrName(name)) throw new SyntaxFault(`invalid attribute name "${clip(name)}"`, pos);
  if (sub !== undefined && !isAttrName(sub)) throw new SyntaxFault(`invalid sub-attribute name "${clip(sub)}"`, pos);
  return attrPath(uri, name, sub);
}

function combine(kind: 'and' | 'or', nodes: FilterNode[]): FilterNode {
  // Flattened so consumers never see an `and` directly inside an `and`.
  const flat: FilterNode[] = [];
  for (const node of nodes) {
    if (node.kind === kind) flat.push(...node.nodes);
    else flat.push(node);
  }
  const [only] = flat;
  return flat.length === 1 && only ? only : { kind, nodes: flat };
}

class Parser {
  private index = 0;

  constructor(
    private readonly tokens: Token[],
    private readonly maxDepth: number,
  ) {}

  private peek(): Token {
    // tokenize always ends with an 'end' token, and the parser never moves past it.
    return this.tokens[this.index] ?? { type: 'end', pos: 0, spaced: false };
  }

  private next(): Token {
    const token = this.peek();
    if (token.type !== 'end') this.index++;
    return token;
  }

  private keyword(token: Token): string | undefined {
    return token.type === 'word' ? token.text.toLowerCase() : undefined;
  }

  private enter(depth: number, pos: number): number {
    if (depth + 1 > this.maxDepth) {
      throw new SyntaxFault(`nested too deeply (more than ${this.maxDepth} levels)`, pos);
    }
    return depth + 1;
  }

  expectEnd(): void {
    const token = this.peek();
    if (token.type === 'end') return;
    if (token.type === ')') throw new SyntaxFault("unexpected ')' with no matching '('", token.pos);
    if (token.type === ']') throw new SyntaxFault("unexpected ']' with no matching '['", token.pos);
    throw new SyntaxFault(`unexpected ${describe(token)}; expected "and", "or" or the end of the text`, token.pos);
  }

  parseOr(depth: number, inBrackets: boolean): FilterNode {
    const nodes = [this.parseAnd(depth, inBrackets)];
    while (this.keyword(this.peek()) === 'or') {
      this.next();
      nodes.push(this.parseAnd(depth, inBrackets));
    }
    return combine('or', nodes);
  }

  private parseAnd(depth: number, inBrackets: boolean): FilterNode {
    const nodes = [this.parseUnary(depth, inBrackets)];
    while (this.keyword(this.peek()) === 'and') {
      this.next();
      nodes.push(this.parseUnary(depth, inBrackets));
    }
    return combine('and', nodes);
  }

  private parseGroup(open: Token, depth: number, inBrackets: boolean): FilterNode {
    const inner = this.enter(depth, open.pos);
    const node = this.parseOr(inner, inBrackets);
    const close = this.next();
    if (close.type !== ')') {
      throw new SyntaxFault(
        `missing ')' to close the '(' at character ${open.pos + 1}; found ${describe(close)}`,
        close.pos,
      );
    }
    return node;
  }

  private parseUnary(depth: number, inBrackets: boolean): FilterNode {
    const token = this.next();
    if (token.type === '(') return this.parseGroup(token, depth, inBrackets);
    if (token.type !== 'word') {
      throw new SyntaxFault(`expected an attribute path, '(' or "not", found ${describe(token)}`, token.pos);
    }
    const word = token.text.toLowerCase();
    if (word === 'not') {
      const open = this.next();
      if (open.type !== '(') {
        throw new SyntaxFault(`"not" must be followed by a parenthesised filter, found ${describe(open)}`, open.pos);
      }
      const inner = this.enter(depth, token.pos);
      return { kind: 'not', node: this.parseGroup(open, inner, inBrackets) };
    }
    if (RESERVED.has(word)) {
      throw new SyntaxFault(`expected an attribute path, found operator "${token.text}"`, token.pos);
    }
    const path = parseAttrWord(token.text, token.pos);
    if (inBrackets && (path.uri !== undefined || path.sub !== undefined)) {
      throw new SyntaxFault(
        `inside [...] only plain sub-attribute names are allowed, found "${clip(token.text)}"`,
        token.pos,
      );
    }
    const following = this.peek();
    if (following.type === '[' && !following.spaced) {
      return this.parseValuePath(path, token, depth, inBrackets);
    }
    return this.parseComparison(path, token);
  }

  private parseComparison(path: AttrPath, attr: Token): FilterNode {
    const opToken = this.next();
    const op = this.keyword(opToken);
    if (op === undefined) {
      if (opToken.type === '[') {
        throw new SyntaxFault("'[' must follow the attribute name directly, without spaces", opToken.pos);
      }
      throw new SyntaxFault(`expected an operator after ${describe(attr)}, found ${describe(opToken)}`, opToken.pos);
    }
    if (op === 'pr') {
      const extra = this.peek();
      if (extra.type === 'string' || (extra.type === 'word' && !['and', 'or'].includes(extra.text.toLowerCase()))) {
        throw new SyntaxFault(`"pr" takes no comparison value, found ${describe(extra)}`, extra.pos);
      }
      return { kind: 'present', path };
    }
    if (!COMPARE_OPS.has(op)) {
      throw new SyntaxFault(`unknown operator ${describe(opToken)}`, opToken.pos);
    }
    return { kind: 'compare', path, op: op as CompareOp, value: this.parseValue(opToken) };
  }

  private parseValue(opToken: Token): FilterValue {
    const token = this.next();
    const opText = opToken.type === 'word' ? opToken.text : '';
    if (token.type === 'string') return token.value;
    if (token.type !== 'word') {
      throw new SyntaxFault(`expected a comparison value after "${opText}", found ${describe(token)}`, token.pos);
    }
    const lower = token.text.toLowerCase();
    if (lower === 'true') return true;
    if (lower === 'false') return false;
    if (lower === 'null') return null;
    if (JSON_NUMBER.test(token.text)) {
      const n = Number(token.text);
      if (!Number.isFinite(n)) throw new SyntaxFault(`number "${clip(token.text)}" is out of range`, token.pos);
      return n;
    }
    throw new SyntaxFault(
      `invalid comparison value ${describe(token)} after "${opText}"; expected a double-quoted string, number, true, false or null`,
      token.pos,
    );
  }

  /** Parses `[valFilter]` after an attribute; returns the bracket's filter and an optional `.sub` that follows. */
  private parseBracket(path: AttrPath, attr: Token, depth: number, inBrackets: boolean): { filter: FilterNode; sub?: Token & { type: 'word' } } {
    const open = this.next();
    if (inBrackets) throw new SyntaxFault('a value filter [...] cannot be nested inside another', open.pos);
    if (path.sub !== undefined) {
      throw new SyntaxFault(`a value filter [...] cannot follow the sub-attribute in "${clip(attr.type === 'word' ? attr.text : '')}"`, open.pos);
    }
    const inner = this.enter(depth, open.pos);
    const filter = this.parseOr(inner, true);
    const close = this.next();
    if (close.type !== ']') {
      throw new SyntaxFault(
        `missing ']' to close the '[' at character ${open.pos + 1}; found ${describe(close)}`,
        close.pos,
      );
    }
    const after = this.peek();
    if (after.type === 'word' && !after.spaced && after.text.startsWith('.')) {
      this.next();
      const sub = after.text.slice(1);
      if (!isAttrName(sub)) throw new SyntaxFault(`invalid sub-attribute name "${clip(sub)}" after ']'`, after.pos);
      return { filter, sub: after };
    }
    return { filter };
  }

  private parseValuePath(path: AttrPath, attr: Token, depth: number, inBrackets: boolean): FilterNode {
    const { filter, sub } = this.parseBracket(path, attr, depth, inBrackets);
    if (sub === undefined) return { kind: 'valuePath', path, filter };
    // `emails[type eq "work"].value eq "x"` is not in the RFC grammar but clients
    // send it; it means one element must satisfy both conditions.
    const condition = this.parseComparison({ name: sub.text.slice(1) }, sub);
    return { kind: 'valuePath', path, filter: combine('and', [filter, condition]) };
  }

  /** PATCH path: attrPath / attrPath[valFilter] / attrPath[valFilter].sub, and nothing after. */
  parsePatchPath(): PatchPath {
    const token = this.next();
    if (token.type !== 'word') throw new SyntaxFault(`expected an attribute path, found ${describe(token)}`, token.pos);
    if (RESERVED.has(token.text.toLowerCase())) {
      throw new SyntaxFault(`expected an attribute path, found operator "${token.text}"`, token.pos);
    }
    const path = parseAttrWord(token.text, token.pos);
    const following = this.peek();
    if (following.type !== '[') {
      this.expectPathEnd();
      return { path };
    }
    if (following.spaced) throw new SyntaxFault("'[' must follow the attribute name directly, without spaces", following.pos);
    const { filter, sub } = this.parseBracket(path, token, 0, false);
    this.expectPathEnd();
    return sub === undefined ? { path, filter } : { path, filter, sub: sub.text.slice(1) };
  }

  private expectPathEnd(): void {
    const token = this.peek();
    if (token.type !== 'end') throw new SyntaxFault(`unexpected ${describe(token)} after the path`, token.pos);
  }
}

function fault(scimType: ScimType, label: string, err: unknown): ScimError {
  if (err instanceof ScimError) return err;
  if (err instanceof SyntaxFault) return new ScimError(400, scimType, `Invalid ${label} at character ${err.pos + 1}: ${err.message}`);
  // Only a stack overflow from an absurd caller-supplied maxDepth can land here.
  if (err instanceof RangeError) return new ScimError(400, scimType, `Invalid ${label}: nested too deeply`);
  return new ScimError(400, scimType, `Invalid ${label}: could not be parsed`);
}

function checkText(text: unknown, maxLength: number, scimType: ScimType, label: string): string {
  if (typeof text !== 'string') throw new ScimError(400, scimType, `Invalid ${label}: must be a string`);
  if (text.length > maxLength) {
    throw new ScimError(400, scimType, `Invalid ${label}: too long (${text.length} characters; the limit is ${maxLength})`);
  }
  if (text.trim() === '') throw new ScimError(400, scimType, `Invalid ${label}: empty`);
  return text;
}

const positiveOr = (value: number | undefined, fallback: number): number =>
  typeof value === 'number' && value > 0 ? value : fallback;

/** Parses a `filter` query parameter; every failure is a 400 invalidFilter ScimError. */
export function parseFilter(text: string, limits?: FilterLimits): FilterNode {
  const maxLength = positiveOr(limits?.maxLength, DEFAULT_MAX_FILTER_LENGTH);
  const maxDepth = positiveOr(limits?.maxDepth, DEFAULT_MAX_FILTER_DEPTH);
  try {
    const source = checkText(text, maxLength, 'invalidFilter', 'filter');
    const parser = new Parser(tokenize(source), maxDepth);
    const node = parser.parseOr(0, false);
    parser.expectEnd();
    return node;
  } catch (err) {
    throw fault('invalidFilter', 'filter', err);
  }
}

/** Parses a PATCH operation `path`; every failure is a 400 invalidPath ScimError.
 * A bare schema URN comes back as {uri: <before the last ':'>, name: <last segment>};
 * the caller decides whether that name is really a schema name. */
/** PATCH paths may name many members (members[value eq "a" or value eq "b" ...]), so they may be longer than filters. */
export const DEFAULT_MAX_PATH_LENGTH = MAX_PATH_LENGTH;

export function parsePatchPath(text: string, maxLength: number = DEFAULT_MAX_PATH_LENGTH): PatchPath {
  try {
    const source = checkText(text, maxLength, 'invalidPath', 'path');
    return new Parser(tokenize(source), DEFAULT_MAX_FILTER_DEPTH).parsePatchPath();
  } catch (err) {
    throw fault('invalidPath', 'path', err);
  }
}
