// Keeps docs/entra-setup.md true. Every ```sh block of the guide runs, in
// order and exactly as written, in one bash session against a fresh database,
// data directory and running server (other languages, such as ```text for
// Entra expressions, are not run). And its troubleshooting table names every
// error message the server's source can send, and no message it cannot.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import ts from 'typescript';
import { testDatabase } from './helpers/database.js';

const root = fileURLToPath(new URL('..', import.meta.url));
const GUIDE = path.join(root, 'docs/entra-setup.md');

// ---------------------------------------------------------------------------
// Error messages in the source

/**
 * Functions whose argument at this position is the message a client receives:
 * the SCIM error helpers of src/errors.ts, the local helpers that wrap them,
 * and the OAuth token endpoint's error.
 */
const MESSAGE_ARGUMENT: Readonly<Record<string, number>> = {
  ScimError: 2,
  badRequest: 1,
  notFound: 0,
  conflict: 0,
  preconditionFailed: 0,
  unavailable: 0,
  unauthorized: 0,
  invalid: 0,
  OAuthError: 2,
  invalidRequest: 0,
};

const PLACEHOLDER = '{}';

async function sourceFiles(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { withFileTypes: true, recursive: true });
  return entries
    .filter((e) => e.isFile() && e.name.endsWith('.ts') && !e.name.endsWith('.d.ts'))
    .map((e) => path.join(e.parentPath, e.name))
    .sort();
}

/**
 * The texts an expression can evaluate to, with {} for every part only known
 * at run time; undefined when the whole message comes from elsewhere (a
 * parameter, another error's message).
 */
function messageTexts(checker: ts.TypeChecker, node: ts.Expression, depth = 0): string[] | undefined {
  if (depth > 8) return undefined;
  if (ts.isStringLiteral(node) || ts.isNoSubstitutionTemplateLiteral(node)) return [node.text];
  if (ts.isNumericLiteral(node)) return [String(Number(node.text.replace(/_/g, '')))];
  if (ts.isParenthesizedExpression(node)) return messageTexts(checker, node.expression, depth + 1);
  if (ts.isConditionalExpression(node)) {
    const texts = [node.whenTrue, node.whenFalse].map((branch) => messageTexts(checker, branch, depth + 1) ?? [PLACEHOLDER]);
    return texts.flat();
  }
  if (ts.isTemplateExpression(node)) {
    let texts = [node.head.text];
    for (const span of node.templateSpans) {
      const inner = constantText(checker, span.expression, depth) ?? PLACEHOLDER;
      texts = texts.map((text) => text + inner + span.literal.text);
    }
    return texts;
  }
  if (ts.isBinaryExpression(node) && node.operatorToken.kind === ts.SyntaxKind.PlusToken) {
    const left = messageTexts(checker, node.left, depth + 1) ?? [PLACEHOLDER];
    const right = messageTexts(checker, node.right, depth + 1) ?? [PLACEHOLDER];
    return left.flatMap((l) => right.map((r) => l + r));
  }
  if (ts.isIdentifier(node)) {
    let symbol = checker.getSymbolAtLocation(node);
    if (symbol && symbol.flags & ts.SymbolFlags.Alias) symbol = checker.getAliasedSymbol(symbol);
    const declaration = symbol?.valueDeclaration;
    if (declaration && ts.isVariableDeclaration(declaration) && declaration.initializer) {
      return messageTexts(checker, declaration.initializer, depth + 1);
    }
  }
  return undefined;
}

/** A constant's one text (an imported limit, a schema URN), for a ${...} inside a message. */
function constantText(checker: ts.TypeChecker, node: ts.Expression, depth: number): string | undefined {
  if (!ts.isIdentifier(node)) return undefined;
  const texts = messageTexts(checker, node, depth + 1);
  return texts?.length === 1 && !texts[0]?.includes(PLACEHOLDER) ? texts[0] : undefined;
}

interface SourceMessage {
  text: string;
  where: string;
}

async function sourceMessages(): Promise<SourceMessage[]> {
  const files = await sourceFiles(path.join(root, 'src'));
  const program = ts.createProgram(files, {
    target: ts.ScriptTarget.ES2023,
    module: ts.ModuleKind.NodeNext,
    moduleResolution: ts.ModuleResolutionKind.NodeNext,
    noEmit: true,
    skipLibCheck: true,
  });
  const checker = program.getTypeChecker();
  const found = new Map<string, SourceMessage>();
  for (const file of files) {
    const source = program.getSourceFile(file);
    if (!source) throw new Error(`${file} was not read`);
    const visit = (node: ts.Node): void => {
      if ((ts.isCallExpression(node) || ts.isNewExpression(node)) && ts.isIdentifier(node.expression)) {
        const position = MESSAGE_ARGUMENT[node.expression.text];
        const argument = position === undefined ? undefined : node.arguments?.[position];
        const texts = argument ? messageTexts(checker, argument) : undefined;
        for (const text of texts ?? []) {
          if (text === PLACEHOLDER) continue;
          const { line } = source.getLineAndCharacterOfPosition(node.getStart(source));
          found.set(normalise(text), { text, where: `${path.relative(root, file)}:${line + 1}` });
        }
      }
      ts.forEachChild(node, visit);
    };
    visit(source);
  }
  return [...found.values()];
}

/** Placeholders compare equal however they are written: ${...} in source, {name} in the guide. */
function normalise(message: string): string {
  return message.replace(/\{[^{}]*\}/g, PLACEHOLDER).replace(/\s+/g, ' ').trim();
}

// ---------------------------------------------------------------------------
// The guide

function section(markdown: string, heading: RegExp): string {
  const lines = markdown.split('\n');
  const start = lines.findIndex((l) => /^#{2,3} /.test(l) && heading.test(l));
  if (start < 0) return '';
  const level = /^#+/.exec(lines[start] ?? '')?.[0].length ?? 2;
  const end = lines.findIndex((l, i) => i > start && new RegExp(`^#{1,${level}} `).test(l));
  return lines.slice(start + 1, end < 0 ? undefined : end).join('\n');
}

/** The messages in the first column of the troubleshooting tables, each in `backticks`. */
function tableMessages(markdown: string): string[] {
  const lines = section(markdown, /troubleshooting/i).split('\n');
  const separator = (line: string | undefined): boolean => line !== undefined && /^\|(\s*:?-+:?\s*\|)+\s*$/.test(line);
  // Body rows: table rows that are neither a separator nor the header above one.
  const rows = lines.filter((line, i) => line.startsWith('|') && !separator(line) && !separator(lines[i + 1]));
  return rows.flatMap((row) => {
    const first = row.split('|')[1] ?? '';
    return [...first.matchAll(/`([^`]+)`/g)].map((m) => m[1] ?? '');
  });
}

/** The language of every fenced code block, in order ('' when none is given). */
function fenceLanguages(markdown: string): string[] {
  const languages: string[] = [];
  let open = false;
  for (const line of markdown.split('\n')) {
    const fence = /^\s*```\s*(\S*)\s*$/.exec(line);
    if (!fence) continue;
    if (!open) languages.push(fence[1] ?? '');
    open = !open;
  }
  return languages;
}

/** The ```sh blocks, in order; a block indented under a list item loses its indentation. */
function shellBlocks(markdown: string): string[] {
  return [...markdown.matchAll(/^( *)```sh\n([\s\S]*?)^\1```[ \t]*$/gm)].map((m) => {
    const indent = m[1] ?? '';
    return (m[2] ?? '')
      .split('\n')
      .map((line) => (line.startsWith(indent) ? line.slice(indent.length) : line))
      .join('\n');
  });
}

t.test('the troubleshooting table explains every error message the server can send', async (t) => {
  const guide = await readFile(GUIDE, 'utf8');
  const documented = tableMessages(guide);
  const fromSource = await sourceMessages();
  t.ok(fromSource.length > 40, `messages are found in src (${fromSource.length})`);
  t.ok(documented.length > 0, 'the guide has a troubleshooting table');

  const inGuide = new Set(documented.map(normalise));
  for (const message of fromSource) {
    t.ok(inGuide.has(normalise(message.text)), `the table has a row for ${message.where}: ${message.text}`);
  }
  const inSource = new Set(fromSource.map((m) => normalise(m.text)));
  for (const message of documented) {
    t.ok(inSource.has(normalise(message)), `the table's message is one the server sends: ${message}`);
  }
});

// ---------------------------------------------------------------------------
// The guide's commands

async function freePort(): Promise<number> {
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const address = server.address();
  server.close();
  await once(server, 'close');
  if (address === null || typeof address === 'string') throw new Error('no port');
  return address.port;
}

interface Finished {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a command in its own process group, so teardown can stop everything it started. */
function start(command: string, args: readonly string[], env: NodeJS.ProcessEnv) {
  const child = spawn(command, args, { cwd: root, env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const finished = new Promise<Finished>((resolve) => child.on('close', (code) => resolve({ code, stdout, stderr })));
  const stop = async (): Promise<void> => {
    try {
      if (child.pid !== undefined) process.kill(-child.pid, 'SIGTERM');
    } catch {
      // The group has already gone.
    }
    await finished;
  };
  return { child, finished, stop, output: () => ({ stdout, stderr }) };
}

t.test('every shell command of the guide runs as written on a fresh installation', async (t) => {
  const guide = await readFile(GUIDE, 'utf8');
  const blocks = shellBlocks(guide);
  t.ok(blocks.length >= 10, `the guide has runnable sh blocks (${blocks.length})`);
  t.same(
    fenceLanguages(guide).filter((language) => language !== 'sh' && language !== 'text'),
    [],
    'every code block is ```sh (run) or ```text (Entra expressions, addresses), so none is skipped by mistake',
  );
  const commands = blocks.join('\n');
  t.match(commands, /npx portal-scim tenant create/, 'the guide creates a tenant');
  t.match(commands, /npx portal-scim token issue/, 'the guide issues a Secret Token');
  t.match(commands, /npx portal-scim client create/, 'the guide creates an OAuth client');

  const { url } = await testDatabase(t);
  const dataDir = await mkdtemp(path.join(os.tmpdir(), 'portal-scim-guide-'));
  t.teardown(() => rm(dataDir, { recursive: true, force: true }));
  const port = await freePort();
  // A fresh environment: only what a shell on a new machine has, plus the
  // server's settings. No JWT_SECRET: the key is generated in DATA_DIR.
  const env: NodeJS.ProcessEnv = {
    PATH: process.env.PATH,
    HOME: process.env.HOME ?? os.homedir(),
    ...(process.env.TMPDIR ? { TMPDIR: process.env.TMPDIR } : {}),
    LANG: 'C.UTF-8',
    DATABASE_URL: url,
    DATA_DIR: dataDir,
    PORT: String(port),
    HOST: '127.0.0.1',
    PUBLIC_URL: `http://127.0.0.1:${port}`,
    LOG_LEVEL: 'warn',
  };

  // The running server the guide's first part assumes, started as `npx portal-scim serve`.
  const server = start('npx', ['portal-scim', 'serve'], env);
  t.teardown(server.stop);
  const ready = await Promise.race([
    (async () => {
      for (;;) {
        const answer = await fetch(`${env.PUBLIC_URL}/readyz`).catch(() => undefined);
        if (answer?.ok) return true;
        await sleep(200);
      }
    })(),
    server.finished.then(() => false),
  ]);
  t.ok(ready, `the server starts and answers /readyz${ready ? '' : `: ${server.output().stderr}`}`);
  if (!ready) return;

  // One bash session, blocks in order: a failing command stops the run and names itself.
  const script = [
    'set -euo pipefail',
    `trap 'echo "guide command failed with exit code $?: $BASH_COMMAND" >&2' ERR`,
    ...blocks.flatMap((block, i) => [block, `echo "::guide block ${i + 1} done"`]),
  ].join('\n');
  const scriptFile = path.join(dataDir, 'guide.sh');
  await writeFile(scriptFile, script);
  const run = start('bash', [scriptFile], env);
  t.teardown(run.stop);
  const result = await run.finished;

  t.equal(result.code, 0, `the commands exit 0${result.code === 0 ? '' : `:\n${result.stderr.slice(-2000)}`}`);
  for (let i = 1; i <= blocks.length; i++) {
    t.match(result.stdout, `::guide block ${i} done\n`, `block ${i} of ${blocks.length} runs to its end`);
  }
  // Test Connection's request, with the Secret Token and with an OAuth access token.
  const empty = result.stdout.match(/"totalResults":0/g) ?? [];
  t.equal(empty.length, 2, 'the Test Connection search answers an empty list with both credentials');
  t.match(result.stdout, /urn:ietf:params:scim:schemas:core:2\.0:ServiceProviderConfig/, 'ServiceProviderConfig answers with the Secret Token');
  t.match(result.stdout, /Tenant URL: +http:\/\/127\.0\.0\.1:\d+\/scim\/v2\n/, 'the Tenant URL is PUBLIC_URL/scim/v2');
  t.match(result.stdout, /Token Endpoint: +http:\/\/127\.0\.0\.1:\d+\/oauth\/token\n/, 'the token endpoint is PUBLIC_URL/oauth/token');
  t.notMatch(result.stderr, /guide command failed/, 'no command failed');
});
