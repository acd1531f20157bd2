/**
 * The main thread's side of the scan (workers/scanner.ts): the directories
 * it listed and their entries' stats, taken by the walk in the order both
 * go. What the scan did not deliver (it failed, was stopped, or the two
 * disagree) the walk reads itself, so the scan only ever saves work.
 */
import { Worker } from 'node:worker_threads';
import type { Marker } from '../util/marker.js';
import { compareNames } from '../util/names.js';
import { workerScript } from '../workers/pool.js';
import { CONTROL_WORDS, ENTERED, PARTS_RING, READ_ALL, READ_SINCE, SCAN_DONE, SCAN_PART, STOP, TAKEN, TAKEN_BYTES, WAITING, type ScanFiles, type ScanHead, type ScanItem, type ScanPart, type ScanRead, type ScanSpec } from '../workers/scanner.js';

export { FILE_FIELDS, ID_BYTES } from '../workers/scanner.js';
export { SCAN_PART, type ScanPart, type ScanRead };

/** Entries the scan may be ahead of the walk (each held until taken: a few hundred bytes). */
const AHEAD = 64 * 1024;

export interface ScanOptions {
  excludes: string[];
  iexcludes: string[];
  markers: Marker[];
  oneFileSystem: boolean;
  xattrs: boolean;
  /** Entries the scan may be ahead (default AHEAD). */
  ahead?: number;
  /** Small files the scan reads too (see ScanRead), once told which (readFrom). */
  read?: Omit<ScanRead, 'when' | 'taken'>;
  /** Called when the scan's thread starts. */
  onStart?: () => void;
}

/** A directory the walk took from the scan. */
export interface ScannedDir {
  dir: string;
  /** It could not be listed (see ScanHead). */
  error?: ScanHead['error'];
  excluded?: true;
  names: string[];
  /** Part k of its entries' stats (see ScanPart); undefined if the scan ended without it. */
  part(k: number): Promise<ScanPart | undefined>;
}

/** A listed directory and the parts of it that came. */
class Listed implements ScannedDir {
  readonly dir: string;
  readonly error?: ScanHead['error'];
  readonly excluded?: true;
  readonly names: string[];
  readonly parts: (ScanPart | undefined)[] = [];
  readonly waiting = new Map<number, (p: ScanPart | undefined) => void>();
  /** Parts still to come. */
  due: number;
  /** The walk passed it by: its parts are dropped as they come. */
  dropped = false;
  /** Parts the walk has taken. */
  takenParts = 0;

  constructor(
    h: ScanHead,
    private readonly scan: TreeScan,
  ) {
    this.dir = h.dir;
    if (h.error) this.error = h.error;
    if (h.excluded) this.excluded = h.excluded;
    this.names = h.names;
    this.due = Math.ceil(h.names.length / SCAN_PART);
  }

  part(k: number): Promise<ScanPart | undefined> {
    const p = this.parts[k];
    if (p) {
      this.parts[k] = undefined;
      this.scan.taken(p, this);
      return Promise.resolve(p);
    }
    if (this.scan.over) return Promise.resolve(undefined);
    this.scan.waitingFor();
    return new Promise((resolve) => this.waiting.set(k, resolve));
  }
}

export class TreeScan {
  private worker?: Worker;
  private readonly spec: ScanSpec;
  private readonly onStart?: () => void;
  /** Wakes a wait for the scan to come (see reached). */
  private wake?: () => void;
  private readonly control = new Int32Array(new SharedArrayBuffer(CONTROL_WORDS * 4));
  private heads: Listed[] = [];
  private head = 0;
  /** Directories listed whose parts are still to come. */
  private readonly open = new Map<string, Listed>();
  over = false;
  private ending?: () => void;
  /** Settles once the scan is over (done, failed or stopped): its thread is then free. */
  readonly ended = new Promise<void>((resolve) => (this.ending = resolve));
  private readonly when = new BigInt64Array(new SharedArrayBuffer(16));
  private readonly takenParts = new Int32Array(new SharedArrayBuffer(PARTS_RING * 4));
  /** Directories listed whose parts are not all taken: files read for them may still come. */
  private readonly live = new Map<string, Listed>();

  /** A scan of `roots` (absolute directories) in the walk's order, once started. */
  constructor(roots: readonly string[], opts: ScanOptions) {
    const read = opts.read ? { ...opts.read, when: this.when.buffer as SharedArrayBuffer, taken: this.takenParts.buffer as SharedArrayBuffer } : undefined;
    const { read: _, onStart, ...rest } = opts;
    this.onStart = onStart;
    this.spec = { roots: [...roots].sort(walkOrder), ...rest, ...(read ? { read } : {}), control: this.control.buffer as SharedArrayBuffer, ahead: opts.ahead ?? AHEAD };
  }

  /** Whether its thread was started. */
  get started(): boolean {
    return this.worker !== undefined;
  }

  /**
   * Starts the thread. It catches up with the walk by listing what the walk
   * has entered already (nothing more: see ENTERED), then runs ahead.
   */
  start(): void {
    if (this.worker || this.over) return;
    this.worker = new Worker(workerScript('scanner'), { workerData: this.spec, resourceLimits: { maxYoungGenerationSizeMb: 8 } });
    this.onStart?.();
    this.worker.on('message', (m: ScanItem[] | typeof SCAN_DONE) => {
      if (m === SCAN_DONE) return this.end();
      this.wake?.();
      for (const item of m) {
        if ('contents' in item && !('values' in item)) this.filesRead(item);
        else if ('k' in item) this.arrived(item);
        else {
          const d = new Listed(item, this);
          this.heads.push(d);
          if (d.due > 0) {
            this.open.set(d.dir, d);
            this.live.set(d.dir, d);
          }
        }
      }
    });
    // A failed scan leaves the walk to read for itself.
    this.worker.on('error', () => this.end());
    this.worker.on('exit', () => this.end());
  }

  /**
   * The scan of directory `dir`, which the walk enters now; undefined when the
   * walk must read it itself: the scan has not reached it (the walk does not
   * wait: where it is faster, it reads for itself, and the scan skips what it
   * passed), or went past it.
   */
  take(dir: string): ScannedDir | undefined {
    Atomics.add(this.control, ENTERED, 1);
    while (this.head < this.heads.length) {
      const d = this.heads[this.head]!;
      const order = walkOrder(d.dir, dir);
      // The scan went past `dir` (it did not enter it): the walk reads it.
      if (order > 0) return undefined;
      this.heads[this.head++] = undefined as unknown as Listed;
      if (this.head >= 1024 && this.head * 2 >= this.heads.length) {
        this.heads = this.heads.slice(this.head);
        this.head = 0;
      }
      this.taken();
      if (order === 0) return d;
      // Before `dir`: a directory the walk did not enter.
      this.drop(d);
    }
    // Posted at once from now on: the next directory may find it.
    if (!this.over) this.waitingFor();
    return undefined;
  }

  /**
   * Which files the scan reads from now on (with ScanOptions.read): those
   * changed since `since` (ns; the parent snapshot's time), or all of them.
   */
  readFrom(since: bigint | undefined): void {
    if (since !== undefined) Atomics.store(this.when, 1, since);
    Atomics.store(this.when, 0, since === undefined ? READ_ALL : READ_SINCE);
  }

  /** Settles once the scan has listed `dir` (take then finds it), gone past it, or ended. */
  async reached(dir: string): Promise<void> {
    for (;;) {
      if (this.over || (this.head < this.heads.length && walkOrder(this.heads[this.heads.length - 1]!.dir, dir) >= 0)) return;
      this.waitingFor();
      await new Promise<void>((resolve) => (this.wake = resolve));
      this.wake = undefined;
    }
  }

  /** Stops the scan and its thread. */
  async close(): Promise<void> {
    this.end();
    Atomics.store(this.control, STOP, 1);
    Atomics.notify(this.control, TAKEN);
    await this.worker?.terminate();
  }

  /**
   * A directory (no part), or a part of `d`'s, is off the scan's hands: it
   * may go that much further, and no longer reads the part's files.
   */
  taken(p?: ScanPart, d?: Listed): void {
    if (p) {
      Atomics.store(this.takenParts, p.seq % PARTS_RING, p.seq + 1);
      if (p.contents) Atomics.add(this.control, TAKEN_BYTES, p.contents.bytes.length);
      if (d && ++d.takenParts === Math.ceil(d.names.length / SCAN_PART)) this.live.delete(d.dir);
    }
    Atomics.add(this.control, TAKEN, p ? p.failures.length : 1);
    Atomics.notify(this.control, TAKEN);
  }

  /** Files of a part read by the scan: kept with the part if the walk has not taken it yet. */
  private filesRead(f: ScanFiles): void {
    const part = this.live.get(f.dir)?.parts[f.k];
    if (part && part.seq === f.seq) part.contents = f.contents;
    else Atomics.add(this.control, TAKEN_BYTES, f.contents.bytes.length);
  }

  /** The walk waits: the scan posts what it has at once, and goes on even if that much ahead. */
  waitingFor(): void {
    Atomics.store(this.control, WAITING, 1);
    Atomics.notify(this.control, TAKEN);
  }

  private arrived(p: ScanPart): void {
    // A Buffer crosses threads as a plain Uint8Array: the values are made Buffers again.
    for (const x of p.xattrs) if (x) x.attrs = x.attrs.map(([name, v]) => [name, Buffer.from(v.buffer, v.byteOffset, v.byteLength)]);
    const d = this.open.get(p.dir);
    if (!d) return this.taken(p);
    if (--d.due === 0) this.open.delete(p.dir);
    if (d.dropped) return this.taken(p, d);
    const waiter = d.waiting.get(p.k);
    if (waiter) {
      d.waiting.delete(p.k);
      this.taken(p, d);
      waiter(p);
    } else d.parts[p.k] = p;
  }

  private drop(d: Listed): void {
    d.dropped = true;
    for (const p of d.parts) if (p) this.taken(p, d);
    this.live.delete(d.dir);
    d.parts.length = 0;
  }

  private end(): void {
    if (this.over) return;
    this.over = true;
    this.ending?.();
    this.wake?.();
    for (const d of this.open.values()) {
      for (const resolve of d.waiting.values()) resolve(undefined);
      d.waiting.clear();
    }
  }
}

/** Where two paths come in a walk: depth first, a directory before what it holds, names sorted. */
export function walkOrder(a: string, b: string): number {
  if (a === b) return 0;
  const x = a.split('/');
  const y = b.split('/');
  const n = Math.min(x.length, y.length);
  for (let i = 0; i < n; i++) {
    const c = compareNames(x[i]!, y[i]!);
    if (c !== 0) return c;
  }
  return x.length - y.length;
}
