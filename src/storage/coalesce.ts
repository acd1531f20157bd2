/**
 * Reads made together, merged: a wrapper for a store where each read is a
 * request (S3), so that the blocks a restore or a long read asks for at once
 * (engine/read.ts starts a burst of them in one turn) cost one ranged GET per
 * run of neighbouring blocks in a pack rather than one per block. Reads of
 * one object asked in the same turn, sorted by offset, are joined while the
 * gap between them is at most `gap` bytes and the whole at most `span`; each
 * caller gets exactly its own bytes. A joined read that fails is made again
 * one by one, so each caller gets its own answer (a short_read is its own).
 * While a restore runs (`wholePacks`), a pack read a few times is fetched
 * whole and kept for its other reads. Everything else passes through.
 */
import { WrappedStorage, type Handle, type Kind, type Storage } from './storage.js';

/** Reads of a pack before it is fetched whole (with `wholePacks`): a file or two of a pack cost only their ranges. */
const WHOLE_AFTER = 3;
/** The largest pack fetched whole, and how many are kept (least recently read dropped first): 128 MiB at most. */
const WHOLE_MAX = 16 * 1024 * 1024;
const WHOLE_KEPT = 8;

interface Waiting {
  offset: number;
  length: number;
  resolve: (b: Buffer) => void;
  reject: (e: unknown) => void;
}

export interface CoalesceOptions {
  /** Bytes between two reads that may be fetched (and dropped) to join them. */
  gap?: number;
  /** The largest joined read. */
  span?: number;
}

export class CoalescingStorage extends WrappedStorage implements Storage {
  /** Reads asked for, and the requests they took (for tests and statistics). */
  reads = 0;
  requests = 0;
  /**
   * Set by a restore (Repository.wholePacks): it reads most blocks of every
   * pack it touches, spread over many files and many turns, so a pack read
   * a few times is fetched whole, once, and kept for its other reads. Packs
   * are never replaced, so a kept one stays true.
   */
  get wholePacks(): boolean {
    return this.keepWhole;
  }

  set wholePacks(on: boolean) {
    this.keepWhole = on;
    if (on) return;
    this.kept.clear();
    this.touched.clear();
  }

  private keepWhole = false;
  private readonly kept = new Map<string, Promise<Buffer | undefined>>();
  private readonly touched = new Map<string, number>();
  private readonly pending = new Map<string, { h: Handle; waiting: Waiting[] }>();
  private scheduled = false;
  private readonly gap: number;
  private readonly span: number;

  constructor(
    inner: Storage,
    opts: CoalesceOptions = {},
  ) {
    super(inner);
    this.gap = opts.gap ?? 64 * 1024;
    this.span = opts.span ?? 8 * 1024 * 1024;
  }

  read(h: Handle, offset: number, length: number): Promise<Buffer> {
    this.reads++;
    // What is not a plain range of bytes goes straight through, to get its own answer.
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length <= 0 || length > this.span) {
      this.requests++;
      return this.inner.read(h, offset, length);
    }
    const whole = this.keepWhole && h.kind === 'pack' ? this.whole(h) : undefined;
    if (whole) {
      return whole.then((bytes) => {
        // Not kept (too large, or the fetch failed), or past what was (a size hint below the pack's): read as any range, which gives the read its own answer.
        if (!bytes || offset + length > bytes.length) return this.merged(h, offset, length);
        return bytes.subarray(offset, offset + length);
      });
    }
    return this.merged(h, offset, length);
  }

  /** A pack kept whole (undefined in the promise: not kept), once it has been read WHOLE_AFTER times; undefined before. */
  private whole(h: Handle): Promise<Buffer | undefined> | undefined {
    const kept = this.kept.get(h.name);
    if (kept) {
      this.kept.delete(h.name);
      this.kept.set(h.name, kept);
      return kept;
    }
    const n = (this.touched.get(h.name) ?? 0) + 1;
    this.touched.set(h.name, n);
    if (n < WHOLE_AFTER) return undefined;
    this.touched.delete(h.name);
    const fetched = (async () => {
      // The pack's size as the catalog has it (Handle.size) spares asking the store. It is read as a
      // range of that size: a pack larger than a wrong hint is not read whole into memory.
      if (h.size !== undefined) {
        if (h.size <= 0 || h.size > WHOLE_MAX) return undefined;
        this.requests++;
        return await this.inner.read(h, 0, h.size);
      }
      this.requests++;
      const { size } = await this.inner.stat(h);
      if (size > WHOLE_MAX) return undefined;
      this.requests++;
      return await this.inner.get(h);
    })().catch(() => {
      this.kept.delete(h.name);
      return undefined;
    });
    this.kept.set(h.name, fetched);
    if (this.kept.size > WHOLE_KEPT) this.kept.delete(this.kept.keys().next().value!);
    return fetched;
  }

  /** A range, asked for with the others of this turn. */
  private merged(h: Handle, offset: number, length: number): Promise<Buffer> {
    return new Promise<Buffer>((resolve, reject) => {
      const key = `${h.kind}/${h.name}`;
      let entry = this.pending.get(key);
      if (!entry) this.pending.set(key, (entry = { h, waiting: [] }));
      entry.waiting.push({ offset, length, resolve, reject });
      if (!this.scheduled) {
        this.scheduled = true;
        setImmediate(() => this.flush());
      }
    });
  }

  private flush(): void {
    this.scheduled = false;
    const all = [...this.pending.values()];
    this.pending.clear();
    for (const { h, waiting } of all) {
      waiting.sort((a, b) => a.offset - b.offset);
      let run: Waiting[] = [];
      let start = 0;
      let end = 0;
      for (const w of waiting) {
        if (run.length > 0 && w.offset <= end + this.gap && Math.max(end, w.offset + w.length) - start <= this.span) {
          run.push(w);
          end = Math.max(end, w.offset + w.length);
          continue;
        }
        if (run.length > 0) void this.fetch(h, run, start, end);
        run = [w];
        start = w.offset;
        end = w.offset + w.length;
      }
      if (run.length > 0) void this.fetch(h, run, start, end);
    }
  }

  private async fetch(h: Handle, run: Waiting[], start: number, end: number): Promise<void> {
    this.requests++;
    if (run.length === 1) {
      const w = run[0]!;
      return this.inner.read(h, w.offset, w.length).then(w.resolve, w.reject);
    }
    let bytes: Buffer;
    try {
      bytes = await this.inner.read(h, start, end - start);
    } catch {
      // One by one: each gets its own answer (its bytes, or its own error).
      for (const w of run) {
        this.requests++;
        this.inner.read(h, w.offset, w.length).then(w.resolve, w.reject);
      }
      return;
    }
    for (const w of run) w.resolve(bytes.subarray(w.offset - start, w.offset - start + w.length));
  }

  put(h: Handle, data: Uint8Array | readonly Uint8Array[]): Promise<void> {
    return this.inner.put(h, data);
  }

  putStream(h: Handle, source: AsyncIterable<Uint8Array>, size: number): Promise<'created' | 'identical' | 'conflict'> {
    return this.inner.putStream(h, source, size);
  }

  get(h: Handle): Promise<Buffer> {
    return this.inner.get(h);
  }

  stream(h: Handle, start: number, end: number): AsyncIterable<Buffer> {
    return this.inner.stream(h, start, end);
  }

  stat(h: Handle): Promise<{ size: number; mtimeMs: number }> {
    return this.inner.stat(h);
  }

  exists(h: Handle): Promise<boolean> {
    return this.inner.exists(h);
  }

  list(kind: Kind): AsyncIterable<string> {
    return this.inner.list(kind);
  }

  delete(h: Handle): Promise<void> {
    return this.inner.delete(h);
  }

  sweepTemporary(olderThanMs: number): Promise<number> {
    return this.inner.sweepTemporary(olderThanMs);
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}
