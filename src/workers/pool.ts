/**
 * A pool of sealing workers, one per core. Each request takes a slot of a
 * shared buffer (so at most `slots` blocks are in flight and memory is fixed),
 * goes to the least busy worker, and comes back as a promise of the sealed
 * block.
 *
 * The workers start with the first work that needs them: a backup's first
 * INLINE_BYTES of new blocks are sealed on the calling thread, so a backup
 * that adds a few small files (or none) starts no thread at all. Starting
 * the workers costs more than sealing that much here (~0.1 s of wall time
 * and more of CPU for each isolate).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import type { ChunkerParams } from '../chunker/fastcdc.js';
import { blockId } from '../crypto/keyring.js';
import { encodeBlock, type Dictionary } from '../repo/blockcodec.js';
import type { BlobKind } from '../catalog/catalog.js';
import type { DictionaryBuilder } from '../repo/dictionary.js';
import { ID_BYTES, slotLayout, type ConfirmRequest, type DictionaryMessage, type ConfirmResponse, type SameRequest, type SameResponse, type SealRequest, type SealResponse, type SlotLayout } from './sealer.js';

/**
 * A worker's bundled script (npm run build writes dist/workers/NAME.cjs).
 * Found from wherever this module runs: the bundled CLI in dist/, the
 * compiled modules in dist/workers/, or the sources under test.
 */
export function workerScript(name: string): string {
  const here = path.dirname(fileURLToPath(import.meta.url));
  const file = `${name}.cjs`;
  const candidates = [path.join(here, 'workers', file), path.join(here, file), path.resolve(here, '../../dist/workers', file)];
  const found = candidates.find((c) => fs.existsSync(c));
  if (!found) throw new Error(`worker script not built: run "npm run build" (${candidates[2]})`);
  return found;
}

/** Sealing workers by default: one per core, up to 8. */
export const SEALERS = Math.max(1, Math.min(os.availableParallelism(), 8));

interface Slot {
  worker: Worker;
  busy: number;
  /** Requests not yet posted: sent together, at BATCH_BYTES or when this turn of the event loop ends. */
  batch: SealRequest[];
  batchBytes: number;
  /** Batches posted and not yet answered. */
  posted: number;
}

/**
 * A batch goes out once it holds this much (four average blocks), so a
 * worker starts on large blocks soon; small ones (a tree of small files, their
 * TOCs) wait for the end of the turn, a message costing more than sealing them.
 */
const BATCH_BYTES = 128 * 1024;
/**
 * While a worker has this many batches it has not answered, new requests
 * wait for an answer and go out with it: in a tree of small files a block
 * is made per turn of the event loop, and a message per block would cost
 * this thread more than the worker spends sealing it.
 */
const POSTED_AHEAD = 1;

/**
 * Blocks on their way through the workers at most. A tree of small files
 * needs many: each is a few KiB, and while the walk waits for room (a
 * worker's answer is a wake-up away) it does nothing: with 32, a first backup
 * of 8,000 small files left the main thread idle a quarter of its time.
 */
const MAX_SLOTS = 256;
/** ...and at least, whatever their size. */
const MIN_SLOTS = 32;
/**
 * Blocks of the largest size whose bytes may be in flight (see budget): 32
 * average ones (the chunker's largest is 4 times its average). Deeper
 * queues of large blocks gained nothing and held more memory.
 */
const BUDGET_BLOCKS = 8;
/** The shared memory of the slots (each holds a block of the largest size and its sealed form) is kept under this, above MIN_SLOTS. */
const SHARED_BYTES = 64 * 1024 * 1024;

/** New blocks sealed on the calling thread before the workers start (see the top); a restore's unpack pool does as much before its own. */
export const INLINE_BYTES = 512 * 1024;

interface Waiting {
  plainLength: number;
  /** A file's data: offered to the dictionary sampler (trees and TOCs are not). */
  data: boolean;
  consume: (id: Buffer, sealed: Uint8Array) => Promise<void>;
  resolve: () => void;
  reject: (e: unknown) => void;
}

export class SealPool {
  private readonly workers: Slot[] = [];
  private readonly waiting = new Map<number, Waiting>();
  private readonly free: number[] = [];
  private readonly slotWaiters: (() => void)[] = [];
  private readonly shared: SharedArrayBuffer;
  private readonly layout: SlotLayout;
  private seq = 0;
  private failure?: Error;
  /** Plain bytes sealed on this thread so far (at most INLINE_BYTES, then the workers start). */
  private inlineBytes = 0;
  /** The dictionary new blocks are compressed with: for blocks sealed here, and for workers started after it came. */
  private dictionary?: Dictionary;

  constructor(
    private readonly keys: { encKey: Uint8Array; idKey: Uint8Array },
    private readonly level: number,
    maxBlock: number,
    /** Blocks in flight at most (default: as many as SHARED_BYTES holds, MIN_SLOTS to MAX_SLOTS). */
    readonly slots = Math.max(MIN_SLOTS, Math.min(MAX_SLOTS, Math.floor(SHARED_BYTES / slotLayout(maxBlock).slotSize))),
    /** Workers, once started. */
    private readonly size = SEALERS,
  ) {
    this.layout = slotLayout(maxBlock);
    this.budget = BUDGET_BLOCKS * maxBlock;
    this.shared = new SharedArrayBuffer(this.layout.slotSize * slots);
    // Taken last freed first: small blocks keep reusing the same few slots' pages.
    for (let i = slots - 1; i >= 0; i--) this.free.push(i);
  }

  /** Plain bytes a caller should have in flight at most: a queue of large blocks deep enough for the workers, no deeper. */
  readonly budget: number;

  /** The largest block a slot holds. */
  get maxBlock(): number {
    return this.layout.maxBlock;
  }

  /** Whether the workers were started (by work that needed them). */
  get started(): boolean {
    return this.workers.length > 0;
  }

  private start(): void {
    if (this.started) return;
    for (let i = 0; i < this.size; i++) this.add();
    this.active = this.reserved && this.size > 1 ? this.size - 1 : this.size;
  }

  /** The least busy of the workers in use. */
  private leastBusy(): Slot {
    let w = this.workers[0]!;
    for (let i = 1; i < this.active; i++) if (this.workers[i]!.busy < w.busy) w = this.workers[i]!;
    return w;
  }

  /** Workers given work; the others wait in reserve (see reserve). */
  private active = 0;
  private spare = false;
  private reserved = false;

  /** One worker goes in reserve (if more than one works): another thread takes its core. */
  reserve(): void {
    if (this.reserved) return;
    this.reserved = true;
    if (this.active > 1) this.active--;
  }

  /** The worker in reserve comes back once the others fall behind: the core is free again. */
  spareCore(): void {
    this.spare = true;
  }

  /** The caller has to wait for room: the workers are behind, and the one in reserve joins if its core is free. */
  behind(): void {
    if (this.spare && this.active < this.workers.length) {
      this.spare = false;
      this.active++;
    }
  }

  private add(): void {
    const { keys, level } = this;
    // Workers allocate little on the JS heap (blocks live in the shared buffer): a small young generation keeps each isolate lean.
    const worker = new Worker(workerScript('sealer'), { workerData: { encKey: keys.encKey, idKey: keys.idKey, level, shared: this.shared, layout: this.layout }, resourceLimits: { maxYoungGenerationSizeMb: 4 } });
    if (this.dictionary) worker.postMessage({ dictionary: this.dictionary } satisfies DictionaryMessage);
    const w: Slot = { worker, busy: 0, batch: [], batchBytes: 0, posted: 0 };
    worker.on('message', (res: SealResponse[] | ConfirmResponse | SameResponse) => {
      if (Array.isArray(res)) {
        w.posted--;
        res.forEach((r) => this.settle(w, r));
        if (w.posted < POSTED_AHEAD) this.post(w);
      } else if ('confirm' in res) this.answered(w, res.confirm, res);
      else this.answered(w, res.same, res);
    });
    worker.on('error', (e) => {
      this.failure = e;
      for (const p of this.waiting.values()) p.reject(e);
      this.waiting.clear();
      for (const p of this.asked.values()) p.reject(e);
      this.asked.clear();
    });
    this.workers.push(w);
  }

  private settle(w: Slot, res: SealResponse): void {
    w.busy--;
    const p = this.waiting.get(res.seq);
    this.waiting.delete(res.seq);
    if (!p || res.length === undefined) {
      this.release(res.slot);
      p?.reject(new Error(res.error ?? 'worker returned nothing'));
      return;
    }
    // The sealed block is read straight from the slot, which stays taken until it has been consumed.
    const base = res.slot * this.layout.slotSize;
    if (p.data) this.sample(new Uint8Array(this.shared, base + ID_BYTES, p.plainLength), res.length);
    const id = Buffer.from(new Uint8Array(this.shared, base, ID_BYTES));
    p.consume(id, new Uint8Array(this.shared, base + ID_BYTES + this.layout.maxBlock, res.length)).then(p.resolve, p.reject).finally(() => this.release(res.slot));
  }

  private release(slot: number): void {
    this.free.push(slot);
    this.slotWaiters.shift()?.();
  }

  /**
   * Compresses and seals a block (computing its id first when `id` is null),
   * then hands the id and the sealed bytes to `consume` (valid only until its
   * promise settles). Waits for a free slot when all are busy; `data` is
   * copied before this returns its first await.
   */
  async seal(id: Uint8Array | null, data: Uint8Array, kind: BlobKind, consume: (id: Buffer, sealed: Uint8Array) => Promise<void>): Promise<void> {
    if (data.length > this.layout.maxBlock) throw new Error(`block of ${data.length} bytes exceeds the maximum ${this.layout.maxBlock}`);
    if (!this.started && this.inlineBytes + data.length <= INLINE_BYTES) return this.sealHere(id, data, kind, consume);
    this.start();
    if (this.free.length === 0) this.behind();
    while (this.free.length === 0) await new Promise<void>((r) => this.slotWaiters.push(r));
    if (this.failure) throw this.failure;
    const slot = this.free.pop()!;
    const base = slot * this.layout.slotSize;
    if (id) new Uint8Array(this.shared, base, ID_BYTES).set(id);
    new Uint8Array(this.shared, base + ID_BYTES, data.length).set(data);
    const w = this.leastBusy();
    const seq = this.seq++;
    w.busy++;
    return new Promise((resolve, reject) => {
      this.waiting.set(seq, { plainLength: data.length, data: kind === 'data', consume, resolve, reject });
      w.batch.push({ seq, slot, length: data.length, hash: id === null });
      w.batchBytes += data.length;
      if (w.batchBytes >= BATCH_BYTES) this.post(w);
      else if (w.batch.length === 1) setImmediate(() => w.posted < POSTED_AHEAD && this.post(w));
    });
  }

  /** What a worker does with a block (sealer.ts), done on this thread. */
  private async sealHere(id: Uint8Array | null, data: Uint8Array, kind: BlobKind, consume: (id: Buffer, sealed: Uint8Array) => Promise<void>): Promise<void> {
    if (this.failure) throw this.failure;
    this.inlineBytes += data.length;
    const blockIdOf = id ? Buffer.from(id) : blockId(this.keys.idKey, data);
    const sealed = encodeBlock(this.keys.encKey, blockIdOf, data, this.level, this.dictionary);
    if (kind === 'data') this.sample(data, sealed.length);
    await consume(blockIdOf, sealed);
  }

  /** Requests one worker answers on its own (confirm, same), by seq. */
  private readonly asked = new Map<number, { resolve: (r: never) => void; reject: (e: unknown) => void }>();

  private answered(w: Slot, seq: number, res: ConfirmResponse | SameResponse): void {
    const p = this.asked.get(seq);
    this.asked.delete(seq);
    w.busy--;
    p?.resolve(res as never);
  }

  /** Sends the request made for its seq to the least busy worker; resolves with that worker's answer. */
  private ask<T extends ConfirmResponse | SameResponse>(request: (seq: number) => ConfirmRequest | SameRequest): Promise<T> {
    if (this.failure) return Promise.reject(this.failure);
    this.start();
    const w = this.leastBusy();
    const seq = this.seq++;
    w.busy++;
    return new Promise<T>((resolve, reject) => {
      this.asked.set(seq, { resolve, reject });
      w.worker.postMessage(request(seq));
    });
  }

  /**
   * Has a worker read a run of blocks of a file seen before (at `start`, of
   * `lengths`) and hash them: how many of them, from the first, have the ids
   * expected. If `last`, the final one counts only if the file ends with it.
   */
  confirm(fd: number, start: number, lengths: number[], ids: Uint8Array, last: boolean, chunker: ChunkerParams): Promise<ConfirmResponse> {
    return this.ask((seq) => ({ confirm: seq, fd, start, lengths, ids, last, chunker }));
  }

  /**
   * Has a worker read files seen before and hash them along their parent
   * versions' blocks: which of them hold exactly those bytes (see SameRequest).
   */
  same(files: Omit<SameRequest, 'same'>): Promise<SameResponse> {
    return this.ask((seq) => ({ same: seq, ...files }));
  }

  private sampler?: { builder: DictionaryBuilder; done: (bytes: Buffer) => void };

  /**
   * Offers every block sealed from now on to `builder`, until it has enough
   * for a dictionary; then `done` gets the dictionary's bytes (once).
   */
  sampleFor(builder: DictionaryBuilder, done: (bytes: Buffer) => void): void {
    this.sampler = { builder, done };
  }

  private sample(plain: Uint8Array, sealedLength: number): void {
    const s = this.sampler;
    if (s && !s.builder.full && s.builder.offer(plain, sealedLength)) s.done(s.builder.bytes());
  }

  /** Blocks sent from now on are compressed with `dict` (stored already). */
  useDictionary(dict: Dictionary): void {
    this.sampler = undefined;
    this.dictionary = dict;
    for (const w of this.workers) w.worker.postMessage({ dictionary: dict } satisfies DictionaryMessage);
  }

  private post(w: Slot): void {
    if (w.batch.length === 0) return;
    w.worker.postMessage(w.batch);
    w.posted++;
    w.batch = [];
    w.batchBytes = 0;
  }

  async close(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.worker.terminate()));
  }
}
