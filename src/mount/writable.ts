/**
 * A writable mount: one snapshot's tree, whose changes go to its overlay
 * (overlay.ts) and become a new snapshot on commit. Every operation on names
 * and stats is answered once it is journaled and synced; written bytes are
 * synced by fsync and close. The kernel keeps names and attributes a second
 * only, and a file's pages only while it is open: the tree changes.
 */
import * as fs from 'node:fs/promises';
import { errno, type FuseConnection, type FuseModule, type FuseOperations, type FuseStats } from './binding.js';
import { answerXattr, errnoOf, mountWith, shownXattrs, timespec, xattrAnswer, type MountHandle, type MountOptions } from './fuse.js';
import { OpenFiles } from './handles.js';
import { FsError, nodeStats, type Node, type Overlay } from './overlay.js';
import { direntStats } from './listings.js';
import { shownName } from './names.js';

const O_TRUNC = 0o1000;
const UTIME_NOW = (1 << 30) - 1;
const UTIME_OMIT = (1 << 30) - 2;
const RENAME_NOREPLACE = 1;
/** What mknod makes, by the type bits of its mode. */
const NODE_TYPES = new Map<number, 'file' | 'fifo' | 'chardev' | 'blockdev'>([
  [0o100000, 'file'],
  [0o010000, 'fifo'],
  [0o020000, 'chardev'],
  [0o060000, 'blockdev'],
]);

interface Timespec {
  seconds: number | bigint;
  nanoseconds: number;
}

function fuseStats(n: Node): FuseStats {
  const s = nodeStats(n);
  const t = timespec(s.mtimeNs);
  return { mode: s.mode, uid: s.uid, gid: s.gid, size: s.size, nlink: n.type === 'dir' ? 2 : 1, ...(n.rdev !== undefined ? { rdev: n.rdev } : {}), blksize: 4096, blocks: Math.ceil(s.size / 512), atime: t, mtime: t, ctime: t };
}

/** The operations of a writable mount of `overlay`. */
export function writableOperations(fuse: FuseModule, overlay: Overlay, report: (message: string) => void): FuseOperations {
  const ENOENT = errno(fuse, 'ENOENT');
  const handles = new Map<number, Node>();
  let next = 1;
  const code = (what: string, p: string | null, e: unknown): number => {
    if (e instanceof FsError) return errno(fuse, e.errno);
    const c = errnoOf(fuse, e);
    if (c !== ENOENT) report(`${what} ${p ?? ''}: ${(e as Error).message}`);
    return c;
  };
  /** Runs `work` and answers 0, or the errno of what it threw. */
  const answer = (what: string, p: string | null, cb: (code: number) => void, work: () => Promise<unknown>) => {
    work().then(
      () => cb(0),
      (e) => cb(code(what, p, e)),
    );
  };
  const need = async (p: string): Promise<Node> => {
    const n = await overlay.lookup(p);
    if (!n) throw new FsError('ENOENT');
    return n;
  };
  /** Handles open on each node: its reader goes when the last one closes. */
  const opened = new Map<Node, number>();
  const open = (n: Node): number => {
    const fd = next++;
    handles.set(fd, n);
    opened.set(n, (opened.get(n) ?? 0) + 1);
    return fd;
  };
  const nodeOf = (fd: number | bigint): Node => {
    const n = handles.get(Number(fd));
    if (!n) throw new FsError('EBADF');
    return n;
  };

  return {
    initWithConfig(conn: FuseConnection, cb) {
      cb(0, { maxReadahead: conn.maxReadahead, asyncRead: true });
    },
    getattr(p, cb) {
      overlay.lookup(p).then(
        (n) => (n ? cb(0, fuseStats(n)) : cb(ENOENT)),
        (e) => cb(code('stat', p, e)),
      );
    },
    readdir(p, cb) {
      (async () => {
        const n = await need(p);
        if (n.type !== 'dir') throw new FsError('ENOTDIR');
        const kids = await overlay.list(n);
        const self = direntStats(n.mode);
        cb(0, ['.', '..', ...kids.map(([k]) => shownName(k))], [self, self, ...kids.map(([, c]) => direntStats(c.mode))]);
      })().catch((e) => cb(code('list', p, e)));
    },
    readlink(p, cb) {
      need(p).then(
        (n) => (n.type === 'symlink' ? cb(0, n.target ?? '') : cb(errno(fuse, 'EINVAL'))),
        (e) => cb(code('readlink', p, e)),
      );
    },
    open(p, flags, cb) {
      (async () => {
        const n = await need(p);
        if (n.type === 'dir') throw new FsError('EISDIR');
        if (flags & O_TRUNC && n.size > 0) await overlay.truncate(p, n, 0);
        cb(0, { fd: open(n) });
      })().catch((e) => cb(code('open', p, e)));
    },
    createWithFlags(p: string, mode: number, flags: number, cb: (code: number, result?: { fd: number }) => void) {
      (async () => {
        const there = await overlay.lookup(p);
        let n: Node;
        if (there) {
          if (there.type === 'dir') throw new FsError('EISDIR');
          n = there;
          if (flags & O_TRUNC && n.size > 0) await overlay.truncate(p, n, 0);
        } else n = await overlay.create(p, mode);
        cb(0, { fd: open(n) });
      })().catch((e) => cb(code('create', p, e)));
    },
    read(p, fd, buffer, length, position, cb) {
      (async () => {
        const b = await overlay.read(nodeOf(fd), Number(position), length);
        cb(b.copy(buffer, 0, 0, Math.min(b.length, length)));
      })().catch((e) => cb(code('read', p, e)));
    },
    write(p: string | null, fd: number, buffer: Buffer, length: number, position: number | bigint, cb: (result: number) => void) {
      (async () => {
        await overlay.write(p ?? undefined, nodeOf(fd), Number(position), buffer.subarray(0, length));
        cb(length);
      })().catch((e) => cb(code('write', p, e)));
    },
    truncate(p: string, size: number | bigint, cb: (code: number) => void) {
      answer('truncate', p, cb, async () => overlay.truncate(p, await need(p), Number(size)));
    },
    ftruncate(p: string | null, fd: number, size: number | bigint, cb: (code: number) => void) {
      answer('truncate', p, cb, async () => overlay.truncate(p ?? undefined, nodeOf(fd), Number(size)));
    },
    fsync(p: string | null, _dataSync: boolean, fd: number, cb: (code: number) => void) {
      answer('fsync', p, cb, async () => overlay.sync(nodeOf(fd)));
    },
    flush(_p: string | null, _fd: number, cb: (code: number) => void) {
      cb(0);
    },
    release(p, fd, cb) {
      const n = handles.get(Number(fd));
      handles.delete(Number(fd));
      // What was written is on disk once the file is closed.
      if (!n) return cb(0);
      const left = (opened.get(n) ?? 1) - 1;
      if (left > 0) opened.set(n, left);
      else {
        opened.delete(n);
        overlay.closed(n);
      }
      answer('close', p, cb, async () => overlay.sync(n));
    },
    fsyncdir(_p: string | null, _dataSync: boolean, _fd: number, cb: (code: number) => void) {
      answer('fsync', _p, cb, async () => overlay.sync());
    },
    unlink(p: string, cb: (code: number) => void) {
      answer('unlink', p, cb, () => overlay.remove(p, false));
    },
    rmdir(p: string, cb: (code: number) => void) {
      answer('rmdir', p, cb, () => overlay.remove(p, true));
    },
    mkdir(p: string, mode: number, cb: (code: number) => void) {
      answer('mkdir', p, cb, () => overlay.create(p, mode, 'dir'));
    },
    symlink(target: string, p: string, cb: (code: number) => void) {
      answer('symlink', p, cb, () => overlay.create(p, 0o777, 'symlink', target));
    },
    renameWithFlags(from: string, to: string, flags: number, cb: (code: number) => void) {
      answer('rename', from, cb, async () => {
        if (flags & ~RENAME_NOREPLACE) throw new FsError('EINVAL');
        if (flags & RENAME_NOREPLACE && (await overlay.lookup(to))) throw new FsError('EEXIST');
        await overlay.rename(from, to);
      });
    },
    link(_from: string, _to: string, cb: (code: number) => void) {
      // A snapshot's tree holds a file under one name per version: hard links are not made here.
      cb(errno(fuse, 'EPERM'));
    },
    mknod(p: string, mode: number, dev: number | bigint, cb: (code: number) => void) {
      // A socket is not kept by a backup (it is a live process's): not made here either.
      const type = NODE_TYPES.get(mode & 0o170000);
      if (!type) return cb(errno(fuse, 'EPERM'));
      answer('mknod', p, cb, () => overlay.create(p, mode, type, undefined, BigInt(dev)));
    },
    listxattr(p, cb) {
      need(p).then(
        (n) => cb(0, shownXattrs(n.xattrs ?? []).map(([name]) => name)),
        (e) => cb(code('listxattr', p, e)),
      );
    },
    getxattr(p, name, _position, cb) {
      need(p).then(
        (n) => answerXattr(xattrAnswer(fuse, n.xattrs ?? [], name), cb),
        (e) => cb(code('getxattr', p, e)),
      );
    },
    setxattr(p: string, name: string, value: Buffer, _position: number, flags: number, cb: (code: number) => void) {
      answer('setxattr', p, cb, () => overlay.setXattr(p, name, Buffer.from(value), flags));
    },
    removexattr(p: string, name: string, cb: (code: number) => void) {
      answer('removexattr', p, cb, () => overlay.removeXattr(p, name));
    },
    chmod(p: string, mode: number, cb: (code: number) => void) {
      answer('chmod', p, cb, () => overlay.chmod(p, mode));
    },
    chown(p: string, u: number, g: number, cb: (code: number) => void) {
      answer('chown', p, cb, () => overlay.chown(p, u, g));
    },
    utimensWithTimespec(p: string, _atime: Timespec, mtime: Timespec, cb: (code: number) => void) {
      answer('utimens', p, cb, async () => {
        if (mtime.nanoseconds === UTIME_OMIT) return need(p);
        const ns = mtime.nanoseconds === UTIME_NOW ? BigInt(Date.now()) * 1_000_000n : BigInt(mtime.seconds) * 1_000_000_000n + BigInt(mtime.nanoseconds);
        return overlay.utimens(p, ns);
      });
    },
    access(p, _mode, cb) {
      overlay.lookup(p).then(
        (n) => cb(n ? 0 : ENOENT),
        (e) => cb(code('access', p, e)),
      );
    },
    statfs(_p, cb) {
      // The room of the disk the overlay is on: what can be written before a commit.
      fs.statfs(overlay.dir).then(
        (s) => cb(0, { bsize: s.bsize, frsize: s.bsize, blocks: s.blocks, bfree: s.bfree, bavail: s.bavail, files: s.files, ffree: s.ffree, favail: s.ffree, namemax: 255 }),
        () => cb(0, { bsize: 4096, frsize: 4096, blocks: 0, bfree: 0, bavail: 0, files: 0, ffree: 0, favail: 0, namemax: 255 }),
      );
    },
  };
}

/** Mounts `overlay` writable at `mountpoint`; resolves once the kernel shows it. */
export function mountWritable(mountpoint: string, overlay: Overlay, opts: MountOptions = {}): Promise<MountHandle> {
  return mountWith(mountpoint, (fuse, report) => writableOperations(fuse, overlay, report), opts, new OpenFiles(), {
    kernelCache: false,
    entryTimeout: 1,
    attrTimeout: 1,
    // Changes wait while a commit runs, however long it takes: an error would tell a writer its bytes were lost.
    untimed: ['write', 'create', 'open', 'release', 'flush', 'fsync', 'fsyncdir', 'truncate', 'ftruncate', 'unlink', 'rename', 'mkdir', 'rmdir', 'symlink', 'chmod', 'chown', 'utimens', 'mknod', 'setxattr', 'removexattr'],
  });
}
