/**
 * Commit: a new snapshot made from a parent snapshot and changes to its tree
 * (a writable mount's overlay), with no file system to walk. The changes come
 * as a tree the caller implements (ChangedDir and the rest): what is
 * unchanged at its path is inherited from the parent as it is; a changed file
 * is stored as an incremental against the parent's version at its path, its
 * blocks made from the blocks it started from where no byte of theirs
 * changed (not read again), and re-chunked only over the ranges that did.
 * Blocks, trees, TOCs and the record go through the backup's own machinery
 * (BlockSink, VersionBatch, the sealed record), under a lease that keeps the
 * parent from being forgotten meanwhile. The parent is never changed.
 */
import { randomBytes } from 'node:crypto';
import { Chunker } from '../chunker/fastcdc.js';
import { StrataError } from '../errors.js';
import { BlockList } from '../catalog/blocklist.js';
import { diffBlocks } from '../catalog/toc.js';
import type { TargetVersion } from '../catalog/toc-rows.js';
import type { Repository } from '../repo/repository.js';
import { SealPool } from '../workers/pool.js';
import { emptyResult, type BackupResult } from './backup-context.js';
import { BlockSink } from './block-sink.js';
import { commitRecord, metaAad, Snapshot, snapshotRowByPrefix, type SnapshotMeta } from './snapshot.js';
import { encodeTree, findEntry, goneFiles, MAX_TREE_DEPTH, type SpecialType, type Tree, type TreeEntry } from './tree.js';
import type { XattrList } from '../util/xattrs.js';
import { VersionBatch, type SealedEntry, type VersionWriter } from './versions.js';
import { verifier } from './verify.js';

/** Stats of an entry of the changed tree (times in ns since the epoch). */
export interface ChangedStats {
  name: string;
  mode: number;
  uid: number;
  gid: number;
  mtimeNs: bigint;
  /** Extended attributes it keeps (those of the parent snapshot's entry it came from). */
  xattrs?: XattrList;
  /**
   * True when this is exactly the parent snapshot's entry at the same path
   * (for a directory: and everything below it): it is then inherited as it is.
   */
  unchanged: boolean;
}

export interface ChangedDir extends ChangedStats {
  type: 'dir';
  /** Its entries, in any order. */
  entries(): Promise<ChangedNode[]>;
}

export interface ChangedFile extends ChangedStats {
  type: 'file';
  size: number;
  /** The path in the parent snapshot of the file whose bytes this one started from (none: made new). */
  base?: string;
  /** Below this offset, bytes outside `dirty` are the base's; from it on, none is. */
  baseKept: number;
  /** Written ranges [start, end), in order, not overlapping. */
  dirty: readonly (readonly [number, number])[];
  /** Exactly `length` bytes at `offset` of its content now. */
  read(offset: number, length: number): Promise<Buffer>;
}

export interface ChangedLink extends ChangedStats {
  type: 'symlink';
  target: string;
}

/** A FIFO or device node of the parent snapshot (a writable mount makes none: it renames, removes or chmods them). */
export interface ChangedSpecial extends ChangedStats {
  type: SpecialType;
  /** A device's number. */
  rdev?: bigint;
}

export type ChangedNode = ChangedDir | ChangedFile | ChangedLink | ChangedSpecial;

export interface CommitOptions {
  /** Snapshot time in ms (default: now). */
  time?: number;
  tags?: string[];
}

export interface CommitResult {
  snapshot: string;
  parent: string;
  time: string;
  filesNew: number;
  filesChanged: number;
  filesRemoved: number;
  filesUnchanged: number;
  dirs: number;
  /** Bytes of changed files read to be re-chunked. */
  bytesRead: number;
  /** Bytes the repository grew by (packs written). */
  bytesAdded: number;
  blocksNew: number;
  blocksReused: number;
  dataEntries: number;
  refEntries: number;
  warnings: string[];
  durationMs: number;
}

/** Bytes of a changed file read at a time. */
const READ_SIZE = 1024 * 1024;

/** Makes a snapshot of `parentId`'s tree with `root`'s changes; `parentId` is a full id. */
export async function commitChanges(repo: Repository, parentId: string, root: ChangedDir, opts: CommitOptions = {}): Promise<CommitResult> {
  const started = performance.now();
  let parent: Snapshot;
  try {
    const row = await snapshotRowByPrefix(repo.service, parentId);
    if (row.id !== parentId) throw new StrataError('not_found', `no snapshot ${parentId}`);
    parent = new Snapshot(repo, row);
  } catch (e) {
    if (e instanceof StrataError && e.code === 'not_found') {
      throw new StrataError('not_found', `snapshot ${parentId.slice(0, 8)}, which the changes were made to, is no longer in the repository (forgotten): they cannot become a snapshot; copy out what you need, then discard them`);
    }
    throw e;
  }
  const level = repo.compressionLevel;
  const pool = new SealPool(repo.keyring, level, repo.chunker.max);
  try {
    const time = opts.time ?? Date.now();
    // The lease names the parent: a forget running meanwhile keeps it.
    const { lease } = await repo.service.startBackup(parent.row.lineage, time, parent.row.seq);
    try {
      return await new CommitRun(repo, parent, pool, time, opts).run(root, lease, started);
    } finally {
      await repo.service.endLease(lease);
    }
  } finally {
    await pool.close();
  }
}

/** A snapshot kept from forget (see pinSnapshot). */
export interface Pin {
  /** The snapshot's full id. */
  readonly snapshot: string;
  release(): Promise<void>;
}

/**
 * Keeps a snapshot from being forgotten while a writable mount is based on
 * it: a mount lease naming it, renewed while this process runs. A forget that
 * names it is refused, one by a policy keeps it (engine/forget.ts). A
 * repository in a bucket keeps the lease in this machine's catalog only.
 */
export async function pinSnapshot(repo: Repository, snapshotId: string): Promise<Pin> {
  const row = await snapshotRowByPrefix(repo.service, snapshotId);
  if (row.id !== snapshotId) throw new StrataError('not_found', `no snapshot ${snapshotId}`);
  const lease = await repo.service.pinSnapshot(row.seq);
  let released: Promise<void> | undefined;
  return { snapshot: row.id, release: () => (released ??= repo.service.endLease(lease)) };
}

/** A snapshot's version of a file as its sealed TOC says: its blocks (a piece of a block has no id), entries and the snapshot whose sealed TOC they are. */
export interface SealedVersion {
  blocks: BlockList;
  entries: readonly SealedEntry[];
  target: TargetVersion;
  owner: string | null;
}

/** Where a changed file's version goes: the snapshot being made, its version batch, and the counts it adds to. */
export interface VersionTarget {
  readonly repo: Repository;
  readonly versions: VersionWriter;
  readonly seq: number;
  readonly id: string;
  readonly r: BackupResult;
}

/**
 * Stores `blocks` as the version at `at` of the snapshot being made,
 * diffed against `here` (the parent's sealed version there, if any): data
 * entries for what is new, references for what it shares. Returns the tree
 * entry's fields that name it: its one block (format 3), or its TOC.
 */
export async function storeChangedVersion(t: VersionTarget, at: string, blocks: BlockList, here: SealedVersion | undefined): Promise<{ block?: string; toc?: string }> {
  let entries = diffBlocks(here?.blocks ?? new BlockList(1), blocks);
  if (entries.refEntries > 0 && !here) entries = diffBlocks(new BlockList(1), blocks);
  t.r.dataEntries += entries.dataEntries;
  t.r.refEntries += entries.refEntries;
  t.r.bytesTotal += blocks.size;
  const refs = entries.refEntries > 0 && here !== undefined;
  // One block: the entry names it and no TOC is sealed (format 3), as a backup does.
  const one = t.repo.blocksInEntries && entries.length === 1 && entries.dataEntries === 1 ? blocks.id(0) : null;
  const toc = await t.versions.add({
    snapshotSeq: t.seq,
    snapshotId: t.id,
    pathId: t.repo.keyring.pathId(at),
    size: blocks.size,
    entries,
    target: refs ? here.target : undefined,
    targetEntries: refs ? here.entries : undefined,
    targetOwner: refs ? here.owner : undefined,
    where: at,
    blocks,
    inEntry: one !== null,
  });
  return one ? { block: one.toString('hex') } : toc && t.repo.blocksInEntries ? { toc: toc.toString('hex') } : {};
}

/** `snapshot`'s version of the file at `at`, checked against its sealed TOC (undefined: it has none there). */
export async function sealedVersionOf(repo: Repository, snapshot: Snapshot, at: string): Promise<SealedVersion | undefined> {
  const pathId = repo.keyring.pathId(at);
  const [row] = await repo.service.parentVersions(snapshot.row.seq, [pathId]);
  if (!row) return undefined;
  const v = verifier(repo);
  const bound = await v.bind(snapshot, at, pathId, row);
  const blocks = new BlockList();
  if (bound.truth.size > 0) {
    for await (const p of v.expected(bound, 0, bound.truth.size - 1)) blocks.push(p.from === 0 && p.length === p.blockSize ? p.block : null, p.length);
  }
  return { blocks, entries: await bound.truth.entries.all(), target: { id: row.id, snapshotId: snapshot.id, depth: row.depth }, owner: bound.truth.owner };
}

class CommitRun {
  private readonly id = randomBytes(32).toString('hex');
  private readonly r: BackupResult;
  private removed = 0;
  private readonly packer;
  private sink!: BlockSink;
  private versions!: VersionWriter;
  private chunker!: Chunker;
  private seq = 0;

  constructor(
    private readonly repo: Repository,
    private readonly parent: Snapshot,
    private readonly pool: SealPool,
    private readonly time: number,
    private readonly opts: CommitOptions,
  ) {
    this.packer = repo.newPacker();
    this.r = emptyResult(this.id, parent.id, time);
  }

  async run(root: ChangedDir, lease: string, started: number): Promise<CommitResult> {
    const { repo, parent } = this;
    const service = repo.service;
    const level = repo.compressionLevel;
    const meta: SnapshotMeta = { host: parent.meta.host, tags: this.opts.tags ?? [], paths: parent.meta.paths, parent: parent.id };
    this.sink = new BlockSink(repo, level, this.packer, this.pool, this.r, undefined, (m) => this.r.warnings.push(m));
    this.seq = await service.beginSnapshot(this.id, this.time, parent.row.lineage, repo.keyring.sealJson(meta, metaAad(this.id)), parent.row.seq, lease, true);
    const sink = this.sink;
    this.versions = new VersionBatch(service, repo.keyring, this.packer, level, { maxBlock: repo.chunker.max, seal: (id, plain) => sink.storeSealedElsewhere(id, 'toc', plain) });
    this.chunker = new Chunker(repo.chunker, repo.gear);
    try {
      await sink.chooseDictionary();
      const top = await this.dir('/', root, parent.root, 0);
      await sink.drain();
      await this.versions.flush();
      await this.packer.flush();
      const stats = { files: this.r.filesNew + this.r.filesChanged + this.r.filesUnchanged, dirs: this.r.dirs, bytes: this.r.bytesTotal, bytesAdded: this.packer.bytesWritten };
      await commitRecord(repo, { seq: this.seq, record: { id: this.id, time: this.r.time, root: top.tree!, ...meta, stats }, sink, packer: this.packer });
    } catch (e) {
      await sink.keepStored();
      throw e;
    }
    const r = this.r;
    return {
      snapshot: this.id,
      parent: parent.id,
      time: r.time,
      filesNew: r.filesNew,
      filesChanged: r.filesChanged,
      filesRemoved: this.removed,
      filesUnchanged: r.filesUnchanged,
      dirs: r.dirs,
      bytesRead: r.bytesRead,
      bytesAdded: this.packer.bytesWritten,
      blocksNew: r.blocksNew,
      blocksReused: r.blocksReused,
      dataEntries: r.dataEntries,
      refEntries: r.refEntries,
      warnings: r.warnings,
      durationMs: Math.round(performance.now() - started),
    };
  }

  private async dir(at: string, node: ChangedDir, prev: TreeEntry | undefined, depth: number): Promise<TreeEntry> {
    if (depth > MAX_TREE_DEPTH) throw new StrataError('usage', `${at}: deeper than any real tree`);
    if (node.unchanged && prev?.type === 'dir' && prev.tree) {
      this.sink.blobs.add(prev.tree);
      return { ...prev, name: node.name };
    }
    const prevTree = prev?.type === 'dir' && prev.tree ? await this.parent.tree(prev.tree) : undefined;
    const children = (await node.entries()).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    const entries: TreeEntry[] = [];
    for (const c of children) {
      const p = at === '/' ? `/${c.name}` : `${at}/${c.name}`;
      const before = prevTree ? findEntry(prevTree, c.name) : undefined;
      if (c.type === 'dir') entries.push(await this.dir(p, c, before, depth + 1));
      else if (c.type === 'file') entries.push(await this.file(p, c, before));
      else if (c.type === 'symlink') entries.push(c.unchanged && before?.type === 'symlink' ? before : { ...stats(c, before), type: 'symlink', target: c.target });
      else entries.push(c.unchanged && before?.type === c.type ? before : { ...stats(c, before), type: c.type, ...(c.rdev !== undefined ? { rdev: c.rdev.toString() } : {}) });
    }
    if (prevTree) await this.tombstones(at, prevTree, new Map(entries.map((e) => [e.name, e.type])));
    this.r.dirs++;
    const tree: Tree = { entries };
    const id = await this.sink.storeBlob('tree', encodeTree(tree));
    return { ...stats(node, prev), type: 'dir', tree: id.toString('hex') };
  }

  private async file(at: string, node: ChangedFile, prev: TreeEntry | undefined): Promise<TreeEntry> {
    if (node.unchanged && prev?.type === 'file') {
      this.r.filesUnchanged++;
      if (prev.size > 0) this.r.refEntries++;
      this.r.bytesTotal += prev.size;
      return prev;
    }
    // Refs are made against the parent's version at this path; the bytes may have come from elsewhere (a rename).
    const here = prev?.type === 'file' ? await this.sealedVersion(at) : undefined;
    const from = node.base === undefined ? undefined : node.base === at ? here : await this.sealedVersion(node.base);
    const blocks = await this.blocksOf(at, node, from?.blocks);
    if (prev?.type === 'file') this.r.filesChanged++;
    else this.r.filesNew++;
    const names = await storeChangedVersion({ repo: this.repo, versions: this.versions, seq: this.seq, id: this.id, r: this.r }, at, blocks, here);
    return { ...stats(node, prev), type: 'file', size: blocks.size, ...names };
  }

  /** The parent's version of the file at `at`, checked against its sealed TOC (undefined: it has none there). */
  private sealedVersion(at: string): Promise<SealedVersion | undefined> {
    return sealedVersionOf(this.repo, this.parent, at);
  }

  /**
   * The blocks of a changed file, as chunking the whole file would cut it: a
   * chunk's end depends only on its own bytes, so wherever a cut lands on the
   * start of a base block that no written byte touches, that block and the
   * untouched ones after it are the file's blocks as they are (ids and
   * lengths, not read); between them the file is read and chunked, from the
   * start of the first touched block until a cut lands on an untouched one.
   */
  private async blocksOf(at: string, node: ChangedFile, base: BlockList | undefined): Promise<BlockList> {
    const out = new BlockList();
    const size = node.size;
    const n = base?.length ?? 0;
    const kept = Math.min(node.baseKept, size, base?.size ?? 0);
    // Which base blocks hold their bytes at their place still: whole, with an id, before `kept`, no
    // written byte in them, and not the base's last block cut short by its end when the file grew.
    // Where runs of zeros are cut out, the byte after a block must be unchanged too (cutHolds).
    const after = this.chunker.params.zeros ? 1 : 0;
    const clean = new Uint8Array(n);
    for (let i = 0, d = 0; i < n; i++) {
      const s = base!.start(i);
      const e = base!.end(i);
      while (d < node.dirty.length && node.dirty[d]![1] <= s) d++;
      const written = d < node.dirty.length && node.dirty[d]![0] <= e + after;
      const follows = e + after < kept || e + 1 >= size;
      clean[i] = base!.hasId(i) && e < kept && follows && !written && !(e === base!.size - 1 && size !== base!.size) ? 1 : 0;
    }
    const max = this.chunker.params.max;
    let window: Buffer = Buffer.alloc(0);
    let windowAt = 0;
    let pos = 0;
    let i = 0;
    /** The first clean base block at or after block i. */
    let nextClean = 0;
    while (pos < size) {
      while (i < n && base!.start(i) < pos) i++;
      nextClean = Math.max(nextClean, i);
      while (nextClean < n && !clean[nextClean]) nextClean++;
      if (i < n && base!.start(i) === pos && clean[i]) {
        let j = i + 1;
        while (j < n && clean[j]) j++;
        out.pushFrom(base!, i, j - i);
        this.r.blocksReused += j - i;
        pos = base!.end(j - 1) + 1;
        i = j;
        continue;
      }
      // One chunk from here: it needs `max` bytes, or the rest of the file.
      const need = Math.min(max, size - pos);
      if (pos < windowAt || pos + need > windowAt + window.length) {
        // Up to where chunking is likely to meet the untouched blocks again, at most READ_SIZE at a time.
        const until = nextClean < n ? base!.start(nextClean) + max : size;
        const length = Math.min(size - pos, Math.max(need, Math.min(READ_SIZE, until - pos)));
        window = await node.read(pos, length);
        if (window.length !== length) throw new StrataError('internal', `${at}: a read of ${length} bytes at ${pos} gave ${window.length}`);
        windowAt = pos;
        this.r.bytesRead += length;
      }
      const here = window.subarray(pos - windowAt, pos - windowAt + need);
      const chunk = here.subarray(0, this.chunker.firstCut(here));
      out.push(await this.sink.storeChunk(chunk), chunk.length);
      this.sink.checkAbort();
      pos += chunk.length;
    }
    if (out.size !== size) throw new StrataError('internal', `${at}: its blocks make ${out.size} bytes, not ${size}`);
    return out;
  }

  /** Tombstones for the parent's files under `at` that are no longer files there (see goneFiles). */
  private tombstones(at: string, prevTree: Tree, kept: ReadonlyMap<string, TreeEntry['type']>): Promise<void> {
    return goneFiles(at, prevTree, kept, (id) => this.parent.tree(id), async (p) => {
      this.removed++;
      await this.versions.tombstone(this.seq, this.repo.keyring.pathId(p));
    });
  }
}

/** A tree entry's common fields for a changed node; the inode of the entry it replaces is kept. */
function stats(node: ChangedStats, prev: TreeEntry | undefined): Omit<TreeEntry, 'type'> {
  const ns = node.mtimeNs.toString();
  const xattrs = node.xattrs && node.xattrs.length > 0 ? { xattrs: node.xattrs.map(([n, v]): [string, string] => [n, v.toString('base64')]) } : {};
  return { name: node.name, mode: node.mode, uid: node.uid, gid: node.gid, mtimeNs: ns, ctimeNs: ns, ino: prev?.ino ?? '0', size: 0, ...xattrs };
}
