/**
 * Running the server: prepares the directory, listens (HTTP or HTTPS) with
 * limits against slow or oversized requests, and shuts down gracefully (stop
 * accepting, let requests in flight finish for a bounded time).
 */
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as https from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import * as path from 'node:path';
import { StrataError, usageError } from '../errors.js';
import { randomBytes } from 'node:crypto';
import { LocalStorage } from '../storage/local.js';
import type { S3StorageOptions } from '../storage/s3.js';
import type { Storage } from '../storage/storage.js';
import { CatalogJournal } from '../catalog/journal.js';
import { SharedLeases } from '../catalog/shared-lease.js';
import { handleClientErrors, handler, logLine, type LogOptions } from './http.js';
import { CatalogKeeper, catalogRoutes } from './catalog-routes.js';
import { objectRoutes } from './routes.js';
import { serverDir, TokenStore } from './tokens.js';

export interface ServeOptions {
  /** The repository directory; for a repository in a bucket, the directory of the server's tokens and catalog cache. */
  dir: string;
  /** A repository in a bucket: served from there, stateless (see serveBucket). */
  bucket?: { bucket: string; prefix: string; s3?: S3StorageOptions; checkpointEvery?: number };
  host: string;
  port: number;
  tls?: { cert: Buffer; key: Buffer };
  log: LogOptions;
  /** Time allowed for a request's headers. */
  headersTimeoutMs: number;
  /** A connection silent for this long is closed (a stalled upload, an idle client). */
  idleTimeoutMs: number;
  /** How long a shutdown waits for requests in flight. */
  drainTimeoutMs: number;
}

export const DEFAULTS = { headersTimeoutMs: 20_000, idleTimeoutMs: 120_000, drainTimeoutMs: 10_000 };
/** Records of a bucket's catalog journal between two checkpoints a server writes (catalog/checkpoint.ts). */
export const CHECKPOINT_EVERY = 1000;
/** Far above any real header set; node's own default. */
const MAX_HEADER_BYTES = 16 * 1024;
/** Whole-request bound: generous, since a pack upload over a slow link takes a while; the idle timeout catches stalls. */
const REQUEST_TIMEOUT_MS = 60 * 60 * 1000;

export interface RunningServer {
  url: string;
  server: http.Server;
  /** Stops accepting, waits for requests in flight (up to the drain timeout); resolves with the number of connections cut. */
  shutdown(): Promise<number>;
}

/** Creates DIR and DIR/server if they are missing; refuses a path that is not a directory. */
export function prepareDir(dir: string): string {
  const root = path.resolve(dir);
  if (fs.existsSync(root) && !fs.statSync(root).isDirectory()) throw usageError(`${root} exists and is not a directory`);
  fs.mkdirSync(serverDir(root), { recursive: true, mode: 0o700 });
  return root;
}

export function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
}

export async function startServer(opts: ServeOptions): Promise<RunningServer> {
  const root = prepareDir(opts.dir);
  let storage: Storage;
  let keeper: CatalogKeeper;
  let closeStorage = async () => {};
  if (opts.bucket) {
    const served = await serveBucket(root, opts.bucket, opts.log);
    ({ storage, keeper } = served);
    closeStorage = served.close;
  } else {
    const local = new LocalStorage(root);
    // Partial uploads a previous run left behind (one killed mid-request).
    await local.sweepTemporary(60 * 60 * 1000).catch(() => 0);
    storage = local;
    keeper = new CatalogKeeper(storage);
  }
  const tokens = new TokenStore(root);
  const repoName = opts.bucket ? `s3://${opts.bucket.bucket}/${opts.bucket.prefix}` : root;
  if (tokens.list().length === 0) logLine({ ...opts.log, quiet: false }, `no tokens yet: add one with "strata token add NAME --role ROLE --repo ${repoName}"`);

  const serverOptions: http.ServerOptions = {
    maxHeaderSize: MAX_HEADER_BYTES,
    headersTimeout: opts.headersTimeoutMs,
    requestTimeout: Math.max(REQUEST_TIMEOUT_MS, opts.headersTimeoutMs + 1),
    keepAliveTimeout: 65_000,
    // How often node checks the timeouts above; a short headers timeout needs a short interval.
    connectionsCheckingInterval: Math.max(50, Math.min(30_000, Math.floor(opts.headersTimeoutMs / 4))),
  };
  const onRequest = handler([...objectRoutes(storage), ...catalogRoutes(keeper)], tokens, opts.log);
  let closing = false;
  const server = opts.tls
    ? https.createServer({ ...serverOptions, cert: opts.tls.cert, key: opts.tls.key }, onRequest)
    : http.createServer(serverOptions, onRequest);
  server.timeout = opts.idleTimeoutMs;
  server.maxConnections = 1024;
  handleClientErrors(server, opts.log);
  // "Expect: 100-continue" goes through the same checks; an upload is invited only once it passed them.
  server.on('checkContinue', onRequest);
  // While shutting down, every answer closes its connection.
  server.prependListener('request', (_req: http.IncomingMessage, res: http.ServerResponse) => {
    if (closing) res.setHeader('Connection', 'close');
  });
  const sockets = new Set<Socket>();
  server.on(opts.tls ? 'secureConnection' : 'connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', (e: NodeJS.ErrnoException) => {
      const why = e.code === 'EADDRINUSE' ? 'address in use' : e.code === 'EACCES' ? 'permission denied' : e.code === 'EADDRNOTAVAIL' ? 'no such local address' : (e.code ?? e.message);
      const failure = new StrataError('listen', `cannot listen on ${opts.host}:${opts.port}: ${why}`);
      void keeper.close().then(closeStorage).then(() => reject(failure), () => reject(failure));
    });
    server.listen(opts.port, opts.host, () => resolve());
  });
  const addr = server.address() as AddressInfo;
  const host = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
  const url = `${opts.tls ? 'https' : 'http'}://${host}:${addr.port}`;

  const shutdown = async (): Promise<number> => {
    closing = true;
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    server.closeIdleConnections();
    let timer: NodeJS.Timeout | undefined;
    const drained = await Promise.race([closed.then(() => true), new Promise<boolean>((r) => (timer = setTimeout(() => r(false), opts.drainTimeoutMs)))]);
    clearTimeout(timer);
    let cut = 0;
    if (!drained) {
      cut = sockets.size;
      server.closeAllConnections();
      for (const s of sockets) s.destroy();
      await closed;
    }
    await keeper.close();
    await closeStorage();
    return cut;
  };
  return { url, server, shutdown };
}

/**
 * A repository in a bucket, served without state of its own: the truth is
 * the bucket; this server's catalog is a cache of its own (a new file for
 * each run, under DIR, removed when it stops), filled and kept up to date
 * from the bucket's catalog journal (catalog/journal.ts), which every
 * server and client over the bucket writes. Leases are the bucket's, so
 * servers and clients coordinate.
 */
async function serveBucket(
  dir: string,
  where: NonNullable<ServeOptions['bucket']>,
  log: LogOptions,
): Promise<{ storage: Storage; keeper: CatalogKeeper; close(): Promise<void> }> {
  const [{ S3Storage, S3_RETRY }, { RetryingStorage }, { CoalescingStorage }] = await Promise.all([
    import('../storage/s3.js'),
    import('../storage/retry.js'),
    import('../storage/coalesce.js'),
  ]);
  const s3 = new S3Storage({ bucket: where.bucket, prefix: where.prefix }, where.s3);
  const storage = new CoalescingStorage(new RetryingStorage(s3, S3_RETRY));
  const file = path.join(dir, `catalog-${process.pid}-${randomBytes(4).toString('hex')}.db`);
  const remove = () => {
    for (const f of [file, `${file}-wal`, `${file}-shm`]) fs.rmSync(f, { force: true });
  };
  let keeper: CatalogKeeper | undefined;
  /** After the keeper closed the catalog. */
  const close = async () => {
    remove();
    await s3.close();
  };
  try {
    if (!(await storage.exists({ kind: 'config', name: 'config' }))) {
      throw new StrataError('no_repository', `no repository in ${s3.location}: create it with "strata init --repo ${s3.location}"`);
    }
    const journal = new CatalogJournal(s3.journal);
    keeper = new CatalogKeeper(storage, { file, shared: new SharedLeases(s3.leases), journal, onFollow: (m) => logLine(log, m), checkpointEvery: where.checkpointEvery ?? CHECKPOINT_EVERY });
    // The cache starts from the newest checkpoint (or empty), and the records after it: filled before the first request.
    await keeper.start();
    await checkJournaled(s3.location, storage, keeper, journal, log);
    return { storage, keeper, close };
  } catch (e) {
    await keeper?.close();
    await close();
    throw e;
  }
}

/**
 * A bucket whose packs its catalog journal does not name was written (in
 * part) before the journal: a server, which has no key, cannot read those
 * packs' snapshots. With no journal at all it refuses to start, saying what
 * to run; otherwise its log says so once.
 */
async function checkJournaled(location: string, storage: Storage, keeper: CatalogKeeper, journal: CatalogJournal, log: LogOptions): Promise<void> {
  const known = new Set(keeper.get().packNames());
  let unnamed = 0;
  for await (const name of storage.list('pack')) if (!known.has(name)) unnamed++;
  const fix = `run "strata rebuild-catalog --repo ${location}" once with the key: it writes into the journal what the packs hold`;
  if (journal.position === 0 && unnamed > 0) {
    throw new StrataError(
      'catalog',
      `${location} holds ${unnamed} packs and no catalog journal (it was written by a strata from before the journal): a server has no key to read them with; ${fix}, then start the server again`,
    );
  }
  const waiting = journal.waitingSnapshots.length;
  if (unnamed > 0 || waiting > 0) {
    logLine(
      { ...log, quiet: false },
      `${unnamed > 0 ? `${unnamed} packs of ${location} are not in its catalog journal (written before it, or uploads under way)` : ''}${unnamed > 0 && waiting > 0 ? '; ' : ''}${waiting > 0 ? `${waiting} snapshots in the journal lack their parent or blocks` : ''}: to serve what they hold, ${fix}`,
    );
  }
}
