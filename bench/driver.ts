// The load driver of the benchmark: an HTTP client over keep-alive
// connections, a bounded-concurrency runner and latency statistics. Loops are
// bounded by a request count, never by time, so a run does the same work on
// any machine.
import http from 'node:http';

export interface Reply {
  status: number;
  body: string;
  ms: number;
}

export class Client {
  private readonly agent = new http.Agent({ keepAlive: true, maxSockets: 64 });
  private readonly url: URL;

  constructor(
    base: string,
    private readonly headers: Record<string, string> = {},
  ) {
    this.url = new URL(base);
  }

  send(method: string, path: string, body?: unknown): Promise<Reply> {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const started = performance.now();
    return new Promise((resolve, reject) => {
      const request = http.request(
        {
          agent: this.agent,
          host: this.url.hostname,
          port: this.url.port,
          method,
          path: `${this.url.pathname.replace(/\/$/, '')}${path}`,
          headers: {
            ...this.headers,
            ...(payload === undefined ? {} : { 'content-type': 'application/scim+json', 'content-length': Buffer.byteLength(payload) }),
          },
        },
        (response) => {
          const chunks: Buffer[] = [];
          response.on('data', (chunk: Buffer) => chunks.push(chunk));
          response.on('end', () => resolve({ status: response.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8'), ms: performance.now() - started }));
          response.on('error', reject);
        },
      );
      request.on('error', reject);
      request.end(payload);
    });
  }

  close(): void {
    this.agent.destroy();
  }
}

export interface Measured {
  count: number;
  errors: number;
  /** Wall time of the whole run, milliseconds. */
  wallMs: number;
  latencies: number[];
  /** The first few failures, for the report. */
  failures: string[];
}

/**
 * Runs task(0..count-1) with at most `concurrency` in flight. A task returns
 * the replies it made (Entra's lookup-then-create is one task of two
 * requests); a reply whose status is not expected counts as an error.
 */
export async function run(count: number, concurrency: number, task: (i: number) => Promise<Reply[]>): Promise<Measured> {
  const latencies: number[] = [];
  const failures: string[] = [];
  let errors = 0;
  let next = 0;
  const started = performance.now();
  const worker = async (): Promise<void> => {
    while (next < count) {
      const i = next++;
      try {
        for (const reply of await task(i)) latencies.push(reply.ms);
      } catch (error) {
        errors++;
        if (failures.length < 5) failures.push(error instanceof Error ? error.message : String(error));
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, worker));
  return { count: latencies.length, errors, wallMs: performance.now() - started, latencies, failures };
}

/** Fails the task when the status is not the expected one. */
export function expect(reply: Reply, ...statuses: number[]): Reply {
  if (!statuses.includes(reply.status)) throw new Error(`status ${reply.status}: ${reply.body.slice(0, 200)}`);
  return reply;
}

export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))] ?? NaN;
}

export const median = (values: readonly number[]): number => percentile(values, 50);

export function throughput(m: Measured): number {
  return (m.count / m.wallMs) * 1000;
}
