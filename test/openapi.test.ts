// openapi.yaml and the registered routes stay in step: every route is
// documented and every documented operation exists; the document is valid
// OpenAPI 3.1 and the server serves it at GET /openapi.yaml.
import { readFile } from 'node:fs/promises';
import { compileErrors, validate } from '@readme/openapi-parser';
import t from 'tap';
import { parse } from 'yaml';
import { testApp } from './helpers/app.js';

t.test('openapi.yaml documents exactly the routes the server registers', async (t) => {
  const { app } = await testApp(t);
  const document = parse(await readFile('openapi.yaml', 'utf8')) as { openapi: string; paths: Record<string, Record<string, unknown>> };
  t.match(document.openapi, /^3\.1\./);
  const documented = new Set<string>();
  for (const [path, item] of Object.entries(document.paths)) {
    for (const method of Object.keys(item)) {
      if (['get', 'put', 'post', 'patch', 'delete'].includes(method)) documented.add(`${method.toUpperCase()} ${path.replace(/\{(\w+)\}/g, ':$1')}`);
    }
  }
  const registered = new Set(app.routeTable.map((r) => `${r.method} ${r.url}`));
  t.ok(registered.size > 20, 'routes were collected');
  t.same([...registered].filter((r) => !documented.has(r)).sort(), [], 'every route is documented');
  t.same([...documented].filter((r) => !registered.has(r)).sort(), [], 'every documented operation exists');
});

t.test('openapi.yaml is a valid OpenAPI 3.1 document', async (t) => {
  const result = await validate(parse(await readFile('openapi.yaml', 'utf8')) as Parameters<typeof validate>[0]);
  t.ok(result.valid, result.valid ? 'valid' : compileErrors(result));
  t.same(result.warnings, [], 'no warnings');
});

t.test('GET /openapi.yaml serves the document without a credential', async (t) => {
  const { app } = await testApp(t);
  const res = await app.inject({ method: 'GET', url: '/openapi.yaml' });
  t.equal(res.statusCode, 200);
  t.match(res.headers['content-type'], /^application\/yaml/);
  t.equal(res.body, await readFile('openapi.yaml', 'utf8'), 'the file in the project root, as it is');
});
