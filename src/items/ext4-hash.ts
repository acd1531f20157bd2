/**
 * What ext4 checks and indexes its metadata with: CRC-32C as the kernel
 * computes it (no inversion before or after: the seed is the running
 * value), CRC-16 for group descriptors of file systems with uninit_bg but
 * no metadata_csum, and the hashes of names in a directory's htree (the
 * legacy hash, half-MD4 and TEA, each with signed or unsigned chars), as
 * the on-disk format describes them.
 */

const CRC32C = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

/** CRC-32C of `data` continuing from `crc`, without the final inversion (ext4's ext4_chksum). */
export function crc32cRaw(crc: number, data: Uint8Array): number {
  let c = crc >>> 0;
  for (let i = 0; i < data.length; i++) c = CRC32C[(c ^ data[i]!) & 0xff]! ^ (c >>> 8);
  return c >>> 0;
}

const CRC16 = (() => {
  const t = new Uint16Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0xa001 : c >>> 1;
    t[n] = c;
  }
  return t;
})();

/** CRC-16 (polynomial 0x8005, reflected) continuing from `crc`. */
export function crc16(crc: number, data: Uint8Array): number {
  let c = crc & 0xffff;
  for (let i = 0; i < data.length; i++) c = (CRC16[(c ^ data[i]!) & 0xff]! ^ (c >>> 8)) & 0xffff;
  return c;
}

export function le32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n >>> 0);
  return b;
}

/** Hash versions of a dx_root (after the superblock's unsigned flag is applied). */
export const HASH = { legacy: 0, halfMd4: 1, tea: 2, legacyUnsigned: 3, halfMd4Unsigned: 4, teaUnsigned: 5 } as const;

const DEFAULT_SEED = [0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476];

/** The hash of a name in an htree of this version, low bit clear; undefined for a version not known here. */
export function nameHash(name: Uint8Array, version: number, seed: readonly number[]): number | undefined {
  const unsigned = version >= 3;
  const buf = seed.some((s) => s !== 0) ? seed.map((s) => s >>> 0) : [...DEFAULT_SEED];
  let hash: number;
  switch (version) {
    case HASH.legacy:
    case HASH.legacyUnsigned:
      hash = legacyHash(name, unsigned);
      break;
    case HASH.halfMd4:
    case HASH.halfMd4Unsigned:
      for (let at = 0; at < name.length; at += 32) halfMd4(buf, words(name.subarray(at), name.length - at, 8, unsigned));
      hash = buf[1]!;
      break;
    case HASH.tea:
    case HASH.teaUnsigned:
      for (let at = 0; at < name.length; at += 16) tea(buf, words(name.subarray(at), name.length - at, 4, unsigned));
      hash = buf[0]!;
      break;
    default:
      return undefined;
  }
  hash = (hash & ~1) >>> 0;
  // The largest value marks the end of a directory for readdir: never a name's hash.
  if (hash === 0xfffffffe) hash = 0xfffffffc;
  return hash;
}

function legacyHash(name: Uint8Array, unsigned: boolean): number {
  let h0 = 0x12a3fe2d;
  let h1 = 0x37abe8f9;
  for (const byte of name) {
    const c = unsigned || byte < 128 ? byte : byte - 256;
    let h = (h1 + ((h0 ^ Math.imul(c, 7152373)) >>> 0)) >>> 0;
    if (h & 0x80000000) h = (h - 0x7fffffff) >>> 0;
    h1 = h0;
    h0 = h;
  }
  return (h0 << 1) >>> 0;
}

/** A piece of a name as `num` 32-bit words, padded with its length, as the hashes take it. */
function words(msg: Uint8Array, remaining: number, num: number, unsigned: boolean): number[] {
  const len = remaining;
  let pad = (len | (len << 8)) >>> 0;
  pad = (pad | (pad << 16)) >>> 0;
  let val = pad;
  const out: number[] = [];
  const n = Math.min(len, num * 4);
  for (let i = 0; i < n; i++) {
    const byte = msg[i]!;
    const c = unsigned || byte < 128 ? byte : byte - 256;
    val = (c + ((val << 8) >>> 0)) >>> 0;
    if (i % 4 === 3) {
      out.push(val);
      val = pad;
    }
  }
  if (out.length < num) out.push(val);
  while (out.length < num) out.push(pad);
  return out;
}

const rol = (x: number, s: number) => ((x << s) | (x >>> (32 - s))) >>> 0;

function halfMd4(buf: number[], x: number[]): void {
  let [a, b, c, d] = buf as [number, number, number, number];
  const F = (x1: number, y: number, z: number) => (z ^ (x1 & (y ^ z))) >>> 0;
  const G = (x1: number, y: number, z: number) => ((x1 & y) + ((x1 ^ y) & z)) >>> 0;
  const H = (x1: number, y: number, z: number) => (x1 ^ y ^ z) >>> 0;
  const K2 = 0x5a827999;
  const K3 = 0x6ed9eba1;
  const r = (f: typeof F, p: number, q: number, s: number, t: number, w: number, k: number, sh: number) => rol((p + f(q, s, t) + ((w + k) >>> 0)) >>> 0, sh);
  a = r(F, a, b, c, d, x[0]!, 0, 3);
  d = r(F, d, a, b, c, x[1]!, 0, 7);
  c = r(F, c, d, a, b, x[2]!, 0, 11);
  b = r(F, b, c, d, a, x[3]!, 0, 19);
  a = r(F, a, b, c, d, x[4]!, 0, 3);
  d = r(F, d, a, b, c, x[5]!, 0, 7);
  c = r(F, c, d, a, b, x[6]!, 0, 11);
  b = r(F, b, c, d, a, x[7]!, 0, 19);
  a = r(G, a, b, c, d, x[1]!, K2, 3);
  d = r(G, d, a, b, c, x[3]!, K2, 5);
  c = r(G, c, d, a, b, x[5]!, K2, 9);
  b = r(G, b, c, d, a, x[7]!, K2, 13);
  a = r(G, a, b, c, d, x[0]!, K2, 3);
  d = r(G, d, a, b, c, x[2]!, K2, 5);
  c = r(G, c, d, a, b, x[4]!, K2, 9);
  b = r(G, b, c, d, a, x[6]!, K2, 13);
  a = r(H, a, b, c, d, x[3]!, K3, 3);
  d = r(H, d, a, b, c, x[7]!, K3, 9);
  c = r(H, c, d, a, b, x[2]!, K3, 11);
  b = r(H, b, c, d, a, x[6]!, K3, 15);
  a = r(H, a, b, c, d, x[1]!, K3, 3);
  d = r(H, d, a, b, c, x[5]!, K3, 9);
  c = r(H, c, d, a, b, x[0]!, K3, 11);
  b = r(H, b, c, d, a, x[4]!, K3, 15);
  buf[0] = (buf[0]! + a) >>> 0;
  buf[1] = (buf[1]! + b) >>> 0;
  buf[2] = (buf[2]! + c) >>> 0;
  buf[3] = (buf[3]! + d) >>> 0;
}

function tea(buf: number[], x: number[]): void {
  let sum = 0;
  let b0 = buf[0]!;
  let b1 = buf[1]!;
  const [a, b, c, d] = x as [number, number, number, number];
  for (let n = 0; n < 16; n++) {
    sum = (sum + 0x9e3779b9) >>> 0;
    b0 = (b0 + ((((((b1 << 4) >>> 0) + a) >>> 0) ^ ((b1 + sum) >>> 0) ^ (((b1 >>> 5) + b) >>> 0)) >>> 0)) >>> 0;
    b1 = (b1 + ((((((b0 << 4) >>> 0) + c) >>> 0) ^ ((b0 + sum) >>> 0) ^ (((b0 >>> 5) + d) >>> 0)) >>> 0)) >>> 0;
  }
  buf[0] = (buf[0]! + b0) >>> 0;
  buf[1] = (buf[1]! + b1) >>> 0;
}
