// The benchmark's report: the rows of measured operations, the targets they
// are held to, and the formatting and printing of both tables and the log.
import { median, percentile, throughput, type Measured } from './driver.js';

/** CPU microseconds per request of a side's server and of PostgreSQL. */
export interface Cpu {
  server: number;
  postgres: number;
}

export interface Row {
  name: string;
  scim: Measured;
  reference: Measured;
  /** CPU microseconds per request of each side's server and of PostgreSQL, where measured. */
  cpu?: { scim: Cpu; reference: Cpu };
}

interface Target {
  name: string;
  figure: string;
  pass: boolean;
}

/** What a run has measured and judged so far, in the order it is printed. */
export interface Report {
  rows: Row[];
  targets: Target[];
}

export const createReport = (): Report => ({ rows: [], targets: [] });

/** Resident set size of a server process now, and the largest it has been since it started, bytes. */
export interface Rss {
  now: number;
  peak: number;
}

export const stats = (m: Measured) => ({ rps: throughput(m), p50: median(m.latencies), p99: percentile(m.latencies, 99) });
export const fmt = (x: number, digits = 1): string => (Number.isFinite(x) ? x.toFixed(digits) : '-');
const ratio = (a: number, b: number): string => `${fmt(a / b, 2)}x`;
export const mb = (bytes: number): string => `${fmt(bytes / 2 ** 20)} MB`;

export function log(text: string): void {
  process.stderr.write(`# ${text}\n`);
}

function logRow(row: Row): void {
  const s = stats(row.scim);
  const r = stats(row.reference);
  log(`${row.name}: ${fmt(s.rps, 0)} req/s (reference ${fmt(r.rps, 0)}), p99 ${fmt(s.p99)} ms (reference ${fmt(r.p99)})`);
  for (const failure of [...row.scim.failures, ...row.reference.failures]) log(`  failure: ${failure}`);
}

/** A measured operation: into the table, and into the log at once. */
export function addRow(report: Report, row: Row): void {
  report.rows.push(row);
  logRow(row);
}

function target(report: Report, name: string, figure: string, pass: boolean): void {
  report.targets.push({ name, figure, pass });
}

/** The throughput and p99 targets of an operation (>= 0.5x reference req/s, p99 <= 3x). */
function userTargets(report: Report, row: Row): void {
  const s = stats(row.scim);
  const r = stats(row.reference);
  target(report, `${row.name}: req/s >= 0.5x reference`, ratio(s.rps, r.rps), s.rps / r.rps >= 0.5 && row.scim.errors === 0);
  target(report, `${row.name}: p99 <= 3x reference`, ratio(s.p99, r.p99), s.p99 / r.p99 <= 3);
}

/** The rows and figures the targets judge; a part the run's sizes left out is undefined. */
export interface Figures {
  sync: Row;
  users: { post: Row; get: Row; patch: Row; delete: Row };
  /** Users of the tenant before the scale seed. */
  userCount: number;
  /** A batch added at 100 members and at the growing class's size, at each size it grew to. */
  growth: { batch: number; growMax: number; paired: readonly { size: number; small: Row; big: Row }[] };
  classLookup: Row | undefined;
  largeLookup: Row | undefined;
  /** Full reads of the class of `members` members. */
  full: { row: Row; members: number } | undefined;
  rss: { scim: Rss; reference: Rss };
  scale: { get: Row | undefined; post: Row | undefined };
  /** The initial sync of two more tenants, with the change feed on and off in alternating turns (measureFeedCost). */
  feed: { on: Measured; off: Measured; cpu: { on: Cpu; off: Cpu } } | undefined;
}

/** Judges the run's figures against the targets the README quotes. */
export function setTargets(report: Report, f: Figures): void {
  const { sync } = f;
  const syncRatio = sync.scim.wallMs / sync.reference.wallMs;
  target(
    report,
    'initial sync wall time <= 2.0x reference, no errors',
    `${fmt(sync.scim.wallMs / 1000)} s / ${fmt(sync.reference.wallMs / 1000)} s = ${fmt(syncRatio, 2)}x, ${sync.scim.errors} errors`,
    syncRatio <= 2 && sync.scim.errors === 0,
  );
  for (const row of [f.users.post, f.users.get, f.users.patch, f.users.delete]) userTargets(report, row);
  const { batch, growMax, paired } = f.growth;
  const last = paired.find((p) => p.size === growMax) ?? paired[paired.length - 1];
  if (last) {
    const costRatio = median(last.big.scim.latencies) / median(last.small.scim.latencies);
    target(
      report,
      `add ${batch} members: at ${last.size} within 20% of at 100`,
      `${fmt(median(last.big.scim.latencies))} ms / ${fmt(median(last.small.scim.latencies))} ms = ${fmt(costRatio, 2)}x`,
      Math.abs(costRatio - 1) <= 0.2,
    );
    for (const row of [last.small, last.big]) {
      const r = median(row.reference.latencies) / median(row.scim.latencies);
      target(report, `${row.name.replace('PATCH /Groups ', '')}: >= 0.5x reference`, `${fmt(r, 2)}x`, r >= 0.5);
    }
  }
  for (const row of [f.classLookup, f.largeLookup]) {
    if (!row) continue;
    const r = stats(row.scim).rps / stats(row.reference).rps;
    target(report, `${row.name.trim()}: req/s >= 0.5x reference`, `${fmt(r, 2)}x`, r >= 0.5 && row.scim.errors === 0);
  }
  if (f.full) {
    const { row, members } = f.full;
    target(report, `full GET of the ${members}-member class < 50 ms (p50)`, `${fmt(median(row.scim.latencies))} ms (p99 ${fmt(percentile(row.scim.latencies, 99))} ms)`, median(row.scim.latencies) < 50);
  }
  // The RSS of one moment depends on when V8 last collected; the largest
  // it has been (from the server's start to the end of the sync) does not.
  const { scim: rss, reference: referenceRss } = f.rss;
  target(
    report,
    'server RSS after initial sync <= 150 MB (the largest so far)',
    `${mb(rss.peak)}, now ${mb(rss.now)} (reference ${mb(referenceRss.peak)}, ${mb(referenceRss.now)})`,
    rss.peak <= 150 * 2 ** 20,
  );
  if (f.feed) {
    const { on, off, cpu } = f.feed;
    const r = on.wallMs / off.wallMs;
    target(
      report,
      'the change feed adds <= 10% to our initial sync (on/off, alternating turns)',
      `${fmt(on.wallMs / 1000)} s / ${fmt(off.wallMs / 1000)} s = ${fmt(r, 2)}x; CPU per request: server ${ratio(cpu.on.server, cpu.off.server)}, PostgreSQL ${ratio(cpu.on.postgres, cpu.off.postgres)}`,
      r <= 1.1 && on.errors === 0 && off.errors === 0,
    );
  }
  for (const [row, before] of [
    [f.scale.get, f.users.get],
    [f.scale.post, f.users.post],
  ] as const) {
    if (!row) continue;
    const r = stats(before.scim).rps / stats(row.scim).rps;
    target(report, `${row.name}: req/s within 1.5x of ${f.userCount} accounts`, `${fmt(stats(row.scim).rps, 0)} vs ${fmt(stats(before.scim).rps, 0)} req/s = ${fmt(r, 2)}x`, r <= 1.5 && row.scim.errors === 0);
  }
}

function pad(cells: string[][]): string {
  const widths = cells[0]?.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? '').length))) ?? [];
  return cells.map((r) => r.map((cell, i) => (i === 0 ? cell.padEnd(widths[i] ?? 0) : cell.padStart(widths[i] ?? 0))).join('  ')).join('\n');
}

export function printRows(report: Report): void {
  const header = ['operation', 'req/s', 'x ref', 'p50 ms', 'x ref', 'p99 ms', 'x ref', 'ref req/s', 'ref p50', 'ref p99', 'errors', 'cpu us', 'x ref', 'pg us', 'x ref'];
  const body = report.rows.map(({ name, scim, reference, cpu }) => {
    const s = stats(scim);
    const r = stats(reference);
    const cpuCells = cpu
      ? [fmt(cpu.scim.server, 0), ratio(cpu.scim.server, cpu.reference.server), fmt(cpu.scim.postgres, 0), ratio(cpu.scim.postgres, cpu.reference.postgres)]
      : ['', '', '', ''];
    return [name, fmt(s.rps, 0), ratio(s.rps, r.rps), fmt(s.p50), ratio(s.p50, r.p50), fmt(s.p99), ratio(s.p99, r.p99), fmt(r.rps, 0), fmt(r.p50), fmt(r.p99), String(scim.errors + reference.errors), ...cpuCells];
  });
  process.stdout.write(`\n${pad([header, ...body])}\n`);
  process.stdout.write('cpu us: CPU microseconds per request of the server process; pg us: of all PostgreSQL processes (local servers only)\n');
}

/** The targets table and how many were met; `wholeRunMs` is the run's wall time. */
export function printTargets(report: Report, wholeRunMs: number): void {
  const { targets } = report;
  process.stdout.write(`${pad([['target', 'figure', 'result'], ...targets.map((t) => [t.name, t.figure, t.pass ? 'PASS' : 'MISS'])])}\n`);
  process.stdout.write(`\n${targets.filter((t) => t.pass).length} of ${targets.length} targets met; whole run ${fmt(wholeRunMs / 1000, 0)} s\n`);
}
