/**
 * A local on-disk cache of sealed blocks of a remote repository, shared by the
 * processes of one user (cat, restore, a mount), so a block is fetched once.
 * Blocks are already encrypted and authenticated, and callers check what they
 * get back; the cache only has to avoid handing out half-written files, so
 * entries are written under a temporary name and renamed into place.
 * Layout: <dir>/<repoId>/<2 hex>/<64 hex>. A hit touches the entry's mtime,
 * and eviction removes the oldest first.
 */
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

export const DEFAULT_CACHE_BYTES = 1024 * 1024 * 1024;

const REPO_ID = /^[0-9a-f]{8,64}$/;
const ID_BYTES = 32;
const PREFIX = /^[0-9a-f]{2}$/;
const ENTRY = /^[0-9a-f]{64}$/;
const TMP = '.tmp-';
const USAGE = 'usage';
/** An eviction goes down to this share of the bound, so it does not run again on the next put. */
const LOW_WATER = 0.9;
/** A temporary file this old belongs to a writer that died (a write takes milliseconds). */
const STALE_TMP_MS = 10 * 60 * 1000;
/** The usage record is rewritten as one line past this size, so opening stays cheap. */
const USAGE_COMPACT_BYTES = 64 * 1024;

/** Where caches live by default: $STRATA_CACHE_DIR, else $XDG_CACHE_HOME/strata, else ~/.cache/strata. */
export function defaultCacheDir(): string {
  const own = process.env.STRATA_CACHE_DIR;
  if (own) return own;
  const xdg = process.env.XDG_CACHE_HOME;
  // The XDG base directory spec says to ignore a relative path.
  if (xdg && path.isAbsolute(xdg)) return path.join(xdg, 'strata');
  return path.join(os.homedir(), '.cache', 'strata');
}

/**
 * open() does not scan: a range read runs in a process that lives a fraction
 * of a second. The total size is kept in <repoId>/usage instead: a first line
 * "=<total> <generation>" written by a scan, then one "+n" or "-n" line
 * appended per put or delete. Short appends do not interleave, so processes
 * do not lose each other's updates, and each reads only the lines added since
 * it last looked. Rewriting the record (after a scan, or when it grows long)
 * drops what others append meanwhile; that drift is small, and the next scan,
 * which eviction needs anyway, corrects it.
 */
export class BlockCache {
  hits = 0;
  misses = 0;
  /** Total of the usage record as read so far. */
  private bytes = 0;
  /** The record's generation and how far into it this process has read. */
  private generation = '';
  private offset = 0;
  /** No readable usage record: the next put scans to rebuild it. */
  private unknown = true;
  private readonly usageFile: string;
  private usageFd?: number;
  private usageIno = 0;
  /** Prefix directories known to exist. */
  private readonly dirs = new Set<string>();

  private constructor(
    private readonly root: string,
    private readonly maxBytes: number,
  ) {
    this.usageFile = path.join(root, USAGE);
  }

  /**
   * One repository's cache under `dir` (a subdirectory named by repoId, which
   * must be [0-9a-f]{8,64}); created if missing (mode 0700). Only bad
   * arguments throw: a cache that cannot be created just never hits.
   */
  static open(dir: string, repoId: string, maxBytes = DEFAULT_CACHE_BYTES): BlockCache {
    // The id becomes a path component.
    if (!REPO_ID.test(repoId)) throw new Error(`cache: repository id ${JSON.stringify(repoId)} is not 8 to 64 lowercase hex digits`);
    if (!Number.isSafeInteger(maxBytes) || maxBytes <= 0) throw new Error(`cache: invalid size bound ${maxBytes}`);
    const cache = new BlockCache(path.join(dir, repoId), maxBytes);
    try {
      fs.mkdirSync(cache.root, { recursive: true, mode: 0o700 });
      cache.refresh();
    } catch {
      // Unusable: every get misses and every put does nothing.
    }
    return cache;
  }

  /** Bytes the cache currently holds, as it knows them. */
  get size(): number {
    return Math.max(0, this.bytes);
  }

  /** The cached sealed bytes of block `id`, or undefined. A hit marks the entry recently used. */
  get(id: Uint8Array): Buffer | undefined {
    const file = this.file(id);
    let data: Buffer;
    try {
      data = fs.readFileSync(file);
    } catch {
      // Missing, evicted meanwhile, or unreadable: all the same to a cache.
      this.misses++;
      return undefined;
    }
    // A sealed block is never empty; an empty file is what a crash can leave
    // of an entry whose data never reached the disk.
    if (data.length === 0) {
      this.misses++;
      return undefined;
    }
    try {
      const now = new Date();
      fs.utimesSync(file, now, now);
    } catch {
      // Evicted since the read: the bytes are still good.
    }
    this.hits++;
    return data;
  }

  /**
   * Stores sealed bytes, then evicts least recently used entries if over the
   * bound. Never throws on I/O trouble: it just does not cache. Not synced to
   * disk: after a power cut an entry may be garbage, which the caller's
   * authentication catches, and a sync per block would slow every read.
   */
  put(id: Uint8Array, sealed: Uint8Array): void {
    const file = this.file(id);
    // A block larger than the whole cache would only flush everything else.
    if (sealed.byteLength > this.maxBytes) return;
    try {
      // Already there (another process put it): just mark it used. An empty
      // file is a torn entry (see get) and is replaced.
      const st = fs.statSync(file, { throwIfNoEntry: false });
      if (st?.isFile() && st.size > 0) {
        const now = new Date();
        fs.utimesSync(file, now, now);
        return;
      }
      const dir = path.dirname(file);
      if (!this.dirs.has(dir)) {
        fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
        this.dirs.add(dir);
      }
      const tmp = path.join(dir, TMP + randomBytes(8).toString('hex'));
      try {
        fs.writeFileSync(tmp, sealed, { mode: 0o600, flag: 'wx' });
        fs.renameSync(tmp, file);
      } catch (e) {
        fs.rmSync(tmp, { force: true });
        throw e;
      }
      this.record(`+${sealed.byteLength}`);
      if (this.unknown || this.bytes > this.maxBytes) this.scan();
      else if (this.offset > USAGE_COMPACT_BYTES) this.rewriteUsage(this.size);
    } catch {
      // A cache is optional. Its directories may have gone: make them again next time.
      this.dirs.clear();
    }
  }

  /** Lets go of the usage record. */
  close(): void {
    if (this.usageFd !== undefined) fs.closeSync(this.usageFd);
    this.usageFd = undefined;
  }

  /** Drops one entry (e.g. it failed authentication); whether there was one. */
  delete(id: Uint8Array): boolean {
    const file = this.file(id);
    try {
      const { size } = fs.statSync(file);
      fs.unlinkSync(file);
      // Only the process whose unlink succeeded counts the bytes as gone.
      this.record(`-${size}`);
      return true;
    } catch {
      // Already gone, or the cache is unusable.
      return false;
    }
  }

  private file(id: Uint8Array): string {
    if (id.byteLength !== ID_BYTES) throw new Error(`cache: a block id has ${ID_BYTES} bytes, not ${id.byteLength}`);
    const hex = Buffer.from(id.buffer, id.byteOffset, id.byteLength).toString('hex');
    return path.join(this.root, hex.slice(0, 2), hex);
  }

  /** Appends one change to the usage record, then reads what other processes appended. */
  private record(line: string): void {
    const fd = this.usage();
    if (fd === undefined) {
      this.unknown = true;
      return;
    }
    fs.writeSync(fd, `${line}\n`);
    this.refresh(fd);
  }

  /**
   * The usage record, kept open (opening a file costs more than the rest of a
   * put). Opened again when another process replaced it (a new inode); no
   * O_CREAT, since a record without its first line would have no base total.
   */
  private usage(): number | undefined {
    const st = fs.statSync(this.usageFile, { throwIfNoEntry: false });
    if (this.usageFd !== undefined && (!st || st.ino !== this.usageIno)) {
      fs.closeSync(this.usageFd);
      this.usageFd = undefined;
    }
    if (this.usageFd === undefined && st) {
      try {
        this.usageFd = fs.openSync(this.usageFile, fs.constants.O_RDWR | fs.constants.O_APPEND);
        this.usageIno = fs.fstatSync(this.usageFd).ino;
      } catch {
        return undefined;
      }
    }
    return this.usageFd;
  }

  /** Brings `bytes` up to date with the usage record, reading only what is new. */
  private refresh(fd = this.usage()): void {
    if (fd === undefined) {
      this.unknown = true;
      return;
    }
    const size = fs.fstatSync(fd).size;
    const head = readAt(fd, 0, Math.min(size, 64));
    const nl = head.indexOf(10);
    const m = nl < 0 ? null : /^=(\d+) ([0-9a-f]{16})$/.exec(head.toString('latin1', 0, nl));
    if (!m) {
      this.unknown = true;
      return;
    }
    // A new generation (the record was rewritten): start over from its total.
    if (m[2] !== this.generation || size < this.offset) {
      this.generation = m[2]!;
      this.bytes = Number(m[1]);
      this.offset = nl + 1;
    }
    if (size > this.offset) {
      const tail = readAt(fd, this.offset, size - this.offset);
      // Only whole lines: a line being appended is read next time.
      const end = tail.lastIndexOf(10) + 1;
      for (const line of tail.toString('latin1', 0, end).split('\n')) {
        const d = /^([+-])(\d+)$/.exec(line);
        if (d) this.bytes += d[1] === '+' ? Number(d[2]) : -Number(d[2]);
      }
      this.offset += end;
    }
    this.unknown = false;
  }

  /**
   * Lists every entry to learn the true total, evicts the least recently
   * used down to LOW_WATER if over the bound, removes temporary files of dead
   * writers, and rewrites the usage record. Another process may be evicting
   * too: files that vanish meanwhile are skipped or counted as freed.
   */
  private scan(): void {
    const now = Date.now();
    const entries: { file: string; size: number; mtimeMs: number }[] = [];
    let total = 0;
    const dirs = [this.root, ...readdirOrEmpty(this.root).filter((d) => PREFIX.test(d)).map((d) => path.join(this.root, d))];
    for (const dir of dirs) {
      const inRoot = dir === this.root;
      for (const name of readdirOrEmpty(dir)) {
        if (!name.startsWith(TMP) && (inRoot || !ENTRY.test(name))) continue;
        const file = path.join(dir, name);
        const st = fs.statSync(file, { throwIfNoEntry: false });
        if (!st?.isFile()) continue;
        if (name.startsWith(TMP)) {
          if (st.mtimeMs < now - STALE_TMP_MS) fs.rmSync(file, { force: true });
          continue;
        }
        entries.push({ file, size: st.size, mtimeMs: st.mtimeMs });
        total += st.size;
      }
    }
    if (total > this.maxBytes) {
      entries.sort((a, b) => a.mtimeMs - b.mtimeMs);
      for (const e of entries) {
        if (total <= this.maxBytes * LOW_WATER) break;
        fs.rmSync(e.file, { force: true });
        total -= e.size;
      }
    }
    this.rewriteUsage(total);
  }

  /** Replaces the usage record (atomically) by a new generation holding `total`. */
  private rewriteUsage(total: number): void {
    const generation = randomBytes(8).toString('hex');
    const head = `=${total} ${generation}\n`;
    const tmp = path.join(this.root, TMP + randomBytes(8).toString('hex'));
    try {
      fs.writeFileSync(tmp, head, { mode: 0o600, flag: 'wx' });
      fs.renameSync(tmp, this.usageFile);
    } catch (e) {
      fs.rmSync(tmp, { force: true });
      throw e;
    }
    this.generation = generation;
    this.bytes = total;
    this.offset = head.length;
    this.unknown = false;
  }
}

/** Up to `length` bytes at `position` (fewer if the file is shorter). */
function readAt(fd: number, position: number, length: number): Buffer {
  const buf = Buffer.allocUnsafe(length);
  let got = 0;
  while (got < length) {
    const n = fs.readSync(fd, buf, got, length - got, position + got);
    if (n === 0) break;
    got += n;
  }
  return buf.subarray(0, got);
}

function readdirOrEmpty(dir: string): string[] {
  try {
    return fs.readdirSync(dir);
  } catch (e) {
    // Removed meanwhile, never created, or a stray file where a directory
    // would be: nothing to count, and eviction must still go on.
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return [];
    throw e;
  }
}
