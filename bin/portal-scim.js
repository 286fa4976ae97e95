#!/usr/bin/env node
// The portal-scim command. In a checkout with dev dependencies it runs the
// TypeScript source through tsx, so it never runs a stale build; an install
// without them (npm ci --omit=dev, after npm run build) runs dist/.
import { existsSync } from 'node:fs';

const source = new URL('../src/cli.ts', import.meta.url);
const compiled = new URL('../dist/src/cli.js', import.meta.url);

async function tsx() {
  try {
    return await import('tsx/esm/api');
  } catch {
    return undefined;
  }
}

const loader = existsSync(source) ? await tsx() : undefined;
let cli;
if (loader) {
  loader.register();
  cli = await import(source.href);
} else if (existsSync(compiled)) {
  cli = await import(compiled.href);
} else {
  process.stderr.write('portal-scim: run "npm run build" first\n');
  process.exit(1);
}
await cli.cliMain();
