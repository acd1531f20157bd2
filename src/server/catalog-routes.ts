/**
 * The catalog's routes: what a client asks of the keeper of a repository's
 * catalog (src/catalog/service.ts), answered here by the same LocalService a
 * local repository uses. The server never holds a key: it sees keyed ids,
 * sealed bytes, sizes and offsets, and builds each version's TOC itself from
 * the block list the client sends (the seed's claim 1).
 *
 * The catalog opens on first use, once a client has created the repository
 * (its config); until then these routes answer 404 no_repository.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { StrataError } from '../errors.js';
import { Catalog } from '../catalog/catalog.js';
import { PACK_MAGIC } from '../catalog/packs.js';
import { CATALOG_PROTOCOL } from '../catalog/protocol.js';
import { LocalService } from '../catalog/service.js';
import { CLAIM_BYTES, MAX_LOCK_WAIT_MS, decodeIds, decodeVersions, encodeBlockList, encodeIds, packEntriesFromJson, packEntriesToJson, pieceToJson, rowToJson, snapshotToJson } from '../catalog/wire.js';
import type { LocalStorage } from '../storage/local.js';
import { HttpError, sendJson, type RequestContext, type Route } from './http.js';
import { parseRange } from './range.js';

/** The size an answer to POST /v1/blocks/read stops at. */
const READ_ANSWER_BYTES = 16 * 1024 * 1024;
/** Pieces per answer; the client asks again from where one stops. */
export const PIECES_PER_PAGE = 8192;

export class CatalogKeeper {
  private service?: LocalService;

  constructor(private readonly storage: LocalStorage) {}

  /** The repository's catalog service, opened (and created) on first use. */
  get(): LocalService {
    if (this.service) return this.service;
    const root = this.storage.location;
    if (!fs.existsSync(path.join(root, 'config'))) throw new HttpError('no_repository', 'no repository here yet: run "strata init" against this server');
    this.service = new LocalService(new Catalog(path.join(root, 'catalog.db')), this.storage, true);
    return this.service;
  }

  async close(): Promise<void> {
    await this.service?.close();
    this.service = undefined;
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

function b64(v: unknown, what: string): Buffer {
  if (typeof v !== 'string' || v.length > 1 << 20 || !/^[A-Za-z0-9+/]*={0,2}$/.test(v)) throw new HttpError('bad_request', `${what} must be base64`);
  return Buffer.from(v, 'base64');
}

function num(v: unknown, what: string): number {
  if (!Number.isSafeInteger(v) || (v as number) < 0) throw new HttpError('bad_request', `${what} must be a whole number`);
  return v as number;
}

export function catalogRoutes(keeper: CatalogKeeper): Route[] {
  const svc = () => keeper.get();
  const version = async (ctx: RequestContext) => {
    const v = await svc().versionById(int(ctx.params.version, 'version'));
    if (!v) throw new HttpError('not_found', 'no such version');
    return v;
  };
  return [
    {
      ...CATALOG_PROTOCOL.snapshots,
      handle: async (ctx) => {
        const prefix = query(ctx).get('prefix');
        if (prefix !== null && !/^[0-9a-f]{1,64}$/.test(prefix)) throw new HttpError('bad_request', 'prefix must be hex');
        const rows = prefix !== null ? await svc().snapshotsByPrefix(prefix) : await svc().snapshots();
        sendJson(ctx, 200, { snapshots: rows.map(snapshotToJson) });
      },
    },
    {
      ...CATALOG_PROTOCOL.snapshot,
      handle: async (ctx) => {
        const row = await svc().snapshotBySeq(int(ctx.params.seq, 'seq'));
        if (!row) throw new HttpError('not_found', 'no such snapshot');
        sendJson(ctx, 200, snapshotToJson(row));
      },
    },
    {
      ...CATALOG_PROTOCOL.version,
      handle: async (ctx) => {
        const v = await svc().version(int(ctx.params.seq, 'seq'), id(ctx.params.path, 'path'));
        if (!v) throw new HttpError('not_found', 'no such version');
        sendJson(ctx, 200, v);
      },
    },
    {
      ...CATALOG_PROTOCOL.versions,
      handle: async (ctx) => {
        // Every version of a snapshot: a backup reads its parent's in one go.
        const rows = keeperCatalog(keeper).versionPaths(int(ctx.params.seq, 'seq'));
        const out = Buffer.allocUnsafe(rows.length * 64);
        rows.forEach((r, i) => {
          const at = i * 64;
          r.path.copy(out, at);
          out.writeDoubleLE(r.id, at + 32);
          out.writeDoubleLE(r.size, at + 40);
          out.writeDoubleLE(r.depth, at + 48);
          out.writeDoubleLE(r.end ?? -1, at + 56);
        });
        sendBinary(ctx, out);
      },
    },
    {
      ...CATALOG_PROTOCOL.planRead,
      handle: async (ctx) => {
        const q = query(ctx);
        const prefix = q.get('prefix');
        if (prefix !== null && !/^[0-9a-f]{1,64}$/.test(prefix)) throw new HttpError('bad_request', 'prefix must be hex');
        const choice = prefix !== null ? { prefix } : { until: q.get('until') === null ? Number.MAX_SAFE_INTEGER : int(q.get('until'), 'until') };
        const opt = (k: string) => (q.get(k) === null ? undefined : int(q.get(k), k));
        const spec = { start: opt('start'), end: opt('end'), suffix: opt('suffix') };
        const hasSpec = spec.start !== undefined || spec.end !== undefined || spec.suffix !== undefined;
        const plan = await svc().planRead(id(ctx.params.path, 'path'), choice, hasSpec ? spec : undefined);
        if (!plan) throw new HttpError('not_found', 'no plan: look the path up in the trees');
        sendJson(ctx, 200, {
          snapshot: snapshotToJson(plan.snapshot),
          newer: plan.newer.map(snapshotToJson),
          version: plan.version,
          start: plan.start,
          end: plan.end,
          pieces: plan.pieces.map(pieceToJson),
          next: plan.next,
          toc: plan.toc ? plan.toc.toString('hex') : null,
        });
      },
    },
    {
      ...CATALOG_PROTOCOL.versionById,
      handle: async (ctx) => sendJson(ctx, 200, await version(ctx)),
    },
    {
      ...CATALOG_PROTOCOL.pieces,
      handle: async (ctx) => {
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
          pieces.push(pieceToJson(p));
        }
        sendJson(ctx, 200, { pieces, next });
      },
    },
    {
      ...CATALOG_PROTOCOL.blockList,
      handle: async (ctx) => {
        const v = await version(ctx);
        sendBinary(ctx, encodeBlockList(await svc().blockList(v.id, v.size)));
      },
    },
    {
      ...CATALOG_PROTOCOL.toc,
      handle: async (ctx) => {
        const v = await version(ctx);
        sendJson(ctx, 200, { rows: (await svc().toc(v.id)).map(rowToJson) });
      },
    },
    {
      ...CATALOG_PROTOCOL.block,
      handle: async (ctx) => {
        const block = id(ctx.params.id, 'block id');
        if (!keeperCatalog(keeper).blockLocation(block)) throw new HttpError('not_found', 'no such block');
        sendRange(ctx, await svc().readSealed(block));
      },
    },
    {
      ...CATALOG_PROTOCOL.readBlocks,
      handle: async (ctx) => {
        const ids = decodeIds(await body(ctx));
        if (ids.length === 0) throw new HttpError('bad_request', 'no block ids');
        const catalog = keeperCatalog(keeper);
        // The answer stops at its size bound (after at least one block); the client asks again for the rest.
        const take: { id: Buffer; found: boolean }[] = [];
        let bound = 0;
        for (const block of ids) {
          const length = catalog.blockLocation(block)?.length;
          if (take.length > 0 && bound + 4 + (length ?? 0) > READ_ANSWER_BYTES) break;
          take.push({ id: block, found: length !== undefined });
          bound += 4 + (length ?? 0);
        }
        const blocks = await Promise.all(
          take.map(({ id: block, found }) =>
            // Unreadable here: an empty frame, and the client asks GET /v1/blocks/{id} for the reason.
            found ? svc().readSealed(block).catch((e: unknown) => (e instanceof StrataError ? Buffer.alloc(0) : Promise.reject(e))) : Buffer.alloc(0),
          ),
        );
        const frames: Buffer[] = [];
        let total = 0;
        for (const sealed of blocks) {
          const head = Buffer.allocUnsafe(4);
          head.writeUInt32LE(sealed.length);
          frames.push(head, sealed);
          total += 4 + sealed.length;
        }
        sendBinary(ctx, Buffer.concat(frames, total));
      },
    },
    {
      ...CATALOG_PROTOCOL.missing,
      handle: async (ctx) => sendBinary(ctx, encodeIds(await svc().missing(decodeIds(await body(ctx))))),
    },
    {
      ...CATALOG_PROTOCOL.where,
      handle: async (ctx) => {
        // Where each block is: a client with the key checks the pack vouches for it before leaving it out.
        const ids = decodeIds(await body(ctx));
        const claims = await svc().where(ids);
        const out = Buffer.alloc(ids.length * CLAIM_BYTES);
        claims.forEach((c, i) => {
          if (!c) return;
          const at = i * CLAIM_BYTES;
          out.write(c.pack, at, 32, 'hex');
          out.writeDoubleLE(c.offset, at + 32);
          out.writeDoubleLE(c.length, at + 40);
          out.writeDoubleLE(c.packSize, at + 48);
        });
        sendBinary(ctx, out);
      },
    },
    {
      ...CATALOG_PROTOCOL.spares,
      handle: async (ctx) => {
        const frames: Buffer[] = [];
        for (const sealed of await svc().spares(id(ctx.params.id, 'block id'))) {
          const head = Buffer.allocUnsafe(4);
          head.writeUInt32LE(sealed.length);
          frames.push(head, sealed);
        }
        sendBinary(ctx, Buffer.concat(frames));
      },
    },
    {
      ...CATALOG_PROTOCOL.putPack,
      handle: async (ctx) => {
        const name = ctx.params.name!;
        if (!/^[0-9a-f]{64}$/.test(name)) throw new HttpError('bad_name', 'invalid pack name');
        const j = await jsonBody(ctx);
        const s = svc();
        let size: number;
        try {
          size = (await s.storage.stat({ kind: 'pack', name })).size;
        } catch {
          throw new HttpError('no_pack', `upload pack ${name.slice(0, 16)} before its index`);
        }
        const entries = packEntriesFromJson(j.entries, size, PACK_MAGIC.length);
        // Moving blocks already indexed elsewhere is prune's repacking: admin only.
        const relocate = j.relocate === true;
        if (relocate && ctx.token?.role !== 'admin') throw new HttpError('forbidden', 'moving indexed blocks (repacking) needs the admin role');
        // Copies of blocks indexed elsewhere whose first copy the client found forged: kept as spares, never moved.
        if (j.replaces !== undefined && !Array.isArray(j.replaces)) throw new HttpError('bad_request', 'replaces must be a list of block ids');
        const spares = new Set(((j.replaces as unknown[] | undefined) ?? []).map((h) => id(h as string, 'replaces').toString('hex')));
        if (keeperCatalog(keeper).packIndexed(name)) return sendJson(ctx, 200, { indexed: false });
        s.indexPack(name, size, entries, relocate, spares);
        sendJson(ctx, 201, { indexed: true });
      },
    },
    {
      ...CATALOG_PROTOCOL.startBackup,
      handle: async (ctx) => {
        const j = await jsonBody(ctx);
        const parent = j.parent === 'auto' ? 'auto' : num(j.parent, 'parent');
        const started = await svc().startBackup(b64(j.lineage, 'lineage'), num(j.time, 'time'), parent, { renew: false });
        sendJson(ctx, 201, { lease: started.lease, parent: started.parent ? snapshotToJson(started.parent) : null });
      },
    },
    {
      ...CATALOG_PROTOCOL.renewLease,
      handle: async (ctx) => {
        if (!svc().renew(ctx.params.lease!)) throw new HttpError('not_found', 'no such lease (it went stale: start again)');
        ctx.res.writeHead(204).end();
      },
    },
    {
      ...CATALOG_PROTOCOL.endLease,
      handle: async (ctx) => {
        await svc().endLease(ctx.params.lease!);
        ctx.res.writeHead(204).end();
      },
    },
    {
      ...CATALOG_PROTOCOL.startMaintenance,
      handle: async (ctx) => {
        const j = await jsonBody(ctx);
        // A client may wait for another maintenance, but not hold a request open for long.
        const waitMs = Math.min(j.waitMs === undefined ? 0 : num(j.waitMs, 'waitMs'), MAX_LOCK_WAIT_MS);
        sendJson(ctx, 201, { lease: await svc().startMaintenance(waitMs, undefined, { renew: false }) });
      },
    },
    {
      ...CATALOG_PROTOCOL.forget,
      handle: async (ctx) => {
        held(keeper, ctx.params.lease!);
        const j = await jsonBody(ctx);
        if (!Array.isArray(j.snapshots)) throw new HttpError('bad_request', 'snapshots must be a list of numbers');
        sendJson(ctx, 200, await svc().forgetSnapshots(j.snapshots.map((s) => num(s, 'snapshot'))));
      },
    },
    {
      ...CATALOG_PROTOCOL.staleTocs,
      handle: async (ctx) => {
        held(keeper, ctx.params.lease!);
        sendJson(ctx, 200, { versions: await svc().staleTocs() });
      },
    },
    {
      ...CATALOG_PROTOCOL.setVersionTocs,
      handle: async (ctx) => {
        held(keeper, ctx.params.lease!);
        const j = await jsonBody(ctx);
        if (!Array.isArray(j.tocs)) throw new HttpError('bad_request', 'tocs must be a list');
        const ids = (v: unknown, what: string) => {
          if (!Array.isArray(v)) throw new HttpError('bad_request', `${what} must be a list of ids`);
          return v.map((x) => id(x as string, what));
        };
        const list = j.tocs.map((t: unknown) => {
          if (typeof t !== 'object' || t === null) throw new HttpError('bad_request', 'each TOC is an object');
          const o = t as Record<string, unknown>;
          return { version: num(o.version, 'version'), toc: id(o.toc as string, 'toc'), segments: ids(o.segments, 'segments'), old: ids(o.old, 'old') };
        });
        await svc().setVersionTocs(list);
        ctx.res.writeHead(204).end();
      },
    },
    {
      ...CATALOG_PROTOCOL.snapshotRecord,
      handle: async (ctx) => {
        const seq = int(ctx.params.seq, 'seq');
        if (!(await svc().snapshotBySeq(seq))) throw new HttpError('not_found', 'no such snapshot');
        const record = await svc().snapshotRecord(seq);
        sendJson(ctx, 200, { record: record ? record.toString('hex') : null });
      },
    },
    {
      ...CATALOG_PROTOCOL.setSnapshotRecord,
      handle: async (ctx) => {
        held(keeper, ctx.params.lease!);
        const j = await jsonBody(ctx);
        await svc().setSnapshotRecord(num(j.seq, 'seq'), id(j.record as string, 'record'), b64(j.meta, 'meta'));
        ctx.res.writeHead(204).end();
      },
    },
    {
      ...CATALOG_PROTOCOL.pruneMark,
      handle: async (ctx) => {
        held(keeper, ctx.params.lease!);
        const j = await jsonBody(ctx);
        const plan = await svc().pruneMark(j.dryRun === true, j.wholePacks === true);
        sendJson(ctx, 200, { ...plan, packs: plan.packs.map((p) => ({ name: p.name, blobs: packEntriesToJson(p.blobs) })) });
      },
    },
    {
      ...CATALOG_PROTOCOL.pruneSweep,
      handle: async (ctx) => {
        held(keeper, ctx.params.lease!);
        const j = await jsonBody(ctx);
        if (!Array.isArray(j.packs) || !j.packs.every((p) => typeof p === 'string' && /^[0-9a-f]{64}$/.test(p))) throw new HttpError('bad_request', 'packs must be a list of pack names');
        sendJson(ctx, 200, await svc().pruneSweep(j.packs as string[], num(j.started, 'started')));
      },
    },
    {
      ...CATALOG_PROTOCOL.checkPacks,
      handle: async (ctx) => sendJson(ctx, 200, await svc().checkPacks()),
    },
    {
      ...CATALOG_PROTOCOL.checkTocs,
      handle: async (ctx) => sendJson(ctx, 200, await svc().checkTocs()),
    },
    {
      ...CATALOG_PROTOCOL.packBlobs,
      handle: async (ctx) => {
        const name = packName(ctx.params.name);
        if (!keeperCatalog(keeper).packIndexed(name)) throw new HttpError('not_found', 'no such pack in the catalog');
        sendJson(ctx, 200, { blobs: packEntriesToJson(await svc().packBlobs(name)) });
      },
    },
    {
      ...CATALOG_PROTOCOL.markChecked,
      handle: async (ctx) => {
        await jsonBody(ctx);
        await svc().markChecked(packName(ctx.params.name));
        ctx.res.writeHead(204).end();
      },
    },
    {
      ...CATALOG_PROTOCOL.checkPass,
      handle: async (ctx) => {
        const j = await jsonBody(ctx);
        if (j.which !== 'current' && j.which !== 'new') throw new HttpError('bad_request', 'which must be "current" or "new"');
        sendJson(ctx, 200, { pass: await svc().checkPass(j.which) });
      },
    },
    {
      ...CATALOG_PROTOCOL.damage,
      handle: async (ctx) => sendJson(ctx, 200, { damage: await svc().damage(blockList((await jsonBody(ctx)).blocks)) }),
    },
    {
      ...CATALOG_PROTOCOL.repair,
      handle: async (ctx) => sendJson(ctx, 200, { repaired: await svc().repair(blockList((await jsonBody(ctx)).blocks)) }),
    },
    {
      ...CATALOG_PROTOCOL.retained,
      handle: async (ctx) => {
        const { tocs, records } = await svc().retainedBlobs();
        sendJson(ctx, 200, { tocs: tocs.map((b) => b.toString('hex')), records: records.map((b) => b.toString('hex')) });
      },
    },
    {
      ...CATALOG_PROTOCOL.versionRecord,
      handle: async (ctx) => {
        const v = await version(ctx);
        const rec = (await svc().versionRecord(v.id))!;
        sendJson(ctx, 200, { snapshot: rec.snapshot, path: rec.path.toString('hex'), size: rec.size, toc: rec.toc ? rec.toc.toString('hex') : null });
      },
    },
    {
      ...CATALOG_PROTOCOL.beginSnapshot,
      handle: async (ctx) => {
        const j = await jsonBody(ctx);
        if (typeof j.id !== 'string' || !/^[0-9a-f]{64}$/.test(j.id)) throw new HttpError('bad_request', 'id must be 64 hex digits');
        if (typeof j.lease !== 'string') throw new HttpError('bad_request', 'lease must be a string');
        const parent = j.parent === null ? null : num(j.parent, 'parent');
        const cat = keeperCatalog(keeper);
        // A retried request finds its snapshot already begun.
        const again = cat.pendingSnapshots().find((p) => p.id === j.id);
        if (j.inherits !== undefined && typeof j.inherits !== 'boolean') throw new HttpError('bad_request', 'inherits must be true or false');
        const seq = again ? again.seq : await svc().beginSnapshot(j.id, num(j.time, 'time'), b64(j.lineage, 'lineage'), b64(j.meta, 'meta'), parent, j.lease, j.inherits === true);
        sendJson(ctx, 201, { seq });
      },
    },
    {
      ...CATALOG_PROTOCOL.storeVersions,
      handle: async (ctx) => {
        const seq = pending(keeper, int(ctx.params.seq, 'seq'));
        const list = decodeVersions(await body(ctx));
        // A retried batch: versions already stored are not stored twice.
        const cat = keeperCatalog(keeper);
        await svc().storeVersions(seq, list.filter((v) => !cat.ownVersion(seq, v.path)));
        ctx.res.writeHead(204).end();
      },
    },
    {
      ...CATALOG_PROTOCOL.commitSnapshot,
      handle: async (ctx) => {
        const seq = int(ctx.params.seq, 'seq');
        const j = await jsonBody(ctx);
        const cat = keeperCatalog(keeper);
        const row = cat.snapshotBySeq(seq);
        if (!row) throw new HttpError('not_found', 'no such snapshot');
        const blobs = Array.isArray(j.blobs) ? j.blobs.map((b) => id(b as string, 'blob')) : undefined;
        if (!blobs || blobs.length > 10_000_000) throw new HttpError('bad_request', 'blobs must be a list of ids');
        // Committed already (a retried request): nothing to do.
        if (!cat.pendingSnapshots().some((p) => p.seq === seq)) return sendJson(ctx, 200, { seq });
        await svc().commitSnapshot(seq, id(j.root as string, 'root'), id(j.record as string, 'record'), b64(j.meta, 'meta'), blobs);
        sendJson(ctx, 201, { seq });
      },
    },
  ];
}

function keeperCatalog(keeper: CatalogKeeper): Catalog {
  return keeper.get().catalog;
}

function packName(s: string | undefined): string {
  if (!s || !/^[0-9a-f]{64}$/.test(s)) throw new HttpError('bad_name', 'invalid pack name');
  return s;
}

function blockList(v: unknown): string[] {
  if (!Array.isArray(v) || !v.every((b) => typeof b === 'string' && /^[0-9a-f]{64}$/.test(b))) throw new HttpError('bad_request', 'blocks must be a list of block ids');
  return v as string[];
}

function held(keeper: CatalogKeeper, lease: string): void {
  if (!keeper.get().holds(lease, 'maintenance')) throw new HttpError('no_lease', 'this needs the maintenance lease (it went stale, or was never taken)');
}

function pending(keeper: CatalogKeeper, seq: number): number {
  if (!keeperCatalog(keeper).pendingSnapshots().some((p) => p.seq === seq)) throw new HttpError('not_pending', 'that snapshot is not being written');
  return seq;
}
