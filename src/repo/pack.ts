/**
 * Pack files: many sealed blobs in one object, so the block store is not one
 * file per block. Layout:
 *
 *   "STRATAPK"  blob blob ... blob  sealed-index  u32le(index length)  "STRATAPE"
 *
 * The index lists each blob's id, kind, offset, length and plaintext size; it
 * is sealed, so a pack alone tells the catalog what it holds (rebuild) and
 * nothing to anyone without the key. A pack's name is the SHA-256 of its bytes.
 */
import { createHash } from 'node:crypto';
import type { Keyring } from '../crypto/keyring.js';
import { integrity } from '../errors.js';
import type { BlobKind } from './catalog.js';

export const PACK_MAGIC = Buffer.from('STRATAPK');
export const PACK_END = Buffer.from('STRATAPE');
const INDEX_AAD = 'strata pack index';

export interface PackEntry {
  id: Buffer;
  kind: BlobKind;
  offset: number;
  length: number;
  size: number;
}

interface IndexJson {
  blobs: [string, BlobKind, number, number, number][];
}

/**
 * A pack around `body` (sealed blobs back to back; `blobs` give their offsets
 * within it). Returned as parts: copying the body again would double memory.
 */
export function encodePack(
  keyring: Keyring,
  body: Buffer,
  blobs: readonly { id: Buffer; kind: BlobKind; offset: number; length: number; size: number }[],
): { name: string; parts: Buffer[]; size: number; entries: PackEntry[] } {
  const entries: PackEntry[] = blobs.map((b) => ({ ...b, offset: PACK_MAGIC.length + b.offset }));
  const index: IndexJson = { blobs: entries.map((e) => [e.id.toString('hex'), e.kind, e.offset, e.length, e.size]) };
  const sealedIndex = keyring.sealJson(index, INDEX_AAD);
  const len = Buffer.alloc(4);
  len.writeUInt32LE(sealedIndex.length);
  const parts = [PACK_MAGIC, body, sealedIndex, len, PACK_END];
  const hash = createHash('sha256');
  let size = 0;
  for (const p of parts) {
    hash.update(p);
    size += p.length;
  }
  return { name: hash.digest('hex'), parts, size, entries };
}

/** Reads a pack's index from its tail (for catalog rebuild and check). */
export function decodePackIndex(keyring: Keyring, tail: Buffer, packSize: number): PackEntry[] {
  if (tail.length < 12 || !tail.subarray(tail.length - 8).equals(PACK_END)) throw integrity('pack trailer is damaged');
  const len = tail.readUInt32LE(tail.length - 12);
  if (len + 12 > tail.length) throw integrity('pack index is longer than the pack');
  const index = keyring.openJson<IndexJson>(tail.subarray(tail.length - 12 - len, tail.length - 12), INDEX_AAD, 'pack index');
  return index.blobs.map(([id, kind, offset, length, size]) => {
    if (offset + length > packSize) throw integrity('pack index points past the end of the pack');
    return { id: Buffer.from(id, 'hex'), kind, offset, length, size };
  });
}
