/**
 * The file system the kernel sees: FUSE operations answered from the
 * layout (layout.ts) and the snapshots' trees, reads through open files
 * (handles.ts). Read-only: every change is refused with EROFS. Snapshots never
 * change, so the kernel may keep names, attributes and pages for as long as
 * it likes; reads are large and many are served at once.
 */
import { StrataError } from '../errors.js';
import type { Entry, SnapshotTree } from '../engine/snapshot-tree.js';
import { errno, loadFuse, type FuseConnection, type FuseInstance, type FuseModule, type FuseOperations, type FuseStats } from './binding.js';
import { OpenFiles } from './handles.js';
import type { Layout, LayoutDir } from './layout.js';
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

const O_ACCMODE = 3;
const W_OK = 2;

export interface MountHandle {
  /** The absolute mountpoint. */
  mountpoint: string;
  /** Resolves once the mount is gone: unmounted by stop(), or from outside (fusermount3 -u). */
  done: Promise<void>;
  /** Unmounts (idempotent); resolves once the mount is gone. */
  stop(): Promise<void>;
  readonly files: OpenFiles;
}

export interface MountOptions {
  /** Report an operation that failed for a reason other than a missing name (a damaged block, a server gone). */
  onError?: (message: string) => void;
  debug?: boolean;
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

/** The operations of a read-only mount of `layout`. */
export function operations(fuse: FuseModule, layout: Layout, files: OpenFiles, report: (message: string) => void): FuseOperations {
  const ENOENT = errno(fuse, 'ENOENT');
  const EROFS = errno(fuse, 'EROFS');
  const fail = (what: string, p: string, e: unknown): number => {
    const code = errnoOf(fuse, e);
    if (code !== ENOENT) report(`${what} ${p}: ${(e as Error).message}`);
    return code;
  };
  /** The entry at a mount path inside a snapshot, or a directory of the layout. */
  const find = async (p: string): Promise<{ layout: LayoutDir } | { entry: Entry; tree: SnapshotTree; root: boolean } | undefined> => {
    const place = layout.resolve(p);
    if (!place) return undefined;
    if (place.kind === 'layout') return { layout: place.dir };
    // A name with bytes that are not UTF-8 is shown with them as \xNN: looked up as stored.
    const other = storedPath(place.path);
    const entry = (await place.tree.lookup(place.path)) ?? (other !== undefined ? await place.tree.lookup(other) : undefined);
    return entry && { entry, tree: place.tree, root: place.path === '/' };
  };
  const statsOf = (f: NonNullable<Awaited<ReturnType<typeof find>>>): FuseStats =>
    'layout' in f ? layoutStats(f.layout) : entryStats(f.entry, f.root ? f.tree : undefined);
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
        const f = await find(p);
        if (!f) return cb(ENOENT);
        const self = statsOf(f);
        if ('layout' in f) {
          const names = f.layout.names();
          const stats = await Promise.all(
            names.map(async (n) => {
              const e = f.layout.entries.get(n)!;
              if ('entries' in e) return layoutStats(e);
              return entryStats(await e.stat('/'), e);
            }),
          );
          return cb(0, ['.', '..', ...names], [self, self, ...stats]);
        }
        if (f.entry.type !== 'dir') return cb(errno(fuse, 'ENOTDIR'));
        const entries = await f.tree.list(f.entry);
        return cb(0, ['.', '..', ...entries.map((e) => shownName(e.name))], [self, self, ...entries.map((e) => entryStats(e))]);
      })().catch((e) => cb(fail('list', p, e)));
    },
    readlink(p, cb) {
      find(p).then(
        (f) => (!f ? cb(ENOENT) : 'entry' in f && f.entry.type === 'symlink' ? cb(0, f.entry.target ?? '') : cb(errno(fuse, 'EINVAL'))),
        (e) => cb(fail('readlink', p, e)),
      );
    },
    open(p, flags, cb) {
      if ((flags & O_ACCMODE) !== 0) return cb(EROFS);
      (async () => {
        const f = await find(p);
        if (!f) return cb(ENOENT);
        if ('layout' in f) return cb(errno(fuse, 'EISDIR'));
        const file = await f.tree.open(f.entry);
        // The pages of a file once read stay valid: the snapshot never changes.
        return cb(0, { fd: files.open(file), keepCache: true });
      })().catch((e) => cb(fail('open', p, e)));
    },
    read(p, fd, buffer, length, position, cb) {
      const f = files.get(fd);
      if (!f) return cb(errno(fuse, 'EBADF'));
      f.read(position, length).then(
        (b) => cb(b.copy(buffer, 0, 0, Math.min(b.length, length))),
        (e) => cb(fail('read', p, e)),
      );
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
  return mountWith(mountpoint, (Fuse, report) => operations(Fuse, layout, files, report), opts, files, {
    kernelCache: true,
    entryTimeout: KERNEL_TIMEOUT,
    attrTimeout: KERNEL_TIMEOUT,
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
  return { mountpoint: abs, done, stop, files };
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
