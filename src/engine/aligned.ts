/**
 * Reading a file seen before: its previous version's blocks say where the
 * cuts were. A chunk's cut depends only on its own bytes, so if the bytes at
 * the next expected place hash to the expected block id, the chunker would
 * have cut there too: the block is confirmed without scanning it. Where the
 * hash differs, the chunker takes over from the last confirmed cut until one
 * of its blocks is a known block again (at any offset: an insertion shifts
 * everything after it), and confirming resumes after that block.
 *
 * The result is exactly the blocks a full chunking would give, at the cost
 * of one hash per unchanged block instead of a gear scan of every byte.
 */
import { readSync } from 'node:fs';
import { cutHolds, type Chunker } from '../chunker/fastcdc.js';
import { ID_BYTES, type BlockList } from '../catalog/blocklist.js';
import { BlockIndex } from '../catalog/toc.js';

export interface AlignedBlock {
  /** The block's bytes, valid only until the next block is asked for; null for a block a worker confirmed. */
  data: Buffer | null;
  length: number;
  id: Buffer;
  /** The previous version holds this block at the expected place. */
  confirmed: boolean;
}

/** Blocks first..first+count-1 of the previous version, confirmed by a worker as one run. */
export interface ConfirmedRun {
  run: { first: number; count: number };
  /** Their bytes in all. */
  length: number;
}

/** Reading the source file failed (as opposed to storing what was read). */
export class SourceReadError extends Error {
  constructor(override readonly cause: unknown) {
    super((cause as Error).message);
  }
}

/**
 * The size of the buffer a window needs: room for a large read plus a
 * block's worth kept from the last one. The buffer is made once (the
 * chunker's `window`, so the scan needs no copy) and reused for every file:
 * one file is read at a time, and a megabyte per file of a tree of small
 * files kept the garbage collector busier than everything else.
 */
export function windowBytes(readSize: number, maxBlock: number): number {
  return Math.max(readSize, maxBlock) + maxBlock + 1;
}

/**
 * Reads are synchronous, so a long run of unchanged blocks would never let
 * the event loop turn: no Ctrl-C, no progress, no worker answers. Yield to it
 * every few MiB.
 */
const YIELD_EVERY = 8 * 1024 * 1024;

/** A sliding window over a file, refilled by large sequential reads. */
class FileWindow {
  /** File offset of buf[0], and how many bytes of buf are filled. */
  private base = 0;
  private filled = 0;
  private eof = false;
  /** Bytes read since the event loop last turned. */
  private unyielded = 0;

  constructor(
    private readonly fd: number,
    private readonly buf: Buffer,
    maxBlock: number,
    private readonly onRead: (bytes: number, here?: boolean) => void,
  ) {
    // Smaller, a block could not be held whole and a file would seem to end early.
    if (buf.length < windowBytes(0, maxBlock)) throw new Error(`read window of ${buf.length} bytes is too small for blocks of ${maxBlock}`);
  }

  /** Makes [pos, pos+n) available if the file has it; returns how many bytes from pos are. */
  ensure(pos: number, n: number): number {
    while (this.base + this.filled < pos + n && !this.eof) {
      if (pos > this.base) {
        // What is kept of the window (nothing, if pos jumped past it).
        const keep = Math.max(0, this.base + this.filled - pos);
        if (keep > 0) this.buf.copy(this.buf, 0, pos - this.base, this.filled);
        this.filled = keep;
        this.base = pos;
      }
      let bytesRead: number;
      try {
        bytesRead = readSync(this.fd, this.buf, this.filled, this.buf.length - this.filled, this.base + this.filled);
      } catch (e) {
        throw new SourceReadError(e);
      }
      if (bytesRead === 0) this.eof = true;
      this.filled += bytesRead;
      this.unyielded += bytesRead;
      this.onRead(bytesRead);
    }
    return Math.max(0, Math.min(n, this.base + this.filled - pos));
  }

  /** Lets the event loop turn if a few MiB were read since it last did. */
  async breathe(): Promise<void> {
    if (this.unyielded < YIELD_EVERY) return;
    this.unyielded = 0;
    await new Promise<void>((resolve) => setImmediate(resolve));
  }

  view(pos: number, n: number): Buffer {
    return this.buf.subarray(pos - this.base, pos - this.base + n);
  }
}

/**
 * A new file's chunks, in order, as views valid until the next one is asked
 * for. The window is refilled by large reads and only a chunk's worth of
 * bytes is ever moved, where pushing reads into the chunker copied them all.
 */
export async function* freshChunks(fd: number, chunker: Chunker, onRead: (bytes: number, here?: boolean) => void): AsyncGenerator<Buffer> {
  const maxBlock = chunker.params.max;
  const window = new FileWindow(fd, chunker.window, maxBlock, onRead);
  for (let pos = 0; ; ) {
    await window.breathe();
    const available = window.ensure(pos, maxBlock);
    if (available === 0) return;
    const length = chunker.firstCut(window.view(pos, available));
    yield window.view(pos, length);
    pos += length;
  }
}

/**
 * The chunks of a stream (standard input), cut where freshChunks would cut
 * the same bytes in a file: a cut is made once a whole maximum block is at
 * hand, or at the end. Views valid until the next one is asked for; the
 * chunker's window is the only buffer.
 */
export async function* streamChunks(source: AsyncIterable<Uint8Array>, chunker: Chunker, onRead: (bytes: number) => void): AsyncGenerator<Buffer> {
  const maxBlock = chunker.params.max;
  const buf = chunker.window;
  let start = 0;
  let end = 0;
  for await (const piece of source) {
    onRead(piece.length);
    for (let at = 0; at < piece.length; ) {
      if (end === buf.length) {
        buf.copy(buf, 0, start, end);
        end -= start;
        start = 0;
      }
      const n = Math.min(piece.length - at, buf.length - end);
      buf.set(piece.subarray(at, at + n), end);
      end += n;
      at += n;
      while (end - start >= maxBlock) {
        const length = chunker.firstCut(buf.subarray(start, start + maxBlock));
        yield buf.subarray(start, start + length);
        start += length;
      }
    }
  }
  while (end > start) {
    const length = chunker.firstCut(buf.subarray(start, end));
    yield buf.subarray(start, start + length);
    start += length;
  }
}

/**
 * Confirming runs of expected blocks on worker threads, several at once and
 * ahead of the one needed next: `confirm` reads and hashes a run, `stored`
 * says whether the repository has a block (one it lacks needs its bytes
 * here, to be stored).
 */
export interface Confirmer {
  confirm: (start: number, lengths: number[], ids: Uint8Array, last: boolean) => Promise<{ count: number; bytesRead: number }>;
  stored: (ids: Buffer[]) => boolean[];
}

/** Runs confirmed at once, and the bytes of each: enough to keep every worker hashing. */
const CONFIRM_RUNS = 6;
const RUN_BYTES = 1024 * 1024;

interface Run {
  first: number;
  shift: number;
  lengths: number[];
  answer: Promise<{ count: number; bytesRead: number }>;
}

export async function* alignedBlocks(
  fd: number,
  chunker: Chunker,
  previous: BlockList,
  hash: (data: Uint8Array) => Buffer,
  onRead: (bytes: number, here?: boolean) => void,
  confirmer?: Confirmer,
): AsyncGenerator<AlignedBlock | ConfirmedRun> {
  const maxBlock = chunker.params.max;
  const window = new FileWindow(fd, chunker.window, maxBlock, onRead);
  let index: BlockIndex | undefined;
  let pos = 0;
  /** The previous block expected next, or -1 while the chunker leads. */
  let expect = previous.length > 0 ? 0 : -1;
  /**
   * Runs handed to workers, in file order; `ahead` is the block after the
   * last. They outlive a changed block: once the chunker finds the previous
   * version's track again at the same shift (an overwrite), the runs after
   * it still hold, and only the gap before them is hashed here.
   */
  let runs: Run[] = [];
  let ahead = 0;
  /** Every answer not yet in: all are awaited before the caller may close the file. */
  const outstanding = new Set<Promise<unknown>>();
  /** A run of the blocks from `first` (up to RUN_BYTES), or undefined if the first cannot be confirmed there. */
  const newRun = (first: number, shift: number): Run | undefined => {
    let end = first;
    for (let bytes = 0; end < previous.length && previous.hasId(end) && (end === first || bytes + previous.end(end) - previous.start(end) + 1 <= RUN_BYTES); end++) {
      bytes += previous.end(end) - previous.start(end) + 1;
    }
    const candidates: Buffer[] = [];
    for (let k = first; k < end; k++) candidates.push(previous.id(k)!);
    // A block the repository lacks is read on this thread, to be stored again.
    const stored = candidates.length > 0 ? confirmer!.stored(candidates) : [];
    const count = stored.indexOf(false) < 0 ? stored.length : stored.indexOf(false);
    if (count === 0) return undefined;
    const lengths: number[] = [];
    const ids = new Uint8Array(count * ID_BYTES);
    for (let k = first; k < first + count; k++) {
      lengths.push(previous.end(k) - previous.start(k) + 1);
      ids.set(candidates[k - first]!, (k - first) * ID_BYTES);
    }
    const start = previous.start(first) + shift;
    const answer = confirmer!.confirm(start, lengths, ids, first + count === previous.length);
    outstanding.add(answer);
    answer.then(
      () => outstanding.delete(answer),
      () => outstanding.delete(answer),
    );
    return { first, shift, lengths, answer };
  };
  try {
    while (true) {
      await window.breathe();
      if (confirmer && expect >= 0 && expect < previous.length) {
        const shift = pos - previous.start(expect);
        // Runs behind us or at another shift are of no use.
        while (runs.length > 0 && runs[0]!.first < expect) runs.shift();
        if (runs.some((r) => r.shift !== shift)) runs = [];
        // The gap before the runs still out (after a changed block) is confirmed here, block by block:
        // a run asked for now would wait behind them in the workers' queues.
        if (runs.length === 0) ahead = expect;
        while (runs.length < CONFIRM_RUNS) {
          const run = newRun(ahead, shift);
          if (!run) break;
          ahead = run.first + run.lengths.length;
          runs.push(run);
        }
        const run = runs[0]?.first === expect ? runs.shift() : undefined;
        if (run) {
          const { count, bytesRead } = await run.answer;
          onRead(Math.min(bytesRead, run.lengths.reduce((a, b) => a + b, 0)), false);
          if (count > 0) {
            // One item for the whole run (the caller copies it from `previous`), not a yield and an id copy per block.
            let length = 0;
            for (let c = 0; c < count; c++) length += run.lengths[c]!;
            yield { run: { first: expect, count }, length };
            pos += length;
            expect += count;
          }
          if (count === run.lengths.length) continue;
          // The block at `expect` differs: the chunker takes over there.
          expect = -1;
        }
      }
      if (expect >= 0 && expect < previous.length && previous.hasId(expect)) {
        const length = previous.end(expect) - previous.start(expect) + 1;
        // The old last block was cut by the end of the file, not by its bytes: it holds only if the file ends there again.
        const last = expect === previous.length - 1;
        const got = window.ensure(pos, length + 1);
        if (got === length || (got === length + 1 && !last)) {
          const data = window.view(pos, length);
          const id = hash(data);
          if (previous.idEquals(expect, id) && cutHolds(chunker.params, data, got > length ? window.view(pos + length, 1)[0] : undefined)) {
            yield { data, length, id, confirmed: true };
            pos += length;
            expect++;
            continue;
          }
        }
      }
      const available = window.ensure(pos, maxBlock);
      if (available === 0) return;
      const length = chunker.firstCut(window.view(pos, available));
      const data = window.view(pos, length);
      const id = hash(data);
      yield { data, length, id, confirmed: false };
      // A known block puts us back on the previous version's track, wherever it sits there.
      index ??= new BlockIndex(previous);
      const found = index.findId(id);
      expect = found === undefined ? -1 : (typeof found === 'number' ? found : nearest(previous, found, pos)) + 1;
      pos += length;
    }
  } finally {
    // Workers read through the caller's descriptor: none may still be at it once it is closed.
    await Promise.allSettled([...outstanding]);
  }
}

/** Of several occurrences of a block, the one whose position is nearest `pos`. */
function nearest(list: BlockList, occurrences: Int32Array, pos: number): number {
  let best = occurrences[0]!;
  for (const k of occurrences) if (Math.abs(list.start(k) - pos) < Math.abs(list.start(best) - pos)) best = k;
  return best;
}
