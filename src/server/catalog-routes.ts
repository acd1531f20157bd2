/**
 * The catalog's routes: what a client asks of the keeper of a repository's
 * catalog (src/catalog/service.ts), answered here by the same LocalService a
 * local repository uses. The server never holds a key: it sees keyed ids,
 * sealed bytes, sizes and offsets, and builds each version's TOC itself from
 * the block list the client sends (the seed's claim 1). Each route is a row
 * of CATALOG_PROTOCOL: its request line, role and body limit, and the codecs
 * its request is read and its answer sent with (see route()).
 *
 * The catalog opens on first use, once a client has created the repository
 * (its config); until then these routes answer 404 no_repository.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { StrataError } from '../errors.js';
import { Catalog } from '../catalog/catalog.js';
import { PACK_MAGIC } from '../catalog/packs.js';
import { CATALOG_PROTOCOL, type AnswerSent, type ProtocolMethod, type ProtocolName, type RequestOf } from '../catalog/protocol.js';
import { JournalCompacted, type Checkpoint } from '../catalog/checkpoint.js';
import type { CatalogJournal } from '../catalog/journal.js';
import { LocalService, type FollowResult } from '../catalog/service.js';
import type { SharedLeases } from '../catalog/shared-lease.js';
import { MAX_LOCK_WAIT_MS, checkPackLayout, type Codec } from '../catalog/wire.js';
import type { Storage } from '../storage/storage.js';
import { HttpError, sendJson, type RequestContext, type Route } from './http.js';
import { parseRange } from './range.js';

/** The size an answer to POST /v1/blocks/read stops at. */
const READ_ANSWER_BYTES = 16 * 1024 * 1024;
/** Pieces per answer; the client asks again from where one stops. */
export const PIECES_PER_PAGE = 8192;

/** A repository in a bucket: its catalog cache here, and the bucket's leases and journal. */
export interface BucketCatalog {
  file: string;
  shared: SharedLeases;
  journal: CatalogJournal;
  /** Told what each follow of the journal added, and what it left out. */
  onFollow: (message: string) => void;
  /** Records applied between two checkpoints this server writes (catalog/checkpoint.ts); 0: none. */
  checkpointEvery?: number;
}

/** How long a catalog replaced by a checkpoint stays open for the requests that were using it. */
const RETIRE_AFTER_MS = 30_000;

export class CatalogKeeper {
  private queued?: Promise<void>;
  private following: Promise<void> = Promise.resolve();
  private readonly told = new Set<string>();

  private service?: LocalService;
  /** Files of catalogs of this run after the first (each reload from a checkpoint takes a new one), and catalogs being retired. */
  private readonly files: string[] = [];
  private readonly retiring = new Set<{ service: LocalService; timer: NodeJS.Timeout }>();
  /** The newest checkpoint this server knows of (its number), and one being written. */
  private checkpointed = 0;
  private writing?: Promise<void>;

  /**
   * Without `bucket`, the repository directory's catalog.db, opened on first
   * use. With it (a repository in a bucket), the catalog is a cache in
   * `bucket.file`, filled by start() from the newest checkpoint and the
   * records after it, that follows the bucket's journal.
   */
  constructor(
    private readonly storage: Storage,
    private readonly bucket?: BucketCatalog,
  ) {}

  private open(file: string): LocalService {
    return new LocalService(new Catalog(file), this.storage, true, this.bucket?.shared, this.bucket?.journal);
  }

  /** For a bucket: the catalog from the newest checkpoint (if any), then every record after it. */
  async start(): Promise<void> {
    if (!this.bucket) return;
    const cp = await this.bucket.journal.newestCheckpoint();
    if (cp) await this.reload(cp, this.bucket.file);
    else this.service = this.open(this.bucket.file);
    await this.fresh();
  }

  /**
   * The catalog replaced by checkpoint `cp`'s (loaded into `file`): at start,
   * or when a compaction removed records this server had not applied yet.
   */
  private async reload(cp: Checkpoint, file: string): Promise<void> {
    const bucket = this.bucket!;
    for (let tries = 0; ; tries++) {
      try {
        await bucket.journal.loadCheckpoint(cp, file);
        break;
      } catch (e) {
        // Replaced by a newer one while being read: that one.
        if (!(e instanceof StrataError) || e.code !== 'not_found' || tries >= 3) throw e;
        cp = (await bucket.journal.newestCheckpoint()) ?? cp;
      }
    }
    const old = this.service;
    this.service = this.open(file);
    for (const p of bucket.journal.adopt(cp)) bucket.onFollow(`journal: ${p}`);
    this.checkpointed = Math.max(this.checkpointed, cp.upTo);
    if (old) {
      bucket.onFollow(`journal: records this server had not applied were compacted away; its catalog was loaded again from the checkpoint of record ${cp.upTo}`);
      // Requests under way may still be reading it: it is closed a little later.
      const entry = { service: old, timer: setTimeout(() => void this.retire(entry), RETIRE_AFTER_MS) };
      entry.timer.unref();
      this.retiring.add(entry);
    }
  }

  private async retire(entry: { service: LocalService; timer: NodeJS.Timeout }): Promise<void> {
    clearTimeout(entry.timer);
    if (!this.retiring.delete(entry)) return;
    await entry.service.retire().catch(() => {});
  }

  /**
   * For a catalog that follows a bucket's journal: brought up to date with
   * what other servers and clients committed, before a request that names
   * snapshots is answered. One follow at a time; a request arriving while
   * one runs waits for the next, which starts after it arrived (so it sees
   * every commit made before it), shared with whoever else arrives meanwhile.
   */
  fresh(): Promise<void> {
    if (!this.bucket || !this.service) return Promise.resolve();
    if (this.queued) return this.queued;
    const next = this.following
      .catch(() => {})
      .then(async () => {
        this.queued = undefined;
        const r = await this.followOnce();
        const log = this.bucket!.onFollow;
        if (r.packs > 0 || r.snapshots > 0 || r.changes > 0) {
          log(`journal: ${r.packs} packs and ${r.snapshots} snapshots added${r.changes > 0 ? `, ${r.changes} forgets, tags, resealed TOCs, prunes or repairs applied` : ''}`);
        }
        for (const p of r.problems) {
          // A damaged entry stays damaged: said once.
          if (!this.told.has(p)) log(`journal: ${p}`);
          this.told.add(p);
        }
        await this.checkpoint();
      });
    this.queued = next;
    this.following = next;
    return next;
  }

  private async followOnce(): Promise<FollowResult> {
    try {
      return await this.service!.followJournal();
    } catch (e) {
      if (!(e instanceof JournalCompacted)) throw e;
      if (this.service!.backupsUnderWay()) {
        // Their pending snapshots would be lost with this catalog: it stays (behind) until they commit.
        const said = `records this server had not applied were compacted away; its catalog is loaded again from the checkpoint of record ${e.checkpoint.upTo} once the backups under way through it are done`;
        return { records: 0, packs: 0, snapshots: 0, changes: 0, problems: [said] };
      }
      const file = `${this.bucket!.file}.${this.files.length + 1}`;
      this.files.push(file);
      await this.reload(e.checkpoint, file);
      return await this.service!.followJournal();
    }
  }

  /**
   * Every `checkpointEvery` records, a checkpoint of this catalog (unless
   * another server wrote one meanwhile): copied here, between two follows,
   * and uploaded (then the journal compacted) without holding up requests.
   */
  private async checkpoint(): Promise<void> {
    const bucket = this.bucket!;
    const every = bucket.checkpointEvery ?? 0;
    const journal = bucket.journal;
    if (every <= 0 || this.writing || journal.position - this.checkpointed < every) return;
    const newest = (await journal.newestCheckpointNumber()) ?? 0;
    this.checkpointed = Math.max(this.checkpointed, newest);
    if (journal.position - this.checkpointed < every) return;
    // Writes whose record just went in change the catalog in the same turn: after them.
    await new Promise((resolve) => setImmediate(resolve));
    const upTo = journal.position;
    const scratch = `${bucket.file}.checkpoint`;
    const schema = this.service!.copyForCheckpoint(scratch);
    const waiting = journal.waitingRecords();
    this.checkpointed = upTo;
    this.writing = journal
      .checkpoint(scratch, upTo, schema, waiting)
      .then((r) => bucket.onFollow(r.written ? `journal: checkpoint of record ${upTo} written; ${r.removed} records it makes needless removed` : `journal: another server wrote the checkpoint of record ${upTo}`))
      .catch((e: unknown) => bucket.onFollow(`journal: the checkpoint of record ${upTo} failed: ${(e as Error).message}`))
      .finally(() => (this.writing = undefined));
  }

  /** Whether the catalog follows a bucket's journal. */
  get follows(): boolean {
    return this.bucket !== undefined;
  }

  /** The repository's catalog service, opened (and created) on first use. */
  get(): LocalService {
    if (this.service) return this.service;
    if (this.bucket) throw new HttpError('no_repository', 'the catalog is not loaded yet');
    const root = this.storage.location;
    if (!fs.existsSync(path.join(root, 'config'))) throw new HttpError('no_repository', 'no repository here yet: run "strata init" against this server');
    this.service = this.open(path.join(root, 'catalog.db'));
    return this.service;
  }

  async close(): Promise<void> {
    await this.writing;
    for (const entry of [...this.retiring]) await this.retire(entry);
    await this.service?.close();
    this.service = undefined;
    if (this.bucket) fs.rmSync(`${this.bucket.file}.checkpoint`, { force: true });
    for (const f of this.files) for (const g of [f, `${f}-wal`, `${f}-shm`]) fs.rmSync(g, { force: true });
  }
}

async function body(ctx: RequestContext): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of ctx.req as AsyncIterable<Buffer>) {
    ctx.bytesIn += c.length;
    chunks.push(c);
  }
  const buf = Buffer.concat(chunks);
  if (buf.length !== Number(ctx.req.headers['content-length'])) throw new HttpError('bad_request', 'the body is shorter than its Content-Length');
  return buf;
}

async function jsonBody(ctx: RequestContext): Promise<Record<string, unknown>> {
  const buf = await body(ctx);
  try {
    const v = JSON.parse(buf.toString('utf8')) as unknown;
    if (typeof v === 'object' && v !== null && !Array.isArray(v)) return v as Record<string, unknown>;
  } catch {
    // Below.
  }
  throw new HttpError('bad_json', 'the body must be a JSON object');
}

/** A request's body, read as its method's codec says (a JSON body must be an object). */
async function readRequest(ctx: RequestContext, codec: Codec<unknown, unknown>): Promise<unknown> {
  if (codec.type === 'none') return undefined;
  return codec.decode(codec.type === 'json' ? await jsonBody(ctx) : await body(ctx), '');
}

function sendBinary(ctx: RequestContext, buf: Buffer): void {
  ctx.res.writeHead(200, { 'Content-Type': 'application/octet-stream', 'Content-Length': String(buf.length) });
  ctx.res.end(buf);
  ctx.bytesOut += buf.length;
}

/** The bytes, or the one range a Range header asks for (206), as object GETs serve it. */
function sendRange(ctx: RequestContext, buf: Buffer): void {
  const range = parseRange(ctx.req.headers.range, buf.length);
  if (range.kind === 'unsatisfiable') throw new HttpError('range_not_satisfiable', range.reason, { 'Content-Range': `bytes */${buf.length}` });
  if (range.kind === 'none') {
    ctx.res.setHeader('Accept-Ranges', 'bytes');
    return sendBinary(ctx, buf);
  }
  const part = buf.subarray(range.start, range.end + 1);
  ctx.res.writeHead(206, { 'Content-Type': 'application/octet-stream', 'Content-Length': String(part.length), 'Content-Range': `bytes ${range.start}-${range.end}/${buf.length}` });
  ctx.res.end(part);
  ctx.bytesOut += part.length;
}

/** An answer, sent as its method's codec says: 204 for none, JSON, or bytes (ranged where the method says so). */
function sendAnswer(ctx: RequestContext, m: ProtocolMethod, status: number, value: unknown): void {
  const codec = m.answer;
  if (codec.type === 'none') return void ctx.res.writeHead(204).end();
  if (codec.type === 'json') return sendJson(ctx, status, codec.encode(value));
  const buf = codec.encode(value) as Buffer;
  if (m.ranged) sendRange(ctx, buf);
  else sendBinary(ctx, buf);
}

/** A handler's answer when what it was asked to make was made already (a retried request): 200, not 201. */
class Existing<A> {
  constructor(readonly value: A) {}
}

/**
 * The route of a method of CATALOG_PROTOCOL: its request line, role and body
 * limit, its request read and its answer sent through the row's codecs;
 * `handle` turns the one into the other.
 */
function route<N extends ProtocolName>(name: N, handle: (request: RequestOf<N>, ctx: RequestContext) => Promise<AnswerSent<N> | Existing<AnswerSent<N>>>): Route {
  const m: ProtocolMethod = CATALOG_PROTOCOL[name];
  return {
    method: m.method,
    path: m.path,
    role: m.role,
    maxBody: m.maxBody,
    handle: async (ctx) => {
      const answer = await handle((await readRequest(ctx, m.request)) as RequestOf<N>, ctx);
      if (answer instanceof Existing) sendAnswer(ctx, m, 200, answer.value);
      else sendAnswer(ctx, m, m.created ? 201 : 200, answer);
    },
  };
}

function query(ctx: RequestContext): URLSearchParams {
  const url = ctx.req.url ?? '';
  const q = url.indexOf('?');
  return new URLSearchParams(q < 0 ? '' : url.slice(q + 1));
}

function int(s: string | null | undefined, what: string): number {
  if (s === null || s === undefined || !/^\d{1,15}$/.test(s)) throw new HttpError('bad_request', `${what} must be a whole number`);
  return Number(s);
}

function id(s: string | undefined, what: string): Buffer {
  if (!s || !/^[0-9a-f]{64}$/.test(s)) throw new HttpError('bad_request', `${what} must be 64 hex digits`);
  return Buffer.from(s, 'hex');
}

export function catalogRoutes(keeper: CatalogKeeper): Route[] {
  const svc = () => keeper.get();
  const version = async (ctx: RequestContext) => {
    const v = await svc().versionById(int(ctx.params.version, 'version'));
    if (!v) throw new HttpError('not_found', 'no such version');
    return v;
  };
  return [
    route('snapshots', async (_, ctx) => {
      await keeper.fresh();
      const prefix = query(ctx).get('prefix');
      if (prefix !== null && !/^[0-9a-f]{1,64}$/.test(prefix)) throw new HttpError('bad_request', 'prefix must be hex');
      return prefix !== null ? await svc().snapshotsByPrefix(prefix) : await svc().snapshots();
    }),
    route('snapshot', async (_, ctx) => {
      await keeper.fresh();
      const row = await svc().snapshotBySeq(int(ctx.params.seq, 'seq'));
      if (!row) throw new HttpError('not_found', 'no such snapshot');
      return row;
    }),
    route('version', async (_, ctx) => {
      const v = await svc().version(int(ctx.params.seq, 'seq'), id(ctx.params.path, 'path'));
      if (!v) throw new HttpError('not_found', 'no such version');
      return v;
    }),
    // Every version of a snapshot: a backup reads its parent's in one go.
    route('versions', async (_, ctx) => svc().versionPaths(int(ctx.params.seq, 'seq'))),
    route('planRead', async (_, ctx) => {
      await keeper.fresh();
      const q = query(ctx);
      const prefix = q.get('prefix');
      if (prefix !== null && !/^[0-9a-f]{1,64}$/.test(prefix)) throw new HttpError('bad_request', 'prefix must be hex');
      const choice = prefix !== null ? { prefix } : { until: q.get('until') === null ? Number.MAX_SAFE_INTEGER : int(q.get('until'), 'until') };
      const opt = (k: string) => (q.get(k) === null ? undefined : int(q.get(k), k));
      const spec = { start: opt('start'), end: opt('end'), suffix: opt('suffix') };
      const hasSpec = spec.start !== undefined || spec.end !== undefined || spec.suffix !== undefined;
      const plan = await svc().planRead(id(ctx.params.path, 'path'), choice, hasSpec ? spec : undefined);
      if (!plan) throw new HttpError('not_found', 'no plan: look the path up in the trees');
      return plan;
    }),
    route('versionById', async (_, ctx) => await version(ctx)),
    route('pieces', async (_, ctx) => {
      const v = await version(ctx);
      const q = query(ctx);
      const start = int(q.get('start'), 'start');
      const end = int(q.get('end'), 'end');
      if (end < start || end >= v.size) throw new HttpError('range_not_satisfiable', `the version has ${v.size} bytes`);
      const pieces = [];
      let next: number | null = null;
      for await (const p of svc().pieces(v.id, start, end)) {
        if (pieces.length === PIECES_PER_PAGE) {
          next = p.at;
          break;
        }
        pieces.push(p);
      }
      return { pieces, next };
    }),
    route('blockList', async (_, ctx) => {
      const v = await version(ctx);
      return await svc().blockList(v.id, v.size);
    }),
    route('toc', async (_, ctx) => await svc().toc((await version(ctx)).id)),
    route('block', async (_, ctx) => {
      const block = id(ctx.params.id, 'block id');
      if (svc().blockLength(block) === undefined) throw new HttpError('not_found', 'no such block');
      return await readFresh(keeper, block);
    }),
    route('readBlocks', async (ids) => {
      if (ids.length === 0) throw new HttpError('bad_request', 'no block ids');
      const service = svc();
      // The answer stops at its size bound (after at least one block); the client asks again for the rest.
      const take: { id: Buffer; found: boolean }[] = [];
      let bound = 0;
      for (const block of ids) {
        const length = service.blockLength(block);
        if (take.length > 0 && bound + 4 + (length ?? 0) > READ_ANSWER_BYTES) break;
        take.push({ id: block, found: length !== undefined });
        bound += 4 + (length ?? 0);
      }
      return await Promise.all(
        take.map(({ id: block, found }) =>
          // Unreadable here: an empty frame, and the client asks GET /v1/blocks/{id} for the reason.
          found ? readFresh(keeper, block).catch((e: unknown) => (e instanceof StrataError ? Buffer.alloc(0) : Promise.reject(e))) : Buffer.alloc(0),
        ),
      );
    }),
    route('missing', async (ids) => await svc().missing(ids)),
    // Where each block is: a client with the key checks the pack vouches for it before leaving it out.
    route('where', async (ids) => await svc().where(ids)),
    route('spares', async (_, ctx) => await svc().spares(id(ctx.params.id, 'block id'))),
    route('putPack', async (index, ctx) => {
      const name = ctx.params.name!;
      if (!/^[0-9a-f]{64}$/.test(name)) throw new HttpError('bad_name', 'invalid pack name');
      const s = svc();
      let size: number;
      try {
        size = (await s.storage.stat({ kind: 'pack', name })).size;
      } catch {
        throw new HttpError('no_pack', `upload pack ${name.slice(0, 16)} before its index`);
      }
      checkPackLayout(index.entries, size, PACK_MAGIC.length);
      // Moving blocks already indexed elsewhere is prune's repacking: admin only.
      if (index.relocate && ctx.token?.role !== 'admin') throw new HttpError('forbidden', 'moving indexed blocks (repacking) needs the admin role');
      if (svc().packIndexed(name)) return new Existing(false);
      // Copies of blocks indexed elsewhere whose first copy the client found forged: kept as spares, never moved.
      await s.indexUploadedPack(name, size, index.entries, index.relocate, new Set(index.replaces));
      return true;
    }),
    route('startBackup', async (start) => (await keeper.fresh(), await svc().startBackup(start.lineage, start.time, start.parent, { renew: false }))),
    route('pinSnapshot', async (snapshot) => (await keeper.fresh(), await svc().pinSnapshot(snapshot, { renew: false }))),
    route('renewLease', async (_, ctx) => {
      if (!svc().renew(ctx.params.lease!)) throw new HttpError('not_found', 'no such lease (it went stale: start again)');
    }),
    route('endLease', async (_, ctx) => await svc().endLease(ctx.params.lease!)),
    // A client may wait for another maintenance, but not hold a request open for long.
    route('startMaintenance', async (waitMs) => (await keeper.fresh(), await svc().startMaintenance(Math.min(waitMs, MAX_LOCK_WAIT_MS), undefined, { renew: false }))),
    route('forget', async (snapshots, ctx) => {
      held(keeper, ctx.params.lease!);
      return await svc().forgetSnapshots(snapshots);
    }),
    route('staleTocs', async (_, ctx) => {
      held(keeper, ctx.params.lease!);
      return await svc().staleTocs();
    }),
    route('setVersionTocs', async (tocs, ctx) => {
      held(keeper, ctx.params.lease!);
      await svc().setVersionTocs(tocs);
    }),
    route('snapshotRecord', async (_, ctx) => {
      const seq = int(ctx.params.seq, 'seq');
      if (!(await svc().snapshotBySeq(seq))) throw new HttpError('not_found', 'no such snapshot');
      return await svc().snapshotRecord(seq);
    }),
    route('setSnapshotRecord', async (r, ctx) => {
      held(keeper, ctx.params.lease!);
      await svc().setSnapshotRecord(r.seq, r.record, r.meta);
    }),
    route('pruneMark', async (o, ctx) => {
      held(keeper, ctx.params.lease!);
      return await svc().pruneMark(o.dryRun, o.wholePacks);
    }),
    route('pruneSweep', async (sweep, ctx) => {
      held(keeper, ctx.params.lease!);
      return await svc().pruneSweep(sweep.packs, sweep.started);
    }),
    route('checkPacks', async () => await svc().checkPacks()),
    route('checkTocs', async () => await svc().checkTocs()),
    route('packBlobs', async (_, ctx) => {
      const name = packName(ctx.params.name);
      if (!svc().packIndexed(name)) throw new HttpError('not_found', 'no such pack in the catalog');
      return await svc().packBlobs(name);
    }),
    route('markChecked', async (_, ctx) => await svc().markChecked(packName(ctx.params.name))),
    route('checkPass', async (which) => await svc().checkPass(which)),
    route('damage', async (blocks) => await svc().damage(blocks)),
    route('repair', async (blocks) => await svc().repair(blocks)),
    route('retained', async () => await svc().retainedBlobs()),
    route('versionRecord', async (_, ctx) => (await svc().versionRecord((await version(ctx)).id))!),
    route('beginSnapshot', async (s) => {
      // A retried request finds its snapshot already begun.
      const again = svc().pendingSnapshot({ id: s.id });
      return again ? again.seq : await svc().beginSnapshot(s.id, s.time, s.lineage, s.meta, s.parent, s.lease, s.inherits);
    }),
    route('storeVersions', async (list, ctx) => {
      const seq = pending(keeper, int(ctx.params.seq, 'seq'));
      // A retried batch: versions already stored are not stored twice.
      const service = svc();
      await service.storeVersions(seq, list.filter((v) => !service.hasOwnVersion(seq, v.path)));
    }),
    route('commitSnapshot', async (c, ctx) => {
      const seq = int(ctx.params.seq, 'seq');
      if (!(await svc().snapshotBySeq(seq))) throw new HttpError('not_found', 'no such snapshot');
      // Committed already (a retried request): nothing to do.
      if (!svc().pendingSnapshot({ seq })) return new Existing(seq);
      await svc().commitSnapshot(seq, c.root, c.record, c.meta, c.blobs);
      return seq;
    }),
  ];
}

/**
 * A block's sealed bytes. Over a bucket, a pack may be gone because another
 * server's prune moved the block (or dropped it): the journal is followed
 * and the block looked up again. A block not in the repository any more is
 * not found; one whose pack is missing, an integrity error. Never other bytes:
 * pack names are never reused.
 */
async function readFresh(keeper: CatalogKeeper, block: Buffer): Promise<Buffer> {
  try {
    return await keeper.get().readSealed(block);
  } catch (e) {
    if (!(e instanceof StrataError) || !keeper.follows) throw e;
    await keeper.fresh();
    if (keeper.get().blockLength(block) === undefined) throw new HttpError('not_found', 'no such block (a prune removed it)');
    return await keeper.get().readSealed(block);
  }
}

function packName(s: string | undefined): string {
  if (!s || !/^[0-9a-f]{64}$/.test(s)) throw new HttpError('bad_name', 'invalid pack name');
  return s;
}

function held(keeper: CatalogKeeper, lease: string): void {
  if (!keeper.get().holds(lease, 'maintenance')) throw new HttpError('no_lease', 'this needs the maintenance lease (it went stale, or was never taken)');
}

function pending(keeper: CatalogKeeper, seq: number): number {
  if (!keeper.get().pendingSnapshot({ seq })) throw new HttpError('not_pending', 'that snapshot is not being written');
  return seq;
}
