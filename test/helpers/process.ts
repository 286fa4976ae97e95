// Runs the server as its own process, the way it runs in production, and
// keeps every line it logs for the test to read.
import { spawn, type ChildProcess } from 'node:child_process';
import { TEST_SECRET } from './app.js';

export interface ServerProcess {
  url: string;
  child: ChildProcess;
  /** Every line the process wrote to stdout and stderr. */
  lines: string[];
  /** Sends the signal and waits for the exit code. */
  stop: (signal?: NodeJS.Signals) => Promise<number | null>;
}

/** Starts src/server.ts of the checkout in `cwd` (this one by default); an undefined value leaves that variable out. */
export async function startServerProcess(env: Record<string, string | undefined>, options: { cwd?: string } = {}): Promise<ServerProcess> {
  const merged: Record<string, string | undefined> = {
    ...process.env,
    PORT: '0',
    LOG_LEVEL: 'info',
    JWT_SECRET: TEST_SECRET,
    PUBLIC_URL: 'https://scim.example.test',
    RATE_LIMIT_PER_SECOND: '0',
    ...env,
  };
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/server.ts'], {
    ...(options.cwd === undefined ? {} : { cwd: options.cwd }),
    env: Object.fromEntries(Object.entries(merged).filter((entry): entry is [string, string] => entry[1] !== undefined)),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const lines: string[] = [];
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  // Whole lines only: a chunk of a busy process may end in the middle of one.
  const collector = (): ((chunk: Buffer) => void) => {
    let rest = '';
    return (chunk) => {
      const parts = (rest + chunk.toString()).split('\n');
      rest = parts.pop() ?? '';
      lines.push(...parts.filter(Boolean));
    };
  };
  child.stderr.on('data', collector());
  const collect = collector();
  const url = await new Promise<string>((resolve, reject) => {
    child.stdout.on('data', (chunk: Buffer) => {
      const before = lines.length;
      collect(chunk);
      for (const line of lines.slice(before)) {
        if (!line.startsWith('{')) continue;
        const parsed = JSON.parse(line) as { msg?: string; url?: string };
        if (parsed.msg === 'portal-scim listening' && parsed.url) resolve(parsed.url);
      }
    });
    void exited.then((code) => reject(new Error(`the server exited early with ${String(code)}:\n${lines.join('\n')}`)));
  });
  return {
    url,
    child,
    lines,
    stop: async (signal = 'SIGTERM') => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      return exited;
    },
  };
}
