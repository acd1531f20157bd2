/**
 * Raw disk images: their partitions (MBR or GPT, read by partitioninfo),
 * and the files of an ext2/3/4 file system (ext4.ts, reading only what lies
 * on the way to one path; libext2fs in WebAssembly, the ext2fs package, for
 * what it leaves) or a FAT12/16/32 one (fatfs) inside a partition, each
 * reading the image through range reads. The libraries take a disk they may
 * write to (ext2fs updates access times as it reads): what they write stays
 * in memory, over the image, and is dropped with it.
 *
 * ext2fs, once loaded, would throw from process-wide handlers of uncaught
 * exceptions and unhandled rejections: they are taken out again as soon as
 * it is loaded. A read the libraries fail on is reported as its own error
 * (an integrity error stays one), not as their EIO.
 */
import { createRequire } from 'node:module';
import { integrity, notFound, StrataError, usageError } from '../errors.js';
import { Ext4, Ext4Unsupported } from './ext4.js';
import type { ByteSource } from './qcow2.js';

export interface Partition {
  /** 1 for the first, as `pN:` names it. */
  number: number;
  offset: number;
  size: number;
  /** The partition table's type: an MBR type byte (hex) or a GPT type GUID. */
  type: string;
  name?: string;
  /** What its first bytes say it holds: ext4 (ext2/3/4), fat, or nothing known. */
  filesystem?: 'ext' | 'fat';
}

export interface DiskEntry {
  name: string;
  type: 'file' | 'dir' | 'symlink' | 'other';
  size: number;
  mtime?: string;
}

const require = createRequire(import.meta.url);

/** The image's partitions; an image with a file system and no table is partition 1, the whole image. */
export async function partitions(reader: ByteSource): Promise<{ table: 'mbr' | 'gpt' | 'none'; partitions: Partition[] }> {
  const fsHere = await filesystemAt(reader, 0, reader.size);
  if (fsHere) return { table: 'none', partitions: [{ number: 1, offset: 0, size: reader.size, type: 'none', filesystem: fsHere }] };
  const info = require('partitioninfo') as typeof import('partitioninfo');
  const disk = imageDisk(reader);
  let found: Awaited<ReturnType<typeof info.getPartitions>>;
  try {
    found = await info.getPartitions(disk.asFileDisk(), { includeExtended: false, getLogical: true });
  } catch (e) {
    throw disk.failure ?? integrity(`${reader.path}: its partition table cannot be read (${(e as Error).message})`);
  }
  const out: Partition[] = [];
  for (const p of found.partitions) {
    if (p.size === 0) continue;
    const part: Partition = {
      number: p.index,
      offset: p.offset,
      size: p.size,
      type: typeof p.type === 'number' ? `0x${p.type.toString(16).padStart(2, '0')}` : p.type,
      ...('name' in p && p.name ? { name: p.name } : {}),
    };
    if (p.offset + Math.min(p.size, 4096) <= reader.size) {
      const fs = await filesystemAt(reader, p.offset, p.size);
      if (fs) part.filesystem = fs;
    }
    out.push(part);
  }
  return { table: found.type, partitions: out };
}

/** Which file system starts at `offset`, from its superblock or boot sector. */
async function filesystemAt(reader: ByteSource, offset: number, size: number): Promise<'ext' | 'fat' | undefined> {
  if (size < 2048 || offset + 2048 > reader.size) return undefined;
  const b = await reader.read(offset, 2048);
  if (b.readUInt16LE(1024 + 56) === 0xef53) return 'ext';
  const boot = b.subarray(0, 512);
  if (boot[510] === 0x55 && boot[511] === 0xaa && (boot.toString('latin1', 54, 59) === 'FAT16' || boot.toString('latin1', 82, 87) === 'FAT32' || boot.toString('latin1', 54, 59) === 'FAT12')) return 'fat';
  return undefined;
}

/** "p2:/etc/hosts" or "/etc/hosts" (the only file system): the partition and the path in it. */
export async function resolveInner(reader: ByteSource, spec: string): Promise<{ partition: Partition; path: string }> {
  const m = /^p([0-9]+):(.*)$/.exec(spec);
  const { partitions: all } = await partitions(reader);
  let partition: Partition | undefined;
  let inner: string;
  if (m) {
    partition = all.find((p) => p.number === Number(m[1]));
    if (!partition) throw notFound(`${reader.path} has no partition ${m[1]} (it has ${all.map((p) => `p${p.number}`).join(', ') || 'none'})`);
    inner = m[2]!;
  } else {
    const withFs = all.filter((p) => p.filesystem);
    if (withFs.length !== 1) throw usageError(`${reader.path} has ${withFs.length} file systems: name one as pN:${spec} (${all.map((p) => `p${p.number}${p.filesystem ? ` ${p.filesystem}` : ''}`).join(', ')})`);
    partition = withFs[0]!;
    inner = spec;
  }
  if (!partition.filesystem) throw new StrataError('wrong_format', `partition ${partition.number} of ${reader.path} holds no file system strata reads (ext2/3/4, FAT12, FAT16, FAT32)`);
  const path = `/${inner}`.replace(/\/+/g, '/').replace(/(.)\/$/, '$1');
  if (path.split('/').includes('..')) throw usageError(`${spec}: no ".." in a path inside an image`);
  return { partition, path };
}

/** A directory's entries in a partition's file system. */
export async function listDirectory(reader: ByteSource, spec: string): Promise<DiskEntry[]> {
  const { partition, path } = await resolveInner(reader, spec);
  const fs = await openFilesystem(reader, partition);
  try {
    return await fs.list(path);
  } finally {
    await fs.close();
  }
}

/** A file's bytes in a partition's file system, a piece at a time. */
export async function* fileBytes(reader: ByteSource, spec: string): AsyncGenerator<Buffer> {
  const { partition, path } = await resolveInner(reader, spec);
  const fs = await openFilesystem(reader, partition);
  try {
    yield* fs.read(path);
  } finally {
    await fs.close();
  }
}

/** A regular file's size in a file system of the image: what its stat says, the file itself unread. */
export async function fileSize(reader: ByteSource, spec: string): Promise<number> {
  const { partition, path } = await resolveInner(reader, spec);
  const fs = await openFilesystem(reader, partition);
  try {
    return await fs.size(path);
  } finally {
    await fs.close();
  }
}

interface Filesystem {
  list(path: string): Promise<DiskEntry[]>;
  read(path: string): AsyncGenerator<Buffer>;
  /** A regular file's size (anything else is the error read gives). */
  size(path: string): Promise<number>;
  close(): Promise<void>;
}

/** One read of the image, through a disk the libraries may write to (kept in memory). */
function imageDisk(reader: ByteSource, base = 0) {
  const writes: { at: number; data: Buffer }[] = [];
  const state: { failure?: unknown } = {};
  const read = async (buffer: Buffer, bufferOffset: number, length: number, offset: number) => {
    try {
      const at = base + offset;
      const n = Math.max(0, Math.min(length, reader.size - at));
      if (n > 0) (await reader.read(at, n)).copy(buffer, bufferOffset);
      if (n < length) buffer.fill(0, bufferOffset + n, bufferOffset + length);
      for (const w of writes) {
        const s = Math.max(offset, w.at);
        const e = Math.min(offset + length, w.at + w.data.length);
        if (s < e) w.data.copy(buffer, bufferOffset + s - offset, s - w.at, e - w.at);
      }
      return { bytesRead: length, buffer };
    } catch (e) {
      state.failure ??= e;
      throw e;
    }
  };
  const write = async (buffer: Buffer, bufferOffset: number, length: number, offset: number) => {
    writes.push({ at: offset, data: Buffer.from(buffer.subarray(bufferOffset, bufferOffset + length)) });
    return { bytesWritten: length, buffer };
  };
  return {
    get failure() {
      return state.failure;
    },
    read,
    write,
    discard: async () => {},
    flush: async () => {},
    /** The same as file-disk's Disk, for partitioninfo. */
    asFileDisk() {
      const { Disk } = require('file-disk') as typeof import('file-disk');
      class ImageDisk extends Disk {
        constructor() {
          super(true, false, false, false);
        }
        protected async _getCapacity() {
          return reader.size - base;
        }
        protected async _read(b: Buffer, bo: number, len: number, fo: number) {
          return read(b, bo, len, fo);
        }
        protected async _write(): Promise<never> {
          throw new StrataError('read_only', 'a disk image in a snapshot is read-only');
        }
        protected async _flush() {}
      }
      return new ImageDisk();
    },
  };
}

type Ext2fs = { mount(disk: object, offset: number): Promise<ExtFs>; umount(fs: ExtFs): Promise<void> };
interface ExtStat {
  size: number;
  mtime: Date;
  isFile(): boolean;
  isDirectory(): boolean;
  isSymbolicLink(): boolean;
}
interface ExtFs {
  promises: {
    readdir(p: string): Promise<string[]>;
    lstat(p: string): Promise<ExtStat>;
    open(p: string, flags: string): Promise<{ read(b: Buffer, o: number, l: number, pos: number): Promise<{ bytesRead: number }>; close(): Promise<void> }>;
  };
}

let ext2fs: Ext2fs | undefined;

/** ext2fs, loaded once, without the process-wide handlers it installs. */
function loadExt2fs(): Ext2fs {
  if (ext2fs) return ext2fs;
  const before = { uncaughtException: new Set(process.listeners('uncaughtException')), unhandledRejection: new Set(process.listeners('unhandledRejection')) };
  try {
    ext2fs = require('ext2fs') as Ext2fs;
  } finally {
    for (const event of ['uncaughtException', 'unhandledRejection'] as const) {
      const listeners = process.listeners(event as 'uncaughtException') as ((...a: unknown[]) => void)[];
      for (const l of listeners) if (!before[event].has(l as never)) process.removeListener(event, l);
    }
  }
  return ext2fs;
}

async function openFilesystem(reader: ByteSource, partition: Partition): Promise<Filesystem> {
  const disk = imageDisk(reader);
  const failed = (e: unknown, path: string): unknown => {
    if (disk.failure) return disk.failure;
    const code = (e as { code?: string }).code;
    if (code === 'ENOENT' || code === 'NOENT') return notFound(`${reader.path} has no ${path} in partition ${partition.number}`);
    if (code === 'ENOTDIR' || code === 'NOTDIR') return new StrataError('not_directory', `${path} is not a directory in partition ${partition.number} of ${reader.path}`);
    if (code === 'EISDIR' || code === 'ISDIR') return new StrataError('is_directory', `${path} is a directory in partition ${partition.number} of ${reader.path}`);
    return integrity(`${reader.path}: partition ${partition.number} cannot be read as ${partition.filesystem === 'ext' ? 'ext2/3/4' : 'FAT'} (${(e as Error).message ?? String(e)})`);
  };
  if (partition.filesystem === 'ext') return extFilesystem(reader, partition, () => libext2fsFilesystem(reader, partition, disk, failed));
  const fatfs = require('fatfs') as { createFileSystem(vol: object, opts: object): FatFs };
  const vol = {
    sectorSize: 512,
    numSectors: Math.floor(partition.size / 512),
    readSectors(i: number, dest: Buffer, cb: (e: Error | null) => void) {
      disk.read(dest, 0, dest.length, partition.offset + i * 512).then(
        () => cb(null),
        (e: Error) => cb(e),
      );
    },
  };
  const fat = fatfs.createFileSystem(vol, { ro: true });
  await new Promise<void>((resolve, reject) => {
    fat.on('ready', () => resolve());
    fat.on('error', (e: Error) => reject(failed(e, '/')));
  });
  const call = <R>(f: (cb: (e: Error | null, r: R) => void) => void, path: string) =>
    new Promise<R>((resolve, reject) => f((e, r) => (e ? reject(failed(e, path)) : resolve(r))));
  const fileStat = async (path: string) => {
    const st = await call<ExtStat>((cb) => fat.stat(path, cb), path);
    if (!st.isFile()) throw new StrataError('not_file', `${path} is not a regular file in partition ${partition.number} of ${reader.path}`);
    return st;
  };
  return {
    close: async () => {},
    async list(path) {
      const names = (await call<string[]>((cb) => fat.readdir(path, cb), path)).sort();
      const out: DiskEntry[] = [];
      for (const name of names) {
        const p = `${path === '/' ? '' : path}/${name}`;
        try {
          const st = await call<ExtStat>((cb) => fat.stat(p, cb), p);
          out.push({ name, type: st.isDirectory() ? 'dir' : 'file', size: st.size, mtime: st.mtime.toISOString() });
        } catch (e) {
          // fatfs's stat of a directory fails so: it is one.
          if ((e as StrataError).code === 'is_directory') out.push({ name, type: 'dir', size: 0 });
          else throw e;
        }
      }
      return out;
    },
    size: async (path) => (await fileStat(path)).size,
    async *read(path) {
      await fileStat(path);
      try {
        for await (const piece of fat.createReadStream(path) as AsyncIterable<Buffer>) yield piece;
      } catch (e) {
        throw failed(e, path);
      }
    },
  };
}

interface FatFs {
  on(event: 'ready', f: () => void): void;
  on(event: 'error', f: (e: Error) => void): void;
  readdir(p: string, cb: (e: Error | null, names: string[]) => void): void;
  stat(p: string, cb: (e: Error | null, st: ExtStat) => void): void;
  createReadStream(p: string): NodeJS.ReadableStream;
}

/**
 * ext2/3/4 through the hand-written reader (ext4.ts), which reads only the
 * metadata on the way to one path; a file system it leaves to libext2fs
 * (Ext4Unsupported: an incompatible feature it does not know) goes through
 * a mount of the library.
 */
async function extFilesystem(reader: ByteSource, partition: Partition, library: () => Promise<Filesystem>): Promise<Filesystem> {
  let ext: Ext4;
  try {
    ext = await Ext4.open(reader, partition);
  } catch (e) {
    if (e instanceof Ext4Unsupported) return library();
    throw e;
  }
  return {
    list: (path) => ext.list(path),
    size: async (path) => (await ext.file(path)).size,
    async *read(path) {
      yield* ext.data(await ext.file(path));
    },
    close: async () => {},
  };
}

/** ext2/3/4 through libext2fs (node-ext2fs): a mount, which reads every group's bitmaps. */
async function libext2fsFilesystem(reader: ByteSource, partition: Partition, disk: ReturnType<typeof imageDisk>, failed: (e: unknown, path: string) => unknown): Promise<Filesystem> {
  const lib = loadExt2fs();
  let mounted: ExtFs;
  try {
    mounted = await lib.mount(disk, partition.offset);
  } catch (e) {
    throw failed(e, '/');
  }
  const fs = mounted.promises;
  const fileStat = async (path: string) => {
    const st = await fs.lstat(path);
    if (st.isDirectory()) throw Object.assign(new Error('is a directory'), { code: 'EISDIR' });
    if (!st.isFile()) throw new StrataError('not_file', `${path} is not a regular file in partition ${partition.number} of ${reader.path}`);
    return st;
  };
  return {
    close: async () => {
      try {
        await lib.umount(mounted);
      } catch {
        // Nothing was written to the image: nothing to lose.
      }
    },
      async list(path) {
        try {
          const names = (await fs.readdir(path)).sort();
          const out: DiskEntry[] = [];
          for (const name of names) {
            const st = await fs.lstat(`${path === '/' ? '' : path}/${name}`);
            out.push({ name, type: st.isFile() ? 'file' : st.isDirectory() ? 'dir' : st.isSymbolicLink() ? 'symlink' : 'other', size: st.size, mtime: st.mtime.toISOString() });
          }
          return out;
        } catch (e) {
          throw failed(e, path);
        }
      },
      async size(path) {
        try {
          return (await fileStat(path)).size;
        } catch (e) {
          throw e instanceof StrataError ? e : failed(e, path);
        }
      },
      async *read(path) {
        let fh;
        try {
          await fileStat(path);
          fh = await fs.open(path, 'r');
          for (let pos = 0; ; ) {
            const b = Buffer.alloc(256 * 1024);
            const { bytesRead } = await fh.read(b, 0, b.length, pos);
            if (bytesRead === 0) break;
            pos += bytesRead;
            yield b.subarray(0, bytesRead);
          }
        } catch (e) {
          throw e instanceof StrataError ? e : failed(e, path);
        } finally {
          try {
            await fh?.close();
          } catch {
            // Closing a file read to its end: nothing to lose.
          }
        }
      },
  };
}
