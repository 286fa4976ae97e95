// The pino logger: JSON lines with request id and tenant id (readable lines
// when the output is a terminal); credentials, secrets and query values (user
// names, e-mails in filters) never written.
import { pino, type Logger, type DestinationStream } from 'pino';
import type { LogLevel } from './config.js';

export const REDACTED_PATHS = [
  'req.headers.authorization',
  'req.headers.cookie',
  'headers.authorization',
  'authorization',
  'token',
  'secret',
  'password',
  'client_secret',
  'access_token',
  'clientSecret',
  '*.token',
  '*.secret',
  '*.password',
  '*.client_secret',
  '*.access_token',
  '*.clientSecret',
];

/** Longest URL a log line keeps: any path of ours fits, a client's 16 KB of junk does not. */
export const LOGGED_URL_LENGTH = 300;

/**
 * A resource's place in a path that holds no resource id: a client that put
 * a userName or a class name there (GET /Users/ada@school.example) would
 * otherwise have it logged. Ids, .search and what follows stay.
 */
const NOT_AN_ID = /(\/(?:Users|Groups)\/)(?![0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}(?:[/?#]|$)|\.search(?:[/?#]|$))[^/?#]+/gi;

/** A URL with its query values removed (only parameter names are kept) and no value in a resource id's place, cut at LOGGED_URL_LENGTH. */
export function logUrl(url: string): string {
  const [rawPath = '', query] = url.split('?', 2);
  const path = rawPath.replace(NOT_AN_ID, '$1<not an id>');
  const kept = query === undefined ? path : `${path}?${[...new Set(new URLSearchParams(query).keys())].join('&')}`;
  if (kept.length <= LOGGED_URL_LENGTH) return kept;
  return `${kept.slice(0, LOGGED_URL_LENGTH)}… (${kept.length - LOGGED_URL_LENGTH} more characters)`;
}

interface LoggedRequest {
  method?: string;
  url?: string;
  ip?: string;
  socket?: { remoteAddress?: string };
}

export function createLogger(level: LogLevel, destination?: DestinationStream): Logger {
  return pino(
    {
      level,
      redact: { paths: REDACTED_PATHS, censor: '[redacted]' },
      serializers: {
        req: (req: LoggedRequest) => ({
          method: req.method,
          url: logUrl(req.url ?? ''),
          remoteAddress: req.ip ?? req.socket?.remoteAddress,
        }),
        err: pino.stdSerializers.err,
      },
    },
    destination,
  );
}

/**
 * Where the process logs: readable lines (pino-pretty) when standard output
 * is a terminal, a person reading them as they come; otherwise undefined,
 * pino's JSON lines on standard output, for whatever collects them. The
 * lines are made from the same redacted records either way.
 */
export async function processLogDestination(output: NodeJS.WritableStream & { isTTY?: boolean } = process.stdout): Promise<DestinationStream | undefined> {
  if (output.isTTY !== true) return undefined;
  const { default: pretty } = await import('pino-pretty');
  return pretty({
    destination: output,
    sync: true,
    colorize: true,
    singleLine: true,
    translateTime: 'SYS:HH:MM:ss.l',
    ignore: 'hostname',
  });
}
