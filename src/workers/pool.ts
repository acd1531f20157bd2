/**
 * A pool of sealing workers. Requests go to the least busy worker; results
 * come back as promises. One worker per core.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import type { SealRequest, SealResponse } from './sealer.js';

/** The compiled worker script (tests run the sources, workers need the build). */
function workerScript(): string {
  const here = fileURLToPath(import.meta.url);
  const sibling = path.join(path.dirname(here), 'sealer.js');
  if (!here.endsWith('.ts') && fs.existsSync(sibling)) return sibling;
  const built = path.resolve(path.dirname(here), '../../dist/workers/sealer.js');
  if (!fs.existsSync(built)) throw new Error(`worker script not built: run "npm run build" (${built})`);
  return built;
}

interface Slot {
  worker: Worker;
  busy: number;
}

export class SealPool {
  private readonly slots: Slot[] = [];
  private readonly waiting = new Map<number, { resolve: (b: Buffer) => void; reject: (e: Error) => void }>();
  private seq = 0;

  constructor(encKey: Uint8Array, level: number, size = Math.max(1, Math.min(os.availableParallelism(), 8))) {
    const script = workerScript();
    for (let i = 0; i < size; i++) {
      const worker = new Worker(script, { workerData: { encKey, level } });
      const slot: Slot = { worker, busy: 0 };
      worker.on('message', (res: SealResponse) => {
        slot.busy--;
        const w = this.waiting.get(res.seq);
        this.waiting.delete(res.seq);
        if (!w) return;
        if (res.error || !res.sealed) w.reject(new Error(res.error ?? 'worker returned nothing'));
        else w.resolve(Buffer.from(res.sealed.buffer, res.sealed.byteOffset, res.sealed.byteLength));
      });
      worker.on('error', (e) => {
        for (const w of this.waiting.values()) w.reject(e);
        this.waiting.clear();
      });
      this.slots.push(slot);
    }
  }

  /** Compresses and seals `data` (whose buffer is handed over to the worker). */
  seal(id: Buffer, data: Buffer): Promise<Buffer> {
    const slot = this.slots.reduce((a, b) => (b.busy < a.busy ? b : a));
    const seq = this.seq++;
    slot.busy++;
    return new Promise((resolve, reject) => {
      this.waiting.set(seq, { resolve, reject });
      const owns = data.byteOffset === 0 && data.byteLength === data.buffer.byteLength;
      const req: SealRequest = { seq, id: new Uint8Array(id), data };
      slot.worker.postMessage(req, owns ? [data.buffer as ArrayBuffer] : []);
    });
  }

  async close(): Promise<void> {
    await Promise.all(this.slots.map((s) => s.worker.terminate()));
  }
}
