// The security headers of every answer, worked out once: none depends on the
// request (no nonces), so helmet's middleware runs here, at start, and the
// hooks copy the result; built per request (as @fastify/helmet does) it would
// cost about 4% of a request's CPU.
//
// The API answers JSON to provisioning clients. Its answers carry what OWASP's
// REST Security Cheat Sheet asks of every API response (a policy that lets
// nothing frame them, HSTS, nosniff, X-Frame-Options, and no-store, as they
// hold pupils' personal data), with helmet's Referrer-Policy and
// Cross-Origin-Resource-Policy, which apply to any resource. helmet's other
// headers concern HTML documents (opener policy, origin-keyed agent
// clusters, DNS prefetching of links) or legacy clients (IE8's download
// prompt, Flash and Acrobat cross-domain policies, the retired XSS
// auditor); the pages (the setup guide, the status pages) send them too.
import type { IncomingMessage, ServerResponse } from 'node:http';
import helmet from 'helmet';

type HelmetOptions = NonNullable<Parameters<typeof helmet>[0]>;

/** The headers helmet sets with these options, lower-cased. */
function helmetHeaders(options: HelmetOptions): Record<string, string> {
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

/** What every answer and page share: nothing may load into an answer or frame it; pages set their own policy. */
const SHARED = {
  contentSecurityPolicy: { useDefaults: false, directives: { defaultSrc: ["'none'"], frameAncestors: ["'none'"] } },
  crossOriginEmbedderPolicy: false,
} as const satisfies HelmetOptions;

/** Headers for HTML documents and legacy clients, not for a JSON answer. */
const PAGES_ONLY = {
  crossOriginOpenerPolicy: false,
  originAgentCluster: false,
  xDnsPrefetchControl: false,
  xDownloadOptions: false,
  xPermittedCrossDomainPolicies: false,
  xXssProtection: false,
} as const satisfies HelmetOptions;

/** What every answer carries; a route may replace cache-control and the policy with its own. */
export const ANSWER_HEADERS: Readonly<Record<string, string>> = Object.freeze({
  ...helmetHeaders({ ...SHARED, ...PAGES_ONLY }),
  'cache-control': 'no-store',
});

/** What an HTML page adds to ANSWER_HEADERS. */
export const PAGE_HEADERS: Readonly<Record<string, string>> = Object.freeze(
  Object.fromEntries(Object.entries(helmetHeaders(SHARED)).filter(([name]) => !(name in ANSWER_HEADERS))),
);
