/**
 * A small HTTP layer over node:http: a route table with path templates,
 * bearer-token authentication with roles, body limits, JSON errors and a
 * request log. No framework: the surface is a handful of routes, and every
 * byte of a request is checked here before a handler sees it.
 *
 * Errors are always `{"error": CODE, "message": TEXT}`, the status from the
 * error table (errors.ts). Anything a client can send maps to a 4xx; a 5xx is
 * the server's own failure and says nothing about internals.
 */
import { STATUS_CODES, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import { httpStatus, StrataError, type ErrorCode } from '../errors.js';
import { roleAllows, type Role, type TokenEntry, type TokenStore } from './tokens.js';

/** An error a route answers with, and the headers the answer needs; its status comes from the error table. */
export class HttpError extends StrataError {
  constructor(
    code: ErrorCode,
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(code, message);
  }
}

export interface RequestContext {
  req: IncomingMessage;
  res: ServerResponse;
  /** Path parameters, raw (never percent-decoded: a name must match its pattern as sent). */
  params: Record<string, string>;
  token?: TokenEntry;
  /** Body bytes taken in and sent out, for the log. */
  bytesIn: number;
  bytesOut: number;
}

export interface Route {
  method: 'GET' | 'HEAD' | 'PUT' | 'POST' | 'DELETE';
  /** A template such as /v1/objects/{kind}/{name}; a {param} is one path segment. */
  path: string;
  /** The least role allowed, or null for a route open to anyone. */
  role: Role | null;
  /** The largest request body accepted, in bytes (0: none). */
  maxBody: number;
  handle(ctx: RequestContext): Promise<void>;
}

export interface LogOptions {
  quiet: boolean;
  write?: (line: string) => void;
}

/** Matches a raw path against a template; returns its parameters or undefined. */
export function matchPath(template: string, pathname: string): Record<string, string> | undefined {
  const want = template.split('/');
  const got = pathname.split('/');
  if (want.length !== got.length) return undefined;
  const params: Record<string, string> = {};
  for (let i = 0; i < want.length; i++) {
    const w = want[i]!;
    const g = got[i]!;
    if (w.startsWith('{') && w.endsWith('}')) {
      if (g === '') return undefined;
      params[w.slice(1, -1)] = g;
    } else if (w !== g) return undefined;
  }
  return params;
}

export function sendJson(ctx: RequestContext, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = Buffer.from(JSON.stringify(body) + '\n');
  ctx.res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': String(text.length), ...headers });
  ctx.res.end(ctx.req.method === 'HEAD' ? undefined : text);
  if (ctx.req.method !== 'HEAD') ctx.bytesOut += text.length;
}

/**
 * Makes the request handler for `routes`. Order of checks: authentication
 * (unless the route is open), then route and method, then role, then body size.
 */
export function handler(routes: readonly Route[], tokens: TokenStore, log: LogOptions): (req: IncomingMessage, res: ServerResponse) => void {
  return (req, res) => {
    const started = performance.now();
    const ctx: RequestContext = { req, res, params: {}, bytesIn: 0, bytesOut: 0 };
    res.on('close', () => {
      const status = res.writableFinished ? res.statusCode : `${res.statusCode}(cut)`;
      const who = ctx.token ? ` token=${ctx.token.name}` : '';
      logLine(log, `${req.method ?? '-'} ${loggable(req.url)} ${status} in=${ctx.bytesIn} out=${ctx.bytesOut} ${Math.round(performance.now() - started)}ms${who}`);
    });
    dispatch(routes, tokens, ctx).catch((e: unknown) => fail(ctx, e));
  };
}

async function dispatch(routes: readonly Route[], tokens: TokenStore, ctx: RequestContext): Promise<void> {
  const { req } = ctx;
  const url = req.url ?? '';
  const q = url.indexOf('?');
  const pathname = q < 0 ? url : url.slice(0, q);
  if (!pathname.startsWith('/')) throw new HttpError('bad_request', 'the request target must be a path');

  const onPath: { route: Route; params: Record<string, string> }[] = [];
  for (const route of routes) {
    const params = matchPath(route.path, pathname);
    if (params) onPath.push({ route, params });
  }
  const hit = onPath.find((r) => r.route.method === req.method);
  if (!hit || hit.route.role !== null) ctx.token = authenticate(req, tokens);
  if (onPath.length === 0) throw new HttpError('no_route', 'no such route');
  if (!hit) {
    const allow = [...new Set(onPath.map((r) => r.route.method))].join(', ');
    throw new HttpError('method_not_allowed', `${req.method} is not allowed here (allowed: ${allow})`, { Allow: allow });
  }
  const { route, params } = hit;
  if (route.role !== null && !roleAllows(ctx.token!.role, route.role)) {
    throw new HttpError('forbidden', `this needs a token with the ${route.role} role; token ${ctx.token!.name} has ${ctx.token!.role}`);
  }
  checkBody(req, route.maxBody);
  ctx.params = params;
  await route.handle(ctx);
}

function authenticate(req: IncomingMessage, tokens: TokenStore): TokenEntry {
  const header = req.headers.authorization;
  const challenge = { 'WWW-Authenticate': 'Bearer realm="strata"' };
  if (!header) throw new HttpError('unauthorized', 'a bearer token is required (Authorization: Bearer TOKEN)', challenge);
  const m = /^Bearer +(\S+) *$/i.exec(header);
  const entry = m ? tokens.verify(m[1]!) : undefined;
  if (!entry) throw new HttpError('unauthorized', 'the token is not valid (unknown or revoked)', challenge);
  return entry;
}

function checkBody(req: IncomingMessage, maxBody: number): void {
  const length = req.headers['content-length'];
  const chunked = req.headers['transfer-encoding'] !== undefined;
  if (maxBody === 0) {
    if (chunked || (length !== undefined && length !== '0')) throw new HttpError('body_too_large', 'this request takes no body', { Connection: 'close' });
    return;
  }
  if (length === undefined || chunked) throw new HttpError('length_required', 'send the body with a Content-Length (no chunked uploads)', { Connection: 'close' });
  if (!/^\d{1,15}$/.test(length)) throw new HttpError('bad_request', 'Content-Length is not a number', { Connection: 'close' });
  if (Number(length) > maxBody) throw new HttpError('body_too_large', `the body may be at most ${maxBody} bytes here`, { Connection: 'close' });
}

/** Turns any failure into a JSON error; a response already under way is cut off instead. */
function fail(ctx: RequestContext, e: unknown): void {
  const { res } = ctx;
  if (res.headersSent) {
    res.destroy();
    return;
  }
  if (ctx.req.destroyed && !ctx.req.complete && !(e instanceof HttpError)) {
    // The client went away (an aborted upload): nobody to answer. A body read to its end is destroyed too.
    res.destroy();
    return;
  }
  let code: ErrorCode = 'internal';
  let message = 'internal server error';
  let headers: Record<string, string> = {};
  if (e instanceof StrataError) {
    code = e.code;
    message = e.message;
    if (e instanceof HttpError) headers = e.headers;
  } else if ((e as NodeJS.ErrnoException)?.code === 'ENOSPC') {
    [code, message] = ['insufficient_storage', 'the server is out of disk space'];
  } else {
    process.stderr.write(`strata serve: internal error: ${(e as Error)?.message ?? String(e)}\n`);
    if (process.env.STRATA_DEBUG) process.stderr.write(`${(e as Error)?.stack}\n`);
  }
  const status = httpStatus(code);
  if (e instanceof StrataError && status >= 500) {
    // The server's own failure: its log says why; the client learns only what kind.
    process.stderr.write(`strata serve: ${e.message}\n`);
    message = `the server failed (${code}); its log says why`;
  }
  // A body the handler did not read is not drained: the connection is closed instead.
  if (!ctx.req.complete) headers = { ...headers, Connection: 'close' };
  sendJson(ctx, status, { error: code, message }, headers);
}

/**
 * Answers requests node:http could not parse (garbage, headers too large,
 * headers too slow) with a JSON error, and logs them like any request.
 */
export function handleClientErrors(server: Server, log: LogOptions): void {
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) => {
    const code: ErrorCode = err.code === 'HPE_HEADER_OVERFLOW' ? 'headers_too_large' : err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? 'request_timeout' : 'bad_request';
    const status = httpStatus(code);
    if (err.code !== 'ECONNRESET' && err.code !== 'EPIPE') logLine(log, `- - ${status} ${err.code ?? 'error'}`);
    // With an answer still owed on this connection, a 400 would arrive in its place: just close.
    const busy = (socket as Socket & { _httpMessage?: ServerResponse })._httpMessage !== undefined;
    if (!socket.writable || busy || err.code === 'ECONNRESET') {
      socket.destroy();
      return;
    }
    const body = JSON.stringify({ error: code, message: CLIENT_ERRORS[code] }) + '\n';
    socket.end(
      `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
    );
  });
}

const CLIENT_ERRORS: Partial<Record<ErrorCode, string>> = {
  headers_too_large: 'the request headers are too large',
  request_timeout: 'the request headers took too long',
  bad_request: 'malformed HTTP request',
};

export function logLine(log: LogOptions, text: string): void {
  if (log.quiet) return;
  (log.write ?? ((s: string) => process.stderr.write(s)))(`${new Date().toISOString()} ${text}\n`);
}

/** The path for the log: no query string, no control characters, bounded length. */
function loggable(url: string | undefined): string {
  if (!url) return '-';
  const q = url.indexOf('?');
  const p = (q < 0 ? url : url.slice(0, q)).replace(/[^\x21-\x7e]/g, (c) => `%${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
  return p.length > 200 ? `${p.slice(0, 200)}...` : p;
}
