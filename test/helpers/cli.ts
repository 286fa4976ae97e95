// The admin CLI run in-process against a test's database, as an operator runs it.
import { runCli } from '../../src/cli.js';
import { testEnv, type TestApp } from './app.js';

/** Runs `portal-scim <argv>` against env's database: its exit code and everything it printed. */
export async function cli(env: TestApp, ...argv: string[]): Promise<{ code: number; out: string }> {
  const out: string[] = [];
  const code = await runCli(argv, { out: (s) => out.push(s), err: (s) => out.push(s), env: testEnv({ DATABASE_URL: env.database.url }) });
  return { code, out: out.join('\n') };
}
