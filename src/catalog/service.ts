/**
 * What a client asks of whoever keeps a repository's catalog: in this process
 * for a local repository (LocalService), over HTTP for one behind
 * `strata serve` (RemoteService). Everything here works on keyed ids, sealed
 * bytes, sizes and offsets only, so the keeper needs no key: the client
 * chunks, ids and seals; the keeper finds what changed against the previous
 * version and builds the TOC (diffBlocks, tocRows), the same code either way.
 */
import { createHash } from 'node:crypto';
import { copyCatalog } from './checkpoint.js';
import { integrity, StrataError } from '../errors.js';
import { BlockList } from './blocklist.js';
import { blocksOf, blocksOfMany, resolveRange, type Piece } from './resolve.js';
import { diffBlocks, wholeRef, type TocEntries } from './toc.js';
import { tocRows, type TargetVersion } from './toc-rows.js';
import type { BlockCache } from '../storage/cache.js';
import type { Storage } from '../storage/storage.js';
import { resolveRange as resolveByteRange, type RangeSpec } from '../util/range.js';
import { GONE, retryStale, type Catalog, type SnapshotRow, type TocRow, type VersionRow } from './catalog.js';
import type { PackInfo, VersionProblem } from './check.js';
import type { PrunePlan } from './prune.js';
import type { Forgotten } from './forget.js';
import { Lease, liveLeases } from './lease.js';
import { checkNotBehind, type SharedLease, type SharedLeases } from './shared-lease.js';
import type { PackEntry } from './packs.js';

/** A version with where its TOC ends (-1 for none): a reader checks it against the tree's size. */
export interface StoredVersionRow extends VersionRow {
  end: number;
}

/** A file version as the client hands it over: its blocks, or "unchanged since the parent". */
export interface VersionUpload {
  path: Buffer;
  size: number;
  /** The sealed TOC the client stored for rebuilds (null when unchanged), and its segments. */
  toc: Buffer | null;
  segments: readonly Buffer[];
  /** The version's blocks in order; absent for a file unchanged since the parent snapshot. */
  blocks?: BlockList;
}

/** What a follower of a bucket's catalog journal (catalog/journal.ts) replays into. */
export interface JournalTarget {
  readonly catalog: Catalog;
  indexPack(name: string, size: number, entries: readonly PackEntry[], relocate?: boolean, spares?: ReadonlySet<string>): void;
  storeVersions(snapshot: number, list: readonly VersionUpload[]): Promise<void>;
  commitSnapshot(seq: number, root: Buffer, record: Buffer, meta: Buffer, blobs: readonly Buffer[]): Promise<void>;
  /** Removes these snapshots as the writer's forget did (whatever this catalog's own leases say). */
  forget(snapshots: readonly number[]): Promise<void>;
  setVersionTocs(list: readonly ResealedToc[]): void;
  /** Drops packs a prune removed, with the blocks they still held; how many it knew. */
  dropPacks(names: readonly string[]): number;
  /** Drops damaged blocks from the index as check --repair did (a spare copy taking a block's place), each only while the pack named holds its indexed copy; how many it dropped. */
  repair(blocks: readonly { block: string; pack: string }[]): Promise<number>;
}

export interface FollowResult {
  /** Records read. */
  records: number;
  packs: number;
  snapshots: number;
  /** Forgets, tags, resealed TOCs and prunes that changed the catalog. */
  changes: number;
  /** What was left out this time, and why. */
  problems: string[];
}

/** A resealed TOC as the journal names its version: by the snapshot that holds it and its path id. */
export interface JournaledToc {
  snapshot: string;
  path: Buffer;
  toc: Buffer;
  segments: readonly Buffer[];
  old: readonly Buffer[];
}

/** A bucket's catalog journal (catalog/journal.ts, CatalogJournal), as the service writes and follows it. */
export interface Journal {
  recordPack(name: string, size: number, entries: readonly PackEntry[], relocate: boolean, replaces?: readonly string[]): Promise<void>;
  began(seq: number, id: string, inherits: boolean): void;
  recordVersions(seq: number, list: readonly VersionUpload[]): Promise<void>;
  recordCommit(
    seq: number,
    row: Pick<SnapshotRow, 'id' | 'time' | 'lineage' | 'meta' | 'parent'> & { lease: string },
    parentId: string | null,
    commit: { root: Buffer; record: Buffer; meta: Buffer; blobs: readonly Buffer[] },
  ): Promise<void>;
  done(seq: number): void;
  recordForget(snapshots: readonly string[]): Promise<void>;
  recordTag(snapshot: string, record: Buffer, meta: Buffer): Promise<void>;
  recordTocs(tocs: readonly JournaledToc[]): Promise<void>;
  recordPrune(packs: readonly string[]): Promise<void>;
  recordRepair(blocks: readonly { block: string; pack: string }[]): Promise<void>;
  follow(target: JournalTarget): Promise<FollowResult>;
}

/** A version's own record: where it belongs and its sealed TOC (for resealing after a forget). */
export interface VersionRecord {
  snapshot: number;
  path: Buffer;
  size: number;
  toc: Buffer | null;
}

export interface ResealedToc {
  version: number;
  toc: Buffer;
  segments: readonly Buffer[];
  /** The segments of the TOC it replaces, let go with it. */
  old: readonly Buffer[];
}

/** Which snapshot a read means: the newest at or before a time, or one id prefix. */
export type SnapshotChoice = { until: number } | { prefix: string };

/**
 * Everything a range read needs, found in one question: the snapshot (the
 * newest chosen one holding the path), the snapshots newer than it that do
 * not (the client checks none of them covers the path), the version, the
 * resolved range and the first page of its pieces.
 */
export interface ReadPlan {
  snapshot: SnapshotRow;
  newer: SnapshotRow[];
  version: StoredVersionRow;
  start: number;
  end: number;
  pieces: Piece[];
  /** Where the next page of pieces starts, if there is one. */
  next: number | null;
  /** The version's sealed TOC (its record's `toc`), so the client checks the plan without asking for it. */
  toc?: Buffer | null;
}

/** Snapshots a read plan looks through before it gives up (the client then looks itself). */
export const PLAN_SNAPSHOTS = 64;
export const PLAN_PIECES = 1024;

export interface BackupStart {
  lease: string;
  parent?: SnapshotRow;
}

/**
 * What a reader asks: snapshots, versions, their TOC rows and pieces, sealed
 * blobs. A front end that only reads (a mount, a web UI) is given this, and
 * nothing that writes.
 */
export interface CatalogReader {
  /** True when the catalog is kept elsewhere (answers cost a round trip). */
  readonly remote: boolean;

  snapshots(): Promise<SnapshotRow[]>;
  /** Up to `limit` committed snapshots, newest first, from the `offset`-th, and how many there are. */
  snapshotPage(offset: number, limit: number): Promise<{ total: number; rows: SnapshotRow[] }>;
  /** The committed snapshots of these full ids (those still there), each with its place in the list oldest first (0: the oldest). */
  snapshotPositions(ids: readonly string[]): Promise<{ row: SnapshotRow; position: number }[]>;
  snapshotsByPrefix(prefix: string): Promise<SnapshotRow[]>;
  snapshotBySeq(seq: number): Promise<SnapshotRow | undefined>;
  version(snapshot: number, path: Buffer): Promise<StoredVersionRow | undefined>;
  versionById(id: number): Promise<VersionRow | undefined>;
  versionRecord(version: number): Promise<VersionRecord | undefined>;
  /** The id of a snapshot's sealed record (null before it is committed). */
  snapshotRecord(seq: number): Promise<Buffer | null>;
  /** The block pieces of [start, end] (inclusive) of a version, in order. */
  pieces(version: number, start: number, end: number): AsyncIterable<Piece>;
  toc(version: number): Promise<TocRow[]>;
  /** A blob's sealed bytes, wherever its pack is. */
  readSealed(id: Buffer): Promise<Buffer>;
  /** Drops a block's copy in a local cache: it failed to open (the next read fetches it again). Whether there was one. */
  evict(id: Buffer): boolean;
  /** A dictionary's sealed bytes (repo/dictionary.ts); `fresh` passes over any cache. */
  sealedDictionary(name: string, fresh?: boolean): Promise<Buffer>;
  /** A read plan for a path (keyed id) and a range; undefined when the client must look itself. */
  planRead(path: Buffer, choice: SnapshotChoice, range: RangeSpec | undefined): Promise<ReadPlan | undefined>;
  /** The sealed bytes of a block's spare copies (catalog schema 7), for a reader whose first copy fails. */
  spares(id: Buffer): Promise<Buffer[]>;
  /**
   * The sealed TOCs and snapshot records kept for snapshots a forget without
   * the key removed (FORMAT.md §12), which reads through stale sealed TOCs
   * follow; empty once every TOC is resealed.
   */
  retainedBlobs(): Promise<{ tocs: Buffer[]; records: Buffer[] }>;
  /**
   * Small facts a client verified with the key, kept between processes
   * (in the block cache of a remote client; none locally, where checking
   * costs no round trip). Keyed by what cannot change; the caller MACs them.
   */
  fact?(key: string): Buffer | undefined;
  putFact?(key: string, value: Buffer): void;

  close(): Promise<void>;
}

/** What a backup adds: blocks and packs, a snapshot and its versions, under a lease. */
export interface BackupWriter {
  /**
   * A parent's versions of many paths (a directory's files), in the order
   * given, as a backup compares with them: without where their TOCs end.
   */
  parentVersions(snapshot: number, paths: readonly Buffer[]): Promise<(VersionRow | undefined)[]>;
  /** A version as its sequence of blocks (what the next version is aligned with). */
  blockList(version: number, size: number): Promise<BlockList>;
  /** blockList() of many versions (a directory's files), at once. */
  blockLists(versions: readonly { id: number; size: number }[]): Promise<BlockList[]>;
  /** True when the block is known to be stored. May say false for a stored block; `missing` is exact. */
  hasBlock(id: Buffer): boolean;
  /** hasBlock for many blocks at once. */
  hasBlocks(ids: readonly Buffer[]): boolean[];
  /** Of `ids`, those the repository lacks (any it has are safe from prune from now on). */
  missing(ids: readonly Buffer[]): Promise<Buffer[]>;
  /** Stores a pack and indexes its blobs (relocating them, for prune's repacking). */
  putPack(name: string, bytes: Buffer, entries: readonly PackEntry[], relocate?: boolean): Promise<void>;
  /** Takes a backup lease and picks the parent: the given snapshot, or the newest of the lineage at or before `time`. */
  startBackup(lineage: Buffer, time: number, parent: number | 'auto'): Promise<BackupStart>;
  /** With `inherits`, the snapshot's versions are only what changed since `parent`, plus tombstones (see catalog.ts, SCHEMA_5). */
  beginSnapshot(id: string, time: number, lineage: Buffer, meta: Buffer, parent: number | null, lease: string, inherits?: boolean): Promise<number>;
  /** Stores versions of a pending snapshot: finds what changed against the parent's version of each path and writes the TOC. */
  storeVersions(snapshot: number, list: readonly VersionUpload[]): Promise<void>;
  commitSnapshot(seq: number, root: Buffer, record: Buffer, meta: Buffer, blobs: readonly Buffer[]): Promise<void>;
  /**
   * Takes a mount lease naming a snapshot (a writable mount's base): forget
   * keeps the snapshot while it is held. Released with endLease. Not found:
   * the snapshot is gone.
   */
  pinSnapshot(snapshot: number): Promise<string>;
  /** Releases a backup's, a maintenance's or a mount's lease. */
  endLease(lease: string): Promise<void>;
}

/** What forget and prune do to the catalog, under the one maintenance lease. */
export interface Maintenance {
  /** Takes the one maintenance lease (forget, prune), waiting up to `waitMs` for another to end. */
  startMaintenance(waitMs?: number, onWait?: (message: string) => void): Promise<string>;
  /** The catalog's half of forget (see forgetInCatalog); `touched` versions need their TOCs resealed. */
  forgetSnapshots(candidates: readonly number[]): Promise<Forgotten>;
  /** Versions whose sealed TOCs a forget without the key left for resealing. */
  staleTocs(): Promise<number[]>;
  setVersionTocs(list: readonly ResealedToc[]): Promise<void>;
  /** Points a snapshot at a new revision of its sealed record (tag), with its sealed metadata; the record must be stored. */
  setSnapshotRecord(seq: number, record: Buffer, meta: Buffer): Promise<void>;
  /** The catalog's half of prune: phase one (see pruneMark), then the sweep once live blobs moved. */
  pruneMark(dryRun: boolean, wholePacks?: boolean): Promise<PrunePlan>;
  pruneSweep(packs: readonly string[], started: number): Promise<{ deletedPacks: number; orphanPacks: number; bytesFreed: number }>;
}

/** The catalog's halves of check (see catalog/check.ts); reading and decoding blocks is the client's. */
export interface Checker {
  checkPacks(): Promise<{ packs: PackInfo[]; errors: string[]; warnings: string[]; bad: string[] }>;
  packBlobs(pack: string): Promise<PackEntry[]>;
  checkPass(which: 'current' | 'new'): Promise<number>;
  markChecked(pack: string): Promise<void>;
  checkTocs(): Promise<{ versions: number; problems: VersionProblem[]; bad: string[] }>;
  damage(bad: readonly string[]): Promise<{ version: number; ranges: [number, number][] }[]>;
  repair(bad: readonly string[]): Promise<number>;
}

/** Every role: what the repository holds (locally, or a client of a server's). */
export interface CatalogService extends CatalogReader, BackupWriter, Maintenance, Checker {}

/** A data block's kind in the catalog (BlockLocation.kind). */
const DATA_KIND = 0;

/** The catalog in this process, over a local block store. */
export class LocalService implements CatalogService {
  readonly remote = false;
  private readonly leases = new Map<string, Lease>();
  /** Leases held in the store beside those in the catalog (shared), by the catalog lease's id. */
  private readonly storeLeases = new Map<string, SharedLease>();

  constructor(
    readonly catalog: Catalog,
    readonly storage: Storage,
    /** Served repositories check what clients send; a local client is trusted. */
    private readonly verify = false,
    /**
     * For a catalog kept as a cache by each of several clients (a bucket's):
     * leases in the store, taken first, so that clients coordinate.
     */
    readonly shared?: SharedLeases,
    /** For the same: what this catalog gains is written to the bucket's journal too, for servers to follow (journal.ts). */
    readonly journal?: Journal,
    /**
     * For a bucket's client: its local cache of sealed trees, TOCs and
     * snapshot records (never data), filled as it writes and reads them, so
     * that a read of a few bytes costs one request for the data alone, as
     * restic keeps its tree packs. Readers authenticate what they get.
     */
    readonly metaCache?: BlockCache,
  ) {}

  // --- What a server asks before it answers: what exists, and whether a request was already carried out (a retry).

  /** A snapshot's own versions, by path id (the table a remote client keeps). */
  versionPaths(seq: number): ReturnType<Catalog['versionPaths']> {
    return this.catalog.versionPaths(seq);
  }

  /** A block's sealed length, if the catalog has it. */
  blockLength(id: Buffer): number | undefined {
    return this.catalog.blockLocation(id)?.length;
  }

  packIndexed(name: string): boolean {
    return this.catalog.packIndexed(name);
  }

  /** Every pack the catalog knows (a server over a bucket holds them against the bucket's). */
  packNames(): string[] {
    return this.catalog.packNames();
  }

  /** A snapshot being written, by number or id. */
  pendingSnapshot(which: { seq: number } | { id: string }): { seq: number; id: string } | undefined {
    return this.catalog.pendingSnapshots().find((p) => ('seq' in which ? p.seq === which.seq : p.id === which.id));
  }

  /**
   * Whether a backup begun through this catalog is still under way (its lease
   * alive). Its pending snapshot lives only here: a catalog loaded again
   * from a checkpoint would not have it.
   */
  backupsUnderWay(): boolean {
    const live = new Set(liveLeases(this.catalog).map((l) => l.id));
    return this.catalog.pendingSnapshots().some((p) => p.lease !== null && live.has(p.lease));
  }

  /** Whether the snapshot stored a version of its own at this path already. */
  hasOwnVersion(seq: number, pathId: Buffer): boolean {
    return this.catalog.ownVersion(seq, pathId) !== undefined;
  }

  /** The store's lease of `kind` (when leases are shared), checked against a catalog behind the store; undefined otherwise. */
  private async storeLease(kind: 'backup' | 'maintenance', waitMs?: number, onWait?: (message: string) => void): Promise<SharedLease | undefined> {
    if (!this.shared) return undefined;
    const lease = kind === 'backup' ? await this.shared.acquireBackup() : await this.shared.acquireMaintenance(waitMs, onWait);
    try {
      await checkNotBehind(this.catalog, this.storage, kind);
    } catch (e) {
      await lease.release();
      throw e;
    }
    return lease;
  }

  async snapshots(): Promise<SnapshotRow[]> {
    return this.catalog.snapshots();
  }

  async snapshotPage(offset: number, limit: number): Promise<{ total: number; rows: SnapshotRow[] }> {
    return this.catalog.snapshotPage(offset, limit);
  }

  async snapshotPositions(ids: readonly string[]): Promise<{ row: SnapshotRow; position: number }[]> {
    return this.catalog.snapshotPositions(ids);
  }

  async snapshotsByPrefix(prefix: string): Promise<SnapshotRow[]> {
    return this.catalog.snapshotsByPrefix(prefix);
  }

  async snapshotBySeq(seq: number): Promise<SnapshotRow | undefined> {
    return this.catalog.snapshotBySeq(seq);
  }

  async parentVersions(snapshot: number, paths: readonly Buffer[]): Promise<(VersionRow | undefined)[]> {
    return this.catalog.versions(snapshot, paths);
  }

  async version(snapshot: number, path: Buffer): Promise<StoredVersionRow | undefined> {
    const v = this.catalog.version(snapshot, path);
    if (!v) return undefined;
    return { ...v, end: v.size > 0 ? (this.catalog.tocAt(v.id, v.size - 1)?.end ?? -1) : -1 };
  }

  async versionById(id: number): Promise<VersionRow | undefined> {
    return this.catalog.versionById(id);
  }

  async *pieces(version: number, start: number, end: number): AsyncGenerator<Piece> {
    yield* resolveRange(this.catalog, version, start, end);
  }

  async blockList(version: number, size: number): Promise<BlockList> {
    const list = storedBlocksOf(this.catalog, version, size, this.verify);
    this.recentLists.remember(version, list);
    return list;
  }

  async blockLists(versions: readonly { id: number; size: number }[]): Promise<BlockList[]> {
    const lists = blocksOfMany(this.catalog, versions).map((list) => (this.verify ? storedOnly(this.catalog, list) : list));
    versions.forEach((v, i) => this.recentLists.remember(v.id, lists[i]!));
    return lists;
  }

  /**
   * Block lists just handed to a backup, which stores the version aligned
   * with one soon after: the diff against it then needs no second walk of
   * the parent's TOC (the blocks a version holds never change, even when a
   * forget rewrites its rows).
   */
  private readonly recentLists = new RecentLists();

  async toc(version: number): Promise<TocRow[]> {
    return this.catalog.toc(version);
  }

  async planRead(path: Buffer, choice: SnapshotChoice, spec: RangeSpec | undefined): Promise<ReadPlan | undefined> {
    let snapshot: SnapshotRow | undefined;
    let version: StoredVersionRow | undefined;
    const newer: SnapshotRow[] = [];
    if ('prefix' in choice) {
      const rows = this.catalog.snapshotsByPrefix(choice.prefix);
      if (rows.length !== 1) return undefined;
      snapshot = rows[0]!;
      version = await this.version(snapshot.seq, path);
    } else {
      for (const row of this.catalog.snapshotsBefore(choice.until, PLAN_SNAPSHOTS)) {
        version = await this.version(row.seq, path);
        if (version) {
          snapshot = row;
          break;
        }
        newer.push(row);
      }
    }
    if (!snapshot || !version) return undefined;
    const range = version.size === 0 && !spec ? { start: 0, end: -1 } : resolveByteRange(spec, version.size);
    const pieces: Piece[] = [];
    let next: number | null = null;
    if (range.end >= range.start) {
      for (const p of resolveRange(this.catalog, version.id, range.start, range.end)) {
        if (pieces.length === PLAN_PIECES) {
          next = p.at;
          break;
        }
        pieces.push(p);
      }
    }
    const toc = this.catalog.db.prepare('SELECT toc FROM versions WHERE id = ?').pluck().get(version.id) as Buffer | null;
    return { snapshot, newer, version, start: range.start, end: range.end, pieces, next, toc };
  }

  /** A dictionary: a bucket's client keeps it with its trees (objects are write-once), so a cold read needs no request for it. */
  async sealedDictionary(name: string, fresh = false): Promise<Buffer> {
    return cachedDictionary(this.metaCache, name, fresh, () => fetchDictionary(this.storage, name));
  }

  /**
   * A blob's sealed bytes. If its pack vanished under us (prune repacked it),
   * the catalog is asked again: the blob has moved, or it is really missing.
   */
  async readSealed(id: Buffer): Promise<Buffer> {
    const key = id.toString('hex');
    let last: StrataError | undefined;
    for (let attempt = 0; attempt < 3; attempt++) {
      const loc = this.catalog.blockLocation(id);
      // `missing`: not there at all, as against there and damaged (an item reader then scans instead of using a pruned index).
      if (!loc) throw integrity(`block ${key.slice(0, 16)} is not in the repository`, { block: key, missing: true });
      const cached = loc.kind !== DATA_KIND ? this.metaCache?.get(id) : undefined;
      if (cached) return cached;
      try {
        const sealed = await this.storage.read({ kind: 'pack', name: loc.pack }, loc.offset, loc.length);
        if (loc.kind !== DATA_KIND) this.metaCache?.put(id, sealed);
        return sealed;
      } catch (e) {
        if (!(e instanceof StrataError)) throw e;
        last = e;
        const now = this.catalog.blockLocation(id);
        if (!now || now.pack === loc.pack) break;
      }
    }
    throw integrity(`block ${key.slice(0, 16)}: ${last!.message}`, { block: key });
  }

  hasBlock(id: Buffer): boolean {
    return this.catalog.hasBlock(id);
  }

  hasBlocks(ids: readonly Buffer[]): boolean[] {
    return this.catalog.hasBlocks(ids);
  }

  async missing(ids: readonly Buffer[]): Promise<Buffer[]> {
    return ids.filter((id) => !this.catalog.hasBlock(id));
  }

  /** Drops a cached block that failed to open (the next read fetches it again). */
  evict(id: Buffer): boolean {
    return this.metaCache?.delete(id) ?? false;
  }

  async putPack(name: string, bytes: Buffer, entries: readonly PackEntry[], relocate = false): Promise<void> {
    await this.storage.put({ kind: 'pack', name }, bytes);
    if (this.metaCache) for (const e of entries) if (e.kind !== 'data') this.metaCache.put(e.id, bytes.subarray(e.offset, e.offset + e.length));
    await this.journal?.recordPack(name, bytes.length, entries, relocate);
    this.indexPack(name, bytes.length, entries, relocate);
  }

  /** indexPack, for a pack a client uploaded: written to the journal first (when there is one). */
  async indexUploadedPack(name: string, size: number, entries: readonly PackEntry[], relocate = false, spares?: ReadonlySet<string>): Promise<void> {
    await this.journal?.recordPack(name, size, entries, relocate, spares ? [...spares] : []);
    this.indexPack(name, size, entries, relocate, spares);
  }

  /**
   * Indexes a stored pack (a served repository's client uploads the pack,
   * then this). Blocks in `spares` that are indexed elsewhere already are
   * kept as spare copies: the client found the first copy forged.
   */
  indexPack(name: string, size: number, entries: readonly PackEntry[], relocate = false, spares?: ReadonlySet<string>): void {
    this.catalog.addPack(name, size, entries, relocate, spares);
  }

  /** Where each block is (for a client that checks the claim with the key); undefined for one not stored. */
  async where(ids: readonly Buffer[]): Promise<({ pack: string; packSize: number; offset: number; length: number } | undefined)[]> {
    return this.catalog.blockClaims(ids);
  }

  async spares(id: Buffer): Promise<Buffer[]> {
    const out: Buffer[] = [];
    for (const loc of this.catalog.spareLocations(id)) {
      try {
        out.push(await this.storage.read({ kind: 'pack', name: loc.pack }, loc.offset, loc.length));
      } catch (e) {
        if (!(e instanceof StrataError)) throw e;
      }
    }
    return out;
  }

  async startBackup(lineage: Buffer, time: number, parent: number | 'auto', opts: { renew?: boolean } = {}): Promise<BackupStart> {
    let row: SnapshotRow | undefined;
    const shared = await this.storeLease('backup');
    try {
      // The parent is chosen in the lease's transaction: a forget then sees it in use and keeps it.
      const { lease } = await Lease.acquire(this.catalog, 'backup', {
        renew: opts.renew,
        within: () => {
          row = parent === 'auto' ? this.catalog.parentCandidate(lineage, time) : this.catalog.snapshotBySeq(parent);
          if (parent !== 'auto' && !row) throw new StrataError('not_found', `snapshot ${parent} is gone`);
          return { parent: row?.seq ?? null, value: undefined };
        },
      });
      this.leases.set(lease.id, lease);
      if (shared) this.storeLeases.set(lease.id, shared);
      return { lease: lease.id, ...(row ? { parent: row } : {}) };
    } catch (e) {
      await shared?.release();
      throw e;
    }
  }

  async pinSnapshot(snapshot: number, opts: { renew?: boolean } = {}): Promise<string> {
    // Only in this catalog: a bucket's clients keep catalogs of their own, and its leases in the store name no snapshot.
    const { lease } = await Lease.acquire(this.catalog, 'mount', {
      renew: opts.renew,
      within: () => {
        if (!this.catalog.snapshotBySeq(snapshot)) throw new StrataError('not_found', `snapshot ${snapshot} is gone`);
        return { parent: snapshot, value: undefined };
      },
    });
    this.leases.set(lease.id, lease);
    return lease.id;
  }

  async beginSnapshot(id: string, time: number, lineage: Buffer, meta: Buffer, parent: number | null, lease: string, inherits = false): Promise<number> {
    const seq = this.catalog.beginSnapshot(id, time, lineage, meta, parent, lease, inherits);
    this.journal?.began(seq, id, inherits);
    return seq;
  }

  async storeVersions(snapshot: number, list: readonly VersionUpload[]): Promise<void> {
    if (this.journal && this.pendingSnapshot({ seq: snapshot })) await this.journal.recordVersions(snapshot, list);
    await this.storeVersionsHere(snapshot, list);
  }

  /** storeVersions in this catalog alone (also what a journal's follower replays). */
  async storeVersionsHere(snapshot: number, list: readonly VersionUpload[]): Promise<void> {
    const snap = this.catalog.snapshotBySeq(snapshot);
    if (!snap) throw new StrataError('not_found', `no pending snapshot ${snapshot}`);
    const parent = snap.parent !== null ? this.catalog.snapshotBySeq(snap.parent) : undefined;
    // In path order: the parent's rows are looked up, and ours inserted, in index order rather than all over it.
    const sorted = [...list].sort((a, b) => Buffer.compare(a.path, b.path));
    retryStale(() =>
      this.catalog.insertVersions(
        sorted.map((v) => ({
          snapshot,
          path: v.path,
          size: v.size,
          toc: v.toc,
          segments: v.segments,
          rows: () => {
            if (v.size === GONE) {
              if (v.toc || v.blocks || v.segments.length > 0) throw new StrataError('bad_version', 'a tombstone has no TOC and no blocks');
              return [];
            }
            const prev = parent ? this.catalog.version(parent.seq, v.path) : undefined;
            const target: TargetVersion | undefined = prev && parent ? { id: prev.id, snapshotId: parent.id, depth: prev.depth } : undefined;
            const entries = versionEntries(this.catalog, v, prev, this.verify, prev && this.recentLists.get(prev.id));
            return tocRows(this.catalog, entries, entries.refEntries > 0 ? target : undefined);
          },
        })),
      ),
    );
  }

  async commitSnapshot(seq: number, root: Buffer, record: Buffer, meta: Buffer, blobs: readonly Buffer[]): Promise<void> {
    if (this.verify) {
      const lacking = this.catalog.transaction(() => this.catalog.unstoredBlocks(seq, [root, record, ...blobs]));
      if (lacking.length > 0) {
        throw new StrataError('missing_blocks', `${lacking.length} blocks the snapshot uses are not stored (first: ${lacking[0]!.toString('hex').slice(0, 16)})`);
      }
    }
    if (this.journal && this.pendingSnapshot({ seq })) {
      if (!this.verify) {
        // A direct client is trusted, but what the journal says is committed must be whole: a follower replays it.
        const lacking = this.catalog.transaction(() => this.catalog.unstoredBlocks(seq, [root, record, ...blobs]));
        if (lacking.length > 0) throw new StrataError('missing_blocks', `${lacking.length} blocks the snapshot uses are not stored`);
      }
      const row = this.catalog.snapshotBySeq(seq)!;
      const parentId = row.parent === null ? null : (this.catalog.snapshotBySeq(row.parent)?.id ?? null);
      await this.journal.recordCommit(seq, { ...row, lease: '' }, parentId, { root, record, meta, blobs });
    }
    this.catalog.commitSnapshot(seq, root, record, meta, blobs);
    this.journal?.done(seq);
  }

  /** Brings this catalog up to date with the journal of its bucket (what other servers and clients wrote). */
  async followJournal(): Promise<FollowResult> {
    if (!this.journal) return { records: 0, packs: 0, snapshots: 0, changes: 0, problems: [] };
    return this.journal.follow({
      catalog: this.catalog,
      indexPack: (name, size, entries, relocate, spares) => this.indexPack(name, size, entries, relocate, spares),
      // A batch sent again (its first try failed after the journal had it) is in the journal twice: stored once.
      storeVersions: (seq, list) => this.storeVersionsHere(seq, list.filter((v) => !this.hasOwnVersion(seq, v.path))),
      commitSnapshot: async (seq, root, record, meta, blobs) => {
        const lacking = this.catalog.transaction(() => this.catalog.unstoredBlocks(seq, [root, record, ...blobs]));
        if (lacking.length > 0) throw new StrataError('missing_blocks', `${lacking.length} blocks it uses are not stored`);
        this.catalog.commitSnapshot(seq, root, record, meta, blobs);
      },
      forget: async (seqs) => void (await forgetting()).forgetInCatalog(this.catalog, seqs, { evenInUse: true }),
      setVersionTocs: (list) => this.setVersionTocsHere(list),
      dropPacks: (names) => this.catalog.dropPacks(names),
      // Only where the copy dropped is still the indexed one: applied again (a spare took its place), it changes nothing.
      repair: async (blocks) => {
        const where = this.catalog.blockLocations(blocks.map((b) => Buffer.from(b.block, 'hex')));
        return (await checking()).repairBlocks(this.catalog, blocks.filter((b, i) => where[i]?.pack === b.pack).map((b) => b.block));
      },
    });
  }

  async endLease(lease: string): Promise<void> {
    this.leases.get(lease)?.release();
    this.leases.delete(lease);
    await this.storeLeases.get(lease)?.release();
    this.storeLeases.delete(lease);
  }

  async startMaintenance(waitMs?: number, onWait?: (message: string) => void, opts: { renew?: boolean } = {}): Promise<string> {
    const shared = await this.storeLease('maintenance', waitMs, onWait);
    try {
      const { lease } = await Lease.acquire(this.catalog, 'maintenance', { waitMs, onWait, renew: opts.renew });
      this.leases.set(lease.id, lease);
      if (shared) this.storeLeases.set(lease.id, shared);
      return lease.id;
    } catch (e) {
      await shared?.release();
      throw e;
    }
  }

  /** Whether this process holds `lease`, of that kind and still live, for a client (a served repository checks before maintenance). */
  holds(lease: string, kind: 'backup' | 'maintenance'): boolean {
    const l = this.leases.get(lease);
    return l !== undefined && l.kind === kind && !this.storeLeases.get(lease)?.lost && l.renew();
  }

  async forgetSnapshots(candidates: readonly number[]): Promise<Forgotten> {
    const { forgetInCatalog, forgettable } = await forgetting();
    // Written first: a follower then forgets them too even if this process stops half way (and a forget sent again removes nothing more).
    if (this.journal) await this.journal.recordForget(forgettable(this.catalog, candidates).map((seq) => this.catalog.snapshotBySeq(seq)!.id));
    return forgetInCatalog(this.catalog, candidates);
  }

  async versionRecord(version: number): Promise<VersionRecord | undefined> {
    return this.catalog.versionRecord(version);
  }

  async retainedBlobs(): Promise<{ tocs: Buffer[]; records: Buffer[] }> {
    const q = this.catalog.db.prepare('SELECT r.block FROM retained r JOIN blocks b ON b.id = r.block WHERE b.kind = ?').pluck();
    return this.catalog.guard(() => ({ tocs: q.all(2) as Buffer[], records: q.all(3) as Buffer[] }));
  }

  async staleTocs(): Promise<number[]> {
    return this.catalog.staleTocs();
  }

  async snapshotRecord(seq: number): Promise<Buffer | null> {
    return this.catalog.snapshotRecord(seq);
  }

  async setSnapshotRecord(seq: number, record: Buffer, meta: Buffer): Promise<void> {
    if (!this.catalog.snapshotBySeq(seq)) throw new StrataError('not_found', `no snapshot ${seq}`);
    if (this.verify && !this.catalog.hasBlock(record)) throw new StrataError('missing_blocks', 'the new snapshot record is not stored');
    await this.journal?.recordTag(this.catalog.snapshotBySeq(seq)!.id, record, meta);
    this.catalog.setSnapshotRecord(seq, record, meta);
  }

  async setVersionTocs(list: readonly ResealedToc[]): Promise<void> {
    if (this.verify) {
      const lacking = list.flatMap((t) => [t.toc, ...t.segments]).filter((id) => !this.catalog.hasBlock(id));
      if (lacking.length > 0) throw new StrataError('missing_blocks', `${lacking.length} TOC blobs are not stored`);
    }
    if (this.journal) {
      const named = list.flatMap((t) => {
        const v = this.catalog.versionRecord(t.version);
        const snapshot = v && this.catalog.snapshotBySeq(v.snapshot);
        return v && snapshot ? [{ snapshot: snapshot.id, path: v.path, toc: t.toc, segments: t.segments, old: t.old }] : [];
      });
      await this.journal.recordTocs(named);
    }
    this.setVersionTocsHere(list);
  }

  /** setVersionTocs in this catalog alone (also what a journal's follower replays). */
  setVersionTocsHere(list: readonly ResealedToc[]): void {
    this.catalog.transaction(() => {
      list.forEach((t) => this.catalog.versionById(t.version) && this.catalog.setVersionToc(t.version, t.toc, t.segments, t.old));
      this.catalog.clearStale(list.map((t) => t.version));
    });
  }

  async pruneMark(dryRun: boolean, wholePacks = false): Promise<PrunePlan> {
    return (await pruning()).pruneMark(this.catalog, dryRun, wholePacks);
  }

  async pruneSweep(packs: readonly string[], started: number): Promise<{ deletedPacks: number; orphanPacks: number; bytesFreed: number }> {
    // The packs it removes are written to the journal before their files are deleted: a follower never reads them.
    return (await pruning()).pruneSweep(this.catalog, this.storage, packs, started, this.journal && ((names) => this.journal!.recordPrune(names)));
  }

  async checkPacks(): Promise<{ packs: PackInfo[]; errors: string[]; warnings: string[]; bad: string[] }> {
    return (await checking()).checkPacks(this.catalog, this.storage);
  }

  async packBlobs(pack: string): Promise<PackEntry[]> {
    return (await checking()).packBlobs(this.catalog, pack);
  }

  async checkPass(which: 'current' | 'new'): Promise<number> {
    return (await checking()).checkPass(this.catalog, which);
  }

  async markChecked(pack: string): Promise<void> {
    (await checking()).markChecked(this.catalog, pack);
  }

  async checkTocs(): Promise<{ versions: number; problems: VersionProblem[]; bad: string[] }> {
    return (await checking()).checkTocs(this.catalog);
  }

  async damage(bad: readonly string[]): Promise<{ version: number; ranges: [number, number][] }[]> {
    return (await checking()).damageOf(this.catalog, bad);
  }

  async repair(bad: readonly string[]): Promise<number> {
    // Written first: followers drop the same rows, so a backup through them stores those blocks again too.
    if (this.journal) {
      const where = this.catalog.blockLocations(bad.map((b) => Buffer.from(b, 'hex')));
      const dropped = bad.flatMap((block, i) => (where[i] ? [{ block, pack: where[i].pack }] : []));
      await this.journal.recordRepair(dropped);
    }
    return (await checking()).repairBlocks(this.catalog, bad);
  }

  /** Renews a lease held for a remote client; false when it is not (or no longer) ours. */
  renew(lease: string): boolean {
    const l = this.leases.get(lease);
    if (l?.renew()) return true;
    // Gone stale (its client went quiet) and removed: forget it here too.
    this.leases.delete(lease);
    return false;
  }

  async close(): Promise<void> {
    await this.retire();
    this.metaCache?.close();
    await this.storage.close();
  }

  /** A copy of this catalog in `scratch` as a checkpoint of the journal holds it (catalog/checkpoint.ts); its schema. */
  copyForCheckpoint(scratch: string): number {
    return copyCatalog(this.catalog, scratch);
  }

  /** Lets go of the leases and closes the catalog, leaving the store open (a catalog replaced by another over the same store). */
  async retire(): Promise<void> {
    for (const l of this.leases.values()) l.release();
    this.leases.clear();
    await Promise.all([...this.storeLeases.values()].map((l) => l.release()));
    this.storeLeases.clear();
    this.catalog.close();
  }
}

/** Maintenance code, loaded when maintenance runs (most commands never do). */
const checking = () => import('./check.js');
const forgetting = () => import('./forget.js');
const pruning = () => import('./prune.js');

/**
 * The TOC entries of a version: one ref to the parent's version when the file
 * is unchanged, else the seed's claim 1 (diffBlocks) against the parent's blocks.
 */
function versionEntries(catalog: Catalog, v: VersionUpload, prev: VersionRow | undefined, storedOnly: boolean, prevBlocks?: BlockList): TocEntries {
  if (!v.blocks) {
    if (!prev || prev.size !== v.size) throw new StrataError('bad_version', 'a version sent as unchanged has no parent version of its size');
    return wholeRef(v.size);
  }
  if (v.blocks.size !== v.size) throw new StrataError('bad_version', `a version's blocks add up to ${v.blocks.size} bytes, not its size ${v.size}`);
  return diffBlocks(prev ? (prevBlocks ?? storedBlocksOf(catalog, prev.id, prev.size, storedOnly)) : new BlockList(1), v.blocks);
}

/** Recently listed versions' blocks, oldest dropped first beyond a total block count (about 40 bytes each). */
class RecentLists {
  private readonly lists = new Map<number, BlockList>();
  private blocks = 0;
  constructor(private readonly maxBlocks = 256 * 1024) {}

  remember(version: number, list: BlockList): void {
    if (list.length > this.maxBlocks) return;
    this.forget(version);
    this.lists.set(version, list);
    this.blocks += list.length;
    while (this.blocks > this.maxBlocks) this.forget(this.lists.keys().next().value!);
  }

  get(version: number): BlockList | undefined {
    return this.lists.get(version);
  }

  private forget(version: number): void {
    const old = this.lists.get(version);
    if (!old) return;
    this.blocks -= old.length;
    this.lists.delete(version);
  }
}

/**
 * A version's blocks. For a remote client, which cannot ask about each block
 * as it goes, blocks no longer stored (dropped by check --repair) lose their
 * ids: the client then reads those bytes as new and stores them again, and
 * the server's diff agrees. The ones named are rescued from prune.
 */
function storedBlocksOf(catalog: Catalog, version: number, size: number, stored: boolean): BlockList {
  if (size === 0) return new BlockList(1);
  const list = blocksOf(catalog, version, size);
  return stored ? storedOnly(catalog, list) : list;
}

/** `list` with the ids of blocks the repository does not hold (dropped by check --repair) left out. */
function storedOnly(catalog: Catalog, list: BlockList): BlockList {
  const out = new BlockList(Math.max(1, list.length));
  const ids: Buffer[] = [];
  for (let i = 0; i < list.length; i++) {
    const id = list.id(i);
    if (id) ids.push(id);
  }
  const stored = catalog.hasBlocks(ids);
  for (let i = 0, k = 0; i < list.length; i++) {
    const id = list.id(i);
    out.push(id && stored[k++] ? id : null, list.end(i) - list.start(i) + 1);
  }
  return out;
}

/** A dictionary's sealed bytes from the store: a hostile repository could offer a "dictionary" of any size, so it is not read whole unless small. */
export async function fetchDictionary(storage: Storage, name: string): Promise<Buffer> {
  try {
    if ((await storage.stat({ kind: 'dict', name })).size > MAX_SEALED_DICTIONARY) throw integrity(`dictionary ${name} is larger than any dictionary`);
    return await storage.get({ kind: 'dict', name });
  } catch (e) {
    if ((e as { code?: string }).code === 'not_found') throw integrity(`dictionary ${name} is missing from the repository`);
    throw e;
  }
}

/**
 * A dictionary's sealed bytes through a client's block cache, under an id
 * made from its name (dictionaries are never replaced): fetched once, then
 * found there. `fresh` drops a cached copy (one that failed to open) and
 * keeps the one fetched instead.
 */
export async function cachedDictionary(cache: BlockCache | undefined, name: string, fresh: boolean, fetch: () => Promise<Buffer>): Promise<Buffer> {
  const id = createHash('sha256').update(`strata dictionary ${name}`).digest();
  // A cache keeps the copy it has: the one that failed goes, or every read would fetch the dictionary again.
  if (fresh) cache?.delete(id);
  else {
    const hit = cache?.get(id);
    if (hit) return hit;
  }
  const sealed = await fetch();
  cache?.put(id, sealed);
  return sealed;
}

/** Larger than any dictionary a writer makes (repo/dictionary.ts), and than a server takes. */
export const MAX_SEALED_DICTIONARY = 64 * 1024;
