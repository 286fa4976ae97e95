// The security headers of every answer, worked out once: none depends on the
// request (no nonces), so helmet's middleware runs here, at start, and the
// hooks copy the result. Running it per request (as @fastify/helmet does,
// building it anew each time) cost about 4% of a request's CPU.
//
// The API answers JSON to provisioning clients, so it sends what protects a
// JSON answer (OWASP's REST Security Cheat Sheet): a policy that lets nothing
// load or frame it, HSTS, nosniff, frame and referrer policies, a
// cross-origin resource policy, and no-store, as the answers carry pupils'
// personal data. The headers that only shape how a browser treats an HTML
// document are sent by the pages (the setup guide, the status pages) alone.
import type { IncomingMessage, ServerResponse } from 'node:http';
import helmet from 'helmet';

/** The headers helmet sets with these options, lower-cased. */
function helmetHeaders(options: Parameters<typeof helmet>[0]): Record<string, string> {
  const headers: Record<string, string> = {};
  const response = {
    setHeader: (name: string, value: unknown) => {
      headers[name.toLowerCase()] = String(value);
    },
    removeHeader: (name: string) => {
      delete headers[name.toLowerCase()];
    },
  };
  let failed: unknown;
  helmet(options)({} as IncomingMessage, response as unknown as ServerResponse, (error?: unknown) => {
    failed = error;
  });
  if (failed instanceof Error) throw failed;
  return headers;
}

/** Document-only headers: for HTML pages, and meaningless on a JSON answer. */
const DOCUMENT_ONLY = {
  crossOriginOpenerPolicy: false,
  originAgentCluster: false,
  xDnsPrefetchControl: false,
  xDownloadOptions: false,
  xPermittedCrossDomainPolicies: false,
  xXssProtection: false,
} as const;

const all = helmetHeaders({
  contentSecurityPolicy: { useDefaults: false, directives: { defaultSrc: ["'none'"], frameAncestors: ["'none'"] } },
  crossOriginEmbedderPolicy: false,
});

/** What every answer carries; a page or route may replace cache-control and the policy with its own. */
export const ANSWER_HEADERS: Readonly<Record<string, string>> = Object.freeze({
  ...helmetHeaders({
    contentSecurityPolicy: { useDefaults: false, directives: { defaultSrc: ["'none'"], frameAncestors: ["'none'"] } },
    crossOriginEmbedderPolicy: false,
    ...DOCUMENT_ONLY,
  }),
  'cache-control': 'no-store',
});

/** What an HTML page adds to ANSWER_HEADERS: the headers that apply to documents. */
export const PAGE_HEADERS: Readonly<Record<string, string>> = Object.freeze(Object.fromEntries(Object.entries(all).filter(([name]) => !(name in ANSWER_HEADERS))));
