/**
 * A Storage in an S3-compatible object store (AWS S3, Ceph's RADOS Gateway,
 * MinIO): objects under s3://BUCKET/PREFIX, laid out as in a directory
 * (config, keys/, dicts/, packs/xx/), addressed path-style.
 *
 * - Reads are ranged GETs; a stream is one GET of its range, read as it comes.
 * - Puts are create-only (`If-None-Match: *`): a name taken is answered 412,
 *   and the object there is compared with ours (identical: a retried upload;
 *   other bytes: conflict). Nothing is ever replaced.
 * - Large objects (over 64 MiB) go up in parts (multipart upload), a few at
 *   a time, each part a slice of what is already in memory or read from the
 *   source as it comes: never a second copy of a whole pack. Completion is
 *   create-only too where the store honours it, and checked first where not.
 * - Connections are kept alive and bounded (`connections`); requests beyond
 *   wait their turn. On a plain-http endpoint on this machine or a private
 *   network, a request whose answer is small (a listing, a small object, a
 *   short range) goes over a connection of its own: Ceph's RGW, as
 *   configured by default, holds a small answer's body on a reused
 *   connection until the client acknowledges its headers, which Linux delays
 *   by 40 ms (Nagle's algorithm meeting delayed ACKs); a new connection costs
 *   a fraction of a millisecond there (and a round trip farther away).
 * - Failures that pass (5xx, 503 SlowDown, timeouts, dropped connections) are
 *   StorageError "io": RetryingStorage (retry.ts), which this driver is used
 *   through, tries them again with backoff and jitter.
 */
import { createHash } from 'node:crypto';
import * as http from 'node:http';
import * as https from 'node:https';
import { StrataError } from '../errors.js';
import { EMPTY_SHA256, s3Settings, signRequest, uriEncode, type S3Settings, type S3SettingsOptions } from './aws.js';
import { drained, headStat, nearbyHost } from './http-common.js';
import { retrying, type RetryPolicy } from './retry.js';
import { StorageError, type ConditionalObjects, type Handle, type Kind, type Storage } from './storage.js';

const NAME = /^[0-9a-zA-Z_.-]+$/;
const DIRS: Record<Exclude<Kind, 'config'>, string> = { key: 'keys/', pack: 'packs/', dict: 'dicts/' };

export interface S3Location {
  bucket: string;
  /** Empty, or ending in "/". */
  prefix: string;
}

/** s3://BUCKET/PREFIX as bucket and prefix; undefined for what is not one. */
export function parseS3Url(url: string): S3Location | undefined {
  const m = /^s3:\/\/([^/?#]+)(\/[^?#]*)?$/i.exec(url);
  if (!m) return undefined;
  const bucket = m[1]!;
  if (!/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(bucket)) return undefined;
  const inner = (m[2] ?? '').replace(/^\/+|\/+$/g, '');
  if (inner.split('/').some((s) => s === '.' || s === '..') || /\/\//.test(inner)) return undefined;
  return { bucket, prefix: inner ? `${inner}/` : '' };
}

export interface S3StorageOptions extends S3SettingsOptions {
  /** Connections at most (requests beyond wait for one). */
  connections?: number;
  /** A request silent for this long fails (and is retried). */
  timeoutMs?: number;
  /** Objects larger than this go up in parts. */
  multipartThreshold?: number;
  /** The size of each part (at least 5 MiB, S3's minimum). */
  partSize?: number;
  /** Parts sent at once in one upload. */
  partsAtOnce?: number;
  /** Keys per listing page (S3's maximum is 1000). */
  pageSize?: number;
  /** For the parts of a multipart upload, tried here one by one. */
  retry?: RetryPolicy;
}

/** Requests made, by kind, and bytes moved: what a command cost. */
export interface S3Counters {
  requests: Record<string, number>;
  bytesSent: number;
  bytesReceived: number;
}

interface Answer {
  status: number;
  headers: http.IncomingHttpHeaders;
  res: http.IncomingMessage;
}

type Body = readonly Uint8Array[];

/** Most of S3's answers are small XML documents: the text of each <tag>. */
function xmlValues(xml: string, tag: string): string[] {
  return [...xml.matchAll(new RegExp(`<${tag}>([^<]*)</${tag}>`, 'g'))].map((m) => unescapeXml(m[1]!));
}

function unescapeXml(s: string): string {
  return s.replace(/&(lt|gt|amp|quot|apos|#\d+|#x[0-9a-f]+);/gi, (_, e: string) => {
    const named: Record<string, string> = { lt: '<', gt: '>', amp: '&', quot: '"', apos: "'" };
    if (named[e.toLowerCase()]) return named[e.toLowerCase()]!;
    return String.fromCodePoint(e[1] === 'x' || e[1] === 'X' ? parseInt(e.slice(2), 16) : parseInt(e.slice(1), 10));
  });
}

const sha256 = (parts: Body) => {
  const h = createHash('sha256');
  for (const p of parts) h.update(p);
  return h.digest('hex');
};

const RETRY_STATUS = new Set([500, 502, 503, 504]);

/**
 * How an S3 store is retried (through RetryingStorage, and each part of an
 * upload here): six tries over about 8 s (4 to 12 s with jitter), long
 * enough for a gateway restarting or a load balancer failing over.
 */
export const S3_RETRY: RetryPolicy = { attempts: 6, delayMs: 250 };

/** Answers expected to be shorter than this count as small (see the top): below a loopback segment's size, where the wait was seen. */
const SMALL_ANSWER = 64 * 1024;

/** Bytes from which an object's data is read into shared memory (see S3Storage.body). */
const SHARED_BODY = 64 * 1024;

export class S3Storage implements Storage {
  readonly location: string;
  readonly counters: S3Counters = { requests: {}, bytesSent: 0, bytesReceived: 0 };
  private readonly settings: S3Settings;
  private readonly agent: http.Agent;
  /** For small answers on a plain-http endpoint: a connection per request (see the top). */
  private readonly brief?: http.Agent;
  /** Whether the endpoint is nearby (see the top), found out with the first request that could use `brief`. */
  private near?: Promise<boolean>;
  private readonly transport: typeof http | typeof https;
  private readonly timeoutMs: number;
  private readonly multipartThreshold: number;
  private readonly partSize: number;
  private readonly partsAtOnce: number;
  private readonly pageSize: number;
  private readonly retry: RetryPolicy;

  constructor(
    readonly where: S3Location,
    opts: S3StorageOptions = {},
  ) {
    this.settings = s3Settings(opts);
    this.location = `s3://${where.bucket}/${where.prefix}`;
    const connections = opts.connections ?? 16;
    const https_ = this.settings.endpoint.protocol === 'https:';
    this.transport = https_ ? https : http;
    this.agent = https_ ? new https.Agent({ keepAlive: true, maxSockets: connections }) : new http.Agent({ keepAlive: true, maxSockets: connections });
    if (!https_) this.brief = new http.Agent({ keepAlive: false, maxSockets: connections });
    this.timeoutMs = opts.timeoutMs ?? 60_000;
    this.partSize = Math.max(opts.partSize ?? 16 * 1024 * 1024, 5 * 1024 * 1024);
    this.multipartThreshold = Math.max(opts.multipartThreshold ?? 64 * 1024 * 1024, this.partSize);
    this.partsAtOnce = opts.partsAtOnce ?? 4;
    this.pageSize = opts.pageSize ?? 1000;
    this.retry = opts.retry ?? S3_RETRY;
  }

  /** Body bytes sent and received (as HttpStorage counts them: what a command's --json reports). */
  get bytesSent(): number {
    return this.counters.bytesSent;
  }

  get bytesReceived(): number {
    return this.counters.bytesReceived;
  }

  /** The endpoint, for messages. */
  get endpoint(): string {
    return this.settings.endpoint.origin;
  }

  private key(h: Handle): string {
    if (!NAME.test(h.name) || h.name.startsWith('.')) throw new StorageError('io', `invalid object name ${JSON.stringify(h.name)}`);
    if (h.kind === 'config') return `${this.where.prefix}config`;
    if (h.kind === 'pack') return `${this.where.prefix}packs/${h.name.slice(0, 2)}/${h.name}`;
    return `${this.where.prefix}${DIRS[h.kind]}${h.name}`;
  }

  // --- requests

  /**
   * One signed request; the answer's body is left to read. `key` undefined
   * means the bucket itself. Connection failures and timeouts are "io".
   * `large`: a GET whose answer is SMALL_ANSWER bytes or more, which keeps
   * to the shared connections (the answers to other GETs and POSTs are
   * small; those to PUT, HEAD and DELETE have no body to hold back).
   */
  private async request(
    method: string,
    key: string | undefined,
    opts: { query?: Record<string, string>; headers?: Record<string, string>; body?: Body; what?: string; large?: boolean } = {},
  ): Promise<Answer> {
    const body = opts.body ?? [];
    const length = body.reduce((n, p) => n + p.byteLength, 0);
    const base = this.settings.endpoint.pathname.replace(/\/+$/, '');
    const req = {
      path: `${base}/${uriEncode(this.where.bucket)}${key === undefined ? '' : `/${uriEncode(key, true)}`}`,
      query: opts.query ?? {},
      headers: { ...opts.headers } as Record<string, string>,
    };
    if (opts.body || method === 'PUT' || method === 'POST') req.headers['Content-Length'] = String(length);
    const target = signRequest(this.settings, method, req, length > 0 ? sha256(body) : EMPTY_SHA256);
    const label = opts.what ?? method;
    this.counters.requests[label] = (this.counters.requests[label] ?? 0) + 1;
    const { hostname, port, protocol } = this.settings.endpoint;
    const brief = this.brief && !opts.large && (method === 'GET' || method === 'POST') && (await (this.near ??= nearbyHost(hostname)));
    return new Promise<Answer>((resolve, reject) => {
      const agent = brief ? this.brief : this.agent;
      const r = this.transport.request({ protocol, hostname, port, method, path: target, headers: req.headers, agent, timeout: this.timeoutMs }, (res) =>
        resolve({ status: res.statusCode ?? 0, headers: res.headers, res }),
      );
      r.on('timeout', () => r.destroy(Object.assign(new Error(`no answer for ${Math.round(this.timeoutMs / 1000)} s`), { code: 'ETIMEDOUT' })));
      r.on('error', (e) => reject(this.unreachable(e, method, key)));
      if (body.length === 0) {
        r.end();
        return;
      }
      void (async () => {
        for (const part of body) {
          if (r.destroyed) return;
          this.counters.bytesSent += part.byteLength;
          if (!r.write(part)) await drained(r);
        }
        r.end();
      })();
    });
  }

  private unreachable(e: Error, method: string, key: string | undefined): StorageError {
    const code = (e as NodeJS.ErrnoException).code;
    const why =
      code === 'ECONNREFUSED' ? 'connection refused (is the S3 endpoint running?)' : code === 'ENOTFOUND' ? 'no such host' : code === 'ECONNRESET' ? 'connection reset' : e.message;
    return new StorageError('io', `${method} ${this.describe(key)} at ${this.endpoint}: ${why}`);
  }

  private describe(key: string | undefined): string {
    return key === undefined ? `bucket ${this.where.bucket}` : `s3://${this.where.bucket}/${key}`;
  }

  /**
   * The whole body of an answer, checked against its Content-Length. With
   * `shared`, a body of SHARED_BODY bytes or more is read into shared memory:
   * a restore hands a pack's sealed blocks to its workers as views of it,
   * with no copy (engine/unpack.ts).
   */
  private async body(a: Answer, shared = false): Promise<Buffer> {
    const declared = a.headers['content-length'];
    const size = declared === undefined ? undefined : Number(declared);
    const into = shared && size !== undefined && Number.isSafeInteger(size) && size >= SHARED_BODY ? Buffer.from(new SharedArrayBuffer(size)) : undefined;
    const chunks: Buffer[] = [];
    let got = 0;
    try {
      for await (const c of a.res) {
        const chunk = c as Buffer;
        if (!into) chunks.push(chunk);
        else if (got + chunk.length <= into.length) chunk.copy(into, got);
        got += chunk.length;
      }
      this.counters.bytesReceived += got;
    } catch (e) {
      throw new StorageError('io', `the answer from ${this.endpoint} was cut off: ${(e as Error).message}`);
    }
    if (size !== undefined && size !== got) throw new StorageError('io', `the answer from ${this.endpoint} was cut off after ${got} bytes`);
    return into ?? Buffer.concat(chunks, got);
  }

  /** A request whose whole answer is read. */
  private async exchange(method: string, key: string | undefined, opts: Parameters<S3Storage['request']>[2] & { shared?: boolean } = {}): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: Buffer }> {
    const { shared, ...rest } = opts;
    const a = await this.request(method, key, rest);
    // A HEAD's answer is waited out too: its connection is free for the next request only then.
    return { status: a.status, headers: a.headers, body: method === 'HEAD' ? await ended(a.res) : await this.body(a, shared && a.status >= 200 && a.status < 300) };
  }

  /**
   * The error for an answer that is not the one hoped for: not found, the
   * store refusing the credentials or the request, a missing bucket, or a
   * failure that may pass ("io", tried again).
   */
  failure(a: { status: number; body: Buffer }, method: string, key: string | undefined): StrataError {
    const xml = a.body.toString('utf8');
    const code = xmlValues(xml, 'Code')[0] ?? '';
    const message = xmlValues(xml, 'Message')[0] ?? http.STATUS_CODES[a.status] ?? 'unexpected answer';
    const what = this.describe(key);
    const said = `${a.status}${code ? ` ${code}` : ''}${message && message !== code ? `: ${message}` : ''}`;
    if (code === 'NoSuchBucket') {
      return new StrataError('no_repository', `no bucket ${this.where.bucket} at ${this.endpoint} (strata init creates it)`);
    }
    if (a.status === 404) return new StorageError('not_found', `${what} not found`);
    if (['InvalidAccessKeyId', 'SignatureDoesNotMatch', 'InvalidToken', 'ExpiredToken', 'TokenRefreshRequired', 'AuthorizationHeaderMalformed'].includes(code)) {
      return new StrataError('unauthorized', `${this.endpoint} refused the S3 credentials (${said}); check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or the profile`);
    }
    if (a.status === 403) return new StrataError('forbidden', `${this.endpoint} does not allow ${method} of ${what} with these credentials (${said})`);
    if (a.status === 416) return new StorageError('short_read', `${what}: ${said}`);
    if (RETRY_STATUS.has(a.status) || a.status === 429 || code === 'SlowDown' || code === 'RequestTimeout' || code === 'InternalError') {
      return new StorageError('io', `${method} ${what} at ${this.endpoint}: ${said}`);
    }
    return new StrataError('remote', `${method} ${what} at ${this.endpoint}: ${said}`);
  }

  // --- the bucket

  /** Whether the bucket is there (false when it is not; an error when it cannot be told). */
  async bucketExists(): Promise<boolean> {
    const a = await this.exchange('HEAD', undefined, { what: 'HEAD bucket' });
    if (a.status === 200) return true;
    if (a.status === 404) return false;
    // A HEAD's answer has no body to say why: ask again with a GET that has one.
    const b = await this.exchange('GET', undefined, { query: { 'list-type': '2', 'max-keys': '1' }, what: 'LIST' });
    if (b.status === 200) return true;
    const e = this.failure(b, 'GET', undefined);
    if (e.code === 'no_repository') return false;
    throw e;
  }

  /** Creates the bucket, or says why it cannot; "exists" when it was there. */
  async createBucket(): Promise<'created' | 'exists'> {
    let exists: boolean;
    try {
      exists = await this.bucketExists();
    } catch (e) {
      if (e instanceof StrataError && e.code === 'forbidden') {
        throw new StrataError('forbidden', `bucket ${this.where.bucket} at ${this.endpoint} exists and these credentials may not use it (${e.message})`);
      }
      throw e;
    }
    if (exists) return 'exists';
    const region = this.settings.region;
    const body =
      region === 'us-east-1'
        ? []
        : [Buffer.from(`<CreateBucketConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><LocationConstraint>${region}</LocationConstraint></CreateBucketConfiguration>`)];
    const a = await this.exchange('PUT', undefined, { body, what: 'CREATE bucket' });
    if (a.status === 200) return 'created';
    const code = xmlValues(a.body.toString('utf8'), 'Code')[0];
    if (code === 'BucketAlreadyOwnedByYou') return 'exists';
    if (code === 'BucketAlreadyExists') throw new StrataError('forbidden', `bucket ${this.where.bucket} at ${this.endpoint} belongs to someone else; choose another name`);
    const e = this.failure(a, 'PUT', undefined);
    if (e.code === 'forbidden') throw new StrataError('forbidden', `cannot create bucket ${this.where.bucket} at ${this.endpoint}: these credentials may not (${e.message})`);
    throw e;
  }

  // --- writing

  async put(h: Handle, data: Uint8Array | readonly Uint8Array[]): Promise<void> {
    const parts = Array.isArray(data) ? (data as Body) : [data as Uint8Array];
    const size = parts.reduce((n, p) => n + p.byteLength, 0);
    const key = this.key(h);
    const result = size > this.multipartThreshold ? await this.multipart(key, rechunk(parts, this.partSize), size) : await this.putOnce(key, parts);
    if (result === 'exists' && !(await this.holds(h, size, sha256(parts)))) {
      throw new StorageError('conflict', `${h.kind} ${h.name} already exists with other content; objects are never replaced`);
    }
  }

  async putStream(h: Handle, source: AsyncIterable<Uint8Array>, size: number): Promise<'created' | 'identical' | 'conflict'> {
    const key = this.key(h);
    const hash = createHash('sha256');
    const counted = checkedSource(source, size, h, hash);
    if (await this.exists(h)) {
      // Drain the upload before answering, so the connection it came on stays usable.
      for await (const _ of counted);
      return (await this.holds(h, size, hash.digest('hex'))) ? 'identical' : 'conflict';
    }
    let result: 'created' | 'exists';
    if (size <= this.multipartThreshold) {
      const parts: Uint8Array[] = [];
      for await (const c of counted) parts.push(c);
      result = await this.putOnce(key, parts);
    } else {
      result = await this.multipart(key, rechunk(counted, this.partSize), size);
    }
    if (result === 'created') return 'created';
    return (await this.holds(h, size, hash.digest('hex'))) ? 'identical' : 'conflict';
  }

  /** One create-only PUT: "exists" when the name is taken (412). */
  private async putOnce(key: string, parts: Body): Promise<'created' | 'exists'> {
    const a = await this.exchange('PUT', key, { body: parts, headers: { 'If-None-Match': '*', 'Content-Type': 'application/octet-stream' }, what: 'PUT' });
    if (a.status === 200) return 'created';
    if (a.status === 412) return 'exists';
    // Another create-only PUT of this name under way (AWS): it will have won or lost by the retry.
    if (a.status === 409 && xmlValues(a.body.toString('utf8'), 'Code')[0] === 'ConditionalRequestConflict') {
      throw new StorageError('io', `PUT ${this.describe(key)}: a concurrent write of the same name`);
    }
    throw this.failure(a, 'PUT', key);
  }

  /**
   * A multipart upload of `parts` (each at least 5 MiB but the last), at
   * most partsAtOnce in flight, each tried again on its own; completed
   * create-only. Aborted if anything fails, so no part is left behind.
   */
  private async multipart(key: string, parts: AsyncIterable<Uint8Array[]> | Iterable<Uint8Array[]>, size: number): Promise<'created' | 'exists'> {
    const started = await this.exchange('POST', key, { query: { uploads: '' }, headers: { 'Content-Type': 'application/octet-stream' }, what: 'CREATE multipart' });
    if (started.status !== 200) throw this.failure(started, 'POST', key);
    const uploadId = xmlValues(started.body.toString('utf8'), 'UploadId')[0];
    if (!uploadId) throw new StorageError('io', `${this.endpoint} started a multipart upload without an id`);
    const etags: string[] = [];
    const inFlight = new Set<Promise<void>>();
    let failed: unknown;
    try {
      let n = 0;
      let sent = 0;
      for await (const body of parts) {
        const number = ++n;
        sent += body.reduce((s, p) => s + p.byteLength, 0);
        const p = retrying(this.retry, async () => {
          const a = await this.exchange('PUT', key, { query: { partNumber: String(number), uploadId }, body, what: 'PUT part' });
          if (a.status !== 200 || !a.headers.etag) throw this.failure(a, 'PUT', key);
          etags[number - 1] = String(a.headers.etag);
        }).then(
          () => void inFlight.delete(p),
          (e: unknown) => {
            inFlight.delete(p);
            failed ??= e;
          },
        );
        inFlight.add(p);
        if (inFlight.size >= this.partsAtOnce) await Promise.race(inFlight);
        if (failed) throw failed;
      }
      await Promise.all(inFlight);
      if (failed) throw failed;
      if (sent !== size) throw new StorageError('short_read', `${this.describe(key)}: ${sent} of ${size} bytes to upload`);
      // Not every store honours If-None-Match on completion (Ceph RGW 16 ignores it): a name
      // taken already is found by asking first. Between that answer and the completion is a
      // narrow race (local.ts has the same without hard links); a single PUT has none, and
      // packs (8 MiB unless --pack-size says otherwise) are single PUTs.
      const there = await retrying(this.retry, () => this.exchange('HEAD', key, { what: 'HEAD' }));
      if (there.status === 200) {
        await this.exchange('DELETE', key, { query: { uploadId }, what: 'ABORT multipart' }).catch(() => {});
        return 'exists';
      }
      const xml = `<CompleteMultipartUpload>${etags.map((e, i) => `<Part><PartNumber>${i + 1}</PartNumber><ETag>${e}</ETag></Part>`).join('')}</CompleteMultipartUpload>`;
      const done = await retrying(this.retry, async () => {
        const a = await this.exchange('POST', key, { query: { uploadId }, body: [Buffer.from(xml)], headers: { 'If-None-Match': '*' }, what: 'COMPLETE multipart' });
        // A completion may fail after its 200 has begun: the error is then in the body.
        if (a.status === 200 && !a.body.toString('utf8').includes('<Error>')) return 'created' as const;
        if (a.status === 412) return 'exists' as const;
        // Completed by an earlier try whose answer was lost.
        if (a.status === 404 && xmlValues(a.body.toString('utf8'), 'Code')[0] === 'NoSuchUpload') return 'exists' as const;
        throw this.failure(a.status === 200 ? { ...a, status: 500 } : a, 'POST', key);
      });
      return done;
    } catch (e) {
      await Promise.allSettled(inFlight);
      await this.exchange('DELETE', key, { query: { uploadId }, what: 'ABORT multipart' }).catch(() => {});
      throw e;
    }
  }

  /** Whether the object under `h` is `size` bytes with SHA-256 `digest` (hex). */
  private async holds(h: Handle, size: number, digest: string): Promise<boolean> {
    const st = await this.stat(h);
    if (st.size !== size) return false;
    const hash = createHash('sha256');
    if (size > 0) for await (const c of this.stream(h, 0, size - 1)) hash.update(c);
    return hash.digest('hex') === digest;
  }

  // --- reading

  async get(h: Handle): Promise<Buffer> {
    const key = this.key(h);
    // Packs are large; the other objects (config, keys, snapshots, records) small.
    const a = await this.exchange('GET', key, { what: 'GET', shared: true, large: h.kind === 'pack' });
    if (a.status === 200) return a.body;
    throw this.failure(a, 'GET', key);
  }

  async read(h: Handle, offset: number, length: number): Promise<Buffer> {
    const key = this.key(h);
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || !Number.isSafeInteger(offset + length)) {
      throw new StorageError('short_read', `${h.kind} ${h.name}: wanted ${length} bytes at ${offset}`);
    }
    if (length === 0) {
      // No byte range names zero bytes: check the size instead.
      const { size } = await this.stat(h);
      if (offset > size) throw new StorageError('short_read', `${h.kind} ${h.name}: wanted 0 bytes at ${offset}, it has ${size}`);
      return Buffer.alloc(0);
    }
    const a = await this.exchange('GET', key, { headers: { Range: `bytes=${offset}-${offset + length - 1}` }, what: 'GET range', shared: true, large: length >= SMALL_ANSWER });
    if (a.status === 206) {
      if (a.body.length === length && String(a.headers['content-range']).startsWith(`bytes ${offset}-`)) return a.body;
      const size = /\/(\d+)$/.exec(String(a.headers['content-range']))?.[1] ?? '?';
      throw new StorageError('short_read', `${h.kind} ${h.name}: wanted ${length} bytes at ${offset}, it has ${size}`);
    }
    if (a.status === 200) {
      // A gateway that ignores byte ranges sends the whole object: the range is cut from it.
      if (a.body.length >= offset + length) return a.body.subarray(offset, offset + length);
      throw new StorageError('short_read', `${h.kind} ${h.name}: wanted ${length} bytes at ${offset}, it has ${a.body.length}`);
    }
    if (a.status === 416) throw new StorageError('short_read', `${h.kind} ${h.name}: wanted ${length} bytes at ${offset}, past its end`);
    throw this.failure(a, 'GET', key);
  }

  async *stream(h: Handle, start: number, end: number): AsyncIterable<Buffer> {
    const key = this.key(h);
    if (end < start) {
      await this.stat(h);
      return;
    }
    if (start < 0) throw new StorageError('short_read', `${h.kind} ${h.name}: wanted bytes ${start}-${end}`);
    const a = await this.request('GET', key, { headers: { Range: `bytes=${start}-${end}` }, what: 'GET range', large: end - start + 1 >= SMALL_ANSWER });
    try {
      if (a.status !== 206 && a.status !== 200) {
        const body = await this.body(a).catch(() => Buffer.alloc(0));
        if (a.status === 416) throw new StorageError('short_read', `${h.kind} ${h.name}: wanted bytes ${start}-${end}, past its end`);
        throw this.failure({ status: a.status, body }, 'GET', key);
      }
      const range = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(String(a.headers['content-range']));
      const size = Number(range?.[3] ?? a.headers['content-length']);
      if (a.status === 206 ? Number(range?.[1]) !== start || Number(range?.[2]) !== end : !(size > end)) {
        throw new StorageError('short_read', `${h.kind} ${h.name}: wanted bytes ${start}-${end}, it has ${size}`);
      }
      // A whole object (a gateway that ignores byte ranges): the bytes before start are skipped, those after end left.
      let skip = a.status === 200 ? start : 0;
      let got = 0;
      try {
        for await (const chunk of a.res) {
          let c = chunk as Buffer;
          this.counters.bytesReceived += c.length;
          if (skip > 0) {
            const n = Math.min(skip, c.length);
            skip -= n;
            c = c.subarray(n);
          }
          c = c.subarray(0, end - start + 1 - got);
          if (c.length === 0) {
            if (got === end - start + 1) break;
            continue;
          }
          got += c.length;
          yield c;
        }
      } catch (e) {
        throw new StorageError('io', `reading ${h.kind} ${h.name} from ${this.endpoint}: ${(e as Error).message}`);
      }
      if (got !== end - start + 1) throw new StorageError('io', `reading ${h.kind} ${h.name} from ${this.endpoint}: cut off after ${got} bytes`);
    } finally {
      // A reader that stopped early: let the connection go rather than read the rest.
      if (!a.res.complete) a.res.destroy();
    }
  }

  async stat(h: Handle): Promise<{ size: number; mtimeMs: number }> {
    const key = this.key(h);
    const a = await this.exchange('HEAD', key, { what: 'HEAD' });
    if (a.status !== 200) throw this.failure(a, 'HEAD', key);
    return headStat(a.headers, this.endpoint, h);
  }

  async exists(h: Handle): Promise<boolean> {
    const key = this.key(h);
    const a = await this.exchange('HEAD', key, { what: 'HEAD' });
    if (a.status === 200) return true;
    if (a.status === 404) return false;
    throw this.failure(a, 'HEAD', key);
  }

  /**
   * Every key under `prefix` in byte order, page by page (the first of
   * `firstPage` keys, if given); `retry`: each page tried again on transient
   * failures (for callers not behind RetryingStorage).
   */
  private async *keys(prefix: string, firstPage?: number, retry = false): AsyncIterable<string> {
    let token: string | undefined;
    let page = Math.min(firstPage ?? this.pageSize, this.pageSize);
    do {
      const query: Record<string, string> = { 'list-type': '2', prefix, 'max-keys': String(page) };
      page = this.pageSize;
      if (token) query['continuation-token'] = token;
      const ask = async () => {
        const answer = await this.exchange('GET', undefined, { query, what: 'LIST' });
        if (answer.status !== 200) throw this.failure(answer, 'GET', undefined);
        return answer;
      };
      const a = retry ? await retrying(this.retry, ask) : await ask();
      const xml = a.body.toString('utf8');
      yield* xmlValues(xml, 'Key');
      token = xmlValues(xml, 'IsTruncated')[0] === 'true' ? xmlValues(xml, 'NextContinuationToken')[0] : undefined;
    } while (token);
  }

  async *list(kind: Kind): AsyncIterable<string> {
    if (kind === 'config') {
      if (await this.exists({ kind, name: 'config' })) yield 'config';
      return;
    }
    const base = `${this.where.prefix}${DIRS[kind]}`;
    for await (const key of this.keys(base)) {
      const name = key.slice(key.lastIndexOf('/') + 1);
      if (NAME.test(name) && !name.startsWith('.')) yield name;
    }
  }

  async delete(h: Handle): Promise<void> {
    const key = this.key(h);
    const a = await this.exchange('DELETE', key, { what: 'DELETE' });
    if (a.status === 204 || a.status === 200 || a.status === 404) return;
    throw this.failure(a, 'DELETE', key);
  }

  /** Aborts multipart uploads under the prefix begun before `olderThanMs` ago (interrupted puts); returns the bytes their parts held. */
  async sweepTemporary(olderThanMs: number): Promise<number> {
    let freed = 0;
    let marker: { key: string; upload: string } | undefined;
    do {
      const query: Record<string, string> = { uploads: '', prefix: this.where.prefix };
      if (marker) Object.assign(query, { 'key-marker': marker.key, 'upload-id-marker': marker.upload });
      const a = await this.exchange('GET', undefined, { query, what: 'LIST uploads' });
      if (a.status !== 200) throw this.failure(a, 'GET', undefined);
      const xml = a.body.toString('utf8');
      for (const u of xml.match(/<Upload>[\s\S]*?<\/Upload>/g) ?? []) {
        const key = xmlValues(u, 'Key')[0];
        const uploadId = xmlValues(u, 'UploadId')[0];
        const initiated = Date.parse(xmlValues(u, 'Initiated')[0] ?? '');
        if (!key || !uploadId || !(initiated <= Date.now() - olderThanMs)) continue;
        const parts = await this.exchange('GET', key, { query: { uploadId }, what: 'LIST parts' });
        if (parts.status === 200) freed += xmlValues(parts.body.toString('utf8'), 'Size').reduce((n, s) => n + Number(s), 0);
        const gone = await this.exchange('DELETE', key, { query: { uploadId }, what: 'ABORT multipart' });
        if (gone.status !== 204 && gone.status !== 200 && gone.status !== 404) throw this.failure(gone, 'DELETE', key);
      }
      const truncated = xmlValues(xml, 'IsTruncated')[0] === 'true';
      const next = { key: xmlValues(xml, 'NextKeyMarker')[0] ?? '', upload: xmlValues(xml, 'NextUploadIdMarker')[0] ?? '' };
      marker = truncated && next.key ? next : undefined;
    } while (marker);
    return freed;
  }

  /**
   * Leases, as objects under PREFIX/leases/ written conditionally
   * (ConditionalObjects): created with If-None-Match: *, renewed with
   * If-Match on the version last written. Each step is tried again on
   * transient failures; a write whose answer was lost is recognised by its
   * body (each holder writes its own id and a new expiry in every version).
   */
  get leases(): ConditionalObjects {
    return this.conditional('leases');
  }

  /**
   * The catalog journal, under PREFIX/journal/ (see catalog/journal.ts):
   * objects created once each, with the same conditional writes as leases.
   */
  get journal(): ConditionalObjects {
    return this.conditional('journal');
  }

  private conditional(dir: 'leases' | 'journal'): ConditionalObjects {
    const what = dir === 'leases' ? 'lease' : 'journal entry';
    const base = `${this.where.prefix}${dir}/`;
    const keyOf = (name: string) => {
      if (!NAME.test(name) || name.startsWith('.')) throw new StorageError('io', `invalid ${what} name ${JSON.stringify(name)}`);
      return base + name;
    };
    const again = <T>(op: () => Promise<T>) => retrying(this.retry, op);
    const read = async (name: string) => {
      const key = keyOf(name);
      const a = await again(() => this.exchange('GET', key, { what: `GET ${what}` }));
      if (a.status === 404) return undefined;
      if (a.status !== 200) throw this.failure(a, 'GET', key);
      return { body: a.body, etag: bareEtag(a.headers.etag) };
    };
    /** After a 412: the write went through if what is there is what we wrote (a retry after a lost answer). */
    const ours = async (name: string, body: Buffer) => {
      const now = await read(name);
      return now?.body.equals(body) ? now.etag : undefined;
    };
    const write = async (name: string, body: Buffer, condition: Record<string, string>) => {
      const key = keyOf(name);
      const a = await again(() => this.exchange('PUT', key, { body: [body], headers: { ...condition, 'Content-Type': 'application/json' }, what: `PUT ${what}` }));
      if (a.status === 200) return bareEtag(a.headers.etag);
      if (a.status === 412 || a.status === 404 || (a.status === 409 && xmlValues(a.body.toString('utf8'), 'Code')[0] === 'ConditionalRequestConflict')) return ours(name, body);
      throw this.failure(a, 'PUT', key);
    };
    return {
      create: (name, body) => write(name, body, { 'If-None-Match': '*' }),
      // Ceph RGW compares If-Match with the ETag without its quotes; AWS takes either.
      replace: (name, body, etag) => write(name, body, { 'If-Match': etag }),
      read,
      names: async function* (this: S3Storage, opts: { prefix?: string; firstPage?: number } = {}) {
        for await (const key of this.keys(base + (opts.prefix ?? ''), opts.firstPage, true)) yield key.slice(base.length);
      }.bind(this),
      remove: async (name) => {
        const key = keyOf(name);
        const a = await again(() => this.exchange('DELETE', key, { what: `DELETE ${what}` }));
        if (a.status !== 204 && a.status !== 200 && a.status !== 404) throw this.failure(a, 'DELETE', key);
      },
    };
  }

  async close(): Promise<void> {
    this.agent.destroy();
    this.brief?.destroy();
  }
}

/** Waits out an answer with no body (a HEAD's); its empty body. */
function ended(res: http.IncomingMessage): Promise<Buffer> {
  return new Promise((resolve) => {
    const done = () => resolve(Buffer.alloc(0));
    // 'close' too: a connection lost after the status line ends it without 'end'.
    res.once('end', done).once('close', done).once('error', done);
    res.resume();
  });
}

/** An ETag as a bare value (S3 quotes them; RGW wants If-Match without). */
function bareEtag(etag: string | string[] | undefined): string {
  return String(etag ?? '').replace(/^W\//, '').replace(/^"|"$/g, '');
}

/** A source regrouped into pieces of `size` bytes (the last shorter), each a list of slices of it (nothing copied), one piece held at a time. */
async function* rechunk(source: AsyncIterable<Uint8Array> | Iterable<Uint8Array>, size: number): AsyncIterable<Uint8Array[]> {
  let piece: Uint8Array[] = [];
  let room = size;
  for await (const p of source) {
    for (let at = 0; at < p.byteLength; ) {
      const n = Math.min(room, p.byteLength - at);
      piece.push(p.subarray(at, at + n));
      at += n;
      room -= n;
      if (room === 0) {
        yield piece;
        piece = [];
        room = size;
      }
    }
  }
  if (piece.length > 0) yield piece;
}

/** A source that must hold exactly `size` bytes: more, or fewer by its end, is an error. Hashed as it passes. */
async function* checkedSource(source: AsyncIterable<Uint8Array>, size: number, h: Handle, hash: ReturnType<typeof createHash>): AsyncIterable<Uint8Array> {
  let got = 0;
  for await (const c of source) {
    got += c.byteLength;
    if (got > size) throw new StorageError('io', `${h.kind} ${h.name}: more than the announced ${size} bytes`);
    hash.update(c);
    yield c;
  }
  if (got !== size) throw new StorageError('short_read', `${h.kind} ${h.name}: upload ended after ${got} of ${size} bytes`);
}

