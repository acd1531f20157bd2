/**
 * The bodies of the catalog protocol, a codec each (see Codec in wire.ts):
 * what a client sends and `strata serve` reads, what the server answers and
 * the client reads, each written once for both ends. CATALOG_PROTOCOL
 * (protocol.ts) names a method's request and answer codecs; the server's
 * routes and the remote client take them from there. The bytes on the wire
 * are the protocol's (docs/openapi.yaml): JSON field names and binary layouts
 * do not change without a new path.
 */
import { integrity } from '../errors.js';
import type { BlockList } from './blocklist.js';
import type { SnapshotRow, TocRow, VersionRow } from './catalog.js';
import type { PackInfo, VersionProblem } from './check.js';
import type { PackEntry } from './packs.js';
import type { Forgotten } from './forget.js';
import type { PrunePlan } from './prune.js';
import type { Piece } from './resolve.js';
import type { BackupStart, ReadPlan, ResealedToc, StoredVersionRow, VersionRecord, VersionUpload } from './service.js';
import {
  CLAIM_BYTES,
  WireError,
  base64,
  binaryCodec,
  checkPackLayout,
  count,
  decodeBlockList,
  decodeIds,
  decodeVersions,
  encodeBlockList,
  encodeIds,
  encodeVersions,
  hexId,
  jsonCodec,
  packEntriesFromJson,
  packEntriesToJson,
  pieceFromJson,
  pieceToJson,
  rowFromJson,
  rowToJson,
  snapshotFromJson,
  snapshotToJson,
  type Codec,
} from './wire.js';

const HEX_ID = /^[0-9a-f]{64}$/;

/** A JSON body's fields (a request's body is an object already: the server refuses any other). */
function fields(j: unknown): Record<string, unknown> {
  return typeof j === 'object' && j !== null ? (j as Record<string, unknown>) : {};
}

/** An answer that is not what the protocol says: the server is broken or hostile. */
function malformed(where: string, what: string): Error {
  return integrity(`${where} sent a malformed ${what}`);
}

const hex = (b: Buffer) => b.toString('hex');
const hexList = (ids: readonly Buffer[]) => ids.map(hex);

/** Trusted as the server sends it: the client only shows these (check's reports, prune's counts). */
function asSent<T>(): Codec<T> {
  return jsonCodec<T>(
    (v) => v,
    (j) => j as T,
  );
}

// --- ids and blocks

/** Block ids, 32 bytes each. */
export const ids = binaryCodec<Buffer[], readonly Buffer[]>(encodeIds, (b) => decodeIds(b));

export const blockList = binaryCodec<BlockList>(encodeBlockList, (b) => decodeBlockList(b));

/** A block's sealed bytes, as stored. */
export const sealed = binaryCodec<Buffer>(
  (b) => b,
  (b) => b,
);

/** Sealed blocks, each as a 4-byte length (u32le) and its bytes; an empty frame for one the server cannot give. */
function frames(what: string): Codec<Buffer[], readonly Buffer[]> {
  return binaryCodec<Buffer[], readonly Buffer[]>(
    (list) => {
      const parts: Buffer[] = [];
      for (const b of list) {
        const head = Buffer.allocUnsafe(4);
        head.writeUInt32LE(b.length);
        parts.push(head, b);
      }
      return Buffer.concat(parts);
    },
    (r, where) => {
      const out: Buffer[] = [];
      for (let at = 0; at < r.length; ) {
        if (at + 4 > r.length || at + 4 + r.readUInt32LE(at) > r.length) throw malformed(where, what);
        const n = r.readUInt32LE(at);
        out.push(r.subarray(at + 4, at + 4 + n));
        at += 4 + n;
      }
      return out;
    },
  );
}

export const blockFrames = frames('answer to a block read');
export const spareFrames = frames('list of spare copies');

/** Where the server says a block is. */
export interface Claim {
  pack: string;
  packSize: number;
  offset: number;
  length: number;
}

/** Per id, 32 bytes of pack name, then offset, length and pack size (f64le); all zero for none. */
export const claims = binaryCodec<(Claim | undefined)[], readonly (Claim | undefined)[]>(
  (list) => {
    const out = Buffer.alloc(list.length * CLAIM_BYTES);
    list.forEach((c, i) => {
      if (!c) return;
      const at = i * CLAIM_BYTES;
      out.write(c.pack, at, 32, 'hex');
      out.writeDoubleLE(c.offset, at + 32);
      out.writeDoubleLE(c.length, at + 40);
      out.writeDoubleLE(c.packSize, at + 48);
    });
    return out;
  },
  (buf, where) => {
    if (buf.length % CLAIM_BYTES !== 0) throw malformed(where, 'list of block locations');
    const out: (Claim | undefined)[] = [];
    for (let at = 0; at < buf.length; at += CLAIM_BYTES) {
      const [offset, length, packSize] = [buf.readDoubleLE(at + 32), buf.readDoubleLE(at + 40), buf.readDoubleLE(at + 48)];
      const whole = (v: number) => Number.isSafeInteger(v) && v >= 0;
      if (!whole(offset) || !whole(length) || !whole(packSize)) throw malformed(where, 'list of block locations');
      out.push(length === 0 ? undefined : { pack: buf.toString('hex', at, at + 32), offset, length, packSize });
    }
    return out;
  },
);

// --- snapshots and versions

export const snapshot = jsonCodec<SnapshotRow>(snapshotToJson, (j) => snapshotFromJson(j));

/** A list in an object, `{ [name]: [...] }`, each item as `toJson` and `fromJson` make it. */
function listIn<T>(name: string, what: string, toJson: (item: T) => unknown, fromJson: (json: unknown) => T): Codec<T[], readonly T[]> {
  return jsonCodec<T[], readonly T[]>(
    (items) => ({ [name]: items.map(toJson) }),
    (j, where) => {
      const list = fields(j)[name];
      if (!Array.isArray(list)) throw malformed(where, what);
      return list.map(fromJson);
    },
  );
}

export const snapshotList = listIn('snapshots', 'list of snapshots', snapshotToJson, snapshotFromJson);

/** A version row as JSON (`end` -1 when not sent); `snapshot` fills in for an answer that leaves it out. */
export function versionRow(j: unknown, snapshot?: number): StoredVersionRow {
  const o = j as Partial<StoredVersionRow>;
  const whole = (n: unknown) => Number.isSafeInteger(n) && (n as number) >= 0;
  if (typeof o !== 'object' || o === null || !whole(o.id) || !whole(o.size) || !whole(o.depth) || !whole(o.snapshot ?? snapshot)) throw integrity('malformed version');
  const end = Number.isSafeInteger(o.end) ? o.end! : -1;
  return { id: o.id!, snapshot: (o.snapshot ?? snapshot)!, size: o.size!, depth: o.depth!, end };
}

/** A version as the catalog has it; with where its TOC ends when the server knows it. */
export const version = jsonCodec<StoredVersionRow, VersionRow | StoredVersionRow>(
  (v) => v,
  (j) => versionRow(j),
);

/** A version of the table of a snapshot's versions: its path id (hex), and no snapshot (the one asked about). */
export interface TableVersion {
  path: string;
  id: number;
  size: number;
  depth: number;
  end: number;
}

const VERSION_ROW = 64;

/** A snapshot's versions, 64 bytes each: path (32), id, size, depth, end (f64le; end -1 for none). */
export const versionTable = binaryCodec<TableVersion[], readonly (VersionRow & { path: Buffer; end: number | null })[]>(
  (rows) => {
    const out = Buffer.allocUnsafe(rows.length * VERSION_ROW);
    rows.forEach((r, i) => {
      const at = i * VERSION_ROW;
      r.path.copy(out, at);
      out.writeDoubleLE(r.id, at + 32);
      out.writeDoubleLE(r.size, at + 40);
      out.writeDoubleLE(r.depth, at + 48);
      out.writeDoubleLE(r.end ?? -1, at + 56);
    });
    return out;
  },
  (buf, where) => {
    if (buf.length % VERSION_ROW !== 0) throw malformed(where, 'version table');
    const out: TableVersion[] = [];
    for (let at = 0; at < buf.length; at += VERSION_ROW) {
      const num = (o: number) => buf.readDoubleLE(at + o);
      const row = versionRow({ id: num(32), size: num(40), depth: num(48), end: num(56) }, 0);
      out.push({ path: buf.toString('hex', at, at + 32), id: row.id, size: row.size, depth: row.depth, end: row.end });
    }
    return out;
  },
);

export const versionRecord = jsonCodec<VersionRecord>(
  (r) => ({ snapshot: r.snapshot, path: hex(r.path), size: r.size, toc: r.toc ? hex(r.toc) : null }),
  (j) => {
    const o = fields(j);
    const id = (v: unknown) => (typeof v === 'string' && HEX_ID.test(v) ? Buffer.from(v, 'hex') : undefined);
    const path = id(o.path);
    if (!path || !Number.isSafeInteger(o.snapshot) || !Number.isSafeInteger(o.size)) throw integrity('malformed version record');
    return { snapshot: o.snapshot as number, path, size: o.size as number, toc: o.toc === null ? null : (id(o.toc) ?? null) };
  },
);

/** The id of a snapshot's sealed record, null before it is committed. */
export const snapshotRecord = jsonCodec<Buffer | null>(
  (record) => ({ record: record ? hex(record) : null }),
  (j, where) => {
    const record = fields(j).record;
    if (record === null) return null;
    if (typeof record !== 'string' || !HEX_ID.test(record)) throw malformed(where, 'record id');
    return Buffer.from(record, 'hex');
  },
);

export const tocRows = listIn<TocRow>('rows', 'TOC', rowToJson, rowFromJson);

/** A page of pieces, and where the next page starts (null: the range is done). */
export interface PiecePage {
  pieces: Piece[];
  next: number | null;
}

export const piecePage = jsonCodec<PiecePage, { pieces: readonly Piece[]; next: number | null }>(
  (page) => ({ pieces: page.pieces.map(pieceToJson), next: page.next }),
  (j, where) => {
    const o = fields(j);
    if (!Array.isArray(o.pieces) || (o.next !== null && !Number.isSafeInteger(o.next))) throw malformed(where, 'page of pieces');
    return { pieces: o.pieces.map(pieceFromJson), next: o.next as number | null };
  },
);

/** A read plan: the snapshot, the newer ones, the version, its range and the first page of pieces, covering it in order. */
export const readPlan = jsonCodec<ReadPlan>(
  (plan) => ({
    snapshot: snapshotToJson(plan.snapshot),
    newer: plan.newer.map(snapshotToJson),
    version: plan.version,
    start: plan.start,
    end: plan.end,
    pieces: plan.pieces.map(pieceToJson),
    next: plan.next,
    toc: plan.toc ? hex(plan.toc) : null,
  }),
  (json, where) => {
    const j = fields(json);
    const snapshot = snapshotFromJson(j.snapshot);
    const version = versionRow(j.version, snapshot.seq);
    const start = Number(j.start);
    const end = Number(j.end);
    if (!Array.isArray(j.newer) || !Array.isArray(j.pieces) || !Number.isSafeInteger(start) || !Number.isSafeInteger(end) || (j.next !== null && !Number.isSafeInteger(j.next))) {
      throw malformed(where, 'read plan');
    }
    const pieces = j.pieces.map(pieceFromJson);
    let at = start;
    for (const p of pieces) {
      if (p.at !== at) throw integrity(`${where} sent pieces out of order`);
      at += p.length;
    }
    if ((j.next === null && end >= start && at !== end + 1) || (j.next !== null && j.next !== at)) throw integrity(`${where} sent pieces that do not cover the range`);
    // The version's sealed TOC: a reader checks the version against it without asking again.
    const toc = typeof j.toc === 'string' && HEX_ID.test(j.toc) ? Buffer.from(j.toc, 'hex') : null;
    return { snapshot, newer: j.newer.map(snapshotFromJson), version, start, end, pieces, next: j.next as number | null, toc };
  },
);

// --- backups

export const backupStart = jsonCodec<{ lineage: Buffer; time: number; parent: number | 'auto' }>(
  (s) => ({ lineage: s.lineage.toString('base64'), time: s.time, parent: s.parent }),
  (json) => {
    const j = fields(json);
    return { lineage: base64(j.lineage, 'lineage'), time: count(j.time, 'time'), parent: j.parent === 'auto' ? 'auto' : count(j.parent, 'parent') };
  },
);

export const backupStarted = jsonCodec<BackupStart>(
  (s) => ({ lease: s.lease, parent: s.parent ? snapshotToJson(s.parent) : null }),
  (json, where) => {
    const j = fields(json);
    if (typeof j.lease !== 'string' || !/^[0-9a-f]{32}$/.test(j.lease)) throw malformed(where, 'lease');
    return { lease: j.lease, ...(j.parent ? { parent: snapshotFromJson(j.parent) } : {}) };
  },
);

/** A snapshot to begin: its row, the lease of its backup, and whether it inherits from its parent. */
export type NewSnapshot = Pick<SnapshotRow, 'id' | 'time' | 'lineage' | 'meta' | 'parent'> & { lease: string; inherits: boolean };

export const newSnapshot = jsonCodec<NewSnapshot>(
  (s) => ({ id: s.id, time: s.time, lineage: s.lineage.toString('base64'), meta: s.meta.toString('base64'), parent: s.parent, lease: s.lease, ...(s.inherits ? { inherits: s.inherits } : {}) }),
  (json) => {
    const j = fields(json);
    if (typeof j.id !== 'string' || !HEX_ID.test(j.id)) throw new WireError('id must be 64 hex digits');
    if (typeof j.lease !== 'string') throw new WireError('lease must be a string');
    const parent = j.parent === null ? null : count(j.parent, 'parent');
    if (j.inherits !== undefined && typeof j.inherits !== 'boolean') throw new WireError('inherits must be true or false');
    return { id: j.id, time: count(j.time, 'time'), lineage: base64(j.lineage, 'lineage'), meta: base64(j.meta, 'meta'), parent, lease: j.lease, inherits: j.inherits === true };
  },
);

/** A snapshot's number: begun, or committed. */
export const snapshotSeq = jsonCodec<number>(
  (seq) => ({ seq }),
  (json, where) => {
    const seq = fields(json).seq;
    if (!Number.isSafeInteger(seq)) throw malformed(where, 'snapshot number');
    return seq as number;
  },
);

/** A batch of a backup's versions: each its path, size, sealed TOC and segments, and its blocks (see encodeVersions). */
export const versionUploads = binaryCodec<VersionUpload[], readonly VersionUpload[]>(encodeVersions, (b) => decodeVersions(b));

export interface SnapshotCommit {
  root: Buffer;
  record: Buffer;
  meta: Buffer;
  blobs: readonly Buffer[];
}

export const snapshotCommit = jsonCodec<SnapshotCommit>(
  (c) => ({ root: hex(c.root), record: hex(c.record), meta: c.meta.toString('base64'), blobs: hexList(c.blobs) }),
  (json) => {
    const j = fields(json);
    const blobs = Array.isArray(j.blobs) ? j.blobs.map((b) => hexId(b, 'blob')) : undefined;
    if (!blobs || blobs.length > 10_000_000) throw new WireError('blobs must be a list of ids');
    return { root: hexId(j.root, 'root'), record: hexId(j.record, 'record'), meta: base64(j.meta, 'meta'), blobs };
  },
);

// --- packs

export interface PackIndex {
  entries: readonly PackEntry[];
  /** Blocks already indexed elsewhere move here (prune's repacking). */
  relocate: boolean;
  /** Blocks whose first copy the client found forged (hex): kept as spares. */
  replaces: readonly string[];
}

export const packIndex = jsonCodec<PackIndex>(
  (p) => ({ entries: packEntriesToJson(p.entries), ...(p.relocate ? { relocate: p.relocate } : {}), ...(p.replaces.length > 0 ? { replaces: p.replaces } : {}) }),
  (json) => {
    const j = fields(json);
    if (j.replaces !== undefined && !Array.isArray(j.replaces)) throw new WireError('replaces must be a list of block ids');
    const replaces = ((j.replaces as unknown[] | undefined) ?? []).map((h) => hex(hexId(h, 'replaces')));
    return { entries: packEntriesFromJson(j.entries), relocate: j.relocate === true, replaces };
  },
);

export const packIndexed = jsonCodec<boolean>(
  (indexed) => ({ indexed }),
  (json) => fields(json).indexed === true,
);

/** A pack's entries as the catalog has them (any size of pack). */
function packEntries(j: unknown): PackEntry[] {
  const entries = packEntriesFromJson(j);
  checkPackLayout(entries, Number.MAX_SAFE_INTEGER, 0);
  return entries;
}

export const packBlobs = jsonCodec<PackEntry[], readonly PackEntry[]>(
  (blobs) => ({ blobs: packEntriesToJson(blobs) }),
  (j) => packEntries(fields(j).blobs),
);

// --- leases and maintenance

export const lease = jsonCodec<string>(
  (id) => ({ lease: id }),
  (j, where) => {
    const id = fields(j).lease;
    if (typeof id !== 'string') throw malformed(where, 'lease');
    return id;
  },
);

/** The snapshot a writable mount is based on, to be kept from forget while it is. */
export const pinRequest = jsonCodec<number>(
  (snapshot) => ({ snapshot }),
  (j) => count(fields(j).snapshot, 'snapshot'),
);

/** How long a request for the maintenance lease may wait (ms). */
export const maintenanceWait = jsonCodec<number>(
  (waitMs) => ({ waitMs }),
  (j) => {
    const waitMs = fields(j).waitMs;
    return waitMs === undefined ? 0 : count(waitMs, 'waitMs');
  },
);

export const forgetRequest = jsonCodec<number[], readonly number[]>(
  (snapshots) => ({ snapshots }),
  (j) => {
    const snapshots = fields(j).snapshots;
    if (!Array.isArray(snapshots)) throw new WireError('snapshots must be a list of numbers');
    return snapshots.map((s) => count(s, 'snapshot'));
  },
);

export const forgotten = jsonCodec<Forgotten>(
  (f) => f,
  (json, where) => {
    const j = fields(json);
    const list = (v: unknown) => {
      if (!Array.isArray(v) || !v.every((n) => Number.isSafeInteger(n))) throw malformed(where, 'answer to forget');
      return v as number[];
    };
    const mounted = j.mounted === undefined ? undefined : Array.isArray(j.mounted) ? j.mounted.map((m) => {
      const f = fields(m);
      if (typeof f.thisHost !== 'boolean') throw malformed(where, 'answer to forget');
      return { snapshot: count(f.snapshot, 'snapshot'), pid: count(f.pid, 'pid'), thisHost: f.thisHost, since: count(f.since, 'since') };
    }) : (() => {
      throw malformed(where, 'answer to forget');
    })();
    return { removed: list(j.removed), inUse: list(j.inUse), ...(mounted ? { mounted } : {}), touched: list(j.touched) };
  },
);

export const staleTocs = jsonCodec<number[], readonly number[]>(
  (versions) => ({ versions }),
  (j, where) => {
    const versions = fields(j).versions;
    if (!Array.isArray(versions) || !versions.every((n) => Number.isSafeInteger(n))) throw malformed(where, 'list of stale TOCs');
    return versions as number[];
  },
);

export const resealedTocs = jsonCodec<ResealedToc[], readonly ResealedToc[]>(
  (list) => ({ tocs: list.map((t) => ({ version: t.version, toc: hex(t.toc), segments: hexList(t.segments), old: hexList(t.old) })) }),
  (json) => {
    const tocs = fields(json).tocs;
    if (!Array.isArray(tocs)) throw new WireError('tocs must be a list');
    const idList = (v: unknown, what: string) => {
      if (!Array.isArray(v)) throw new WireError(`${what} must be a list of ids`);
      return v.map((x) => hexId(x, what));
    };
    return tocs.map((t: unknown) => {
      if (typeof t !== 'object' || t === null) throw new WireError('each TOC is an object');
      const o = t as Record<string, unknown>;
      return { version: count(o.version, 'version'), toc: hexId(o.toc, 'toc'), segments: idList(o.segments, 'segments'), old: idList(o.old, 'old') };
    });
  },
);

export const newSnapshotRecord = jsonCodec<{ seq: number; record: Buffer; meta: Buffer }>(
  (r) => ({ seq: r.seq, record: hex(r.record), meta: r.meta.toString('base64') }),
  (json) => {
    const j = fields(json);
    return { seq: count(j.seq, 'seq'), record: hexId(j.record, 'record'), meta: base64(j.meta, 'meta') };
  },
);

export const retained = jsonCodec<{ tocs: Buffer[]; records: Buffer[] }, { tocs: readonly Buffer[]; records: readonly Buffer[] }>(
  (r) => ({ tocs: hexList(r.tocs), records: hexList(r.records) }),
  (json, where) => {
    const j = fields(json);
    const idList = (v: unknown) => {
      if (!Array.isArray(v) || !v.every((h) => typeof h === 'string' && HEX_ID.test(h))) throw malformed(where, 'list of retained blobs');
      return (v as string[]).map((h) => Buffer.from(h, 'hex'));
    };
    return { tocs: idList(j.tocs), records: idList(j.records) };
  },
);

export const pruneOptions = jsonCodec<{ dryRun: boolean; wholePacks: boolean }>(
  (o) => o,
  (json) => {
    const j = fields(json);
    return { dryRun: j.dryRun === true, wholePacks: j.wholePacks === true };
  },
);

export const prunePlan = jsonCodec<PrunePlan>(
  (plan) => ({ ...plan, packs: plan.packs.map((p) => ({ name: p.name, blobs: packEntriesToJson(p.blobs) })) }),
  (json, where) => {
    const j = fields(json);
    const whole = (n: unknown) => {
      if (!Number.isSafeInteger(n) || (n as number) < 0) throw malformed(where, 'prune plan');
      return n as number;
    };
    if (!Array.isArray(j.packs)) throw malformed(where, 'prune plan');
    const packs = j.packs.map((p: { name?: unknown; blobs?: unknown }) => {
      if (typeof p.name !== 'string' || !HEX_ID.test(p.name)) throw malformed(where, 'prune plan');
      return { name: p.name, blobs: Array.isArray(p.blobs) && p.blobs.length === 0 ? [] : packEntries(p.blobs) };
    });
    return {
      started: whole(j.started),
      abandonedSnapshots: whole(j.abandonedSnapshots),
      unusedBlocks: whole(j.unusedBlocks),
      deletedBlocks: whole(j.deletedBlocks),
      packsNeedingKey: whole(j.packsNeedingKey),
      packs,
    };
  },
);

export const pruneSweep = jsonCodec<{ packs: string[]; started: number }, { packs: readonly string[]; started: number }>(
  (s) => s,
  (json) => {
    const j = fields(json);
    if (!Array.isArray(j.packs) || !j.packs.every((p) => typeof p === 'string' && HEX_ID.test(p))) throw new WireError('packs must be a list of pack names');
    return { packs: j.packs as string[], started: count(j.started, 'started') };
  },
);

export const swept = asSent<{ deletedPacks: number; orphanPacks: number; bytesFreed: number }>();

// --- check

export const packCheck = asSent<{ packs: PackInfo[]; errors: string[]; warnings: string[]; bad: string[] }>();

export const tocCheck = asSent<{ versions: number; problems: VersionProblem[]; bad: string[] }>();

/** A request with an empty JSON object for a body. */
export const emptyObject = jsonCodec<void>(
  () => ({}),
  () => undefined,
);

export const checkPassRequest = jsonCodec<'current' | 'new'>(
  (which) => ({ which }),
  (j) => {
    const which = fields(j).which;
    if (which !== 'current' && which !== 'new') throw new WireError('which must be "current" or "new"');
    return which;
  },
);

export const checkPass = jsonCodec<number>(
  (pass) => ({ pass }),
  (j, where) => {
    const pass = fields(j).pass;
    if (!Number.isSafeInteger(pass)) throw malformed(where, 'check pass');
    return pass as number;
  },
);

/** Blocks found bad (hex ids). */
export const badBlocks = jsonCodec<string[], readonly string[]>(
  (blocks) => ({ blocks }),
  (j) => {
    const blocks = fields(j).blocks;
    if (!Array.isArray(blocks) || !blocks.every((b) => typeof b === 'string' && HEX_ID.test(b))) throw new WireError('blocks must be a list of block ids');
    return blocks as string[];
  },
);

export const damage = jsonCodec<{ version: number; ranges: [number, number][] }[]>(
  (d) => ({ damage: d }),
  (j) => fields(j).damage as { version: number; ranges: [number, number][] }[],
);

export const repaired = jsonCodec<number>(
  (n) => ({ repaired: n }),
  (j) => fields(j).repaired as number,
);
