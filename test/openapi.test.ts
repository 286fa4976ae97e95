// openapi.yaml and the registered routes stay in step: every route is
// documented and every documented operation exists.
import { readFile } from 'node:fs/promises';
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
