/**
 * Restore: recreate stored absolute paths under a target directory, with
 * contents, modes, times and symlinks. Names come from validated trees, so a
 * path can only land below the target; existing files are replaced, never
 * written through (a symlink in the way is removed, not followed), nothing
 * is created below a directory reached through a symlink, and metadata is
 * set through handles opened without following links.
 *
 * What is already in the target is handled by a policy (`overwrite`, as
 * restic's): `always` replaces it, `if-changed` keeps a file whose type, size
 * and modification time match the snapshot's (a symlink with the same
 * target), `never` keeps anything there. A non-empty directory where a file
 * or symlink belongs is never removed unless `delete` is given: it is left,
 * and reported as a conflict. `delete` removes what the target holds below
 * the restored directories that the snapshot does not (filters permitting).
 */
import { chmodSync, closeSync, constants, fchmodSync, fchownSync, futimesSync, lstatSync, mkdirSync, openSync, readlinkSync, writevSync, type BigIntStats } from 'node:fs';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { interrupted, StrataError, usageError } from '../errors.js';
import { ExcludeMatcher } from '../util/glob.js';
import { isHole } from '../util/holes.js';
import { nameBytes, osPath, readNames } from '../util/names.js';
import { makeNode } from '../util/nodes.js';
import { ACCESS_ACL, DEFAULT_ACL, dropXattr, hasXattr, writeXattrs } from '../util/xattrs.js';
import type { Repository } from '../repo/repository.js';
import { SmallFileWriter, unpackVersion } from './unpack.js';
import { isWithin, splitPath, Snapshot } from './snapshot.js';
import { SnapshotTree, type Entry, type VersionFile } from './snapshot-tree.js';
import { isSpecial, TYPE_NAMES, type EntryType } from './tree.js';

export const OVERWRITE_POLICIES = ['always', 'if-changed', 'never'] as const;
export type OverwritePolicy = (typeof OVERWRITE_POLICIES)[number];

export interface RestoreOptions {
  target: string;
  /** Absolute paths inside the snapshot (default: everything). */
  paths?: string[];
  /** What to do with something already at a destination (default `always`). */
  overwrite?: OverwritePolicy;
  /** Remove what the target holds below the restored directories that the snapshot does not. */
  delete?: boolean;
  /** Decide everything, change nothing: the actions are returned in `actions`. */
  dryRun?: boolean;
  /** Only entries matching one of these (and everything below a matching directory); glob.ts patterns. */
  include?: string[];
  /** Leave out entries matching one of these (and everything below them). */
  exclude?: string[];
  /** The one path's contents go straight into the target, without the path's own prefix. */
  strip?: boolean;
  signal?: AbortSignal;
  /** Bytes written so far, also within a file; `skippedBytes`: of files the policy kept (part of the total, never written). */
  onProgress?: (p: { files: number; bytes: number; skippedBytes: number }) => void;
  /** Given, the bytes of the files selected are counted first (a walk of the trees when paths or filters narrow the selection). */
  onTotal?: (bytes: number) => void;
  onConflict?: (c: RestoreConflict) => void;
  /** Extended attributes are not set. */
  noXattrs?: boolean;
  /** Told of each thing that could not be restored, as it is found. */
  onNotRestored?: (n: NotRestored) => void;
}

/** Something of the snapshot that this restore could not make: a device node (not as root), an extended attribute. */
export interface NotRestored {
  path: string;
  /** What of it: "character device", "block device", "FIFO", or "extended attribute NAME". */
  what: string;
  reason: string;
}

export interface RestoreConflict {
  path: string;
  reason: string;
}

export interface RestoreAction {
  action: 'create' | 'replace' | 'delete' | 'conflict';
  path: string;
  type: string;
}

export interface RestoreResult {
  snapshot: string;
  target: string;
  overwrite: OverwritePolicy;
  dryRun: boolean;
  files: number;
  dirs: number;
  symlinks: number;
  /** FIFOs and device nodes made. */
  specials: number;
  /** Extended attributes set. */
  xattrs: number;
  bytes: number;
  /** Files and symlinks (and directories with what is below them) left as they were by the policy. */
  skipped: number;
  deleted: number;
  /** Non-empty directories left where a file or symlink belongs. */
  conflicts: RestoreConflict[];
  /** What could not be made or set (exit 3): device nodes when not root, extended attributes the target refused. */
  notRestored: NotRestored[];
  /** With `dryRun`: what would be done (entries that would be kept as they are are only counted). */
  actions?: RestoreAction[];
  durationMs: number;
}

/** Restores from a snapshot's tree: its directories, entries and files are reached through it alone. */
export async function restore(repo: Repository, from: SnapshotTree | Snapshot, opts: RestoreOptions): Promise<RestoreResult> {
  const started = performance.now();
  const tree = from instanceof Snapshot ? SnapshotTree.of(from) : from;
  const target = path.resolve(opts.target);
  const policy: OverwritePolicy = opts.overwrite ?? 'always';
  const dryRun = opts.dryRun === true;
  const result: RestoreResult = {
    snapshot: tree.id,
    target,
    overwrite: policy,
    dryRun,
    files: 0,
    dirs: 0,
    symlinks: 0,
    specials: 0,
    xattrs: 0,
    bytes: 0,
    skipped: 0,
    deleted: 0,
    conflicts: [],
    notRestored: [],
    ...(dryRun ? { actions: [] } : {}),
    durationMs: 0,
  };
  const exclude = new ExcludeMatcher(opts.exclude ?? []);
  const include = new ExcludeMatcher(opts.include ?? []);
  const dirTimes: { dest: string; entry: Entry }[] = [];
  const asRoot = process.getuid?.() === 0;
  if (!dryRun) await fs.mkdir(target, { recursive: true });
  // Paths below are built on the target's real path, so any symlink found under it is one to refuse.
  const base = dryRun ? await fs.realpath(target).catch(() => target) : await fs.realpath(target);
  // Consecutive entries often share a directory; placing one changes only itself, never the directories above it.
  let checkedDir = '';
  /** That directory, open, when it could be opened as checked: workers make small files in it through this descriptor. */
  let dirHandle: DirHandle | undefined;
  /** Closes the handle of a directory the walk has left, once no file is being made in it. */
  const leave = (h: DirHandle | undefined) => {
    if (h && --h.users === 0) closeSync(h.fd);
  };
  /** Files still being written, and the first error one of them met. */
  const writing = new Set<Promise<void>>();
  /** Files made, by what their hard-linked names share (Entry.linkGroup): the next such name becomes a link. */
  const linked = new Map<string, string>();
  /** Of `writing`, the large files. */
  let largeWriting = 0;
  // Small files go to the workers many to a message (a repository this process reads itself).
  const small = !dryRun && repo.unpacksOnThreads ? new SmallFileWriter(repo) : undefined;
  let failure: unknown;
  let skippedBytes = 0;

  const selected = (opts.paths && opts.paths.length > 0 ? opts.paths : ['/']).map((p) => path.posix.resolve(p));
  const roots = selected.filter((p) => !selected.some((q) => q !== p && isWithin(p, q)));
  if (opts.strip && roots.length !== 1) throw usageError('--strip takes exactly one path to restore');
  const placedParents = new Set<string>();
  /** Directories the walk must not enter (excluded, or kept as something else by the policy). */
  const noDescend = new Set<string>();
  /** Path components left off the front of every destination (with `strip`). */
  let stripDepth = 0;
  const destOf = (abs: string) => path.join(base, ...splitPath(abs).slice(stripDepth));

  const missed = (n: NotRestored) => {
    result.notRestored.push(n);
    opts.onNotRestored?.(n);
  };
  /**
   * A new entry takes its directory's default ACL, but a directory this
   * restore makes or enters has it only once the restore ends (see
   * ensureDir's caller): only the target's own can be taken, by what is
   * made right in it. That ACL is removed from what had none.
   */
  const inheritsAcl = !opts.noXattrs && !dryRun && hasXattr(base, true, DEFAULT_ACL);
  const inheriting = (dest: string) => inheritsAcl && path.dirname(dest) === base;
  /** An entry's extended attributes, set on what is at `dest` (after its data and owner, before its times). */
  const setXattrs = (dest: string, entry: Entry) => {
    if (opts.noXattrs || dryRun) return;
    const attrs = entry.xattrs;
    const dir = entry.type === 'dir';
    if (inheriting(dest) && !attrs.some(([name]) => name === ACCESS_ACL)) dropXattr(dest, dir, ACCESS_ACL);
    if (attrs.length === 0) return;
    const failed = writeXattrs(dest, dir, attrs);
    result.xattrs += attrs.length - failed.length;
    for (const f of failed) missed({ path: dest, what: `extended attribute ${f.name}`, reason: f.reason });
  };

  const act = (action: RestoreAction['action'], dest: string, type: string) => result.actions?.push({ action, path: dest, type });
  const conflict = (dest: string, entry: Entry) => {
    const c = { path: dest, reason: `a non-empty directory is where the snapshot has a ${TYPE_NAMES[entry.type]}; left as it is (--delete replaces it)` };
    result.conflicts.push(c);
    act('conflict', dest, entry.type);
    opts.onConflict?.(c);
  };

  /** Directories an include pattern selected, whole (the walk lists a directory's children before it enters any). */
  const includedDirs = new Set<string>();
  const included = (abs: string, name: string) => include.empty || includedDirs.has(path.posix.dirname(abs)) || include.excludes(abs, name);
  /** True when a path the target holds and the snapshot lacks may be deleted: the filters would have selected it. */
  const mayDelete = (abs: string, name: string) => !exclude.excludes(abs, name) && included(abs, name);

  /** Entries to place below `root`, in walk order, the filters applied: a directory with nothing selected below it is left out. */
  async function* selection(rootEntry: Entry): AsyncGenerator<Entry> {
    /** Directories not selected themselves, made once something below them is. */
    const pending = new Map<string, Entry>();
    const all = (async function* () {
      yield rootEntry;
      if (rootEntry.type === 'dir') yield* tree.walk(rootEntry, { descend: (d) => !noDescend.has(d.path) });
    })();
    for await (const item of all) {
      const name = path.posix.basename(item.path);
      if (item.path !== '/' && exclude.excludes(item.path, name)) {
        noDescend.add(item.path);
        continue;
      }
      if (!include.empty) {
        if (!included(item.path, name)) {
          if (item.type === 'dir') pending.set(item.path, item);
          continue;
        }
        if (item.type === 'dir') includedDirs.add(item.path);
        const above: string[] = [];
        for (let d = item.path; d !== '/' && pending.has(path.posix.dirname(d)); ) {
          d = path.posix.dirname(d);
          above.unshift(d);
        }
        for (const d of above) {
          yield pending.get(d)!;
          pending.delete(d);
        }
      }
      yield item;
    }
  }

  /** How things at `dest` stand: undefined when nothing is there (or a parent is not a directory, in a dry run). */
  const existing = async (dest: string): Promise<BigIntStats | undefined> => {
    try {
      // Synchronous: a tree's directories each cost a round trip through the thread pool, its wait idle time of this thread.
      return lstatSync(osPath(dest), { bigint: true });
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || (dryRun && code === 'ENOTDIR')) return undefined;
      throw e;
    }
  };

  /** What to do about `st` where a file or symlink goes: keep it, replace it, or leave it as a conflict. */
  const decide = async (dest: string, st: BigIntStats, entry: Entry): Promise<'skip' | 'replace' | 'conflict'> => {
    if (policy === 'never') return 'skip';
    if (st.isDirectory()) return opts.delete || (await readNames(dest)).length === 0 ? 'replace' : 'conflict';
    if (policy === 'if-changed' && (await unchanged(dest, st, entry))) return 'skip';
    return 'replace';
  };

  /** Handles something in the way of a file or symlink; true when the way is now clear. */
  const clearWay = async (dest: string, st: BigIntStats, entry: Entry): Promise<boolean> => {
    const d = await decide(dest, st, entry);
    if (d === 'skip') {
      result.skipped++;
      if (entry.type === 'file') {
        skippedBytes += entry.size;
        opts.onProgress?.({ files: result.files, bytes: result.bytes, skippedBytes });
      }
      return false;
    }
    if (d === 'conflict') {
      conflict(dest, entry);
      return false;
    }
    act('replace', dest, entry.type);
    if (!dryRun) await removePath(dest, st.isDirectory());
    return true;
  };

  /** With `delete`: removes what the directory at `dest` holds that the snapshot's `entry` does not. */
  const deleteExtras = async (abs: string, dest: string, entry: Entry): Promise<void> => {
    if (!opts.delete || entry.type !== 'dir') return;
    let present: string[];
    try {
      present = await readNames(dest);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR') return;
      throw e;
    }
    const wanted = new Set((await tree.list(entry)).map((e) => e.name));
    for (const name of present) {
      const p = path.posix.join(abs, name);
      if (wanted.has(name) || !mayDelete(p, name)) continue;
      const at = path.join(dest, name);
      const st = await fs.lstat(osPath(at));
      act('delete', at, st.isDirectory() ? 'dir' : st.isSymbolicLink() ? 'symlink' : 'file');
      if (!dryRun) await removePath(at, true);
      result.deleted++;
    }
  };

  /** Removes what is at `at`: a name checked to be a real directory may now be another thing (two names one on a case-insensitive file system). */
  const removePath = async (at: string, recursive: boolean): Promise<void> => {
    checkedDir = '';
    await fs.rm(osPath(at), { recursive, force: true });
  };

  /** `parentOnly`: a parent of a selected path, made, but what else it holds is not the restore's business. */
  const place = async (abs: string, entry: Entry, parentOnly = false): Promise<void> => {
    if (opts.signal?.aborted) throw interrupted();
    const dest = destOf(abs);
    if (dest === base) {
      // The snapshot's root, or the one path's directory with `strip`: the target itself, which keeps its own metadata.
      if (!parentOnly) await deleteExtras(abs, dest, entry);
      return;
    }
    if (!dryRun && path.dirname(dest) !== checkedDir) {
      leave(dirHandle);
      dirHandle = undefined;
      const fd = await checkParent(path.dirname(dest), base);
      // The walk holds one use of it while it is the current directory.
      if (fd !== undefined) dirHandle = { fd, users: 1 };
      checkedDir = path.dirname(dest);
    }
    if (entry.type === 'dir') {
      const st = await existing(dest);
      if (st && !st.isDirectory()) {
        if (policy === 'never') {
          result.skipped++;
          noDescend.add(abs);
          return;
        }
        act('replace', dest, 'dir');
        if (!dryRun) await removePath(dest, false);
      } else if (!st) act('create', dest, 'dir');
      if (!dryRun) {
        // What was not a directory was removed above.
        await ensureDir(dest, { st: st?.isDirectory() ? st : undefined });
        // Its own default ACL (if it has one) is set at the end: until then, what is made in it must not take one.
        if (!opts.noXattrs) dropXattr(dest, true, DEFAULT_ACL);
        dirTimes.push({ dest, entry });
      }
      result.dirs++;
      if (!parentOnly) await deleteExtras(abs, dest, entry);
    } else if (dryRun) {
      const st = await existing(dest);
      if (st && !(await clearWay(dest, st, entry))) return;
      if (!st) act('create', dest, entry.type);
      if (entry.type === 'symlink') result.symlinks++;
      else if (isSpecial(entry.type)) {
        if (entry.type !== 'fifo' && !asRoot) missed({ path: dest, what: TYPE_NAMES[entry.type], reason: DEVICES_AS_ROOT });
        else result.specials++;
      } else {
        result.files++;
        result.bytes += entry.size;
      }
    } else if (entry.type === 'symlink') {
      const at = osPath(dest);
      try {
        await fs.symlink(osPath(entry.target ?? ''), at);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
        const st = await existing(dest);
        if (st && !(await clearWay(dest, st, entry))) return;
        await fs.symlink(osPath(entry.target ?? ''), at);
      }
      if (asRoot) await fs.lchown(at, entry.uid, entry.gid).catch(() => {});
      setXattrs(dest, entry);
      const t = seconds(entry.mtimeNs);
      await fs.lutimes(at, t, t).catch(() => {});
      result.symlinks++;
    } else if (isSpecial(entry.type)) {
      if (entry.type !== 'fifo' && !asRoot) {
        missed({ path: dest, what: TYPE_NAMES[entry.type], reason: DEVICES_AS_ROOT });
        return;
      }
      const make = () => makeNode(dest, entry.type as 'fifo' | 'chardev' | 'blockdev', entry.mode, entry.rdev);
      try {
        try {
          await make();
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
          const st = await existing(dest);
          if (st && !(await clearWay(dest, st, entry))) return;
          await make();
        }
      } catch (e) {
        // A container without the right to make devices, a file system that makes no FIFOs.
        missed({ path: dest, what: TYPE_NAMES[entry.type], reason: (e as Error).message });
        return;
      }
      const at = osPath(dest);
      // By path, never through a handle: opening a FIFO waits for a writer. lchown and lutimes follow
      // no link; the mode was given to mknod (and no chmod follows: it would follow a link put here since).
      if (asRoot) await fs.lchown(at, entry.uid, entry.gid).catch(() => {});
      setXattrs(dest, entry);
      const t = seconds(entry.mtimeNs);
      await fs.lutimes(at, t, t).catch(() => {});
      result.specials++;
    } else {
      // Created here, right after its directory was checked; looked up and written off this
      // loop: a tree of small files is bound by round trips through the thread pool, which overlap.
      const group = entry.linkGroup;
      const first = group === undefined ? undefined : linked.get(group);
      if (first !== undefined) {
        // Another name of a file this restore made: a hard link to it, one file again as it was.
        if (!(await linkFile(first, dest, (st) => clearWay(dest, st, entry)))) return;
        result.files++;
        opts.onProgress?.({ files: result.files, bytes: result.bytes, skippedBytes });
        return;
      }
      const large = entry.size >= LARGE_FILE;
      let done: Promise<void>;
      const h = dirHandle;
      if (small && h && group === undefined && entry.size <= SMALL_FILE && entry.xattrs.length === 0 && !inheriting(dest)) {
        // Created, written and closed by a worker, in the directory checked above.
        h.users++;
        done = makeSmall(h, dest, entry).finally(() => leave(h));
      } else {
        const fd = await createFile(dest, entry.mode & 0o777, (st) => clearWay(dest, st, entry));
        if (fd === undefined) return;
        if (group !== undefined) linked.set(group, dest);
        done = fill(fd, () => tree.open(entry), entry, dest).then(() => {
          result.files++;
          opts.onProgress?.({ files: result.files, bytes: result.bytes, skippedBytes });
        });
      }
      done = done
        .catch((e: unknown) => void (failure ??= e))
        .finally(() => {
          writing.delete(done);
          if (large) largeWriting--;
        });
      writing.add(done);
      if (large) largeWriting++;
      while (writing.size >= FILES_AT_ONCE || largeWriting >= LARGE_FILES_AT_ONCE) {
        // Files gathered for the workers go out before anything waits for them.
        small?.flush();
        await Promise.race(writing);
      }
      if (failure !== undefined) throw failure;
    }
  };

  /**
   * A small file made by a worker through its directory's handle. Where the
   * worker did not make it (something is in the way, or an error), or did
   * not make it whole, it is made here as any other file: the overwrite
   * policy decides, and any error is worded as usual.
   */
  const makeSmall = async (dir: DirHandle, dest: string, entry: Entry): Promise<void> => {
    const file = await tree.open(entry);
    const mode = entry.mode & 0o7777;
    const made = await small!.create(file.version, {
      dir: dir.fd,
      name: nameBytes(path.basename(dest)),
      mode: entry.mode & 0o777,
      chmod: mode !== (mode & 0o777 & ~UMASK) ? mode : -1,
      uid: asRoot ? entry.uid : -1,
      gid: asRoot ? entry.gid : -1,
      mtime: seconds(entry.mtimeNs),
    });
    if (made !== 'done') {
      if (made === 'failed') await fs.rm(osPath(dest), { force: true });
      // Checked again: the walk may have moved on, and what it removed since may have changed the way here.
      const fd = await checkParent(path.dirname(dest), base);
      if (fd !== undefined) closeSync(fd);
      const out = await createFile(dest, entry.mode & 0o777, (st) => clearWay(dest, st, entry));
      if (out === undefined) return;
      await fill(out, async () => file, entry, dest);
    } else {
      result.bytes += file.size;
    }
    result.files++;
    opts.onProgress?.({ files: result.files, bytes: result.bytes, skippedBytes });
  };

  const written = (n: number) => {
    result.bytes += n;
    opts.onProgress?.({ files: result.files, bytes: result.bytes, skippedBytes });
  };

  /** Writes a file's content and metadata, and closes it. */
  const fill = async (fd: number, open: () => Promise<VersionFile>, entry: Entry, dest: string): Promise<void> => {
    try {
      const file = await open();
      if (file.size > SMALL_FILE && repo.unpacksOnThreads) {
        await unpackVersion(repo, file.version, fd, opts.signal, written);
      } else if (file.size > 0 && small) {
        written(await small.write(file.version, fd));
      } else if (file.size > 0) {
        // Pieces go out in batches of about 1 MiB, one writev each: a block is 32 KiB on average.
        let batch: Buffer[] = [];
        let batched = 0;
        let position = 0;
        const flush = () => {
          if (batch.length > 0) writeAll(fd, batch, position);
          position += batched;
          if (batched > 0) written(batched);
          batch = [];
          batched = 0;
        };
        // Each block is read once: kept, it would only push out what small reads come back to.
        for await (const piece of file.stream(0, file.size - 1, { cache: false, shared: true })) {
          if (opts.signal?.aborted) throw interrupted();
          if (position + batched + piece.length < file.size && isHole(piece)) {
            flush();
            position += piece.length;
            written(piece.length);
            continue;
          }
          batch.push(piece);
          batched += piece.length;
          if (batched >= WRITE_BATCH || batch.length >= 512) flush();
        }
        flush();
      }
      // (The last piece is always written, so holes never cut a file short.)
      // A file made under a default ACL has its mode from the ACL, not the umask: set it.
      setMetadata(fd, entry, asRoot, !inheriting(dest), () => setXattrs(dest, entry));
    } catch (e) {
      // A file cut short by a damaged repository must not pass for the real one.
      await fs.rm(osPath(dest), { force: true }).catch(() => {});
      throw e;
    } finally {
      closeSync(fd);
    }
  };

  const rootEntries: Entry[] = [];
  for (const root of roots) rootEntries.push(await tree.stat(root));
  if (opts.strip) stripDepth = splitPath(rootEntries[0]!.type === 'dir' ? roots[0]! : path.posix.dirname(roots[0]!)).length;

  if (opts.onTotal) {
    const whole = roots.length === 1 && roots[0] === '/' && include.empty && exclude.empty;
    let total = whole ? tree.stats?.bytes : undefined;
    if (total === undefined) {
      total = 0;
      for (const entry of rootEntries) for await (const e of selection(entry)) if (e.type === 'file') total += e.size;
      noDescend.clear();
    }
    opts.onTotal(total);
  }

  // Blocks come from the cache when there, but a restore does not add to it (see Repository.fillCache).
  const cacheFill = repo.fillCache;
  repo.fillCache = false;
  // From a bucket, a pack read a few times comes whole, once: a restore reads most of every pack it touches.
  const wholePacks = repo.wholePacks;
  repo.wholePacks = true;
  try {
    for (const entry of rootEntries) {
      // Parents of a selected path are created (once, however many roots share them); a real directory's metadata is restored too.
      let parentAbs = '/';
      if (!opts.strip) {
        for (const name of splitPath(entry.path).slice(0, -1)) {
          parentAbs = path.posix.join(parentAbs, name);
          if (placedParents.has(parentAbs)) continue;
          placedParents.add(parentAbs);
          const parent = await tree.lookup(parentAbs);
          if (parent?.type === 'dir') await place(parentAbs, parent, true);
        }
      }
      for await (const e of selection(entry)) await place(e.path, e);
    }
  } finally {
    // Nothing may still write (or be left open) once this returns.
    small?.flush();
    await Promise.all(writing);
    leave(dirHandle);
    dirHandle = undefined;
    repo.fillCache = cacheFill;
    repo.wholePacks = wholePacks;
  }
  if (failure !== undefined) throw failure;

  // Directory modes and times last (writing inside a directory changes its mtime).
  for (let i = dirTimes.length - 1; i >= 0; i--) {
    const { dest, entry } = dirTimes[i]!;
    setDirMetadata(dest, entry, asRoot, () => setXattrs(dest, entry));
  }
  result.durationMs = Math.round(performance.now() - started);
  return result;
}

/** True when a file or symlink at `dest` is the snapshot's entry by type, size and modification time (a symlink: by target). */
async function unchanged(dest: string, st: BigIntStats, entry: Entry): Promise<boolean> {
  if (isSpecial(entry.type)) return typeOfStat(st) === entry.type && (entry.type === 'fifo' || st.rdev === entry.rdev);
  if (entry.type === 'symlink') return st.isSymbolicLink() && (await fs.readlink(osPath(dest))).toString() === (entry.target ?? '');
  if (!st.isFile() || st.size !== BigInt(entry.size)) return false;
  // Times are set to the microsecond (utimes takes seconds as a double).
  const micros = (ns: bigint) => ns / 1000n;
  const d = micros(st.mtimeNs) - micros(entry.mtimeNs);
  return d >= -1n && d <= 1n;
}

/**
 * Throws unless `dir` is the target or a directory below it reached through
 * no symlink: one that became a link since it was made (two names that are
 * one on a case-insensitive file system) would lead outside. Returns it
 * open (the caller closes it) when it was checked by opening it, undefined
 * when it was checked level by level.
 */
async function checkParent(dir: string, base: string): Promise<number | undefined> {
  if (isWithin(dir, base)) {
    const fd = openReached(dir);
    if (fd !== undefined) return fd;
  }
  // Every level, every time: a directory checked before may have been swapped for a link since.
  for (let d = dir; d !== base; d = path.dirname(d)) {
    if (!isWithin(d, base) || !(await fs.lstat(osPath(d))).isDirectory()) {
      throw new StrataError('unsafe_path', `refusing to restore into ${dir}: ${d} is not a directory inside the target`);
    }
  }
  return undefined;
}

/** A directory open for the files made in it, and how many still use it (the walk, while it is there, and each file being made). */
interface DirHandle {
  fd: number;
  users: number;
}

/**
 * `dir` (a real path) open, when it is a directory reached through no
 * symlink: the directory opened there is at that very path, as the kernel
 * names it. Three calls whatever the depth, where a look at each level costs
 * one per level. Undefined when that cannot be told here (no /proc): ask
 * level by level.
 */
function openReached(dir: string): number | undefined {
  let fd: number;
  try {
    fd = openSync(osPath(dir), constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW);
  } catch {
    return undefined;
  }
  let reached = false;
  try {
    reached = readlinkSync(`/proc/self/fd/${fd}`, { encoding: 'buffer' }).equals(Buffer.from(osPath(dir)));
  } catch {
    // No /proc.
  }
  if (reached) return fd;
  closeSync(fd);
  return undefined;
}

const DEVICES_AS_ROOT = 'device nodes are made only when restoring as root';

/** The type of what is on disk, in a tree entry's words. */
function typeOfStat(st: BigIntStats): EntryType | undefined {
  if (st.isFile()) return 'file';
  if (st.isDirectory()) return 'dir';
  if (st.isSymbolicLink()) return 'symlink';
  if (st.isFIFO()) return 'fifo';
  if (st.isCharacterDevice()) return 'chardev';
  if (st.isBlockDevice()) return 'blockdev';
  return undefined;
}

/** The mode a new file gets from open(2) when asked for `mode`. */
const UMASK = process.umask();

/**
 * Metadata through the open descriptor. Synchronous, like the open and the
 * close: for a tree of small files, a round trip through the thread pool
 * per call cost more than the call.
 */
function setMetadata(fd: number, entry: Entry, asRoot: boolean, created = false, beforeTimes?: () => void): void {
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
  // Extended attributes after the owner (chown drops file capabilities) and the mode (an ACL's mask is the group's bits).
  beforeTimes?.();
  const t = seconds(entry.mtimeNs);
  futimesSync(fd, t, t);
}

/** Through a handle that cannot be a symlink's target: the path may have been replaced by a link since. */
function setDirMetadata(dest: string, entry: Entry, asRoot: boolean, beforeTimes: () => void): void {
  let fd: number;
  try {
    fd = openSync(osPath(dest), constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW);
  } catch {
    // Gone or no longer a directory: nothing of ours to set.
    return;
  }
  try {
    setMetadata(fd, entry, asRoot, false, beforeTimes);
  } catch {
    // A mode or time the file system refuses: the directory stays as it is.
  } finally {
    closeSync(fd);
  }
}

/**
 * A time for utimes, in seconds. A double near today's epoch carries about a
 * quarter of a microsecond, and the kernel truncates it: aimed at the middle
 * of its microsecond, a time lands in that microsecond, not just below it
 * (a file set to x.123000 s read back as x.122999).
 */
function seconds(ns: bigint): number {
  return (Number(ns / 1000n) + 0.5) / 1e6;
}

/**
 * Makes `dest` a directory, writable by us until the end. `seen`: what an
 * lstat of it just found (undefined: nothing), so it need not be looked at again.
 */
async function ensureDir(dest: string, seen?: { st: BigIntStats | undefined }): Promise<void> {
  const at = osPath(dest);
  if (seen && !seen.st) {
    try {
      return mkdirSync(at, { mode: 0o700 });
    } catch (e) {
      // Something came since it was looked at: as if it had not been.
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
  }
  try {
    const st = seen?.st?.isDirectory() ? seen.st : lstatSync(at, { bigint: true });
    if (st.isDirectory()) {
      // Stays writable while we fill it; its stored mode is applied at the end.
      chmodSync(at, Number(st.mode & 0o7777n) | 0o700);
      return;
    }
    await fs.rm(at, { force: true });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
  mkdirSync(at, { mode: 0o700 });
}

const WRITE_BATCH = 1024 * 1024;
/**
 * Files up to this size go to the workers many to a message, each written
 * whole by one of them; larger ones are spread over the workers a batch of
 * blocks at a time, each batch a message. Every message wakes a worker,
 * which costs this thread 0.1 ms on 2 cores: a tree's files of 64 KiB to
 * 1 MiB each took one or two (about 150 of 500 messages restoring the trees
 * bench's release).
 */
const SMALL_FILE = 1024 * 1024 - 1;
/**
 * Large files written at once. A file's last blocks leave the workers idle
 * until they are in; the next file's first ones fill that gap (a tree of
 * 2 MiB files restored at half the speed of one large file).
 */
const LARGE_FILES_AT_ONCE = 3;
const LARGE_FILE = 1024 * 1024;
/**
 * Files in flight at most, small ones included. Most are small files a worker
 * creates and holds open only while it writes them; a file made here holds
 * a descriptor until it is written.
 */
const FILES_AT_ONCE = 512;

/** A new file at `dest` for writing; whatever was there goes first if `clear` says so (else no file: undefined). */
async function createFile(dest: string, mode: number, clear: (st: BigIntStats) => Promise<boolean>): Promise<number | undefined> {
  const flags = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW;
  try {
    return openSync(osPath(dest), flags, mode);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
  }
  if (!(await clear(await fs.lstat(osPath(dest), { bigint: true })))) return undefined;
  return openSync(osPath(dest), flags, mode);
}

/** A hard link at `dest` to `existing`; whatever was at `dest` goes first if `clear` says so (else no link: false). */
async function linkFile(existing: string, dest: string, clear: (st: BigIntStats) => Promise<boolean>): Promise<boolean> {
  try {
    await fs.link(osPath(existing), osPath(dest));
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
  }
  if (!(await clear(await fs.lstat(osPath(dest), { bigint: true })))) return false;
  await fs.link(osPath(existing), osPath(dest));
  return true;
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
