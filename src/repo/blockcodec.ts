/**
 * How one block is stored: compressed (zstd, when that makes it smaller) and
 * then sealed on its own with the block id as associated data, so any block
 * can be fetched, authenticated and decoded alone, and a block cannot be
 * passed off as another. On decode the id is recomputed from the plaintext.
 *
 * A block may be compressed against one of the repository's dictionaries
 * (repo/dictionary.ts): a 32 KiB block alone is too short for zstd to learn
 * the words of a log or a mailbox, which a dictionary gives it up front.
 */
import { Compressor, Decompressor } from 'zstd-napi';
import { blockId, open, seal } from '../crypto/keyring.js';
import { integrity, StrataError } from '../errors.js';

const RAW = 0;
const ZSTD = 1;
const ZSTD_DICT = 2;
const RAW_FLAG = Uint8Array.of(RAW);
const ZSTD_FLAG = Uint8Array.of(ZSTD);
/** A dictionary is named in a block by the first bytes of its keyed id. */
export const DICT_REF_BYTES = 8;

/** A dictionary's bytes and the reference blocks compressed with it carry. */
export interface Dictionary {
  ref: Buffer;
  bytes: Uint8Array;
}

/**
 * One compression context per level (and dictionary) and one decompression
 * context per dictionary, set up once per thread: the library's one-call
 * helpers reset and set a shared context's parameters on every block, and a
 * dictionary is digested when it is loaded, not per block.
 */
const compressors = new Map<string, Compressor>();
const decompressors = new Map<string, Decompressor>();
/** Dictionaries this thread can decode with, by ref (hex). */
const known = new Map<string, Dictionary>();

function compressor(level: number, dict: Dictionary | undefined): Compressor {
  const key = dict ? `${level}:${dict.ref.toString('hex')}` : `${level}`;
  let c = compressors.get(key);
  if (!c) {
    c = new Compressor();
    c.setParameters({ compressionLevel: level });
    if (dict) c.loadDictionary(dict.bytes);
    compressors.set(key, c);
  }
  return c;
}

function decompress(body: Uint8Array, dict: Dictionary | undefined): Buffer {
  const key = dict ? dict.ref.toString('hex') : '';
  let d = decompressors.get(key);
  if (!d) {
    d = new Decompressor();
    d.setParameters({ windowLogMax: 27 });
    if (dict) d.loadDictionary(dict.bytes);
    decompressors.set(key, d);
  }
  try {
    return d.decompress(body);
  } catch (e) {
    // A bad frame may leave the context mid-stream: the next block gets a fresh one.
    decompressors.delete(key);
    throw e;
  }
}

/** Makes a dictionary usable for decoding on this thread. */
export function addDictionary(dict: Dictionary): void {
  known.set(dict.ref.toString('hex'), dict);
}

/** A dictionary this thread was given, by ref (hex). */
export function knownDictionary(ref: string): Dictionary | undefined {
  return known.get(ref);
}

/** Thrown by decodeBlock for a block compressed with a dictionary this thread has not been given. */
export class MissingDictionary extends StrataError {
  constructor(readonly ref: string) {
    super('integrity', `a block needs dictionary ${ref}, which is not loaded`);
  }
}

export function encodeBlock(encKey: Uint8Array, id: Uint8Array, plain: Uint8Array, level: number, dict?: Dictionary): Buffer {
  if (level > 0 && plain.length >= 64) {
    const z = compressor(level, dict).compress(plain);
    const header = dict ? DICT_REF_BYTES : 0;
    if (z.length + header < plain.length - plain.length / 64) {
      // Flag, reference and body are sealed as one message without joining them first.
      return seal(encKey, dict ? [Uint8Array.of(ZSTD_DICT), dict.ref, z] : [ZSTD_FLAG, z], id);
    }
  }
  return seal(encKey, [RAW_FLAG, plain], id);
}

/**
 * Opens, decompresses and verifies a sealed block. A block compressed with a
 * dictionary not given to this thread (addDictionary) throws
 * MissingDictionary, so the caller can fetch it and try again.
 */
export function decodeBlock(encKey: Uint8Array, idKey: Uint8Array, id: Uint8Array, sealed: Uint8Array, maxSize: number): Buffer {
  const hex = Buffer.from(id).toString('hex');
  const framed = open(encKey, sealed, id, `block ${hex.slice(0, 16)}`);
  let plain: Buffer;
  if (framed[0] === RAW) plain = framed.subarray(1);
  else if (framed[0] === ZSTD || framed[0] === ZSTD_DICT) {
    let dict: Dictionary | undefined;
    let body = framed.subarray(1);
    if (framed[0] === ZSTD_DICT) {
      if (framed.length < 1 + DICT_REF_BYTES) throw integrity(`block ${hex.slice(0, 16)}: too short for its encoding`);
      const ref = framed.subarray(1, 1 + DICT_REF_BYTES).toString('hex');
      dict = known.get(ref);
      if (!dict) throw new MissingDictionary(ref);
      body = framed.subarray(1 + DICT_REF_BYTES);
    }
    try {
      plain = decompress(body, dict);
    } catch {
      throw integrity(`block ${hex.slice(0, 16)}: cannot be decompressed`);
    }
  } else throw integrity(`block ${hex.slice(0, 16)}: unknown encoding ${framed[0]}`);
  if (plain.length > maxSize) throw integrity(`block ${hex.slice(0, 16)}: larger than any block may be`);
  if (!blockId(idKey, plain).equals(id)) throw integrity(`block ${hex.slice(0, 16)}: content does not match its id`);
  return plain;
}
