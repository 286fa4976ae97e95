// Forcing an order of concurrent writes in a test: a transaction of the
// test's own holds a lock, and each wait is identified by who blocks whom
// (pg_blocking_pids), never left to timing.
import pg from 'pg';
import type { Test } from 'tap';
import type { TestApp } from './app.js';

/** A connection of the test's own, beside the app's pool (which the writes under test may fill), closed at the end. */
export async function connection(t: Test, env: TestApp): Promise<pg.Client> {
  const connected = new pg.Client({ connectionString: env.database.url });
  await connected.connect();
  t.teardown(() => connected.end());
  return connected;
}

/** Who blocks whom in this test's database: the backends that `pid` blocks, running a statement that matches `like`. */
export function watcher(watch: pg.Client) {
  return async (pid: number, like = '%'): Promise<number[]> => {
    const { rows } = await watch.query<{ pid: number }>(
      `SELECT pid FROM pg_stat_activity
        WHERE datname = current_database() AND $1 = ANY (pg_blocking_pids(pid)) AND query LIKE $2
        ORDER BY pid`,
      [pid, like],
    );
    return rows.map((r) => r.pid);
  };
}

/** Polls until `count` backends are blocked by `pid`, or `done` settles first; their pids, or undefined. */
export async function untilBlocked(
  blockedBy: ReturnType<typeof watcher>,
  pid: number,
  count: number,
  done: Promise<unknown>,
  like?: string,
): Promise<number[] | undefined> {
  let settled = false;
  void done.then(
    () => (settled = true),
    () => (settled = true),
  );
  for (let i = 0; i < 400 && !settled; i++) {
    const pids = await blockedBy(pid, like);
    if (pids.length >= count) return pids;
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
  return undefined;
}

/** A connection of the test with a transaction open, and its backend's pid. */
export async function holder(t: Test, env: TestApp): Promise<{ hold: pg.Client; pid: number }> {
  const hold = await connection(t, env);
  const { rows } = await hold.query<{ pid: number }>('SELECT pg_backend_pid() AS pid');
  await hold.query('BEGIN');
  return { hold, pid: rows[0]?.pid ?? -1 };
}
