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
import { BLOB_KINDS, type BlobKind } from '../catalog/catalog.js';
import { PACK_END, type PackEntry } from '../catalog/packs.js';

const INDEX_AAD = 'strata pack index';

interface IndexJson {
  blobs: [string, BlobKind, number, number, number][];
}

/**
 * Format 2's index: a version byte, then per blob its id, kind (a byte: its
 * place in BLOB_KINDS), offset, length and size (u32le each). 45 bytes a
 * blob where JSON with hex ids took about 100. JSON begins with "{", never 2.
 */
const BINARY_INDEX = 2;
const ENTRY_BYTES = 32 + 1 + 4 + 4 + 4;

function encodeIndex(blobs: readonly PackEntry[]): Buffer {
  const out = Buffer.allocUnsafe(1 + blobs.length * ENTRY_BYTES);
  out[0] = BINARY_INDEX;
  let at = 1;
  for (const e of blobs) {
    e.id.copy(out, at);
    out[at + 32] = BLOB_KINDS.indexOf(e.kind);
    out.writeUInt32LE(e.offset, at + 33);
    out.writeUInt32LE(e.length, at + 37);
    out.writeUInt32LE(e.size, at + 41);
    at += ENTRY_BYTES;
  }
  return out;
}

function decodeIndex(plain: Buffer): PackEntry[] {
  if (plain[0] !== BINARY_INDEX) {
    let index: IndexJson;
    try {
      index = JSON.parse(plain.toString('utf8')) as IndexJson;
    } catch {
      throw integrity('pack index is neither JSON nor binary');
    }
    return index.blobs.map(([id, kind, offset, length, size]) => ({ id: Buffer.from(id, 'hex'), kind, offset, length, size }));
  }
  if ((plain.length - 1) % ENTRY_BYTES !== 0) throw integrity('pack index has a partial entry');
  const out: PackEntry[] = [];
  for (let at = 1; at < plain.length; at += ENTRY_BYTES) {
    const kind = BLOB_KINDS[plain[at + 32]!];
    if (!kind) throw integrity(`pack index names an unknown blob kind ${plain[at + 32]}`);
    out.push({ id: Buffer.from(plain.subarray(at, at + 32)), kind, offset: plain.readUInt32LE(at + 33), length: plain.readUInt32LE(at + 37), size: plain.readUInt32LE(at + 41) });
  }
  return out;
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
  /** Format 1 repositories keep JSON indexes, which the strata that wrote them can read. */
  binary = true,
): Promise<{ name: string; bytes: Buffer; entries: PackEntry[] }> {
  const sealedIndex = binary
    ? keyring.seal(encodeIndex(blobs), Buffer.from(INDEX_AAD))
    : keyring.sealJson({ blobs: blobs.map((e) => [e.id.toString('hex'), e.kind, e.offset, e.length, e.size]) } satisfies IndexJson, INDEX_AAD);
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
  const entries = decodeIndex(keyring.open(tail.subarray(tail.length - 12 - len, tail.length - 12), Buffer.from(INDEX_AAD), 'pack index'));
  for (const e of entries) if (e.offset + e.length > packSize) throw integrity('pack index points past the end of the pack');
  return entries;
}
