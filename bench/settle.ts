// How the benchmark takes a figure on a machine whose speed drifts: CPU per
// request of each server and of PostgreSQL, measurements in turns of both
// servers, ANALYZE between them, and the settling after the scale seed.
import { readdir, readFile } from 'node:fs/promises';
import { median, run, type Measured } from './driver.js';
import { addRow, fmt, log, type Cpu, type Report, type Row } from './report.js';
import { check, spread, turnRanges, userName, type Side, type Sizes, type Task } from './workloads.js';

/** CPU time a server process has used so far, microseconds. */
export type CpuProbe = () => Promise<number>;

/** What a measurement needs: where its row goes, how many requests at once, each server's CPU, and ANALYZE's pace. */
export interface Meter {
  report: Report;
  concurrency: number;
  cpu: { scim: CpuProbe; reference: CpuProbe };
  /** Runs ANALYZE when it is due (see main in run.ts); called only between measurements. */
  analyzeIfDue: () => Promise<void>;
}

/**
 * The CPU ticks one /proc/<pid>/stat line (proc(5)) counts for PostgreSQL:
 * its own user and system time and that of the children it has reaped
 * (cutime, cstime), or 0 for any other program. A connection that closes
 * while a figure is taken (a pool's idle connection, a seed's) leaves the
 * process table, but the postmaster reaps it and its time goes on in the
 * postmaster's children's time; without it the sum would fall and the
 * figure would be lost or too low.
 */
export function postgresTicks(stat: string): number {
  // The command name runs from the first '(' to the last ')': it may hold either.
  const close = stat.lastIndexOf(')');
  if (stat.slice(stat.indexOf('(') + 1, close) !== 'postgres') return 0;
  // utime, stime, cutime and cstime are the 14th to 17th fields, counted from the pid.
  const times = stat.slice(close + 2).split(' ').slice(11, 15).map(Number);
  const ticks = times.reduce((sum, t) => sum + t, 0);
  return times.length === 4 && Number.isFinite(ticks) ? ticks : 0;
}

/**
 * CPU time of every PostgreSQL process on this machine so far, with the
 * connections that have ended, microseconds (Linux /proc; NaN elsewhere or
 * for a remote server). Only the side being measured sends queries, so a
 * difference belongs to it.
 */
async function postgresCpu(): Promise<number> {
  let ticks = 0;
  try {
    for (const pid of await readdir('/proc')) {
      if (!/^\d+$/.test(pid)) continue;
      ticks += postgresTicks(await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => ''));
    }
  } catch {
    return NaN;
  }
  return ticks * 10_000; // USER_HZ is 100 on Linux
}

async function measuredCpu(meter: Meter, server: CpuProbe, work: () => Promise<Measured>): Promise<[Measured, Cpu]> {
  await meter.analyzeIfDue();
  const [s0, p0] = [await server(), await postgresCpu()];
  const measured = await work();
  const [s1, p1] = [await server(), await postgresCpu()];
  const n = Math.max(1, measured.count);
  // The sum grows (postgresTicks) unless a connection ended after the postmaster's
  // line was read and before its own: no figure then.
  return [measured, { server: (s1 - s0) / n, postgres: p1 >= p0 ? (p1 - p0) / n : NaN }];
}

/** A workload on the SCIM server, then on the reference: one row. */
export async function measure(meter: Meter, name: string, scim: () => Promise<Measured>, reference: () => Promise<Measured>): Promise<Row> {
  const [scimMeasured, scimCpu] = await measuredCpu(meter, meter.cpu.scim, scim);
  const [referenceMeasured, referenceCpu] = await measuredCpu(meter, meter.cpu.reference, reference);
  const row: Row = { name, scim: scimMeasured, reference: referenceMeasured, cpu: { scim: scimCpu, reference: referenceCpu } };
  addRow(meter.report, row);
  return row;
}

/**
 * Requests 0..n-1 of an operation on both servers, in turns: a sixth on the
 * SCIM server, the same sixth on the reference, and so on.
 */
export async function measureInTurns(meter: Meter, name: string, n: number, scim: Task, reference: Task): Promise<Row> {
  const c = meter.concurrency;
  return measureTurns(
    meter,
    name,
    turnRanges(n).map(([from, to]) => [() => run(to - from, c, (j) => scim(from + j)), () => run(to - from, c, (j) => reference(from + j))] as const),
  );
}

/**
 * A workload cut into turns, each run on the SCIM server and then on the
 * reference. This machine's speed drifts by tens of percent over seconds; in
 * turns, a drift falls on both sides instead of on whichever ran second. A
 * side's figures add up its turns.
 */
export async function measureTurns(meter: Meter, name: string, turns: readonly (readonly [() => Promise<Measured>, () => Promise<Measured>])[]): Promise<Row> {
  const sides = [0, 1].map(() => ({
    measured: { count: 0, errors: 0, wallMs: 0, latencies: [] as number[], failures: [] as string[] } satisfies Measured,
    cpu: { server: 0, postgres: 0 },
  }));
  const probes = [meter.cpu.scim, meter.cpu.reference];
  for (const turn of turns) {
    for (const [k, side] of sides.entries()) {
      const [m, cpu] = await measuredCpu(meter, probes[k] ?? (() => Promise.resolve(NaN)), turn[k] ?? (() => run(0, 1, async () => [])));
      side.measured.count += m.count;
      side.measured.errors += m.errors;
      side.measured.wallMs += m.wallMs;
      side.measured.latencies.push(...m.latencies);
      side.measured.failures.push(...m.failures.slice(0, Math.max(0, 5 - side.measured.failures.length)));
      side.cpu.server += cpu.server * m.count;
      side.cpu.postgres += cpu.postgres * m.count;
    }
  }
  const [s, r] = sides.map(({ measured, cpu }) => ({
    measured,
    cpu: { server: cpu.server / Math.max(1, measured.count), postgres: cpu.postgres / Math.max(1, measured.count) },
  }));
  if (!s || !r) throw new Error('two sides');
  const row: Row = { name, scim: s.measured, reference: r.measured, cpu: { scim: s.cpu, reference: r.cpu } };
  addRow(meter.report, row);
  return row;
}

/**
 * Waits for the machine and the servers to settle after the seed. For some
 * seconds after its minute of bulk writes, this machine ran both node servers
 * at up to four times their CPU per request (the reference's per lookup: 737
 * µs right after the seed, then 311, 269 and 200 µs, and about 180 µs from
 * the sixth round on; settling took 10 to 42 s over four runs). And a server
 * idle through the seed has had V8 drop compiled code, which it compiles
 * again on the next requests. Both would be charged to the million accounts.
 * So: rounds of unmeasured lookups on both servers, until each server's CPU
 * per lookup in its last three rounds is within 10% of their median, for at
 * most 90 seconds.
 */
export async function settle(sides: readonly { side: Side; cpu: CpuProbe }[], sizes: Sizes): Promise<void> {
  const started = performance.now();
  const costs = sides.map((): number[] => []);
  const round = 1000;
  const steady = (c: readonly number[]): boolean => {
    const last = c.slice(-3);
    const mid = median(last);
    return last.length === 3 && (!Number.isFinite(mid) || last.every((x) => Math.abs(x - mid) <= 0.1 * mid));
  };
  while (performance.now() - started < 90_000 && !costs.every(steady)) {
    for (const [k, { side, cpu }] of sides.entries()) {
      const before = await cpu();
      await run(round, sizes.concurrency, async (i) => [check(await side.findUser(userName('s', spread(i * 7, sizes.users))), 1, 'settling lookup')]);
      costs[k]?.push(((await cpu()) - before) / round);
    }
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
  const report = sides.map(({ side }, k) => `${side.label} ${(costs[k] ?? []).map((c) => fmt(c, 0)).join(', ')}`);
  log(`settled in ${fmt((performance.now() - started) / 1000)} s; CPU per lookup (µs): ${report.join('; ')}`);
}

/** The change feed's triggers (migrations 0007 and 0011), turned off and on between turns of the feed-cost measurement. */
const FEED_TRIGGERS = ['accounts', 'classes', 'class_memberships'].flatMap((table) => ['insert', 'update', 'delete'].map((event) => [table, `${table}_feed_${event}`] as const));

export async function setFeed(pool: { query: (text: string) => Promise<unknown> }, on: boolean): Promise<void> {
  for (const [table, trigger] of FEED_TRIGGERS) await pool.query(`ALTER TABLE ${table} ${on ? 'ENABLE' : 'DISABLE'} TRIGGER ${trigger}`);
}

/**
 * What the change feed costs the initial sync: the same workload for two
 * tenants on the one SCIM server, in alternating turns, one tenant's turns
 * with the feed's triggers on and the other's with them off (who goes first
 * alternates too). Between turns nothing else runs. Ratio on/off of the summed
 * wall times and of CPU per request. The feed is on again afterwards.
 */
export async function measureFeedCost(
  meter: Meter,
  pool: { query: (text: string) => Promise<unknown> },
  on: readonly (() => Promise<Measured>)[],
  off: readonly (() => Promise<Measured>)[],
): Promise<{ on: Measured; off: Measured; cpu: { on: Cpu; off: Cpu } }> {
  const total = () => ({ measured: { count: 0, errors: 0, wallMs: 0, latencies: [] as number[], failures: [] as string[] } satisfies Measured, cpu: { server: 0, postgres: 0 } });
  const sides = { on: total(), off: total() };
  try {
    for (const [i, turn] of on.entries()) {
      const order: ('on' | 'off')[] = i % 2 === 0 ? ['on', 'off'] : ['off', 'on'];
      for (const which of order) {
        await setFeed(pool, which === 'on');
        const work = which === 'on' ? turn : (off[i] ?? (() => run(0, 1, async () => [])));
        const [m, cpu] = await measuredCpu(meter, meter.cpu.scim, work);
        const side = sides[which];
        side.measured.count += m.count;
        side.measured.errors += m.errors;
        side.measured.wallMs += m.wallMs;
        side.measured.latencies.push(...m.latencies);
        side.cpu.server += cpu.server * m.count;
        side.cpu.postgres += cpu.postgres * m.count;
      }
    }
  } finally {
    await setFeed(pool, true);
  }
  const per = (side: ReturnType<typeof total>): Cpu => ({ server: side.cpu.server / Math.max(1, side.measured.count), postgres: side.cpu.postgres / Math.max(1, side.measured.count) });
  return { on: sides.on.measured, off: sides.off.measured, cpu: { on: per(sides.on), off: per(sides.off) } };
}
