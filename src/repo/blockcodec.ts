/**
 * How one block is stored: compressed (zstd, when that makes it smaller) and
 * then sealed on its own with the block id as associated data, so any block
 * can be fetched, authenticated and decoded alone, and a block cannot be
 * passed off as another. On decode the id is recomputed from the plaintext.
 */
import { compress, decompress } from 'zstd-napi';
import { blockId, open, seal } from '../crypto/keyring.js';
import { integrity } from '../errors.js';

const RAW = 0;
const ZSTD = 1;

export function encodeBlock(encKey: Uint8Array, id: Uint8Array, plain: Uint8Array, level: number): Buffer {
  let body: Uint8Array = plain;
  let flag = RAW;
  if (level > 0 && plain.length >= 64) {
    const z = compress(plain, { compressionLevel: level });
    if (z.length < plain.length - plain.length / 64) {
      body = z;
      flag = ZSTD;
    }
  }
  const framed = Buffer.allocUnsafe(body.length + 1);
  framed[0] = flag;
  framed.set(body, 1);
  return seal(encKey, framed, id);
}

export function decodeBlock(encKey: Uint8Array, idKey: Uint8Array, id: Uint8Array, sealed: Uint8Array, maxSize: number): Buffer {
  const hex = Buffer.from(id).toString('hex');
  const framed = open(encKey, sealed, id, `block ${hex.slice(0, 16)}`);
  let plain: Buffer;
  if (framed[0] === RAW) plain = framed.subarray(1);
  else if (framed[0] === ZSTD) {
    try {
      plain = decompress(framed.subarray(1), { windowLogMax: 27 });
    } catch {
      throw integrity(`block ${hex.slice(0, 16)}: cannot be decompressed`);
    }
  } else throw integrity(`block ${hex.slice(0, 16)}: unknown encoding ${framed[0]}`);
  if (plain.length > maxSize) throw integrity(`block ${hex.slice(0, 16)}: larger than any block may be`);
  if (!blockId(idKey, plain).equals(id)) throw integrity(`block ${hex.slice(0, 16)}: content does not match its id`);
  return plain;
}
