/**
 * A Storage on a strata server (`strata serve`), over HTTP or HTTPS with a
 * bearer token. Connections are kept alive; every request is idempotent on
 * that server (objects are write-once, and putting the same bytes again is
 * accepted), so connection failures and 5xx answers are retried with backoff.
 *
 * The server refuses to replace an object with other bytes (409), where a
 * local directory would overwrite it; strata never does either.
 */
import * as http from 'node:http';
import * as https from 'node:https';
import { isErrorCode, StrataError, type ErrorCode } from '../errors.js';
import { drained, headStat } from './http-common.js';
import { StorageError, type Handle, type Kind, type Storage } from './storage.js';

export interface HttpStorageOptions {
  token: string;
  /** Extra trusted certificate authorities (PEM), e.g. for a self-signed server certificate. */
  ca?: string | Buffer;
  /** Attempts after the first, for connection failures and 5xx answers. */
  retries?: number;
  /** First backoff delay; it doubles with each attempt. */
  retryDelayMs?: number;
  /** A request silent for this long fails (and is retried). */
  timeoutMs?: number;
}

export interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

/** Statuses worth another try: the server or a proxy in front of it had trouble. */
const RETRY_STATUS = new Set([500, 502, 503, 504]);

const STREAM_PIECE = 4 * 1024 * 1024;

export class HttpStorage implements Storage {
  readonly location: string;
  /** Body bytes sent and received, for statistics. */
  bytesSent = 0;
  bytesReceived = 0;

  private readonly base: URL;
  /** A path the server is mounted under (behind a proxy), without the trailing slash. */
  private readonly prefix: string;
  private readonly agent: http.Agent;
  private readonly transport: typeof http | typeof https;
  private readonly retries: number;
  private readonly retryDelayMs: number;
  private readonly timeoutMs: number;

  constructor(
    url: string,
    private readonly opts: HttpStorageOptions,
  ) {
    let base: URL;
    try {
      base = new URL(url);
    } catch {
      throw new StrataError('usage', `not a URL: ${url}`);
    }
    if (base.protocol !== 'http:' && base.protocol !== 'https:') throw new StrataError('usage', `not an http(s) URL: ${url}`);
    if (base.username || base.password) throw new StrataError('usage', 'put the token in STRATA_TOKEN, not in the URL');
    this.prefix = base.pathname.replace(/\/+$/, '');
    this.base = base;
    this.location = `${base.origin}${this.prefix}`;
    this.transport = base.protocol === 'https:' ? https : http;
    this.agent =
      base.protocol === 'https:' ? new https.Agent({ keepAlive: true, maxSockets: 16, ca: opts.ca }) : new http.Agent({ keepAlive: true, maxSockets: 16 });
    this.retries = opts.retries ?? 4;
    this.retryDelayMs = opts.retryDelayMs ?? 250;
    this.timeoutMs = opts.timeoutMs ?? 120_000;
  }

  private path(kind: Kind, name?: string): string {
    return `${this.prefix}/v1/objects/${kind}${name === undefined ? '' : `/${encodeURIComponent(name)}`}`;
  }

  async put(h: Handle, data: Uint8Array | readonly Uint8Array[]): Promise<void> {
    const parts = Array.isArray(data) ? (data as readonly Uint8Array[]) : [data as Uint8Array];
    const r = await this.request('PUT', this.path(h.kind, h.name), { body: parts });
    if (r.status === 200 || r.status === 201) return;
    throw this.failure(r, 'PUT', h);
  }

  async putStream(h: Handle, source: AsyncIterable<Uint8Array>, size: number): Promise<'created' | 'identical' | 'conflict'> {
    const parts: Uint8Array[] = [];
    let got = 0;
    for await (const chunk of source) {
      got += chunk.byteLength;
      if (got > size) throw new StorageError('io', `${h.kind} ${h.name}: more than the announced ${size} bytes`);
      parts.push(chunk);
    }
    if (got !== size) throw new StorageError('short_read', `${h.kind} ${h.name}: upload ended after ${got} of ${size} bytes`);
    const existed = await this.exists(h);
    try {
      await this.put(h, parts);
    } catch (e) {
      if (e instanceof StrataError && e.code === 'conflict') return 'conflict';
      throw e;
    }
    return existed ? 'identical' : 'created';
  }

  /** Ranges of at most 4 MiB at a time: each is one request, retried on its own. */
  async *stream(h: Handle, start: number, end: number): AsyncIterable<Buffer> {
    for (let at = start; at <= end; at += STREAM_PIECE) yield await this.read(h, at, Math.min(STREAM_PIECE, end - at + 1));
  }

  async get(h: Handle): Promise<Buffer> {
    const r = await this.request('GET', this.path(h.kind, h.name));
    if (r.status === 200) return r.body;
    throw this.failure(r, 'GET', h);
  }

  async read(h: Handle, offset: number, length: number): Promise<Buffer> {
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0) {
      throw new StorageError('short_read', `${h.kind} ${h.name}: wanted ${length} bytes at ${offset}`);
    }
    if (length === 0) {
      // No byte range names zero bytes: check the size instead.
      const { size } = await this.stat(h);
      if (offset > size) throw new StorageError('short_read', `${h.kind} ${h.name}: wanted 0 bytes at ${offset}, it has ${size}`);
      return Buffer.alloc(0);
    }
    const r = await this.request('GET', this.path(h.kind, h.name), { headers: { Range: `bytes=${offset}-${offset + length - 1}` } });
    if (r.status === 206 && r.body.length === length && r.headers['content-range']?.startsWith(`bytes ${offset}-`)) return r.body;
    if (r.status === 206 || r.status === 416) {
      const size = /\/(\d+)$/.exec(r.headers['content-range'] ?? '')?.[1] ?? '?';
      throw new StorageError('short_read', `${h.kind} ${h.name}: wanted ${length} bytes at ${offset}, it has ${size}`);
    }
    if (r.status === 200) throw new StorageError('io', `${this.location} ignored a byte range request`);
    throw this.failure(r, 'GET', h);
  }

  async stat(h: Handle): Promise<{ size: number; mtimeMs: number }> {
    const r = await this.request('HEAD', this.path(h.kind, h.name));
    if (r.status !== 200) throw this.failure(r, 'HEAD', h);
    return headStat(r.headers, this.location, h);
  }

  async exists(h: Handle): Promise<boolean> {
    const r = await this.request('HEAD', this.path(h.kind, h.name));
    if (r.status === 200) return true;
    if (r.status === 404) return false;
    throw this.failure(r, 'HEAD', h);
  }

  async *list(kind: Kind): AsyncIterable<string> {
    const r = await this.request('GET', this.path(kind));
    if (r.status !== 200) throw this.failure(r, 'GET', { kind, name: '' });
    let names: unknown;
    try {
      names = (JSON.parse(r.body.toString('utf8')) as { names?: unknown }).names;
    } catch {
      names = undefined;
    }
    if (!Array.isArray(names) || !names.every((n) => typeof n === 'string')) throw new StorageError('io', `${this.location} sent a malformed ${kind} list`);
    yield* names as string[];
  }

  async delete(h: Handle): Promise<void> {
    const r = await this.request('DELETE', this.path(h.kind, h.name));
    // Already gone is gone: a retried delete may find nothing.
    if (r.status === 204 || r.status === 200 || r.status === 404) return;
    throw this.failure(r, 'DELETE', h);
  }

  /** The server removes its own partial uploads; a client has none. */
  async sweepTemporary(_olderThanMs: number): Promise<number> {
    return 0;
  }

  async close(): Promise<void> {
    this.agent.destroy();
  }

  /** One request under the server's base path (`route` starts with /v1/), retried like every other. */
  async call(method: string, route: string, opts: { headers?: Record<string, string>; body?: readonly Uint8Array[]; json?: unknown } = {}): Promise<Reply> {
    if (opts.json !== undefined) {
      return this.request(method, this.prefix + route, { headers: { ...opts.headers, 'Content-Type': 'application/json' }, body: [Buffer.from(JSON.stringify(opts.json))] });
    }
    return this.request(method, this.prefix + route, opts);
  }

  private async request(method: string, path: string, opts: { headers?: Record<string, string>; body?: readonly Uint8Array[] } = {}): Promise<Reply> {
    let last: Error | undefined;
    for (let attempt = 0; attempt <= this.retries; attempt++) {
      if (attempt > 0) {
        const delay = this.retryDelayMs * 2 ** (attempt - 1);
        await new Promise((r) => setTimeout(r, delay * (0.75 + Math.random() / 2)));
      }
      try {
        const reply = await this.once(method, path, opts);
        if (!RETRY_STATUS.has(reply.status) || attempt === this.retries) return reply;
        last = new Error(`${reply.status} ${serverAnswer(reply).message}`);
      } catch (e) {
        last = e as Error;
      }
    }
    throw new StorageError('io', `${method} ${this.location}${path.slice(this.prefix.length)}: ${describe(last)}`);
  }

  private once(method: string, path: string, opts: { headers?: Record<string, string>; body?: readonly Uint8Array[] }): Promise<Reply> {
    const length = opts.body?.reduce((n, p) => n + p.byteLength, 0) ?? 0;
    const headers: Record<string, string> = { Authorization: `Bearer ${this.opts.token}`, ...opts.headers };
    if (opts.body) {
      headers['Content-Length'] = String(length);
      headers['Content-Type'] ??= 'application/octet-stream';
    }
    return new Promise<Reply>((resolve, reject) => {
      const req = this.transport.request(
        { protocol: this.base.protocol, hostname: this.base.hostname, port: this.base.port, method, path, headers, agent: this.agent, timeout: this.timeoutMs },
        (res) => {
          const chunks: Buffer[] = [];
          let got = 0;
          res.on('data', (c: Buffer) => {
            chunks.push(c);
            got += c.length;
            this.bytesReceived += c.length;
          });
          res.on('error', reject);
          res.on('end', () => {
            const declared = res.headers['content-length'];
            if (!res.complete || (method !== 'HEAD' && declared !== undefined && Number(declared) !== got)) {
              reject(new Error(`the response was cut off after ${got} bytes`));
              return;
            }
            resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks, got) });
          });
        },
      );
      req.on('timeout', () => req.destroy(new Error(`no answer for ${Math.round(this.timeoutMs / 1000)} s`)));
      req.on('error', reject);
      if (!opts.body) {
        req.end();
        return;
      }
      // Parts are written in order, waiting for the socket to drain between them.
      void (async () => {
        for (const part of opts.body!) {
          if (req.destroyed) return;
          this.bytesSent += part.byteLength;
          if (!req.write(part)) await drained(req);
        }
        req.end();
      })();
    });
  }

  private failure(r: Reply, method: string, h: Handle): StrataError {
    return this.refusal(r, method, h.name ? `${h.kind} ${h.name}` : `${h.kind} list`);
  }

  /** The error for an answer that is not the one hoped for: the server's code, so the exit code a local repository gives. */
  refusal(r: Reply, method: string, what: string): StrataError {
    const answer = serverAnswer(r);
    const code = answer.code ?? BY_STATUS[r.status] ?? 'remote';
    const message = answer.message;
    switch (code) {
      case 'unauthorized':
        return new StrataError('unauthorized', `${this.location} refused the token (${message}); check the token, or ask for a new one`);
      case 'forbidden':
        return new StrataError('forbidden', `${this.location} does not allow ${method} of ${what} with this token: ${message}`);
      case 'not_found':
        return new StorageError('not_found', `${what} not found`);
      case 'conflict':
        return new StrataError('conflict', `${what} already exists on ${this.location} with other content`);
      case 'insufficient_storage':
        return new StrataError('insufficient_storage', `${this.location} is out of disk space`);
      case 'short_read':
      case 'io':
        return new StorageError(code, `${method} ${what} on ${this.location}: ${r.status} ${message}`);
      default:
        return new StrataError(code, `${method} ${what} on ${this.location}: ${r.status} ${message}`);
    }
  }
}

/** For an answer without a code of ours (a proxy's page, say): what its status alone says. */
const BY_STATUS: Partial<Record<number, ErrorCode>> = {
  401: 'unauthorized',
  403: 'forbidden',
  404: 'not_found',
  409: 'conflict',
  416: 'range_not_satisfiable',
  507: 'insufficient_storage',
};

/**
 * A server's error answer, `{"error": CODE, "message": TEXT}`. A code this
 * client does not know (a newer server's) is `remote`, a generic error, never
 * a crash; an answer with no code (not one of ours) has none.
 */
export function serverAnswer(r: Reply): { code: ErrorCode | undefined; message: string } {
  let body: unknown;
  try {
    body = JSON.parse(r.body.toString('utf8'));
  } catch {
    // Not one of ours: a proxy's page, say.
  }
  const { error, message } = typeof body === 'object' && body !== null ? (body as { error?: unknown; message?: unknown }) : {};
  const text = typeof message === 'string' ? message.slice(0, 300) : (http.STATUS_CODES[r.status] ?? 'unexpected answer');
  if (isErrorCode(error)) return { code: error, message: text };
  if (typeof error === 'string') return { code: 'remote', message: `${text} (${error.slice(0, 40)})` };
  return { code: undefined, message: text };
}


function describe(e: Error | undefined): string {
  const code = (e as NodeJS.ErrnoException | undefined)?.code;
  if (code === 'ECONNREFUSED') return 'connection refused (is the server running?)';
  if (code === 'ENOTFOUND') return 'no such host';
  if (code === 'ECONNRESET') return 'connection reset';
  if (code?.startsWith('ERR_TLS') || code === 'DEPTH_ZERO_SELF_SIGNED_CERT' || code === 'SELF_SIGNED_CERT_IN_CHAIN' || code === 'UNABLE_TO_VERIFY_LEAF_SIGNATURE') {
    return `TLS: ${e!.message}`;
  }
  return e?.message ?? 'failed';
}
