// What a client that does not read, or sends slowly, can make the server
// hold: pipelined requests whose answers pile up close their connection, per
// connection and however many connections do it at once, and a request whose
// headers or body trickle in is answered 408 and closed. Meanwhile the server
// keeps answering everyone else, and its memory stays under a stated ceiling.
import { readFile } from 'node:fs/promises';
import { connect, type AddressInfo, type Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import t from 'tap';
import { MAX_PIPELINED_REQUESTS } from '../src/plugins/connection-limits.js';
import { testApp } from './helpers/app.js';
import { testDatabase } from './helpers/database.js';
import { startServerProcess } from './helpers/process.js';

/** The server's largest resident set so far, in MiB (Linux). */
async function peakMemoryMiB(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  return Number(/^VmHWM:\s+(\d+) kB/m.exec(status)?.[1]) / 1024;
}

interface RawClient {
  socket: Socket;
  /** Everything received once reading is resumed. */
  received: () => string;
  closed: Promise<void>;
}

/** A raw connection that sends `text` and, when told to pause, reads nothing. */
function rawClient(port: number, text: string, options: { read: boolean }): RawClient {
  let received = '';
  const socket = connect(port, '127.0.0.1', () => {
    socket.write(text);
    if (!options.read) socket.pause();
  });
  socket.on('data', (chunk: Buffer) => (received += chunk.toString('latin1')));
  socket.on('error', () => undefined);
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  return { socket, received: () => received, closed };
}

const answersIn = (text: string): number => text.match(/HTTP\/1\.1 \d{3} /g)?.length ?? 0;

async function within<T>(ms: number, promise: Promise<T>): Promise<T | 'timed out'> {
  return Promise.race([promise, sleep(ms, 'timed out' as const)]);
}

t.test('200 connections pipelining 1,000 requests each without reading: closed, others answered, memory bounded', async (t) => {
  // Unbounded, the queued answers took the server past 580 MB within seconds,
  // until V8 aborted at npm start's heap limit. Bounded, what remains is the
  // parse of the chunks already received (Node parses a whole chunk before a
  // connection can be closed): 210-470 MiB at its highest on a loaded 2-core
  // machine, varying with how the 200 connections' chunks interleave.
  const CEILING_MIB = 560;
  const database = await testDatabase(t);
  // npm start's node flags: the same heap limit as in production.
  const server = await startServerProcess({
    DATABASE_URL: database.url,
    NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ''} --max-semi-space-size=8 --max-old-space-size=512`,
  });
  t.teardown(() => server.stop());
  const pid = server.child.pid ?? 0;
  const { port } = new URL(server.url);
  const before = await peakMemoryMiB(pid);

  const requests = 'GET /openapi.yaml HTTP/1.1\r\nHost: scim.example.test\r\n\r\n'.repeat(1000);
  const attackers = Array.from({ length: 200 }, () => rawClient(Number(port), requests, { read: false }));

  // Another client keeps being answered while the flood is handled.
  let health: number | string = 'no answer';
  for (let i = 0; i < 60 && health !== 200; i++) {
    health = await fetch(`${server.url}/healthz`, { signal: AbortSignal.timeout(5000) }).then(
      (res) => res.status,
      (error: unknown) => String(error),
    );
  }
  t.equal(health, 200, 'another client gets its answer');

  // Reading now shows what each attacker got before the server closed it.
  for (const attacker of attackers) attacker.socket.resume();
  const closedAll = await within(30_000, Promise.all(attackers.map((a) => a.closed)));
  t.not(closedAll, 'timed out', 'the server closed every attacking connection');
  const answered = attackers.map((a) => answersIn(a.received()));
  t.ok(
    answered.every((n) => n <= MAX_PIPELINED_REQUESTS),
    `each got at most ${MAX_PIPELINED_REQUESTS} of its 1,000 answers (most: ${Math.max(...answered)})`,
  );

  const peak = await peakMemoryMiB(pid);
  t.comment(`server resident memory: ${before.toFixed(0)} MiB before, ${peak.toFixed(0)} MiB at most under the attack (ceiling ${CEILING_MIB} MiB)`);
  t.ok(peak < CEILING_MIB, `the server's resident memory stayed under ${CEILING_MIB} MiB (${peak.toFixed(0)} MiB)`);
  // Once the flood is handled (a loaded machine may shed load with 503 for a moment), it serves again.
  let after: number | string = 'no answer';
  for (let i = 0; i < 60 && after !== 200; i++) {
    after = await fetch(`${server.url}/openapi.yaml`, { signal: AbortSignal.timeout(5000) }).then(
      (res) => res.status,
      (error: unknown) => String(error),
    );
    if (after !== 200) await new Promise((r) => setTimeout(r, 500));
  }
  t.equal(after, 200, 'and it still serves');
  t.equal(server.child.exitCode, null, 'the server process is still running');
});

t.test('answers piling up past the connection limit close the connection; a pipelining client within it is served', async (t) => {
  const { app } = await testApp(t, { CONNECTION_OUTPUT_LIMIT_BYTES: '65536' });
  await app.listen({ port: 0, host: '127.0.0.1' });
  const { port } = app.server.address() as AddressInfo;

  // 31 answers of the 24 kB document: under the request limit, over 64 kB of answers.
  const heavy = rawClient(port, 'GET /openapi.yaml HTTP/1.1\r\nHost: x\r\n\r\n'.repeat(31), { read: false });
  await sleep(500);
  heavy.socket.resume();
  t.not(await within(10_000, heavy.closed), 'timed out', 'the connection is closed');
  t.ok(answersIn(heavy.received()) < 31, `it got ${answersIn(heavy.received())} of its 31 answers`);

  const light = rawClient(port, 'GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n'.repeat(10), { read: true });
  for (let i = 0; i < 100 && answersIn(light.received()) < 10; i++) await sleep(50);
  t.equal(answersIn(light.received()), 10, 'ten pipelined small requests get their ten answers');
  t.notOk(light.socket.destroyed, 'and the connection stays open');
  light.socket.destroy();

  const past = rawClient(port, 'GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n'.repeat(MAX_PIPELINED_REQUESTS + 10), { read: true });
  t.not(await within(10_000, past.closed), 'timed out', `more than ${MAX_PIPELINED_REQUESTS} requests ahead of their answers close the connection`);
});

t.test('past MAX_CONNECTIONS a new connection is closed at once; the open ones are served, and a freed place is taken again', async (t) => {
  const { app } = await testApp(t, { MAX_CONNECTIONS: '16' });
  await app.listen({ port: 0, host: '127.0.0.1' });
  const { port } = app.server.address() as AddressInfo;
  const request = 'GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n';
  const answered = async (client: RawClient, answers: number) => {
    for (let i = 0; i < 200 && answersIn(client.received()) < answers; i++) await sleep(25);
    return answersIn(client.received());
  };

  // Sixteen idle keep-alive connections, each answered once.
  const open: RawClient[] = [];
  for (let i = 0; i < 16; i++) {
    const client = rawClient(port, request, { read: true });
    t.equal(await answered(client, 1), 1, `connection ${i + 1} is served`);
    open.push(client);
  }
  const refused = rawClient(port, request, { read: true });
  t.not(await within(10_000, refused.closed), 'timed out', 'the seventeenth is closed');
  t.equal(answersIn(refused.received()), 0, 'with no answer');

  const first = open[0] as RawClient;
  first.socket.write(request);
  t.equal(await answered(first, 2), 2, 'an open connection is still served');
  first.socket.destroy();
  await first.closed;
  let again: RawClient | undefined;
  for (let i = 0; i < 40 && again === undefined; i++) {
    const client = rawClient(port, request, { read: true });
    if ((await answered(client, 1)) === 1) again = client;
    else await sleep(50);
  }
  t.ok(again, 'a connection closed, a new one is served');
  for (const client of [...open, again]) client?.socket.destroy();
});

t.test('a request whose headers or body trickle in is answered 408 and closed', async (t) => {
  const { app } = await testApp(t, { REQUEST_TIMEOUT_MS: '1000' });
  await app.listen({ port: 0, host: '127.0.0.1' });
  const { port } = app.server.address() as AddressInfo;

  const trickle = async (head: string, byte: string): Promise<{ text: string; sent: number; closed: boolean }> => {
    const client = rawClient(port, head, { read: true });
    let sent = 0;
    const timer = setInterval(() => {
      if (client.socket.destroyed) return;
      client.socket.write(byte);
      sent += 1;
    }, 200);
    // A byte every 200 ms: the whole request would take minutes.
    const closed = (await within(20_000, client.closed)) !== 'timed out';
    clearInterval(timer);
    client.socket.destroy();
    return { text: client.received(), sent, closed };
  };

  for (const [what, head, byte] of [
    ['a body', 'POST /oauth/token HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\n', 'a'],
    ['headers', 'GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ', 'b'],
  ] as const) {
    const { text, sent, closed } = await trickle(head, byte);
    t.ok(closed, `${what} sent a byte at a time: the server closes the connection`);
    t.ok(sent < 100, `${what}: long before the request is complete (${sent} bytes sent)`);
    t.match(text, /^HTTP\/1\.1 408 Request Timeout\r\n/, `${what}: answered 408`);
    t.match(text, /Content-Type: application\/scim\+json/);
    const body = JSON.parse(text.slice(text.indexOf('\r\n\r\n') + 4)) as Record<string, unknown>;
    t.match(body, { schemas: ['urn:ietf:params:scim:api:messages:2.0:Error'], status: '408', detail: /too long/ });
  }
  t.equal((await app.inject({ method: 'GET', url: '/healthz' })).statusCode, 200, 'the server goes on');
});
