/**
 * Worker threads that restore runs of blocks from packs into an output
 * file (see unpacker.ts). Workers keep the process alive only while they have
 * work, so a pool can be left open.
 *
 * The workers start with the first batch past INLINE_BYTES: a restore of a
 * few small files (or a short range) does its batches on the main thread,
 * which costs less than starting the threads (~0.1 s of wall time and more
 * of CPU for each isolate).
 */
import * as os from 'node:os';
import { Worker } from 'node:worker_threads';
import type { Dictionary } from '../repo/blockcodec.js';
import type { ThreadReaderSpec } from '../storage/storage.js';
import { INLINE_BYTES, workerScript } from './pool.js';
import { makeUnpacker, PIECE_FIELDS, type UnpackAnswer, type UnpackBatch, type Unpacker, type UnpackerData } from './unpacker.js';

interface UnpackWorker {
  worker: Worker;
  busy: number;
}

export class UnpackPool {
  private readonly workers: UnpackWorker[] = [];
  private readonly waiting = new Map<number, { w: UnpackWorker; resolve: (a: UnpackAnswer) => void; reject: (e: unknown) => void }>();
  private seq = 0;
  private failure?: Error;
  private readonly data: UnpackerData;
  /** The main thread's unpacker, while the workers have not started. */
  private here?: Unpacker;
  private hereBytes = 0;

  /** `store`: how the workers read packs; none when every batch carries its sealed bytes. */
  constructor(keys: { encKey: Uint8Array; idKey: Uint8Array }, maxSize: number, dictionaries: readonly Dictionary[], store: ThreadReaderSpec | undefined, readonly size = Math.max(1, Math.min(os.availableParallelism(), 8))) {
    this.data = { encKey: keys.encKey, idKey: keys.idKey, maxSize, dictionaries: [...dictionaries], ...(store ? { store } : {}) };
  }

  /** Whether the workers read the packs themselves (otherwise each batch carries its sealed bytes). */
  get reads(): boolean {
    return this.data.store !== undefined;
  }

  /** Whether the workers were started (by a restore past INLINE_BYTES). */
  get started(): boolean {
    return this.workers.length > 0;
  }

  private start(): void {
    if (this.started) return;
    this.here?.close();
    this.here = undefined;
    const script = workerScript('unpacker');
    for (let i = 0; i < this.size; i++) {
      // Blocks are decoded and written in the worker and dropped at once: a small young generation keeps each isolate lean.
      const worker = new Worker(script, { workerData: { ...this.data, unpacker: true }, resourceLimits: { maxYoungGenerationSizeMb: 4 } });
      const w: UnpackWorker = { worker, busy: 0 };
      worker.on('message', (a: UnpackAnswer) => {
        const p = this.waiting.get(a.seq);
        this.waiting.delete(a.seq);
        if (--w.busy === 0) worker.unref();
        p?.resolve(a);
      });
      worker.on('error', (e) => {
        this.failure = e;
        for (const [seq, p] of this.waiting) {
          if (p.w !== w) continue;
          this.waiting.delete(seq);
          p.reject(e);
        }
      });
      // After the listeners: adding a 'message' listener refs the worker's port again.
      worker.unref();
      this.workers.push(w);
    }
  }

  /** Hands a batch to the least busy worker; settles when every piece is written or one failed. */
  run(batch: Omit<UnpackBatch, 'seq'>): Promise<UnpackAnswer> {
    if (this.failure) return Promise.reject(this.failure);
    const seq = this.seq++;
    if (!this.started) {
      let bytes = 0;
      for (let i = 5; i < batch.pieces.length; i += PIECE_FIELDS) bytes += batch.pieces[i]!;
      if (this.hereBytes + bytes <= INLINE_BYTES) {
        this.hereBytes += bytes;
        try {
          this.here ??= makeUnpacker(this.data);
          return Promise.resolve(this.here.handle({ ...batch, seq }));
        } catch (e) {
          return Promise.reject(e);
        }
      }
      this.start();
    }
    const w = this.workers.reduce((a, b) => (b.busy < a.busy ? b : a));
    if (w.busy++ === 0) w.worker.ref();
    return new Promise<UnpackAnswer>((resolve, reject) => {
      this.waiting.set(seq, { w, resolve, reject });
      // Sealed bytes handed over are moved, not copied (the caller made them for this batch alone).
      w.worker.postMessage({ ...batch, seq } satisfies UnpackBatch, batch.sealed ? [batch.sealed.buffer as ArrayBuffer] : []);
    });
  }

  async close(): Promise<void> {
    this.here?.close();
    this.here = undefined;
    await Promise.all(this.workers.map((w) => w.worker.terminate()));
  }
}
