// The one error renderer: every failure leaves as a SCIM error body with the
// right status and scimType. 5xx details are logged, never sent. The error a
// reply carries stays on it (reply.scimError) for the failed-write audit
// event and for the request's log line, which carries its status, scimType
// and detail with every value from the request folded away.
import type { Socket } from 'node:net';
import { LogController, type FastifyError, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';
import { ScimError, clippedDetail, databaseError, type ScimType } from '../errors.js';
import { ANSWER_HEADERS } from '../security-headers.js';

declare module 'fastify' {
  interface FastifyReply {
    /** The SCIM error this reply answers with, once the renderer has sent it. */
    scimError: ScimError | null;
  }
}

export const SCIM_ERROR_SCHEMA = 'urn:ietf:params:scim:api:messages:2.0:Error';
export const SCIM_CONTENT_TYPE = 'application/scim+json; charset=utf-8';

export interface ScimErrorBody {
  schemas: [typeof SCIM_ERROR_SCHEMA];
  status: string;
  scimType?: ScimType;
  detail: string;
}

export function errorBody(error: ScimError): ScimErrorBody {
  return {
    schemas: [SCIM_ERROR_SCHEMA],
    status: String(error.status),
    ...(error.scimType ? { scimType: error.scimType } : {}),
    detail: clippedDetail(error.detail),
  };
}

// Errors raised by fastify itself before our handlers run.
function fromFastifyError(error: FastifyError): ScimError | undefined {
  switch (error.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return new ScimError(413, undefined, 'The request body is larger than this server accepts.');
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
      return new ScimError(400, 'invalidSyntax', 'The request body is not valid JSON.');
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return new ScimError(415, undefined, 'Send the request body as application/scim+json or application/json.');
    case 'FST_ERR_CTP_INVALID_CONTENT_LENGTH':
      return new ScimError(400, 'invalidSyntax', 'The Content-Length header does not match the body.');
    case 'FST_ERR_VALIDATION':
      return new ScimError(400, 'invalidValue', error.message);
    default:
      break;
  }
  if (error instanceof SyntaxError) {
    return new ScimError(400, 'invalidSyntax', 'The request body is not valid JSON.');
  }
  const status = error.statusCode;
  if (status !== undefined && status >= 400 && status < 500) {
    return new ScimError(status, undefined, error.message);
  }
  return undefined;
}

export function toScimError(error: unknown): ScimError | undefined {
  if (error instanceof ScimError) return error;
  return databaseError(error) ?? fromFastifyError(error as FastifyError);
}

export function sendScimError(reply: FastifyReply, error: ScimError): FastifyReply {
  reply.scimError = error;
  return reply
    .code(error.status)
    .headers(error.headers)
    .type(SCIM_CONTENT_TYPE)
    .send(errorBody(error));
}

/**
 * Fastify's frameworkErrors: a URL the router cannot read (bad percent-encoding,
 * a path parameter past the router's limit) answers a SCIM error too.
 */
export function frameworkError(error: FastifyError, _request: FastifyRequest, reply: FastifyReply): void {
  const scimError =
    error.code === 'FST_ERR_MAX_PARAM_LENGTH'
      ? new ScimError(414, undefined, 'The request URL is longer than this server accepts.')
      : new ScimError(400, undefined, 'The request URL is not valid (check its percent-encoding).');
  // Sent before any hook runs, so the answer gets its security headers here.
  void sendScimError(reply.headers(ANSWER_HEADERS), scimError);
}

/** The security headers as header lines, for the answers written to the socket directly. */
const RAW_ANSWER_HEADERS = Object.entries(ANSWER_HEADERS)
  .map(([name, value]) => `${name}: ${value}\r\n`)
  .join('');

/**
 * Fastify's clientErrorHandler: requests Node's HTTP parser refuses before any
 * route runs (headers too large, malformed request lines) still get a SCIM body.
 */
export function clientError(error: Error & { code?: string }, socket: Socket): void {
  if (!socket.writable) return;
  const scimError =
    error.code === 'HPE_HEADER_OVERFLOW'
      ? new ScimError(431, undefined, 'The request headers are larger than this server accepts.')
      : error.code === 'ERR_HTTP_REQUEST_TIMEOUT'
        ? new ScimError(408, undefined, 'The request took too long to arrive.')
        : new ScimError(400, 'invalidSyntax', 'The request is not valid HTTP.');
  const body = JSON.stringify(errorBody(scimError));
  const reason = { 408: 'Request Timeout', 431: 'Request Header Fields Too Large' }[scimError.status] ?? 'Bad Request';
  // Closed once the answer is out, even if the client keeps sending.
  socket.end(
    `HTTP/1.1 ${scimError.status} ${reason}\r\nContent-Type: ${SCIM_CONTENT_TYPE}\r\n${RAW_ANSWER_HEADERS}` +
      `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
    () => socket.destroy(),
  );
}

export interface ErrorsOptions {
  /** The answer to an unknown path that deserves more than "No resource" (a wrong Tenant URL). */
  notFound?: (request: FastifyRequest) => ScimError | undefined;
}

/*
 * Some details quote what the request sent: a userName that is taken, a
 * class name, a path or filter with its values, the ids of members that are
 * no users. Entra shows the detail as sent to the school's admin, and the
 * failed write's audit event keeps it so (the objects it names are the
 * tenant's own). The log line keeps a folded form instead: logs never hold
 * attribute values, and the folded form still says which error it was.
 */
const FOLDS: readonly (readonly [RegExp, string])[] = [
  // The If-Match header as sent, quoted or not; the version the resource has stays.
  [/^(The resource has changed: its version is \S+, not )[\s\S]*$/, '$1….'],
  // Everything from the first double quote to the last: values, paths and
  // filters as sent, however many quotes they hold themselves.
  [/"[\s\S]*"/, '"…"'],
  // scimmy's single-quoted values (canonical values, filter tokens); its
  // quoted attribute names and types stay.
  [/\b(value|token|filter) '[\s\S]*'/, "$1 '…'"],
  // The member values a class write named that are no users.
  [/(not a user here: )[\s\S]*$/, '$1….'],
  [/\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b/gi, '<id>'],
  // An id from the request's path that is no UUID, which the one above leaves.
  [/^(No (?:user|group) )(?!<id>\.$)\S+\.$/, '$1<id>.'],
  // A path as the request sent it, of any length: the line's req.url has it, cut (logger.ts).
  [/^(No resource at \S+ )\S+\.$/, '$1<path>.'],
  [/^(No SCIM endpoint at |The request path )\S+/, '$1<path>'],
];

/** Longest folded detail: a fold leaves any message of ours shorter; a value no fold foresaw is cut, not written whole. */
const FOLDED_LENGTH = 400;

/** A detail with what the request sent folded away (quoted text, member lists, ids and paths): what the log line of a failed request carries. */
export function foldValues(detail: string): string {
  const folded = FOLDS.reduce((text, [pattern, replacement]) => text.replace(pattern, replacement), detail);
  return folded.length <= FOLDED_LENGTH ? folded : `${folded.slice(0, FOLDED_LENGTH)}…`;
}

/** What failures of one kind share: the folded detail with its numbers folded too (operation numbers, lengths, counts). */
export function failureMessage(detail: string): string {
  return foldValues(detail).replace(/\b\d+\b/g, 'N');
}

/**
 * Fastify's request log with what a failed request's log line needs: the
 * "request completed" line of an answer the renderer sent carries its
 * scimType and folded detail beside the status.
 */
export class RequestLog extends LogController {
  override requestCompleted(error: Error | null | undefined, request: FastifyRequest, reply: FastifyReply, metadata?: Record<string, unknown>): void {
    const scimError = reply.scimError;
    if (error || !scimError || this.isLogDisabled(request)) {
      super.requestCompleted(error, request, reply, metadata);
      return;
    }
    reply.log.info(
      { res: reply, responseTime: reply.elapsedTime, ...(scimError.scimType ? { scimType: scimError.scimType } : {}), detail: foldValues(scimError.detail) },
      'request completed',
    );
  }
}

async function errors(app: FastifyInstance, options: ErrorsOptions): Promise<void> {
  app.decorateReply('scimError', null);
  app.setErrorHandler((error: unknown, request: FastifyRequest, reply: FastifyReply) => {
    const scimError = toScimError(error);
    if (scimError) {
      // A failure below (the database's) is logged with its cause; a 5xx of our
      // own (shedding load, say) says all it has on the request's own line,
      // and a flood of them must not flood the log with stacks.
      if (scimError.status >= 500 && error !== scimError) request.log.warn({ err: error }, scimError.detail);
      // Not the detail: it may quote the request.
      else request.log.debug({ status: scimError.status, scimType: scimError.scimType }, 'request refused');
      return sendScimError(reply, scimError);
    }
    request.log.error({ err: error }, 'request failed');
    return sendScimError(reply, new ScimError(500, undefined, 'The server could not complete the request.'));
  });

  app.setNotFoundHandler((request, reply) =>
    sendScimError(reply, options.notFound?.(request) ?? new ScimError(404, undefined, `No resource at ${request.method} ${request.url.split('?')[0] ?? ''}.`)),
  );
}

export const errorsPlugin = fp(errors, { name: 'scim-errors', fastify: '5.x' });
