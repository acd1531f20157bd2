/**
 * Worker thread: compresses and seals blocks, the CPU-heavy part of a backup,
 * so it runs on every core while the main thread reads and chunks.
 *
 * Blocks travel through slots of one SharedArrayBuffer instead of as
 * transferred buffers: nothing is allocated per block across threads, so no
 * thread accumulates dead block memory between collections.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { cutHolds, type ChunkerParams } from '../chunker/fastcdc.js';
import { blockId } from '../crypto/keyring.js';
import { encodeBlock, type Dictionary } from '../repo/blockcodec.js';
import { GcPacer } from '../util/gc.js';
import { readInto } from '../util/read.js';
import { ID_BYTES, sameFile, type ReadBuffer } from './same-file.js';

export interface SlotLayout {
  /** Bytes per slot: id (32), then input (maxBlock), then output (maxBlock + SEAL_OVERHEAD). */
  slotSize: number;
  maxBlock: number;
}

export { ID_BYTES };
/** Nonce, encoding flag and tag: a sealed block is at most this much larger than its plaintext. */
export const SEAL_OVERHEAD = 64;

export function slotLayout(maxBlock: number): SlotLayout {
  return { maxBlock, slotSize: ID_BYTES + maxBlock + maxBlock + SEAL_OVERHEAD };
}

export interface SealRequest {
  seq: number;
  slot: number;
  length: number;
  /** The worker computes the block id (written back into the slot). */
  hash: boolean;
}

/**
 * Confirming a run of a file seen before: the worker reads [start, start +
 * sum(lengths)) of the file itself and hashes each block, expecting `ids`.
 * If `last`, the final block holds only if the file ends right after it.
 */
export interface ConfirmRequest {
  confirm: number;
  fd: number;
  start: number;
  lengths: number[];
  /** ID_BYTES per block. */
  ids: Uint8Array;
  last: boolean;
  /** The chunker's: a block of zeros holds only if a byte other than zero follows it (cutHolds). */
  chunker: ChunkerParams;
}

export interface ConfirmResponse {
  confirm: number;
  /** How many blocks from the first are confirmed. */
  count: number;
  /** Bytes read from the file. */
  bytesRead: number;
  error?: string;
}

/**
 * Files seen before whose stats changed but not their size (a new inode, a
 * touch): the worker opens each, checks that it is the file the main thread
 * stat'ed, reads it whole and hashes it along its parent version's blocks.
 */
export interface SameRequest {
  same: number;
  paths: string[];
  /** Per file, as the main thread's lstat saw it: size, mtimeNs, ctimeNs, ino. */
  stats: BigInt64Array;
  /** Per file, how many blocks its parent version has; their lengths and ids (ID_BYTES each), all files one after another. */
  counts: Uint32Array;
  lengths: Uint32Array;
  ids: Uint8Array;
}

export interface SameResponse {
  same: number;
  /** Per file: 1 if it holds exactly its parent version's blocks, and did not change while read. */
  results: Uint8Array;
  bytesRead: number;
}

export interface SealResponse {
  seq: number;
  slot: number;
  length?: number;
  error?: string;
}

/** From now on, compress with this dictionary (sent once it is stored). */
export interface DictionaryMessage {
  dictionary: Dictionary;
}

if (parentPort) {
  const { encKey, idKey, level, shared, layout } = workerData as { encKey: Uint8Array; idKey: Uint8Array; level: number; shared: SharedArrayBuffer; layout: SlotLayout };
  let dict: Dictionary | undefined;
  const pacer = new GcPacer(2 * 1024 * 1024);
  const port = parentPort;
  /** One read buffer for the confirms and sames, grown to the largest asked. */
  const scratch: ReadBuffer = { buf: Buffer.allocUnsafe(0) };
  // Requests come in batches (fewer messages, fewer wake-ups); so do answers.
  port.on('message', (batch: SealRequest[] | ConfirmRequest | SameRequest | DictionaryMessage) => {
    if (Array.isArray(batch)) port.postMessage(batch.map(handle));
    else if ('confirm' in batch) port.postMessage(confirm(batch));
    else if ('same' in batch) port.postMessage(same(batch));
    // A Buffer arrives as a plain Uint8Array.
    else dict = { ref: Buffer.from(batch.dictionary.ref), bytes: batch.dictionary.bytes };
  });
  const confirm = (req: ConfirmRequest): ConfirmResponse => {
    let bytesRead = 0;
    try {
      // One byte past the run: whether the file ends there, or what follows the run's last block.
      const total = req.lengths.reduce((a, b) => a + b, 0) + 1;
      if (scratch.buf.length < total) scratch.buf = Buffer.allocUnsafe(total);
      bytesRead = readInto(req.fd, scratch.buf, total, req.start);
      let count = 0;
      for (let at = 0; count < req.lengths.length; count++) {
        const length = req.lengths[count]!;
        const isLast = req.last && count === req.lengths.length - 1;
        if (at + length > bytesRead || (isLast && bytesRead !== at + length)) break;
        const block = scratch.buf.subarray(at, at + length);
        if (!blockId(idKey, block).equals(req.ids.subarray(count * ID_BYTES, (count + 1) * ID_BYTES))) break;
        if (!cutHolds(req.chunker, block, at + length < bytesRead ? scratch.buf[at + length] : undefined)) break;
        at += length;
      }
      return { confirm: req.confirm, count, bytesRead };
    } catch (e) {
      return { confirm: req.confirm, count: 0, bytesRead, error: (e as Error).message };
    }
  };
  const same = (req: SameRequest): SameResponse => {
    const results = new Uint8Array(req.paths.length);
    let bytesRead = 0;
    let block = 0;
    req.paths.forEach((path, i) => {
      const first = block;
      block += req.counts[i]!;
      const r = sameFile(idKey, path, req.stats.subarray(i * 4, i * 4 + 4), req.lengths.subarray(first, block), req.ids.subarray(first * ID_BYTES, block * ID_BYTES), scratch);
      bytesRead += r.bytesRead;
      if (r.same) results[i] = 1;
    });
    return { same: req.same, results, bytesRead };
  };
  const handle = (req: SealRequest): SealResponse => {
    try {
      const base = req.slot * layout.slotSize;
      const id = new Uint8Array(shared, base, ID_BYTES);
      const data = new Uint8Array(shared, base + ID_BYTES, req.length);
      if (req.hash) id.set(blockId(idKey, data));
      const sealed = encodeBlock(encKey, id, data, level, dict);
      if (sealed.length > layout.maxBlock + SEAL_OVERHEAD) throw new Error('sealed block larger than its slot');
      new Uint8Array(shared, base + ID_BYTES + layout.maxBlock, sealed.length).set(sealed);
      pacer.add(req.length);
      return { seq: req.seq, slot: req.slot, length: sealed.length };
    } catch (e) {
      return { seq: req.seq, slot: req.slot, error: (e as Error).message };
    }
  };
}
