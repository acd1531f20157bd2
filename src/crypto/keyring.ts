/**
 * The keyring: every key strata uses, derived from one random master key.
 *
 * - seal/open: AES-256-GCM, a random 96-bit nonce per message, with
 *   associated data binding a sealed object to where it belongs (a block to
 *   its id), so objects cannot be swapped.
 * - blockId: HMAC-SHA-256 of a block's plaintext under a key of its own, so
 *   ids deduplicate without revealing anything about content.
 * - pathId / lineageId: keyed ids for what the catalog must index (a file's
 *   identity across snapshots, a backup's host and paths) without names.
 * - chunkerSeed: makes chunk boundaries depend on the key (no fingerprinting).
 */
import { createCipheriv, createDecipheriv, createHash, createHmac, hkdfSync, randomBytes, randomFillSync, type Hash } from 'node:crypto';
import { integrity } from '../errors.js';
import { nameBytes } from '../util/names.js';

export const MASTER_KEY_BYTES = 32;
const NONCE = 12;
const TAG = 16;

function derive(master: Uint8Array, label: string): Buffer {
  return Buffer.from(hkdfSync('sha256', master, Buffer.alloc(0), `strata ${label}`, 32));
}

export class Keyring {
  readonly encKey: Buffer;
  readonly idKey: Buffer;
  private readonly pathKey: Buffer;
  private readonly lineageKey: Buffer;
  readonly chunkerSeed: Buffer;
  /** The name of the key file a password opened this with (none for an exported key). */
  keyFile?: string;

  constructor(readonly master: Buffer) {
    if (master.length !== MASTER_KEY_BYTES) throw new Error('master key must be 32 bytes');
    this.encKey = derive(master, 'encryption');
    this.idKey = derive(master, 'block id');
    this.pathKey = derive(master, 'path id');
    this.lineageKey = derive(master, 'lineage id');
    this.chunkerSeed = derive(master, 'chunker');
  }

  static generate(): Keyring {
    return new Keyring(randomBytes(MASTER_KEY_BYTES));
  }

  blockId(data: Uint8Array): Buffer {
    return blockId(this.idKey, data);
  }

  /**
   * Whether a block of `length` bytes with this id holds zeros only: its id
   * is then the id of that many zeros, so a reader has its bytes without
   * fetching it (the id comes from a sealed TOC; an HMAC cannot be matched
   * by other bytes).
   */
  isZeroBlock(id: Uint8Array, length: number): boolean {
    // No block is longer than the largest chunker's max (4 x 16 MiB): a longer claim is no block of zeros to compute.
    return length > 0 && length <= MAX_ZERO_BLOCK && this.zeroBlockId(length).equals(id);
  }

  /**
   * blockId of `length` zeros, from the HMAC's inner hash kept at every 4 KiB
   * of zeros up to 256 KiB (a few microseconds each), beyond that hashed on
   * from the last one kept.
   */
  zeroBlockId(length: number): Buffer {
    let id = this.zeroIds.get(length);
    if (id) return id;
    const steps = Math.floor(length / ZERO_STEP);
    if (this.zeroStates.length === 0) this.zeroStates.push(createHash('sha256').update(padKey(this.idKey, 0x36)));
    while (this.zeroStates.length <= Math.min(steps, ZERO_STATES)) this.zeroStates.push(this.zeroStates[this.zeroStates.length - 1]!.copy().update(ZERO_RUN));
    const state = this.zeroStates[Math.min(steps, ZERO_STATES)]!.copy();
    for (let k = ZERO_STATES; k < steps; k++) state.update(ZERO_RUN);
    const inner = state.update(ZERO_RUN.subarray(0, length % ZERO_STEP)).digest();
    id = createHash('sha256').update(padKey(this.idKey, 0x5c)).update(inner).digest();
    if (this.zeroIds.size >= 4096) this.zeroIds.clear();
    this.zeroIds.set(length, id);
    return id;
  }

  private readonly zeroIds = new Map<number, Buffer>();
  /** The inner hash of the block-id HMAC after k * ZERO_STEP zeros, for each k asked so far. */
  private readonly zeroStates: Hash[] = [];

  /** blockId of a blob fed in pieces (one never held whole). */
  blockIdOfPieces(): { update(piece: string): void; digest(): Buffer } {
    const h = createHmac('sha256', this.idKey);
    return { update: (piece) => void h.update(piece, 'utf8'), digest: () => h.digest() };
  }

  pathId(absPath: string): Buffer {
    // Bytes, not text: two names that differ only in bytes that are not UTF-8 are two files.
    return createHmac('sha256', this.pathKey).update(nameBytes(absPath)).digest();
  }

  lineageId(host: string, paths: readonly string[]): Buffer {
    return createHmac('sha256', this.lineageKey)
      .update(JSON.stringify([host, [...paths].sort()]), 'utf8')
      .digest();
  }

  seal(plain: Uint8Array, aad: Uint8Array): Buffer {
    return seal(this.encKey, plain, aad);
  }

  open(sealed: Uint8Array, aad: Uint8Array, what: string): Buffer {
    return open(this.encKey, sealed, aad, what);
  }

  sealJson(value: unknown, aad: string): Buffer {
    return this.seal(Buffer.from(JSON.stringify(value), 'utf8'), Buffer.from(aad));
  }

  openJson<T>(sealed: Uint8Array, aad: string, what: string): T {
    return JSON.parse(this.open(sealed, Buffer.from(aad), what).toString('utf8')) as T;
  }
}

const ZERO_STEP = 4096;
const ZERO_RUN = Buffer.alloc(ZERO_STEP);
/** Inner hashes kept: up to 256 KiB of zeros. */
const ZERO_STATES = 64;
const MAX_ZERO_BLOCK = 64 * 1024 * 1024;

/** An HMAC-SHA-256 key (at most a SHA-256 block) padded to 64 bytes and xored with `pad` (RFC 2104). */
function padKey(key: Uint8Array, pad: number): Buffer {
  const out = Buffer.alloc(64, pad);
  for (let i = 0; i < key.length; i++) out[i]! ^= key[i]!;
  return out;
}

export function blockId(idKey: Uint8Array, data: Uint8Array): Buffer {
  return createHmac('sha256', idKey).update(data).digest();
}

/** Nonces come from the system's CSPRNG a page at a time: a call for each costs ~10 µs, about what sealing a small tree does. */
const nonces = Buffer.alloc(NONCE * 341);
let noncesUsed = nonces.length;

/** A fresh random nonce, valid until the next call (cipher and output copy it). */
function nextNonce(): Buffer {
  if (noncesUsed === nonces.length) {
    randomFillSync(nonces);
    noncesUsed = 0;
  }
  return nonces.subarray(noncesUsed, (noncesUsed += NONCE));
}

/** Seals the concatenation of `parts` (several, so a caller need not join its header and body first). */
export function seal(key: Uint8Array, plain: Uint8Array | readonly Uint8Array[], aad: Uint8Array): Buffer {
  const nonce = nextNonce();
  const cipher = createCipheriv('aes-256-gcm', key, nonce);
  cipher.setAAD(aad);
  const bodies = plain instanceof Uint8Array ? [cipher.update(plain)] : plain.map((p) => cipher.update(p));
  const final = cipher.final();
  return Buffer.concat([nonce, ...bodies, final, cipher.getAuthTag()]);
}

export function open(key: Uint8Array, sealed: Uint8Array, aad: Uint8Array, what: string): Buffer {
  if (sealed.length < NONCE + TAG) throw integrity(`${what}: sealed object is too short (${sealed.length} bytes)`);
  const nonce = sealed.subarray(0, NONCE);
  const tag = sealed.subarray(sealed.length - TAG);
  const decipher = createDecipheriv('aes-256-gcm', key, nonce);
  decipher.setAAD(aad);
  decipher.setAuthTag(tag);
  try {
    const body = decipher.update(sealed.subarray(NONCE, sealed.length - TAG));
    const final = decipher.final();
    // GCM's final is empty: joining would only copy the body.
    return final.length === 0 ? body : Buffer.concat([body, final]);
  } catch {
    throw integrity(`${what}: authentication failed (damaged or not ours)`);
  }
}
