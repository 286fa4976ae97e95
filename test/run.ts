// npm test: runs the tap suite on real PostgreSQL. With TEST_DATABASE_URL or
// DATABASE_URL it uses that server; otherwise it starts the embedded
// PostgreSQL under .data/test. A migrated template database is built once per
// run; every test file clones its own database from it.
import { spawn } from 'node:child_process';
import path from 'node:path';
import { openEmbeddedPostgres } from '../src/db/embedded.js';
import { buildTemplate, dropTemplate } from './helpers/database.js';

async function main(): Promise<number> {
  const given = process.env.TEST_DATABASE_URL ?? process.env.DATABASE_URL;
  const embedded = given
    ? undefined
    : await openEmbeddedPostgres({ dataDir: path.resolve('.data/test'), database: 'postgres' });
  const adminUrl = given ?? embedded?.adminUrl ?? '';
  process.stdout.write(`# tests on ${given ? 'the PostgreSQL at DATABASE_URL' : 'the embedded PostgreSQL'}\n`);
  try {
    process.env.TEST_DATABASE_URL = adminUrl;
    process.env.TEST_TEMPLATE_DATABASE ??= `portal_scim_template_${process.pid}`;
    await buildTemplate({ replace: true });
    const child = spawn('npx', ['tap', ...process.argv.slice(2)], {
      stdio: ['inherit', 'pipe', 'inherit'],
      env: { ...process.env, TEST_DATABASE_URL: adminUrl },
    });
    // Pass tap's report through, and end with the plain "N passed, N failed"
    // line that CI reads whatever the runner.
    let tail = '';
    child.stdout.on('data', (chunk: Buffer) => {
      process.stdout.write(chunk);
      tail = (tail + chunk.toString()).slice(-4096);
    });
    const code = await new Promise<number>((resolve) => child.on('close', (c) => resolve(c ?? 1)));
    const summary = /# \{ total: (\d+), pass: (\d+)(?:, fail: (\d+))?/.exec(tail);
    if (summary) process.stdout.write(`tests: ${summary[2] ?? 0} passed, ${summary[3] ?? 0} failed\n`);
    return code;
  } finally {
    await dropTemplate().catch(() => undefined);
    await embedded?.stop();
  }
}

process.exitCode = await main();
