/**
 * Open files of a mount and their reads. A read at any offset is one
 * VersionFile.readAt: its range resolved through the TOC, only the covering
 * blocks fetched, decoded blocks kept in the process's cache. A file read in
 * order (cp, tar, sha256sum, a database scan) is noticed after two reads,
 * and from then on the next chunks are fetched ahead, in parallel, more of
 * them the longer the run goes on: the reader finds its bytes already there.
 */
import type { VersionFile } from '../engine/snapshot-tree.js';

/** Bytes fetched ahead at a time: one chunk, aligned. */
export const CHUNK = 1024 * 1024;
/** At most this many chunks ahead of a sequential reader. */
const MAX_AHEAD = 16;
/** A read this near where the last one ended still counts as in order (the kernel sends reads of one file concurrently). */
const NEAR = 4 * CHUNK;

export interface ReadStats {
  reads: number;
  /** Reads answered from chunks fetched ahead. */
  prefetched: number;
  /** Chunks fetched ahead. */
  chunks: number;
}

/** One open file: its version and what is being fetched ahead of its reader. */
export class OpenFile {
  /** Where the last read ended (exclusive), and how many reads in a row were near it. */
  private lastEnd = -1;
  private run = 0;
  /** Chunks fetched ahead, by index. */
  private readonly ahead = new Map<number, Promise<Buffer>>();

  constructor(
    readonly file: VersionFile,
    private readonly stats: ReadStats,
  ) {}

  get size(): number {
    return this.file.size;
  }

  /** Up to `length` bytes from `position` (fewer at the end of the file, none past it). */
  async read(position: number, length: number): Promise<Buffer> {
    this.stats.reads++;
    const size = this.file.size;
    if (position >= size || length <= 0) return Buffer.alloc(0);
    const end = Math.min(size, position + length);
    const inOrder = this.lastEnd >= 0 && Math.abs(position - this.lastEnd) <= NEAR;
    this.run = inOrder ? this.run + 1 : 0;
    this.lastEnd = Math.max(end, inOrder ? this.lastEnd : 0);
    const first = Math.floor(position / CHUNK);
    const last = Math.floor((end - 1) / CHUNK);
    if (this.run < 1 && !this.ahead.has(first)) {
      if (this.ahead.size > 0) this.forget(first, last);
      return this.file.readAt(position, end - position);
    }
    // In order: whole chunks, this read's and the next ones, fetched together.
    const depth = Math.min(MAX_AHEAD, 2 ** Math.min(this.run, 5));
    const lastChunk = Math.floor((size - 1) / CHUNK);
    for (let c = first; c <= Math.min(lastChunk, last + depth); c++) if (!this.ahead.has(c)) this.fetch(c);
    this.forget(first, last + depth);
    const chunks = await Promise.all(Array.from({ length: last - first + 1 }, (_, i) => this.ahead.get(first + i)!));
    this.stats.prefetched++;
    if (first === last) return chunks[0]!.subarray(position - first * CHUNK, end - first * CHUNK);
    const out = Buffer.allocUnsafe(end - position);
    let at = 0;
    for (let i = 0; i < chunks.length; i++) {
      const base = (first + i) * CHUNK;
      const from = Math.max(position, base) - base;
      const to = Math.min(end, base + CHUNK) - base;
      at += chunks[i]!.copy(out, at, from, to);
    }
    return out;
  }

  /** Drops what was fetched ahead: the file was closed. */
  close(): void {
    this.ahead.clear();
  }

  /** Starts fetching chunk `c`: streamed, so its blocks come in parallel without pushing out the cache's small reads. */
  private fetch(c: number): void {
    const start = c * CHUNK;
    const end = Math.min(this.file.size, start + CHUNK) - 1;
    this.stats.chunks++;
    const p = (async () => {
      const out = Buffer.allocUnsafe(end - start + 1);
      let at = 0;
      for await (const piece of this.file.stream(start, end, { cache: false, shared: true })) at += piece.copy(out, at);
      return out;
    })();
    // A chunk nobody waits for (the reader went elsewhere) must not fail the process.
    p.catch(() => this.ahead.delete(c));
    this.ahead.set(c, p);
  }

  /** Keeps only the chunks in [from, to]. */
  private forget(from: number, to: number): void {
    for (const c of this.ahead.keys()) if (c < from || c > to) this.ahead.delete(c);
  }
}

/** The open files of a mount, by the handle the kernel is given. */
export class OpenFiles {
  private next = 1;
  private readonly files = new Map<number, OpenFile>();
  readonly stats: ReadStats = { reads: 0, prefetched: 0, chunks: 0 };

  open(file: VersionFile): number {
    const fd = this.next++;
    this.files.set(fd, new OpenFile(file, this.stats));
    return fd;
  }

  get(fd: number): OpenFile | undefined {
    return this.files.get(fd);
  }

  release(fd: number): void {
    this.files.get(fd)?.close();
    this.files.delete(fd);
  }

  get count(): number {
    return this.files.size;
  }
}
