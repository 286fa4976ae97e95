// Overload and disclosure: the per-tenant rate limit (429 with Retry-After),
// shedding with 503 when the event loop lags, and the security headers every
// answer carries.
import { connect, type AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import type { FastifyInstance } from 'fastify';
import t from 'tap';
import { testApp, tenantWithToken } from './helpers/app.js';
import { capturedLogger } from './helpers/log-lines.js';
import { USER } from './helpers/scim.js';
import { MAX_PARAM_LENGTH } from '../src/scim/limits.js';
import { tenantOverview } from '../src/services/health.js';
import { recentFailures } from '../src/services/failures.js';

t.test('each tenant has its own request budget; past it, 429 with Retry-After and a SCIM body', async (t) => {
  // 3 a second over a 10-second window: 30 requests.
  const { app, headers, db, config, keys } = await testApp(t, { RATE_LIMIT_PER_SECOND: '3' });
  const other = await tenantWithToken(db, config, keys, 'Other School', ['other.example']);
  const get = (h: Record<string, string>) => app.inject({ method: 'GET', url: '/scim/v2/Users?count=1', headers: h });
  for (let i = 0; i < 30; i++) {
    const res = await get(headers);
    t.equal(res.statusCode, 200, `request ${i + 1} is within the budget`);
  }
  const limited = await get(headers);
  t.equal(limited.statusCode, 429);
  const retryAfter = Number(limited.headers['retry-after']);
  t.ok(retryAfter >= 1 && retryAfter <= 10, `Retry-After is ${retryAfter}`);
  t.match(limited.headers['content-type'], /^application\/scim\+json/);
  t.match(limited.json(), { schemas: ['urn:ietf:params:scim:api:messages:2.0:Error'], status: '429', detail: /Too many requests/ });

  const write = await app.inject({
    method: 'POST',
    url: '/scim/v2/Users',
    headers,
    payload: JSON.stringify({ schemas: [USER], userName: 'limited@school.example' }),
  });
  t.equal(write.statusCode, 429, 'writes are limited too');
  t.equal(await db.selectFrom('accounts').where('user_name', '=', 'limited@school.example').select('id').executeTakeFirst(), undefined, 'and nothing is written');

  t.equal((await get(other.headers)).statusCode, 200, 'another tenant is not affected');
  const noToken = await app.inject({ method: 'GET', url: '/scim/v2/Users' });
  t.equal(noToken.statusCode, 401, 'a request without a credential is refused before the limit');
});

t.test('a flood of throttled writes is recorded as a few events that count every answer', async (t) => {
  // 1 a second over a 10-second window: 10 writes pass, and the next 30 are refused.
  const { app, headers, db, tenant } = await testApp(t, { RATE_LIMIT_PER_SECOND: '1' });
  const statuses: number[] = [];
  for (let i = 0; i < 40; i++) {
    const res = await app.inject({
      method: 'POST',
      url: '/scim/v2/Users',
      headers,
      payload: JSON.stringify({ schemas: [USER], userName: `pupil${i}@school.example`, externalId: `entra-${i}` }),
    });
    statuses.push(res.statusCode);
  }
  t.same(statuses, [...Array<number>(10).fill(201), ...Array<number>(30).fill(429)]);
  const failures = () =>
    db
      .selectFrom('audit_events')
      .select(['object_ref', 'details'])
      .where('tenant_id', '=', tenant.id)
      .where('outcome', '=', 'failure')
      .orderBy('id')
      .execute();
  const first = await failures();
  t.equal(first.length, 1, 'the first refusal is recorded before its answer leaves; the others only counted');
  t.match(first[0], { object_ref: 'pupil10@school.example', details: { status: 429, externalId: 'entra-10', message: /Too many requests/ } });
  t.notOk('answers' in (first[0]?.details ?? {}), 'it stands for itself');

  // The counted ones are written as one event when their minute ends, or when the app closes.
  await app.close();
  const all = await failures();
  t.equal(all.length, 2, 'one event more for the other 29');
  t.match(all[1], { object_ref: 'pupil39@school.example', details: { status: 429, answers: 29, externalId: 'entra-39' } }, 'the latest refused object names it');
  const [group] = await recentFailures(db, tenant.id, new Date());
  t.match(group, { count: 30, status: 429, objects: ['pupil39@school.example', 'pupil10@school.example'] }, 'the failure list counts every answer');
  const overview = (await tenantOverview(db, { silentAfterMs: 3_600_000 })).find((row) => row.tenantId === tenant.id);
  t.equal(overview?.failures24h, 30, 'so do the failures of the last 24 hours');
  t.equal(overview?.writeFailuresLastHour, 30, 'and the health, which counts every answer as it is sent');
});

t.test('the default budget carries an Entra cycle of 25 requests a second and more', async (t) => {
  const { app, config, db, keys } = await testApp(t, { RATE_LIMIT_PER_SECOND: '' });
  t.ok(config.rateLimitPerSecond >= 25, `the default is ${config.rateLimitPerSecond} a second`);
  // Ten seconds of a 40-per-second cycle, sent as fast as the app takes them:
  // Entra's own pace is far below this, and all of it must pass.
  const { headers } = await tenantWithToken(db, config, keys, 'Busy School', ['busy.example']);
  const answers = await Promise.all(
    Array.from({ length: 400 }, () => app.inject({ method: 'GET', url: '/scim/v2/Users?count=1', headers })),
  );
  t.same([...new Set(answers.map((a) => a.statusCode))], [200]);
});

t.test('a lagging event loop sheds requests with 503 and Retry-After, then recovers', async (t) => {
  const { logger, lines } = capturedLogger();
  const { app, headers } = await testApp(t, { MAX_EVENT_LOOP_DELAY_MS: '20' }, { logger });
  // The fault: the event loop is blocked 50 ms at a time for two sampling
  // periods, so the measured delay stays far above the 20 ms limit.
  const until = Date.now() + 2200;
  while (Date.now() < until) {
    const stop = Date.now() + 50;
    while (Date.now() < stop) {
      // busy
    }
    await new Promise((resolve) => setImmediate(resolve));
  }
  const shed = await app.inject({ method: 'GET', url: '/scim/v2/Users', headers });
  t.equal(shed.statusCode, 503);
  t.equal(shed.headers['retry-after'], '5');
  t.match(shed.json(), { schemas: ['urn:ietf:params:scim:api:messages:2.0:Error'], status: '503', detail: /overloaded/ });
  const live = await app.inject({ method: 'GET', url: '/healthz' });
  t.equal(live.statusCode, 200, 'liveness still answers, so the instance is not restarted for being busy');
  const shedLines = lines.filter((l) => (l.reqId ?? l.requestId) === shed.headers['x-request-id']);
  t.match(
    shedLines,
    [{ msg: 'incoming request' }, { msg: 'request completed', res: { statusCode: 503 }, detail: /overloaded/ }],
    'a shed request logs its own two lines, the second with why, and nothing more',
  );
  t.equal(shedLines.length, 2);
  t.notOk(
    lines.some((l) => l.err !== undefined),
    'and no stack: a flood of shed requests must not flood the log',
  );

  // With the loop idle again the next sample clears the pressure.
  let status = 503;
  for (let i = 0; i < 20 && status === 503; i++) {
    await sleep(500);
    status = (await app.inject({ method: 'GET', url: '/scim/v2/Users', headers })).statusCode;
  }
  t.equal(status, 200, 'requests are served again');
});

t.test('every answer carries security headers and discloses no version or stack', async (t) => {
  const { app, headers } = await testApp(t);
  const requests: [string, string, Record<string, string>, string?][] = [
    ['GET', '/scim/v2/Users', headers],
    ['GET', '/scim/v2/Users/not-a-uuid', headers],
    ['GET', '/scim/v2/Users', {}],
    ['POST', '/scim/v2/Users', headers, '{"broken'],
    ['GET', '/healthz', {}],
    ['GET', '/nowhere', {}],
    ['POST', '/oauth/token', { 'content-type': 'application/x-www-form-urlencoded' }, 'grant_type=client_credentials'],
    ['GET', '/admin/tenants', {}],
  ];
  for (const [method, url, h, payload] of requests) {
    const res = await app.inject({ method: method as 'GET', url, headers: h, ...(payload ? { payload } : {}) });
    const name = `${method} ${url} (${res.statusCode})`;
    t.equal(res.headers['x-content-type-options'], 'nosniff', name);
    t.match(res.headers['content-security-policy'], /default-src 'none'/, name);
    t.match(res.headers['strict-transport-security'], /max-age=\d+/, name);
    t.equal(res.headers['x-frame-options'], 'SAMEORIGIN', name);
    t.equal(res.headers['referrer-policy'], 'no-referrer', name);
    t.equal(res.headers['x-powered-by'], undefined, name);
    t.equal(res.headers.server, undefined, name);
    t.notMatch(res.body, /\bat .+\.(?:ts|js):\d+|node_modules|fastify@|v\d+\.\d+\.\d+/, `${name}: no stack or version in the body`);
  }
});

t.test('API answers are never stored (they carry pupils’ data) and leave out the HTML-only headers; the pages send those', async (t) => {
  const { app, headers } = await testApp(t);
  const created = await app.inject({ method: 'POST', url: '/scim/v2/Users', headers, payload: { schemas: [USER], userName: 'stored.not@norra.example' } });
  t.equal(created.statusCode, 201);
  const id = created.json<{ id: string }>().id;
  const answers = [
    created,
    await app.inject({ method: 'GET', url: `/scim/v2/Users/${id}`, headers }),
    await app.inject({ method: 'GET', url: '/scim/v2/Users?filter=userName%20eq%20%22stored.not@norra.example%22', headers }),
    await app.inject({ method: 'GET', url: '/scim/v2/Users', headers: {} }),
    await app.inject({ method: 'GET', url: `/scim/v2/Users/${id}`, headers: { ...headers, 'if-none-match': created.headers.etag as string } }),
  ];
  t.equal(answers[4]?.statusCode, 304, 'a conditional read that matches answers 304, with the same headers');
  const documentOnly = ['cross-origin-opener-policy', 'origin-agent-cluster', 'x-dns-prefetch-control', 'x-download-options', 'x-permitted-cross-domain-policies', 'x-xss-protection'];
  for (const res of answers) {
    const name = `${res.statusCode} ${String(res.headers['content-type'])}`;
    t.equal(res.headers['cache-control'], 'no-store', `${name}: not stored`);
    t.equal(res.headers['cross-origin-resource-policy'], 'same-origin', `${name}: not embeddable cross-origin`);
    t.equal(res.headers['content-security-policy'], "default-src 'none';frame-ancestors 'none'", name);
    for (const header of documentOnly) t.equal(res.headers[header], undefined, `${name}: no ${header}`);
  }
  // Answered by fastify's router before any hook runs: a bad percent-encoding, a path parameter past its limit.
  for (const url of ['/scim/v2/Users/%E0%A4%A', `/scim/v2/Users/${'a'.repeat(MAX_PARAM_LENGTH + 1)}`]) {
    const res = await app.inject({ method: 'GET', url, headers });
    t.ok(res.statusCode === 400 || res.statusCode === 414, `${res.statusCode} from the router`);
    t.equal(res.headers['x-content-type-options'], 'nosniff', `${res.statusCode}: nosniff`);
    t.equal(res.headers['cache-control'], 'no-store', `${res.statusCode}: not stored`);
  }
  const guide = await app.inject({ method: 'GET', url: '/docs/entra-setup' });
  t.equal(guide.statusCode, 200);
  t.match(guide.headers['content-type'], /^text\/html/);
  t.equal(guide.headers['cache-control'], 'public, max-age=3600', 'the setup guide may be cached: it holds no personal data');
  t.match(
    guide.headers,
    {
      'cross-origin-opener-policy': 'same-origin',
      'origin-agent-cluster': '?1',
      'x-dns-prefetch-control': 'off',
      'x-download-options': 'noopen',
      'x-permitted-cross-domain-policies': 'none',
      'x-xss-protection': '0',
      'x-content-type-options': 'nosniff',
    },
    'the setup guide sends the document headers',
  );
  const status = await app.inject({ method: 'GET', url: '/status' });
  t.equal(status.statusCode, 401);
  t.match(status.headers['content-type'], /^text\/html/);
  t.equal(status.headers['cache-control'], 'no-store');
  t.equal(status.headers['cross-origin-opener-policy'], 'same-origin', 'the status pages send the document headers too');
  t.equal(status.headers['x-permitted-cross-domain-policies'], 'none');
});

t.test('headers past Node’s limit answer 431 with a SCIM body; text/plain is 415', async (t) => {
  const { app, headers } = await testApp(t);
  await app.listen({ port: 0, host: '127.0.0.1' });
  const { port } = app.server.address() as AddressInfo;
  const raw = await new Promise<string>((resolve, reject) => {
    const socket = connect(port, '127.0.0.1', () => {
      socket.write(`GET /scim/v2/Users HTTP/1.1\r\nHost: x\r\nX-Padding: ${'a'.repeat(20_000)}\r\n\r\n`);
    });
    let text = '';
    socket.on('data', (chunk: Buffer) => (text += chunk.toString()));
    socket.on('end', () => resolve(text));
    socket.on('error', reject);
  });
  t.match(raw, /^HTTP\/1\.1 431 /);
  t.match(raw, /Content-Type: application\/scim\+json/);
  t.match(raw, /\r\nx-content-type-options: nosniff\r\n/i, 'an answer written before any route runs carries the security headers too');
  t.match(raw, /\r\ncache-control: no-store\r\n/i);
  const body = JSON.parse(raw.slice(raw.indexOf('\r\n\r\n') + 4)) as Record<string, unknown>;
  t.match(body, { schemas: ['urn:ietf:params:scim:api:messages:2.0:Error'], status: '431', detail: /headers are larger/ });

  const plain = await app.inject({
    method: 'POST',
    url: '/scim/v2/Users',
    headers: { ...headers, 'content-type': 'text/plain' },
    payload: '{"userName":"plain@school.example"}',
  });
  t.equal(plain.statusCode, 415);
  t.match(plain.json(), { status: '415', detail: /application\/scim\+json/ });
});

t.test('the token endpoint limits each client address, read from X-Forwarded-For only when TRUST_PROXY says so', async (t) => {
  const send = (app: FastifyInstance, from: string) =>
    app.inject({
      method: 'POST',
      url: '/oauth/token',
      headers: { 'content-type': 'application/x-www-form-urlencoded', 'x-forwarded-for': from },
      payload: 'scope=scim',
    });
  const { app } = await testApp(t, { TRUST_PROXY: '127.0.0.1' });
  for (let i = 0; i < 60; i++) t.equal((await send(app, '203.0.113.7')).statusCode, 400);
  const limited = await send(app, '203.0.113.7');
  t.equal(limited.statusCode, 429);
  t.ok(Number(limited.headers['retry-after']) > 0);
  t.equal(limited.json<{ error: string }>().error, 'invalid_request');
  t.equal((await send(app, '203.0.113.8')).statusCode, 400, 'another school behind the same proxy is not limited');

  const direct = await testApp(t);
  for (let i = 0; i < 60; i++) await send(direct.app, `203.0.113.${i}`);
  t.equal((await send(direct.app, '203.0.113.99')).statusCode, 429, 'without TRUST_PROXY the header is ignored');
});
