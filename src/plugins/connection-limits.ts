// Bounds what a client that does not read its answers can make the server
// hold. HTTP/1.1 lets a client send many requests on one connection without
// waiting for answers (pipelining); Node parses every request of a received
// chunk before it pauses reading, and each answer waits in memory until the
// ones before it have gone. A connection that keeps asking while its answers
// pile up is closed: past a number of requests ahead of their answers, or
// past a size of waiting answers, its own or that of all connections
// together. A client that waits for each answer, as Entra does, never has
// more than one.
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { FastifyInstance, FastifyServerFactory } from 'fastify';
import fp from 'fastify-plugin';

export interface ConnectionLimitsOptions {
  /** Bytes of answers one connection may have waiting to be sent. */
  connectionOutputLimitBytes: number;
  /** Bytes of answers all connections together may have waiting. */
  outputLimitBytes: number;
}

/** Requests one connection may have sent ahead of their answers; past it the connection is closed. */
export const MAX_PIPELINED_REQUESTS = 32;

interface Connection {
  readonly socket: Socket;
  /** Requests received whose answers have not gone yet. */
  pending: number;
  /** Bytes of answers made but not yet handed to the operating system. */
  unsent: number;
  /** No longer counted: its socket closed, or it has nothing in progress. */
  untracked: boolean;
  readonly onClose: () => void;
}

interface Answer {
  readonly connection: Connection;
  bytes: number;
  done: boolean;
}

/** The size of an answer as fastify hands it on; a stream (none of our routes sends one) counts as nothing. */
function sizeOf(payload: unknown): number {
  if (typeof payload === 'string' || Buffer.isBuffer(payload)) return payload.length;
  return 0;
}

async function connectionLimits(app: FastifyInstance, options: ConnectionLimitsOptions): Promise<void> {
  // Per app. Only connections with a request in progress or an answer unsent have an entry.
  const connections = new Map<Socket, Connection>();
  const answers = new WeakMap<ServerResponse, Answer>();
  let totalUnsent = 0;

  function forget(connection: Connection): void {
    if (connection.untracked) return;
    connection.untracked = true;
    totalUnsent -= connection.unsent;
    connection.socket.off('close', connection.onClose);
    connections.delete(connection.socket);
  }

  function connectionOf(socket: Socket): Connection {
    let connection = connections.get(socket);
    if (connection === undefined) {
      const created: Connection = { socket, pending: 0, unsent: 0, untracked: false, onClose: () => forget(created) };
      socket.once('close', created.onClose);
      connections.set(socket, created);
      connection = created;
    }
    return connection;
  }

  /** Why the connection must be closed, if it must: it keeps asking while its answers wait. */
  function overLimit(connection: Connection): string | undefined {
    if (connection.pending > MAX_PIPELINED_REQUESTS) return 'that sent too many requests ahead of their answers';
    // A single answer may be as large as it is: only answers piling up count.
    if (connection.pending < 2) return undefined;
    if (connection.unsent > options.connectionOutputLimitBytes) return 'whose unread answers passed its limit';
    if (totalUnsent > options.outputLimitBytes) return 'whose unread answers passed the limit of all connections together';
    return undefined;
  }

  function closeIfOver(connection: Connection): boolean {
    const why = overLimit(connection);
    if (why === undefined) return false;
    app.log.warn({ remoteAddress: connection.socket.remoteAddress, pending: connection.pending, unsentBytes: connection.unsent }, `closed a connection ${why}`);
    forget(connection);
    connection.socket.destroy();
    return true;
  }

  function answered(answer: Answer): void {
    if (answer.done) return;
    answer.done = true;
    const { connection } = answer;
    if (connection.untracked) return;
    connection.pending -= 1;
    connection.unsent -= answer.bytes;
    totalUnsent -= answer.bytes;
    if (connection.pending === 0) forget(connection);
  }

  app.addHook('onRequest', (request, reply, done) => {
    const socket = request.raw.socket as Socket | null;
    if (socket === null) {
      done();
      return;
    }
    const connection = connectionOf(socket);
    connection.pending += 1;
    const answer: Answer = { connection, bytes: 0, done: false };
    answers.set(reply.raw, answer);
    // A response ends with 'close', whether its answer went or its connection did.
    reply.raw.once('close', () => answered(answer));
    if (closeIfOver(connection)) reply.hijack();
    done();
  });

  app.addHook('onSend', (_request, reply, payload, done) => {
    const answer = answers.get(reply.raw);
    if (answer !== undefined && !answer.done && !answer.connection.untracked) {
      const bytes = sizeOf(payload);
      answer.bytes += bytes;
      answer.connection.unsent += bytes;
      totalUnsent += bytes;
      closeIfOver(answer.connection);
    }
    done(null, payload);
  });
}

/**
 * The HTTP server, for fastify's serverFactory. Node goes on parsing the
 * requests of a chunk after their connection has been closed; those reach
 * no handler, so a closed flood costs Node's parsing and nothing more (no
 * request objects, hooks or log lines of ours).
 */
export function limitedServer(options: { requestTimeoutMs: number; maxConnections: number }): FastifyServerFactory {
  return (handler) => {
    const server = http.createServer(
      {
        // Headers and body must both arrive within the deadline, or the
        // request is answered 408 and closed (see the clientError handler).
        requestTimeout: options.requestTimeoutMs,
        headersTimeout: options.requestTimeoutMs,
        // Node checks the deadlines on this interval; its default of 30 s would let a short deadline pass unnoticed.
        connectionsCheckingInterval: Math.min(1000, Math.max(100, Math.floor(options.requestTimeoutMs / 10))),
        // fastify's own default, longer than the idle timeout of the usual load balancers.
        keepAliveTimeout: 72_000,
      },
      (request: IncomingMessage, response: ServerResponse) => {
        if (!request.socket.destroyed) handler(request, response);
      },
    );
    // Past it Node closes a new connection at once, and the ones open are served.
    server.maxConnections = options.maxConnections;
    return server;
  };
}

export const connectionLimitsPlugin = fp(connectionLimits, { name: 'connection-limits', fastify: '5.x' });
