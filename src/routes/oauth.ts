// POST /oauth/token: the OAuth 2.0 client credentials grant (RFC 6749 section
// 4.4) that Entra's "OAuth2 Client Credentials Grant" option uses. The access
// token is a short-lived JWT naming the client's credential row, so the SCIM
// routes accept it like a Secret Token and revoking the client revokes it.
import rateLimit from '@fastify/rate-limit';
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { verifyClientSecret } from '../auth/client-secrets.js';
import type { SigningKeys } from '../auth/keys.js';
import { signToken } from '../auth/tokens.js';
import type { Config } from '../config.js';
import { findActiveClient, markCredentialUsed } from '../db/credentials.js';
import type { Db } from '../db/database.js';
import { databaseError } from '../errors.js';
import { isUuid } from '../db/ids.js';

export interface OAuthOptions {
  config: Config;
  db: Db;
  keys: SigningKeys;
}

/** The one scope there is: provisioning through the SCIM routes. */
export const SCIM_SCOPE = 'scim';

type OAuthErrorCode =
  | 'invalid_request'
  | 'invalid_client'
  | 'invalid_grant'
  | 'unauthorized_client'
  | 'unsupported_grant_type'
  | 'invalid_scope';

class OAuthError extends Error {
  constructor(
    readonly status: number,
    readonly code: OAuthErrorCode,
    readonly description: string,
    readonly headers: Readonly<Record<string, string>> = {},
  ) {
    super(description);
  }
}

const invalidRequest = (description: string): OAuthError => new OAuthError(400, 'invalid_request', description);

function invalidClient(basicUsed: boolean): OAuthError {
  // RFC 6749 5.2: a client that authenticated with Basic gets the Basic challenge back.
  return new OAuthError(
    401,
    'invalid_client',
    'Client authentication failed: unknown client, wrong secret, or a revoked client.',
    basicUsed ? { 'www-authenticate': 'Basic realm="portal-scim", charset="UTF-8"' } : {},
  );
}

type Form = Readonly<Record<string, string>>;

/** application/x-www-form-urlencoded into single values; a repeated parameter is an error (RFC 6749 3.2). */
function parseForm(text: string): Form {
  const form: Record<string, string> = {};
  for (const [name, value] of new URLSearchParams(text)) {
    if (Object.hasOwn(form, name)) throw invalidRequest(`The parameter ${name} is sent more than once.`);
    form[name] = value;
  }
  return form;
}

interface ClientAuth {
  id: string;
  secret: string;
  basicUsed: boolean;
}

function formDecode(text: string): string {
  return decodeURIComponent(text.replace(/\+/g, ' '));
}

/** client_secret_basic and client_secret_post; both at once must name the same client. */
function clientAuth(request: FastifyRequest, form: Form): ClientAuth {
  const header = request.headers.authorization?.trim();
  let basic: { id: string; secret: string } | undefined;
  if (header !== undefined && header !== '') {
    const match = /^basic\s+([A-Za-z0-9+/=_-]+)$/i.exec(header);
    if (!match?.[1]) throw invalidClient(true);
    const decoded = Buffer.from(match[1], 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    if (colon < 0) throw invalidClient(true);
    try {
      // RFC 6749 2.3.1: id and secret are form-encoded before base64.
      basic = { id: formDecode(decoded.slice(0, colon)), secret: formDecode(decoded.slice(colon + 1)) };
    } catch {
      throw invalidClient(true);
    }
  }
  const postId = form.client_id;
  const postSecret = form.client_secret;
  if (basic) {
    if ((postId !== undefined && postId !== basic.id) || (postSecret !== undefined && postSecret !== basic.secret)) {
      throw invalidRequest('The client is named differently in the Authorization header and in the body.');
    }
    return { ...basic, basicUsed: true };
  }
  if (postId === undefined || postSecret === undefined) {
    throw new OAuthError(
      401,
      'invalid_client',
      'Send client_id and client_secret, in the body or as HTTP Basic authentication.',
      { 'www-authenticate': 'Basic realm="portal-scim", charset="UTF-8"' },
    );
  }
  return { id: postId, secret: postSecret, basicUsed: false };
}

function checkScope(scope: string | undefined): void {
  if (scope === undefined) return;
  const asked = scope.split(' ').filter((s) => s !== '');
  const unknown = asked.filter((s) => s !== SCIM_SCOPE);
  if (unknown.length > 0) {
    throw new OAuthError(400, 'invalid_scope', `Unknown scope ${unknown.join(' ')}; the only scope is "${SCIM_SCOPE}".`);
  }
}

function sendOAuthError(reply: FastifyReply, error: OAuthError): FastifyReply {
  return reply
    .code(error.status)
    .headers({ ...error.headers, 'cache-control': 'no-store', pragma: 'no-cache' })
    .type('application/json; charset=utf-8')
    .send({ error: error.code, error_description: error.description });
}

export async function oauthRoutes(app: FastifyInstance, options: OAuthOptions): Promise<void> {
  const { config, db, keys } = options;
  const settings = { keys, issuer: config.jwtIssuer, audience: config.jwtAudience };

  // Every failure in this scope answers in RFC 6749's shape, not SCIM's.
  app.setErrorHandler((error: FastifyError, request, reply) => {
    if (error instanceof OAuthError) return sendOAuthError(reply, error);
    const unavailable = databaseError(error);
    if (unavailable?.status === 503) {
      request.log.warn({ err: error }, unavailable.detail);
      void reply.header('retry-after', unavailable.headers['retry-after'] ?? '5');
      return sendOAuthError(reply, new OAuthError(503, 'invalid_request', unavailable.detail));
    }
    const status = error.statusCode ?? 500;
    if (status === 429) {
      return sendOAuthError(reply, new OAuthError(429, 'invalid_request', 'Too many token requests; retry later.'));
    }
    if (status >= 400 && status < 500) {
      const detail = status === 413 ? 'The request body is too large.' : 'The request is malformed.';
      return sendOAuthError(reply, new OAuthError(status, 'invalid_request', detail));
    }
    request.log.error({ err: error }, 'token request failed');
    return sendOAuthError(reply, new OAuthError(500, 'invalid_request', 'The server could not complete the request.'));
  });

  app.removeAllContentTypeParsers();
  app.addContentTypeParser('application/x-www-form-urlencoded', { parseAs: 'string', bodyLimit: 8192 }, (_request, body, done) => {
    try {
      done(null, parseForm(typeof body === 'string' ? body : body.toString('utf8')));
    } catch (error) {
      done(error as Error, undefined);
    }
  });
  app.addContentTypeParser('*', (_request, _payload, done) => {
    done(invalidRequest('Send the token request as application/x-www-form-urlencoded.'), undefined);
  });

  // Each guess at a secret costs a scrypt; a client IP gets a few a second.
  await app.register(rateLimit, { max: 60, timeWindow: 60_000 });

  app.route({
    method: ['GET', 'PUT', 'PATCH', 'DELETE'],
    url: '/token',
    config: { methodNotAllowed: true },
    handler: async (request) => {
      throw new OAuthError(405, 'invalid_request', `${request.method} is not supported here; request a token with POST.`, { allow: 'POST' });
    },
  });

  app.post('/token', async (request, reply) => {
    const form = (request.body ?? {}) as Form;
    const grantType = form.grant_type;
    if (grantType === undefined) throw invalidRequest('grant_type is missing; send grant_type=client_credentials.');
    if (grantType !== 'client_credentials') {
      throw new OAuthError(400, 'unsupported_grant_type', `grant_type ${grantType} is not supported; use client_credentials.`);
    }
    const client = clientAuth(request, form);
    checkScope(form.scope);
    const row = isUuid(client.id) ? await findActiveClient(db, client.id.toLowerCase()) : undefined;
    // The hash check runs for unknown clients too, so timing tells nothing.
    const valid = await verifyClientSecret(client.secret, row?.secretHash);
    if (!row || !valid) {
      request.log.info({ clientId: isUuid(client.id) ? client.id : undefined }, 'client authentication failed');
      throw invalidClient(client.basicUsed);
    }
    const expiresAt = new Date(Date.now() + config.oauthTokenSeconds * 1000);
    const accessToken = signToken(settings, { tid: row.tenantId, jti: row.id }, expiresAt);
    await markCredentialUsed(db, row.tenantId, row.id);
    request.log.info({ tenantId: row.tenantId, clientId: row.id }, 'access token issued');
    return reply
      .headers({ 'cache-control': 'no-store', pragma: 'no-cache' })
      .type('application/json; charset=utf-8')
      .send({ access_token: accessToken, token_type: 'Bearer', expires_in: config.oauthTokenSeconds, scope: SCIM_SCOPE });
  });
}
