/**
 * Worker threads that restore runs of blocks from packs into an output
 * file (see unpacker.ts). Workers keep the process alive only while they have
 * work, so a pool can be left open.
 */
import * as os from 'node:os';
import { Worker } from 'node:worker_threads';
import type { Dictionary } from '../repo/blockcodec.js';
import type { ThreadReaderSpec } from '../storage/storage.js';
import { workerScript } from './pool.js';
import type { UnpackAnswer, UnpackBatch } from './unpacker.js';

interface Unpacker {
  worker: Worker;
  busy: number;
}

export class UnpackPool {
  private readonly workers: Unpacker[] = [];
  private readonly waiting = new Map<number, { w: Unpacker; resolve: (a: UnpackAnswer) => void; reject: (e: unknown) => void }>();
  private seq = 0;
  private failure?: Error;

  constructor(keys: { encKey: Uint8Array; idKey: Uint8Array }, maxSize: number, dictionaries: readonly Dictionary[], store: ThreadReaderSpec, readonly size = Math.max(1, Math.min(os.availableParallelism(), 8))) {
    const script = workerScript('unpacker');
    for (let i = 0; i < size; i++) {
      // Blocks are decoded and written in the worker and dropped at once: a small young generation keeps each isolate lean.
      const worker = new Worker(script, { workerData: { encKey: keys.encKey, idKey: keys.idKey, maxSize, dictionaries, store }, resourceLimits: { maxYoungGenerationSizeMb: 4 } });
      const w: Unpacker = { worker, busy: 0 };
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
    const w = this.workers.reduce((a, b) => (b.busy < a.busy ? b : a));
    const seq = this.seq++;
    if (w.busy++ === 0) w.worker.ref();
    return new Promise<UnpackAnswer>((resolve, reject) => {
      this.waiting.set(seq, { w, resolve, reject });
      w.worker.postMessage({ ...batch, seq } satisfies UnpackBatch);
    });
  }

  async close(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.worker.terminate()));
  }
}
