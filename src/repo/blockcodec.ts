/**
 * How one block is stored: compressed (zstd, when that makes it smaller) and
 * then sealed on its own with the block id as associated data, so any block
 * can be fetched, authenticated and decoded alone, and a block cannot be
 * passed off as another. On decode the id is recomputed from the plaintext.
 */
import { Compressor, Decompressor } from 'zstd-napi';
import { blockId, open, seal } from '../crypto/keyring.js';
import { integrity } from '../errors.js';

const RAW = 0;
const ZSTD = 1;
const RAW_FLAG = Uint8Array.of(RAW);
const ZSTD_FLAG = Uint8Array.of(ZSTD);

/**
 * One compression context per level and one decompression context, set up
 * once per thread: the library's one-call helpers reset and set a shared
 * context's parameters on every block.
 */
const compressors = new Map<number, Compressor>();
let decompressor: Decompressor | undefined;

function compressor(level: number): Compressor {
  let c = compressors.get(level);
  if (!c) {
    c = new Compressor();
    c.setParameters({ compressionLevel: level });
    compressors.set(level, c);
  }
  return c;
}

function decompress(body: Uint8Array): Buffer {
  if (!decompressor) {
    decompressor = new Decompressor();
    decompressor.setParameters({ windowLogMax: 27 });
  }
  try {
    return decompressor.decompress(body);
  } catch (e) {
    // A bad frame may leave the context mid-stream: the next block gets a fresh one.
    decompressor = undefined;
    throw e;
  }
}

export function encodeBlock(encKey: Uint8Array, id: Uint8Array, plain: Uint8Array, level: number): Buffer {
  let body: Uint8Array = plain;
  let flag = RAW_FLAG;
  if (level > 0 && plain.length >= 64) {
    const z = compressor(level).compress(plain);
    if (z.length < plain.length - plain.length / 64) {
      body = z;
      flag = ZSTD_FLAG;
    }
  }
  // Flag and body are sealed as one message without joining them first.
  return seal(encKey, [flag, body], id);
}

export function decodeBlock(encKey: Uint8Array, idKey: Uint8Array, id: Uint8Array, sealed: Uint8Array, maxSize: number): Buffer {
  const hex = Buffer.from(id).toString('hex');
  const framed = open(encKey, sealed, id, `block ${hex.slice(0, 16)}`);
  let plain: Buffer;
  if (framed[0] === RAW) plain = framed.subarray(1);
  else if (framed[0] === ZSTD) {
    try {
      plain = decompress(framed.subarray(1));
    } catch {
      throw integrity(`block ${hex.slice(0, 16)}: cannot be decompressed`);
    }
  } else throw integrity(`block ${hex.slice(0, 16)}: unknown encoding ${framed[0]}`);
  if (plain.length > maxSize) throw integrity(`block ${hex.slice(0, 16)}: larger than any block may be`);
  if (!blockId(idKey, plain).equals(id)) throw integrity(`block ${hex.slice(0, 16)}: content does not match its id`);
  return plain;
}
