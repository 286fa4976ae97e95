// GET /docs/entra-setup: the school IT admin's setup guide (docs/entra-setup.md)
// as a web page, where the discovery documents' documentationUri points. It
// needs no credential: the admin reads it before having one. Rendered once at
// start with marked (CommonMark and GitHub's tables); headings get GitHub's
// ids, so the guide's own contents links work on the page too.
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import type { FastifyInstance } from 'fastify';
import { Marked, type Tokens } from 'marked';
import { projectRoot } from '../paths.js';
import { PAGE_HEADERS } from '../security-headers.js';

export const GUIDE_PATH = '/docs/entra-setup';

const STYLE = `
body { font: 16px/1.55 system-ui, sans-serif; margin: 0 auto; max-width: 58rem; padding: 1rem 1.5rem 4rem; color: #1b1f24; }
h1 { font-size: 1.8rem; } h2 { font-size: 1.35rem; margin-top: 2.5rem; border-bottom: 1px solid #d0d7de; } h3 { font-size: 1.1rem; }
code { font-size: .88em; background: #f6f8fa; padding: .1em .3em; border-radius: 4px; }
pre { background: #f6f8fa; padding: .8rem 1rem; overflow-x: auto; border-radius: 6px; } pre code { padding: 0; background: none; }
table { border-collapse: collapse; display: block; overflow-x: auto; } th, td { border: 1px solid #d0d7de; padding: .35rem .6rem; vertical-align: top; text-align: left; }
th { background: #f6f8fa; } a { color: #0969da; }
`;

const CSP = [
  "default-src 'none'",
  `style-src 'sha256-${createHash('sha256').update(STYLE).digest('base64')}'`,
  "img-src 'self'",
  "frame-ancestors 'none'",
  "base-uri 'none'",
].join('; ');

/** GitHub's heading anchor: lower case, punctuation dropped, spaces as hyphens. */
function slug(text: string): string {
  return text
    .toLowerCase()
    .replace(/<[^>]*>/g, '')
    .replace(/[^\p{L}\p{N}\s_-]/gu, '')
    .trim()
    .replace(/\s/g, '-');
}

export function renderGuide(markdown: string): string {
  const seen = new Map<string, number>();
  const marked = new Marked({
    gfm: true,
    renderer: {
      heading(this: { parser: { parseInline(tokens: Tokens.Heading['tokens']): string } }, { tokens, depth, text }: Tokens.Heading) {
        const base = slug(text);
        const n = seen.get(base) ?? 0;
        seen.set(base, n + 1);
        return `<h${depth} id="${n === 0 ? base : `${base}-${n}`}">${this.parser.parseInline(tokens)}</h${depth}>\n`;
      },
    },
  });
  const body = marked.parse(markdown, { async: false });
  const title = /^# (.+)$/m.exec(markdown)?.[1] ?? 'Setup guide';
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${title.replace(/[<>&"]/g, '')} · portal-scim</title>
<style>${STYLE}</style>
</head>
<body>
${body}
</body>
</html>
`;
}

export async function docsRoutes(app: FastifyInstance): Promise<void> {
  // Read and rendered once at start: a missing guide stops the server instead of failing later.
  const page = renderGuide(await readFile(path.join(projectRoot, 'docs/entra-setup.md'), 'utf8'));
  app.get(GUIDE_PATH, async (_request, reply) =>
    reply.headers(PAGE_HEADERS).header('content-security-policy', CSP).header('cache-control', 'public, max-age=3600').type('text/html; charset=utf-8').send(page),
  );
}
