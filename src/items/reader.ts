/**
 * Random access to one version of a file for the item readers: any byte
 * range through VersionFile's checked reads, with a small cache of aligned
 * blocks, since format parsers read the same few bytes again and again (a
 * zip's directory, a tar header, a SQLite page). Every reader of an item
 * goes through one of these, so `fetched` counts all it took from the
 * repository and the process's cache of decoded blocks (whole blocks), and
 * `requested` what the format asked for.
 */
import type { VersionFile } from '../engine/snapshot-tree.js';
import { rangeNotSatisfiable, usageError } from '../errors.js';

/** Reads are rounded out to this: one question covers the small reads around it. */
export const READ_BLOCK = 64 * 1024;
/** Blocks kept (2 MiB): enough for a zip's directory or a SQLite b-tree's upper pages. */
const KEPT_BLOCKS = 32;
/** The longest window a stream reads at once. */
const STREAM_WINDOW = 1024 * 1024;
/** Reads longer than this bypass the kept blocks: they would only push out what small reads come back to. */
const DIRECT = 1024 * 1024;

export class RangeReader {
  /** Bytes the format's reads asked for, rounded out to the read blocks. */
  requested = 0;
  /** Told after each read of the repository (progress on a long scan). */
  onRead?: () => void;
  /**
   * Reads not rounded out (an item whose bounds an index gave: only the
   * blocks that hold it are fetched). The process's cache of decoded blocks
   * still spares a second fetch of a block read twice.
   */
  exact = false;
  private readonly kept = new Map<number, Buffer>();

  constructor(
    readonly file: VersionFile,
    private blockSize = READ_BLOCK,
  ) {
    file.countBlocks = true;
  }

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

  /** Bytes of the blocks read from the repository and from the cache of decoded blocks. */
  get fetched(): number {
    return this.file.blockBytes;
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
    const bs = this.blockSize;
    const first = Math.floor(offset / bs);
    const last = Math.floor((offset + length - 1) / bs);
    // More blocks than are kept would push out the first before they are copied out.
    if (length > DIRECT || this.exact || last - first >= KEPT_BLOCKS) return this.fetch(offset, length);
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

  /**
   * The bytes of [start, end) in order, for a reader that may stop early (a
   * scan for one message): windows that grow from one read block to
   * STREAM_WINDOW, the next one asked for while the last is used, so a short
   * scan fetches little and a long one keeps the repository busy.
   */
  async *stream(start = 0, end = this.size): AsyncGenerator<Buffer> {
    let at = start;
    let window = this.blockSize;
    let next: Promise<Buffer> | undefined;
    const ask = (from: number, length: number) => {
      // Through the kept blocks: a message streamed out after the scan that found it is not fetched twice.
      const p = this.read(from, length);
      p.catch(() => {});
      return p;
    };
    while (at < end) {
      const length = Math.min(window, end - at);
      const piece = await (next ?? ask(at, length));
      next = undefined;
      at += piece.length;
      window = Math.min(STREAM_WINDOW, window * 2);
      // Read ahead only once the scan has shown it goes on.
      if (window === STREAM_WINDOW && at < end) next = ask(at, Math.min(window, end - at));
      yield piece;
    }
  }

  private async fetch(offset: number, length: number): Promise<Buffer> {
    const b = await this.file.readAt(offset, length);
    this.requested += b.length;
    this.onRead?.();
    return b;
  }

  private keep(i: number, block: Buffer): void {
    this.kept.set(i, block);
    if (this.kept.size > KEPT_BLOCKS) this.kept.delete(this.kept.keys().next().value!);
  }
}
