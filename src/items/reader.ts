/**
 * Random access to one version of a file for the item readers: any byte
 * range through VersionFile's checked reads, with a small cache of aligned
 * blocks, since format parsers read the same few bytes again and again (a
 * zip's directory, a tar header, a SQLite page). Every reader of an item
 * goes through one of these, so `fetched` counts all it took from the
 * repository and the process's cache of decoded blocks.
 */
import type { VersionFile } from '../engine/snapshot-tree.js';
import { rangeNotSatisfiable, usageError } from '../errors.js';

/** Reads are rounded out to this: one question covers the small reads around it. */
export const READ_BLOCK = 64 * 1024;
/** Blocks kept (2 MiB): enough for a zip's directory or a SQLite b-tree's upper pages. */
const KEPT_BLOCKS = 32;
/** Reads longer than this bypass the kept blocks: they would only push out what small reads come back to. */
const DIRECT = 1024 * 1024;

export class RangeReader {
  /** Bytes read from the repository and from the cache of decoded blocks. */
  fetched = 0;
  private readonly kept = new Map<number, Buffer>();

  constructor(
    readonly file: VersionFile,
    private blockSize = READ_BLOCK,
  ) {}

  /** Reads rounded out to `bytes` from now on (a SQLite page: its own cache keeps what it reads again). */
  align(bytes: number): void {
    if (!Number.isSafeInteger(bytes) || bytes < 512) throw usageError(`no read block of ${bytes} bytes`);
    if (bytes === this.blockSize) return;
    this.blockSize = bytes;
    this.kept.clear();
  }

  get size(): number {
    return this.file.size;
  }

  get path(): string {
    return this.file.path;
  }

  /** Exactly `length` bytes at `offset`; past the end is an error (range_not_satisfiable), never a short buffer. */
  async read(offset: number, length: number): Promise<Buffer> {
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0) {
      throw usageError(`${this.path}: no read of ${length} bytes at ${offset}`);
    }
    if (offset + length > this.size) throw rangeNotSatisfiable(`${this.path}: ${length} bytes at ${offset} are past its end (${this.size} bytes)`);
    if (length === 0) return Buffer.alloc(0);
    if (length > DIRECT) return this.fetch(offset, length);
    const bs = this.blockSize;
    const first = Math.floor(offset / bs);
    const last = Math.floor((offset + length - 1) / bs);
    // Missing blocks in runs: one checked read for each run.
    let b = first;
    while (b <= last) {
      if (this.kept.has(b)) {
        b++;
        continue;
      }
      let e = b;
      while (e + 1 <= last && !this.kept.has(e + 1)) e++;
      const from = b * bs;
      const to = Math.min(this.size, (e + 1) * bs);
      const got = await this.fetch(from, to - from);
      for (let i = b; i <= e; i++) this.keep(i, got.subarray((i - b) * bs, Math.min(got.length, (i - b + 1) * bs)));
      b = e + 1;
    }
    const out = Buffer.allocUnsafe(length);
    for (let i = first; i <= last; i++) {
      const block = this.kept.get(i)!;
      // Most recently used last.
      this.kept.delete(i);
      this.kept.set(i, block);
      const start = Math.max(offset, i * bs);
      const end = Math.min(offset + length, i * bs + block.length);
      block.copy(out, start - offset, start - i * bs, end - i * bs);
    }
    return out;
  }

  /** The bytes of [start, end) in pieces as the repository holds them, for a reader that goes through in order. */
  async *stream(start = 0, end = this.size): AsyncGenerator<Buffer> {
    if (end <= start) return;
    for await (const piece of this.file.stream(start, end - 1, { shared: true })) {
      this.fetched += piece.length;
      yield piece;
    }
  }

  private async fetch(offset: number, length: number): Promise<Buffer> {
    const b = await this.file.readAt(offset, length);
    this.fetched += b.length;
    return b;
  }

  private keep(i: number, block: Buffer): void {
    this.kept.set(i, block);
    if (this.kept.size > KEPT_BLOCKS) this.kept.delete(this.kept.keys().next().value!);
  }
}
