/**
 * Copy: snapshots of one repository stored again in another, as restic's
 * `copy` does. Block ids and cut points are keyed per repository, so blocks
 * cannot move as they are: each snapshot's trees are walked in the source and
 * written anew in the destination, each file's bytes streamed from the source
 * (checked against its sealed TOCs, as every read is), chunked by the
 * destination's chunker and stored through the backup's machinery (BlockSink,
 * VersionBatch, the sealed record), under a backup lease.
 *
 * A snapshot goes on top of the copy of its nearest source ancestor that was
 * copied before (its `original` tells which): a file whose source version is
 * that ancestor's is inherited from the copy unread, a directory whose source
 * tree is the ancestor's keeps the copy's tree, and a changed file is stored
 * as an incremental against the copy's version at its path (reference blocks
 * for what it shares), so the destination keeps the source's chain shape.
 * Every attribute of a tree entry is kept as it is; the snapshot keeps its
 * time, host, tags, paths and partial mark, and records the snapshot it was
 * copied from (`copiedFrom`, `original`: docs/FORMAT.md §8.4), so a second
 * copy skips what is there. Nothing is visible until a snapshot commits: an
 * interrupted copy leaves the blocks it stored for the next one to reuse.
 */
import { randomBytes } from 'node:crypto';
import { Chunker } from '../chunker/fastcdc.js';
import { BlockList, contentMark } from '../catalog/blocklist.js';
import { interrupted, StrataError, usageError } from '../errors.js';
import type { Packer } from '../repo/packer.js';
import type { Repository } from '../repo/repository.js';
import { SealPool } from '../workers/pool.js';
import { emptyResult, type BackupResult } from './backup-context.js';
import { BlockSink } from './block-sink.js';
import { pinSnapshot, sealedVersionOf, storeChangedVersion, type Pin } from './commit.js';
import { matchesFilter, type SnapshotFilter } from './filter.js';
import { itemIndexBlobs, resealItemIndex } from './item-index.js';
import { manifestEntries, type DatasetEntry } from './manifest.js';
import { commitRecord, listSnapshots, metaAad, Snapshot, snapshotRowByPrefix, type SnapshotMeta } from './snapshot.js';
import { SnapshotTree } from './snapshot-tree.js';
import { encodeTree, findEntry, goneFiles, leafId, MAX_TREE_DEPTH, type Tree, type TreeEntry } from './tree.js';
import { sameFile } from './verify.js';
import { VersionBatch, type VersionWriter } from './versions.js';

export interface CopyOptions {
  /** Source snapshots by id or unique prefix (none: every one the filter keeps). */
  ids?: readonly string[];
  filter?: SnapshotFilter;
  /** Say what would be copied; store nothing. */
  dryRun?: boolean;
  signal?: AbortSignal;
  onProgress?: (p: CopyProgress) => void;
  /** Each snapshot as it is copied (or would be, in a dry run). */
  onSnapshot?: (s: CopiedSnapshot) => void;
}

export interface CopyProgress {
  /** Which snapshot of how many is being copied (1-based). */
  snapshot: number;
  snapshots: number;
  files: number;
  bytesRead: number;
  /** Bytes of the snapshots being copied, in all (as their records say). */
  bytesTotal: number;
  bytesDone: number;
}

export interface CopiedSnapshot {
  /** The source snapshot. */
  source: string;
  /** Its copy in the destination (absent in a dry run). */
  snapshot?: string;
  /** The destination snapshot it was stored on top of. */
  parent: string | null;
  time: string;
  host: string;
  filesNew: number;
  filesChanged: number;
  filesUnchanged: number;
  bytesRead: number;
  bytesAdded: number;
  refEntries: number;
}

export interface CopyResult {
  copied: CopiedSnapshot[];
  /** Source snapshots already in the destination (copied before, or copies of its own snapshots). */
  skipped: string[];
  /** Bytes read from the source, and added to the destination. */
  bytesRead: number;
  bytesAdded: number;
  dryRun?: true;
  durationMs: number;
}

/** The snapshot a copy chain started from: a copy names it, any other snapshot is its own. */
export function originalOf(s: Snapshot): string {
  return s.meta.original ?? s.id;
}

/** Copies the chosen snapshots of `source` that `dest` lacks, oldest first. */
export async function copySnapshots(source: Repository, dest: Repository, opts: CopyOptions = {}): Promise<CopyResult> {
  const started = performance.now();
  if (source.config.id === dest.config.id) throw usageError('the source and the destination are the same repository (their ids are equal: one is the other, or a copy of its files)');
  const all = await listSnapshots(source);
  let chosen: Snapshot[];
  if (opts.ids && opts.ids.length > 0) {
    const ids = new Set<string>();
    for (const prefix of opts.ids) ids.add((await snapshotRowByPrefix(source.service, prefix)).id);
    chosen = all.filter((s) => ids.has(s.id) && (!opts.filter || matchesFilter(s.meta, opts.filter)));
  } else chosen = all.filter((s) => !opts.filter || matchesFilter(s.meta, opts.filter));
  const there = new Map<string, Snapshot>();
  for (const d of await listSnapshots(dest)) there.set(originalOf(d), d);
  const skipped = chosen.filter((s) => there.has(originalOf(s))).map((s) => s.id);
  const todo = parentsFirst(chosen.filter((s) => !there.has(originalOf(s))));
  const bySourceId = new Map(all.map((s) => [s.id, s]));
  const result: CopyResult = { copied: [], skipped, bytesRead: 0, bytesAdded: 0, durationMs: 0 };
  const progress: CopyProgress = { snapshot: 0, snapshots: todo.length, files: 0, bytesRead: 0, bytesTotal: todo.reduce((n, s) => n + (s.meta.stats?.bytes ?? 0), 0), bytesDone: 0 };
  for (const s of todo) {
    if (opts.signal?.aborted) throw interrupted();
    progress.snapshot++;
    // The nearest ancestor whose copy is in the destination: the copy goes on top of it.
    let base: Snapshot | undefined;
    for (let p = s.meta.parent, hops = 0; p !== undefined && hops < 100_000; hops++) {
      const ps = bySourceId.get(p);
      if (!ps) break;
      if (there.has(originalOf(ps))) {
        base = ps;
        break;
      }
      p = ps.meta.parent;
    }
    const onto = base ? there.get(originalOf(base)) : undefined;
    if (opts.dryRun) {
      const c: CopiedSnapshot = { source: s.id, parent: onto?.id ?? null, time: new Date(s.time).toISOString(), host: s.meta.host, filesNew: 0, filesChanged: 0, filesUnchanged: 0, bytesRead: 0, bytesAdded: 0, refEntries: 0 };
      result.copied.push(c);
      opts.onSnapshot?.(c);
      continue;
    }
    const before = progress.bytesDone;
    const c = await copyOne(source, dest, s, base, onto, opts, progress);
    // A directory kept whole from the last copy counted none of its bytes: the snapshot's are done.
    progress.bytesDone = before + (s.meta.stats?.bytes ?? 0);
    opts.onProgress?.(progress);
    result.copied.push(c);
    result.bytesRead += c.bytesRead;
    result.bytesAdded += c.bytesAdded;
    there.set(originalOf(s), new Snapshot(dest, await snapshotRowByPrefix(dest.service, c.snapshot!)));
    opts.onSnapshot?.(c);
  }
  if (opts.dryRun) result.dryRun = true;
  result.durationMs = Math.round(performance.now() - started);
  return result;
}

/**
 * Oldest first, but a snapshot after its parent when both are to be copied
 * (two of the same second are listed by id): it then goes on top of its
 * parent's copy.
 */
function parentsFirst(list: readonly Snapshot[]): Snapshot[] {
  const byId = new Map(list.map((s) => [s.id, s]));
  const out: Snapshot[] = [];
  const placed = new Set<string>();
  for (const first of list) {
    // The chain of not yet placed ancestors among `list`, oldest placed first (a loop, not recursion; a cycle ends it).
    const chain: Snapshot[] = [];
    for (let s: Snapshot | undefined = first; s && !placed.has(s.id) && !chain.includes(s); s = s.meta.parent ? byId.get(s.meta.parent) : undefined) chain.push(s);
    for (let i = chain.length - 1; i >= 0; i--) {
      placed.add(chain[i]!.id);
      out.push(chain[i]!);
    }
  }
  return out;
}

async function copyOne(source: Repository, dest: Repository, s: Snapshot, base: Snapshot | undefined, onto: Snapshot | undefined, opts: CopyOptions, progress: CopyProgress): Promise<CopiedSnapshot> {
  const pins = await pinSources(source, base ? [s, base] : [s]);
  const pool = new SealPool(dest.keyring, dest.compressionLevel, dest.chunker.max);
  try {
    const lineage = dest.keyring.lineageId(s.meta.host, s.meta.paths);
    // The parent is named as the lease is taken: a forget then keeps it. Without a copied ancestor,
    // the destination's own choice (the newest of the lineage before it): files are then all read,
    // and stored against it, so what it shares is still not stored twice.
    const { lease, parent } = await dest.service.startBackup(lineage, s.time, onto ? onto.row.seq : 'auto');
    try {
      const p = parent ? new Snapshot(dest, parent) : undefined;
      const run = new CopyRun(source, dest, s, p && onto && p.id === onto.id ? base : undefined, p, pool, opts, progress);
      return await run.run(lineage, lease);
    } finally {
      await dest.service.endLease(lease);
    }
  } finally {
    await pool.close();
    await Promise.all(pins.map((p) => p.release().catch(() => undefined)));
  }
}

/**
 * Keeps the source snapshots a copy reads (the one copied, and the ancestor
 * whose files it compares with) from a forget of the source meanwhile: a
 * forget by policy keeps them, one that names them is refused. A source that
 * cannot take the lease (a server token of the `read` role, a read-only
 * file system) is read without it.
 */
async function pinSources(source: Repository, snaps: readonly Snapshot[]): Promise<Pin[]> {
  const pins: Pin[] = [];
  for (const s of snaps) {
    try {
      pins.push(await pinSnapshot(source, s.id));
    } catch (e) {
      if (e instanceof StrataError && (e.code === 'forbidden' || e.code === 'read_only')) continue;
      await Promise.all(pins.map((p) => p.release().catch(() => undefined)));
      throw e;
    }
  }
  return pins;
}

/** Fields of a tree entry that say where its content is in its own repository: made anew in the copy. */
function statsOf(e: TreeEntry): TreeEntry {
  const { tree: _t, leaf: _l, block: _b, toc: _c, parentContent: _p, ...rest } = e;
  return rest;
}

class CopyRun {
  private readonly id = randomBytes(32).toString('hex');
  private readonly r: BackupResult;
  private readonly packer: Packer;
  private sink!: BlockSink;
  private versions!: VersionWriter;
  private readonly chunker: Chunker;
  private seq = 0;
  private bytesRead = 0;
  private readonly tree: SnapshotTree;
  /** Paths of the source's manifest entries that carry an item index. */
  private readonly indexed: Set<string>;
  /** Files this copy stored (not inherited), with their content mark when they have an item index to reseal. */
  private readonly stored = new Map<string, string | undefined>();

  constructor(
    private readonly source: Repository,
    private readonly dest: Repository,
    /** The source snapshot. */
    private readonly s: Snapshot,
    /** Its ancestor in the source whose copy is `parent` (undefined: `parent` is no copy of an ancestor). */
    private readonly base: Snapshot | undefined,
    /** The destination snapshot the copy goes on top of. */
    private readonly parent: Snapshot | undefined,
    private readonly pool: SealPool,
    private readonly opts: CopyOptions,
    private readonly progress: CopyProgress,
  ) {
    this.packer = dest.newPacker();
    this.r = emptyResult(this.id, parent?.id ?? null, s.time);
    this.chunker = new Chunker(dest.chunker, dest.gear);
    this.tree = SnapshotTree.of(s);
    this.indexed = new Set(manifestEntries(s.meta.datasets).filter((d) => d.index).map((d) => d.path));
  }

  async run(lineage: Buffer, lease: string): Promise<CopiedSnapshot> {
    const { dest, s, parent } = this;
    const service = dest.service;
    const src = s.meta;
    const meta: SnapshotMeta = {
      host: src.host,
      tags: src.tags,
      paths: src.paths,
      ...(parent ? { parent: parent.id } : {}),
      ...(src.xattrs ? { xattrs: true as const } : {}),
      copiedFrom: s.id,
      original: originalOf(s),
    };
    this.sink = new BlockSink(dest, dest.compressionLevel, this.packer, this.pool, this.r, this.opts.signal, (m) => this.r.warnings.push(m));
    this.seq = await service.beginSnapshot(this.id, s.time, lineage, dest.keyring.sealJson(meta, metaAad(this.id)), parent?.row.seq ?? null, lease, parent !== undefined);
    const sink = this.sink;
    this.versions = new VersionBatch(service, dest.keyring, this.packer, dest.compressionLevel, { maxBlock: dest.chunker.max, seal: (id, plain) => sink.storeSealedElsewhere(id, 'toc', plain) });
    try {
      await sink.chooseDictionary();
      const top = await this.dir('/', s.root, this.base?.root, parent?.root, 0);
      const datasets = await this.datasets();
      await sink.drain();
      await this.versions.flush();
      await this.packer.flush();
      const stats = { files: src.stats?.files ?? this.r.filesNew + this.r.filesChanged + this.r.filesUnchanged, dirs: src.stats?.dirs ?? this.r.dirs, bytes: src.stats?.bytes ?? this.r.bytesTotal, bytesAdded: this.packer.bytesWritten };
      const extra = { ...(src.unreadable ? { unreadable: src.unreadable } : {}), ...(datasets && datasets.length > 0 ? { datasets } : {}) };
      await commitRecord(dest, { seq: this.seq, record: { id: this.id, time: this.r.time, root: top.tree!, ...meta, stats, ...extra }, sink, packer: this.packer });
    } catch (e) {
      await sink.keepStored();
      throw e;
    }
    const r = this.r;
    return {
      source: s.id,
      snapshot: this.id,
      parent: parent?.id ?? null,
      time: r.time,
      host: src.host,
      filesNew: r.filesNew,
      filesChanged: r.filesChanged,
      filesUnchanged: r.filesUnchanged,
      bytesRead: this.bytesRead,
      bytesAdded: this.packer.bytesWritten,
      refEntries: r.refEntries,
    };
  }

  /** The copy of directory `at`: `entry` in the source, `baseEntry` in the base, `prev` in the destination's parent. */
  private async dir(at: string, entry: TreeEntry, baseEntry: TreeEntry | undefined, prev: TreeEntry | undefined, depth: number): Promise<TreeEntry> {
    if (depth > MAX_TREE_DEPTH) throw new StrataError('integrity', `${at}: deeper than any real tree`);
    // The base's very tree here (and so its files' versions): the copy's tree of it serves as it is.
    if (entry.tree && baseEntry?.type === 'dir' && baseEntry.tree === entry.tree && prev?.type === 'dir' && prev.tree) {
      this.sink.blobs.add(prev.tree);
      return { ...statsOf(entry), tree: prev.tree, ...(prev.leaf ? { leaf: prev.leaf } : {}) };
    }
    const tree: Tree = entry.tree ? await this.s.tree(entry.tree) : { entries: [] };
    const baseTree = baseEntry?.type === 'dir' && baseEntry.tree ? await this.base!.tree(baseEntry.tree) : undefined;
    const prevTree = prev?.type === 'dir' && prev.tree ? await this.parent!.tree(prev.tree) : undefined;
    const entries: TreeEntry[] = [];
    for (const c of tree.entries) {
      this.sink.checkAbort();
      const p = at === '/' ? `/${c.name}` : `${at}/${c.name}`;
      const b = baseTree ? findEntry(baseTree, c.name) : undefined;
      const before = prevTree ? findEntry(prevTree, c.name) : undefined;
      if (c.type === 'dir') entries.push(await this.dir(p, c, b, before, depth + 1));
      else if (c.type === 'file') entries.push(await this.file(p, c, b, before));
      else {
        if (c.type !== 'symlink') this.r.specials++;
        entries.push(statsOf(c));
      }
    }
    if (prevTree) {
      await goneFiles(at, prevTree, new Map(entries.map((e) => [e.name, e.type])), (id) => this.parent!.tree(id), async (gone) => {
        await this.versions.tombstone(this.seq, this.dest.keyring.pathId(gone));
      });
    }
    this.r.dirs++;
    const id = await this.sink.storeBlob('tree', encodeTree({ entries }));
    // As a backup makes it: a later backup here whose parent is this copy reuses an unchanged directory of files unread.
    const leaf = leafId(entries, this.dest.keyring.blockIdOfPieces());
    return { ...statsOf(entry), tree: id.toString('hex'), ...(leaf ? { leaf } : {}) };
  }

  /**
   * The source's manifest for the copy. An item index is sealed with the
   * source's key and names the source's blobs: a file this copy stored gets
   * the index sealed again here (resealItemIndex); one it inherited keeps the
   * index of the destination parent's entry, made for the same version; any
   * other is left without one (readers then scan it).
   */
  private async datasets(): Promise<DatasetEntry[] | undefined> {
    const list = manifestEntries(this.s.meta.datasets);
    if (list.length === 0) return undefined;
    const before = new Map(manifestEntries(this.parent?.meta.datasets).map((d) => [d.path, d]));
    const store = { read: (id: Buffer) => this.dest.readBlob(id, 'tree'), write: (plain: Buffer) => this.sink.storeBlob('tree', plain) };
    const out: DatasetEntry[] = [];
    for (const d of list) {
      const { index, items: _n, ...plain } = d;
      const mark = this.stored.get(d.path);
      const prev = before.get(d.path);
      let kept: { index: string; items?: number } | undefined;
      try {
        if (index && mark) {
          const built = await resealItemIndex((id) => this.source.readBlob(id, 'tree'), index, { path: d.path, size: d.size, mark }, store);
          kept = { index: built.root.toString('hex'), items: built.count };
        } else if (index && !this.stored.has(d.path) && prev?.index && prev.type === d.type && prev.size === d.size) {
          for (const id of await itemIndexBlobs(store.read, prev.index)) this.sink.blobs.add(id.toString('hex'));
          kept = { index: prev.index, ...(prev.items !== undefined ? { items: prev.items } : {}) };
        }
      } catch {
        // A damaged or missing index is no reason to fail the copy: readers scan the file.
        kept = undefined;
      }
      out.push({ ...plain, ...kept });
    }
    return out;
  }

  private async file(at: string, entry: TreeEntry, baseEntry: TreeEntry | undefined, prev: TreeEntry | undefined): Promise<TreeEntry> {
    const e = statsOf(entry);
    this.progress.files++;
    if (this.base && baseEntry?.type === 'file' && prev?.type === 'file' && prev.size === entry.size) {
      const inherited = await this.inherited(at, e, prev);
      if (inherited) {
        this.r.filesUnchanged++;
        if (entry.size > 0) this.r.refEntries++;
        this.r.bytesTotal += entry.size;
        this.progress.bytesDone += entry.size;
        this.report();
        return inherited;
      }
    }
    // Refs are made against the parent's version at this path as its sealed TOC says.
    const here = prev?.type === 'file' && this.parent ? await sealedVersionOf(this.dest, this.parent, at) : undefined;
    const blocks = await this.read(at);
    if (here) this.r.filesChanged++;
    else this.r.filesNew++;
    const names = await storeChangedVersion({ repo: this.dest, versions: this.versions, seq: this.seq, id: this.id, r: this.r }, at, blocks, here);
    // Stored anew: an item index of the source's version is sealed again for these blocks (see datasets()).
    this.stored.set(at, this.indexed.has(at) ? contentMark(this.dest.keyring, blocks) : undefined);
    return { ...e, size: blocks.size, ...names };
  }

  /**
   * The entry of a file whose source version is the base's, inherited from
   * the destination's parent (the base's copy) without a version of its own;
   * undefined when the source says otherwise, or when readers could not tell
   * the inherited version is this file's (then it is read and stored).
   */
  private async inherited(at: string, e: TreeEntry, prev: TreeEntry): Promise<TreeEntry | undefined> {
    const pathId = this.source.keyring.pathId(at);
    const [mine, theirs] = await Promise.all([this.source.service.version(this.s.row.seq, pathId), this.source.service.version(this.base!.row.seq, pathId)]);
    if (!mine || !theirs || mine.id !== theirs.id) return undefined;
    // Readers check an inherited version by the entry's block, its content mark, or its stats being the owner's.
    if (prev.block) return { ...e, block: prev.block };
    const toc = prev.toc && this.dest.blocksInEntries ? { toc: prev.toc } : {};
    if (sameFile(e, prev)) return { ...e, ...toc, ...(prev.parentContent ? { parentContent: prev.parentContent } : {}) };
    if (e.size === 0) return undefined;
    const v = await sealedVersionOf(this.dest, this.parent!, at);
    if (!v || v.blocks.size !== e.size) return undefined;
    for (let i = 0; i < v.blocks.length; i++) if (!v.blocks.hasId(i)) return undefined;
    return { ...e, ...toc, parentContent: contentMark(this.dest.keyring, v.blocks) };
  }

  /** The file's bytes streamed from the source and chunked as the destination cuts them: never the whole file in memory. */
  private async read(at: string): Promise<BlockList> {
    const out = new BlockList();
    const file = await this.tree.open(at);
    const max = this.chunker.params.max;
    let pending: Buffer = Buffer.alloc(0);
    const cut = async (last: boolean) => {
      while (pending.length >= max || (last && pending.length > 0)) {
        const here = pending.subarray(0, Math.min(max, pending.length));
        const chunk = here.subarray(0, this.chunker.firstCut(here));
        out.push(await this.sink.storeChunk(chunk), chunk.length);
        this.sink.checkAbort();
        pending = pending.subarray(chunk.length);
      }
    };
    for await (const piece of file.stream(0, file.size - 1, { cache: false, shared: true })) {
      pending = pending.length === 0 ? Buffer.from(piece) : Buffer.concat([pending, piece]);
      this.bytesRead += piece.length;
      this.r.bytesRead += piece.length;
      this.progress.bytesRead += piece.length;
      this.progress.bytesDone += piece.length;
      await cut(false);
      this.report();
    }
    await cut(true);
    if (out.size !== file.size) throw new StrataError('internal', `${at}: its blocks make ${out.size} bytes, not ${file.size}`);
    return out;
  }

  private report(): void {
    this.opts.onProgress?.(this.progress);
  }
}
