/**
 * Content-defined chunking (FastCDC with normalized chunking).
 *
 * A gear hash rolls over the data; a boundary falls where its top bits are all
 * zero. Before the average size a stricter mask (two more bits) makes cuts
 * rarer, after it a looser one makes them likelier, so sizes cluster around the
 * average; min and max bound them. Boundaries depend only on the bytes near
 * them, so an insertion moves at most a block or two and the rest realign.
 * The gear table comes from a key, so boundaries reveal nothing to someone
 * without it.
 *
 * Runs of zeros (`zeros` > 0, repositories made since it was added): a chunk
 * ends right after the first `zeros` zero bytes in a row, and a chunk that
 * starts with that many zeros holds zeros only, up to the first other byte
 * (or max). Small records between long runs of zeros (a disk image's file
 * system metadata, a sparse file's data) then get blocks of their own
 * instead of sharing a max-size block with the zeros around them, and the
 * zeros get blocks that hold nothing else. The end of a chunk of zeros is
 * the one cut that depends on a byte after it (see cutHolds).
 */
import { createHmac } from 'node:crypto';
import { usageError } from '../errors.js';
import { GEAR_WASM } from './gear-wasm.js';

export interface ChunkerParams {
  min: number;
  avg: number;
  max: number;
  /** Zero bytes in a row that end a chunk (0: runs of zeros are not cut out). */
  zeros?: number;
}

// Measured: a 4 KiB page rewritten in random data costs a median of 41 KiB of new
// blocks at 32 KiB (80 KiB at 64 KiB, where 5% of edits passed 256 KiB).
export const DEFAULT_AVG = 32 * 1024;

export function chunkerParams(avg: number): ChunkerParams {
  if (!Number.isInteger(Math.log2(avg)) || avg < 1024 || avg > 16 * 1024 * 1024) {
    throw usageError(`--chunk-avg must be a power of two between 1 KiB and 16 MiB (got ${avg})`);
  }
  // Zeros: 2 KiB at the default average, under the 4 KiB of a disk block (ext4 leaves 4,068 zero bytes between the 28 of each reserved descriptor block).
  return { min: avg / 4, avg, max: avg * 4, zeros: avg / 16 };
}

/**
 * Whether a chunk cut at the end of `block` is still cut there when `next`
 * (the byte after it, or undefined at the end of the file) follows: every
 * cut depends on the chunk's own bytes alone, except the end of a chunk of
 * zeros shorter than max, which is there because a byte other than zero
 * follows. A writer that confirms a block by its hash alone checks this too.
 */
export function cutHolds(params: ChunkerParams, block: Uint8Array, next: number | undefined): boolean {
  const zeros = params.zeros ?? 0;
  if (zeros === 0 || next === undefined || next !== 0 || block.length >= params.max || block.length < zeros) return true;
  for (let i = 0; i < zeros; i++) if (block[i] !== 0) return true;
  return false;
}

export function gearTable(seed: Uint8Array): Uint32Array {
  const bytes = Buffer.alloc(1024);
  for (let i = 0; i < 32; i++) {
    createHmac('sha256', seed).update(`gear ${i}`).digest().copy(bytes, i * 32);
  }
  const table = new Uint32Array(256);
  for (let i = 0; i < 256; i++) table[i] = bytes.readUInt32LE(i * 4);
  return table;
}

function topBits(n: number): number {
  return ((2 ** n - 1) * 2 ** (32 - n)) | 0;
}

/** The gear scan, compiled once per process and only when a chunker is made. */
let gearModule: WebAssembly.Module | undefined;
type Cut = (p: number, len: number, min: number, avg: number, max: number, maskS: number, maskL: number, zeros: number) => number;

const GEAR_BYTES = 256 * 4;

/**
 * Streaming chunker: push data as it is read, take the finished chunks, call
 * finish() at the end for the last one. Chunks are views into the pushed data
 * (or an internal buffer): use them before the next push.
 *
 * The scan runs in WebAssembly over the chunker's own memory: the gear table,
 * room for one block copied in from elsewhere, and optionally a `window` the
 * caller reads the file into, which is scanned where it lies.
 */
export class Chunker {
  /** A buffer of the requested size in the scanner's memory; bytes here are scanned without a copy. */
  readonly window: Buffer;
  private readonly maskS: number;
  private readonly maskL: number;
  private readonly memory: WebAssembly.Memory;
  private readonly cut: Cut;
  /** Where a block from outside the window is copied to be scanned. */
  private readonly scratch: Buffer;
  private pending: Buffer = Buffer.alloc(0);

  constructor(
    readonly params: ChunkerParams,
    gear: Uint32Array,
    windowBytes = 0,
  ) {
    const bits = Math.round(Math.log2(params.avg));
    this.maskS = topBits(bits + 2);
    this.maskL = topBits(bits - 2);
    const bytes = GEAR_BYTES + params.max + windowBytes;
    // Never grown: growing would detach every view handed out.
    this.memory = new WebAssembly.Memory({ initial: Math.ceil(bytes / 65536) });
    gearModule ??= new WebAssembly.Module(Buffer.from(GEAR_WASM, 'base64'));
    const instance = new WebAssembly.Instance(gearModule, { env: { memory: this.memory } });
    this.cut = instance.exports.cut as Cut;
    new Uint32Array(this.memory.buffer, 0, 256).set(gear);
    this.scratch = Buffer.from(this.memory.buffer, GEAR_BYTES, params.max);
    this.window = Buffer.from(this.memory.buffer, GEAR_BYTES + params.max, windowBytes);
  }

  push(data: Uint8Array): Buffer[] {
    this.pending = this.pending.length === 0 ? Buffer.from(data.buffer, data.byteOffset, data.byteLength) : Buffer.concat([this.pending, data]);
    const out: Buffer[] = [];
    let start = 0;
    while (true) {
      const available = this.pending.length - start;
      const length = this.firstCut(this.pending.subarray(start, start + Math.min(available, this.params.max)));
      // No cut before the data ran out: the chunk may go on in the next push.
      if (length === available && available < this.params.max) break;
      out.push(this.pending.subarray(start, start + length));
      start += length;
    }
    // Keep only the unfinished chunk; copy so the caller's buffer is not retained.
    this.pending = copyOf(this.pending, start, this.pending.length);
    return out;
  }

  finish(): Buffer | undefined {
    const last = this.pending.length > 0 ? this.pending : undefined;
    this.pending = Buffer.alloc(0);
    return last;
  }

  /**
   * The length of the chunk that starts at buf[0], where buf holds at least
   * `max` bytes or the rest of the file. Needs no state: a cut depends only
   * on the bytes of its own chunk, which is what lets a backup confirm an
   * unchanged block by its hash without scanning it.
   */
  firstCut(buf: Uint8Array): number {
    const { min, avg, max, zeros = 0 } = this.params;
    let at = buf.byteOffset;
    if (buf.buffer !== this.memory.buffer) {
      // Only the first max bytes can matter.
      this.scratch.set(buf.length > max ? buf.subarray(0, max) : buf);
      at = this.scratch.byteOffset;
    }
    return this.cut(at, buf.length, min, avg, max, this.maskS, this.maskL, zeros);
  }
}

function copyOf(buf: Buffer, from: number, to: number): Buffer {
  const out = Buffer.allocUnsafe(to - from);
  buf.copy(out, 0, from, to);
  return out;
}
