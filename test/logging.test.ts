// What the server logs: at LOG_LEVEL=debug, why requests were refused and
// what the credential cache and the pool did, still without tokens, secrets
// or attribute values; nothing below info otherwise; readable lines when the
// output is a terminal and JSON lines when it is not.
import { spawn } from 'node:child_process';
import { PassThrough } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import t from 'tap';
import { signingKeys } from '../src/auth/keys.js';
import { loadConfig } from '../src/config.js';
import { createLogger, processLogDestination } from '../src/logger.js';
import { TEST_SECRET, tenantWithToken, testEnv } from './helpers/app.js';
import { testDatabase } from './helpers/database.js';
import { startServerProcess } from './helpers/process.js';
import { USER } from './helpers/scim.js';

const MARKERS = {
  userName: 'hedvig.debugmarker@school.example',
  givenName: 'Hedvigdebugmarker',
  familyName: 'Lindqvistdebugmarker',
  password: 'Passw0rd-debug-never-logged',
};

/** Sends the same requests to a server: refused ones, a create with personal data, a lookup, a broken write. */
async function traffic(url: string, token: string): Promise<number[]> {
  const scim = (method: string, path: string, headers: Record<string, string>, body?: string) =>
    fetch(`${url}/scim/v2${path}`, { method, headers: { 'content-type': 'application/scim+json', ...headers }, ...(body === undefined ? {} : { body }) }).then((r) => r.status);
  const auth = { authorization: `Bearer ${token}` };
  return [
    await scim('GET', '/Users', {}),
    await scim('GET', '/Users', { authorization: 'Bearer not.a.token' }),
    await scim('GET', '/Users', { authorization: `Basic ${Buffer.from(`user:${MARKERS.password}`).toString('base64')}` }),
    await scim(
      'POST',
      '/Users',
      auth,
      JSON.stringify({ schemas: [USER], userName: MARKERS.userName, name: { givenName: MARKERS.givenName, familyName: MARKERS.familyName }, password: MARKERS.password }),
    ),
    await scim('GET', `/Users?filter=${encodeURIComponent(`userName eq "${MARKERS.userName}"`)}`, auth),
    await scim('PATCH', '/Users/00000000-0000-4000-8000-000000000001', auth, `{"Operations": "${MARKERS.familyName}`),
  ];
}

t.test('LOG_LEVEL=debug writes debug lines, none of them with a token, a secret or a value', async (t) => {
  const database = await testDatabase(t);
  const config = loadConfig(testEnv());
  const { token } = await tenantWithToken(database.db, config, signingKeys(TEST_SECRET));

  const debug = await startServerProcess({ DATABASE_URL: database.url, LOG_LEVEL: 'debug', CREDENTIAL_CACHE_SECONDS: '5' });
  t.teardown(() => debug.stop());
  t.same(await traffic(debug.url, token), [401, 401, 401, 201, 200, 400], 'the requests got their answers');
  t.equal(await debug.stop(), 0);
  const records = debug.lines.filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as { level: number; msg: string });
  const debugMessages = new Set(records.filter((r) => r.level === 20).map((r) => r.msg));
  for (const message of [
    'refused a request without a credential',
    'refused a token that does not verify',
    'refused an Authorization header that is not a bearer token',
    'credential checked against the database',
    'request refused',
    'database connection opened',
  ]) {
    t.ok(debugMessages.has(message), `debug: "${message}"`);
  }
  const log = debug.lines.join('\n');
  for (const [what, value] of [['the token', token], ['its signature', token.split('.')[2] ?? ''], ...Object.entries(MARKERS)] as [string, string][]) {
    t.notOk(log.includes(value), `${what} is not in the log`);
  }
  t.notMatch(log, /"authorization":"(?!\[redacted\])/i, 'no Authorization header value');

  const info = await startServerProcess({ DATABASE_URL: database.url, LOG_LEVEL: 'info' });
  t.teardown(() => info.stop());
  await traffic(info.url, token);
  t.equal(await info.stop(), 0);
  const levels = new Set(info.lines.filter((l) => l.startsWith('{')).map((l) => (JSON.parse(l) as { level: number }).level));
  t.notOk(levels.has(20), 'LOG_LEVEL=info writes no debug lines');
  t.ok(levels.has(30), 'but its info lines');
});

t.test('on a terminal the log is readable lines, elsewhere JSON lines, redacted alike', async (t) => {
  t.equal(await processLogDestination(new PassThrough()), undefined, 'not a terminal: pino writes JSON lines to standard output');

  const terminal = Object.assign(new PassThrough(), { isTTY: true });
  let text = '';
  terminal.on('data', (chunk: Buffer) => (text += chunk.toString()));
  const logger = createLogger('info', await processLogDestination(terminal));
  logger.info({ requestId: 'r-1', token: 'secret-token-never-shown' }, 'portal-scim listening');
  for (let i = 0; i < 50 && !text.includes('\n'); i++) await sleep(10);
  // eslint-disable-next-line no-control-regex
  const plain = text.replace(/\u001b\[[0-9;]*m/g, '');
  t.match(plain, /^\[\d\d:\d\d:\d\d\.\d{3}\] INFO \(\d+\): portal-scim listening/, 'a line a person reads: time, level, message');
  t.match(plain, /requestId.*r-1/, 'with the fields of the record');
  t.notOk(plain.includes('secret-token-never-shown'), 'redacted as in JSON');
  t.equal(plain.trim().split('\n').length, 1, 'one line per record');
  t.throws(() => JSON.parse(plain) as unknown, 'and not JSON');
});

t.test('the server started on a terminal logs readable lines', async (t) => {
  const database = await testDatabase(t);
  // script(1) runs the server on a pseudo-terminal, as a person starting it does.
  const command = `${process.execPath} --import tsx src/server.ts`;
  const child = spawn('script', ['-qfec', command, '/dev/null'], {
    env: { ...process.env, DATABASE_URL: database.url, PORT: '0', LOG_LEVEL: 'info', JWT_SECRET: TEST_SECRET },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const server: { pid?: number } = {};
  t.teardown(async () => {
    if (server.pid !== undefined) {
      try {
        process.kill(server.pid, 'SIGTERM');
      } catch {
        // Stopped with its terminal.
      }
    }
    child.kill('SIGTERM');
    await exited;
  });
  // eslint-disable-next-line no-control-regex
  const plain = (): string => output.replace(/\u001b\[[0-9;]*m/g, '');
  for (let i = 0; i < 300 && !plain().includes('portal-scim listening'); i++) await sleep(100);
  const line = plain().split(/\r?\n/).find((l) => l.includes('portal-scim listening')) ?? '';
  t.match(line, /^\[\d\d:\d\d:\d\d\.\d{3}\] INFO \((\d+)\): portal-scim listening /, 'the listening line is readable');
  const pid = Number(/INFO \((\d+)\)/.exec(line)?.[1]);
  if (pid > 0) server.pid = pid;
  t.notOk(plain().split(/\r?\n/).some((l) => l.startsWith('{"level"')), 'and no line is JSON');
});
