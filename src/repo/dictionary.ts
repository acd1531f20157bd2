/**
 * Compression dictionaries: 32 KiB of a repository's own text that zstd
 * starts every block from. Blocks of about 32 KiB compress alone (any block
 * can be read without its neighbours), and text comes out about 7% larger
 * than compressed in MiB pieces; a dictionary of fragments of earlier blocks
 * wins that back.
 *
 * The first backup of a repository (format 2) that meets enough text builds
 * one from fragments of its first compressible blocks and stores it sealed,
 * as an object of its own, before any block that uses it is packed. Later
 * backups use it. Dictionaries are never deleted: they are small, and any
 * block may name one.
 */
import { blockId, type Keyring } from '../crypto/keyring.js';
import { integrity, StrataError } from '../errors.js';
import type { Storage } from '../storage/storage.js';
import { addDictionary, DICT_REF_BYTES, knownDictionary, MissingDictionary, type Dictionary } from './blockcodec.js';

/** Fragments of this many bytes, from as many different blocks. */
const FRAGMENT = 1024;
const FRAGMENTS = 32;
/** Blocks smaller than this give no fragment. */
const MIN_BLOCK = 4 * FRAGMENT;
/**
 * Text seals to between these fractions of its size; what compresses
 * better is repetitive already (zeros, one pattern) and what compresses worse
 * is media or encrypted: neither is what a dictionary helps.
 */
const MIN_RATIO = 0.05;
const MAX_RATIO = 0.75;
/**
 * Bits per byte (order 0) of a fragment that may go in: text and records
 * have 3 to 6; random bytes 1 KiB long show about 7.7, a run of one byte 0.
 */
const MIN_BITS = 1;
const MAX_BITS = 6.5;
/** zstd reads a dictionary starting with its magic number as a trained one, not as raw content. */
const ZSTD_DICT_MAGIC = Buffer.from([0x37, 0xa4, 0x30, 0xec]);

const aad = (ref: string) => Buffer.from(`strata dictionary ${ref}`);

function refOf(keyring: Keyring, bytes: Uint8Array): Buffer {
  return blockId(keyring.idKey, bytes).subarray(0, DICT_REF_BYTES);
}

/** A dictionary sealed for storage, named by its ref (hex). */
export function sealDictionary(keyring: Keyring, bytes: Uint8Array): { dict: Dictionary; name: string; sealed: Buffer } {
  const ref = refOf(keyring, bytes);
  const name = ref.toString('hex');
  return { dict: { ref, bytes }, name, sealed: keyring.seal(bytes, aad(name)) };
}

export function openDictionary(keyring: Keyring, name: string, sealed: Uint8Array): Dictionary {
  const bytes = keyring.open(sealed, aad(name), `dictionary ${name}`);
  const ref = refOf(keyring, bytes);
  if (ref.toString('hex') !== name) throw integrity(`dictionary ${name}: content does not match its name`);
  return { ref, bytes };
}

/** A dictionary's sealed bytes from a store. */

/** Where a reader gets a dictionary's sealed bytes: the store, or a cache in front of it (passed over when `fresh`). */
export type DictionarySource = (name: string, fresh?: boolean) => Promise<Buffer>;

/** Dictionaries being fetched, by name: reads that need one at the same time (a restore's first files) share one fetch. */
const loading = new Map<string, Promise<Dictionary>>();

/** Fetches, opens and registers one dictionary (once per thread). */
export function loadDictionary(fetch: DictionarySource, keyring: Keyring, name: string): Promise<Dictionary> {
  const had = knownDictionary(name);
  if (had) return Promise.resolve(had);
  let load = loading.get(name);
  if (!load) {
    load = fetchAndOpen(fetch, keyring, name).finally(() => loading.delete(name));
    loading.set(name, load);
  }
  return load;
}

async function fetchAndOpen(fetch: DictionarySource, keyring: Keyring, name: string): Promise<Dictionary> {
  let dict: Dictionary;
  try {
    dict = openDictionary(keyring, name, await fetch(name));
  } catch (e) {
    // A damaged copy in a cache: fetched again from the store, not trusted.
    if (!(e instanceof StrataError) || e.code !== 'integrity') throw e;
    dict = openDictionary(keyring, name, await fetch(name, true));
  }
  addDictionary(dict);
  return dict;
}

/** Every dictionary of the repository, opened (names in order). */
export async function allDictionaries(storage: Storage, fetch: DictionarySource, keyring: Keyring): Promise<Dictionary[]> {
  const names: string[] = [];
  for await (const name of storage.list('dict')) names.push(name);
  names.sort();
  const out: Dictionary[] = [];
  for (const name of names) out.push(await loadDictionary(fetch, keyring, name));
  return out;
}

/** Runs a decode, loading the dictionary it lacks (if any) and running it again. */
export async function decodeWithDictionaries<T>(fetch: DictionarySource, keyring: Keyring, decode: () => T): Promise<T> {
  for (;;) {
    try {
      return decode();
    } catch (e) {
      if (!(e instanceof MissingDictionary) || knownDictionary(e.ref)) throw e;
      await loadDictionary(fetch, keyring, e.ref);
    }
  }
}

/** Collects fragments of the first text-like blocks a backup seals, until a dictionary can be made. */
export class DictionaryBuilder {
  private readonly fragments: Buffer[] = [];

  /** Offers a block and its sealed length; true once enough fragments are in. */
  offer(plain: Uint8Array, sealedLength: number): boolean {
    if (this.full || plain.length < MIN_BLOCK) return this.full;
    const ratio = sealedLength / plain.length;
    if (ratio < MIN_RATIO || ratio > MAX_RATIO) return false;
    // From a different place in each block, so fragments that start alike (a line's time stamp) vary.
    const at = ((this.fragments.length * 977) % (plain.length - FRAGMENT)) & ~63;
    const fragment = plain.subarray(at, at + FRAGMENT);
    // A block's ratio may be an average: random bytes next to zeros look like text by it.
    const bits = entropy(fragment);
    if (bits < MIN_BITS || bits > MAX_BITS) return false;
    this.fragments.push(Buffer.from(fragment));
    return this.full;
  }

  get full(): boolean {
    return this.fragments.length >= FRAGMENTS;
  }

  bytes(): Buffer {
    const bytes = Buffer.concat(this.fragments);
    return bytes.subarray(0, 4).equals(ZSTD_DICT_MAGIC) ? Buffer.concat([Buffer.from(' '), bytes]) : bytes;
  }
}

function entropy(bytes: Uint8Array): number {
  const counts = new Uint32Array(256);
  for (const b of bytes) counts[b]!++;
  let bits = 0;
  for (const c of counts) if (c > 0) bits -= (c / bytes.length) * Math.log2(c / bytes.length);
  return bits;
}
