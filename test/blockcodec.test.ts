/**
 * How a block is stored, byte for byte: the sealed message is one flag byte
 * (0 raw, 1 zstd) and the body, with the block id as associated data. Pinned
 * here because every repository ever written depends on it.
 */
import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { decompress } from 'zstd-napi';
import { blockId, open, seal } from '../src/crypto/keyring.js';
import { decodeBlock, encodeBlock } from '../src/repo/blockcodec.js';

const encKey = Buffer.alloc(32, 1);
const idKey = Buffer.alloc(32, 2);

describe('block encoding', () => {
  it('seals parts as the one message they make together', () => {
    const aad = Buffer.from('aad');
    const parts = [Buffer.from([1]), randomBytes(1000), Buffer.alloc(0), randomBytes(7)];
    expect(open(encKey, seal(encKey, parts, aad), aad, 'test').equals(Buffer.concat(parts))).toBe(true);
  });

  it('gives every sealed message a nonce of its own, across many seals', () => {
    // Nonces are drawn a page at a time: a reuse (same nonce twice, or one changed under a sealed message) would show here.
    const aad = Buffer.from('aad');
    const plain = Buffer.from('the same message every time');
    const sealed = Array.from({ length: 2000 }, () => seal(encKey, plain, aad));
    expect(new Set(sealed.map((s) => s.subarray(0, 12).toString('hex'))).size).toBe(sealed.length);
    for (const s of sealed) expect(open(encKey, s, aad, 'test').equals(plain)).toBe(true);
  });

  it('is a flag byte and the zstd frame or raw bytes, sealed with the id as associated data', () => {
    const text = Buffer.from('a line of text that repeats\n'.repeat(2000));
    const noise = randomBytes(20_000);
    for (const [plain, flag] of [
      [text, 1],
      [noise, 0],
    ] as const) {
      const id = blockId(idKey, plain);
      const sealed = encodeBlock(encKey, id, plain, 3);
      const framed = open(encKey, sealed, id, 'block');
      expect(framed[0]).toBe(flag);
      expect((flag === 1 ? decompress(framed.subarray(1)) : framed.subarray(1)).equals(plain)).toBe(true);
      expect(decodeBlock(encKey, idKey, id, sealed, 1 << 20).equals(plain)).toBe(true);
      // Under another id it does not open.
      expect(() => decodeBlock(encKey, idKey, blockId(idKey, Buffer.from('other')), sealed, 1 << 20)).toThrow(/authentication failed/);
    }
  });
});
