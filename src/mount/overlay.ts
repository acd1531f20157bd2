/**
 * The overlay of a writable mount: changes to one snapshot's tree, kept on
 * local disk in a directory of their own (under the cache directory:
 * overlays/<repository id>/<snapshot id>/) and never in the repository until
 * they are committed.
 *
 *   journal     one JSON line per change, in order: names made, removed and
 *               renamed, modes, owners, times, extended attributes, sizes,
 *               and where bytes were written. A change of names or stats is
 *               synced before it is answered; writes are synced by fsync, by
 *               close, and before a commit. The next mount of the snapshot
 *               replays it.
 *   data/<n>    a sparse file per written file: written bytes at their own
 *               offsets, nothing else (4 KiB written into a 20 GiB image
 *               stores 4 KiB). Which ranges hold bytes is the journal's.
 *   owner       the process id of the mount that holds it.
 *
 * A file reads its written ranges from its data file, the rest below the
 * smallest size it was truncated to from the snapshot, and zeros beyond.
 * Commit hands the tree to the engine as a change set (engine/commit.ts):
 * what is untouched at its own path is inherited, a changed file is stored
 * from its base's blocks and its written ranges. The overlay then goes on on
 * top of the new snapshot, empty.
 */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { StrataError } from '../errors.js';
import { commitChanges, pinSnapshot, type ChangedNode, type CommitOptions, type CommitResult, type Pin } from '../engine/commit.js';
import { isSpecial, SnapshotTree, type EntryType, type VersionFile, type XattrList } from '../engine/snapshot-tree.js';
import { OpenFiles } from './handles.js';
import { storedPath } from './names.js';
import { processAlive } from '../util/process.js';
import { isKeptXattr, XATTR_ENTRY_BYTES } from '../util/xattrs.js';

/** A file system error, by its errno name (ENOENT, EEXIST...), as FUSE answers it. */
export class FsError extends Error {
  constructor(readonly errno: string) {
    super(errno);
  }
}

const S_IFMT = 0o170000;
const XATTR_CREATE = 1;
const XATTR_REPLACE = 2;
const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;
/** The st_mode type bits of each kind of entry. */
const TYPE_BITS: Record<Kind, number> = { file: S_IFREG, dir: S_IFDIR, symlink: S_IFLNK, fifo: 0o010000, chardev: 0o020000, blockdev: 0o060000 };
/** Names libfuse gives files removed while open: never committed. */
const HIDDEN = /^\.fuse_hidden[0-9a-f]+$/;
const JOURNAL = 'journal';
/** Data files kept open at once. */
const OPEN_DATA_FILES = 64;

/** What a node is: a file, directory, symlink, FIFO or device. */
type Kind = EntryType;

/** A file, directory, symlink, FIFO or device node of the changed tree. */
export class Node {
  /** Changed itself (its bytes, stats, or for a directory its names). */
  touched = false;
  /** A directory's entries by stored name, once looked at. */
  children?: Map<string, Node>;
  private loading?: Promise<Map<string, Node>>;
  size = 0;
  /** Below this, a byte not written is the base's; from here on, zero. */
  baseKept = 0;
  /** Written ranges [start, end), in order, apart. */
  extents: [number, number][] = [];
  /** Its data file's number, once written. */
  data?: number;
  version?: Promise<VersionFile>;
  /** Its snapshot version's reader that fetches ahead (handles.ts), while it is open. */
  stream?: number;
  target?: string;
  /** A device's number (from the snapshot). */
  rdev?: bigint;
  /** Extended attributes of the snapshot's entry it came from. */
  xattrs?: XattrList;

  constructor(
    readonly type: Kind,
    /** Its path in the snapshot below (none: made here). */
    public base: string | undefined,
    public mode: number,
    public uid: number,
    public gid: number,
    public mtimeNs: bigint,
  ) {}

  /** A directory's entries (its snapshot's, read on first use). */
  entries(tree: () => SnapshotTree): Promise<Map<string, Node>> {
    if (this.children) return Promise.resolve(this.children);
    this.loading ??= (async () => {
      const map = new Map<string, Node>();
      if (this.base !== undefined) {
        for (const e of await tree().list(this.base)) {
          const n = new Node(e.type, e.path, e.mode, e.uid, e.gid, e.mtimeNs);
          if (e.type === 'file') n.size = n.baseKept = e.size;
          if (e.type === 'symlink') n.target = e.target ?? '';
          if (e.rdev !== undefined) n.rdev = e.rdev;
          const x = e.xattrs;
          if (x.length > 0) n.xattrs = x;
          map.set(e.name, n);
        }
      }
      this.children ??= map;
      return this.children;
    })();
    return this.loading;
  }
}

/** A journal line. */
type Rec =
  | { o: 'mk'; p: string; t: Kind; mode: number; uid: number; gid: number; m: string; target?: string; d?: number; rdev?: string }
  | { o: 'rm'; p: string; dir: boolean; m: string }
  | { o: 'mv'; from: string; to: string; m: string }
  | { o: 'mode'; p: string; mode: number }
  | { o: 'own'; p: string; uid: number; gid: number }
  | { o: 'time'; p: string; m: string }
  | { o: 'cow'; p: string; d: number }
  | { o: 'w'; d: number; at: number; n: number; m: string }
  | { o: 'size'; d: number; n: number; m: string }
  | { o: 'xset'; p: string; name: string; v: string; f?: number }
  | { o: 'xrm'; p: string; name: string }
  | { o: 'committed'; snapshot: string };

interface Header {
  strata: 'overlay';
  repository: string;
  snapshot: string;
}

const now = () => BigInt(Date.now()) * 1_000_000n;
const uid = process.getuid?.() ?? 0;
const gid = process.getgid?.() ?? 0;

function names(p: string): string[] {
  return p.split('/').filter((n) => n.length > 0);
}

function join(dir: string, name: string): string {
  return dir === '/' ? `/${name}` : `${dir}/${name}`;
}


/** Adds [start, end) to sorted, apart ranges. */
export function addRange(ranges: [number, number][], start: number, end: number): void {
  let i = 0;
  while (i < ranges.length && ranges[i]![1] < start) i++;
  let j = i;
  let s = start;
  let e = end;
  while (j < ranges.length && ranges[j]![0] <= end) {
    s = Math.min(s, ranges[j]![0]);
    e = Math.max(e, ranges[j]![1]);
    j++;
  }
  ranges.splice(i, j - i, [s, e]);
}

/** Cuts ranges at `size`. */
function cutRanges(ranges: [number, number][], size: number): void {
  while (ranges.length > 0 && ranges[ranges.length - 1]![0] >= size) ranges.pop();
  const last = ranges[ranges.length - 1];
  if (last && last[1] > size) last[1] = size;
}

/** One async operation at a time: changes are journaled in the order they are made. */
class Queue {
  private tail: Promise<unknown> = Promise.resolve();

  run<T>(work: () => Promise<T>): Promise<T> {
    const next = this.tail.then(work, work);
    this.tail = next.catch(() => {});
    return next;
  }
}

export interface OverlayOpen {
  /** overlays/<repository id>: where every snapshot's overlay of this repository lives. */
  root: string;
  repository: string;
  tree: SnapshotTree;
  /** Start afresh: throw away what an earlier mount left. */
  discard?: boolean;
}

export class Overlay {
  private root!: Node;
  private journal!: fs.FileHandle;
  private readonly files = new Map<number, fs.FileHandle>();
  /** Data files made since data/ was last synced. */
  private newNames = false;
  /** Data files in use now, and by how many. */
  private readonly using = new Map<number, number>();
  /** Data files written since they were last synced. */
  private readonly unsyncedData = new Set<number>();
  private readonly byData = new Map<number, Node>();
  /** Readers of snapshot versions, for files read while open. */
  private readonly streams = new OpenFiles();
  private nextData = 1;
  /** Journal lines written since the last sync, and all lines after the header. */
  private unsynced = false;
  private records = 0;
  private readonly queue = new Queue();
  /** Changes replayed from an earlier mount. */
  resumed = 0;
  /** A snapshot an earlier mount committed these changes as (then they were not replayed). */
  committedBefore?: string;
  /** The lease that keeps the snapshot below from forget while mounted (see pin()). */
  private pinned?: Pin;

  private constructor(
    private readonly rootDir: string,
    private readonly repository: string,
    public tree: SnapshotTree,
  ) {}

  /** The overlay's directory. */
  get dir(): string {
    return path.join(this.rootDir, this.tree.id);
  }

  /** Whether the overlay holds changes. */
  get changed(): boolean {
    return this.records > 0;
  }

  /** The overlay of `tree`'s snapshot: an earlier mount's, replayed, or a new one. */
  static async open(o: OverlayOpen): Promise<Overlay> {
    const ov = new Overlay(o.root, o.repository, o.tree);
    await fs.mkdir(ov.dir, { recursive: true, mode: 0o700 });
    await ov.claim();
    try {
      if (o.discard) await ov.clear();
      await ov.load();
    } catch (e) {
      await fs.rm(path.join(ov.dir, 'owner'), { force: true });
      throw e;
    }
    return ov;
  }

  /** Takes the overlay for this process, unless a live one holds it. */
  private async claim(): Promise<void> {
    const owner = path.join(this.dir, 'owner');
    const pid = Number.parseInt(await fs.readFile(owner, 'utf8').catch(() => ''), 10);
    if (Number.isSafeInteger(pid) && pid !== process.pid && processAlive(pid)) {
      throw new StrataError('conflict', `the changes to snapshot ${this.tree.id.slice(0, 8)} (${this.dir}) are in use by process ${pid}, a writable mount: commit them there ("strata commit MOUNTPOINT") or unmount it first`);
    }
    await fs.writeFile(owner, `${process.pid}\n`);
  }

  private async clear(): Promise<void> {
    await fs.rm(path.join(this.dir, JOURNAL), { force: true });
    await fs.rm(path.join(this.dir, 'data'), { recursive: true, force: true });
  }

  private freshRoot(): Node {
    return new Node('dir', '/', S_IFDIR | 0o755, uid, gid, BigInt(this.tree.time) * 1_000_000n);
  }

  /** Replays the journal, or starts one. */
  private async load(): Promise<void> {
    this.root = this.freshRoot();
    const file = path.join(this.dir, JOURNAL);
    const text = await fs.readFile(file, 'utf8').catch((e: NodeJS.ErrnoException) => (e.code === 'ENOENT' ? undefined : Promise.reject(e)));
    const lines = text?.split('\n') ?? [];
    let header: Header | undefined;
    try {
      header = lines[0] ? (JSON.parse(lines[0]) as Header) : undefined;
    } catch {
      header = undefined;
    }
    if (text !== undefined && (header?.strata !== 'overlay' || header.snapshot !== this.tree.id || header.repository !== this.repository)) {
      throw new StrataError('format', `${file} is not the journal of snapshot ${this.tree.id.slice(0, 8)}'s changes; move it away to start afresh`);
    }
    const recs: Rec[] = [];
    for (let i = 1; i < lines.length; i++) {
      if (lines[i] === '') continue;
      try {
        recs.push(JSON.parse(lines[i]!) as Rec);
      } catch {
        // The last line cut short by a crash: it was never synced, so never answered as done.
        // It goes, so that the lines appended from now on start on a line of their own.
        if (i >= lines.length - 2) {
          await fs.truncate(file, Buffer.byteLength(`${lines.slice(0, i).join('\n')}\n`));
          break;
        }
        throw new StrataError('format', `${file}: line ${i + 1} is damaged`);
      }
    }
    const done = recs.find((r): r is Extract<Rec, { o: 'committed' }> => r.o === 'committed');
    if (done) {
      // Committed, and the mount stopped before the overlay was cleared.
      this.committedBefore = done.snapshot;
      await this.clear();
      recs.length = 0;
    }
    await fs.mkdir(path.join(this.dir, 'data'), { recursive: true });
    for (const r of recs) {
      try {
        await this.apply(r, true);
      } catch (e) {
        if (e instanceof FsError) continue;
        throw e;
      }
    }
    this.resumed = recs.length;
    this.records = recs.length;
    if (recs.length === 0 || text === undefined || done) {
      const header: Header = { strata: 'overlay', repository: this.repository, snapshot: this.tree.id };
      await fs.writeFile(file, `${JSON.stringify(header)}\n`);
    }
    this.journal = await fs.open(file, 'a');
    await this.journal.sync();
    if (recs.length === 0) await syncDir(this.dir);
  }

  /** Appends a line to the journal; `sync`: on disk before this returns. */
  private async log(r: Rec, sync: boolean): Promise<void> {
    await this.journal.write(`${JSON.stringify(r)}\n`);
    this.records++;
    this.unsynced = true;
    if (sync) await this.syncJournal();
  }

  private async syncJournal(): Promise<void> {
    if (!this.unsynced) return;
    this.unsynced = false;
    await this.journal.datasync();
  }

  /** A change: made here and journaled (synced), one at a time. */
  private change(make: () => Rec): Promise<void> {
    return this.queue.run(async () => {
      const r = make();
      await this.apply(r, false);
      await this.log(r, true);
    });
  }

  private readonly treeOf = () => this.tree;

  /** The node at a path of the mount, or undefined. */
  lookup(p: string): Promise<Node | undefined> {
    return this.reading(() => this.lookupNow(p));
  }

  private async lookupNow(p: string): Promise<Node | undefined> {
    let n = this.root;
    for (const name of names(p)) {
      if (n.type !== 'dir') return undefined;
      const kids = await n.entries(this.treeOf);
      const next = kids.get(name) ?? kids.get(storedPath(name) ?? name);
      if (!next) return undefined;
      n = next;
    }
    return n;
  }

  private async need(p: string): Promise<Node> {
    const n = await this.lookup(p);
    if (!n) throw new FsError('ENOENT');
    return n;
  }

  /** The directory holding `p`, and the name in it. */
  private async parentOf(p: string): Promise<{ dir: Node; kids: Map<string, Node>; name: string }> {
    const parts = names(p);
    const name = parts.pop();
    if (name === undefined) throw new FsError('EBUSY');
    const dir = await this.need(`/${parts.join('/')}`);
    if (dir.type !== 'dir') throw new FsError('ENOTDIR');
    const kids = await dir.entries(this.treeOf);
    const stored = storedPath(name);
    return { dir, kids, name: stored !== undefined && kids.has(stored) ? stored : name };
  }

  /** Names of a directory as they are now. */
  list(node: Node): Promise<[string, Node][]> {
    return this.reading(() => this.listNow(node));
  }

  private async listNow(node: Node): Promise<[string, Node][]> {
    return [...(await node.entries(this.treeOf))];
  }

  private touchDir(dir: Node, m: bigint): void {
    dir.touched = true;
    dir.mtimeNs = m;
  }

  /** Makes a change in memory (`replay`: from the journal, as it was made). */
  private async apply(r: Rec, replay: boolean): Promise<void> {
    switch (r.o) {
      case 'mk': {
        const { dir, kids, name } = await this.parentOf(r.p);
        if (kids.has(name)) throw new FsError('EEXIST');
        const n = new Node(r.t, undefined, r.mode, r.uid, r.gid, BigInt(r.m));
        n.touched = true;
        if (r.t === 'dir') n.children = new Map();
        if (r.t === 'symlink') n.target = r.target ?? '';
        if (r.rdev !== undefined) n.rdev = BigInt(r.rdev);
        if (r.d !== undefined) this.adopt(n, r.d);
        kids.set(name, n);
        this.touchDir(dir, BigInt(r.m));
        return;
      }
      case 'rm': {
        const { dir, kids, name } = await this.parentOf(r.p);
        const n = kids.get(name);
        if (!n) throw new FsError('ENOENT');
        if (r.dir && n.type !== 'dir') throw new FsError('ENOTDIR');
        if (!r.dir && n.type === 'dir') throw new FsError('EISDIR');
        if (n.type === 'dir' && (await n.entries(this.treeOf)).size > 0) throw new FsError('ENOTEMPTY');
        kids.delete(name);
        this.touchDir(dir, BigInt(r.m));
        return;
      }
      case 'mv': {
        const from = await this.parentOf(r.from);
        const n = from.kids.get(from.name);
        if (!n) throw new FsError('ENOENT');
        const to = await this.parentOf(r.to);
        if (n.type === 'dir' && (r.to === r.from || r.to.startsWith(`${r.from}/`))) {
          if (r.to === r.from) return;
          throw new FsError('EINVAL');
        }
        const there = to.kids.get(to.name);
        if (there === n) return;
        if (there) {
          if (there.type === 'dir' && n.type !== 'dir') throw new FsError('EISDIR');
          if (there.type !== 'dir' && n.type === 'dir') throw new FsError('ENOTDIR');
          if (there.type === 'dir' && (await there.entries(this.treeOf)).size > 0) throw new FsError('ENOTEMPTY');
        }
        from.kids.delete(from.name);
        to.kids.set(to.name, n);
        this.touchDir(from.dir, BigInt(r.m));
        this.touchDir(to.dir, BigInt(r.m));
        return;
      }
      case 'mode': {
        const n = await this.need(r.p);
        n.mode = (n.mode & S_IFMT) | (r.mode & 0o7777);
        n.touched = true;
        return;
      }
      case 'own': {
        const n = await this.need(r.p);
        if (r.uid !== -1) n.uid = r.uid;
        if (r.gid !== -1) n.gid = r.gid;
        n.touched = true;
        return;
      }
      case 'time': {
        const n = await this.need(r.p);
        n.mtimeNs = BigInt(r.m);
        n.touched = true;
        return;
      }
      case 'xset': {
        const n = await this.need(r.p);
        const list = n.xattrs ?? [];
        const at = list.findIndex(([name]) => name === r.name);
        if (r.f === XATTR_CREATE && at >= 0) throw new FsError('EEXIST');
        if (r.f === XATTR_REPLACE && at < 0) throw new FsError('ENODATA');
        const value = Buffer.from(r.v, 'base64');
        const next: XattrList = [...list.filter(([name]) => name !== r.name), [r.name, value]];
        next.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
        // The bound a backup keeps an entry's attributes to (names and values together).
        if (next.reduce((sum, [name, v]) => sum + Buffer.byteLength(name) + v.length, 0) > XATTR_ENTRY_BYTES) throw new FsError('ENOSPC');
        n.xattrs = next;
        n.touched = true;
        return;
      }
      case 'xrm': {
        const n = await this.need(r.p);
        const list = n.xattrs ?? [];
        if (!list.some(([name]) => name === r.name)) throw new FsError('ENODATA');
        const next = list.filter(([name]) => name !== r.name);
        n.xattrs = next.length > 0 ? next : undefined;
        n.touched = true;
        return;
      }
      case 'cow': {
        const n = await this.need(r.p);
        if (n.type !== 'file') throw new FsError('EISDIR');
        if (n.data === undefined) this.adopt(n, r.d);
        return;
      }
      case 'w': {
        const n = this.byData.get(r.d);
        if (!n) return;
        addRange(n.extents, r.at, r.at + r.n);
        n.size = Math.max(n.size, r.at + r.n);
        n.mtimeNs = BigInt(r.m);
        n.touched = true;
        return;
      }
      case 'size': {
        const n = this.byData.get(r.d);
        if (!n) return;
        cutRanges(n.extents, r.n);
        n.baseKept = Math.min(n.baseKept, r.n);
        n.size = r.n;
        n.mtimeNs = BigInt(r.m);
        n.touched = true;
        if (!replay) await this.withData(r.d, (f) => f.truncate(r.n));
        return;
      }
      case 'committed':
        return;
    }
  }

  private adopt(n: Node, d: number): void {
    n.data = d;
    this.byData.set(d, n);
    this.nextData = Math.max(this.nextData, d + 1);
  }

  /** A data file, open (at most OPEN_DATA_FILES at once: a tree of many files written stays within the process's limit). */
  private async dataFile(d: number): Promise<fs.FileHandle> {
    const f = this.files.get(d);
    if (f) {
      // Most recently used last.
      this.files.delete(d);
      this.files.set(d, f);
      return f;
    }
    const where = path.join(this.dir, 'data', String(d));
    const opened: fs.FileHandle = await fs.open(where, fs.constants.O_RDWR | fs.constants.O_CREAT | fs.constants.O_EXCL, 0o600).then(
      (h) => {
        // A new name in data/: synced with the next sync, as its bytes are.
        this.newNames = true;
        return h;
      },
      (e: NodeJS.ErrnoException) => (e.code === 'EEXIST' ? fs.open(where, fs.constants.O_RDWR) : Promise.reject(e)),
    );
    this.files.set(d, opened);
    for (const [old, h] of this.files) {
      if (this.files.size <= OPEN_DATA_FILES) break;
      if (this.using.has(old)) continue;
      this.files.delete(old);
      // Closing keeps what was written (fsync through a new handle syncs it all the same).
      await h.close();
    }
    return opened;
  }

  /** Runs `work` with a data file open: it is not closed meanwhile to make room for another. */
  private async withData<T>(d: number, work: (f: fs.FileHandle) => Promise<T>): Promise<T> {
    this.using.set(d, (this.using.get(d) ?? 0) + 1);
    try {
      return await work(await this.dataFile(d));
    } finally {
      const left = this.using.get(d)! - 1;
      if (left > 0) this.using.set(d, left);
      else this.using.delete(d);
    }
  }

  /** Syncs the data files written since their last sync (of one node, or all). */
  private async syncData(n?: Node): Promise<void> {
    const which = n ? (n.data !== undefined && this.unsyncedData.has(n.data) ? [n.data] : []) : [...this.unsyncedData];
    for (const d of which) {
      await this.withData(d, (f) => f.datasync());
      this.unsyncedData.delete(d);
    }
    if (which.length > 0 && this.newNames) {
      this.newNames = false;
      await syncDir(path.join(this.dir, 'data'));
    }
  }

  /** A file's data number, given it (journaled) on its first change. */
  private async cow(p: string | undefined, n: Node): Promise<number> {
    if (n.data !== undefined) return n.data;
    if (p === undefined) throw new FsError('EIO');
    const d = this.nextData;
    await this.log({ o: 'cow', p, d }, false);
    this.adopt(n, d);
    return d;
  }

  // The operations of the mount.

  /** Makes an entry: `target` is a symlink's, `rdev` a device's number. */
  async create(p: string, mode: number, type: Kind = 'file', target?: string, rdev?: bigint): Promise<Node> {
    const kindBits = TYPE_BITS[type];
    await this.change(() => {
      const d = type === 'file' ? this.nextData : undefined;
      const dev = type === 'chardev' || type === 'blockdev' ? { rdev: (rdev ?? 0n).toString() } : {};
      return { o: 'mk', p, t: type, mode: kindBits | (mode & 0o7777), uid, gid, m: now().toString(), ...(target !== undefined ? { target } : {}), ...(d !== undefined ? { d } : {}), ...dev };
    });
    const n = await this.lookup(p);
    if (!n) throw new FsError('ENOENT');
    return n;
  }

  remove(p: string, dir: boolean): Promise<void> {
    return this.change(() => ({ o: 'rm', p, dir, m: now().toString() }));
  }

  rename(from: string, to: string): Promise<void> {
    return this.change(() => ({ o: 'mv', from, to, m: now().toString() }));
  }

  chmod(p: string, mode: number): Promise<void> {
    return this.change(() => ({ o: 'mode', p, mode }));
  }

  chown(p: string, u: number, g: number): Promise<void> {
    return this.change(() => ({ o: 'own', p, uid: u === 0xffffffff ? -1 : u, gid: g === 0xffffffff ? -1 : g }));
  }

  utimens(p: string, mtimeNs: bigint): Promise<void> {
    return this.change(() => ({ o: 'time', p, m: mtimeNs.toString() }));
  }

  /**
   * Sets an extended attribute (flags: XATTR_CREATE fails if it is there,
   * XATTR_REPLACE if it is not). Only names a backup keeps can be set.
   */
  setXattr(p: string, name: string, value: Buffer, flags: number): Promise<void> {
    if (!isKeptXattr(name) || name.startsWith('system.')) return Promise.reject(new FsError('ENOTSUP'));
    if (flags & ~(XATTR_CREATE | XATTR_REPLACE) || flags === (XATTR_CREATE | XATTR_REPLACE)) return Promise.reject(new FsError('EINVAL'));
    return this.change(() => ({ o: 'xset', p, name, v: value.toString('base64'), ...(flags ? { f: flags } : {}) }));
  }

  removeXattr(p: string, name: string): Promise<void> {
    return this.change(() => ({ o: 'xrm', p, name }));
  }

  /** Writes bytes into a file (its path, for a file not written before). */
  write(p: string | undefined, n: Node, at: number, bytes: Buffer): Promise<void> {
    return this.queue.run(async () => {
      const d = await this.cow(p, n);
      await this.withData(d, async (f) => {
        for (let done = 0; done < bytes.length; ) done += (await f.write(bytes, done, bytes.length - done, at + done)).bytesWritten;
      });
      this.unsyncedData.add(d);
      const r: Rec = { o: 'w', d, at, n: bytes.length, m: now().toString() };
      await this.apply(r, false);
      await this.log(r, false);
    });
  }

  truncate(p: string | undefined, n: Node, size: number): Promise<void> {
    if (n.type === 'dir') return Promise.reject(new FsError('EISDIR'));
    return this.queue.run(async () => {
      const d = await this.cow(p, n);
      const r: Rec = { o: 'size', d, n: size, m: now().toString() };
      await this.apply(r, false);
      await this.log(r, true);
    });
  }

  /** What was written to a file is on disk, and its journal lines too. */
  sync(n?: Node): Promise<void> {
    return this.queue.run(async () => {
      await this.syncData(n);
      await this.syncJournal();
    });
  }

  /** `length` bytes of a file from `at` (fewer at its end). */
  read(n: Node, at: number, length: number): Promise<Buffer> {
    return this.reading(() => this.readNow(n, at, length));
  }

  private async readNow(n: Node, at: number, length: number): Promise<Buffer> {
    const end = Math.min(n.size, at + length);
    if (at >= end) return Buffer.alloc(0);
    const out = Buffer.alloc(end - at);
    // From the snapshot: below baseKept, between the written ranges.
    let pos = at;
    const limit = Math.min(end, n.baseKept);
    const gaps: [number, number][] = [];
    for (const [s, e] of n.extents) {
      if (pos >= limit) break;
      if (e <= pos) continue;
      if (s > pos) gaps.push([pos, Math.min(s, limit)]);
      pos = Math.max(pos, e);
    }
    if (pos < limit) gaps.push([pos, limit]);
    if (gaps.length > 0) {
      if (n.base === undefined) throw new FsError('EIO');
      n.version ??= this.tree.open(n.base);
      const v = await n.version;
      if (gaps.length === 1 && gaps[0]![0] === at && gaps[0]![1] === end) {
        // All of it the snapshot's: read as the read-only mount reads, fetched ahead of a reader that goes in order.
        n.stream ??= this.streams.open(v);
        await this.streams.get(n.stream)!.read(at, end - at, (b) => b.copy(out, 0));
      } else await Promise.all(gaps.map(async ([s, e]) => (await v.readAt(s, e - s)).copy(out, s - at)));
    }
    if (n.data !== undefined && n.extents.length > 0) {
      const extents = n.extents.filter(([s, e]) => s < end && e > at);
      if (extents.length > 0) {
        await this.withData(n.data, async (f) => {
          for (const [s, e] of extents) {
            const a = Math.max(s, at);
            const b = Math.min(e, end);
            const { bytesRead } = await f.read(out, a - at, b - a, a);
            if (bytesRead !== b - a) out.fill(0, a - at + bytesRead, b - at);
          }
        });
      }
    }
    return out;
  }

  /** Reads and lookups under way, which a rebase waits for; while one is made, new ones wait for it. */
  private readers = 0;
  private drained?: () => void;
  private rebasing?: Promise<void>;

  private async reading<T>(work: () => Promise<T>): Promise<T> {
    while (this.rebasing) await this.rebasing;
    this.readers++;
    try {
      return await work();
    } finally {
      if (--this.readers === 0) this.drained?.();
    }
  }

  /** A file no longer open: its reader stops fetching ahead. */
  closed(n: Node): void {
    if (n.stream === undefined) return;
    this.streams.release(n.stream);
    n.stream = undefined;
  }

  /** Whether a node is its snapshot's entry at `at`, with all below it. */
  private clean(n: Node, at: string): boolean {
    if (n.touched || n.base !== at) return false;
    if (!n.children) return true;
    for (const [name, c] of n.children) if (!this.clean(c, join(at, name))) return false;
    return true;
  }

  private changeSet(n: Node, name: string, at: string): ChangedNode {
    const common = { name, mode: n.mode, uid: n.uid, gid: n.gid, mtimeNs: n.mtimeNs, unchanged: this.clean(n, at), ...(n.xattrs ? { xattrs: n.xattrs } : {}) };
    if (n.type === 'dir') {
      return {
        ...common,
        type: 'dir',
        entries: async () => (await this.list(n)).filter(([k]) => !HIDDEN.test(k)).map(([k, c]) => this.changeSet(c, k, join(at, k))),
      };
    }
    if (n.type === 'symlink') return { ...common, type: 'symlink', target: n.target ?? '' };
    if (isSpecial(n.type)) return { ...common, type: n.type, ...(n.rdev !== undefined ? { rdev: n.rdev } : {}) };
    return { ...common, type: 'file', size: n.size, ...(n.base !== undefined ? { base: n.base } : {}), baseKept: n.base !== undefined ? n.baseKept : 0, dirty: n.extents, read: async (o, l) => this.read(n, o, l) };
  }

  /**
   * Commits the changes as a snapshot whose parent is the one below, then
   * goes on on top of the new snapshot with nothing changed. Changes wait
   * meanwhile; reads go on. Undefined when nothing changed.
   */
  commit(opts: CommitOptions = {}): Promise<CommitResult | undefined> {
    return this.queue.run(async () => {
      await this.syncData();
      await this.syncJournal();
      if (this.clean(this.root, '/')) return undefined;
      const repo = this.tree.repo;
      const result = await commitChanges(repo, this.tree.id, this.changeSet(this.root, '/', '/') as Extract<ChangedNode, { type: 'dir' }>, opts);
      await this.log({ o: 'committed', snapshot: result.snapshot }, true);
      await this.rebase(await SnapshotTree.open(repo, { at: result.snapshot }));
      await this.movePin();
      return result;
    });
  }

  /**
   * Keeps the snapshot below from being forgotten from now on (a mount's
   * overlay), and after each commit the new one instead, until close().
   */
  async pin(): Promise<void> {
    this.pinned ??= await pinSnapshot(this.tree.repo, this.tree.id);
  }

  /** The pin moves to the snapshot just committed: the mount now stands on it, and the old one may go. */
  private async movePin(): Promise<void> {
    const old = this.pinned;
    if (!old || old.snapshot === this.tree.id) return;
    try {
      this.pinned = await pinSnapshot(this.tree.repo, this.tree.id);
    } catch {
      // The commit stands; the new snapshot is only left unpinned (a forget of it is then not refused).
      this.pinned = undefined;
    }
    await old.release().catch(() => {});
  }

  /** Every node now stands for itself in `next` (the snapshot just committed), unchanged. */
  private async rebase(next: SnapshotTree): Promise<void> {
    let done!: () => void;
    this.rebasing = new Promise<void>((resolve) => (done = resolve));
    try {
      if (this.readers > 0) await new Promise<void>((resolve) => (this.drained = resolve));
      this.drained = undefined;
      await this.rebaseNow(next);
    } finally {
      this.rebasing = undefined;
      done();
    }
  }

  private async rebaseNow(next: SnapshotTree): Promise<void> {
    const old = this.dir;
    await this.closeFiles();
    this.byData.clear();
    this.unsyncedData.clear();
    this.nextData = 1;
    const visit = (n: Node, at: string) => {
      n.base = at;
      n.touched = false;
      n.version = undefined;
      this.closed(n);
      if (n.type === 'file') {
        n.baseKept = n.size;
        n.extents = [];
        n.data = undefined;
      }
      if (n.children) for (const [k, c] of n.children) visit(c, join(at, k));
    };
    visit(this.root, '/');
    this.tree = next;
    await fs.rm(old, { recursive: true, force: true });
    await fs.mkdir(path.join(this.dir, 'data'), { recursive: true, mode: 0o700 });
    await this.claim();
    const header: Header = { strata: 'overlay', repository: this.repository, snapshot: next.id };
    await fs.writeFile(path.join(this.dir, JOURNAL), `${JSON.stringify(header)}\n`);
    this.journal = await fs.open(path.join(this.dir, JOURNAL), 'a');
    await this.journal.sync();
    await syncDir(this.dir);
    this.records = 0;
    this.unsynced = false;
  }

  private async closeFiles(): Promise<void> {
    for (const f of this.files.values()) await f.close().catch(() => {});
    this.files.clear();
    await this.journal.close().catch(() => {});
  }

  /** Syncs and lets go: the overlay stays for the next mount, or goes if it holds nothing. */
  close(): Promise<void> {
    return this.queue.run(async () => {
      await this.syncData().catch(() => {});
      await this.syncJournal().catch(() => {});
      await this.closeFiles();
      await this.pinned?.release().catch(() => {});
      this.pinned = undefined;
      if (this.records === 0) await fs.rm(this.dir, { recursive: true, force: true });
      else await fs.rm(path.join(this.dir, 'owner'), { force: true });
    });
  }
}

async function syncDir(dir: string): Promise<void> {
  const h = await fs.open(dir, 'r');
  try {
    await h.sync();
  } finally {
    await h.close();
  }
}

/** Stats of a node as the mount shows them. */
export function nodeStats(n: Node): { mode: number; uid: number; gid: number; size: number; mtimeNs: bigint } {
  const size = n.type === 'file' ? n.size : n.type === 'symlink' ? Buffer.byteLength(n.target ?? '') : n.type === 'dir' ? 4096 : 0;
  return { mode: n.mode, uid: n.uid, gid: n.gid, size, mtimeNs: n.mtimeNs };
}
