/**
 * Reads made together, merged: a wrapper for a store where each read is a
 * request (S3), so that the blocks a restore or a long read asks for at once
 * (engine/read.ts starts a burst of them in one turn) cost one ranged GET per
 * run of neighbouring blocks in a pack rather than one per block. Reads of
 * one object asked in the same turn, sorted by offset, are joined while the
 * gap between them is at most `gap` bytes and the whole at most `span`; each
 * caller gets exactly its own bytes. A joined read that fails is made again
 * one by one, so each caller gets its own answer (a short_read is its own).
 * Everything else passes through.
 */
import { WrappedStorage, type Handle, type Kind, type Storage } from './storage.js';

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
