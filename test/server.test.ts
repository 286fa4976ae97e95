// The whole process as a user starts it: embedded PostgreSQL on first start,
// the CLI beside the running server, reuse of the data on the next start, and
// a graceful stop on SIGTERM.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import pg from 'pg';
import t from 'tap';
import { runCli } from '../src/cli.js';
import { loadConfig } from '../src/config.js';
import { createLogger } from '../src/logger.js';
import { startServer } from '../src/server.js';
import { testDatabase } from './helpers/database.js';

function capture(): { lines: string[]; stream: Writable } {
  const lines: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, done) {
      lines.push(...chunk.toString().split('\n').filter(Boolean));
      done();
    },
  });
  return { lines, stream };
}

t.test('first start on the embedded database, CLI alongside, reuse on restart', async (t) => {
  const dataDir = await mkdtemp(path.join(os.tmpdir(), 'portal-scim-server-'));
  t.teardown(() => rm(dataDir, { recursive: true, force: true }));
  const env = { DATA_DIR: dataDir, PORT: '0', LOG_LEVEL: 'info', PUBLIC_URL: 'https://scim.example.test' };
  const config = loadConfig(env);
  const log = capture();
  const server = await startServer(config, createLogger('info', log.stream));
  t.teardown(() => server.close());
  t.equal(server.database.embedded?.owned, true, 'the server started the embedded PostgreSQL');
  t.ok(existsSync(path.join(dataDir, 'postgres', 'PG_VERSION')), 'the cluster lives in the data directory');
  t.ok(existsSync(path.join(dataDir, 'jwt-secret')), 'a signing key was generated');
  t.ok(log.lines.some((l) => l.includes('No tenant yet') && l.includes('portal-scim tenant create')), 'the log says how to create a tenant');
  t.ok(log.lines.some((l) => l.includes('No tenant yet') && /DATABASE_URL.*PORT/.test(l)), "and to give the CLI the server's settings");

  const out: string[] = [];
  const io = { out: (s: string) => out.push(s), err: (s: string) => out.push(s), env };
  t.equal(await runCli(['tenant', 'create', '--name', 'Embedded School', '--json'], io), 0, out.join('\n'));
  const tenantId = (JSON.parse(out.pop() ?? '{}') as { id: string }).id;
  t.equal(await runCli(['token', 'issue', '--tenant', tenantId, '--json'], io), 0);
  const { token, tenantUrl } = JSON.parse(out.pop() ?? '{}') as { token: string; tenantUrl: string };
  t.equal(tenantUrl, 'https://scim.example.test/scim/v2');
  t.equal(await runCli(['database-url'], io), 0);
  const databaseUrl = out.pop() ?? '';
  t.equal(databaseUrl, server.database.url, "database-url prints the embedded database's URL");
  const portal = new pg.Client({ connectionString: databaseUrl });
  await portal.connect();
  t.same((await portal.query<{ n: number }>('SELECT count(*)::int AS n FROM portal_accounts')).rows, [{ n: 0 }], 'and it opens the database the portal reads');
  await portal.end();

  const good = await fetch(`${server.url}/scim/v2/ServiceProviderConfig`, { headers: { authorization: `Bearer ${token}` } });
  t.equal(good.status, 200);
  t.match(good.headers.get('content-type'), /^application\/scim\+json/);
  // The signature's first character carries six bits of it: another one is always another signature
  // (its last characters carry fewer, so a change there may decode to the same bytes).
  const signatureAt = token.lastIndexOf('.') + 1;
  const forged = `${token.slice(0, signatureAt)}${token[signatureAt] === 'A' ? 'B' : 'A'}${token.slice(signatureAt + 1)}`;
  const bad = await fetch(`${server.url}/scim/v2/ServiceProviderConfig`, { headers: { authorization: `Bearer ${forged}` } });
  t.equal(bad.status, 401);
  t.match(await bad.json(), { schemas: ['urn:ietf:params:scim:api:messages:2.0:Error'], status: '401' });
  t.notOk(log.lines.some((l) => l.includes(token)), 'the token never reaches the log');
  t.ok(
    log.lines.some((l) => l.includes('request completed') && l.includes(`"tenantId":"${tenantId}"`) && l.includes('"requestId"')),
    'an authenticated request logs its tenant and request id',
  );

  await server.close();
  t.notOk(existsSync(path.join(dataDir, 'postgres', 'postmaster.pid')), 'the embedded PostgreSQL stopped with the server');

  const again = capture();
  const second = await startServer(config, createLogger('info', again.stream));
  t.teardown(() => second.close());
  t.notOk(again.lines.some((l) => l.includes('migrations applied')), 'no migration runs twice');
  t.notOk(again.lines.some((l) => l.includes('No tenant yet')), 'the tenant is still there');
  const reused = await fetch(`${second.url}/scim/v2/ServiceProviderConfig`, { headers: { authorization: `Bearer ${token}` } });
  t.equal(reused.status, 200, 'the token still works after a restart');
  await second.close();
});

t.test('the server process stops gracefully on SIGTERM', async (t) => {
  const { url } = await testDatabase(t);
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/server.ts'], {
    env: { ...process.env, DATABASE_URL: url, PORT: '0', LOG_LEVEL: 'info', JWT_SECRET: 'x'.repeat(40) },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const lines: string[] = [];
  const listening = new Promise<string>((resolve, reject) => {
    child.stdout.on('data', (chunk: Buffer) => {
      for (const line of chunk.toString().split('\n').filter(Boolean)) {
        lines.push(line);
        const parsed = JSON.parse(line) as { msg?: string; url?: string };
        if (parsed.msg === 'portal-scim listening' && parsed.url) resolve(parsed.url);
      }
    });
    child.on('exit', (code) => reject(new Error(`exited early with ${String(code)}: ${lines.join('\n')}`)));
  });
  const base = await listening;
  t.equal((await fetch(`${base}/healthz`)).status, 200);
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  child.kill('SIGTERM');
  t.equal(await exited, 0, 'exit code 0');
  t.ok(lines.some((l) => l.includes('"msg":"shutting down"') && l.includes('SIGTERM')));
  t.ok(lines.some((l) => l.includes('"msg":"stopped"')));
});

t.test('a configuration error names the variable and stops the process', async (t) => {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/server.ts'], {
    env: { ...process.env, PORT: 'eighty' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
  const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
  t.equal(code, 78);
  t.match(stderr, /configuration error: PORT: must be a whole number/);
});

t.test('a port in use stops the process with what to do, not a stack trace', async (t) => {
  const { url } = await testDatabase(t);
  const busy = createServer();
  await new Promise<void>((resolve) => busy.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise((resolve) => busy.close(resolve)));
  const port = String((busy.address() as AddressInfo).port);
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/server.ts'], {
    env: { ...process.env, DATABASE_URL: url, PORT: port, HOST: '127.0.0.1', LOG_LEVEL: 'info', JWT_SECRET: 'x'.repeat(40) },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
  const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
  t.equal(code, 1);
  const fatal = stdout
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as { level: number; msg: string; err?: unknown })
    .find((l) => l.level === 60);
  t.match(fatal, { msg: `could not start: 127.0.0.1:${port} is in use, by another portal-scim or another program; stop it, or set PORT (and HOST) to a free address` });
  t.notOk(fatal && 'err' in fatal, 'no stack trace');
});
