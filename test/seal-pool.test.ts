/**
 * The sealing pool starts its worker threads only once a backup has more new
 * blocks than are worth them: the first INLINE_BYTES are sealed on the
 * calling thread. Both ways must give the same blocks: the right id, sealed
 * with the pool's level and dictionary, decoding to the bytes given.
 */
import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { blockId, Keyring } from '../src/crypto/keyring.js';
import { addDictionary, decodeBlock, MissingDictionary } from '../src/repo/blockcodec.js';
import { sealDictionary } from '../src/repo/dictionary.js';
import { INLINE_BYTES, SealPool } from '../src/workers/pool.js';

const MAX = 1 << 20;

/** Text that compresses, different in every block. */
function text(i: number, length: number): Buffer {
  const words = ['request', 'served', 'login', 'failed', 'retry', 'cache', 'miss', 'backend', 'timeout', String(i)];
  let s = '';
  for (let k = 0; s.length < length; k++) s += `${words[(k * 7 + i) % words.length]} ${k} `;
  return Buffer.from(s.slice(0, length));
}

describe('sealing pool', () => {
  it('seals a small backup on this thread, starts workers past INLINE_BYTES, and both seal alike', async () => {
    const keyring = Keyring.generate();
    const pool = new SealPool(keyring, 3, MAX, 8, 2);
    const { dict } = sealDictionary(keyring, text(999, 16 * 1024));
    pool.useDictionary(dict);
    const sealed = new Map<number, { id: Buffer; sealed: Buffer }>();
    const seal = (i: number, data: Buffer, id: Buffer | null) =>
      pool.seal(id, data, 'data', async (got, bytes) => {
        // Valid only until this settles: kept as a copy.
        sealed.set(i, { id: Buffer.from(got), sealed: Buffer.from(bytes) });
      });
    const blocks = Array.from({ length: 60 }, (_, i) => (i % 4 === 3 ? randomBytes(20_000) : text(i, 20_000)));
    try {
      const few = Math.floor(INLINE_BYTES / 20_000);
      // Some with their id known, some for the pool to hash.
      for (let i = 0; i < few; i++) await seal(i, blocks[i]!, i % 2 ? blockId(keyring.idKey, blocks[i]!) : null);
      expect(pool.started).toBe(false);
      await Promise.all(blocks.slice(few).map((b, k) => seal(few + k, b, k % 2 ? blockId(keyring.idKey, b) : null)));
      expect(pool.started).toBe(true);
    } finally {
      await pool.close();
    }
    expect(sealed.size).toBe(blocks.length);
    // Text blocks name the dictionary, wherever they were sealed: this thread has not been given it yet.
    expect(() => decodeBlock(keyring.encKey, keyring.idKey, sealed.get(0)!.id, sealed.get(0)!.sealed, MAX)).toThrow(MissingDictionary);
    expect(() => decodeBlock(keyring.encKey, keyring.idKey, sealed.get(blocks.length - 2)!.id, sealed.get(blocks.length - 2)!.sealed, MAX)).toThrow(MissingDictionary);
    addDictionary(dict);
    blocks.forEach((b, i) => {
      const s = sealed.get(i)!;
      expect(s.id.equals(blockId(keyring.idKey, b))).toBe(true);
      expect(decodeBlock(keyring.encKey, keyring.idKey, s.id, s.sealed, MAX).equals(b)).toBe(true);
      if (i % 4 !== 3) expect(s.sealed.length).toBeLessThan(b.length / 2);
    });
  });

  it('a pool given no blocks starts no worker', async () => {
    const pool = new SealPool(Keyring.generate(), 3, MAX);
    pool.reserve();
    pool.spareCore();
    expect(pool.started).toBe(false);
    await pool.close();
  });
});
