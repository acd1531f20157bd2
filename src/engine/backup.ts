/**
 * Backup: walk the sources, store each file as a version (a baseline, or an
 * incremental against the same path in the parent snapshot), store a sealed
 * tree per directory, then commit the snapshot.
 *
 * The main thread reads, chunks and ids blocks; workers compress and seal the
 * new ones; the packer groups them into packs. A file whose size, mtime, ctime
 * and inode match the parent is not read: its version is one ref to the
 * previous version. Nothing is visible to readers until the snapshot commits;
 * blocks stored before an interruption are indexed and reused next time.
 */
import { randomBytes } from 'node:crypto';
import * as fsSync from 'node:fs';
import { constants } from 'node:fs';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { Chunker } from '../chunker/fastcdc.js';
import { interrupted, StrataError, usageError } from '../errors.js';
import { encodeBlock } from '../repo/blockcodec.js';
import { DictionaryBuilder } from '../repo/dictionary.js';
import type { BlobKind, VersionRow } from '../catalog/catalog.js';
import type { Packer } from '../repo/packer.js';
import type { Repository } from '../repo/repository.js';
import { GcPacer } from '../util/gc.js';
import { ExcludeMatcher } from '../util/glob.js';
import { decodeName, osPath, readNames } from '../util/names.js';
import { lstatAll, PackedStat, STAT_FIELDS, statError, type EntryStat } from '../util/stat.js';
import { SealPool } from '../workers/pool.js';
import { findSnapshot, metaAad, Snapshot, type SnapshotMeta, type SnapshotRecord } from './snapshot.js';
import { diffBlocks } from '../catalog/toc.js';
import { alignedBlocks, freshChunks, SourceReadError, windowBytes } from './aligned.js';
import { BlockList, contentMark, ID_BYTES } from '../catalog/blocklist.js';
import { encodeTree, findEntry, type Tree, type TreeEntry } from './tree.js';
import { VersionBatch, type SealedEntry } from './versions.js';
import { type TargetVersion } from '../catalog/toc-rows.js';
import { verifier } from './verify.js';
import { parseWhen } from '../util/when.js';

export interface BackupOptions {
  paths: string[];
  tags?: string[];
  /** Snapshot time in ms since the epoch (default: now). */
  time?: number;
  excludes?: string[];
  /** Exclude patterns matched without regard to case. */
  iexcludes?: string[];
  /** A directory holding a file of one of these names is left out ("NAME", or "NAME:TEXT" when the file must start with TEXT). */
  excludeIfPresent?: string[];
  /** Files larger than this many bytes are left out. */
  excludeLargerThan?: number;
  /** Directories on another file system than their parent's (mount points) are stored empty. */
  oneFileSystem?: boolean;
  /** Snapshot id (or prefix) to compare against instead of the automatic parent. */
  parent?: string;
  host?: string;
  signal?: AbortSignal;
  onProgress?: (p: BackupProgress) => void;
  onWarning?: (message: string) => void;
  /** Walk the sources once first to know the total (for an ETA). */
  estimate?: boolean;
  /** Read every file, even those whose metadata says unchanged (after check --repair). */
  force?: boolean;
}

export interface BackupProgress {
  files: number;
  bytesRead: number;
  bytesDone: number;
  bytesTotal?: number;
  filesTotal?: number;
}

export interface BackupResult {
  snapshot: string;
  parent: string | null;
  time: string;
  filesNew: number;
  filesChanged: number;
  filesUnchanged: number;
  dirs: number;
  /** Files left out by --exclude-larger-than, and directories by --exclude-if-present or --exclude-caches. */
  filesExcluded: number;
  dirsExcluded: number;
  bytesRead: number;
  /** Bytes the repository grew by (packs written). */
  bytesAdded: number;
  /** Logical size of all files in the snapshot. */
  bytesTotal: number;
  blocksNew: number;
  blocksReused: number;
  dataEntries: number;
  refEntries: number;
  warnings: string[];
  /** True when some source could not be read (exit code 3). */
  incomplete: boolean;
  durationMs: number;
}

interface PlanNode {
  children: Map<string, PlanNode>;
  /** A source path: everything below it is backed up. */
  source: boolean;
}

/** A file's path id and its parent version, looked up with its directory's other files. */
interface KnownVersion {
  pathId: Buffer;
  row: VersionRow | undefined;
  /** The row's blocks, when looked up with others (a small file's). */
  blocks?: BlockList;
  /** Whether the file holds exactly those blocks, when a worker was asked (see askSame). */
  same?: Promise<boolean>;
}

/** Files asked of a worker at once (askSame): enough to make the round trip cheap, few enough to keep both workers busy. */
const SAME_FILES = 64;
const SAME_BYTES = 1024 * 1024;

/** Parent versions up to this size have their blocks looked up a directory batch at a time. */
const BATCHED_LIST_BYTES = 1024 * 1024;

/** Entries of a directory stat'ed, and their parent versions looked up, together. */
const CHILD_BATCH = 1024;
/** Fewer entries than this are stat'ed here: a message to a worker would cost more. */
const STAT_ELSEWHERE = 128;
/** Batches stat'ed ahead (each split between two workers). */
const STAT_AHEAD = 3;

/** The tree of a directory of files made from their stats: its id, hashed entry by entry as encodeTree writes them. */
class LeafTree {
  files = 0;
  bytes = 0;
  /** Files that are not empty (each would be a ref). */
  sized = 0;

  constructor(private readonly hash: { update(piece: string): void; digest(): Buffer }) {
    hash.update('{"entries":[');
  }

  add(batch: readonly Stated[]): void {
    const json: string[] = [];
    for (const c of batch) {
      const st = c.st!;
      const size = Number(st.size);
      // JSON.stringify(metadata(name, 'file', st)), without making the object: every field but the name is a number or digits.
      json.push(`{"name":${JSON.stringify(c.name)},"type":"file","mode":${st.mode},"uid":${st.uid},"gid":${st.gid},"mtimeNs":"${st.mtimeNs}","ctimeNs":"${st.ctimeNs}","ino":"${st.ino}","size":${size}}`);
      this.bytes += size;
      if (size > 0) this.sized++;
    }
    if (json.length === 0) return;
    this.hash.update((this.files > 0 ? ',' : '') + json.join(','));
    this.files += json.length;
  }

  id(): Buffer {
    this.hash.update(']}');
    return this.hash.digest();
  }
}

/** A child stat'ed, or why it could not be. */
interface Stated {
  name: string;
  abs: string;
  st: EntryStat | undefined;
  error: unknown;
}
/** Deeper than any real tree: a bound against a parent tree that contains itself. */
const MAX_TREE_DEPTH = 4096;
const READ_SIZE = 1024 * 1024;
const MAX_IN_FLIGHT = 32;
/**
 * New files up to this size are hashed here: a worker would hash them off
 * this thread, but the file's TOC would then wait a round trip for the ids,
 * and in a tree of small files those waits add up to most of the time.
 */
const HASH_HERE = 4 * 1024 * 1024;

export async function backup(repo: Repository, opts: BackupOptions): Promise<BackupResult> {
  const run = new BackupRun(repo, opts);
  return run.run();
}

class BackupRun {
  private readonly started = performance.now();
  private readonly host: string;
  private readonly sources: string[];
  private readonly excludes: ExcludeMatcher;
  private readonly markers: Marker[];
  private readonly packer: Packer;
  private readonly versions: VersionBatch;
  private pool?: SealPool;
  private parent?: Snapshot;
  private seq = 0;
  private readonly id = randomBytes(32).toString('hex');
  private readonly time: number;
  private readonly inFlight = new Set<Promise<void>>();
  private failure: unknown;
  private signalFailure!: () => void;
  /** Settles when a block fails (so nothing waits for ids that will never come). */
  private readonly failed = new Promise<void>((resolve) => (this.signalFailure = resolve));
  private readonly gc = new GcPacer(4 * 1024 * 1024);
  private sinceTurn = 0;
  /** Its read window is shared by every file (they are read one at a time). */
  private readonly chunker: Chunker;
  /** Trees and the record this snapshot uses (hex ids). */
  private readonly blobs = new Set<string>();
  private readonly r: BackupResult;
  private readonly progress: BackupProgress = { files: 0, bytesRead: 0, bytesDone: 0 };

  constructor(
    private readonly repo: Repository,
    private readonly opts: BackupOptions,
  ) {
    if (opts.paths.length === 0) throw usageError('backup needs at least one PATH');
    this.host = opts.host ?? os.hostname();
    this.sources = normalizeSources(opts.paths);
    this.excludes = new ExcludeMatcher(opts.excludes ?? [], opts.iexcludes ?? []);
    this.markers = (opts.excludeIfPresent ?? []).map(parseMarker);
    this.packer = repo.newPacker();
    this.chunker = new Chunker(repo.chunker, repo.gear, windowBytes(READ_SIZE, repo.chunker.max));
    this.versions = new VersionBatch(repo.service, repo.keyring, this.packer, repo.compressionLevel, {
      maxBlock: repo.chunker.max,
      seal: (id, plain) => this.storeSealedElsewhere(id, 'toc', plain),
    });
    this.time = opts.time ?? Date.now();
    this.r = {
      snapshot: this.id,
      parent: null,
      time: new Date(this.time).toISOString(),
      filesNew: 0,
      filesExcluded: 0,
      dirsExcluded: 0,
      filesChanged: 0,
      filesUnchanged: 0,
      dirs: 0,
      bytesRead: 0,
      bytesAdded: 0,
      bytesTotal: 0,
      blocksNew: 0,
      blocksReused: 0,
      dataEntries: 0,
      refEntries: 0,
      warnings: [],
      incomplete: false,
      durationMs: 0,
    };
  }

  /** Sources, files and directories that could not be read: the snapshot records how many. */
  private unreadable = 0;

  private warn(message: string, incomplete: boolean): void {
    this.r.warnings.push(message);
    if (incomplete) {
      this.r.incomplete = true;
      this.unreadable++;
    }
    this.opts.onWarning?.(message);
  }

  async run(): Promise<BackupResult> {
    const { repo, opts } = this;
    const present: string[] = [];
    for (const p of new Set(opts.paths.map((p) => path.resolve(p)))) {
      try {
        const st = await fs.lstat(p);
        // Paths are stored as given and walked from / without following links: a source
        // reached through a symlink would be stored as that link and nothing below it.
        const through = await symlinkOnTheWay(p);
        if (through) {
          this.warn(`skipping source ${p}: it is reached through the symlink ${through.link} (-> ${through.target}); back up ${await fs.realpath(p)} instead`, true);
          continue;
        }
        if (st.isSymbolicLink()) this.warn(`source ${p} is a symlink: stored as a link, not followed; back up ${await fs.realpath(p).catch(() => 'its target')} for what it points to`, true);
        if (this.sources.includes(p)) present.push(p);
      } catch (e) {
        this.warn(`cannot read source ${p}: ${describe(e)}`, true);
      }
    }
    if (present.length === 0) throw new StrataError('no_sources', 'none of the source paths can be read; nothing backed up');

    // The workers start first: they boot while the lease is taken, the snapshot begun and the trees walked.
    this.pool = new SealPool(repo.keyring, repo.compressionLevel, repo.chunker.max, MAX_IN_FLIGHT);
    try {
      const lineage = repo.keyring.lineageId(this.host, this.sources);
      // The parent is chosen as the lease is taken: a forget then sees it in use and keeps it.
      const chosen = opts.parent ? (await findSnapshot(repo, parseWhen(opts.parent))).row.seq : 'auto';
      const { lease, parent } = await repo.service.startBackup(lineage, this.time, chosen);
      if (parent) this.parent = new Snapshot(repo, parent);
      try {
        return await this.runLeased(present, lineage, lease);
      } finally {
        await repo.service.endLease(lease);
      }
    } finally {
      await this.pool.close();
    }
  }

  private async runLeased(present: string[], lineage: Buffer, leaseId: string): Promise<BackupResult> {
    const { repo, opts } = this;
    const service = repo.service;
    this.r.parent = this.parent?.id ?? null;
    if (opts.estimate) await this.estimate(present);

    const meta: SnapshotMeta = { host: this.host, tags: opts.tags ?? [], paths: this.sources, ...(this.parent ? { parent: this.parent.id } : {}) };
    // The snapshot inherits its parent's versions: only changed files get rows, and removed ones tombstones.
    this.seq = await service.beginSnapshot(this.id, this.time, lineage, repo.keyring.sealJson(meta, metaAad(this.id)), this.parent?.row.seq ?? null, leaseId, this.parent !== undefined);
    try {
      await this.chooseDictionary();
      const plan = buildPlan(present);
      const rootStat = await fs.lstat('/', { bigint: true });
      const root = await this.saveNode('/', '/', rootStat, this.parent?.root, plan);
      await this.drain();
      await this.versions.flush();
      await this.packer.flush();
      // What the data, trees and TOCs added; the record's own small pack comes on top.
      const stats = { files: this.r.filesNew + this.r.filesChanged + this.r.filesUnchanged, dirs: this.r.dirs, bytes: this.r.bytesTotal, bytesAdded: this.packer.bytesWritten };
      const partial = this.unreadable > 0 ? { unreadable: this.unreadable } : {};
      const record: SnapshotRecord = { strata: 'snapshot', id: this.id, time: this.r.time, root: root!.tree!, ...meta, stats, ...partial };
      const recordId = await this.storeBlob('snapshot', Buffer.from(JSON.stringify(record), 'utf8'));
      await this.packer.flush();
      this.r.bytesAdded = this.packer.bytesWritten;
      const blobs = [...this.blobs].map((h) => Buffer.from(h, 'hex'));
      await service.commitSnapshot(this.seq, Buffer.from(root!.tree!, 'hex'), recordId, repo.keyring.sealJson({ ...meta, stats, ...partial, root: record.root, time: record.time }, metaAad(this.id)), blobs);
    } catch (e) {
      // Keep what was stored: the next backup reuses every indexed block.
      await this.drain().catch(() => {});
      await this.packer.flush().catch(() => {});
      throw e;
    }
    this.r.durationMs = Math.round(performance.now() - this.started);
    return this.r;
  }

  /**
   * Blocks are compressed with the repository's dictionary; a repository
   * without one gets one made from this backup's first text-like blocks.
   */
  private async chooseDictionary(): Promise<void> {
    const { repo } = this;
    if (!repo.dictionariesAllowed) return;
    const dict = await repo.dictionary();
    if (dict) return this.pool!.useDictionary(dict);
    this.pool!.sampleFor(new DictionaryBuilder(), (bytes) => {
      // Workers get it only once it is stored: no block may name a dictionary the repository lacks.
      const stored = repo.addDictionary(bytes).then(
        (d) => this.pool!.useDictionary(d),
        (e: unknown) => this.warn(`no compression dictionary stored (blocks are compressed without one): ${describe(e)}`, false),
      );
      // New blocks wait for it (one short pause in a repository's life), or most of a small first backup would go without.
      this.dictionaryStored = stored.finally(() => (this.dictionaryStored = undefined));
      this.track(stored);
    });
  }

  /** While a new dictionary is being stored. */
  private dictionaryStored?: Promise<void>;

  private async estimate(sources: string[]): Promise<void> {
    let bytes = 0;
    let files = 0;
    const visit = async (p: string): Promise<void> => {
      if (this.opts.signal?.aborted) return;
      let st;
      try {
        st = await fs.lstat(osPath(p));
      } catch {
        return;
      }
      if (st.isFile()) {
        bytes += st.size;
        files++;
      } else if (st.isDirectory()) {
        let names: string[] = [];
        try {
          names = await readNames(p);
        } catch {
          return;
        }
        for (const n of names) {
          const child = path.join(p, n);
          if (!this.excludes.excludes(child, n)) await visit(child);
        }
      }
    };
    for (const s of sources) await visit(s);
    this.progress.bytesTotal = bytes;
    this.progress.filesTotal = files;
  }

  private checkAbort(): void {
    if (this.opts.signal?.aborted) throw interrupted();
    if (this.failure) throw this.failure;
  }

  private report(): void {
    this.opts.onProgress?.(this.progress);
  }

  private async saveNode(abs: string, name: string, st: EntryStat, prev: TreeEntry | undefined, plan: PlanNode | undefined, known?: KnownVersion, parentDev?: bigint): Promise<TreeEntry | undefined> {
    this.checkAbort();
    if (st.isDirectory()) return this.saveDir(abs, name, st, prev, plan, parentDev);
    if (st.isFile()) return this.saveFile(abs, name, st, prev, known);
    if (st.isSymbolicLink()) {
      try {
        return { ...metadata(name, 'symlink', st), target: decodeName(await fs.readlink(osPath(abs), { encoding: 'buffer' })) };
      } catch (e) {
        this.warn(`cannot read symlink ${abs}: ${describe(e)}`, true);
        return undefined;
      }
    }
    const kind = st.isFIFO() ? 'a FIFO' : st.isSocket() ? 'a socket' : st.isBlockDevice() ? 'a block device' : st.isCharacterDevice() ? 'a character device' : 'not a regular file';
    this.warn(`skipping ${abs}: ${kind}`, false);
    return undefined;
  }

  private async saveDir(abs: string, name: string, st: EntryStat, prev: TreeEntry | undefined, plan: PlanNode | undefined, parentDev?: bigint): Promise<TreeEntry | undefined> {
    const partial = plan !== undefined && !plan.source;
    // Its file system, when mount points are not crossed (asked of directories only: files need no device).
    const dev = this.opts.oneFileSystem && !partial ? deviceOf(abs) : undefined;
    const mountPoint = dev !== undefined && parentDev !== undefined && dev !== parentDev;
    let names: string[];
    if (partial || mountPoint) names = partial ? [...plan.children.keys()] : [];
    else {
      try {
        names = await readNames(abs);
      } catch (e) {
        this.warn(`cannot read directory ${abs}: ${describe(e)}`, true);
        names = [];
      }
      if (this.markers.length > 0 && this.markers.some((m) => names.includes(m.name) && hasMarker(`${abs}/${m.name}`, m))) {
        this.r.dirsExcluded++;
        return undefined;
      }
    }
    names.sort(compareNames);
    const children = (from: number): Stated[] => {
      const out: Stated[] = [];
      for (const child of names.slice(from, from + CHILD_BATCH)) {
        const childAbs = abs === '/' ? `/${child}` : `${abs}/${child}`;
        if (partial || !this.excludes.excludes(childAbs, child)) out.push({ name: child, abs: childAbs, st: undefined, error: undefined });
      }
      return out;
    };
    // Batches are stat'ed ahead of the one being compared.
    const statted = async function* (this: BackupRun): AsyncGenerator<Stated[]> {
      const ahead: Promise<Stated[]>[] = [];
      let from = 0;
      const fill = () => {
        for (; ahead.length < STAT_AHEAD && from < names.length; from += CHILD_BATCH) ahead.push(this.statChildren(children(from)));
      };
      fill();
      while (ahead.length > 0) {
        const batch = await ahead.shift()!;
        fill();
        yield this.opts.excludeLargerThan === undefined ? batch : batch.filter((c) => !this.tooLarge(c));
      }
    }.call(this);

    const prevId = prev?.type === 'dir' && prev.tree && this.parent ? prev.tree : undefined;
    let batches: AsyncIterable<Stated[]> = statted;
    if (prevId && !this.opts.force) {
      // A directory of files only: its tree can be made from the stats alone. If
      // that is the parent's tree, the directory is unchanged and the parent's
      // tree is not even read (100k entries: 0.4 s of reading and parsing).
      const seen: Stated[][] = [];
      let leaf: LeafTree | undefined = new LeafTree(this.repo.keyring.blockIdOfPieces());
      // Not for-await: leaving it early would end the generator, whose other batches are still wanted.
      for (let r = await statted.next(); !r.done; r = await statted.next()) {
        seen.push(r.value);
        if (!r.value.every((c) => c.st?.isFile())) {
          leaf = undefined;
          break;
        }
        // Hashed as it comes, while the workers stat the next batches.
        leaf.add(r.value);
      }
      if (leaf) {
        const reused = this.reuseLeaf(name, st, prevId, leaf);
        if (reused) return reused;
      }
      batches = (async function* () {
        yield* seen;
        yield* statted;
      })();
    }

    const prevTree = prevId ? await this.parentTree(prevId) : undefined;
    // While every entry equals the parent tree's entry at the same place, none
    // is kept: an unchanged directory reuses the parent's tree as it is, and a
    // directory of 100k files does not hold a second copy of its listing.
    const entries: TreeEntry[] = [];
    let same = 0;
    // What this directory holds now, by name, to find what the parent had that it no longer does.
    const kept = prevTree ? new Map<string, TreeEntry['type']>() : undefined;
    for await (const stated of batches) {
      const batch: { name: string; abs: string; st: EntryStat; prev: TreeEntry | undefined; known?: KnownVersion }[] = [];
      for (const c of stated) {
        if (c.st) batch.push({ name: c.name, abs: c.abs, st: c.st, prev: prevTree && findEntry(prevTree, c.name) });
        else this.warn(`cannot read ${c.abs}: ${describe(c.error)}`, true);
      }
      // A file the parent has as it is now is inherited: no catalog lookup, no row.
      const files = batch.filter((c) => c.st.isFile() && !this.unchangedSince(c.prev, c.st));
      const known = await this.parentVersions(files.map((c) => c.abs));
      // The small ones' blocks in one catalog read: each of them is read and aligned with them next.
      const small = known.filter((k): k is KnownVersion & { row: VersionRow } => k.row !== undefined && k.row.size > 0 && k.row.size <= BATCHED_LIST_BYTES);
      if (this.parent && small.length > 0) (await this.repo.service.blockLists(small.map((k) => k.row))).forEach((list, i) => (small[i]!.blocks = list));
      files.forEach((c, i) => (c.known = known[i]));
      if (this.parent && !this.opts.force) this.askSame(files);
      // Unchanged files need no I/O but an lstat: let the event loop turn now and then (Ctrl-C, progress).
      this.sinceTurn += batch.length;
      if (this.sinceTurn >= 1000) {
        this.sinceTurn = 0;
        await new Promise<void>((resolve) => setImmediate(resolve));
      }
      for (const c of batch) {
        const entry = await this.saveNode(c.abs, c.name, c.st, c.prev, partial ? plan.children.get(c.name) : undefined, c.known, dev);
        if (!entry) continue;
        kept?.set(entry.name, entry.type);
        if (prevTree && entries.length === 0 && same < prevTree.entries.length && sameEntry(entry, prevTree.entries[same]!)) {
          same++;
          continue;
        }
        if (entries.length === 0) for (let k = 0; k < same; k++) entries.push(prevTree!.entries[k]!);
        entries.push(entry);
      }
    }
    this.r.dirs++;
    if (prevTree && kept) await this.tombstones(abs, prevTree, kept);
    if (prevTree && prev?.tree && entries.length === 0 && same === prevTree.entries.length && same > 0 && this.packer.has(Buffer.from(prev.tree, 'hex'))) {
      this.blobs.add(prev.tree);
      return { ...metadata(name, 'dir', st), tree: prev.tree };
    }
    if (entries.length === 0) for (let k = 0; k < same; k++) entries.push(prevTree!.entries[k]!);
    const tree: Tree = { entries };
    const id = await this.storeBlob('tree', encodeTree(tree));
    return { ...metadata(name, 'dir', st), tree: id.toString('hex') };
  }

  /** A file over --exclude-larger-than: left out (and counted). */
  private tooLarge(c: Stated): boolean {
    if (!c.st?.isFile() || c.st.size <= BigInt(this.opts.excludeLargerThan!)) return false;
    this.r.filesExcluded++;
    return true;
  }

  /**
   * The parent's tree of a directory of files, if the stats made exactly it
   * (same names, sizes, times, inodes, modes and owners): every file is then
   * inherited unread.
   */
  private reuseLeaf(name: string, st: EntryStat, prevId: string, leaf: LeafTree): TreeEntry | undefined {
    const tree = leaf.id();
    if (tree.toString('hex') !== prevId || !this.packer.has(tree)) return undefined;
    this.inherited(leaf.files, leaf.sized, leaf.bytes);
    this.r.dirs++;
    this.blobs.add(prevId);
    return { ...metadata(name, 'dir', st), tree: prevId };
  }

  /** Counts files inherited unread from the parent snapshot (`sized` of them not empty, each one ref). */
  private inherited(files: number, sized: number, bytes: number): void {
    this.r.filesUnchanged += files;
    this.r.refEntries += sized;
    this.r.bytesTotal += bytes;
    this.progress.bytesDone += bytes;
    this.progress.files += files;
    this.report();
  }

  /**
   * lstat of a directory's entries: on the workers when they have nothing
   * else to do (an unchanged tree), else here. Never rejects.
   */
  private async statChildren(children: Stated[]): Promise<Stated[]> {
    const pool = this.pool!;
    if (children.length >= STAT_ELSEWHERE && pool.idle) {
      const half = Math.ceil(children.length / 2);
      try {
        const parts = await Promise.all([children.slice(0, half), children.slice(half)].map((part) => pool.stat(part.map((c) => c.abs))));
        parts.forEach(({ values, failures }, k) => {
          for (let i = 0; i < failures.length; i++) {
            const c = children[k * half + i]!;
            const f = failures[i];
            if (f) c.error = statError(f);
            else c.st = new PackedStat(values, i * STAT_FIELDS);
          }
        });
        return children;
      } catch {
        // A worker failed: the backup fails with it soon; stat here meanwhile.
      }
    }
    // Packed here too: a directory's stats are held until it is compared, and a BigIntStats weighs ten times more.
    const { values, failures } = lstatAll(
      children.map((c) => c.abs),
      (p) => fsSync.lstatSync(osPath(p), { bigint: true }),
    );
    children.forEach((c, i) => {
      const f = failures[i];
      if (f) c.error = statError(f);
      else c.st = new PackedStat(values, i * STAT_FIELDS);
    });
    return children;
  }

  /**
   * A tree of the parent snapshot. This snapshot inherits the parent's
   * versions, so a file the parent had and this one does not must be known
   * (see tombstones): a parent tree that cannot be read ends the backup.
   */
  private async parentTree(id: string): Promise<Tree> {
    try {
      return await this.parent!.tree(id);
    } catch (e) {
      throw new StrataError('integrity', `cannot read tree ${id.slice(0, 16)} of the parent snapshot ${this.parent!.id.slice(0, 8)} (${describe(e)}); run "strata check", or back up against another snapshot with --parent`);
    }
  }

  /** True when the parent has this file as it is now (same size, times and inode): it is inherited as it was. */
  private unchangedSince(prev: TreeEntry | undefined, st: EntryStat): boolean {
    return (
      !this.opts.force &&
      prev?.type === 'file' &&
      st.isFile() &&
      prev.size === Number(st.size) &&
      prev.mtimeNs === st.mtimeNs.toString() &&
      prev.ctimeNs === st.ctimeNs.toString() &&
      prev.ino === st.ino.toString()
    );
  }

  /**
   * Marks as gone every file of the parent's directory that this one no
   * longer holds as a file: removed, excluded, unreadable or now of another
   * type, and every file under a directory that went the same way. Without
   * its tombstone such a path would be inherited from the parent.
   */
  private async tombstones(abs: string, prevTree: Tree, kept: ReadonlyMap<string, TreeEntry['type']>): Promise<void> {
    const gone = async (p: string) => this.versions.tombstone(this.seq, this.repo.keyring.pathId(p));
    const under = async (dir: string, tree: Tree, depth: number): Promise<void> => {
      if (depth > MAX_TREE_DEPTH) throw new StrataError('integrity', `the parent snapshot's tree under ${dir} is deeper than any real one`);
      for (const e of tree.entries) {
        const p = `${dir}/${e.name}`;
        if (e.type === 'file') await gone(p);
        else if (e.type === 'dir' && e.tree) await under(p, await this.parentTree(e.tree), depth + 1);
      }
    };
    for (const e of prevTree.entries) {
      if (kept.get(e.name) === e.type) continue;
      const p = abs === '/' ? `/${e.name}` : `${abs}/${e.name}`;
      if (e.type === 'file') await gone(p);
      else if (e.type === 'dir' && e.tree) await under(p, await this.parentTree(e.tree), 1);
    }
  }

  /**
   * The path ids of files and their parent versions, in one question to the
   * catalog (sorted lookups in one read transaction; over a network, one
   * round trip) instead of one per file.
   */
  private async parentVersions(paths: readonly string[]): Promise<KnownVersion[]> {
    const pathIds = paths.map((p) => this.repo.keyring.pathId(p));
    const rows = this.parent && paths.length > 0 ? await this.repo.service.parentVersions(this.parent.row.seq, pathIds) : [];
    return pathIds.map((pathId, i) => ({ pathId, row: rows[i] }));
  }

  private async storeBlob(kind: 'tree' | 'snapshot', plain: Buffer): Promise<Buffer> {
    const id = this.repo.keyring.blockId(plain);
    this.blobs.add(id.toString('hex'));
    if (!this.packer.has(id)) await this.packer.add(id, kind, encodeBlock(this.repo.keyring.encKey, id, plain, this.repo.compressionLevel), plain.length);
    return id;
  }

  private async saveFile(abs: string, name: string, st: EntryStat, prev: TreeEntry | undefined, known?: KnownVersion): Promise<TreeEntry | undefined> {
    const { repo } = this;
    const entry = metadata(name, 'file', st);
    if (this.unchangedSince(prev, st)) {
      // Inherited from the parent snapshot: no row in the catalog, nothing sealed.
      this.inherited(1, entry.size > 0 ? 1 : 0, entry.size);
      // Its content mark goes along: readers check an inherited version by stats or by it.
      return prev?.parentContent ? { ...entry, parentContent: prev.parentContent } : entry;
    }
    if (known?.same && (await known.same)) return this.sameAsParent(entry, known.blocks!, true);
    const { pathId, row: prevRow, blocks: prevBlocks } = known ?? (await this.parentVersions([abs]))[0]!;
    const target: TargetVersion | undefined = prevRow && this.parent ? { id: prevRow.id, snapshotId: this.parent.id, depth: prevRow.depth } : undefined;
    const previous = prevRow && prevRow.size > 0 ? (prevBlocks ?? (await repo.service.blockList(prevRow.id, prevRow.size))) : new BlockList(1);
    const blocks = await this.readFile(abs, prevRow ? previous : undefined);
    if (!blocks) return undefined;
    entry.size = blocks.size;
    let entries = diffBlocks(previous, blocks);
    if (prevRow && this.parent && !this.opts.force && blocks.size === prevRow.size && entries.dataEntries === 0 && entries.refEntries <= 1) {
      return this.sameAsParent(entry, blocks, false);
    }
    // Refs are sealed for good: they are made against the parent as its sealed TOC says, not as the catalog does.
    const sealed = entries.refEntries > 0 && prevRow ? await this.sealedParent(abs, pathId, prevRow) : undefined;
    if (sealed) entries = diffBlocks(sealed.blocks, blocks);
    else if (entries.refEntries > 0) entries = diffBlocks(new BlockList(1), blocks);
    if (prevRow) this.r.filesChanged++;
    else this.r.filesNew++;
    this.r.dataEntries += entries.dataEntries;
    this.r.refEntries += entries.refEntries;
    this.r.bytesTotal += entry.size;
    this.progress.files++;
    this.report();
    await this.versions.add({
      snapshotSeq: this.seq,
      snapshotId: this.id,
      pathId,
      size: entry.size,
      entries,
      target: entries.refEntries > 0 ? target : undefined,
      targetEntries: entries.refEntries > 0 ? sealed?.entries : undefined,
      where: abs,
      blocks,
    });
    return entry;
  }

  /**
   * A file read again (its stats changed: a new inode, a touch) that holds
   * its parent version's blocks: that version serves, with no row and no
   * sealed TOC. Its entry carries the content mark readers check it by.
   */
  private sameAsParent(entry: TreeEntry & { size: number }, blocks: BlockList, readElsewhere: boolean): TreeEntry {
    this.r.filesUnchanged++;
    if (entry.size > 0) this.r.refEntries++;
    this.r.bytesTotal += entry.size;
    if (readElsewhere) {
      this.r.bytesRead += entry.size;
      this.r.blocksReused += blocks.length;
      this.progress.bytesRead += entry.size;
      this.progress.bytesDone += entry.size;
    }
    this.progress.files++;
    this.report();
    return { ...entry, parentContent: contentMark(this.repo.keyring, blocks) };
  }

  /**
   * Files whose stats changed but not their size (unpacked afresh, touched)
   * are read and hashed along their parent versions' blocks on the workers,
   * a group at a time, while this thread goes on: each file's `same` says
   * whether it holds exactly those bytes. One that does not (or could not be
   * checked there) is read here as any changed file is.
   */
  private askSame(files: readonly { abs: string; st: EntryStat; known?: KnownVersion }[]): void {
    const asked: { abs: string; st: EntryStat; known: KnownVersion & { blocks: BlockList } }[] = [];
    let bytes = 0;
    let blocks = 0;
    const send = () => {
      // Flat typed arrays: a message of many small objects costs this thread more to clone than the worker saves it.
      const stats = new BigInt64Array(asked.length * 4);
      const counts = new Uint32Array(asked.length);
      const lengths = new Uint32Array(blocks);
      const ids = new Uint8Array(blocks * ID_BYTES);
      let k = 0;
      asked.forEach(({ st, known }, i) => {
        stats.set([st.size, st.mtimeNs, st.ctimeNs, st.ino], i * 4);
        const list = known.blocks;
        counts[i] = list.length;
        for (let j = 0; j < list.length; j++, k++) {
          lengths[k] = list.end(j) - list.start(j) + 1;
          ids.set(list.id(j)!, k * ID_BYTES);
        }
      });
      const answer = this.pool!.same({ paths: asked.map((a) => a.abs), stats, counts, lengths, ids });
      asked.forEach((a, i) => (a.known.same = answer.then((res) => res.results[i] === 1, () => false)));
      asked.length = 0;
      bytes = 0;
      blocks = 0;
    };
    for (const { abs, st, known } of files) {
      const list = known?.blocks;
      if (!known?.row || !list || known.row.size !== Number(st.size) || list.size !== known.row.size) continue;
      let complete = true;
      for (let i = 0; i < list.length && complete; i++) complete = list.hasId(i);
      if (!complete) continue;
      asked.push({ abs, st, known: known as KnownVersion & { blocks: BlockList } });
      bytes += known.row.size;
      blocks += list.length;
      if (asked.length >= SAME_FILES || bytes >= SAME_BYTES) send();
    }
    if (asked.length > 0) send();
  }

  /**
   * The parent version as its sealed TOCs say (checked as a read checks
   * them): its entries, from which the refs sealed now take their roots, and
   * its blocks, against which they are made (a piece of a block has no id, and
   * is not matched). Undefined if that cannot be had: the file is then
   * stored without refs.
   */
  private async sealedParent(abs: string, pathId: Buffer, row: VersionRow): Promise<{ entries: readonly SealedEntry[]; blocks: BlockList } | undefined> {
    if (!this.parent) return undefined;
    try {
      const v = verifier(this.repo);
      const bound = await v.bind(this.parent, abs, pathId, row);
      const blocks = new BlockList();
      for await (const p of v.expected(bound, 0, bound.truth.size - 1)) blocks.push(p.from === 0 && p.length === p.blockSize ? p.block : null, p.length);
      return { entries: await bound.truth.entries.all(), blocks };
    } catch (e) {
      if (e instanceof StrataError && e.code === 'integrity') {
        this.warn(`${abs}: its version in the parent snapshot cannot be checked against its sealed TOC (${e.message}); stored without references to it`, false);
        return undefined;
      }
      throw e;
    }
  }

  /**
   * Reads and chunks a file, sending new blocks to be sealed; undefined if
   * unreadable. A file seen before is hashed here, so its unchanged blocks
   * cost no compression; a new file is hashed in the workers, off this thread.
   */
  private async readFile(abs: string, previous: BlockList | undefined): Promise<BlockList | undefined> {
    // Synchronous calls: a tree of small files is otherwise bound by the
    // round trips of open, fstat, read and close through the thread pool.
    let fd: number;
    try {
      fd = fsSync.openSync(osPath(abs), constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
    } catch (e) {
      this.warn(`cannot read ${abs}: ${describe(e)}`, true);
      return undefined;
    }
    const blocks = new BlockList();
    // Ids of new files arrive from the workers, in any order.
    let waiting = 0;
    let allKnown: (() => void) | undefined;
    const known = (i: number, id: Buffer) => {
      blocks.setId(i, id);
      if (--waiting === 0) allKnown?.();
    };
    try {
      const st = fsSync.fstatSync(fd, { bigint: true });
      if (!st.isFile()) {
        this.warn(`skipping ${abs}: no longer a regular file`, false);
        return undefined;
      }
      const counted = (bytesRead: number, here = true) => {
        this.r.bytesRead += bytesRead;
        // Bytes a worker read cost this thread no memory.
        if (here) this.gc.add(bytesRead);
        this.progress.bytesRead += bytesRead;
        this.progress.bytesDone += bytesRead;
      };
      if (previous) {
        const ids = this.repo.keyring;
        // Unchanged runs of a large file are read and hashed on the workers, several at once.
        const confirmer = Number(st.size) > HASH_HERE ? { confirm: (start: number, lengths: number[], want: Uint8Array, last: boolean) => this.pool!.confirm(fd, start, lengths, want, last), stored: (want: Buffer[]) => this.packer.hasMany(want) } : undefined;
        const read = alignedBlocks(fd, this.chunker, previous, (d) => ids.blockId(d), counted, confirmer);
        try {
          for await (const b of read) {
            this.checkAbort();
            if ('run' in b) {
              blocks.pushFrom(previous, b.run.first, b.run.count);
              this.r.blocksReused += b.run.count;
              this.report();
              continue;
            }
            blocks.push(b.id, b.length);
            if (b.data) await this.storeChunk(b.data, b.id);
            else this.r.blocksReused++;
            this.report();
          }
        } catch (e) {
          if (!(e instanceof SourceReadError)) throw e;
          this.warn(`cannot read ${abs}: ${describe(e.cause)}`, true);
          return undefined;
        }
        this.checkUnchangedWhileRead(fd, st, abs);
        return blocks;
      }
      try {
        for await (const chunk of freshChunks(fd, this.chunker, counted)) {
          this.checkAbort();
          if (Number(st.size) <= HASH_HERE) {
            blocks.push(await this.storeChunk(chunk), chunk.length);
          } else {
            const i = blocks.push(null, chunk.length);
            waiting++;
            await this.storeNewChunk(chunk, (id) => known(i, id));
          }
          this.report();
        }
      } catch (e) {
        if (!(e instanceof SourceReadError)) throw e;
        this.warn(`cannot read ${abs}: ${describe(e.cause)}`, true);
        return undefined;
      }
      // A failed block fails the whole backup (drain rethrows it); until then, wait for the rest.
      while (waiting > 0) {
        await Promise.race([new Promise<void>((resolve) => (allKnown = resolve)), this.failed]);
        this.checkAbort();
      }
      this.checkUnchangedWhileRead(fd, st, abs);
      return blocks;
    } finally {
      fsSync.closeSync(fd);
    }
  }

  /**
   * A file written to while it was read may be stored as a prefix or a mix of
   * old and new bytes: what was read is kept (it is all there is), but the
   * backup says so and ends with exit 3.
   */
  private checkUnchangedWhileRead(fd: number, before: fsSync.BigIntStats, abs: string): void {
    const after = fsSync.fstatSync(fd, { bigint: true });
    if (after.size !== before.size || after.mtimeNs !== before.mtimeNs || after.ctimeNs !== before.ctimeNs) {
      this.warn(`${abs} changed while it was read: the stored copy may mix old and new contents; back it up again`, true);
    }
  }

  /** Ids a block and, if the repository lacks it, has it sealed and packed. */
  private async storeChunk(chunk: Buffer, id: Buffer = this.repo.keyring.blockId(chunk)): Promise<Buffer> {
    if (this.packer.has(id)) {
      this.r.blocksReused++;
      return id;
    }
    this.r.blocksNew++;
    this.packer.markPending(id);
    await this.room();
    const size = chunk.length;
    this.track(this.pool!.seal(id, chunk, 'data', (_id, sealed) => this.packer.add(id, 'data', sealed, size)));
    return id;
  }

  /** Has a worker compress and seal a blob whose id is known, unless stored; returns once it is on its way. */
  private async storeSealedElsewhere(id: Buffer, kind: BlobKind, plain: Buffer): Promise<void> {
    if (this.packer.has(id)) return;
    this.packer.markPending(id);
    await this.room();
    this.track(this.pool!.seal(id, plain, kind, (_id, sealed) => this.packer.add(id, kind, sealed, plain.length)));
  }

  /**
   * Has a worker id, compress and seal a block, which is stored unless the
   * repository (or this run) already has it. Returns once the block is on
   * its way; its id comes later, with the worker's answer.
   */
  private async storeNewChunk(chunk: Buffer, onId: (id: Buffer) => void): Promise<void> {
    await this.room();
    const size = chunk.length;
    this.track(
      this.pool!.seal(null, chunk, 'data', async (blockId, sealed) => {
        onId(blockId);
        if (this.packer.has(blockId)) {
          this.r.blocksReused++;
          return;
        }
        this.r.blocksNew++;
        this.packer.markPending(blockId);
        await this.packer.add(blockId, 'data', sealed, size);
      }),
    );
  }

  /** Waits until a block may go to the workers: a slot in flight is free, and no new dictionary is being stored. */
  private async room(): Promise<void> {
    while (this.inFlight.size >= MAX_IN_FLIGHT) await Promise.race(this.inFlight);
    if (this.dictionaryStored) await this.dictionaryStored;
    this.checkAbort();
  }

  private track(work: Promise<void>): void {
    const task: Promise<void> = work
      .catch((e: unknown) => {
        this.failure ??= e;
        this.signalFailure();
      })
      .finally(() => this.inFlight.delete(task));
    this.inFlight.add(task);
  }

  private async drain(): Promise<void> {
    while (this.inFlight.size > 0) await Promise.race(this.inFlight);
    if (this.failure) throw this.failure;
  }
}

function metadata(name: string, type: TreeEntry['type'], st: EntryStat): TreeEntry {
  return {
    name,
    type,
    mode: Number(st.mode),
    uid: Number(st.uid),
    gid: Number(st.gid),
    mtimeNs: st.mtimeNs.toString(),
    ctimeNs: st.ctimeNs.toString(),
    ino: st.ino.toString(),
    size: type === 'file' ? Number(st.size) : 0,
  };
}

function compareNames(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** The first directory above `abs` that is a symlink, if any. */
async function symlinkOnTheWay(abs: string): Promise<{ link: string; target: string } | undefined> {
  const parts = abs.split('/').filter(Boolean);
  let at = '';
  for (const name of parts.slice(0, -1)) {
    at += `/${name}`;
    if ((await fs.lstat(at)).isSymbolicLink()) return { link: at, target: await fs.readlink(at) };
  }
  return undefined;
}

/** Absolute, normalised, without paths already inside another source. */
function normalizeSources(paths: readonly string[]): string[] {
  const abs = [...new Set(paths.map((p) => path.resolve(p)))].sort();
  return abs.filter((p) => !abs.some((q) => q !== p && (q === '/' || p.startsWith(q + '/'))));
}

function buildPlan(sources: readonly string[]): PlanNode {
  const root: PlanNode = { children: new Map(), source: false };
  for (const s of sources) {
    let node = root;
    if (s === '/') {
      root.source = true;
      continue;
    }
    for (const part of s.split('/').filter(Boolean)) {
      let next = node.children.get(part);
      if (!next) node.children.set(part, (next = { children: new Map(), source: false }));
      node = next;
    }
    node.source = true;
  }
  return root;
}

function describe(e: unknown): string {
  const code = (e as NodeJS.ErrnoException).code;
  if (code === 'ENOENT') return 'no such file or directory (vanished?)';
  if (code === 'EACCES' || code === 'EPERM') return 'permission denied';
  if (code === 'ELOOP') return 'is a symlink now';
  return (e as Error).message;
}

const ENTRY_FIELDS = ['name', 'type', 'mode', 'uid', 'gid', 'mtimeNs', 'ctimeNs', 'ino', 'size', 'tree', 'target'] as const;

/** Whether two tree entries say the same thing (the parent's tree can then be reused). */
function sameEntry(a: TreeEntry, b: TreeEntry): boolean {
  return ENTRY_FIELDS.every((k) => a[k] === b[k]);
}

/** A file whose presence leaves its directory out (--exclude-if-present, --exclude-caches). */
interface Marker {
  name: string;
  /** What the file must start with, if anything. */
  header?: Buffer;
}

/** The marker of a cache directory (https://bford.info/cachedir/). */
export const CACHEDIR_TAG = 'CACHEDIR.TAG:Signature: 8a477f597d28d172789f06886806bc55';

function parseMarker(spec: string): Marker {
  const colon = spec.indexOf(':');
  const name = colon < 0 ? spec : spec.slice(0, colon);
  if (name === '' || name.includes('/')) throw usageError(`--exclude-if-present needs a file name (NAME or NAME:TEXT), not "${spec}"`);
  return colon < 0 ? { name } : { name, header: Buffer.from(spec.slice(colon + 1)) };
}

/** Whether the marker file is there (a regular file) and starts as it must. */
function hasMarker(file: string, m: Marker): boolean {
  let fd: number | undefined;
  try {
    fd = fsSync.openSync(osPath(file), constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
    if (!fsSync.fstatSync(fd).isFile()) return false;
    if (!m.header) return true;
    const head = Buffer.alloc(m.header.length);
    return fsSync.readSync(fd, head, 0, head.length, 0) === head.length && head.equals(m.header);
  } catch {
    return false;
  } finally {
    if (fd !== undefined) fsSync.closeSync(fd);
  }
}

function deviceOf(dir: string): bigint | undefined {
  try {
    return fsSync.lstatSync(osPath(dir), { bigint: true }).dev;
  } catch {
    return undefined;
  }
}
