/**
 * The sealing pool starts its worker threads only once a backup has more new
 * blocks than are worth them: the first INLINE_BYTES are sealed on the
 * calling thread. Both ways must give the same blocks: the right id, sealed
 * with the pool's level and dictionary, decoding to the bytes given. A
 * backup keeps many small blocks on their way at once (a tree of small files
 * otherwise leaves its walk waiting), and no more bytes than the pool's budget.
 */
import { randomBytes } from 'node:crypto';
import { describe, expect, it, vi } from 'vitest';
import { blockId, Keyring } from '../src/crypto/keyring.js';
import { emptyResult } from '../src/engine/backup-context.js';
import { BlockSink } from '../src/engine/block-sink.js';
import { addDictionary, decodeBlock, MissingDictionary } from '../src/repo/blockcodec.js';
import { sealDictionary } from '../src/repo/dictionary.js';
import { INLINE_BYTES, SealPool } from '../src/workers/pool.js';
import { makeRepo } from './helpers.js';

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

  it('keeps many small blocks in flight, and no more bytes than its budget', async () => {
    const repo = await makeRepo();
    const pool = new SealPool(repo.keyring, 3, repo.chunker.max);
    const packer = repo.newPacker();
    // The real packer, its adds held at a gate: what is in flight is what waits there.
    let held = 0;
    let heldBytes = 0;
    let most = 0;
    let mostBytes = 0;
    let open!: () => void;
    let gate!: Promise<void>;
    const close = () => (gate = new Promise<void>((resolve) => (open = resolve)));
    close();
    const add = packer.add.bind(packer);
    packer.add = async (id, kind, sealed, size) => {
      held++;
      heldBytes += size;
      most = Math.max(most, held);
      mostBytes = Math.max(mostBytes, heldBytes);
      await gate;
      held--;
      heldBytes -= size;
      return add(id, kind, sealed, size);
    };
    const sink = new BlockSink(repo, 3, packer, pool, emptyResult('test', null, Date.now()), undefined, () => {});
    const settled = async () => {
      for (let last = -1; last !== most; ) {
        last = most;
        await new Promise((resolve) => setTimeout(resolve, 200));
      }
    };
    try {
      // 8 KiB blocks: the budget (a few large blocks' worth) holds far more of them than 32.
      const small = Array.from({ length: 400 }, () => randomBytes(8 * 1024));
      let stored = 0;
      const feeding = (async () => {
        for (const b of small) await sink.storeChunk(b).then(() => stored++);
      })();
      await settled();
      expect(most).toBe(Math.min(pool.slots, Math.floor(pool.budget / (8 * 1024))));
      expect(most).toBeGreaterThan(100);
      expect(stored).toBeLessThan(small.length);
      open();
      await feeding;
      await sink.drain();
      // Large blocks: the bytes bind, not the count.
      const large = Array.from({ length: 40 }, () => randomBytes(repo.chunker.max));
      most = 0;
      mostBytes = 0;
      close();
      const feedingLarge = (async () => {
        for (const b of large) await sink.storeChunk(b);
      })();
      await settled();
      expect(mostBytes).toBe(pool.budget);
      expect(most).toBe(pool.budget / repo.chunker.max);
      open();
      await feedingLarge;
      await sink.drain();
      await packer.flush();
      for (const b of [...small, ...large]) expect(repo.service.hasBlock(blockId(repo.keyring.idKey, b))).toBe(true);
    } finally {
      open();
      await pool.close();
    }
  });

  it("a walk's trees are sealed on the workers when they fit a slot, here when larger; all read back", async () => {
    const repo = await makeRepo();
    const pool = new SealPool(repo.keyring, 3, repo.chunker.max);
    const packer = repo.newPacker();
    const sink = new BlockSink(repo, 3, packer, pool, emptyResult('test', null, Date.now()), undefined, () => {});
    const sealed: number[] = [];
    const through = SealPool.prototype.seal;
    const seal = vi.spyOn(SealPool.prototype, 'seal').mockImplementation(function (this: SealPool, id, data, kind, consume) {
      sealed.push(data.length);
      return through.call(this, id, data, kind, consume);
    });
    try {
      const listing = (n: number) => Buffer.from(JSON.stringify({ entries: Array.from({ length: n }, (_, i) => ({ name: `message-${i}-${'x'.repeat(40)}`, type: 'file', size: i })) }));
      const small = listing(20);
      const large = listing(3000);
      expect(large.length).toBeGreaterThan(pool.maxBlock);
      const ids = [await sink.storeTree(small), await sink.storeTree(large)];
      expect(sealed).toEqual([small.length]);
      await sink.drain();
      await packer.flush();
      expect((await repo.readBlob(ids[0]!, 'tree')).equals(small)).toBe(true);
      expect((await repo.readBlob(ids[1]!, 'tree')).equals(large)).toBe(true);
      expect([...sink.blobs]).toEqual(ids.map((id) => id.toString('hex')));
    } finally {
      seal.mockRestore();
      await pool.close();
    }
  });
});
