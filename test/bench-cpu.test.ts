// The benchmark's CPU figure for PostgreSQL (bench/settle.ts): read from
// /proc, it counts the time of connections that closed meanwhile.
import t from 'tap';
import { postgresTicks } from '../bench/settle.js';

/** A /proc/<pid>/stat line (proc(5)) with these times; the other fields as Linux writes them. */
function stat(pid: number, comm: string, ppid: number, utime: number, stime: number, cutime = 0, cstime = 0): string {
  return `${pid} (${comm}) S ${ppid} ${pid} ${pid} 0 -1 4194560 1200 0 0 0 ${utime} ${stime} ${cutime} ${cstime} 20 0 1 0 5000 230000000 4000 18446744073709551615 1 1 0 0 0 0 0 16777216 134234626 0 0 0 17 1 0 0 0 0 0`;
}

t.test('a PostgreSQL process counts its own time and its reaped children’s', async (t) => {
  t.equal(postgresTicks(stat(100, 'postgres', 1, 7, 3, 40, 20)), 70, 'the postmaster: its own time and the connections it reaped');
  t.equal(postgresTicks(stat(101, 'postgres', 100, 12, 5)), 17, 'a connection');
  t.equal(postgresTicks(stat(102, 'node', 1, 900, 100, 5, 5)), 0, 'another program');
  t.equal(postgresTicks(stat(103, 'postgres (x)', 1, 900, 100)), 0, 'a command name that only contains it');
  t.equal(postgresTicks(stat(104, 'x) (postgres', 1, 1, 1)), 0, 'a command name with parentheses that ends like it');
  t.equal(postgresTicks(stat(106, '(postgres)', 1, 1, 1)), 0, 'a command name that wraps it');
  t.equal(postgresTicks(''), 0, 'a process that ended before its line was read');
  t.equal(postgresTicks('105 (postgres) Z'), 0, 'a cut line');
});

t.test('a connection that closes between two readings keeps its time in the sum', async (t) => {
  const sum = (lines: string[]) => lines.reduce((total, line) => total + postgresTicks(line), 0);
  const before = sum([stat(100, 'postgres', 1, 7, 3, 40, 20), stat(101, 'postgres', 100, 12, 5), stat(102, 'postgres', 100, 30, 10)]);
  // 101 worked 8 more ticks and closed; the postmaster reaped it; 102 worked 5 more.
  const after = sum([stat(100, 'postgres', 1, 7, 3, 40 + 20, 20 + 5), stat(102, 'postgres', 100, 35, 10)]);
  t.equal(after - before, 8 + 5, 'the work of both connections, the closed one included');
});
