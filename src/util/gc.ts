/**
 * Prompt collection of block buffers. Blocks move between threads as
 * transferred ArrayBuffers; V8 counts them against a generous external-memory
 * allowance per isolate, so without help each thread sits on tens of MiB of
 * dead blocks. A young-generation collection every few MiB of blocks frees
 * them cheaply and keeps the process within its memory bound.
 */
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

type GcFn = (opts?: { type?: 'minor' | 'major'; execution?: 'sync' | 'async' }) => void;

let gcFn: GcFn | undefined;

function load(): GcFn | undefined {
  if (gcFn) return gcFn;
  const existing = (globalThis as { gc?: GcFn }).gc;
  if (existing) return (gcFn = existing);
  setFlagsFromString('--expose-gc');
  gcFn = runInNewContext('gc') as GcFn;
  return gcFn;
}

/** Calls a minor GC after every `every` bytes reported. */
export class GcPacer {
  private since = 0;
  constructor(private readonly every = 16 * 1024 * 1024) {
    load();
  }
  add(bytes: number): void {
    this.since += bytes;
    if (this.since >= this.every) {
      this.since = 0;
      gcFn?.({ type: 'minor' });
    }
  }
}

/** A young-generation collection now (between batches of short-lived objects). */
export function minorGc(): void {
  load()?.({ type: 'minor' });
}
