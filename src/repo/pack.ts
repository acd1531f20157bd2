/**
 * Pack files: many sealed blobs in one object, so the block store is not one
 * file per block. Layout:
 *
 *   "STRATAPK"  blob blob ... blob  sealed-index  u32le(index length)  "STRATAPE"
 *
 * The index lists each blob's id, kind, offset, length and plaintext size; it
 * is sealed, so a pack alone tells the catalog what it holds (rebuild) and
 * nothing to anyone without the key. A pack's name is the SHA-256 of its
 * sealed index.
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
 * Closes a pack: `buf` holds the magic and the sealed blobs up to `used`
 * (`blobs` give their offsets in it); the sealed index and the end go after
 * them, in place when there is room.
 */
export async function encodePack(
  keyring: Keyring,
  buf: Buffer,
  used: number,
  blobs: readonly PackEntry[],
): Promise<{ name: string; bytes: Buffer; entries: PackEntry[] }> {
  const index: IndexJson = { blobs: blobs.map((e) => [e.id.toString('hex'), e.kind, e.offset, e.length, e.size]) };
  const sealedIndex = keyring.sealJson(index, INDEX_AAD);
  const len = Buffer.alloc(4);
  len.writeUInt32LE(sealedIndex.length);
  const tail = [sealedIndex, len, PACK_END];
  const tailSize = sealedIndex.length + 4 + PACK_END.length;
  let bytes: Buffer;
  if (used + tailSize <= buf.length) {
    let at = used;
    for (const t of tail) {
      t.copy(buf, at);
      at += t.length;
    }
    bytes = buf.subarray(0, at);
  } else bytes = Buffer.concat([buf.subarray(0, used), ...tail]);
  // Named by its sealed index: unique (a fresh nonce each time) and cheap to
  // hash, where hashing every pack byte would cost the main thread a second
  // pass; the blobs themselves are authenticated one by one.
  return { name: createHash('sha256').update(sealedIndex).digest('hex'), bytes, entries: [...blobs] };
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
