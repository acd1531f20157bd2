/**
 * Worker thread: compresses and seals blocks, the CPU-heavy part of a backup,
 * so it runs on every core while the main thread reads and chunks.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { encodeBlock } from '../repo/blockcodec.js';

export interface SealRequest {
  seq: number;
  id: Uint8Array;
  data: Uint8Array;
}

export interface SealResponse {
  seq: number;
  sealed?: Uint8Array;
  error?: string;
}

const { encKey, level } = workerData as { encKey: Uint8Array; level: number };

parentPort!.on('message', (req: SealRequest) => {
  try {
    const sealed = encodeBlock(encKey, req.id, req.data, level);
    // Transfer only a buffer that owns its memory (small Buffers share a pool).
    const owned = sealed.byteOffset === 0 && sealed.byteLength === sealed.buffer.byteLength ? sealed : new Uint8Array(sealed);
    parentPort!.postMessage({ seq: req.seq, sealed: owned } satisfies SealResponse, [owned.buffer as ArrayBuffer]);
  } catch (e) {
    parentPort!.postMessage({ seq: req.seq, error: (e as Error).message } satisfies SealResponse);
  }
});
