/**
 * Worker thread: a backup's source trees scanned ahead of its walk. It lists
 * every directory the walk will enter, in the walk's order (depth first,
 * names sorted, the same excludes and markers applied), lstats the entries
 * and reads their extended attributes, and posts what it found: the main
 * thread then only compares and assembles trees. In a tree of many small
 * files those system calls were a quarter of the main thread's time, and
 * each directory's listing a wait.
 *
 * It stays at most `ahead` entries ahead of what the walk has taken (a
 * counter the main thread raises in shared memory), so memory is bounded
 * whatever the tree.
 */
import { closeSync, constants, fstatSync, lstatSync, openSync } from 'node:fs';
import { parentPort, workerData } from 'node:worker_threads';
import { Chunker, type ChunkerParams } from '../chunker/fastcdc.js';
import { blockId } from '../crypto/keyring.js';
import { readInto } from '../util/read.js';
import { ExcludeMatcher } from '../util/glob.js';
import { hasMarker, type Marker } from '../util/marker.js';
import { compareNames, osPath, readNamesSync } from '../util/names.js';
import { lstatAll, PackedStat, STAT_FIELDS, type StatFailure } from '../util/stat.js';
import { readXattrs, type ReadXattrs } from '../util/xattrs.js';

export interface ScanSpec {
  /** Source directories, in the walk's order. */
  roots: string[];
  excludes: string[];
  iexcludes: string[];
  markers: Marker[];
  oneFileSystem: boolean;
  xattrs: boolean;
  /** Int32 [entries the walk has taken, stop]. */
  control: SharedArrayBuffer;
  ahead: number;
  /** Small files to read, chunk and hash too; none if absent. */
  read?: ScanRead;
}

/**
 * Which files the scan reads ahead of the walk, and how it cuts and names
 * their blocks (as the backup's chunker and keyring do). The walk then finds
 * a new file's blocks ready, or a file read again (a new inode) the same as
 * its parent's, without reading anything itself.
 */
export interface ScanRead {
  idKey: Uint8Array;
  gear: Uint32Array;
  chunker: ChunkerParams;
  /** Files of 1 byte up to this size. */
  maxFile: number;
  /**
   * BigInt64 [mode, since], set by the walk once it knows the parent
   * snapshot: until then (READ_NOT_YET) no file is read; then only files
   * whose ctime (ns) is at least `since` (READ_SINCE: a file not changed
   * since the parent began has its stats in it, and is inherited unread),
   * or every file (READ_ALL: no parent).
   */
  when: SharedArrayBuffer;
  /** Bytes of contents held ahead of the walk at most: past that, files are left to it. */
  aheadBytes: number;
  /** Int32 per part (seq % PARTS_RING): seq + 1 once the walk has taken it, and reads its files itself. */
  taken: SharedArrayBuffer;
}
export const PARTS_RING = 64 * 1024;
/** Bytes of contents that count as one entry toward a message's size. */
const CONTENT_WEIGHT = 2048;
export const READ_NOT_YET = 0n;
export const READ_SINCE = 1n;
export const READ_ALL = 2n;

/** A directory as the scan listed it: its entries come in parts after it. */
export interface ScanHead {
  dir: string;
  /** It could not be listed: why (it is then taken as empty). */
  error?: StatFailure;
  /** A marker file leaves it out. */
  excluded?: true;
  /** Its entries the excludes keep, sorted. */
  names: string[];
}

/** The stats and attributes of entries `k * SCAN_PART` on of directory `dir`, up to SCAN_PART of them. */
export interface ScanPart {
  dir: string;
  k: number;
  /** Its number in the scan. */
  seq: number;
  /** Packed lstats (STAT_FIELDS each), or why there is none. */
  values: BigInt64Array;
  failures: (StatFailure | null)[];
  /** Per entry: its extended attributes as readXattrs says, null when it has none (or they are not read). */
  xattrs: (ReadXattrs | null)[];
  /** The files of the part read ahead (see ScanRead), if they came before the walk took it. */
  contents?: ScanContents;
}

/** The files of part `seq` read ahead, after its stats. */
export interface ScanFiles {
  dir: string;
  k: number;
  seq: number;
  contents: ScanContents;
}

export type ScanItem = ScanHead | ScanPart | ScanFiles;

/**
 * Files read whole by the scan, unchanged while read (an fstat after the
 * read shows the lstat's inode, size and times). Per file, FILE_FIELDS
 * numbers in `files`: its index in the part, where its bytes start in
 * `bytes`, its first chunk, and how many chunks; each chunk's length in
 * `lengths` and its block id (ID_BYTES) in `ids`.
 */
export interface ScanContents {
  bytes: Uint8Array;
  files: Float64Array;
  lengths: Uint32Array;
  ids: Uint8Array;
}
export const FILE_FIELDS = 4;
export const ID_BYTES = 32;

/**
 * Entries per part: a large directory is posted a part at a time, so the
 * walk starts on it before all of it is stat'ed (the trees bench's Maildir of
 * 3,000 files: 0.1 s of waiting as one piece).
 */
export const SCAN_PART = 512;

/** Control words in shared memory: entries the walk has taken; stop; the walk is waiting; bytes of contents it has taken. */
export const TAKEN = 0;
export const STOP = 1;
export const WAITING = 2;
export const TAKEN_BYTES = 3;
/**
 * Directories the walk has entered. Both go through the same directories in
 * the same order, so the scan's n-th is the walk's n-th: one the walk has
 * entered already is only listed (to find what is below it), not posted.
 */
export const ENTERED = 4;
export const CONTROL_WORDS = 5;

/** Contents read for one part at most (a message's worth). */
const PART_BYTES = 4 * 1024 * 1024;

/** Posted once the scan is over (or stopped). */
export const SCAN_DONE = 'done';

/** A message holds this many entries, unless the scan ends, waits, or the walk is waiting for it. */
const MESSAGE_ENTRIES = 512;

if (parentPort) {
  const port = parentPort;
  const spec = workerData as ScanSpec;
  const control = new Int32Array(spec.control);
  const excludes = new ExcludeMatcher(spec.excludes, spec.iexcludes);
  const markers = spec.markers.map((m) => (m.header ? { name: m.name, header: Buffer.from(m.header) } : { name: m.name }));
  let batch: ScanItem[] = [];
  let moved: ArrayBuffer[] = [];
  let batched = 0;
  let produced = 0;
  let producedBytes = 0;
  const read = spec.read;
  const chunker = read ? new Chunker(read.chunker, read.gear) : undefined;
  const when = read ? new BigInt64Array(read.when) : undefined;
  const takenParts = read ? new Int32Array(read.taken) : undefined;
  let parts = 0;

  const post = () => {
    if (batch.length === 0) return;
    Atomics.store(control, WAITING, 0);
    port.postMessage(batch, moved);
    batch = [];
    moved = [];
    batched = 0;
  };
  const stopped = () => Atomics.load(control, STOP) !== 0;
  /**
   * Waits while the walk is `ahead` entries behind, unless it is waiting
   * for more (it left some entries untaken); false once told to stop.
   */
  const room = (): boolean => {
    for (;;) {
      if (stopped()) return false;
      const taken = Atomics.load(control, TAKEN);
      if (produced - taken <= spec.ahead || Atomics.load(control, WAITING) !== 0) return true;
      post();
      Atomics.wait(control, TAKEN, taken, 1000);
    }
  };
  /** `weight`: toward a message's size; entries (not contents, bounded by bytes) count toward `ahead` too. */
  const emit = (item: ScanItem, weight: number) => {
    batch.push(item);
    batched += weight;
    if (!('contents' in item)) produced += weight;
    if (batched >= MESSAGE_ENTRIES || Atomics.load(control, WAITING) !== 0) post();
  };
  const head = (d: ScanHead) => emit(d, 1);

  /** Directories scanned (see ENTERED). */
  let dirs = 0;

  /** A directory's entries as the walk takes them (sorted, the excludes applied), why it has none, or that a marker leaves it out. */
  const list = (dir: string): { names: string[]; paths: string[] } | { error: StatFailure } | 'excluded' => {
    let all: string[];
    try {
      all = readNamesSync(dir);
    } catch (e) {
      const { code, message } = e as NodeJS.ErrnoException;
      return { error: { ...(code ? { code } : {}), message } };
    }
    if (markers.length > 0 && markers.some((m) => all.includes(m.name) && hasMarker(`${dir}/${m.name}`, m))) return 'excluded';
    const names: string[] = [];
    const paths: string[] = [];
    for (const name of all.sort(compareNames)) {
      const p = dir === '/' ? `/${name}` : `${dir}/${name}`;
      if (excludes.excludes(p, name)) continue;
      names.push(name);
      paths.push(p);
    }
    return { names, paths };
  };

  const scan = (dir: string, dev: bigint | undefined): boolean => {
    if (!room()) return false;
    if (dirs++ < Atomics.load(control, ENTERED)) return passed(dir, dev);
    const listed = list(dir);
    if (listed === 'excluded') {
      head({ dir, excluded: true, names: [] });
      return true;
    }
    if ('error' in listed) {
      head({ dir, error: listed.error, names: [] });
      return true;
    }
    const { names, paths } = listed;
    head({ dir, names });
    const subdirs: string[] = [];
    const stated: { seq: number; k: number; paths: string[]; values: BigInt64Array; failures: (StatFailure | null)[] }[] = [];
    for (let k = 0; k * SCAN_PART < paths.length; k++) {
      if (k > 0 && !room()) return false;
      const part = paths.slice(k * SCAN_PART, (k + 1) * SCAN_PART);
      const { values, failures } = lstatAll(part, (p) => lstatSync(osPath(p), { bigint: true }));
      const xattrs = part.map((p, i) => {
        if (failures[i]) return null;
        const st = new PackedStat(values, i * STAT_FIELDS);
        // A mount point is stored empty with --one-file-system: the walk does not enter it.
        if (st.isDirectory() && !(dev !== undefined && st.dev !== dev)) subdirs.push(p);
        if (!spec.xattrs) return null;
        const x = readXattrs(p, st.isDirectory());
        return x.attrs.length === 0 && x.problems.length === 0 && !x.unnamed ? null : x;
      });
      const seq = parts++;
      emit({ dir, k, seq, values, failures, xattrs }, part.length);
      if (read) stated.push({ seq, k, paths: part, values, failures });
    }
    // The stats go first: the walk may start on them while the contents are read, and read what it reaches first itself.
    for (const p of stated) {
      if (Atomics.load(takenParts!, p.seq % PARTS_RING) === p.seq + 1) continue;
      const contents = readPart(p.paths, p.values, p.failures);
      if (!contents) continue;
      moved.push(contents.bytes.buffer as ArrayBuffer, contents.files.buffer as ArrayBuffer, contents.lengths.buffer as ArrayBuffer, contents.ids.buffer as ArrayBuffer);
      emit({ dir, k: p.k, seq: p.seq, contents }, contents.bytes.length / CONTENT_WEIGHT);
    }
    for (const sub of subdirs) if (!scan(sub, dev)) return false;
    return true;
  };

  /** A directory the walk entered already: what is below it is scanned, nothing of it is posted. */
  const passed = (dir: string, dev: bigint | undefined): boolean => {
    const listed = list(dir);
    if (listed === 'excluded' || 'error' in listed) return true;
    for (const p of listed.paths) {
      let st;
      try {
        st = lstatSync(osPath(p), { bigint: true });
      } catch {
        continue;
      }
      if (st.isDirectory() && !(dev !== undefined && st.dev !== dev) && !scan(p, dev)) return false;
    }
    return true;
  };

  /** The files of a part that are to be read ahead, read, chunked and hashed; undefined if none was. */
  const readPart = (paths: string[], values: BigInt64Array, failures: (StatFailure | null)[]): ScanContents | undefined => {
    const r = read!;
    const mode = Atomics.load(when!, 0);
    if (mode === READ_NOT_YET) return undefined;
    const since = mode === READ_SINCE ? Atomics.load(when!, 1) : undefined;
    const wanted: number[] = [];
    let total = 0;
    for (let i = 0; i < paths.length; i++) {
      if (failures[i]) continue;
      const st = new PackedStat(values, i * STAT_FIELDS);
      const size = Number(st.size);
      if (!st.isFile() || size === 0 || size > r.maxFile || (since !== undefined && st.ctimeNs < since)) continue;
      if (total + size > PART_BYTES || producedBytes + total + size - Atomics.load(control, TAKEN_BYTES) > r.aheadBytes) break;
      wanted.push(i);
      total += size;
    }
    if (wanted.length === 0) return undefined;
    // One byte more than the last file: a file that grew is caught. Never from the shared pool: it is moved to the walk.
    const bytes = Buffer.allocUnsafeSlow(total + 1);
    const files: number[] = [];
    const lengths: number[] = [];
    const ids: Buffer[] = [];
    let at = 0;
    for (const i of wanted) {
      const st = new PackedStat(values, i * STAT_FIELDS);
      const size = Number(st.size);
      if (!readWhole(paths[i]!, st, bytes.subarray(at, at + size + 1))) continue;
      const chunks = chunker!.push(bytes.subarray(at, at + size));
      const last = chunker!.finish();
      if (last) chunks.push(last);
      files.push(i, at, lengths.length, chunks.length);
      for (const c of chunks) {
        lengths.push(c.length);
        ids.push(blockId(r.idKey, c));
      }
      at += size;
    }
    if (files.length === 0) return undefined;
    producedBytes += at;
    return { bytes: new Uint8Array(bytes.buffer, bytes.byteOffset, at), files: Float64Array.from(files), lengths: Uint32Array.from(lengths), ids: new Uint8Array(Buffer.concat(ids)) };
  };

  /**
   * Reads the file at `p` into `into` (its size and one byte more): true if it
   * held exactly its size, and an fstat afterwards shows the lstat's inode,
   * size and times (a change while it was read, or since the lstat, moves them).
   */
  const readWhole = (p: string, st: PackedStat, into: Buffer): boolean => {
    let fd: number | undefined;
    try {
      fd = openSync(osPath(p), constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
      const size = into.length - 1;
      if (readInto(fd, into, into.length, 0) !== size) return false;
      const after = fstatSync(fd, { bigint: true });
      return after.isFile() && after.ino === st.ino && after.size === st.size && after.mtimeNs === st.mtimeNs && after.ctimeNs === st.ctimeNs;
    } catch {
      // Left to the walk, which says what is wrong.
      return false;
    } finally {
      if (fd !== undefined) closeSync(fd);
    }
  };

  for (const root of spec.roots) {
    let dev: bigint | undefined;
    try {
      const st = lstatSync(osPath(root), { bigint: true });
      if (!st.isDirectory()) continue;
      dev = spec.oneFileSystem ? st.dev : undefined;
    } catch {
      continue;
    }
    if (!scan(root, dev)) break;
  }
  post();
  port.postMessage(SCAN_DONE);
}
