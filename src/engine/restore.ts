/**
 * Restore: recreate stored absolute paths under a target directory, with
 * contents, modes, times and symlinks. Names come from validated trees, so a
 * path can only land below the target; existing files are replaced, never
 * written through (a symlink in the way is removed, not followed), nothing
 * is created below a directory reached through a symlink, and metadata is
 * set through handles opened without following links.
 */
import { closeSync, constants, fchmodSync, fchownSync, futimesSync, openSync, writevSync } from 'node:fs';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { interrupted, notFound, StrataError } from '../errors.js';
import { isHole } from '../util/holes.js';
import { osPath } from '../util/names.js';
import type { Repository } from '../repo/repository.js';
import { readRange, storedVersion } from './read.js';
import { unpackVersion } from './unpack.js';
import type { BoundVersion } from './verify.js';
import { isWithin, splitPath, type Snapshot } from './snapshot.js';
import type { TreeEntry } from './tree.js';

export interface RestoreOptions {
  target: string;
  /** Absolute paths inside the snapshot (default: everything). */
  paths?: string[];
  signal?: AbortSignal;
  onProgress?: (p: { files: number; bytes: number }) => void;
}

export interface RestoreResult {
  snapshot: string;
  target: string;
  files: number;
  dirs: number;
  symlinks: number;
  bytes: number;
  durationMs: number;
}

export async function restore(repo: Repository, snapshot: Snapshot, opts: RestoreOptions): Promise<RestoreResult> {
  const started = performance.now();
  const target = path.resolve(opts.target);
  const result: RestoreResult = { snapshot: snapshot.id, target, files: 0, dirs: 0, symlinks: 0, bytes: 0, durationMs: 0 };
  const dirTimes: { dest: string; entry: TreeEntry }[] = [];
  const asRoot = process.getuid?.() === 0;
  await fs.mkdir(target, { recursive: true });
  // Paths below are built on the target's real path, so any symlink found under it is one to refuse.
  const base = await fs.realpath(target);
  // Consecutive entries often share a directory; placing one changes only itself, never the directories above it.
  let checkedDir = '';
  /** Files still being written, and the first error one of them met. */
  const writing = new Set<Promise<void>>();
  /** Of `writing`, the large files. */
  let largeWriting = 0;
  let failure: unknown;

  const selected = (opts.paths && opts.paths.length > 0 ? opts.paths : ['/']).map((p) => path.posix.resolve(p));
  const roots = selected.filter((p) => !selected.some((q) => q !== p && isWithin(p, q)));
  const placedParents = new Set<string>();

  const place = async (abs: string, entry: TreeEntry): Promise<void> => {
    if (opts.signal?.aborted) throw interrupted();
    const dest = path.join(base, ...splitPath(abs));
    if (path.dirname(dest) !== checkedDir) {
      await checkParent(path.dirname(dest), base);
      checkedDir = path.dirname(dest);
    }
    if (entry.type === 'dir') {
      await ensureDir(dest);
      dirTimes.push({ dest, entry });
      result.dirs++;
    } else if (entry.type === 'symlink') {
      await removeExisting(dest);
      const at = osPath(dest);
      await fs.symlink(osPath(entry.target ?? ''), at);
      if (asRoot) await fs.lchown(at, entry.uid, entry.gid).catch(() => {});
      const t = seconds(entry.mtimeNs);
      await fs.lutimes(at, t, t).catch(() => {});
      result.symlinks++;
    } else {
      // Created here, right after its directory was checked; looked up and written off this
      // loop: a tree of small files is bound by round trips through the thread pool, which overlap.
      const large = entry.size >= LARGE_FILE;
      const fd = await createFile(dest, entry.mode & 0o777);
      const done: Promise<void> = fill(fd, () => storedVersion(snapshot, abs, entry), entry, dest)
        .then(() => {
          result.files++;
          opts.onProgress?.({ files: result.files, bytes: result.bytes });
        })
        .catch((e: unknown) => void (failure ??= e))
        .finally(() => {
          writing.delete(done);
          if (large) largeWriting--;
        });
      writing.add(done);
      if (large) largeWriting++;
      while (writing.size >= FILES_AT_ONCE || largeWriting >= LARGE_FILES_AT_ONCE) await Promise.race(writing);
      if (failure !== undefined) throw failure;
    }
  };

  /** Writes a file's content and metadata, and closes it. */
  const fill = async (fd: number, version: () => Promise<BoundVersion>, entry: TreeEntry, dest: string): Promise<void> => {
    try {
      const file = await version();
      if (file.size > INLINE_SIZE && repo.packFile) {
        // Files are written at once: the total is added to after the await, never across it.
        const written = await unpackVersion(repo, file, fd, opts.signal);
        result.bytes += written;
      } else if (file.size > 0) {
        // Pieces go out in batches of about 1 MiB, one writev each: a block is 32 KiB on average.
        let batch: Buffer[] = [];
        let batched = 0;
        let position = 0;
        const flush = () => {
          if (batch.length > 0) writeAll(fd, batch, position);
          position += batched;
          batch = [];
          batched = 0;
        };
        for await (const piece of readRange(repo, file, 0, file.size - 1)) {
          if (opts.signal?.aborted) throw interrupted();
          result.bytes += piece.length;
          if (position + batched + piece.length < file.size && isHole(piece)) {
            flush();
            position += piece.length;
            continue;
          }
          batch.push(piece);
          batched += piece.length;
          if (batched >= WRITE_BATCH || batch.length >= 512) flush();
        }
        flush();
      }
      // (The last piece is always written, so holes never cut a file short.)
      setMetadata(fd, entry, asRoot, true);
    } catch (e) {
      // A file cut short by a damaged repository must not pass for the real one.
      await fs.rm(osPath(dest), { force: true }).catch(() => {});
      throw e;
    } finally {
      closeSync(fd);
    }
  };

  // Blocks come from the cache when there, but a restore does not add to it (see Repository.fillCache).
  const cacheFill = repo.fillCache;
  repo.fillCache = false;
  try {
    for (const root of roots) {
      const entry = await snapshot.lookup(root);
      if (!entry) throw notFound(`${root} is not in snapshot ${snapshot.id.slice(0, 8)}`);
      // Parents of a selected path are created (once, however many roots share them); a real directory's metadata is restored too.
      let parentAbs = '/';
      for (const name of splitPath(root).slice(0, -1)) {
        parentAbs = path.posix.join(parentAbs, name);
        if (placedParents.has(parentAbs)) continue;
        placedParents.add(parentAbs);
        const parent = await snapshot.lookup(parentAbs);
        if (parent?.type === 'dir') await place(parentAbs, parent);
      }
      if (root !== '/') await place(root, entry);
      for await (const { path: p, entry: e } of snapshot.walk(root, entry)) await place(p, e);
    }
  } finally {
    // Nothing may still write (or be left open) once this returns.
    await Promise.all(writing);
    repo.fillCache = cacheFill;
  }
  if (failure !== undefined) throw failure;

  // Directory modes and times last (writing inside a directory changes its mtime).
  for (let i = dirTimes.length - 1; i >= 0; i--) {
    const { dest, entry } = dirTimes[i]!;
    setDirMetadata(dest, entry, asRoot);
  }
  result.durationMs = Math.round(performance.now() - started);
  return result;
}

/**
 * Throws unless `dir` is the target or a directory below it reached through
 * no symlink: one that became a link since it was made (two names that are
 * one on a case-insensitive file system) would lead outside.
 */
async function checkParent(dir: string, base: string): Promise<void> {
  for (let d = dir; d !== base; d = path.dirname(d)) {
    if (!isWithin(d, base) || !(await fs.lstat(osPath(d))).isDirectory()) {
      throw new StrataError('unsafe_path', `refusing to restore into ${dir}: ${d} is not a directory inside the target`);
    }
  }
}

/** The mode a new file gets from open(2) when asked for `mode`. */
const UMASK = process.umask();

/**
 * Metadata through the open descriptor. Synchronous, like the open and the
 * close: for a tree of small files, a round trip through the thread pool
 * per call cost more than the call.
 */
function setMetadata(fd: number, entry: TreeEntry, asRoot: boolean, created = false): void {
  if (asRoot) {
    try {
      fchownSync(fd, entry.uid, entry.gid);
    } catch {
      // An owner this system cannot set: the file keeps ours.
    }
  }
  // A file made with its mode needs no chmod, unless the umask took bits away or it has setuid, setgid or sticky bits (chown clears some).
  const mode = entry.mode & 0o7777;
  if (!created || mode !== (mode & 0o777 & ~UMASK)) fchmodSync(fd, mode);
  const t = seconds(entry.mtimeNs);
  futimesSync(fd, t, t);
}

/** Through a handle that cannot be a symlink's target: the path may have been replaced by a link since. */
function setDirMetadata(dest: string, entry: TreeEntry, asRoot: boolean): void {
  let fd: number;
  try {
    fd = openSync(osPath(dest), constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW);
  } catch {
    // Gone or no longer a directory: nothing of ours to set.
    return;
  }
  try {
    setMetadata(fd, entry, asRoot);
  } catch {
    // A mode or time the file system refuses: the directory stays as it is.
  } finally {
    closeSync(fd);
  }
}

function seconds(ns: string): number {
  return Number(BigInt(ns) / 1000n) / 1e6;
}

async function ensureDir(dest: string): Promise<void> {
  const at = osPath(dest);
  try {
    const st = await fs.lstat(at);
    if (st.isDirectory()) {
      // Stays writable while we fill it; its stored mode is applied at the end.
      await fs.chmod(at, (st.mode & 0o7777) | 0o700);
      return;
    }
    await fs.rm(at, { force: true });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
  await fs.mkdir(at, { mode: 0o700 });
}

async function removeExisting(dest: string): Promise<void> {
  const at = osPath(dest);
  try {
    const st = await fs.lstat(at);
    await fs.rm(at, { recursive: st.isDirectory(), force: true });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
}

const WRITE_BATCH = 1024 * 1024;
/**
 * Files up to this size are read and written by this thread: a message to a
 * worker and back costs more than decoding a block or two here (a tree of
 * small files restored in 70% of the time).
 */
const INLINE_SIZE = 64 * 1024;
/**
 * Large files written at once. A file's last blocks leave the workers idle
 * until they are in; the next file's first ones fill that gap (a tree of
 * 2 MiB files restored at half the speed of one large file).
 */
const LARGE_FILES_AT_ONCE = 3;
const LARGE_FILE = 1024 * 1024;
/** Files in flight at most, small ones included (each holds a descriptor). */
const FILES_AT_ONCE = 32;

/** A new file at `dest` for writing; whatever was there (a file, a link, a tree) is removed first. */
async function createFile(dest: string, mode: number): Promise<number> {
  const flags = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW;
  try {
    return openSync(osPath(dest), flags, mode);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
  }
  await removeExisting(dest);
  return openSync(osPath(dest), flags, mode);
}

/** Writes every byte of `parts` at `position` (writev may write less than asked). */
function writeAll(fd: number, parts: Buffer[], position: number): void {
  let rest = parts;
  while (rest.length > 0) {
    let bytesWritten = writevSync(fd, rest, position);
    position += bytesWritten;
    while (rest.length > 0 && bytesWritten >= rest[0]!.length) {
      bytesWritten -= rest[0]!.length;
      rest = rest.slice(1);
    }
    if (bytesWritten > 0) rest = [rest[0]!.subarray(bytesWritten), ...rest.slice(1)];
  }
}
