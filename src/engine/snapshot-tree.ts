/**
 * A snapshot's files as they were: the one way in for every reader of a
 * point in time (cat, ls, toc and restore; a mount, a web UI, readers of
 * items inside files). A front end imports this module and nothing else of
 * the engine. It works the same on a directory and through `strata serve`;
 * names and stats come from the snapshot's sealed trees (engine/tree.ts),
 * and every byte it hands out is checked against the sealed TOCs
 * (engine/verify.ts) before it goes out, as any read is.
 *
 * Paths are absolute paths in the snapshot, as backup stored them. A name
 * that is not UTF-8 holds its odd bytes as lone surrogates (util/names.ts).
 */
import * as path from 'node:path';
import { Readable } from 'node:stream';
import { integrity, notFound, rangeNotSatisfiable, StrataError, usageError } from '../errors.js';
import type { TocRow } from '../catalog/catalog.js';
import type { Piece } from '../catalog/resolve.js';
import { referenceBlocks, type TocEntry } from '../catalog/toc.js';
import type { Repository } from '../repo/repository.js';
import { resolveRange, type RangeSpec } from '../util/range.js';
import { parseWhen, type When } from '../util/when.js';
import { decodedCache, DEFAULT_DECODED_CACHE_BYTES, type DecodedCacheStats } from './decoded-cache.js';
import { openEntry, planRead, readRange, storedVersion } from './read.js';

/** Absolute form of a path given on a command line (relative to the working directory, like backup). */
export { absolutePath } from './read.js';
import { findSnapshot, listSnapshots, Snapshot, type SnapshotMeta } from './snapshot.js';
import { isOrdered, type EntryType, type Tree, type TreeEntry } from './tree.js';
import type { XattrList } from '../util/xattrs.js';
import { missingFrom, type Range } from './diff.js';
import { checkTocRows, IN_ENTRY, verifiedPieces, verifier, type BoundVersion, type SourcedPiece } from './verify.js';
import type { DatasetType } from './datasets.js';
import { manifestEntries, type DatasetEntry } from './manifest.js';
import { ItemIndex } from './item-index.js';
import { followCatalog } from './rebuild.js';

export type { EntryType, DecodedCacheStats, Range, RangeSpec, When, XattrList };
export { isSpecial, TYPE_NAMES } from './tree.js';
export { DEFAULT_DECODED_CACHE_BYTES };

/** Which snapshot a tree shows; by default the latest. */
export interface TreeSelector {
  /** "latest", a snapshot id or prefix, a time (ms since the epoch, or a Date), or WHEN as `--at` takes it (util/when.ts). */
  at?: When | string | number | Date;
  /** Only snapshots of this host. */
  host?: string;
  /** For "latest" and a time: the newest snapshot whose stored paths cover all of these. */
  covering?: string | readonly string[];
}

let rawOf!: (e: Entry, snapshot: Snapshot) => TreeEntry | undefined;

/** A file, directory, symlink, FIFO or device node of a snapshot, with its stats as stored. */
export class Entry {
  readonly #raw: TreeEntry;
  readonly #snapshot: Snapshot;

  static {
    // An entry is taken as it is only by the snapshot it came from: another one looks its path up again.
    rawOf = (e, snapshot) => (e.#snapshot === snapshot ? e.#raw : undefined);
  }

  /** Made by SnapshotTree; `path` is absolute, in the snapshot. */
  constructor(
    readonly path: string,
    raw: TreeEntry,
    snapshot: Snapshot,
  ) {
    this.#raw = raw;
    this.#snapshot = snapshot;
  }

  get name(): string {
    return this.#raw.name;
  }

  get type(): EntryType {
    return this.#raw.type;
  }

  /** A file's length in bytes (a directory's or symlink's as lstat gave it). */
  get size(): number {
    return this.#raw.size;
  }

  /** st_mode as stored: the type and permission bits. */
  get mode(): number {
    return this.#raw.mode;
  }

  get uid(): number {
    return this.#raw.uid;
  }

  get gid(): number {
    return this.#raw.gid;
  }

  /** Modification time in nanoseconds since the epoch (exact). */
  get mtimeNs(): bigint {
    return BigInt(this.#raw.mtimeNs);
  }

  /** Modification time, to the millisecond. */
  get mtime(): Date {
    return new Date(Number(this.mtimeNs / 1_000_000n));
  }

  /**
   * For a file that had other names (hard links) when backed up: what its
   * names share, so that restore makes them one file again. Undefined for a
   * file of one name.
   */
  get linkGroup(): string | undefined {
    const r = this.#raw;
    return r.type === 'file' && r.links !== undefined && r.dev !== undefined ? `${r.dev}:${r.ino}` : undefined;
  }

  /** A symlink's target; undefined for anything else. */
  get target(): string | undefined {
    return this.#raw.type === 'symlink' ? this.#raw.target : undefined;
  }

  /** A character or block device's number (st_rdev); undefined for anything else. */
  get rdev(): bigint | undefined {
    const r = this.#raw;
    return (r.type === 'chardev' || r.type === 'blockdev') && r.rdev !== undefined ? BigInt(r.rdev) : undefined;
  }

  /** Extended attributes as stored, [name, value] in name order (none when the backup kept none). */
  get xattrs(): XattrList {
    return (this.#raw.xattrs ?? []).map(([name, value]) => [name, Buffer.from(value, 'base64')]);
  }
}

/** One path in one snapshot of its history (see SnapshotTree.history). */
export interface HistoryItem {
  /** The snapshot's full id: SnapshotTree.open takes it as `at`. */
  snapshot: string;
  /** The snapshot's time, ms since the epoch. */
  time: number;
  entry: Entry;
  type: EntryType;
  size: number;
  /**
   * False when the snapshot before it (of the same host, holding the path)
   * had the same content there: for a file, the same checked version.
   */
  changed: boolean;
}

/** One line of a version's TOC as `strata toc` shows it. */
export type TocLine =
  | { start: number; end: number; kind: 'data'; block: string; size: number }
  | { start: number; end: number; kind: 'ref'; target: { snapshot: string; start: number; end: number }; offset: number };

export interface TocView {
  path: string;
  snapshot: string;
  size: number;
  /** The earlier snapshot whose version this is, when the file was unchanged since. */
  since?: string;
  entries: TocLine[];
}

/** A run of a version's bytes that one snapshot wrote (see VersionFile.blame). */
export interface BlameSpan {
  start: number;
  end: number;
  /** The snapshot whose data entry holds these bytes: the last to change them. */
  snapshot: string;
}

/** What two versions of a file hold that the other lacks, as inclusive byte ranges (see VersionFile.compare). */
export interface VersionChanges {
  /** Bytes of the newer version the older one lacks (the newer one's offsets). */
  added: Range[];
  /** Bytes of the older version the newer one lacks (the older one's offsets). */
  removed: Range[];
}

export interface StreamOptions {
  /**
   * Keep the blocks read in the process's cache (default: for ranges up to
   * 1 MiB). A long stream reads each block once, and would push out what
   * small reads come back to.
   */
  cache?: boolean;
  /**
   * Chunks may be views of cached blocks, for a caller that only writes them
   * out and never changes them (default: each chunk is the caller's own).
   */
  shared?: boolean;
}

/** A snapshot's files as they were. */
export class SnapshotTree {
  private constructor(
    readonly repo: Repository,
    private readonly snapshot: Snapshot,
  ) {}

  /** The snapshot `selector` names (not found: a StrataError with code not_found). */
  static async open(repo: Repository, selector: TreeSelector = {}): Promise<SnapshotTree> {
    return new SnapshotTree(repo, await findSnapshot(repo, whenOf(selector.at), selector.covering, selector.host));
  }

  /**
   * Every snapshot of the repository (of one host, with `host`), oldest
   * first. Trees in `reuse` whose snapshots are still there, with the same
   * sealed metadata (tags change it), are given back as they are: a caller
   * that asks again and again (a mount following the repository) opens only
   * what is new. With `follow`, a repository in a bucket first brings its
   * catalog cache up to date with what other clients stored there.
   */
  static async all(repo: Repository, opts: { host?: string; reuse?: readonly SnapshotTree[]; follow?: boolean } = {}): Promise<SnapshotTree[]> {
    // A repository in a bucket, followed: its catalog here is a cache, brought up to date from the bucket first.
    if (opts.follow) await followCatalog(repo);
    const known = new Map((opts.reuse ?? []).filter((t) => t.repo === repo).map((t) => [t.id, t]));
    const out: SnapshotTree[] = [];
    for (const row of await repo.service.snapshots()) {
      const old = known.get(row.id);
      // A cache rebuilt from the bucket numbers its snapshots anew: a tree of the old number is made again.
      const tree = old && old.snapshot.row.seq === row.seq && old.snapshot.row.meta.equals(row.meta) ? old : new SnapshotTree(repo, new Snapshot(repo, row));
      if (!opts.host || tree.host === opts.host) out.push(tree);
    }
    return out;
  }

  /**
   * Up to `limit` snapshots, newest first, from the `offset`-th, and how
   * many there are: the catalog gives the page's rows alone, and only their
   * sealed metadata is opened (a timeline of 100,000 snapshots costs a page).
   */
  static async page(repo: Repository, offset: number, limit: number): Promise<{ total: number; trees: SnapshotTree[] }> {
    if (!isCount(offset) || !Number.isSafeInteger(limit) || limit < 1) throw usageError(`no page of ${limit} snapshots from ${offset}`);
    const { total, rows } = await repo.service.snapshotPage(offset, limit);
    return { total, trees: rows.map((row) => new SnapshotTree(repo, new Snapshot(repo, row))) };
  }

  /**
   * The snapshots of these full ids that are still in the repository, each
   * with its place in the list oldest first (0: the oldest), as all() would
   * give it: a page that colours by snapshot opens only those it shows.
   */
  static async numbered(repo: Repository, ids: readonly string[]): Promise<{ tree: SnapshotTree; position: number }[]> {
    const found = await repo.service.snapshotPositions([...new Set(ids)]);
    return found.map(({ row, position }) => ({ tree: new SnapshotTree(repo, new Snapshot(repo, row)), position }));
  }

  /** The tree of a snapshot the engine already holds. */
  static of(snapshot: Snapshot): SnapshotTree {
    return new SnapshotTree(snapshot.repo, snapshot);
  }

  /** The snapshot's full id. */
  get id(): string {
    return this.snapshot.id;
  }

  /** The snapshot's time, ms since the epoch. */
  get time(): number {
    return this.snapshot.time;
  }

  get host(): string {
    return this.snapshot.meta.host;
  }

  get tags(): readonly string[] {
    return this.snapshot.meta.tags;
  }

  /** The absolute paths the backup was given. */
  get paths(): readonly string[] {
    return this.snapshot.meta.paths;
  }

  /**
   * The snapshot's manifest: the datasets it holds (mailboxes, archives,
   * databases, disk images), told by content at backup, in path order.
   * Only paths the snapshot has as files are listed.
   */
  async datasets(opts: { type?: DatasetType } = {}): Promise<DatasetEntry[]> {
    const out: DatasetEntry[] = [];
    for (const e of manifestEntries(this.snapshot.meta.datasets)) {
      if (opts.type && e.type !== opts.type) continue;
      if ((await this.snapshot.lookup(e.path))?.type === 'file') out.push(e);
    }
    return out;
  }

  /** What the manifest says `file` is (told from its content at backup), when it names this path at this size. */
  datasetOf(file: VersionFile): DatasetEntry | undefined {
    const e = this.manifestEntry(file.path);
    return e?.size === file.size ? e : undefined;
  }

  private manifestEntry(path: string): DatasetEntry | undefined {
    return manifestEntries(this.snapshot.meta.datasets).find((d) => d.path === path);
  }

  /**
   * The sealed item index the backup made of a mailbox or tar archive (the
   * manifest names it), checked to be of this version of the file; undefined
   * when it has none (an older snapshot, a file that changed as it was read).
   */
  async itemIndex(file: VersionFile): Promise<ItemIndex | undefined> {
    const e = this.manifestEntry(file.path);
    if (!e?.index || (e.type !== 'mbox' && e.type !== 'tar')) return undefined;
    return ItemIndex.open((id) => this.repo.readBlob(id, 'tree'), e.index, { path: file.path, size: file.size, type: e.type, what: e.what });
  }

  /** The backup's totals (absent in snapshots made before they were kept). */
  get stats(): SnapshotMeta['stats'] {
    return this.snapshot.meta.stats;
  }

  /** The entry at `p`, or undefined when the snapshot has none there. */
  async lookup(p: string): Promise<Entry | undefined> {
    const abs = normal(p);
    const raw = await this.snapshot.lookup(abs);
    return raw && new Entry(abs, raw, this.snapshot);
  }

  /** The entry at `p`; not there is an error (code not_found). */
  async stat(p: string): Promise<Entry> {
    const e = await this.lookup(p);
    if (!e) throw notFound(`${normal(p)} is not in snapshot ${this.id.slice(0, 8)}`);
    return e;
  }

  /** A directory's entries, in name order. */
  async list(dir: string | Entry): Promise<Entry[]> {
    const { at, tree } = await this.directory(dir);
    return tree.entries.map((e) => new Entry(child(at, e.name), e, this.snapshot));
  }

  /**
   * Up to `limit` entries of a directory, in name order, from the first
   * name after `after` (from the start without one). `next`, present while
   * more follow, is the `after` of the next page.
   */
  async page(dir: string | Entry, after: string | undefined, limit: number): Promise<{ entries: Entry[]; next?: string }> {
    if (!Number.isSafeInteger(limit) || limit < 1) throw usageError(`a page holds at least one entry (asked for ${limit})`);
    const { at, tree } = await this.directory(dir);
    // Trees strata writes are in name order; any other is sorted, so pages never repeat or skip a name.
    const all = isOrdered(tree) ? tree.entries : [...tree.entries].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    const from = after === undefined ? 0 : firstAfter(all, after);
    const entries = all.slice(from, from + limit).map((e) => new Entry(child(at, e.name), e, this.snapshot));
    return from + limit < all.length ? { entries, next: entries[entries.length - 1]!.name } : { entries };
  }

  /**
   * Everything below a directory (not the directory itself), depth first,
   * each directory's entries in name order before any of their subtrees.
   * `descend`, asked once the caller has seen all of a directory's entries,
   * can keep the walk out of a subdirectory.
   */
  async *walk(dir: string | Entry, opts: { descend?: (dir: Entry) => boolean } = {}): AsyncGenerator<Entry> {
    const top = await this.directory(dir);
    const stack: { at: string; tree: Tree | string }[] = [top];
    while (stack.length > 0) {
      const d = stack.pop()!;
      const tree = typeof d.tree === 'string' ? await this.snapshot.tree(d.tree) : d.tree;
      const subdirs: { at: string; tree: string; entry: Entry }[] = [];
      for (const e of tree.entries) {
        const c = new Entry(child(d.at, e.name), e, this.snapshot);
        yield c;
        if (e.type === 'dir' && e.tree) subdirs.push({ at: c.path, tree: e.tree, entry: c });
      }
      for (let i = subdirs.length - 1; i >= 0; i--) if (!opts.descend || opts.descend(subdirs[i]!.entry)) stack.push(subdirs[i]!);
    }
  }

  /**
   * The path in every snapshot of this tree's host that holds it, oldest
   * first (later snapshots than this one too). A file's content is told
   * apart by its checked version, so a touched but unchanged file is not
   * `changed`, and one deleted and made again is.
   */
  async history(p: string): Promise<HistoryItem[]> {
    const abs = normal(p);
    const out: HistoryItem[] = [];
    let before: string | undefined;
    for (const s of await listSnapshots(this.repo)) {
      if (s.meta.host !== this.host || !s.covers(abs)) continue;
      const raw = await s.lookup(abs);
      if (!raw) {
        before = undefined;
        continue;
      }
      const content = await contentOf(s, abs, raw);
      out.push({ snapshot: s.id, time: s.time, entry: new Entry(abs, raw, s), type: raw.type, size: raw.size, changed: content !== before });
      before = content;
    }
    return out;
  }

  /** A file's content as it was; a directory or symlink is an error (codes is_directory, not_file). */
  async open(file: string | Entry): Promise<VersionFile> {
    const { at, raw } = await this.entry(file);
    const f = await openEntry(this.snapshot, at, raw);
    return new VersionFile(this.repo, this.snapshot, f.path, f.version);
  }

  /** The tree entry of a path, or of an entry: as it is if it came from this snapshot, else looked up here. */
  private async entry(e: string | Entry): Promise<{ at: string; raw: TreeEntry }> {
    const mine = typeof e === 'string' ? undefined : rawOf(e, this.snapshot);
    if (mine) return { at: (e as Entry).path, raw: mine };
    const found = await this.stat(typeof e === 'string' ? e : e.path);
    return { at: found.path, raw: rawOf(found, this.snapshot)! };
  }

  private async directory(dir: string | Entry): Promise<{ at: string; tree: Tree }> {
    const { at, raw } = await this.entry(dir);
    if (raw.type !== 'dir' || !raw.tree) throw new StrataError('not_directory', `${at} is not a directory`);
    return { at, tree: await this.snapshot.tree(raw.tree) };
  }
}

/** Bytes of a file whose checked pieces are fetched, kept and found together: one question to a server. */
const WINDOW = 4 * 1024 * 1024;
/** What a kept piece costs, about (the object and its block id). */
const PIECE_BYTES = 160;
/** Streams up to this long keep their blocks by default (see StreamOptions.cache). */
const STREAM_KEPT = 1024 * 1024;

/** One version of a file, read at any offset; every byte checked against the sealed TOCs. */
export class VersionFile {
  /**
   * Bytes of the distinct blocks this file's reads were given, from the
   * repository or the process's cache of decoded blocks: each block whole,
   * once (what the item readers report as `fetched`).
   */
  blockBytes = 0;
  /**
   * Whether blockBytes is kept (an item reader reports it). Off by default:
   * the set of blocks seen grows with every block read, 131,072 ids for a
   * 4 GiB file read through a mount.
   */
  countBlocks = false;
  private readonly blocksSeen = new Set<string>();
  /** A server's read plan: the first pieces of the range it was made for. */
  private primed?: { start: number; end: number; first: { pieces: Piece[]; next: number | null } };

  /** Made by SnapshotTree.open and openFileAt. */
  constructor(
    private readonly repo: Repository,
    private readonly snapshot: Snapshot,
    readonly path: string,
    /** The catalog's version, checked against the sealed TOCs (for the engine: restore hands it to its workers). */
    readonly version: BoundVersion,
  ) {}

  get size(): number {
    return this.version.size;
  }

  /**
   * Exactly `length` bytes from `offset`, a buffer of the caller's own. A
   * read past the end is an error (code range_not_satisfiable), never a
   * short buffer; a read of 0 bytes at or before the end is an empty one.
   */
  async readAt(offset: number, length: number): Promise<Buffer> {
    if (!isCount(offset) || !isCount(length)) throw usageError(`${this.path}: a read needs a whole offset and length, not ${offset} and ${length}`);
    if (offset + length > this.size) {
      throw rangeNotSatisfiable(`${this.path}: ${length} bytes at ${offset} are past the end of the file (${this.size} bytes)`);
    }
    const out = Buffer.allocUnsafe(length);
    if (length === 0) return out;
    const end = offset + length - 1;
    const read = this.counted(readBlock(this.repo, true));
    // A block two pieces share is asked for once.
    const asked = new Map<string, Promise<Buffer>>();
    const block = (id: Buffer) => {
      const key = id.toString('hex');
      let b = asked.get(key);
      if (!b) asked.set(key, (b = read(id)));
      return b;
    };
    const copies: Promise<void>[] = [];
    const { keyring } = this.repo;
    for await (const p of this.piecesOf(offset, end)) {
      const from = Math.max(offset, p.at);
      const to = Math.min(end, p.at + p.length - 1);
      // An item reader's block of zeros (a disk image's free space) is known by its id alone: nothing is
      // fetched. (Checked only there: its id costs about 10 µs per block size, as much as the fetch of a
      // block of zeros, which seals to a few dozen bytes, saves a mount's reads.)
      if (this.countBlocks && keyring.isZeroBlock(p.block, p.blockSize)) {
        out.fill(0, from - offset, to - offset + 1);
        continue;
      }
      // Blocks of one read are fetched together: a server gets them at once.
      copies.push(
        block(p.block).then((b) => {
          if (b.length !== p.blockSize) throw integrity(`block ${p.block.toString('hex').slice(0, 16)} is ${b.length} bytes, its TOC entry says ${p.blockSize}`);
          b.copy(out, from - offset, p.from + (from - p.at), p.from + (to - p.at) + 1);
        }),
      );
    }
    await Promise.all(copies);
    return out;
  }

  /**
   * The bytes of [start, end] (inclusive; by default the whole file), a
   * block's piece at a time: never the whole range at once.
   */
  async *stream(start = 0, end = this.size - 1, opts: StreamOptions = {}): AsyncGenerator<Buffer> {
    if (!isCount(start) || !Number.isSafeInteger(end) || end < start - 1) throw usageError(`${this.path}: no byte range ${start}-${end}`);
    if (end >= this.size) throw rangeNotSatisfiable(`${this.path}: bytes ${start}-${end} are past the end of the file (${this.size} bytes)`);
    const planned = this.primed?.start === start && this.primed.end === end ? this.primed.first : undefined;
    this.primed = undefined;
    if (end < start) return;
    const blocks = this.counted(readBlock(this.repo, opts.cache ?? end - start < STREAM_KEPT));
    for await (const piece of readRange(this.repo, this.version, start, end, planned, blocks)) yield opts.shared ? piece : Buffer.from(piece);
  }

  /** stream() as a Node stream of bytes. */
  readable(start = 0, end = this.size - 1, opts: StreamOptions = {}): Readable {
    return Readable.from(this.stream(start, end, opts), { objectMode: false });
  }

  /**
   * The version's TOC as `strata toc` shows it: the catalog's rows with
   * split ones joined, shown only once they agree with the sealed TOCs.
   * With `blocks`, one reference block per unchanged block of the target.
   */
  async toc(opts: { blocks?: boolean } = {}): Promise<TocView> {
    const { repo } = this;
    // A version read from its entry alone has no catalog rows in hand: the TOC shows the catalog's, checked.
    const version = this.version.id === IN_ENTRY ? await this.catalogVersion() : this.version;
    const rows = coalesce(await repo.service.toc(version.id));
    await checkTocRows(repo, version, rows);
    const target = rows.find((r) => r.target !== null)?.target ?? null;
    const targetVersion = target !== null ? await repo.service.versionById(target) : undefined;
    if (target !== null && !targetVersion) throw integrity(`TOC of ${this.path} points at a missing version`);
    const targetSnap = targetVersion ? ((await repo.service.snapshotBySeq(targetVersion.snapshot))?.id ?? '?') : null;
    let entries: TocEntry[] = rows.map(toEntry);
    if (opts.blocks && targetVersion) entries = referenceBlocks(entries, await repo.service.blockList(targetVersion.id, targetVersion.size));
    const lines: TocLine[] = entries.map((e) =>
      e.kind === 'data'
        ? { start: e.start, end: e.end, kind: 'data' as const, block: e.block.toString('hex'), size: e.end - e.start + 1 }
        : { start: e.start, end: e.end, kind: 'ref' as const, target: { snapshot: targetSnap!, start: e.targetStart, end: e.targetEnd }, offset: e.start - e.targetStart },
    );
    // A file unchanged since an earlier snapshot has that snapshot's version. A server's table of a
    // snapshot's versions gives each the snapshot asked about: the version's own row says whose it is.
    const seq = this.snapshot.row.seq;
    const owner = version.snapshot !== seq ? version.snapshot : ((await repo.service.versionById(version.id))?.snapshot ?? seq);
    const since = owner === seq ? undefined : (await repo.service.snapshotBySeq(owner))?.id;
    return { path: this.path, snapshot: this.snapshot.id, size: version.size, ...(since ? { since } : {}), entries: lines };
  }

  /** The catalog's version of this file, for a version read from its entry alone. */
  private async catalogVersion(): Promise<BoundVersion> {
    const entry = await this.snapshot.lookup(this.path);
    if (!entry) throw integrity(`${this.path} is no longer in snapshot ${this.snapshot.id.slice(0, 8)}`);
    return storedVersion(this.snapshot, this.path, entry);
  }

  /**
   * Which snapshot last changed each part of [start, end] (inclusive): the
   * version's reference blocks are followed back through the sealed TOCs,
   * a reference to a reference too (the seed's FIG. 7), to the data entries
   * that hold the bytes; the snapshot whose TOC holds a data entry wrote
   * those bytes. Adjacent parts of one snapshot are one span. No block is read.
   */
  async blame(start = 0, end = this.size - 1): Promise<BlameSpan[]> {
    if (!isCount(start) || !Number.isSafeInteger(end) || end < start - 1) throw usageError(`${this.path}: no byte range ${start}-${end}`);
    if (end >= this.size) throw rangeNotSatisfiable(`${this.path}: bytes ${start}-${end} are past the end of the file (${this.size} bytes)`);
    const out: BlameSpan[] = [];
    for await (const p of this.sourced(start, end)) {
      const snapshot = p.owner ?? this.snapshot.id;
      const last = out[out.length - 1];
      if (last && last.snapshot === snapshot && last.end + 1 === p.at) last.end = p.at + p.length - 1;
      else out.push({ start: p.at, end: p.at + p.length - 1, snapshot });
    }
    return out;
  }

  /**
   * The bytes this version and `other` (another version of the file, or of
   * any file) do not share, from their sealed TOCs alone: a byte is shared
   * when the other holds the same byte of the same block anywhere, so bytes
   * moved by an insertion are not changes. As fine as the blocks.
   */
  async compare(other: VersionFile): Promise<VersionChanges> {
    const [mine, theirs] = await Promise.all([this.allPieces(), other.allPieces()]);
    return { added: missingFrom(mine, theirs), removed: missingFrom(theirs, mine) };
  }

  private async allPieces(): Promise<SourcedPiece[]> {
    const out: SourcedPiece[] = [];
    if (this.size > 0) for await (const p of this.sourced(0, this.size - 1)) out.push(p);
    return out;
  }

  private sourced(start: number, end: number): AsyncGenerator<SourcedPiece> {
    return verifier(this.repo).expected(this.version.bound, start, end);
  }

  private counted(read: (id: Buffer) => Promise<Buffer>): (id: Buffer) => Promise<Buffer> {
    if (!this.countBlocks) return read;
    return (id) =>
      read(id).then((b) => {
        const key = id.toString('hex');
        if (!this.blocksSeen.has(key)) {
          this.blocksSeen.add(key);
          this.blockBytes += b.length;
        }
        return b;
      });
  }

  /** Engine use: the first pieces a server's read plan brought for [start, end]. */
  prime(start: number, end: number, first: { pieces: Piece[]; next: number | null }): void {
    this.primed = { start, end, first };
  }

  /** The checked pieces that hold bytes of [start, end]: from the windows that hold them, when the cache keeps windows. */
  private async *piecesOf(start: number, end: number): AsyncGenerator<Piece> {
    const { repo, version } = this;
    const sealed = version.bound.truth.id;
    // Over a server, the sealed TOCs alone say where the bytes are: asking the server's catalog for the same pieces (to check them against those TOCs) would cost a window of them per place read.
    if (repo.remote) {
      yield* verifier(repo).expected(version.bound, start, end);
      return;
    }
    if (!sealed || !decodedCache.keeps(64 + PIECE_BYTES)) {
      yield* verifiedPieces(repo, version, start, end, repo.service.pieces(version.id, start, end));
      return;
    }
    for (let w = Math.floor(start / WINDOW); w <= Math.floor(end / WINDOW); w++) {
      const from = w * WINDOW;
      const to = Math.min(this.size, from + WINDOW) - 1;
      const load = async () => {
        const out: Piece[] = [];
        for await (const p of verifiedPieces(repo, version, from, to, repo.service.pieces(version.id, from, to))) out.push(p);
        return out;
      };
      // Kept by the sealed TOC they were checked against: the same pieces whatever the catalog numbers its versions.
      const pieces = await decodedCache.get(`${cacheTag(repo)} pieces ${sealed.toString('hex')} ${w}`, load, (ps) => 64 + ps.length * PIECE_BYTES);
      for (let i = pieceAt(pieces, start); i < pieces.length && pieces[i]!.at <= end; i++) yield pieces[i]!;
    }
  }
}

/**
 * A file and a byte range of it (default all of it) as `selector` names it,
 * the snapshot being the newest that covers the path. Over a server, one
 * question finds the snapshot, the version and the range's first pieces,
 * where walking the trees costs a round trip each; locally, or when the
 * server's answer could differ from the walk's, the trees are walked.
 */
export async function openFileAt(
  repo: Repository,
  absPath: string,
  selector: Omit<TreeSelector, 'covering'> = {},
  range?: RangeSpec,
): Promise<{ tree: SnapshotTree; file: VersionFile; start: number; end: number }> {
  const when = whenOf(selector.at);
  const abs = normal(absPath);
  const plan = repo.remote ? await planRead(repo, when, abs, selector.host, range) : undefined;
  if (plan) {
    const file = new VersionFile(repo, plan.snapshot, abs, plan.file.version);
    file.prime(plan.start, plan.end, plan.first);
    return { tree: SnapshotTree.of(plan.snapshot), file, start: plan.start, end: plan.end };
  }
  const tree = SnapshotTree.of(await findSnapshot(repo, when, abs, selector.host));
  const file = await tree.open(abs);
  const r = file.size === 0 && !range ? { start: 0, end: -1 } : resolveRange(range, file.size);
  return { tree, file, ...r };
}

/** Sets the bound, in bytes, of the process's cache of decoded blocks and checked pieces (0: keep nothing). */
export function setDecodedCacheBytes(bytes: number): void {
  if (!isCount(bytes)) throw usageError(`a cache size is a whole number of bytes, not ${bytes}`);
  decodedCache.setLimit(bytes);
}

export function decodedCacheStats(): DecodedCacheStats {
  return decodedCache.stats();
}

function whenOf(at: TreeSelector['at']): When {
  if (at === undefined) return { kind: 'latest' };
  if (typeof at === 'string') return parseWhen(at);
  if (typeof at === 'number') return { kind: 'time', time: at };
  if (at instanceof Date) return { kind: 'time', time: at.getTime() };
  return at;
}

/** An absolute path with `.`, `..` and repeated or trailing slashes taken out. */
function normal(p: string): string {
  if (!p.startsWith('/')) throw usageError(`${p}: paths in a snapshot are absolute`);
  return path.posix.resolve(p);
}

const child = (dir: string, name: string) => (dir === '/' ? `/${name}` : `${dir}/${name}`);

const isCount = (n: number) => Number.isSafeInteger(n) && n >= 0;

/** The index of the first entry named after `name` (entries in name order). */
function firstAfter(entries: readonly TreeEntry[], name: string): number {
  let lo = 0;
  let hi = entries.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (entries[mid]!.name <= name) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** The index of the piece holding byte `at`, or of the first after it (pieces in order). */
function pieceAt(pieces: readonly Piece[], at: number): number {
  let lo = 0;
  let hi = pieces.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    const p = pieces[mid]!;
    if (p.at + p.length <= at) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** What tells one content from another at a path: for a file, its checked version's sealed TOC. */
async function contentOf(s: Snapshot, abs: string, raw: TreeEntry): Promise<string> {
  if (raw.type === 'dir') return `dir ${raw.tree}`;
  if (raw.type === 'symlink') return `symlink ${raw.target}`;
  if (raw.type !== 'file') return `${raw.type} ${raw.rdev ?? ''}`;
  const v = await storedVersion(s, abs, raw);
  // A file of one block is named by it (format 3: no sealed TOC); any other by its sealed TOC.
  return raw.block ? `block ${raw.block}` : `file ${v.bound.truth.id?.toString('hex') ?? 'empty'}`;
}

const tags = new WeakMap<Repository, string>();

/** A tag of the repository's id key, in front of its cache keys: a block id means the same bytes under the same key only. */
function cacheTag(repo: Repository): string {
  let t = tags.get(repo);
  if (t === undefined) tags.set(repo, (t = repo.keyring.blockId(Buffer.from('strata decoded cache')).toString('hex', 0, 16)));
  return t;
}

/**
 * Fetches and decodes blocks through the process's cache. With `keep`, what
 * it reads is added (and reads of one block under way are shared); without,
 * the cache is only looked in.
 */
function readBlock(repo: Repository, keep: boolean): (id: Buffer) => Promise<Buffer> {
  const tag = cacheTag(repo);
  if (!keep) return (id) => Promise.resolve(decodedCache.peek<Buffer>(`${tag} block ${id.toString('hex')}`) ?? repo.readBlob(id));
  return (id) => decodedCache.get(`${tag} block ${id.toString('hex')}`, () => repo.readBlob(id), (b) => b.length);
}

/** Joins rows the catalog split to bound read depth back into the TOC's maximal runs. */
function coalesce(rows: TocRow[]): TocRow[] {
  const out: TocRow[] = [];
  for (const r of rows) {
    const last = out[out.length - 1];
    if (last && last.block === null && r.block === null && last.target === r.target && last.end + 1 === r.start && last.target_start! + (last.end - last.start + 1) === r.target_start) {
      out[out.length - 1] = { ...last, end: r.end };
    } else out.push(r);
  }
  return out;
}

function toEntry(r: TocRow): TocEntry {
  if (r.block) return { kind: 'data', start: r.start, end: r.end, block: r.block };
  return { kind: 'ref', start: r.start, end: r.end, targetStart: r.target_start!, targetEnd: r.target_start! + (r.end - r.start) };
}

/** Datasets told by content, for the manifest and the item readers (engine/datasets.ts). */
export { DATASET_TYPES, describeContent, detectDataset, HEAD_BYTES, type DatasetType, type Detected } from './datasets.js';
export type { DatasetEntry } from './manifest.js';
/** Items of mailboxes and tar archives (engine/item-scan.ts) and their sealed indexes (engine/item-index.ts). */
export { MboxScanner, plainTarName, TAR_BLOCK, TarWalk, type MboxMessage, type TarEntry } from './item-scan.js';
export type { ItemIndex } from './item-index.js';
