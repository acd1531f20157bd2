/**
 * Worker thread: restores runs of blocks straight from packs into the file
 * being restored. It reads the sealed bytes through its own reader of the
 * store (adjacent blocks of a pack in one read), authenticates, decompresses and checks each block, and writes
 * its piece at its place in the output with pwrite. The main thread only
 * resolves which pieces go where: a restore's reads, decoding and writes run
 * on every core, and no block crosses between threads. From a store a worker
 * cannot read itself (a bucket: its requests are best merged across files on
 * one thread), the main thread fetches the sealed bytes and hands them over
 * with the batch; decoding and writing stay here.
 */
import * as fs from 'node:fs';
import { parentPort, workerData } from 'node:worker_threads';
import { addDictionary, decodeBlock, type Dictionary } from '../repo/blockcodec.js';
import { GcPacer } from '../util/gc.js';
import { isHole } from '../util/holes.js';
import { openThreadReader } from '../storage/thread-reader.js';
import type { ThreadReaderSpec } from '../storage/storage.js';

/** Numbers per piece in UnpackBatch.pieces. */
export const PIECE_FIELDS = 9;
export const ID_BYTES = 32;
/** Numbers per file in UnpackBatch.files. */
export const FILE_FIELDS = 6;

/** What became of a file the batch asked to create (UnpackAnswer.made). */
export const MADE = { done: 0, notMade: 1, failed: 2 } as const;

export interface UnpackBatch {
  seq: number;
  /** Packs the blocks are in. */
  packs: string[];
  /**
   * Per piece: pack index, sealed offset, sealed length, block size, piece
   * start in the block, piece length, position in the output, the output
   * file's descriptor (the process shares descriptors between threads), and
   * that file's size (its last piece is always written, so the file ends
   * where it should). One batch may write many small files.
   */
  pieces: Float64Array;
  /** Block ids, ID_BYTES per piece. */
  ids: Uint8Array;
  /**
   * The pieces' sealed bytes, one after another in the batch's order, when
   * the main thread fetched them (the pool reads no store of its own).
   */
  sealed?: Uint8Array;
  /**
   * Or each piece's sealed bytes as a view of its own, on memory the main
   * thread shares (packs fetched from a bucket into shared memory): nothing
   * is copied to hand them over.
   */
  parts?: Uint8Array[];
  /**
   * Files this worker creates, then fills, gives their metadata and closes
   * (a piece's descriptor -k-1 names file k). Per file: the descriptor of
   * its directory (opened by the main thread, which checked it), the mode to
   * create it with, the mode to set afterwards (-1: none), owner and group
   * (-1: leave them), and its modification time in seconds.
   */
  files?: Float64Array;
  /** The files' names, one after another; `nameEnds[k]` is where file k's ends. */
  names?: Uint8Array;
  nameEnds?: Uint32Array;
}

export interface UnpackAnswer {
  seq: number;
  /** Bytes written. */
  bytes: number;
  /** The first piece not written, and why (the main thread reads it again and words the error). */
  failed?: number;
  error?: string;
  /**
   * Per file of `files`: MADE.done (written whole, metadata set, closed),
   * MADE.notMade (not created: something is there, or the creation failed),
   * MADE.failed (created, but not written whole: the main thread removes it
   * and makes it again). Its failures never stop the other files or set `failed`.
   */
  made?: Uint8Array;
}

/** Pieces whose sealed bytes follow each other in one pack, read at once: the piece after them, and their bytes in the pack. */
interface Run {
  pack: string;
  end: number;
  start: number;
  bytes: number;
}

/** Sealed bytes read in one go at most (a run of adjacent blocks). */
const RUN_BYTES = 4 * 1024 * 1024;
/** Output gathered for one write at most. */
const WRITE_BYTES = 1024 * 1024;

/** What an unpacker needs: the keys, the largest block, every dictionary of the repository, and how to read its packs (none: batches carry their sealed bytes). */
export interface UnpackerData {
  encKey: Uint8Array;
  idKey: Uint8Array;
  maxSize: number;
  dictionaries: Dictionary[];
  store?: ThreadReaderSpec;
}

/** Does batches: on a worker thread (below), or on the main thread for the first few of a restore (unpack-pool.ts). */
export interface Unpacker {
  handle(b: UnpackBatch): UnpackAnswer;
  close(): void;
}

// Only as the unpack pool's worker: this module is also imported by the pool itself (which may run in a thread of another kind).
if (parentPort && (workerData as { unpacker?: boolean } | null)?.unpacker === true) {
  const port = parentPort;
  const unpacker = makeUnpacker(workerData as UnpackerData, new GcPacer(4 * 1024 * 1024));
  port.on('message', (b: UnpackBatch) => port.postMessage(unpacker.handle(b)));
}

/**
 * Pieces first..end-1's sealed bytes (`bytes` in all, side by side in their
 * pack) as one run: a view when the first and last lie that far apart in
 * one buffer (one fetch of the pack's bytes, so what is between is theirs
 * too), else a copy.
 */
function joined(parts: readonly Uint8Array[], first: number, end: number, bytes: number): Uint8Array {
  const a = parts[first]!;
  const z = parts[end - 1]!;
  if (a.buffer === z.buffer && z.byteOffset + z.byteLength - a.byteOffset === bytes) return new Uint8Array(a.buffer, a.byteOffset, bytes);
  const out = new Uint8Array(bytes);
  let at = 0;
  for (let k = first; k < end; k++) {
    out.set(parts[k]!, at);
    at += parts[k]!.length;
  }
  return out;
}

export function makeUnpacker({ encKey, idKey, maxSize, dictionaries, store }: UnpackerData, pacer?: GcPacer): Unpacker {
  const reader = store ? openThreadReader(store) : undefined;
  // A dictionary's ref arrives as a Uint8Array: Buffers do not survive the trip between threads.
  for (const d of dictionaries) addDictionary({ ref: Buffer.from(d.ref), bytes: d.bytes });
  const writeFully = (fd: number, data: Uint8Array, position: number): void => {
    let done = 0;
    while (done < data.length) done += fs.writeSync(fd, data, done, data.length - done, position + done);
  };

  /** The run of pieces from `i`. */
  const runFrom = (b: UnpackBatch, i: number): Run => {
    const f = (i: number, k: number) => b.pieces[i * PIECE_FIELDS + k]!;
    const n = b.pieces.length / PIECE_FIELDS;
    const start = f(i, 1);
    let end = start + f(i, 2);
    let j = i + 1;
    while (j < n && f(j, 0) === f(i, 0) && f(j, 1) === end && end + f(j, 2) - start <= RUN_BYTES) end += f(j++, 2);
    return { pack: b.packs[f(i, 0)]!, end: j, start, bytes: end - start };
  };
  /**
   * The sealed bytes of the run of pieces from `first`: read from its pack,
   * or the batch's own, where the runs lie one after another as in their
   * packs (`handed`: the bytes of the runs before this one), or its pieces'
   * own views.
   */
  const readRun = (b: UnpackBatch, run: Run, handed: number, first: number): Uint8Array => {
    if (b.parts) return joined(b.parts, first, run.end, run.bytes);
    if (b.sealed) return b.sealed.subarray(handed, handed + run.bytes);
    if (!reader) throw new Error('a batch without its sealed bytes, and no store to read them from');
    return reader.read({ kind: 'pack', name: run.pack }, run.start, run.bytes);
  };
  /** Piece `i`'s bytes: its block authenticated, decoded and checked against its TOC entry's size. */
  const plainPiece = (b: UnpackBatch, i: number, sealed: Uint8Array, runStart: number): Uint8Array => {
    const f = (k: number) => b.pieces[i * PIECE_FIELDS + k]!;
    const from = f(1) - runStart;
    const plain = decodeBlock(encKey, idKey, b.ids.subarray(i * ID_BYTES, (i + 1) * ID_BYTES), sealed.subarray(from, from + f(2)), maxSize);
    if (plain.length !== f(3)) throw new Error(`block is ${plain.length} bytes, its TOC entry says ${f(3)}`);
    pacer?.add(plain.length);
    return plain.subarray(f(4), f(4) + f(5));
  };

  // Pieces that follow each other in one output are gathered and written with one pwrite.
  const out = Buffer.allocUnsafe(WRITE_BYTES);
  let outLength = 0;
  let outAt = 0;
  let outFd = -1;

  const handle = (b: UnpackBatch): UnpackAnswer => {
    const n = b.pieces.length / PIECE_FIELDS;
    const f = (i: number, k: number) => b.pieces[i * PIECE_FIELDS + k]!;
    if (b.files) return makeFiles(b, b.files);
    // Pieces before `done` are written (their bytes in doneBytes); those from `done` on are gathered in `out`.
    let done = 0;
    let doneBytes = 0;
    let gatheredBytes = 0;
    const flush = (next: number) => {
      writeFully(outFd, out.subarray(0, outLength), outAt);
      outLength = 0;
      done = next;
      doneBytes += gatheredBytes;
      gatheredBytes = 0;
    };
    try {
      outLength = 0;
      for (let i = 0, handed = 0; i < n; ) {
        const run = runFrom(b, i);
        const sealed = readRun(b, run, handed, i);
        handed += run.bytes;
        for (; i < run.end; i++) {
          const piece = plainPiece(b, i, sealed, run.start);
          const at = f(i, 6);
          const fd = f(i, 7);
          const hole = at + piece.length < f(i, 8) && isHole(piece);
          if (outLength > 0 && (hole || outFd !== fd || outAt + outLength !== at || outLength + piece.length > WRITE_BYTES)) flush(i);
          if (hole || piece.length > WRITE_BYTES) {
            // A run of zeros is left unwritten: the new file reads zeros there, and takes no space (sparse).
            if (!hole) writeFully(fd, piece, at);
            done = i + 1;
            doneBytes += piece.length;
            continue;
          }
          if (outLength === 0) {
            outAt = at;
            outFd = fd;
          }
          out.set(piece, outLength);
          outLength += piece.length;
          gatheredBytes += piece.length;
        }
      }
      if (outLength > 0) flush(n);
      return { seq: b.seq, bytes: doneBytes };
    } catch (e) {
      outLength = 0;
      return { seq: b.seq, bytes: doneBytes, failed: done, error: (e as Error).message };
    }
  };

  /**
   * Creates the batch's files in their directories (through the descriptors
   * the main thread checked, so a directory swapped for a symlink since leads
   * nowhere else), writes them and sets their metadata. A file that fails is
   * only marked: the others go on.
   */
  const makeFiles = (b: UnpackBatch, files: Float64Array): UnpackAnswer => {
    const count = files.length / FILE_FIELDS;
    const g = (k: number, i: number) => files[k * FILE_FIELDS + i]!;
    const fds = new Array<number>(count).fill(-1);
    const made = new Uint8Array(count).fill(MADE.notMade);
    const flags = fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW;
    for (let k = 0; k < count; k++) {
      const name = b.names!.subarray(k === 0 ? 0 : b.nameEnds![k - 1]!, b.nameEnds![k]!);
      try {
        fds[k] = fs.openSync(Buffer.concat([Buffer.from(`/proc/self/fd/${g(k, 0)}/`), name]), flags, g(k, 1));
        made[k] = MADE.done;
      } catch {
        // Something is there, or the creation failed: the main thread decides, and words any error.
      }
    }
    const n = b.pieces.length / PIECE_FIELDS;
    const f = (i: number, k: number) => b.pieces[i * PIECE_FIELDS + k]!;
    const fileOf = (i: number) => -f(i, 7) - 1;
    let bytes = 0;
    for (let i = 0, handed = 0; i < n; ) {
      const run = runFrom(b, i);
      const runAt = handed;
      const runFirst = i;
      handed += run.bytes;
      let sealed: Uint8Array | undefined;
      for (; i < run.end; i++) {
        const k = fileOf(i);
        if (made[k] !== MADE.done) continue;
        try {
          sealed ??= readRun(b, run, runAt, runFirst);
          const piece = plainPiece(b, i, sealed, run.start);
          const at = f(i, 6);
          if (!(at + piece.length < f(i, 8) && isHole(piece))) writeFully(fds[k]!, piece, at);
          bytes += piece.length;
        } catch {
          made[k] = MADE.failed;
        }
      }
    }
    for (let k = 0; k < count; k++) {
      const fd = fds[k]!;
      if (fd < 0) continue;
      try {
        if (made[k] === MADE.done) {
          if (g(k, 3) >= 0) {
            try {
              fs.fchownSync(fd, g(k, 3), g(k, 4));
            } catch {
              // An owner this system cannot set: the file keeps ours (as restore.ts's setMetadata).
            }
          }
          if (g(k, 2) >= 0) fs.fchmodSync(fd, g(k, 2));
          fs.futimesSync(fd, g(k, 5), g(k, 5));
        }
      } catch {
        made[k] = MADE.failed;
      } finally {
        fs.closeSync(fd);
      }
    }
    return { seq: b.seq, bytes, made };
  };

  return { handle, close: () => reader?.close() };
}
