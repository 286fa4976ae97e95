#!/usr/bin/env node
// The portal-scim command: runs the compiled CLI (npm run build, done by
// npm start), or the TypeScript source through tsx in a development checkout.
import { existsSync } from 'node:fs';

const compiled = new URL('../dist/src/cli.js', import.meta.url);
if (existsSync(compiled)) {
  const { cliMain } = await import(compiled.href);
  await cliMain();
} else {
  const { register } = await import('tsx/esm/api');
  register();
  const { cliMain } = await import(new URL('../src/cli.ts', import.meta.url).href);
  await cliMain();
}
