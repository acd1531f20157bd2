/**
 * Worker thread: restores runs of blocks straight from packs into the file
 * being restored. It reads the sealed bytes through its own reader of the
 * store (adjacent blocks of a pack in one read), authenticates, decompresses and checks each block, and writes
 * its piece at its place in the output with pwrite. The main thread only
 * resolves which pieces go where: a restore's reads, decoding and writes run
 * on every core, and no block crosses between threads.
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
}

export interface UnpackAnswer {
  seq: number;
  /** Bytes written. */
  bytes: number;
  /** The first piece not written, and why (the main thread reads it again and words the error). */
  failed?: number;
  error?: string;
}

/** Sealed bytes read in one go at most (a run of adjacent blocks). */
const RUN_BYTES = 4 * 1024 * 1024;
/** Output gathered for one write at most. */
const WRITE_BYTES = 1024 * 1024;

if (parentPort) {
  const { encKey, idKey, maxSize, dictionaries, store } = workerData as { encKey: Uint8Array; idKey: Uint8Array; maxSize: number; dictionaries: Dictionary[]; store: ThreadReaderSpec };
  const reader = openThreadReader(store);
  // A dictionary's ref arrives as a Uint8Array: Buffers do not survive the trip between threads.
  for (const d of dictionaries) addDictionary({ ref: Buffer.from(d.ref), bytes: d.bytes });
  const port = parentPort;
  const pacer = new GcPacer(4 * 1024 * 1024);
  const writeFully = (fd: number, data: Uint8Array, position: number): void => {
    let done = 0;
    while (done < data.length) done += fs.writeSync(fd, data, done, data.length - done, position + done);
  };

  // Pieces that follow each other in one output are gathered and written with one pwrite.
  const out = Buffer.allocUnsafe(WRITE_BYTES);
  let outLength = 0;
  let outAt = 0;
  let outFd = -1;

  port.on('message', (b: UnpackBatch) => {
    const n = b.pieces.length / PIECE_FIELDS;
    const f = (i: number, k: number) => b.pieces[i * PIECE_FIELDS + k]!;
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
      for (let i = 0; i < n; ) {
        // A run: the following pieces whose sealed bytes come right after, in the same pack.
        const runStart = f(i, 1);
        let runEnd = runStart + f(i, 2);
        let j = i + 1;
        while (j < n && f(j, 0) === f(i, 0) && f(j, 1) === runEnd && runEnd + f(j, 2) - runStart <= RUN_BYTES) runEnd += f(j++, 2);
        const sealed = reader.read({ kind: 'pack', name: b.packs[f(i, 0)]! }, runStart, runEnd - runStart);
        for (; i < j; i++) {
          const from = f(i, 1) - runStart;
          const plain = decodeBlock(encKey, idKey, b.ids.subarray(i * ID_BYTES, (i + 1) * ID_BYTES), sealed.subarray(from, from + f(i, 2)), maxSize);
          if (plain.length !== f(i, 3)) throw new Error(`block is ${plain.length} bytes, its TOC entry says ${f(i, 3)}`);
          pacer.add(plain.length);
          const piece = plain.subarray(f(i, 4), f(i, 4) + f(i, 5));
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
      port.postMessage({ seq: b.seq, bytes: doneBytes } satisfies UnpackAnswer);
    } catch (e) {
      outLength = 0;
      port.postMessage({ seq: b.seq, bytes: doneBytes, failed: done, error: (e as Error).message } satisfies UnpackAnswer);
    }
  });
}
