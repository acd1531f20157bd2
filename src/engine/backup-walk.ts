/**
 * The walk of a backup: each directory's entries stat'ed in batches (on the
 * workers when they are idle), compared with the parent's tree, files handed
 * to the FileSaver, and a sealed tree stored per directory. A directory whose
 * stats make exactly the parent's tree is reused unread; files the parent had
 * that are gone get tombstones, since a snapshot inherits its parent's versions.
 */
import * as fsSync from 'node:fs';
import * as fs from 'node:fs/promises';
import { StrataError } from '../errors.js';
import type { VersionRow } from '../catalog/catalog.js';
import type { ExcludeMatcher } from '../util/glob.js';
import { compareNames, decodeName, displayName, osPath, readNames } from '../util/names.js';
import { lstatAll, PackedStat, STAT_FIELDS, statError, type EntryStat } from '../util/stat.js';
import { encodeTree, entryOfStat, findEntry, goneFiles, leafId, type Tree, type TreeEntry } from './tree.js';
import type { VersionWriter } from './versions.js';
import { BackupPart, describe, type BackupContext } from './backup-context.js';
import type { BlockSink } from './block-sink.js';
import type { FileSaver, KnownVersion, PreRead } from './backup-file.js';
import { hasMarker, deviceOf, type Marker, type PlanNode } from './backup-sources.js';
import { readXattrs, type ReadXattrs } from '../util/xattrs.js';
import { FILE_FIELDS, ID_BYTES, SCAN_PART, type ScannedDir, type ScanPart, type TreeScan } from './backup-scan.js';

/** Parent versions up to this size have their blocks looked up a directory batch at a time. */
const BATCHED_LIST_BYTES = 1024 * 1024;
/** Entries of a directory compared with the parent's, and their parent versions looked up, together: a part of the scan's. */
const CHILD_BATCH = SCAN_PART;
/**
 * Entries walked before the scan starts: a small tree is done before its
 * thread would have started (a backup of a few files: 0.1 s of CPU more).
 */
export const SCAN_AFTER = 1000;
/** Batches stat'ed ahead of the one being compared. */
const STAT_AHEAD = 2;

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
      // JSON.stringify(entryOfStat(name, 'file', st)), without making the object: every field but the name is a number or digits.
      const links = st.nlink > 1n ? `,"links":${st.nlink},"dev":"${st.dev}"` : '';
      json.push(`{"name":${JSON.stringify(c.name)},"type":"file","mode":${st.mode},"uid":${st.uid},"gid":${st.gid},"mtimeNs":"${st.mtimeNs}","ctimeNs":"${st.ctimeNs}","ino":"${st.ino}","size":${size}${links}}`);
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
  /** Its extended attributes as the scan read them (null: none); undefined when not scanned. */
  xattrs?: ReadXattrs | null;
  /** Its contents, if the scan read them. */
  pre?: PreRead;
}

/** No extended attributes, nothing wrong. */
const NO_XATTRS: ReadXattrs = { attrs: [], problems: [] };

export class TreeWalker extends BackupPart {
  private sinceTurn = 0;
  /** Entries walked so far. */
  private walked = 0;

  constructor(
    ctx: BackupContext,
    private readonly sink: BlockSink,
    private readonly files: FileSaver,
    private readonly versions: VersionWriter,
    private readonly excludes: ExcludeMatcher,
    private readonly markers: readonly Marker[],
    /** The source trees scanned ahead: their listings, stats and attributes. */
    private readonly scan?: TreeScan,
  ) {
    super(ctx);
  }

  /** `xattrs`: the entry's attributes as the scan read them (undefined: not scanned, read here if needed). */
  async saveNode(abs: string, name: string, st: EntryStat, prev: TreeEntry | undefined, plan: PlanNode | undefined, known?: KnownVersion, parentDev?: bigint, xattrs?: ReadXattrs | null, pre?: PreRead): Promise<TreeEntry | undefined> {
    const entry = await this.entryOf(abs, name, st, prev, plan, known, parentDev, pre);
    // The root's entry is the snapshot's own (its tree is all a record keeps of it); standard input is no path on disk.
    if (entry && !this.opts.noXattrs && abs !== '/' && abs !== this.opts.stdinPath) this.addXattrs(abs, entry, prev, xattrs);
    return entry;
  }

  private async entryOf(abs: string, name: string, st: EntryStat, prev: TreeEntry | undefined, plan: PlanNode | undefined, known?: KnownVersion, parentDev?: bigint, pre?: PreRead): Promise<TreeEntry | undefined> {
    this.checkAbort();
    if (st.isDirectory()) return this.saveDir(abs, name, st, prev, plan, parentDev);
    if (st.isFile()) return this.files.save(abs, name, st, prev, known, pre);
    if (st.isSymbolicLink()) {
      try {
        return { ...entryOfStat(name, 'symlink', st), target: decodeName(await fs.readlink(osPath(abs), { encoding: 'buffer' })) };
      } catch (e) {
        this.warn(`cannot read symlink ${abs}: ${describe(e)}`, true);
        return undefined;
      }
    }
    if (st.isFIFO()) {
      this.r.specials++;
      return entryOfStat(name, 'fifo', st);
    }
    if (st.isCharacterDevice() || st.isBlockDevice()) {
      // The device's number is not among the stats packed for a directory's batch (devices are rare): asked for here.
      let rdev: bigint;
      try {
        const full = await fs.lstat(osPath(abs), { bigint: true });
        if (full.ino !== st.ino || (full.mode & BigInt(fsSync.constants.S_IFMT)) !== (st.mode & BigInt(fsSync.constants.S_IFMT))) throw Object.assign(new Error('replaced'), { code: 'ENOENT' });
        rdev = full.rdev;
      } catch (e) {
        this.warn(`cannot read ${abs}: ${describe(e)}`, true);
        return undefined;
      }
      this.r.specials++;
      return { ...entryOfStat(name, st.isCharacterDevice() ? 'chardev' : 'blockdev', st), rdev: rdev.toString() };
    }
    this.warn(`skipping ${abs}: ${st.isSocket() ? 'a socket' : 'not a regular file'}`, false);
    return undefined;
  }

  /**
   * The entry's extended attributes: the parent's, when the parent read them
   * and the entry's ctime and inode are its own (setting or removing one
   * changes the ctime), else read from disk.
   */
  private addXattrs(abs: string, entry: TreeEntry, prev: TreeEntry | undefined, scanned: ReadXattrs | null | undefined): void {
    if (this.parentXattrs && !this.opts.force && prev && prev.type === entry.type && prev.ctimeNs === entry.ctimeNs && prev.ino === entry.ino) {
      if (prev.xattrs) entry.xattrs = prev.xattrs;
      else delete entry.xattrs;
      return;
    }
    const { attrs, problems, unnamed } = scanned === undefined ? readXattrs(abs, entry.type === 'dir') : (scanned ?? NO_XATTRS);
    if (unnamed) {
      this.unnamed.push(abs);
      return;
    }
    for (const p of problems) this.warn(`${abs}: ${p}`, true);
    this.r.xattrsLeftOut += problems.length;
    if (attrs.length > 0) entry.xattrs = attrs.map(([n, v]) => [n, v.toString('base64')]);
    else delete entry.xattrs;
  }

  /** Entries whose own names are not UTF-8 and whose attributes could not be read (symlinks; anything, without getfattr). */
  private readonly unnamed: string[] = [];

  /** Says, once, what the walk could not read for want of a name in UTF-8. */
  finish(): void {
    const n = this.unnamed.length;
    if (n === 0) return;
    const shown = this.unnamed.slice(0, 3).map(displayName).join(', ');
    this.warn(`extended attributes not read of ${n} ${n === 1 ? 'entry' : 'entries'} whose names are not UTF-8: a symlink of such a name is never read through a descriptor, and anything else needs attr's getfattr (${shown}${n > 3 ? ', ...' : ''})`, false);
  }

  /** Whether the parent snapshot read extended attributes: an entry of it without any then had none. */
  private get parentXattrs(): boolean {
    return this.parent?.meta.xattrs === true;
  }

  private async saveDir(abs: string, name: string, st: EntryStat, prev: TreeEntry | undefined, plan: PlanNode | undefined, parentDev?: bigint): Promise<TreeEntry | undefined> {
    const partial = plan !== undefined && !plan.source;
    // Its file system, when mount points are not crossed (asked of directories only: files need no device).
    const dev = this.opts.oneFileSystem && !partial ? deviceOf(abs) : undefined;
    const mountPoint = dev !== undefined && parentDev !== undefined && dev !== parentDev;
    let names: string[];
    /** The scan of this directory: its names sorted and filtered, their stats and attributes. */
    let scanned: ScannedDir | undefined;
    if (partial || mountPoint) names = partial ? [...plan.children.keys()] : [];
    else {
      // The scan starts once the tree is large enough to pay for its thread.
      if (this.scan && !this.scan.started && this.walked >= SCAN_AFTER) this.scan.start();
      scanned = this.scan?.take(abs);
      if (scanned?.excluded) {
        this.r.dirsExcluded++;
        return undefined;
      }
      try {
        if (scanned?.error) throw statError(scanned.error);
        names = scanned ? scanned.names : await readNames(abs);
      } catch (e) {
        this.warn(`cannot read directory ${abs}: ${describe(e)}`, true);
        names = [];
        scanned = undefined;
      }
      if (!scanned && this.markers.length > 0 && this.markers.some((m) => names.includes(m.name) && hasMarker(`${abs}/${m.name}`, m))) {
        this.r.dirsExcluded++;
        return undefined;
      }
    }
    if (!scanned) names.sort(compareNames);
    const children = async (from: number): Promise<Stated[]> => {
      const out: Stated[] = [];
      // The scan's part of these entries (CHILD_BATCH is its size); none if the scan ended first: they are stat'ed here.
      const part = scanned ? await scanned.part(from / CHILD_BATCH) : undefined;
      const end = Math.min(names.length, from + CHILD_BATCH);
      const pre = part?.contents ? preReads(part) : undefined;
      for (let i = from; i < end; i++) {
        const child = names[i]!;
        const childAbs = abs === '/' ? `/${child}` : `${abs}/${child}`;
        // Standard input is a file whose stats are its reader's, made now.
        if (childAbs === this.opts.stdinPath) out.push({ name: child, abs: childAbs, st: stdinStat(), error: undefined });
        else if (part) {
          const f = part.failures[i - from];
          const st = f ? undefined : new PackedStat(part.values, (i - from) * STAT_FIELDS);
          out.push({ name: child, abs: childAbs, st, error: f ? statError(f) : undefined, xattrs: part.xattrs[i - from] ?? null, pre: pre?.get(i - from) });
        } else if (scanned || partial || !this.excludes.excludes(childAbs, child)) out.push({ name: child, abs: childAbs, st: undefined, error: undefined });
      }
      return out;
    };
    // Batches are stat'ed ahead of the one being compared.
    const statted = async function* (this: TreeWalker): AsyncGenerator<Stated[]> {
      const ahead: Promise<Stated[]>[] = [];
      let from = 0;
      const fill = () => {
        for (; ahead.length < STAT_AHEAD && from < names.length; from += CHILD_BATCH) ahead.push(children(from).then((c) => this.statChildren(c)));
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
    // The leaf says nothing of attributes: it stands for the parent's tree only when the parent
    // read them exactly when this backup does (its tree may hold some this one must leave out,
    // or lack some it must read).
    if (prevId && !this.opts.force && this.parentXattrs === !this.opts.noXattrs) {
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
        const reused = this.reuseLeaf(name, st, prev!, leaf);
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
      const batch: { name: string; abs: string; st: EntryStat; prev: TreeEntry | undefined; known?: KnownVersion; xattrs?: ReadXattrs | null; pre?: PreRead }[] = [];
      for (const c of stated) {
        if (c.st) batch.push({ name: c.name, abs: c.abs, st: c.st, prev: prevTree && findEntry(prevTree, c.name), xattrs: c.xattrs, pre: c.pre });
        else this.warn(`cannot read ${c.abs}: ${describe(c.error)}`, true);
      }
      // A file the parent has as it is now is inherited: no catalog lookup, no row.
      const changed = batch.filter((c) => c.st.isFile() && !this.files.unchangedSince(c.prev, c.st));
      // A file whose parent entry names its one block, of the size it has now, is read against that block: its version is looked up only if it differs.
      const byEntry = (c: (typeof batch)[number]): c is (typeof batch)[number] & { prev: TreeEntry & { block: string } } =>
        this.parent !== undefined && c.prev?.type === 'file' && c.prev.block !== undefined && c.prev.size > 0 && c.prev.size === Number(c.st.size);
      for (const c of changed) if (byEntry(c)) c.known = this.files.fromEntry(c.abs, c.prev);
      const files = changed.filter((c) => c.known === undefined);
      const known = await this.files.parentVersions(files.map((c) => c.abs));
      // The small ones' blocks in one catalog read: each of them is read and aligned with them next.
      const small = known.filter((k): k is KnownVersion & { row: VersionRow } => k.row !== undefined && k.row.size > 0 && k.row.size <= BATCHED_LIST_BYTES);
      if (this.parent && small.length > 0) (await this.repo.service.blockLists(small.map((k) => k.row))).forEach((list, i) => (small[i]!.blocks = list));
      files.forEach((c, i) => (c.known = known[i]));
      if (this.parent && !this.opts.force) this.files.askSame(changed);
      // Unchanged files need no I/O but an lstat: let the event loop turn now and then (Ctrl-C, progress).
      this.sinceTurn += batch.length;
      this.walked += batch.length;
      if (this.sinceTurn >= 1000) {
        this.sinceTurn = 0;
        await new Promise<void>((resolve) => setImmediate(resolve));
      }
      for (const c of batch) {
        const entry = await this.saveNode(c.abs, c.name, c.st, c.prev, partial ? plan.children.get(c.name) : undefined, c.known, dev, c.xattrs, c.pre);
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
    if (prevTree && prev?.tree && entries.length === 0 && same === prevTree.entries.length && same > 0 && this.sink.has(Buffer.from(prev.tree, 'hex'))) {
      this.sink.blobs.add(prev.tree);
      return { ...entryOfStat(name, 'dir', st), tree: prev.tree, ...(prev.leaf ? { leaf: prev.leaf } : {}) };
    }
    if (entries.length === 0) for (let k = 0; k < same; k++) entries.push(prevTree!.entries[k]!);
    const tree: Tree = { entries };
    const id = await this.sink.storeTree(encodeTree(tree));
    const leaf = leafId(entries, this.repo.keyring.blockIdOfPieces());
    return { ...entryOfStat(name, 'dir', st), tree: id.toString('hex'), ...(leaf ? { leaf } : {}) };
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
  private reuseLeaf(name: string, st: EntryStat, prev: TreeEntry, leaf: LeafTree): TreeEntry | undefined {
    // The parent's tree as the stats make it: itself, or (its files carry blocks or marks) its leaf id.
    const prevId = prev.tree!;
    if (leaf.id().toString('hex') !== (prev.leaf ?? prevId) || !this.sink.has(Buffer.from(prevId, 'hex'))) return undefined;
    this.files.inherited(leaf.files, leaf.sized, leaf.bytes);
    this.r.dirs++;
    this.sink.blobs.add(prevId);
    return { ...entryOfStat(name, 'dir', st), tree: prevId, ...(prev.leaf ? { leaf: prev.leaf } : {}) };
  }

  /** lstat of a directory's entries the scan did not stat. Never rejects. */
  private async statChildren(all: Stated[]): Promise<Stated[]> {
    const children = all.filter((c) => !c.st && !c.error);
    if (children.length === 0) return all;
    // Packed: a directory's stats are held until it is compared, and a BigIntStats weighs ten times more.
    const { values, failures } = lstatAll(
      children.map((c) => c.abs),
      (p) => fsSync.lstatSync(osPath(p), { bigint: true }),
    );
    children.forEach((c, i) => {
      const f = failures[i];
      if (f) c.error = statError(f);
      else c.st = new PackedStat(values, i * STAT_FIELDS);
    });
    return all;
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

  /** Tombstones for the parent's files this directory no longer holds (see goneFiles). */
  private tombstones(abs: string, prevTree: Tree, kept: ReadonlyMap<string, TreeEntry['type']>): Promise<void> {
    return goneFiles(abs, prevTree, kept, (id) => this.parentTree(id), async (p) => {
      this.opts.onFile?.('removed', p);
      await this.versions.tombstone(this.seq, this.repo.keyring.pathId(p));
    });
  }
}


const ENTRY_FIELDS = ['name', 'type', 'mode', 'uid', 'gid', 'mtimeNs', 'ctimeNs', 'ino', 'size', 'links', 'dev', 'tree', 'target', 'rdev', 'leaf', 'block', 'toc', 'parentContent'] as const;

/** The files of a part the scan read, by their index in it. */
function preReads(part: ScanPart): Map<number, PreRead> {
  const c = part.contents!;
  const out = new Map<number, PreRead>();
  for (let f = 0; f < c.files.length; f += FILE_FIELDS) {
    const [i, at, first, count] = [c.files[f]!, c.files[f + 1]!, c.files[f + 2]!, c.files[f + 3]!];
    const lengths = c.lengths.subarray(first, first + count);
    let size = 0;
    for (const l of lengths) size += l;
    out.set(i, { bytes: Buffer.from(c.bytes.buffer, c.bytes.byteOffset + at, size), lengths, ids: c.ids.subarray(first * ID_BYTES, (first + count) * ID_BYTES) });
  }
  return out;
}

/** Whether two tree entries say the same thing (the parent's tree can then be reused). */
function sameEntry(a: TreeEntry, b: TreeEntry): boolean {
  return ENTRY_FIELDS.every((k) => a[k] === b[k]) && (a.xattrs === b.xattrs || JSON.stringify(a.xattrs) === JSON.stringify(b.xattrs));
}

/** The stats standard input is stored with: a regular file (rw-r--r--) of this process's user, made now. */
function stdinStat(): EntryStat {
  const now = BigInt(Date.now()) * 1_000_000n;
  const values = new BigInt64Array([0o100644n, BigInt(process.getuid?.() ?? 0), BigInt(process.getgid?.() ?? 0), 0n, now, now, 0n, 1n, 0n]);
  return new PackedStat(values, 0);
}
