/**
 * ext2/3/4 read by hand, one path at a time, for `strata item` and `strata
 * items --path` on a disk image: the superblock, the descriptor of each
 * group an inode read lies in (never the bitmaps, which a mount through
 * libext2fs reads whole), the inodes on the path, a directory's htree down
 * to the one leaf that holds a name (a linear scan where there is no
 * index, its hash is not one known here, or the name is not in its leaf),
 * then the file's extents or block map, streamed.
 *
 * Never a guess: with metadata_csum, the superblock, group descriptors,
 * inodes, extent blocks and directory blocks are checked against their
 * CRC-32C (group descriptors of uninit_bg file systems against their
 * CRC-16), and anything out of bounds (a block past the end, extents out of
 * order, a tree deeper than ext4 allows) is an integrity error. A walk
 * visits each extent node once in logical order, follows at most 40
 * symbolic links and reads each htree level once, so a hostile image
 * cannot make it loop.
 *
 * What this leaves to libext2fs (Ext4Unsupported, raised as it opens):
 * file systems with incompat features not listed in SUPPORTED (compression,
 * a journal device, dirdata, unknown ones) and checksums other than
 * CRC-32C. A case-folded directory is read whole for a name as it is
 * stored (the kernel would also find it in another case). Encrypted inodes (fscrypt) are refused: without
 * the key their names and bytes are ciphertext. Inline data (small files and
 * directories kept in the inode and its system.data attribute) is read here.
 */
import { integrity, notFound, StrataError } from '../errors.js';
import { crc16, crc32cRaw, le32, nameHash } from './ext4-hash.js';
import type { ByteSource } from './qcow2.js';

/** What this reader leaves to libext2fs, named in the message. */
export class Ext4Unsupported extends Error {}

export interface Ext4Entry {
  name: string;
  type: 'file' | 'dir' | 'symlink' | 'other';
  size: number;
  mtime: string;
}

export interface Inode {
  ino: number;
  mode: number;
  size: number;
  flags: number;
  /** i_block: the extent tree's root, a block map, or a fast symlink's target. */
  block: Buffer;
  mtime: number;
  /** i_blocks (512-byte units): 0 for a fast symlink. */
  blocks: number;
  fileAcl: number;
  /** The CRC-32C seed of this inode's own blocks (extent and directory blocks). */
  seed: number;
  /** The whole inode as stored (its extra space holds inline data's attribute). */
  raw: Buffer;
  extra: number;
}

interface Run {
  logical: number;
  length: number;
  /** Undefined: an uninitialized extent, read as zeros. */
  physical?: number;
}

const INCOMPAT = { filetype: 0x2, recover: 0x4, metaBg: 0x10, extents: 0x40, bit64: 0x80, mmp: 0x100, flexBg: 0x200, eaInode: 0x400, csumSeed: 0x2000, largedir: 0x4000, inlineData: 0x8000, encrypt: 0x10000, casefold: 0x20000 };
const SUPPORTED = Object.values(INCOMPAT).reduce((a, b) => a | b, 0);
const RO_COMPAT = { sparseSuper: 0x1, gdtCsum: 0x10, metadataCsum: 0x400 };
const COMPAT = { dirIndex: 0x20, sparseSuper2: 0x200 };
const FLAG = { encrypt: 0x800, index: 0x1000, extents: 0x80000, eaInode: 0x200000, inlineData: 0x10000000, casefold: 0x40000000 };
const S_IFMT = 0xf000;
const S_IFREG = 0x8000;
const S_IFDIR = 0x4000;
const S_IFLNK = 0xa000;
const ROOT = 2;
const EXTENT_MAGIC = 0xf30a;
const MAX_DEPTH = 5;
const MAX_LINKS = 40;
/** The longest read of a file's bytes at once. */
const PIECE = 1024 * 1024;

export class Ext4 {
  private readonly bs: number;
  private readonly blocksCount: number;
  private readonly inodesCount: number;
  private readonly firstDataBlock: number;
  private readonly blocksPerGroup: number;
  private readonly inodesPerGroup: number;
  private readonly inodeSize: number;
  private readonly descSize: number;
  private readonly incompat: number;
  private readonly roCompat: number;
  private readonly compat: number;
  private readonly csum: boolean;
  private readonly csumSeed: number;
  private readonly uuid: Buffer;
  private readonly hashSeed: number[];
  private readonly unsignedHash: boolean;
  private readonly firstMetaBg: number;
  private readonly backupBgs: [number, number];

  private constructor(
    private readonly source: ByteSource,
    private readonly base: number,
    private readonly partSize: number,
    private readonly label: { image: string; partition: number },
    sb: Buffer,
  ) {
    const bad = (what: string) => this.damaged(`its superblock ${what}`);
    const log = sb.readUInt32LE(0x18);
    if (log > 6) throw bad(`gives a block size of 2^${10 + log}`);
    this.bs = 1024 << log;
    this.incompat = sb.readUInt32LE(0x60);
    this.roCompat = sb.readUInt32LE(0x64);
    this.compat = sb.readUInt32LE(0x5c);
    const unknown = this.incompat & ~SUPPORTED;
    if (unknown) throw new Ext4Unsupported(`incompatible features 0x${unknown.toString(16)}`);
    const bit64 = (this.incompat & INCOMPAT.bit64) !== 0;
    this.blocksCount = sb.readUInt32LE(0x4) + (bit64 ? sb.readUInt32LE(0x150) * 2 ** 32 : 0);
    this.inodesCount = sb.readUInt32LE(0x0);
    this.firstDataBlock = sb.readUInt32LE(0x14);
    this.blocksPerGroup = sb.readUInt32LE(0x20);
    this.inodesPerGroup = sb.readUInt32LE(0x28);
    this.inodeSize = sb.readUInt32LE(0x4c) >= 1 ? sb.readUInt16LE(0x58) : 128;
    this.descSize = bit64 ? sb.readUInt16LE(0xfe) : 32;
    this.csum = (this.roCompat & RO_COMPAT.metadataCsum) !== 0;
    this.uuid = Buffer.from(sb.subarray(0x68, 0x78));
    this.hashSeed = [0, 1, 2, 3].map((i) => sb.readUInt32LE(0xec + 4 * i));
    this.unsignedHash = (sb.readUInt32LE(0x160) & 0x2) !== 0;
    this.firstMetaBg = sb.readUInt32LE(0x104);
    this.backupBgs = [sb.readUInt32LE(0x24c), sb.readUInt32LE(0x250)];
    if (this.csum) {
      if (sb[0x175] !== 1) throw new Ext4Unsupported(`checksum type ${sb[0x175]}`);
      if (crc32cRaw(0xffffffff, sb.subarray(0, 0x3fc)) !== sb.readUInt32LE(0x3fc)) throw bad('fails its checksum');
    }
    this.csumSeed = this.incompat & INCOMPAT.csumSeed ? sb.readUInt32LE(0x270) : crc32cRaw(0xffffffff, this.uuid);
    const pow2 = (n: number) => n > 0 && (n & (n - 1)) === 0;
    if (this.inodeSize < 128 || this.inodeSize > this.bs || !pow2(this.inodeSize)) throw bad(`gives inodes of ${this.inodeSize} bytes`);
    if (this.descSize < 32 || this.descSize > this.bs || !pow2(this.descSize)) throw bad(`gives group descriptors of ${this.descSize} bytes`);
    if (this.blocksPerGroup === 0 || this.inodesPerGroup === 0 || this.inodesPerGroup > 8 * this.bs) throw bad('gives groups of no size');
    if (this.firstDataBlock > 1 || this.firstDataBlock >= this.blocksCount) throw bad(`starts its data at block ${this.firstDataBlock}`);
    const groups = Math.ceil((this.blocksCount - this.firstDataBlock) / this.blocksPerGroup);
    if (this.inodesCount > groups * this.inodesPerGroup) throw bad(`counts ${this.inodesCount} inodes in ${groups} groups of ${this.inodesPerGroup}`);
  }

  /** The file system of a partition; Ext4Unsupported when libext2fs must read it. */
  static async open(source: ByteSource, partition: { number: number; offset: number; size: number }): Promise<Ext4> {
    const label = { image: source.path, partition: partition.number };
    if (partition.offset + 2048 > source.size) throw integrity(`${source.path}: partition ${partition.number} cannot be read as ext2/3/4 (its superblock is past the end of the image)`, { path: source.path });
    const sb = await source.read(partition.offset + 1024, 1024);
    if (sb.readUInt16LE(0x38) !== 0xef53) throw integrity(`${source.path}: partition ${partition.number} cannot be read as ext2/3/4 (no superblock)`, { path: source.path });
    return new Ext4(source, partition.offset, partition.size, label, sb);
  }

  // ---- paths ----

  /** A directory's entries (symbolic links on the way and at its end followed), sorted by name. */
  async list(path: string): Promise<Ext4Entry[]> {
    const dir = await this.resolve(path, true);
    if ((dir.mode & S_IFMT) !== S_IFDIR) throw new StrataError('not_directory', `${path} is not a directory in partition ${this.label.partition} of ${this.label.image}`);
    const named: { ino: number; name: string }[] = [];
    for await (const e of this.entries(dir)) {
      const name = e.name.toString('utf8');
      if (name !== '.' && name !== '..') named.push({ ino: e.ino, name });
    }
    // In inode order: each block of the inode table read once, not once per entry (an htree keeps names in hash order).
    named.sort((a, b) => a.ino - b.ino);
    const out: Ext4Entry[] = [];
    for (const { ino, name } of named) {
      const inode = await this.inode(ino);
      const fmt = inode.mode & S_IFMT;
      out.push({ name, type: fmt === S_IFREG ? 'file' : fmt === S_IFDIR ? 'dir' : fmt === S_IFLNK ? 'symlink' : 'other', size: inode.size, mtime: new Date(inode.mtime * 1000).toISOString() });
    }
    return out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  /** The regular file at `path` (symbolic links on the way followed, not one at its end). */
  async file(path: string): Promise<Inode> {
    const inode = await this.resolve(path, false);
    const fmt = inode.mode & S_IFMT;
    if (fmt === S_IFDIR) throw new StrataError('is_directory', `${path} is a directory in partition ${this.label.partition} of ${this.label.image}`);
    if (fmt !== S_IFREG) throw new StrataError('not_file', `${path} is not a regular file in partition ${this.label.partition} of ${this.label.image}`);
    this.usable(inode);
    return inode;
  }

  /** A file's bytes in pieces of up to 1 MiB: holes and uninitialized extents as zeros. */
  async *data(inode: Inode): AsyncGenerator<Buffer> {
    const { size } = inode;
    if (inode.flags & FLAG.inlineData) {
      yield this.inline(inode);
      return;
    }
    const bs = this.bs;
    let pos = 0;
    for await (const run of this.runs(inode)) {
      const start = run.logical * bs;
      if (start >= size) break;
      if (start < pos) throw this.damaged(`inode ${inode.ino} maps block ${run.logical} twice`);
      yield* zeros(start - pos);
      pos = start;
      const end = Math.min(size, (run.logical + run.length) * bs);
      if (run.physical === undefined) {
        yield* zeros(end - pos);
        pos = end;
        continue;
      }
      while (pos < end) {
        const n = Math.min(PIECE, end - pos);
        yield await this.bytes(run.physical * bs + (pos - start), n);
        pos += n;
      }
    }
    yield* zeros(size - pos);
  }

  /** The inode a path names, following symbolic links on the way (and at the end when `followLast`). */
  private async resolve(path: string, followLast: boolean): Promise<Inode> {
    const todo = path.split('/').filter((c) => c !== '' && c !== '.');
    const stack: Inode[] = [await this.inode(ROOT)];
    let links = 0;
    while (todo.length > 0) {
      const name = todo.shift()!;
      if (name === '..') {
        if (stack.length > 1) stack.pop();
        continue;
      }
      const dir = stack[stack.length - 1]!;
      if ((dir.mode & S_IFMT) !== S_IFDIR) throw new StrataError('not_directory', `${path} is not a directory in partition ${this.label.partition} of ${this.label.image}`);
      const ino = await this.find(dir, Buffer.from(name, 'utf8'));
      if (ino === undefined) throw notFound(`${this.label.image} has no ${path} in partition ${this.label.partition}`);
      const inode = await this.inode(ino);
      if ((inode.mode & S_IFMT) === S_IFLNK && (todo.length > 0 || followLast)) {
        if (++links > MAX_LINKS) throw notFound(`${this.label.image} has no ${path} in partition ${this.label.partition} (more than ${MAX_LINKS} symbolic links on the way)`);
        const target = await this.readlink(inode);
        if (target.startsWith('/')) stack.length = 1;
        todo.unshift(...target.split('/').filter((c) => c !== '' && c !== '.'));
        continue;
      }
      stack.push(inode);
    }
    return stack[stack.length - 1]!;
  }

  private async readlink(inode: Inode): Promise<string> {
    this.usable(inode);
    if (inode.flags & FLAG.inlineData) return this.inline(inode).toString('utf8');
    const eaBlocks = inode.fileAcl ? this.bs >> 9 : 0;
    const fast = inode.flags & FLAG.eaInode ? inode.size < 60 : inode.blocks - eaBlocks === 0;
    if (fast) {
      if (inode.size >= 60) throw this.damaged(`symbolic link ${inode.ino} has ${inode.size} bytes in its inode`);
      return inode.block.subarray(0, inode.size).toString('utf8');
    }
    if (inode.size > Math.min(this.bs, 4096)) throw this.damaged(`symbolic link ${inode.ino} is ${inode.size} bytes long`);
    const parts: Buffer[] = [];
    for await (const piece of this.data(inode)) parts.push(piece);
    return Buffer.concat(parts).toString('utf8');
  }

  /** Encrypted inodes (fscrypt): their names and bytes are ciphertext without the key, refused. */
  private usable(inode: Inode): void {
    if (inode.flags & FLAG.encrypt) throw new StrataError('wrong_format', `${this.label.image}: inode ${inode.ino} of partition ${this.label.partition} is encrypted (fscrypt), which strata does not read`);
  }

  /** The bytes of a file, symbolic link or directory kept in its inode: i_block, then its system.data attribute. */
  private inline(inode: Inode): Buffer {
    const more = this.inlineAttribute(inode);
    const all = Buffer.concat([inode.block, more]);
    if ((inode.mode & S_IFMT) === S_IFDIR) return all;
    if (inode.size > all.length) throw this.damaged(`inode ${inode.ino} holds ${all.length} of its ${inode.size} bytes`);
    return all.subarray(0, inode.size);
  }

  /** The value of system.data among the attributes in an inode's extra space (empty when it has none). */
  private inlineAttribute(inode: Inode): Buffer {
    const { raw } = inode;
    const start = 128 + inode.extra;
    if (start + 4 > raw.length || raw.readUInt32LE(start) !== 0xea020000) return Buffer.alloc(0);
    const first = start + 4;
    for (let off = first; off + 4 <= raw.length && raw.readUInt32LE(off) !== 0; ) {
      const nameLen = raw[off]!;
      if (off + 16 + nameLen > raw.length) throw this.damaged(`inode ${inode.ino} has an attribute across its end`);
      if (raw[off + 1] === 7 && raw.toString('latin1', off + 16, off + 16 + nameLen) === 'data') {
        const at = first + raw.readUInt16LE(off + 2);
        const size = raw.readUInt32LE(off + 8);
        if (raw.readUInt32LE(off + 4) !== 0 || at + size > raw.length) throw this.damaged(`inode ${inode.ino} has its inline data out of bounds`);
        return raw.subarray(at, at + size);
      }
      off += (16 + nameLen + 3) & ~3;
    }
    return Buffer.alloc(0);
  }

  // ---- directories ----

  /** The inode a directory gives `name`: through its htree when it has one, else (or to be sure of a miss) by reading it all. */
  private async find(dir: Inode, name: Buffer): Promise<number | undefined> {
    this.usable(dir);
    if (name.length > 255) return undefined;
    // A case-folded directory hashes its names case-folded (Unicode): read it all, for the name as stored.
    const folded = (dir.flags & FLAG.casefold) !== 0 && (this.incompat & INCOMPAT.casefold) !== 0;
    if (this.indexed(dir) && !folded) {
      const found = await this.htreeFind(dir, name);
      if (found !== undefined) return found;
    }
    for await (const e of this.entries(dir)) if (e.name.equals(name)) return e.ino;
    return undefined;
  }

  private indexed(dir: Inode): boolean {
    return (this.compat & COMPAT.dirIndex) !== 0 && (dir.flags & FLAG.index) !== 0;
  }

  /** Every entry of a directory, block by block (the htree's own blocks skipped). */
  private async *entries(dir: Inode): AsyncGenerator<{ ino: number; name: Buffer }> {
    this.usable(dir);
    if (dir.flags & FLAG.inlineData) {
      // The parent's inode, then entries to the end of i_block; more in the attribute.
      yield* this.dirents(dir, dir.block.subarray(4), 'its inode');
      yield* this.dirents(dir, this.inlineAttribute(dir), 'its inline attribute');
      return;
    }
    const indexed = this.indexed(dir);
    const blocks = Math.ceil(dir.size / this.bs);
    for await (const run of this.runs(dir)) {
      if (run.physical === undefined) continue;
      for (let i = 0; i < run.length && run.logical + i < blocks; i++) {
        const buf = await this.block(run.physical + i);
        if (indexed && this.isIndexBlock(buf, run.logical + i)) continue;
        yield* this.leaf(dir, buf, run.logical + i);
      }
    }
  }

  private isIndexBlock(buf: Buffer, logical: number): boolean {
    return logical === 0 || (buf.readUInt32LE(0) === 0 && this.recLen(buf.readUInt16LE(4)) === this.bs);
  }

  private recLen(v: number): number {
    if (this.bs < 65536) return v;
    return v === 65535 || v === 0 ? 65536 : (v & 65532) | ((v & 3) << 16);
  }

  /** The entries of one leaf block, its checksum checked. */
  private leaf(dir: Inode, buf: Buffer, logical: number): { ino: number; name: Buffer }[] {
    const bad = (what: string) => this.damaged(`block ${logical} of directory ${dir.ino} ${what}`);
    let end = this.bs;
    if (this.csum) {
      end -= 12;
      if (buf.readUInt32LE(end) !== 0 || buf.readUInt16LE(end + 4) !== 12 || buf[end + 6] !== 0 || buf[end + 7] !== 0xde) throw bad('has no checksum');
      if (crc32cRaw(dir.seed, buf.subarray(0, end)) !== buf.readUInt32LE(end + 8)) throw bad('fails its checksum');
    }
    return this.dirents(dir, buf.subarray(0, end), `block ${logical}`);
  }

  /** The entries of a run of directory entries (a block without its checksum tail, or inline data). */
  private dirents(dir: Inode, buf: Buffer, where: string): { ino: number; name: Buffer }[] {
    const bad = (what: string) => this.damaged(`${where} of directory ${dir.ino} ${what}`);
    const end = buf.length;
    const filetype = (this.incompat & INCOMPAT.filetype) !== 0;
    const out: { ino: number; name: Buffer }[] = [];
    for (let off = 0; off < end; ) {
      if (off + 8 > end) throw bad(`has an entry across its end at ${off}`);
      const ino = buf.readUInt32LE(off);
      const rec = this.recLen(buf.readUInt16LE(off + 4));
      const nameLen = filetype ? buf[off + 6]! : buf.readUInt16LE(off + 6);
      if (rec < 12 || rec % 4 !== 0 || off + rec > end || 8 + nameLen > rec) throw bad(`has an entry of ${rec} bytes at ${off}`);
      if (ino !== 0) {
        if (ino > this.inodesCount || nameLen === 0) throw bad(`names inode ${ino} at ${off}`);
        out.push({ ino, name: buf.subarray(off + 8, off + 8 + nameLen) });
      }
      off += rec;
    }
    return out;
  }

  /** The htree's answer for a name; undefined when it has none (not in its leaf) or its hash is not known here. */
  private async htreeFind(dir: Inode, name: Buffer): Promise<number | undefined> {
    const root = await this.dirBlock(dir, 0);
    const bad = (what: string) => this.damaged(`the htree of directory ${dir.ino} ${what}`);
    if (root.readUInt16LE(4) !== 12 || root[6] !== 1 || root[8] !== 0x2e || root[12 + 6] !== 2 || root.readUInt32LE(24) !== 0 || root[29] !== 8) throw bad('has no root');
    const levels = root[30]!;
    if (levels >= (this.incompat & INCOMPAT.largedir ? 3 : 2)) throw bad(`has ${levels + 1} levels`);
    let version = root[28]!;
    if (version <= 2 && this.unsignedHash) version += 3;
    const hash = nameHash(name, version, this.hashSeed);
    if (hash === undefined) return undefined;
    const blocks = Math.ceil(dir.size / this.bs);
    interface Frame {
      buf: Buffer;
      at: number;
      count: number;
      offset: number;
    }
    const entryHash = (f: Frame, i: number) => (i === 0 ? 0 : f.buf.readUInt32LE(f.offset + 8 * i));
    const entryBlock = (f: Frame, i: number) => {
      const b = f.buf.readUInt32LE(f.offset + 8 * i + 4) & 0x0fffffff;
      if (b >= blocks) throw bad(`points at block ${b} of ${blocks}`);
      return b;
    };
    const node = async (logical: number): Promise<Buffer> => {
      const buf = await this.dirBlock(dir, logical);
      if (buf.readUInt32LE(0) !== 0 || this.recLen(buf.readUInt16LE(4)) !== this.bs) throw bad(`has no node at block ${logical}`);
      return buf;
    };
    const frames: Frame[] = [];
    let buf = root;
    let offset = 32;
    for (let level = 0; level <= levels; level++) {
      const count = this.dxCount(dir, buf, offset);
      // The last entry whose hash is not above the name's.
      let lo = 1;
      let hi = count - 1;
      while (lo <= hi) {
        const mid = (lo + hi) >>> 1;
        if (buf.readUInt32LE(offset + 8 * mid) > hash) hi = mid - 1;
        else lo = mid + 1;
      }
      const f = { buf, at: lo - 1, count, offset };
      frames.push(f);
      if (level < levels) {
        buf = await node(entryBlock(f, f.at));
        offset = 8;
      }
    }
    // A name whose hash collides with others' may be in the leaves after its own: those whose first hash is its hash with the low bit set.
    for (let leaves = 0; leaves < blocks; leaves++) {
      const bottom = frames[frames.length - 1]!;
      const logical = entryBlock(bottom, bottom.at);
      for (const e of this.leaf(dir, await this.dirBlock(dir, logical), logical)) if (e.name.equals(name)) return e.ino;
      let l = frames.length - 1;
      while (l >= 0 && frames[l]!.at + 1 >= frames[l]!.count) l--;
      if (l < 0) return undefined;
      frames[l]!.at++;
      if ((entryHash(frames[l]!, frames[l]!.at) & ~1) >>> 0 !== hash) return undefined;
      for (let k = l + 1; k < frames.length; k++) {
        const b = await node(entryBlock(frames[k - 1]!, frames[k - 1]!.at));
        frames[k] = { buf: b, at: 0, count: this.dxCount(dir, b, 8), offset: 8 };
      }
    }
    throw bad('goes round in circles');
  }

  /** The number of entries of an htree root or node, its limit and checksum checked. */
  private dxCount(dir: Inode, buf: Buffer, offset: number): number {
    const limit = buf.readUInt16LE(offset);
    const count = buf.readUInt16LE(offset + 2);
    const expected = Math.floor((this.bs - offset) / 8) - (this.csum ? 1 : 0);
    if (limit !== expected || count === 0 || count > limit) throw this.damaged(`the htree of directory ${dir.ino} has a node of ${count} entries out of ${limit}`);
    if (this.csum) {
      const tail = offset + limit * 8;
      let c = crc32cRaw(dir.seed, buf.subarray(0, offset + count * 8));
      c = crc32cRaw(c, buf.subarray(tail, tail + 4));
      c = crc32cRaw(c, Buffer.alloc(4));
      if (c !== buf.readUInt32LE(tail + 4)) throw this.damaged(`the htree of directory ${dir.ino} fails its checksum`);
    }
    return count;
  }

  private async dirBlock(dir: Inode, logical: number): Promise<Buffer> {
    const physical = await this.blockAt(dir, logical);
    if (physical === undefined) throw this.damaged(`directory ${dir.ino} has a hole at block ${logical}`);
    return this.block(physical);
  }

  // ---- inodes ----

  private async inode(ino: number): Promise<Inode> {
    if (!Number.isInteger(ino) || ino < 1 || ino > this.inodesCount) throw this.damaged(`there is no inode ${ino}`);
    const group = Math.floor((ino - 1) / this.inodesPerGroup);
    const index = (ino - 1) % this.inodesPerGroup;
    const d = await this.descriptor(group);
    if (this.roCompat & (RO_COMPAT.gdtCsum | RO_COMPAT.metadataCsum) && (d.flags & 0x1 || index >= this.inodesPerGroup - d.itableUnused)) throw this.damaged(`inode ${ino} is named, but its group marks it unused`);
    const tableBlocks = Math.ceil((this.inodesPerGroup * this.inodeSize) / this.bs);
    if (d.inodeTable < 1 || d.inodeTable + tableBlocks > this.blocksCount) throw this.damaged(`group ${group} puts its inodes at block ${d.inodeTable}`);
    const raw = await this.bytes(d.inodeTable * this.bs + index * this.inodeSize, this.inodeSize);
    const extra = this.inodeSize > 128 ? raw.readUInt16LE(0x80) : 0;
    if (128 + extra > this.inodeSize || extra % 4 !== 0) throw this.damaged(`inode ${ino} has ${extra} extra bytes`);
    let seed = crc32cRaw(this.csumSeed, le32(ino));
    seed = crc32cRaw(seed, raw.subarray(0x64, 0x68));
    if (this.csum) {
      const copy = Buffer.from(raw);
      copy.fill(0, 0x7c, 0x7e);
      const hi = extra >= 4;
      if (hi) copy.fill(0, 0x82, 0x84);
      const c = crc32cRaw(seed, copy);
      const stored = raw.readUInt16LE(0x7c) + (hi ? raw.readUInt16LE(0x82) * 0x10000 : 0);
      if ((hi ? c : c & 0xffff) !== stored) throw this.damaged(`inode ${ino} fails its checksum`);
    }
    const mode = raw.readUInt16LE(0);
    if (mode === 0) throw this.damaged(`inode ${ino} is named, but free`);
    const sizeHigh = raw.readUInt32LE(0x6c);
    if (sizeHigh >= 2 ** 21) throw this.damaged(`inode ${ino} is ${sizeHigh} × 4 GiB long`);
    let mtime = raw.readInt32LE(0x10);
    if (extra >= 12) mtime += (raw.readUInt32LE(0x88) & 3) * 2 ** 32;
    return {
      ino,
      mode,
      size: raw.readUInt32LE(0x4) + sizeHigh * 2 ** 32,
      flags: raw.readUInt32LE(0x20),
      block: raw.subarray(0x28, 0x28 + 60),
      mtime,
      blocks: raw.readUInt32LE(0x1c) + raw.readUInt16LE(0x74) * 2 ** 32,
      fileAcl: raw.readUInt32LE(0x68) + raw.readUInt16LE(0x76) * 2 ** 32,
      seed,
      raw,
      extra,
    };
  }

  private async descriptor(group: number): Promise<{ inodeTable: number; flags: number; itableUnused: number }> {
    const perBlock = this.bs / this.descSize;
    const index = Math.floor(group / perBlock);
    let block: number;
    if (!(this.incompat & INCOMPAT.metaBg) || index < this.firstMetaBg) block = this.firstDataBlock + 1 + index;
    else {
      const first = index * perBlock;
      block = this.firstDataBlock + first * this.blocksPerGroup + (this.hasSuper(first) ? 1 : 0);
    }
    if (block >= this.blocksCount) throw this.damaged(`the descriptor of group ${group} would be past its end`);
    const d = await this.bytes(block * this.bs + (group % perBlock) * this.descSize, this.descSize);
    const wide = this.incompat & INCOMPAT.bit64 && this.descSize >= 64;
    if (this.csum) {
      let c = crc32cRaw(this.csumSeed, le32(group));
      c = crc32cRaw(c, d.subarray(0, 0x1e));
      c = crc32cRaw(c, Buffer.alloc(2));
      c = crc32cRaw(c, d.subarray(0x20));
      if ((c & 0xffff) !== d.readUInt16LE(0x1e)) throw this.damaged(`the descriptor of group ${group} fails its checksum`);
    } else if (this.roCompat & RO_COMPAT.gdtCsum) {
      let c = crc16(0xffff, this.uuid);
      c = crc16(c, le32(group));
      c = crc16(c, d.subarray(0, 0x1e));
      if (wide) c = crc16(c, d.subarray(0x20));
      if (c !== d.readUInt16LE(0x1e)) throw this.damaged(`the descriptor of group ${group} fails its checksum`);
    }
    return {
      inodeTable: d.readUInt32LE(0x8) + (wide ? d.readUInt32LE(0x28) * 2 ** 32 : 0),
      flags: d.readUInt16LE(0x12),
      itableUnused: d.readUInt16LE(0x1c) + (wide ? d.readUInt16LE(0x32) * 0x10000 : 0),
    };
  }

  /** Whether a group begins with a copy of the superblock (and so of the descriptors, for meta_bg). */
  private hasSuper(group: number): boolean {
    if (group === 0) return true;
    if (this.compat & COMPAT.sparseSuper2) return group === this.backupBgs[0] || group === this.backupBgs[1];
    if (group === 1 || !(this.roCompat & RO_COMPAT.sparseSuper)) return true;
    if (group % 2 === 0) return false;
    for (const p of [3, 5, 7]) {
      let n = p;
      while (n < group) n *= p;
      if (n === group) return true;
    }
    return false;
  }

  // ---- where a file's blocks are ----

  /** A file's mapped blocks in logical order, up to its size. */
  private runs(inode: Inode): AsyncGenerator<Run> {
    const blocks = Math.ceil(inode.size / this.bs);
    return inode.flags & FLAG.extents ? this.extentRuns(inode, blocks) : this.mapRuns(inode, blocks);
  }

  /** An extent node's header, checked (and a block's checksum): its entry count and depth. */
  private extentHeader(inode: Inode, node: Buffer, root: boolean, depth?: number): { entries: number; depth: number } {
    const bad = (what: string) => this.damaged(`the extent tree of inode ${inode.ino} ${what}`);
    if (node.readUInt16LE(0) !== EXTENT_MAGIC) throw bad('has a node without its magic number');
    const entries = node.readUInt16LE(2);
    const max = node.readUInt16LE(4);
    const d = node.readUInt16LE(6);
    const capacity = root ? 4 : Math.floor((this.bs - 12) / 12);
    // An index node must point somewhere; a leaf may be empty (as the kernel allows).
    if (max === 0 || max > capacity || entries > max || (d > 0 && entries === 0)) throw bad(`has a node of ${entries} entries out of ${max}`);
    if (d > MAX_DEPTH || (depth !== undefined && d !== depth)) throw bad(`has a node of depth ${d}`);
    if (!root && this.csum) {
      const tail = 12 + max * 12;
      if (tail + 4 > this.bs || crc32cRaw(inode.seed, node.subarray(0, tail)) !== node.readUInt32LE(tail)) throw bad('fails its checksum');
    }
    return { entries, depth: d };
  }

  private async *extentRuns(inode: Inode, blocks: number): AsyncGenerator<Run> {
    // The next logical block an extent may start at, and the last index entry's at each depth: each rises
    // through the walk, so no node is read twice and the walk is bounded by the file's blocks.
    yield* this.extentWalk(inode, blocks, { next: 0, index: [-1, -1, -1, -1, -1, -1], done: false }, inode.block, true);
  }

  private async *extentWalk(inode: Inode, blocks: number, state: { next: number; index: number[]; done: boolean }, node: Buffer, root: boolean, depth?: number): AsyncGenerator<Run> {
    const h = this.extentHeader(inode, node, root, depth);
    for (let i = 0; i < h.entries && !state.done; i++) {
      const e = 12 + 12 * i;
      const logical = node.readUInt32LE(e);
      if (logical >= blocks) {
        state.done = true;
        return;
      }
      if (h.depth === 0) {
        const len = node.readUInt16LE(e + 4);
        const n = len > 32768 ? len - 32768 : len;
        const physical = node.readUInt16LE(e + 6) * 2 ** 32 + node.readUInt32LE(e + 8);
        if (n === 0 || logical < state.next || physical + n > this.blocksCount) throw this.damaged(`the extent tree of inode ${inode.ino} maps blocks ${logical}-${logical + n - 1} to ${physical}`);
        state.next = logical + n;
        yield len > 32768 ? { logical, length: n } : { logical, length: n, physical };
      } else {
        const child = node.readUInt16LE(e + 8) * 2 ** 32 + node.readUInt32LE(e + 4);
        if (child >= this.blocksCount || child < this.firstDataBlock) throw this.damaged(`the extent tree of inode ${inode.ino} points at block ${child}`);
        if (logical <= state.index[h.depth]!) throw this.damaged(`the extent tree of inode ${inode.ino} has its index out of order at block ${logical}`);
        state.index[h.depth] = logical;
        yield* this.extentWalk(inode, blocks, state, await this.block(child), false, h.depth - 1);
      }
    }
  }

  /** Direct, indirect, double and triple indirect blocks (ext2/3): runs of consecutive blocks. */
  private async *mapRuns(inode: Inode, blocks: number): AsyncGenerator<Run> {
    let run: Run | undefined;
    for await (const [logical, physical] of this.mapped(inode, blocks)) {
      if (run && run.physical !== undefined && run.logical + run.length === logical && run.physical + run.length === physical) run.length++;
      else {
        if (run) yield run;
        run = { logical, length: 1, physical };
      }
    }
    if (run) yield run;
  }

  private async *mapped(inode: Inode, blocks: number): AsyncGenerator<[number, number]> {
    const per = this.bs / 4;
    for (let i = 0; i < 12 && i < blocks; i++) {
      const p = inode.block.readUInt32LE(4 * i);
      if (p) yield [i, this.mapCheck(inode, p)];
    }
    let start = 12;
    for (let level = 1; level <= 3 && start < blocks; level++) {
      const p = inode.block.readUInt32LE(4 * (11 + level));
      if (p) yield* this.indirect(inode, blocks, p, level, start);
      start += per ** level;
    }
  }

  private async *indirect(inode: Inode, blocks: number, p: number, level: number, start: number): AsyncGenerator<[number, number]> {
    const per = this.bs / 4;
    const buf = await this.block(this.mapCheck(inode, p));
    const span = per ** (level - 1);
    for (let i = 0; i < per && start + i * span < blocks; i++) {
      const q = buf.readUInt32LE(4 * i);
      if (!q) continue;
      if (level === 1) yield [start + i, this.mapCheck(inode, q)];
      else yield* this.indirect(inode, blocks, q, level - 1, start + i * span);
    }
  }

  private mapCheck(inode: Inode, p: number): number {
    if (p >= this.blocksCount) throw this.damaged(`the block map of inode ${inode.ino} points at block ${p}`);
    return p;
  }

  /** The physical block of one logical block; undefined for a hole or an uninitialized extent. */
  private async blockAt(inode: Inode, logical: number): Promise<number | undefined> {
    if (inode.flags & FLAG.extents) {
      let node = inode.block;
      let depth: number | undefined;
      for (let level = 0; level <= MAX_DEPTH; level++) {
        const h = this.extentHeader(inode, node, level === 0, depth);
        let at = -1;
        for (let i = 0; i < h.entries && node.readUInt32LE(12 + 12 * i) <= logical; i++) at = i;
        if (at < 0) return undefined;
        const e = 12 + 12 * at;
        if (h.depth === 0) {
          const start = node.readUInt32LE(e);
          const len = node.readUInt16LE(e + 4);
          const n = len > 32768 ? len - 32768 : len;
          const physical = node.readUInt16LE(e + 6) * 2 ** 32 + node.readUInt32LE(e + 8);
          if (logical >= start + n || len > 32768) return undefined;
          if (physical + n > this.blocksCount) throw this.damaged(`the extent tree of inode ${inode.ino} maps blocks past the end`);
          return physical + (logical - start);
        }
        const child = node.readUInt16LE(e + 8) * 2 ** 32 + node.readUInt32LE(e + 4);
        if (child >= this.blocksCount || child < this.firstDataBlock) throw this.damaged(`the extent tree of inode ${inode.ino} points at block ${child}`);
        node = await this.block(child);
        depth = h.depth - 1;
      }
      throw this.damaged(`the extent tree of inode ${inode.ino} is too deep`);
    }
    const per = this.bs / 4;
    let path: number[];
    let l = logical;
    if (l < 12) return this.mapPointer(inode, inode.block.readUInt32LE(4 * l), []);
    l -= 12;
    if (l < per) path = [12, l];
    else if ((l -= per) < per ** 2) path = [13, Math.floor(l / per), l % per];
    else if ((l -= per ** 2) < per ** 3) path = [14, Math.floor(l / per ** 2), Math.floor(l / per) % per, l % per];
    else return undefined;
    return this.mapPointer(inode, inode.block.readUInt32LE(4 * path[0]!), path.slice(1));
  }

  private async mapPointer(inode: Inode, p: number, path: number[]): Promise<number | undefined> {
    for (const i of path) {
      if (!p) return undefined;
      if (p >= this.blocksCount) throw this.damaged(`the block map of inode ${inode.ino} points at block ${p}`);
      p = (await this.block(p)).readUInt32LE(4 * i);
    }
    if (!p) return undefined;
    if (p >= this.blocksCount) throw this.damaged(`the block map of inode ${inode.ino} points at block ${p}`);
    return p;
  }

  // ---- reads ----

  private block(n: number): Promise<Buffer> {
    if (n >= this.blocksCount) throw this.damaged(`block ${n} is past its end (${this.blocksCount} blocks)`);
    return this.bytes(n * this.bs, this.bs);
  }

  /** Bytes of the partition: past the image's end (or the partition's) is damage, not a short read. */
  private bytes(offset: number, length: number): Promise<Buffer> {
    if (offset + length > this.partSize || this.base + offset + length > this.source.size) throw this.damaged(`${length} bytes at ${offset} are past the end of the ${offset + length > this.partSize ? 'partition' : 'image'}`);
    return this.source.read(this.base + offset, length);
  }

  private damaged(what: string): StrataError {
    return integrity(`${this.label.image}: partition ${this.label.partition} cannot be read as ext2/3/4 (${what})`, { path: this.label.image });
  }
}

function* zeros(n: number): Generator<Buffer> {
  for (let left = n; left > 0; left -= PIECE) yield Buffer.alloc(Math.min(PIECE, left));
}
