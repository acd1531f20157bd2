/**
 * A qcow2 image seen as the raw disk it holds: its header, then for each
 * cluster read, the L1 and L2 tables that say where the cluster is in the
 * file (https://www.qemu.org/docs/master/interop/qcow2.html). A cluster no
 * table maps, or one marked as zeros, reads as zeros. What this does not
 * read is refused by name: a backing file, encryption, compressed clusters,
 * extended L2 entries.
 */
import { integrity, StrataError } from '../errors.js';
import type { RangeReader } from './reader.js';

/** What the disk readers need of an image: its size, and exact reads of it. */
export interface ByteSource {
  readonly path: string;
  readonly size: number;
  read(offset: number, length: number): Promise<Buffer>;
}

const MAGIC = 0x514649fb;
/** Bits 9-55 of a table entry: a cluster's offset in the file. */
const OFFSET_MASK = 0x00fffffffffffe00n;
const COMPRESSED = 1n << 62n;
const ZERO = 1n;

export class Qcow2Image implements ByteSource {
  private readonly l2Cache = new Map<number, Buffer>();

  private constructor(
    private readonly file: RangeReader,
    readonly size: number,
    private readonly clusterBits: number,
    private readonly l1: Buffer,
  ) {}

  get path(): string {
    return this.file.path;
  }

  static async open(file: RangeReader): Promise<Qcow2Image> {
    const h = await file.read(0, Math.min(file.size, 104));
    const refuse = (why: string) => new StrataError('wrong_format', `${file.path} is a qcow2 image ${why}, which strata does not read`);
    if (h.length < 72 || h.readUInt32BE(0) !== MAGIC) throw integrity(`${file.path}: its qcow2 header is damaged`);
    const version = h.readUInt32BE(4);
    if (version !== 2 && version !== 3) throw refuse(`of version ${version}`);
    if (h.readBigUInt64BE(8) !== 0n) throw refuse('with a backing file');
    const clusterBits = h.readUInt32BE(20);
    if (clusterBits < 9 || clusterBits > 21) throw integrity(`${file.path}: its qcow2 header says clusters of 2^${clusterBits} bytes`);
    const size = Number(h.readBigUInt64BE(24));
    if (h.readUInt32BE(32) !== 0) throw refuse('that is encrypted');
    if (version === 3 && h.length >= 80) {
      const incompatible = h.readBigUInt64BE(72);
      if (incompatible & 0x10n) throw refuse('with extended L2 entries');
      if (incompatible & ~0x3n) throw refuse(`with incompatible features 0x${incompatible.toString(16)}`);
    }
    const l1Size = h.readUInt32BE(36);
    const l1Offset = Number(h.readBigUInt64BE(40));
    const clusterSize = 2 ** clusterBits;
    const needed = Math.ceil(size / clusterSize / (clusterSize / 8));
    // An L1 table of 64 MiB maps 2^39 clusters: more is no image, and is not held in memory.
    if (l1Size < needed || l1Size > 8 * 1024 * 1024 || l1Offset + l1Size * 8 > file.size) throw integrity(`${file.path}: its qcow2 L1 table does not cover the disk or lies past the file's end`);
    return new Qcow2Image(file, size, clusterBits, await file.read(l1Offset, l1Size * 8));
  }

  async read(offset: number, length: number): Promise<Buffer> {
    if (offset < 0 || length < 0 || offset + length > this.size) throw new StrataError('range_not_satisfiable', `${this.path}: ${length} bytes at ${offset} are past the end of its disk (${this.size} bytes)`);
    const out = Buffer.alloc(length);
    const clusterSize = 2 ** this.clusterBits;
    for (let done = 0; done < length; ) {
      const at = offset + done;
      const cluster = Math.floor(at / clusterSize);
      const inCluster = at % clusterSize;
      const n = Math.min(length - done, clusterSize - inCluster);
      const host = await this.hostCluster(cluster);
      if (host !== undefined) (await this.file.read(host + inCluster, n)).copy(out, done);
      done += n;
    }
    return out;
  }

  /** Where a guest cluster is in the file, or undefined when it reads as zeros. */
  private async hostCluster(cluster: number): Promise<number | undefined> {
    const entries = 2 ** (this.clusterBits - 3);
    const l1Index = Math.floor(cluster / entries);
    const l2Offset = Number(this.l1.readBigUInt64BE(l1Index * 8) & OFFSET_MASK);
    if (l2Offset === 0) return undefined;
    let l2 = this.l2Cache.get(l2Offset);
    if (!l2) {
      if (l2Offset + entries * 8 > this.file.size) throw integrity(`${this.path}: a qcow2 L2 table lies past the file's end`);
      l2 = await this.file.read(l2Offset, entries * 8);
      if (this.l2Cache.size > 64) this.l2Cache.clear();
      this.l2Cache.set(l2Offset, l2);
    }
    const entry = l2.readBigUInt64BE((cluster % entries) * 8);
    if (entry & COMPRESSED) throw new StrataError('wrong_format', `${this.path} is a qcow2 image with compressed clusters, which strata does not read`);
    if (entry & ZERO) return undefined;
    const host = Number(entry & OFFSET_MASK);
    if (host === 0) return undefined;
    if (host >= this.file.size) throw integrity(`${this.path}: a qcow2 cluster lies past the file's end`);
    return host;
  }
}
