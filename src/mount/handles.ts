/**
 * Open files of a mount and their reads. A read at any offset is one
 * VersionFile.readAt: its range resolved through the TOC, only the covering
 * blocks fetched, decoded blocks kept in the process's cache. A file read in
 * order (cp, tar, sha256sum, a database scan) is noticed after two reads,
 * and from then on the next chunks are fetched ahead, in parallel, more of
 * them the longer the run goes on: the reader finds its bytes already there.
 */
import type { VersionFile } from '../engine/snapshot-tree.js';
import { BufferPool } from './buffer-pool.js';


/** Bytes fetched ahead at a time: one chunk, aligned. */
export const CHUNK = 1024 * 1024;
/** At most this many chunks ahead of a sequential reader. */
const MAX_AHEAD = 16;
/**
 * A read that does not follow another but is this near the furthest one so
 * far neither continues nor ends a run: the kernel sends several reads of a
 * file at once, and they arrive in any order. Further away, it is a seek.
 */
const NEAR = MAX_AHEAD * CHUNK;
/** Reads remembered to tell whether the next one follows one of them. */
const RECENT = 32;
/** Chunks this far behind the furthest read are kept for reads that arrive late. */
const BEHIND = 8;
/** Chunks held ahead by all open files together; past it each reader gets one chunk ahead, not more. */
const BUDGET = 96;
/** Chunk buffers kept for the next chunks once given back: what one reader in order uses (ahead, behind, being filled, joined replies). */
const POOL_KEPT = MAX_AHEAD + BEHIND + 8;

export interface ReadStats {
  reads: number;
  /** Reads answered from chunks fetched ahead. */
  prefetched: number;
  /** Chunks fetched ahead. */
  chunks: number;
  /** Chunks fetched ahead and held now, by all open files. */
  held: number;
}

interface Pending {
  promise: Promise<Buffer>;
  resolve: (b: Buffer) => void;
  reject: (e: unknown) => void;
}

function pending(): Pending {
  let resolve!: (b: Buffer) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<Buffer>((res, rej) => ((resolve = res), (reject = rej)));
  // A chunk nobody waits for (the reader went elsewhere) must not fail the process.
  promise.catch(() => {});
  return { promise, resolve, reject };
}

/** Chunks a reader waits for, held (never given back to the pool, never refilled) until it lets them go. */
interface Hold {
  ready: Promise<Buffer[]>;
  release(): void;
}

/**
 * One stream of a file from a chunk on, cut into chunks as it comes: the
 * blocks are fetched as a long read fetches them (several at once, one
 * question to the catalog per page), and the stream waits while it is more
 * than `depth` chunks ahead of the reader. Each chunk is a buffer of the
 * pool's, given back once it is dropped and no reader holds it.
 */
class Pump {
  private readonly chunks = new Map<number, Pending>();
  /** Chunks filled and not yet dropped. */
  private readonly filled = new Set<number>();
  /** The pool's buffer behind each chunk filled and not yet given back. */
  private readonly buffers = new Map<number, Buffer>();
  /** How many readers hold each chunk. */
  private readonly holds = new Map<number, number>();
  /** The chunk being filled: those before it were filled (and may be dropped by now). */
  private next: number;
  private stopped = false;
  private wake?: () => void;
  /** The furthest chunk a reader asked for. */
  front: number;
  /** Chunks from here on are (or will be) filled by this pump. */
  readonly from: number;

  constructor(
    private readonly file: VersionFile,
    from: number,
    private readonly depth: () => number,
    private readonly stats: ReadStats,
    private readonly pool: BufferPool,
  ) {
    this.from = from;
    this.front = from;
    this.next = from;
    void this.run(stats);
  }

  /**
   * Chunks first..last of the stream (first >= from), held until release():
   * one the stream already passed and dropped is refused (ready rejects).
   */
  hold(first: number, last: number): Hold {
    const held: number[] = [];
    const waits: Promise<Buffer>[] = [];
    for (let c = first; c <= last; c++) {
      let p = this.chunks.get(c);
      if (!p) {
        if (c < this.next) {
          waits.push(Promise.reject(new Error('passed')));
          continue;
        }
        this.chunks.set(c, (p = pending()));
      }
      if (this.stopped) p.reject(new Error('stopped'));
      this.holds.set(c, (this.holds.get(c) ?? 0) + 1);
      held.push(c);
      waits.push(p.promise);
    }
    const ready = Promise.all(waits);
    ready.catch(() => {});
    return { ready, release: () => held.forEach((c) => this.unhold(c)) };
  }

  /** A reader reached chunk `c`: the stream may go on. */
  reached(c: number): void {
    if (c > this.front) this.front = c;
    // Only filled chunks go: one still being filled may have a reader waiting for it.
    for (const k of this.filled) if (k < this.front - BEHIND) this.drop(k);
    this.wake?.();
  }

  stop(): void {
    this.stopped = true;
    for (const [k, p] of this.chunks) {
      p.reject(new Error('stopped'));
      this.drop(k);
    }
    this.wake?.();
  }

  private unhold(c: number): void {
    const n = (this.holds.get(c) ?? 0) - 1;
    if (n > 0) return void this.holds.set(c, n);
    this.holds.delete(c);
    if (!this.chunks.has(c)) this.giveBack(c);
  }

  private drop(c: number): void {
    this.chunks.delete(c);
    if (this.filled.delete(c)) this.stats.held--;
    if (!this.holds.has(c)) this.giveBack(c);
  }

  private giveBack(c: number): void {
    const b = this.buffers.get(c);
    if (!b) return;
    this.buffers.delete(c);
    this.pool.give(b);
  }

  private async run(stats: ReadStats): Promise<void> {
    const size = this.file.size;
    const lastChunk = Math.floor((size - 1) / CHUNK);
    const length = (c: number) => Math.min(size, (c + 1) * CHUNK) - c * CHUNK;
    let c = this.from;
    this.next = c;
    /** The pool's buffer being filled, until it is chunk c's. */
    let own: Buffer | undefined = this.pool.take();
    let buf = own.subarray(0, length(c));
    let at = 0;
    const stream = this.file.stream(c * CHUNK, size - 1, { cache: false, shared: true });
    try {
      for await (const piece of stream) {
        if (this.stopped) return;
        for (let off = 0; off < piece.length; ) {
          const n = piece.copy(buf, at, off);
          at += n;
          off += n;
          if (at < buf.length) continue;
          stats.chunks++;
          if (this.stopped) return;
          const p = this.chunks.get(c) ?? pending();
          this.chunks.set(c, p);
          this.filled.add(c);
          this.buffers.set(c, own!);
          own = undefined;
          stats.held++;
          p.resolve(buf);
          this.next = ++c;
          if (c > lastChunk) return;
          while (!this.stopped && c > this.front + this.depth()) await new Promise<void>((r) => (this.wake = r));
          if (this.stopped) return;
          own = this.pool.take();
          buf = own.subarray(0, length(c));
          at = 0;
        }
      }
    } catch (e) {
      for (const p of this.chunks.values()) p.reject(e);
      this.stopped = true;
    } finally {
      this.wake = undefined;
      if (own) this.pool.give(own);
      if (this.stopped) {
        // A stream that failed keeps no chunk either (stop() dropped them already).
        for (const k of [...this.chunks.keys()]) this.drop(k);
        await stream.return(undefined);
      }
    }
  }
}

/** One open file: its version and what is being fetched ahead of its reader. */
export class OpenFile {
  /** Where the furthest read ended (exclusive), and how many reads in a row were near it. */
  private lastEnd = -1;
  /** The last reads, [start, end): a read that starts where one ended, or ends where one started, follows it. */
  private readonly recent: [number, number][] = [];
  private run = 0;
  private pump?: Pump;

  constructor(
    readonly file: VersionFile,
    private readonly stats: ReadStats,
    private readonly pool: BufferPool,
  ) {}

  get size(): number {
    return this.file.size;
  }

  /**
   * Up to `length` bytes from `position` (fewer at the end of the file, none
   * past it), handed to `use`, whose result this resolves to. The bytes may
   * be a view of a chunk fetched ahead or of a pooled buffer: they stay as
   * they are until the event loop's next turn (a binding that copies them a
   * process.nextTick later still gets them), not longer; `use` copies what
   * it keeps.
   */
  async read<T>(position: number, length: number, use: (data: Buffer) => T): Promise<T> {
    this.stats.reads++;
    const size = this.file.size;
    if (position >= size || length <= 0) return use(Buffer.alloc(0));
    const end = Math.min(size, position + length);
    const follows = this.recent.some(([s, e]) => e === position || s === end);
    const near = this.lastEnd >= 0 && Math.abs(position - this.lastEnd) <= NEAR;
    this.run = follows ? this.run + 1 : near ? this.run : 0;
    this.lastEnd = follows || near ? Math.max(end, this.lastEnd) : end;
    this.recent.push([position, end]);
    if (this.recent.length > RECENT) this.recent.shift();
    const first = Math.floor(position / CHUNK);
    const last = Math.floor((end - 1) / CHUNK);
    if (this.run < 1) {
      this.pump?.stop();
      this.pump = undefined;
      return use(await this.file.readAt(position, end - position));
    }
    // In order: from a stream that runs ahead of the reader, further the longer the run.
    this.pump ??= new Pump(this.file, first, () => (this.stats.held > BUDGET ? 1 : Math.min(MAX_AHEAD, 2 ** Math.min(this.run, 5))), this.stats, this.pool);
    const pump = this.pump;
    // A late read from before the stream's start is read as it is.
    if (first < pump.from) return use(await this.file.readAt(position, end - position));
    pump.reached(last);
    const hold = pump.hold(first, last);
    let joined: Buffer | undefined;
    try {
      let chunks: Buffer[];
      try {
        chunks = await hold.ready;
      } catch {
        // The stream stopped (the reader went elsewhere, or a fetch failed): a read of its own says why, if anything is wrong.
        return use(await this.file.readAt(position, end - position));
      }
      this.stats.prefetched++;
      if (first === last) return use(chunks[0]!.subarray(position - first * CHUNK, end - first * CHUNK));
      // Across chunks (at most two: a read is at most a chunk long, else a buffer of its own).
      const out = end - position <= this.pool.size ? (joined = this.pool.take()).subarray(0, end - position) : Buffer.allocUnsafe(end - position);
      let at = 0;
      for (let i = 0; i < chunks.length; i++) {
        const base = (first + i) * CHUNK;
        const from = Math.max(position, base) - base;
        const to = Math.min(end, base + CHUNK) - base;
        at += chunks[i]!.copy(out, at, from, to);
      }
      return use(out);
    } finally {
      // Once the bytes handed to `use` are gone (see above).
      setImmediate(() => {
        hold.release();
        if (joined) this.pool.give(joined);
      });
    }
  }

  /** Stops fetching ahead: the file was closed. */
  close(): void {
    this.pump?.stop();
    this.pump = undefined;
  }
}

/** The open files of a mount, by the handle the kernel is given. */
export class OpenFiles {
  private next = 1;
  private readonly files = new Map<number, OpenFile>();
  readonly stats: ReadStats = { reads: 0, prefetched: 0, chunks: 0, held: 0 };
  /** The buffers of chunks fetched ahead and of replies joined from two, for all open files. */
  readonly pool = new BufferPool(CHUNK, POOL_KEPT);

  open(file: VersionFile): number {
    const fd = this.next++;
    this.files.set(fd, new OpenFile(file, this.stats, this.pool));
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
