/**
 * The file system the kernel sees: FUSE operations answered from the
 * layout (layout.ts) and the snapshots' trees, reads through open files
 * (handles.ts). Read-only: every change is refused with EROFS. Snapshots never
 * change, so the kernel may keep names, attributes and pages for as long as
 * it likes; reads are large and many are served at once.
 */
import { StrataError } from '../errors.js';
import type { Entry, SnapshotTree, XattrList } from '../engine/snapshot-tree.js';
import { errno, loadFuse, type FuseConnection, type FuseInstance, type FuseModule, type FuseOperations, type FuseStats } from './binding.js';
import { OpenFiles } from './handles.js';
import { direntStats, Listings } from './listings.js';
import { LayoutLink, type Layout, type LayoutDir } from './layout.js';
import { shownName, storedPath } from './names.js';
import { checkDevice, checkMountpoint } from './mountpoint.js';
import * as fs from 'node:fs/promises';

/** The kernel may keep names and attributes this long (seconds): snapshots never change. */
const KERNEL_TIMEOUT = 24 * 3600;
/** The largest read the kernel is asked to send, and what it may read ahead. */
const MAX_READ = 1024 * 1024;
const READ_AHEAD_KB = 4096;
/** Requests served at once. */
const CONCURRENCY = 32;
/** How long one operation may take (a cold read through a slow server). */
const OP_TIMEOUT_MS = 120_000;
/**
 * A mount of the whole repository looks for new and forgotten snapshots this
 * often; a listing of the mount's own directories, or a name not found in
 * them, looks at once (at most every MIN_REFRESH_MS).
 */
export const REFRESH_MS = 2000;
const MIN_REFRESH_MS = 200;

const O_ACCMODE = 3;
const W_OK = 2;

export interface MountHandle {
  /** The absolute mountpoint. */
  mountpoint: string;
  /** Resolves once the mount is gone: unmounted by stop(), or from outside (fusermount3 -u). */
  done: Promise<void>;
  /** Unmounts (idempotent); resolves once the mount is gone. */
  stop(): Promise<void>;
  /** Tells the kernel to drop what it keeps of a path's name (never from inside an operation). */
  invalidate(p: string): Promise<void>;
  readonly files: OpenFiles;
}

export interface MountOptions {
  /** Report an operation that failed for a reason other than a missing name (a damaged block, a server gone). */
  onError?: (message: string) => void;
  debug?: boolean;
  /** For a layout of the whole repository: the snapshots there now, oldest first (the layout follows them). */
  snapshots?: (shown: readonly SnapshotTree[]) => Promise<SnapshotTree[]>;
}

export function timespec(ns: bigint): { seconds: number; nanoseconds: number } {
  let s = ns / 1_000_000_000n;
  let n = ns % 1_000_000_000n;
  if (n < 0n) {
    s -= 1n;
    n += 1_000_000_000n;
  }
  return { seconds: Number(s), nanoseconds: Number(n) };
}

const uid = process.getuid?.() ?? 0;
const gid = process.getgid?.() ?? 0;

function layoutStats(dir: LayoutDir): FuseStats {
  const t = timespec(BigInt(dir.time) * 1_000_000n);
  return { mode: 0o40555, uid, gid, size: 4096, nlink: 2, blksize: 4096, blocks: 8, atime: t, mtime: t, ctime: t };
}

function linkStats(link: LayoutLink): FuseStats {
  const t = timespec(BigInt(link.time) * 1_000_000n);
  const size = Buffer.byteLength(link.target);
  return { mode: 0o120777, uid, gid, size, nlink: 1, blksize: 4096, blocks: 0, atime: t, mtime: t, ctime: t };
}

function entryStats(e: Entry, root?: SnapshotTree): FuseStats {
  // A snapshot's root directory is stored without a time of its own: it shows the snapshot's.
  const t = timespec(root ? BigInt(root.time) * 1_000_000n : e.mtimeNs);
  const size = e.type === 'symlink' ? Buffer.byteLength(e.target ?? '') : e.size;
  return {
    mode: e.mode,
    uid: e.uid,
    gid: e.gid,
    size,
    nlink: e.type === 'dir' ? 2 : 1,
    // A FIFO or device shows as one (its mode says which); the kernel, not this mount, answers its opens.
    ...(e.rdev !== undefined ? { rdev: e.rdev } : {}),
    blksize: 128 * 1024,
    blocks: Math.ceil(size / 512),
    atime: t,
    mtime: t,
    ctime: t,
  };
}

/**
 * The extended attributes a mount shows: all that were stored but POSIX ACLs
 * (system.*). The kernel answers those itself on a FUSE mount that does not
 * ask to enforce ACLs (none here), so listing them would name attributes
 * that cannot be read.
 */
export function shownXattrs(list: XattrList): XattrList {
  return list.filter(([n]) => !n.startsWith('system.'));
}

/**
 * What getxattr answers for `name`: its value; ENODATA (null) for a user.* or
 * trusted.* name the entry lacks; and EOPNOTSUPP for a system.* name, or a
 * security.* name it lacks. `ls -l` asks every file for its SELinux label and
 * ACL, and stops asking on a file system that answers EOPNOTSUPP: answered
 * ENODATA, a warm `ls -l` of 100,000 entries made 200,000 more round trips.
 */
export function xattrAnswer(fuse: FuseModule, list: XattrList, name: string): Buffer | null | number {
  if (name.startsWith('system.')) return errno(fuse, 'EOPNOTSUPP');
  const value = list.find(([n]) => n === name)?.[1];
  if (value) return value;
  return name.startsWith('security.') ? errno(fuse, 'EOPNOTSUPP') : null;
}

/** Answers a getxattr with what xattrAnswer says. */
export function answerXattr(answer: Buffer | null | number, cb: (code: number, value?: Buffer | null) => void): void {
  if (typeof answer === 'number') cb(answer);
  else cb(0, answer);
}

/** The errno an error of a read or lookup answers with. */
export function errnoOf(fuse: FuseModule, e: unknown): number {
  if (e instanceof StrataError) {
    switch (e.code) {
      case 'not_found':
        return errno(fuse, 'ENOENT');
      case 'not_directory':
        return errno(fuse, 'ENOTDIR');
      case 'is_directory':
        return errno(fuse, 'EISDIR');
      case 'not_file':
        return errno(fuse, 'EINVAL');
      default:
        return errno(fuse, 'EIO');
    }
  }
  return errno(fuse, 'EIO');
}

/**
 * Keeps a layout of the whole repository up to date: `refresh` asks for the
 * snapshots (one at a time; callers then share the answer), and the paths
 * that no longer lead where they did wait in `gone` for the kernel to be told.
 */
export class Follower {
  private last = 0;
  private running?: Promise<void>;
  readonly gone: string[] = [];

  constructor(
    private readonly layout: Layout,
    private readonly snapshots: (shown: readonly SnapshotTree[]) => Promise<SnapshotTree[]>,
  ) {}

  /** Brings the layout up to date, unless it was within `within` ms. */
  refresh(within = MIN_REFRESH_MS): Promise<void> {
    if (this.running) return this.running;
    if (Date.now() - this.last < within) return Promise.resolve();
    this.running = (async () => {
      try {
        const trees = await this.snapshots(this.layout.trees());
        this.gone.push(...this.layout.update(trees));
      } finally {
        this.last = Date.now();
        this.running = undefined;
      }
    })();
    return this.running;
  }
}

/** The operations of a read-only mount of `layout` (kept up to date by `follower`, when given). */
export function operations(fuse: FuseModule, layout: Layout, files: OpenFiles, report: (message: string) => void, follower?: Follower, listings = new Listings()): FuseOperations {
  const ENOENT = errno(fuse, 'ENOENT');
  const EROFS = errno(fuse, 'EROFS');
  const fail = (what: string, p: string, e: unknown): number => {
    const code = errnoOf(fuse, e);
    if (code !== ENOENT) report(`${what} ${p}: ${(e as Error).message}`);
    return code;
  };
  /** Looks at the repository again, if a follower keeps the layout; a failure leaves the layout as it was. */
  const refresh = async () => {
    try {
      await follower?.refresh();
    } catch (e) {
      report(`list snapshots: ${(e as Error).message}`);
    }
  };
  /** The entry at a mount path inside a snapshot, or a directory or link of the layout. */
  const find = async (p: string): Promise<{ layout: LayoutDir } | { link: LayoutLink } | { entry: Entry; tree: SnapshotTree; root: boolean } | undefined> => {
    let place = layout.resolve(p);
    // A name of the layout not there yet may be a snapshot made since the last look.
    if (!place && follower) {
      await refresh();
      place = layout.resolve(p);
    }
    if (!place) return undefined;
    if (place.kind === 'layout') return { layout: place.dir };
    if (place.kind === 'link') return { link: place.link };
    // A name with bytes that are not UTF-8 is shown with them as \xNN: looked up as stored.
    const other = storedPath(place.path);
    const entry = (await place.tree.lookup(place.path)) ?? (other !== undefined ? await place.tree.lookup(other) : undefined);
    return entry && { entry, tree: place.tree, root: place.path === '/' };
  };
  const statsOf = (f: NonNullable<Awaited<ReturnType<typeof find>>>): FuseStats =>
    'layout' in f ? layoutStats(f.layout) : 'link' in f ? linkStats(f.link) : entryStats(f.entry, f.root ? f.tree : undefined);
  const refuse = (...args: unknown[]) => (args[args.length - 1] as (code: number) => void)(EROFS);

  const ops: FuseOperations = {
    initWithConfig(conn: FuseConnection, cb) {
      // As much read-ahead as the kernel offers, and reads of one file sent concurrently.
      cb(0, { maxReadahead: conn.maxReadahead, asyncRead: true });
    },
    getattr(p, cb) {
      find(p).then(
        (f) => (f ? cb(0, statsOf(f)) : cb(ENOENT)),
        (e) => cb(fail('stat', p, e)),
      );
    },
    readdir(p, cb) {
      (async () => {
        if (follower && layout.resolve(p)?.kind === 'layout') await refresh();
        const f = await find(p);
        if (!f) return cb(ENOENT);
        const self = statsOf(f);
        if ('link' in f) return cb(errno(fuse, 'ENOTDIR'));
        if ('layout' in f) {
          const names = f.layout.names();
          const stats = await Promise.all(
            names.map(async (n) => {
              const e = f.layout.entries.get(n)!;
              if ('entries' in e) return layoutStats(e);
              if (e instanceof LayoutLink) return linkStats(e);
              return entryStats(await e.stat('/'), e);
            }),
          );
          return cb(0, ['.', '..', ...names], [self, self, ...stats]);
        }
        if (f.entry.type !== 'dir') return cb(errno(fuse, 'ENOTDIR'));
        const { entry, tree } = f;
        const l = await listings.get(`${tree.id}\0${entry.path}`, async () => {
          const entries = await tree.list(entry);
          const dir = direntStats(entry.mode);
          return { names: ['.', '..', ...entries.map((e) => shownName(e.name))], stats: [dir, dir, ...entries.map((e) => direntStats(e.mode))] };
        });
        return cb(0, l.names, l.stats);
      })().catch((e) => cb(fail('list', p, e)));
    },
    readlink(p, cb) {
      find(p).then(
        (f) =>
          !f ? cb(ENOENT) : 'link' in f ? cb(0, f.link.target) : 'entry' in f && f.entry.type === 'symlink' ? cb(0, f.entry.target ?? '') : cb(errno(fuse, 'EINVAL')),
        (e) => cb(fail('readlink', p, e)),
      );
    },
    open(p, flags, cb) {
      if ((flags & O_ACCMODE) !== 0) return cb(EROFS);
      (async () => {
        const f = await find(p);
        if (!f) return cb(ENOENT);
        if ('layout' in f) return cb(errno(fuse, 'EISDIR'));
        if ('link' in f) return cb(errno(fuse, 'ELOOP'));
        const file = await f.tree.open(f.entry);
        // The pages of a file once read stay valid: the snapshot never changes.
        return cb(0, { fd: files.open(file), keepCache: true });
      })().catch((e) => cb(fail('open', p, e)));
    },
    // readBuffer, not read: the reply is our own buffer (often a view of a chunk fetched ahead), copied once by the binding on this
    // thread. With read, every read made a new buffer for the reply here, and one more in the libfuse thread's own malloc arena.
    readBuffer(p, fd, length, position, cb) {
      const f = files.get(fd);
      if (!f) return cb(errno(fuse, 'EBADF'));
      f.read(position, length, (b) => cb(0, b.length > length ? b.subarray(0, length) : b)).catch((e) => {
        // Whatever the cause (a damaged block, a forgotten snapshot whose blocks were pruned), a read fails as I/O.
        report(`read ${p}: ${(e as Error).message}`);
        cb(errno(fuse, 'EIO'));
      });
    },
    release(_p, fd, cb) {
      files.release(fd);
      cb(0);
    },
    access(p, mode, cb) {
      find(p).then(
        (f) => cb(!f ? ENOENT : mode & W_OK ? EROFS : 0),
        (e) => cb(fail('access', p, e)),
      );
    },
    statfs(_p, cb) {
      cb(0, { bsize: 4096, frsize: 4096, blocks: 0, bfree: 0, bavail: 0, files: 0, ffree: 0, favail: 0, namemax: 255, flag: 1 /* ST_RDONLY */ });
    },
    listxattr(p, cb) {
      find(p).then(
        (f) => (!f ? cb(ENOENT) : cb(0, 'entry' in f ? shownXattrs(f.entry.xattrs).map(([n]) => n) : [])),
        (e) => cb(fail('listxattr', p, e)),
      );
    },
    getxattr(p, name, _position, cb) {
      find(p).then(
        (f) => (!f ? cb(ENOENT) : answerXattr(xattrAnswer(fuse, 'entry' in f ? f.entry.xattrs : [], name), cb)),
        (e) => cb(fail('getxattr', p, e)),
      );
    },
  };
  for (const name of ['write', 'create', 'mknod', 'mkdir', 'unlink', 'rmdir', 'symlink', 'rename', 'link', 'chmod', 'chown', 'truncate', 'ftruncate', 'utimens', 'setxattr', 'removexattr', 'fallocate']) {
    ops[name] = refuse;
  }
  return ops;
}

/**
 * Mounts `layout` read-only at `mountpoint` and resolves once the kernel
 * shows it. With auto_unmount the kernel's mount goes when this process does,
 * however it ends (even SIGKILL): a helper of libfuse's watches it.
 */
export async function mount(mountpoint: string, layout: Layout, opts: MountOptions = {}): Promise<MountHandle> {
  const files = new OpenFiles();
  const follower = opts.snapshots && layout.followsRepository ? new Follower(layout, opts.snapshots) : undefined;
  const m = await mountWith(mountpoint, (Fuse, report) => operations(Fuse, layout, files, report, follower), opts, files, {
    kernelCache: true,
    entryTimeout: KERNEL_TIMEOUT,
    attrTimeout: KERNEL_TIMEOUT,
  });
  if (follower) follow(m, follower, opts.onError ?? (() => {}));
  return m;
}

/**
 * Every REFRESH_MS until unmounted: the layout brought up to date, and the
 * kernel told to drop the names that no longer lead where they did (a
 * forgotten snapshot's, a tag taken off). Their trees then answer ENOENT,
 * and reads of files still open in them EIO once their blocks are gone.
 */
function follow(m: MountHandle, follower: Follower, report: (message: string) => void): void {
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  let failing = false;
  const tick = async () => {
    try {
      await follower.refresh(0);
      if (failing) report('listing snapshots works again');
      failing = false;
    } catch (e) {
      // Unmounted meanwhile (the repository may be closed by now): nothing to say.
      if (stopped) return;
      // Said once, not every tick: the layout stays as it was until the repository answers again.
      if (!failing) report(`list snapshots: ${(e as Error).message}`);
      failing = true;
    }
    const gone = follower.gone.splice(0).sort();
    // A path below another that went is dropped with it.
    const tops = gone.filter((p) => !gone.some((q) => q !== p && p.startsWith(`${q}/`)));
    for (const p of tops) {
      if (stopped) return;
      await m.invalidate(p).catch((e: Error) => report(`forget ${p} in the kernel: ${e.message}`));
    }
    if (!stopped) timer = setTimeout(() => void tick(), REFRESH_MS);
  };
  timer = setTimeout(() => void tick(), REFRESH_MS);
  void m.done.then(() => {
    stopped = true;
    clearTimeout(timer);
  });
}

/** How long the kernel may keep what it was told, and whether it may keep a file's pages between opens. */
export interface KernelCaching {
  kernelCache: boolean;
  entryTimeout: number;
  attrTimeout: number;
  /** Operations that may take longer than OP_TIMEOUT_MS (false: as long as they take). */
  untimed?: readonly string[];
}

/** Mounts the operations `build` makes at `mountpoint` (checked first); resolves once the kernel shows them. */
export async function mountWith(
  mountpoint: string,
  build: (fuse: FuseModule, report: (message: string) => void) => FuseOperations,
  opts: MountOptions,
  files: OpenFiles,
  caching: KernelCaching,
): Promise<MountHandle> {
  const Fuse = loadFuse();
  await checkDevice();
  const abs = await checkMountpoint(mountpoint);
  const report = opts.onError ?? (() => {});
  // The binding's threads do not keep Node's event loop alive: this does, while mounted.
  const alive = setInterval(() => {}, 1 << 30);
  let gone!: () => void;
  const done = new Promise<void>((resolve) => (gone = resolve)).finally(() => clearInterval(alive));
  let stopping: Promise<void> | undefined;
  const { untimed, ...kernel } = caching;
  const instance: FuseInstance = new Fuse(abs, build(Fuse, report), {
    fsname: 'strata',
    subtype: 'strata',
    autoUnmount: true,
    ...kernel,
    maxRead: MAX_READ,
    maxConcurrency: CONCURRENCY,
    timeout: { default: OP_TIMEOUT_MS, ...Object.fromEntries((untimed ?? []).map((op) => [op, false])) },
    ...(opts.debug ? { debug: true } : {}),
    onError(error, operation) {
      const e = error as NodeJS.ErrnoException;
      // The request loop ends when the mount is taken away from outside (fusermount3 -u).
      if (e?.code === 'EFUSELOOPEXIT' || operation === 'lifecycle') return gone();
      if (operation === 'cleanup' || operation === 'unmount') return;
      report(`${operation}: ${e?.message ?? String(error)}`);
    },
  });
  await new Promise<void>((resolve, reject) =>
    instance.mount((err) => {
      if (!err) return resolve();
      gone();
      const e = err as NodeJS.ErrnoException;
      const why = e.code ? `${e.code}: ${e.message}` : e.message;
      reject(new StrataError(e.code === 'EFUSEHELPER' || e.code === 'EFUSEDEVICE' || e.code === 'EFUSEDEPENDENCY' ? 'no_fuse' : 'mountpoint', `cannot mount at ${abs} (${why})`));
    }),
  );
  await raiseReadAhead(abs);
  const stop = () =>
    (stopping ??= new Promise<void>((resolve) => {
      instance.unmount(() => {
        gone();
        resolve();
      });
    }));
  const invalidate = (p: string) =>
    new Promise<void>((resolve, reject) =>
      instance.invalidateEntry(p, (err) => {
        // Not there (the kernel never looked it up, or forgot it already): nothing to drop.
        const code = (err as NodeJS.ErrnoException | null | undefined)?.code;
        if (!err || code === 'ENOENT') resolve();
        else reject(err);
      }),
    );
  return { mountpoint: abs, done, stop, invalidate, files };
}

/** Raises the kernel's read-ahead for the mount (root only: sysfs; elsewhere the kernel's default stays). */
async function raiseReadAhead(abs: string): Promise<void> {
  try {
    const st = await fs.stat(abs);
    const major = Math.floor(st.dev / 256) & 0xfff;
    const minor = (st.dev & 0xff) | ((st.dev >> 12) & 0xfff00);
    await fs.writeFile(`/sys/class/bdi/${major}:${minor}/read_ahead_kb`, `${READ_AHEAD_KB}\n`);
  } catch {
    // Not root, or no sysfs: the default read-ahead.
  }
}
