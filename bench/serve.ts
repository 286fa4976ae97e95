// One server of the benchmark in a process of its own, so its memory is
// measured alone and the load driver never shares its event loop. bench/run.ts
// compiles it (with src/) to .data/bench/build and starts
//   node .data/bench/build/bench/serve.js scim        the real server (startServer)
//   node .data/bench/build/bench/serve.js reference   the reference server
// Configuration comes from the environment (DATABASE_URL, JWT_SECRET, ...).
// The process reports its URL over IPC, answers {type: 'rss'} with its
// resident set size now and at its largest, and {type: 'cpu'} with its CPU
// time so far, and stops when the parent disconnects.
import { getHeapSpaceStatistics } from 'node:v8';
import { loadConfig } from '../src/config.js';

// Each kind loads only its own code, so the reference's memory holds no SCIM server.

/** Where the memory is, for the log: the V8 heap's spaces (used of committed) and memory outside it, MB. */
export interface MemoryDetail {
  spaces: Record<string, { usedMb: number; committedMb: number }>;
  externalMb: number;
}

export type ServerMessage = { type: 'ready'; url: string } | { type: 'rss'; rss: number; peakRss: number; detail: MemoryDetail } | { type: 'cpu'; micros: number };

const kind = process.argv[2];
const send = (message: ServerMessage): void => {
  process.send?.(message);
};

let close: () => Promise<void>;
if (kind === 'scim') {
  const [{ createLogger }, { startServer }] = await Promise.all([import('../src/logger.js'), import('../src/server.js')]);
  const config = loadConfig(process.env);
  const server = await startServer(config, createLogger(config.logLevel));
  close = () => server.close();
  send({ type: 'ready', url: server.url });
} else if (kind === 'reference') {
  const [{ default: pg }, { buildReferenceApp }] = await Promise.all([import('pg'), import('./reference.js')]);
  const config = loadConfig(process.env);
  const pool = new pg.Pool({ connectionString: config.databaseUrl, max: config.databasePoolSize });
  const app = buildReferenceApp(pool);
  const url = await app.listen({ port: config.port, host: config.host });
  close = async () => {
    await app.close();
    await pool.end();
  };
  send({ type: 'ready', url });
} else {
  throw new Error('usage: bench/serve.ts scim|reference');
}

process.on('message', (message: { type?: string }) => {
  if (message.type === 'rss') {
    const usage = process.memoryUsage();
    const mb = (bytes: number): number => Math.round(bytes / 2 ** 20);
    const spaces = Object.fromEntries(
      getHeapSpaceStatistics()
        .filter((space) => space.physical_space_size > 2 ** 20)
        .map((space) => [space.space_name.replace(/_space$/, ''), { usedMb: mb(space.space_used_size), committedMb: mb(space.physical_space_size) }]),
    );
    // maxRSS: the process's largest resident set so far (getrusage), in KiB.
    send({ type: 'rss', rss: usage.rss, peakRss: process.resourceUsage().maxRSS * 1024, detail: { spaces, externalMb: mb(usage.external) } });
  } else if (message.type === 'cpu') {
    const { user, system } = process.cpuUsage();
    send({ type: 'cpu', micros: user + system });
  }
});
process.on('disconnect', () => {
  void close().finally(() => process.exit(0));
});
