// The filter and PATCH path parser turns every accepted form into an exact AST
// and refuses every malformed one with a 400 ScimError, quickly.
import t, { type Test } from 'tap';
import { ScimError } from '../src/errors.js';
import { type AttrPath, type CompareOp, type FilterNode, type FilterValue, parseFilter, parsePatchPath } from '../src/scim/filter.js';

const cmp = (name: string, op: CompareOp, value: FilterValue): FilterNode => ({ kind: 'compare', path: { name }, op, value });
const at = (path: AttrPath, op: CompareOp, value: FilterValue): FilterNode => ({ kind: 'compare', path, op, value });
const ENTERPRISE = 'urn:ietf:params:scim:schemas:extension:enterprise:2.0:User';
const CORE_USER = 'urn:ietf:params:scim:schemas:core:2.0:User';

function failure(fn: () => unknown): ScimError | undefined {
  try {
    fn();
  } catch (err) {
    return err instanceof ScimError ? err : undefined;
  }
  return undefined;
}

function refuses(t: Test, text: unknown, detail: RegExp, scimType: 'invalidFilter' | 'invalidPath' = 'invalidFilter'): void {
  const parse = scimType === 'invalidFilter' ? parseFilter : parsePatchPath;
  let thrown: unknown;
  try {
    parse(text as string);
  } catch (err) {
    thrown = err;
  }
  const shown = JSON.stringify(text) ?? String(text);
  const label = shown.length > 60 ? `${shown.slice(0, 57)}...` : shown;
  if (!(thrown instanceof ScimError)) {
    t.fail(`${label} should throw a ScimError, got ${String(thrown)}`);
    return;
  }
  t.equal(thrown.status, 400, `${label} status`);
  t.equal(thrown.scimType, scimType, `${label} scimType`);
  t.match(thrown.detail, detail, `${label} detail: ${thrown.detail}`);
}

t.test('every comparison operator, in any case', async (t) => {
  for (const op of ['eq', 'ne', 'co', 'sw', 'ew', 'gt', 'ge', 'lt', 'le'] as const) {
    t.same(parseFilter(`userName ${op} "bjensen"`), cmp('userName', op, 'bjensen'), op);
    t.same(parseFilter(`userName ${op.toUpperCase()} "bjensen"`), cmp('userName', op, 'bjensen'), op.toUpperCase());
    const mixed = `${op.charAt(0).toUpperCase()}${op.charAt(1)}`;
    t.same(parseFilter(`userName ${mixed} "bjensen"`), cmp('userName', op, 'bjensen'), mixed);
  }
  t.same(parseFilter('title pr'), { kind: 'present', path: { name: 'title' } });
  t.same(parseFilter('title PR'), { kind: 'present', path: { name: 'title' } });
  t.same(parseFilter('title Pr'), { kind: 'present', path: { name: 'title' } });
});

t.test('attribute names keep their case and may carry a sub-attribute', async (t) => {
  t.same(parseFilter('UserName eq "x"'), cmp('UserName', 'eq', 'x'));
  t.same(parseFilter('name.familyName co "O\'Malley"'), at({ name: 'name', sub: 'familyName' }, 'co', "O'Malley"));
  t.same(parseFilter('meta.lastModified gt "2011-05-13T04:42:34Z"'), at({ name: 'meta', sub: 'lastModified' }, 'gt', '2011-05-13T04:42:34Z'));
  t.same(parseFilter('x-attr_1 eq 1'), cmp('x-attr_1', 'eq', 1));
  t.same(parseFilter('manager.$ref pr'), { kind: 'present', path: { name: 'manager', sub: '$ref' } });
  t.same(parseFilter('$ref eq "https://x"'), cmp('$ref', 'eq', 'https://x'));
});

t.test('value kinds', async (t) => {
  t.same(parseFilter('active eq true'), cmp('active', 'eq', true));
  t.same(parseFilter('active eq True'), cmp('active', 'eq', true));
  t.same(parseFilter('active eq FALSE'), cmp('active', 'eq', false));
  t.same(parseFilter('active eq false'), cmp('active', 'eq', false));
  t.same(parseFilter('title eq null'), cmp('title', 'eq', null));
  t.same(parseFilter('title eq Null'), cmp('title', 'eq', null));
  t.same(parseFilter('n eq 12'), cmp('n', 'eq', 12));
  t.same(parseFilter('n gt -1.5'), cmp('n', 'gt', -1.5));
  t.same(parseFilter('n lt 1e3'), cmp('n', 'lt', 1000));
  t.same(parseFilter('n le 2.5E-1'), cmp('n', 'le', 0.25));
  t.same(parseFilter('n eq 0'), cmp('n', 'eq', 0));
  t.same(parseFilter('s eq ""'), cmp('s', 'eq', ''));
  t.same(parseFilter('s eq "say \\"hi\\""'), cmp('s', 'eq', 'say "hi"'));
  t.same(parseFilter('s eq "back\\\\slash \\/ \\n\\t\\r\\b\\f"'), cmp('s', 'eq', 'back\\slash / \n\t\r\b\f'));
  t.same(parseFilter('s eq "caf\\u00e9 \\u00C9"'), cmp('s', 'eq', 'café É'));
  t.same(parseFilter('s eq "\\ud83d\\ude00"'), cmp('s', 'eq', '😀'));
  t.same(parseFilter('s eq "ünïcødé"'), cmp('s', 'eq', 'ünïcødé'));
  t.same(parseFilter('s eq "true"'), cmp('s', 'eq', 'true'), 'a quoted true stays a string');
  t.same(parseFilter('s eq "12"'), cmp('s', 'eq', '12'), 'a quoted number stays a string');
});

t.test('strings may hold spaces, brackets, parentheses and logical words', async (t) => {
  t.same(parseFilter('displayName eq "x or y"'), cmp('displayName', 'eq', 'x or y'));
  t.same(parseFilter('displayName eq "a and not (b)"'), cmp('displayName', 'eq', 'a and not (b)'));
  t.same(parseFilter('displayName eq ")"'), cmp('displayName', 'eq', ')'));
  t.same(parseFilter('displayName eq "]"'), cmp('displayName', 'eq', ']'));
  t.same(parseFilter('displayName eq "  two  spaces  "'), cmp('displayName', 'eq', '  two  spaces  '));
  t.same(
    parseFilter('(displayName eq "a) or (b" or title eq "[x]")'),
    { kind: 'or', nodes: [cmp('displayName', 'eq', 'a) or (b'), cmp('title', 'eq', '[x]')] },
  );
  t.same(
    parseFilter('emails[value eq "]"]'),
    { kind: 'valuePath', path: { name: 'emails' }, filter: cmp('value', 'eq', ']') },
  );
});

t.test('whitespace is flexible', async (t) => {
  t.same(parseFilter('   userName    eq     "x"   '), cmp('userName', 'eq', 'x'));
  t.same(parseFilter('a eq 1\tand\nb eq 2'), { kind: 'and', nodes: [cmp('a', 'eq', 1), cmp('b', 'eq', 2)] });
  t.same(parseFilter('( a eq 1 )'), cmp('a', 'eq', 1));
});

t.test('and binds tighter than or, not tighter than and', async (t) => {
  const a = cmp('a', 'eq', 1);
  const b = cmp('b', 'eq', 2);
  const c = cmp('c', 'eq', 3);
  const d = cmp('d', 'eq', 4);
  t.same(parseFilter('a eq 1 and b eq 2'), { kind: 'and', nodes: [a, b] });
  t.same(parseFilter('a eq 1 AND b eq 2 And c eq 3'), { kind: 'and', nodes: [a, b, c] }, 'and chains flatten');
  t.same(parseFilter('a eq 1 or b eq 2 OR c eq 3'), { kind: 'or', nodes: [a, b, c] }, 'or chains flatten');
  t.same(parseFilter('a eq 1 or b eq 2 and c eq 3'), { kind: 'or', nodes: [a, { kind: 'and', nodes: [b, c] }] });
  t.same(parseFilter('a eq 1 and b eq 2 or c eq 3'), { kind: 'or', nodes: [{ kind: 'and', nodes: [a, b] }, c] });
  t.same(
    parseFilter('a eq 1 and b eq 2 or c eq 3 and d eq 4'),
    { kind: 'or', nodes: [{ kind: 'and', nodes: [a, b] }, { kind: 'and', nodes: [c, d] }] },
  );
  t.same(parseFilter('(a eq 1 or b eq 2) and c eq 3'), { kind: 'and', nodes: [{ kind: 'or', nodes: [a, b] }, c] });
  t.same(parseFilter('((a eq 1))'), a);
  t.same(
    parseFilter('a eq 1 and (b eq 2 or (c eq 3 and d eq 4))'),
    { kind: 'and', nodes: [a, { kind: 'or', nodes: [b, { kind: 'and', nodes: [c, d] }] }] },
  );
  t.same(parseFilter('a eq 1 and (b eq 2 and c eq 3)'), { kind: 'and', nodes: [a, b, c] }, 'same-kind groups flatten');
  t.same(parseFilter('not (a eq 1)'), { kind: 'not', node: a });
  t.same(parseFilter('NOT(a eq 1)'), { kind: 'not', node: a }, 'not( without a space');
  t.same(parseFilter('Not (a eq 1) and b eq 2'), { kind: 'and', nodes: [{ kind: 'not', node: a }, b] });
  t.same(
    parseFilter('a eq 1 or not (b eq 2 or c eq 3)'),
    { kind: 'or', nodes: [a, { kind: 'not', node: { kind: 'or', nodes: [b, c] } }] },
  );
  t.same(parseFilter('not (not (a eq 1))'), { kind: 'not', node: { kind: 'not', node: a } });
});

t.test('URN-qualified attributes', async (t) => {
  t.same(
    parseFilter(`${ENTERPRISE}:manager.value eq "26118915"`),
    at({ uri: ENTERPRISE, name: 'manager', sub: 'value' }, 'eq', '26118915'),
  );
  t.same(parseFilter(`${CORE_USER}:userName sw "J"`), at({ uri: CORE_USER, name: 'userName' }, 'sw', 'J'));
  t.same(
    parseFilter(`${ENTERPRISE}:employeeNumber pr`),
    { kind: 'present', path: { uri: ENTERPRISE, name: 'employeeNumber' } },
  );
  t.same(
    parseFilter(`URN:ietf:params:scim:schemas:core:2.0:User:name.givenName eq "B"`),
    at({ uri: 'URN:ietf:params:scim:schemas:core:2.0:User', name: 'name', sub: 'givenName' }, 'eq', 'B'),
    'the urn: prefix is case-insensitive and kept as written',
  );
  t.same(
    parseFilter(`${CORE_USER}:emails[type eq "work"]`),
    { kind: 'valuePath', path: { uri: CORE_USER, name: 'emails' }, filter: cmp('type', 'eq', 'work') },
  );
});

t.test('value paths', async (t) => {
  const work = cmp('type', 'eq', 'work');
  t.same(
    parseFilter('emails[type eq "work" and value co "@example.com"]'),
    { kind: 'valuePath', path: { name: 'emails' }, filter: { kind: 'and', nodes: [work, cmp('value', 'co', '@example.com')] } },
  );
  t.same(parseFilter('members[value eq "x"]'), { kind: 'valuePath', path: { name: 'members' }, filter: cmp('value', 'eq', 'x') });
  t.same(
    parseFilter('id eq "x" and members[value eq "y"]'),
    { kind: 'and', nodes: [cmp('id', 'eq', 'x'), { kind: 'valuePath', path: { name: 'members' }, filter: cmp('value', 'eq', 'y') }] },
  );
  t.same(
    parseFilter('emails[type eq "work"].value eq "x"'),
    { kind: 'valuePath', path: { name: 'emails' }, filter: { kind: 'and', nodes: [work, cmp('value', 'eq', 'x')] } },
  );
  t.same(
    parseFilter('emails[type eq "work"].value pr'),
    { kind: 'valuePath', path: { name: 'emails' }, filter: { kind: 'and', nodes: [work, { kind: 'present', path: { name: 'value' } }] } },
  );
  t.same(
    parseFilter('emails[type eq "work" and primary eq true].value ew "@x.org"'),
    {
      kind: 'valuePath',
      path: { name: 'emails' },
      filter: { kind: 'and', nodes: [work, cmp('primary', 'eq', true), cmp('value', 'ew', '@x.org')] },
    },
  );
  t.same(
    parseFilter('emails[type eq "work" or not (primary eq false)]'),
    {
      kind: 'valuePath',
      path: { name: 'emails' },
      filter: { kind: 'or', nodes: [work, { kind: 'not', node: cmp('primary', 'eq', false) }] },
    },
  );
  t.same(
    parseFilter('userType eq "Employee" and (emails[type eq "work"] or emails.value co "@example.org")'),
    {
      kind: 'and',
      nodes: [
        cmp('userType', 'eq', 'Employee'),
        {
          kind: 'or',
          nodes: [
            { kind: 'valuePath', path: { name: 'emails' }, filter: work },
            at({ name: 'emails', sub: 'value' }, 'co', '@example.org'),
          ],
        },
      ],
    },
  );
  t.same(
    parseFilter('emails[ ( type eq "work" ) ]'),
    { kind: 'valuePath', path: { name: 'emails' }, filter: work },
  );
});

t.test('malformed filters are refused with 400 invalidFilter', async (t) => {
  const cases: [unknown, RegExp][] = [
    ['userName eq', /comparison value after "eq".*end of the text/],
    ['userName xx "a"', /unknown operator "xx"/],
    ['(a eq "b"', /missing '\)' to close the '\(' at character 1/],
    ['a eq "b")', /unexpected '\)' with no matching '\('/],
    ['emails[type eq "work"', /missing '\]' to close the '\[' at character 7/],
    ['emails[type eq "work")', /missing '\]'/],
    ['(a eq 1]', /missing '\)'/],
    ['userName eq "unterminated', /unterminated string/],
    ['', /empty/],
    ['    ', /empty/],
    ['and', /found operator "and"/],
    ['userName', /expected an operator after "userName".*end of the text/],
    ['eq "a"', /found operator "eq"/],
    ['userName eq "a" "b"', /unexpected string "b"/],
    ['userName eq "a" and', /expected an attribute path.*end of the text/],
    ['userName eq "a" or', /expected an attribute path.*end of the text/],
    ['a eq 1 or or b eq 2', /found operator "or"/],
    ['a eq 1 and and b eq 2', /found operator "and"/],
    ['a pr "x"', /"pr" takes no comparison value/],
    ['a pr true', /"pr" takes no comparison value/],
    ['not a eq 1', /"not" must be followed by a parenthesised filter/],
    ['not', /"not" must be followed by a parenthesised filter/],
    ['a eq bare', /invalid comparison value "bare"/],
    ["a eq 'single'", /invalid comparison value "'single'"/],
    ['a eq 01', /invalid comparison value "01"/],
    ['a eq 1.', /invalid comparison value/],
    ['a eq 1e999', /out of range/],
    ['a eq "bad \\x escape"', /invalid escape "\\x"/],
    ['a eq "bad \\u12G4"', /invalid \\u escape/],
    ['a eq "ends with backslash\\', /unterminated string/],
    ['a eq "raw\u0001control"', /control character/],
    ['a.b.c eq 1', /nested too deeply \(only attr.subAttr/],
    ['1abc eq 1', /invalid attribute name "1abc"/],
    ['a. eq 1', /invalid sub-attribute name ""/],
    ['urn:ietf:params:scim:schemas:core:2.0:User: eq 1', /missing attribute name after schema URN/],
    ['urn:x eq 1', /invalid schema URN/],
    ['()', /expected an attribute path, '\(' or "not", found '\)'/],
    ['emails[]', /expected an attribute path.*'\]'/],
    ['emails[type eq "work" and value[x eq 1]]', /cannot be nested/],
    ['emails[name.givenName eq "x"]', /only plain sub-attribute names/],
    [`emails[${CORE_USER}:type eq "x"]`, /only plain sub-attribute names/],
    ['name.givenName[x eq 1]', /cannot follow the sub-attribute/],
    ['emails [type eq "work"]', /'\[' must follow the attribute name directly/],
    ['emails[type eq "work"].value', /expected an operator after ".value"/],
    ['emails[type eq "work"].1x eq "a"', /invalid sub-attribute name "1x"/],
    ['emails[type eq "work"] .value eq "a"', /unexpected ".value"/],
    ['a eq 1 b eq 2', /unexpected "b"/],
    ['a eq', /comparison value/],
    ['a eq (1)', /comparison value after "eq", found '\('/],
    [42, /must be a string/],
    [null, /must be a string/],
    [undefined, /must be a string/],
  ];
  for (const [text, detail] of cases) refuses(t, text, detail);
});

t.test('error details name the character position', async (t) => {
  const err = failure(() => parseFilter('userName xx "a"'));
  t.ok(err);
  t.match(err?.detail, /^Invalid filter at character 10: /);
});

t.test('length and depth limits', async (t) => {
  const clauses: string[] = [];
  while (clauses.join(' or ').length <= 5000) clauses.push(`userName eq "user${clauses.length}"`);
  const long = clauses.join(' or ');
  t.ok(long.length > 5000);
  refuses(t, long, /too long \(\d+ characters; the limit is 4096\)/);

  const short = clauses.slice(0, 20).join(' or ');
  t.equal((parseFilter(short) as { nodes: FilterNode[] }).nodes.length, 20, 'under the limit it parses');
  const custom = failure(() => parseFilter(short, { maxLength: 50 }));
  t.match(custom?.detail, /the limit is 50/);
  t.same(parseFilter(long, { maxLength: 10_000 }).kind, 'or', 'a larger configured limit admits it');

  const nested = (n: number): string => `${'('.repeat(n)}a eq 1${')'.repeat(n)}`;
  t.same(parseFilter(nested(32)), cmp('a', 'eq', 1), '32 levels are allowed');
  refuses(t, nested(33), /nested too deeply \(more than 32 levels\)/);
  refuses(t, nested(2000), /nested too deeply/);
  t.same(parseFilter(nested(40), { maxDepth: 40 }), cmp('a', 'eq', 1));
  const notDepth = failure(() => parseFilter('not (not (a eq 1))', { maxDepth: 3 }));
  t.match(notDepth?.detail, /more than 3 levels/, 'not and its parentheses count');
  t.same(parseFilter('not (not (a eq 1))', { maxDepth: 4 }).kind, 'not');
  t.match(failure(() => parseFilter('(emails[type eq 1])', { maxDepth: 1 }))?.detail, /more than 1 levels/, 'brackets count');
  t.same(parseFilter('emails[type eq 1]', { maxDepth: 1 }).kind, 'valuePath');

  const hostile = `a eq "${'\\"'.repeat(1500)}`;
  refuses(t, hostile, /unterminated string/);
  const wordy = `${'a'.repeat(4000)} eq`;
  refuses(t, wordy, /comparison value/);
});

t.test('PATCH paths', async (t) => {
  const work = cmp('type', 'eq', 'work');
  t.same(parsePatchPath('userName'), { path: { name: 'userName' } });
  t.same(parsePatchPath('  displayName  '), { path: { name: 'displayName' } });
  t.same(parsePatchPath('name.givenName'), { path: { name: 'name', sub: 'givenName' } });
  t.same(parsePatchPath('emails[type eq "work"]'), { path: { name: 'emails' }, filter: work });
  t.same(parsePatchPath('emails[type eq "work"].value'), { path: { name: 'emails' }, filter: work, sub: 'value' });
  t.same(
    parsePatchPath('members[value eq "2819c223-7f76-453a-919d-413861904646"]'),
    { path: { name: 'members' }, filter: cmp('value', 'eq', '2819c223-7f76-453a-919d-413861904646') },
  );
  t.same(
    parsePatchPath('emails[type eq "work" and primary eq TRUE]'),
    { path: { name: 'emails' }, filter: { kind: 'and', nodes: [work, cmp('primary', 'eq', true)] } },
  );
  t.same(parsePatchPath(`${ENTERPRISE}:manager`), { path: { uri: ENTERPRISE, name: 'manager' } });
  t.same(parsePatchPath(`${ENTERPRISE}:manager.value`), { path: { uri: ENTERPRISE, name: 'manager', sub: 'value' } });
  t.same(
    parsePatchPath(ENTERPRISE),
    { path: { uri: 'urn:ietf:params:scim:schemas:extension:enterprise:2.0', name: 'User' } },
    'a bare schema URN leaves the schema name in name for the caller to recognise',
  );
  t.same(
    parsePatchPath(`${CORE_USER}:emails[type eq "work"].value`),
    { path: { uri: CORE_USER, name: 'emails' }, filter: work, sub: 'value' },
  );
  t.same(
    parsePatchPath(`${CORE_USER}:emails[value eq "a:b"]`),
    { path: { uri: CORE_USER, name: 'emails' }, filter: cmp('value', 'eq', 'a:b') },
    'colons inside the filter do not move the URN split',
  );
});

t.test('malformed PATCH paths are refused with 400 invalidPath', async (t) => {
  const cases: [unknown, RegExp][] = [
    ['', /empty/],
    ['   ', /empty/],
    [7, /must be a string/],
    ['a.b.c', /nested too deeply/],
    ['1abc', /invalid attribute name/],
    ['userName eq "x"', /unexpected "eq" after the path/],
    ['emails[type eq "work"', /missing '\]'/],
    ['emails[type eq]', /comparison value/],
    ['emails[type xx "work"]', /unknown operator "xx"/],
    ['emails[type eq "work"].value.display', /invalid sub-attribute name "value.display"/],
    ['emails[type eq "work"]x', /unexpected "x" after the path/],
    ['emails[type eq "work"] .value', /unexpected ".value" after the path/],
    ['emails [type eq "work"]', /'\[' must follow the attribute name directly/],
    ['emails[value[x eq 1]]', /cannot be nested/],
    ['name.givenName[x eq 1]', /cannot follow the sub-attribute/],
    ['[type eq "work"]', /expected an attribute path/],
    ['"userName"', /expected an attribute path/],
    ['and', /found operator "and"/],
    ['urn:ietf:params:scim:schemas:core:2.0:User:', /missing attribute name after schema URN/],
    ['urn:ietf:params:scim:schemas:core:2.0', /invalid attribute name "2"/],
    ['emails[type eq "unterminated]', /unterminated string/],
    [`emails[${'('.repeat(40)}a eq 1${')'.repeat(40)}]`, /nested too deeply/],
    ['x'.repeat(70_000), /too long/],
  ];
  for (const [text, detail] of cases) refuses(t, text, detail, 'invalidPath');
  t.match(failure(() => parsePatchPath('userName eq "x"'))?.detail, /^Invalid path at character 10: /);
});
