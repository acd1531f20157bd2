/**
 * `strata ui`'s HTTP server: the web app's page and assets, and its JSON API
 * (api.ts), on loopback by default. The repository's key stays in this
 * process; the browser gets bytes and answers, never the key. Every request
 * passes the checks of session.ts first.
 */
import * as fs from 'node:fs';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import * as path from 'node:path';
import { httpStatus, StrataError, usageError } from '../errors.js';
import type { Repository } from '../repo/repository.js';
import { UiApi } from './api.js';
import { ItemsApi } from './items-api.js';
import { restoreRequest, RestoreJobs } from './restore-job.js';
import { Sessions, type Refusal } from './session.js';

export interface UiOptions {
  repo: Repository;
  host: string;
  port: number;
  /** The directory of the bundled app (app.js, app.css). */
  assets: string;
  /** Where unexpected failures are told (never a secret). */
  log?: (line: string) => void;
}

export interface RunningUi {
  /** The address to open, with its one-time token. */
  url: string;
  /** The same without the token. */
  origin: string;
  close(): Promise<void>;
}

/** Pages may load only this server's script and styles, talk only to it, and be framed by nobody. */
const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";
const SECURITY = { 'x-content-type-options': 'nosniff', 'referrer-policy': 'no-referrer', 'x-frame-options': 'DENY', 'cross-origin-opener-policy': 'same-origin', 'cross-origin-resource-policy': 'same-origin' };
const MAX_BODY = 64 * 1024;

const PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>strata</title>
<link rel="stylesheet" href="/assets/app.css">
<script type="module" src="/assets/app.js"></script>
</head>
<body><div id="app"></div><noscript>strata ui needs JavaScript.</noscript></body>
</html>
`;

const ASSETS: Record<string, string> = { 'app.js': 'text/javascript; charset=utf-8', 'app.css': 'text/css; charset=utf-8' };

export async function startUi(opts: UiOptions): Promise<RunningUi> {
  const api = new UiApi(opts.repo);
  const items = new ItemsApi((at) => api.tree(at));
  const jobs = new RestoreJobs(opts.repo);
  const log = opts.log ?? ((l: string) => process.stderr.write(l + '\n'));
  const sessions = new Sessions();

  const server = http.createServer((req, res) => {
    handle(req, res).catch((e: unknown) => {
      if (!(e instanceof StrataError)) log(`strata ui: ${req.method} ${new URL(req.url ?? '/', 'http://x').pathname}: ${(e as Error)?.message ?? e}`);
      if (res.headersSent) return void res.destroy();
      const err = e instanceof StrataError ? e : new StrataError('internal', 'internal error');
      json(res, httpStatus(err.code), { error: { code: err.code, message: err.message } });
    });
  });

  const handle = async (req: http.IncomingMessage, res: http.ServerResponse): Promise<void> => {
    const refused = sessions.foreign(req);
    if (refused) return refuse(res, refused);
    const url = new URL(req.url ?? '/', 'http://ui.invalid');
    const q = url.searchParams;
    if (url.pathname.startsWith('/assets/')) return asset(res, url.pathname.slice('/assets/'.length));
    if (url.pathname === '/favicon.ico') return void res.writeHead(204, SECURITY).end();
    if (url.pathname === '/') {
      if (req.method !== 'GET') return refuse(res, { status: 403, reason: 'method not allowed' });
      const given = q.get('token');
      if (given !== null && !sessions.hasSession(req)) {
        const cookie = sessions.redeem(given);
        if (!cookie) return refuse(res, { status: 403, reason: 'this link was used already, or is not one strata ui gave: start strata ui again for a new one' });
        return page(res, Sessions.cookieHeader(cookie));
      }
      if (!sessions.hasSession(req)) return refuse(res, { status: 403, reason: 'open the link strata ui printed' });
      return page(res);
    }
    if (!url.pathname.startsWith('/api/')) return refuse(res, { status: 403, reason: 'no such page' }, 404);
    const session = sessions.session(req);
    if (session === undefined) return refuse(res, { status: 403, reason: 'no session: open the link strata ui printed' });
    const route = `${req.method} ${url.pathname}`;
    switch (route) {
      case 'GET /api/snapshots':
        // With `limit`: a page of the timeline, newest first; without, every snapshot (for the pages that colour by snapshot).
        return json(res, 200, q.get('limit') !== null ? await api.snapshotPage(q) : { snapshots: await api.snapshots() });
      case 'GET /api/list':
        return json(res, 200, await api.list(q));
      case 'GET /api/stat':
        return json(res, 200, await api.stat(q));
      case 'GET /api/history':
        return json(res, 200, await api.history(q));
      case 'GET /api/toc':
        return json(res, 200, await api.changeMap(q));
      case 'GET /api/compare':
        return json(res, 200, await api.compare(q));
      case 'GET /api/blame':
        return json(res, 200, await api.blame(q));
      case 'GET /api/preview':
        return json(res, 200, await api.preview(q));
      case 'GET /api/download':
        return api.download(q, req.headers.range, withHeaders(res));
      case 'GET /api/datasets':
        return json(res, 200, await items.datasets(q));
      case 'GET /api/items':
        return json(res, 200, await items.items(q, session));
      case 'GET /api/item-preview':
        return json(res, 200, await items.preview(q));
      case 'GET /api/item':
        return items.download(q, req.headers.range, withHeaders(res));
      case 'GET /api/sql':
        return json(res, 200, await items.sql(q, session));
      case 'POST /api/restore': {
        // A form of another site cannot post JSON without a preflight, and the Origin check refuses it.
        if (!/^application\/json\b/.test(req.headers['content-type'] ?? '')) throw usageError('a restore request is JSON');
        const r = restoreRequest(await body(req));
        const job = await jobs.start(await api.tree(r.at), r);
        return json(res, 202, job);
      }
      case 'GET /api/restore': {
        const job = jobs.get(q.get('job') ?? '');
        if (!job) throw new StrataError('not_found', 'no such restore');
        return json(res, 200, job);
      }
      default:
        throw new StrataError('no_route', `no ${route}`);
    }
  };

  const asset = (res: http.ServerResponse, name: string) => {
    const type = ASSETS[name];
    if (!type) return refuse(res, { status: 403, reason: 'no such asset' }, 404);
    const file = path.join(opts.assets, name);
    fs.readFile(file, (e, data) => {
      if (e) return json(res, 500, { error: { code: 'internal', message: `the web app is not built (${name}): run npm run build` } });
      res.writeHead(200, { ...SECURITY, 'content-type': type, 'content-length': data.length, 'cache-control': 'no-cache' });
      res.end(data);
    });
  };

  await new Promise<void>((resolve, reject) => {
    server.once('error', (e: NodeJS.ErrnoException) => reject(new StrataError('listen', `cannot listen on ${opts.host}:${opts.port}: ${e.code ?? e.message}`)));
    server.listen(opts.port, opts.host, () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  const shown = opts.host.includes(':') ? `[${opts.host}]` : opts.host;
  const names = [`${shown}:${port}`, ...(opts.host === '127.0.0.1' || opts.host === '::1' || opts.host === 'localhost' ? [`localhost:${port}`, `127.0.0.1:${port}`, `[::1]:${port}`] : [])];
  sessions.answerTo(names);
  const token = sessions.issueToken();
  const origin = `http://${shown}:${port}`;
  return {
    url: `${origin}/?token=${token}`,
    origin,
    close: () =>
      new Promise<void>((resolve) => {
        jobs.abortAll();
        items.close();
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

function withHeaders(res: http.ServerResponse): http.ServerResponse {
  for (const [k, v] of Object.entries(SECURITY)) res.setHeader(k, v);
  res.setHeader('cache-control', 'no-store');
  return res;
}

function json(res: http.ServerResponse, status: number, value: unknown): void {
  const text = JSON.stringify(value);
  res.writeHead(status, { ...SECURITY, 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store' });
  res.end(text);
}

function page(res: http.ServerResponse, cookie?: string): void {
  res.writeHead(200, {
    ...SECURITY,
    'content-type': 'text/html; charset=utf-8',
    'content-security-policy': CSP,
    'cache-control': 'no-store',
    ...(cookie ? { 'set-cookie': cookie } : {}),
  });
  res.end(PAGE);
}

function refuse(res: http.ServerResponse, r: Refusal, status: number = r.status): void {
  json(res, status, { error: { code: status === 404 ? 'no_route' : 'forbidden', message: r.reason } });
}

async function body(req: http.IncomingMessage): Promise<unknown> {
  const parts: Buffer[] = [];
  let n = 0;
  for await (const c of req as AsyncIterable<Buffer>) {
    n += c.length;
    if (n > MAX_BODY) throw new StrataError('body_too_large', 'request too large');
    parts.push(c);
  }
  try {
    return JSON.parse(Buffer.concat(parts).toString('utf8'));
  } catch {
    throw new StrataError('bad_json', 'the request is not JSON');
  }
}
