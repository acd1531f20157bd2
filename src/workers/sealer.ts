/**
 * Worker thread: compresses and seals blocks, the CPU-heavy part of a backup,
 * so it runs on every core while the main thread reads and chunks.
 *
 * Blocks travel through slots of one SharedArrayBuffer instead of as
 * transferred buffers: nothing is allocated per block across threads, so no
 * thread accumulates dead block memory between collections.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { blockId } from '../crypto/keyring.js';
import { encodeBlock } from '../repo/blockcodec.js';
import { GcPacer } from '../util/gc.js';

export interface SlotLayout {
  /** Bytes per slot: id (32), then input (maxBlock), then output (maxBlock + SEAL_OVERHEAD). */
  slotSize: number;
  maxBlock: number;
}

export const ID_BYTES = 32;
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

export interface SealResponse {
  seq: number;
  slot: number;
  length?: number;
  error?: string;
}

if (parentPort) {
  const { encKey, idKey, level, shared, layout } = workerData as { encKey: Uint8Array; idKey: Uint8Array; level: number; shared: SharedArrayBuffer; layout: SlotLayout };
  const pacer = new GcPacer(2 * 1024 * 1024);
  const port = parentPort;
  // Requests come in batches (fewer messages, fewer wake-ups); so do answers.
  port.on('message', (batch: SealRequest[]) => {
    port.postMessage(batch.map(handle));
  });
  const handle = (req: SealRequest): SealResponse => {
    try {
      const base = req.slot * layout.slotSize;
      const id = new Uint8Array(shared, base, ID_BYTES);
      const data = new Uint8Array(shared, base + ID_BYTES, req.length);
      if (req.hash) id.set(blockId(idKey, data));
      const sealed = encodeBlock(encKey, id, data, level);
      if (sealed.length > layout.maxBlock + SEAL_OVERHEAD) throw new Error('sealed block larger than its slot');
      new Uint8Array(shared, base + ID_BYTES + layout.maxBlock, sealed.length).set(sealed);
      pacer.add(req.length);
      return { seq: req.seq, slot: req.slot, length: sealed.length };
    } catch (e) {
      return { seq: req.seq, slot: req.slot, error: (e as Error).message };
    }
  };
}
