/**
 * The Storage contract (src/storage/storage.ts): what every driver must do,
 * whatever carries the bytes. Run against a directory, a strata server and
 * the retry wrapper in storage-contract.test.ts, and against S3 (a real Ceph
 * RGW) in s3.test.ts.
 */
import { createHash } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { StorageError, type Storage } from '../src/storage/storage.js';
import { openThreadReader } from '../src/storage/thread-reader.js';
import { Rng } from './helpers.js';

export const hex = (s: string) => createHash('sha256').update(s).digest('hex');

/** putStream through the flaky store: made again (with a new source) when the store failed before taking it. */
async function retryStream<T>(op: () => Promise<T>): Promise<T> {
  for (let i = 0; ; i++) {
    try {
      return await op();
    } catch (e) {
      if (i > 2 || !(e instanceof StorageError) || !/injected/.test(e.message)) throw e;
    }
  }
}

/** What every Storage must do, whatever carries the bytes. */
export function storageContract(label: string, make: () => Promise<Storage>): void {
  describe(`Storage contract: ${label}`, () => {
    let st: Storage;
    const h = (i: number) => ({ kind: 'pack' as const, name: hex(`${label} ${i}`) });
    const rng = new Rng(9);
    const a = rng.bytes(70_000);

    beforeAll(async () => {
      st = await make();
    });
    afterAll(async () => {
      await st.close();
    });

    it('put then get; parts are written in order; the same bytes again are fine', async () => {
      await st.put(h(1), a);
      expect((await st.get(h(1))).equals(a)).toBe(true);
      const parts = [a.subarray(0, 1), a.subarray(1, 40_000), new Uint8Array(0), a.subarray(40_000)];
      await st.put(h(2), parts);
      expect((await st.get(h(2))).equals(a)).toBe(true);
      await st.put(h(1), a);
      await st.put(h(9), new Uint8Array(0));
      expect((await st.get(h(9))).length).toBe(0);
    });

    it('read returns exactly the range asked for, or short_read', async () => {
      expect((await st.read(h(1), 0, 10)).equals(a.subarray(0, 10))).toBe(true);
      expect((await st.read(h(1), 12_345, 20_000)).equals(a.subarray(12_345, 32_345))).toBe(true);
      expect((await st.read(h(1), a.length - 1, 1)).equals(a.subarray(a.length - 1))).toBe(true);
      expect((await st.read(h(1), a.length, 0)).length).toBe(0);
      for (const [off, len] of [
        [a.length - 5, 10],
        [a.length, 1],
        [a.length + 10, 0],
        [-1, 5],
        [0, Number.MAX_SAFE_INTEGER],
      ] as const) {
        const e = await st.read(h(1), off, len).catch((x: unknown) => x);
        expect(e, `${off} ${len}`).toBeInstanceOf(StorageError);
        expect((e as StorageError).code).toBe('short_read');
      }
    });

    it('many reads at once across more objects than stay open: every one returns its bytes', async () => {
      const objects = Array.from({ length: 40 }, (_, i) => ({ h: h(100 + i), bytes: rng.bytes(5000) }));
      for (const o of objects) await st.put(o.h, o.bytes);
      const reads = Array.from({ length: 400 }, (_, i) => {
        const o = objects[(i * 7) % objects.length]!;
        const off = (i * 13) % 4000;
        return st.read(o.h, off, 1000).then((b) => b.equals(o.bytes.subarray(off, off + 1000)));
      });
      expect((await Promise.all(reads)).every(Boolean)).toBe(true);
      for (const o of objects) await st.delete(o.h);
    });

    it('missing objects: not_found from get, read and stat; exists is false', async () => {
      const missing = h(404);
      for (const op of [() => st.get(missing), () => st.read(missing, 0, 1), () => st.stat(missing)]) {
        const e = await op().catch((x: unknown) => x);
        expect(e).toBeInstanceOf(StorageError);
        expect((e as StorageError).code).toBe('not_found');
      }
      expect(await st.exists(missing)).toBe(false);
      expect(await st.exists(h(1))).toBe(true);
    });

    it('stat gives the size and a recent time', async () => {
      const { size, mtimeMs } = await st.stat(h(1));
      expect(size).toBe(a.length);
      expect(Math.abs(mtimeMs - Date.now())).toBeLessThan(60_000);
    });

    it('list yields the names of one kind; config and keys', async () => {
      const names: string[] = [];
      for await (const n of st.list('pack')) names.push(n);
      expect(names.sort()).toEqual([h(1).name, h(2).name, h(9).name].sort());
      await st.put({ kind: 'config', name: 'config' }, Buffer.from('{}'));
      await st.put({ kind: 'key', name: 'aaaabbbbccccdddd' }, Buffer.from('{"k":1}'));
      const keys: string[] = [];
      for await (const n of st.list('key')) keys.push(n);
      expect(keys).toEqual(['aaaabbbbccccdddd']);
      const configs: string[] = [];
      for await (const n of st.list('config')) configs.push(n);
      expect(configs).toEqual(['config']);
      expect((await st.get({ kind: 'config', name: 'config' })).toString()).toBe('{}');
    });

    it('an object is written once: other bytes under a taken name are refused with conflict, and the first stay', async () => {
      const name = h(7);
      await st.put(name, Buffer.from('first'));
      const e = await st.put(name, [Buffer.from('sec'), Buffer.from('ond')]).catch((x: unknown) => x);
      expect(e).toMatchObject({ code: 'conflict' });
      expect((await st.get(name)).toString()).toBe('first');
      // The same bytes again (a retried upload) are fine.
      await st.put(name, [Buffer.from('fir'), Buffer.from('st')]);
      await st.delete(name);
    });

    it('putStream: created, identical, conflict; a source that fails or falls short leaves nothing', async () => {
      const name = h(8);
      const from = async function* (...parts: Buffer[]) {
        yield* parts;
      };
      const bytes = rng.bytes(100_000);
      expect(await retryStream(() => st.putStream(name, from(bytes.subarray(0, 10), bytes.subarray(10)), bytes.length))).toBe('created');
      expect((await st.get(name)).equals(bytes)).toBe(true);
      expect(await retryStream(() => st.putStream(name, from(bytes), bytes.length))).toBe('identical');
      expect(await retryStream(() => st.putStream(name, from(rng.bytes(100_000)), bytes.length))).toBe('conflict');
      expect((await st.get(name)).equals(bytes)).toBe(true);
      const short = h(10);
      await expect(retryStream(() => st.putStream(short, from(bytes.subarray(0, 5)), 10))).rejects.toBeInstanceOf(StorageError);
      const failing = async function* () {
        yield bytes.subarray(0, 5);
        throw new Error('the client went away');
      };
      await expect(retryStream(() => st.putStream(short, failing(), 10))).rejects.toThrow();
      expect(await st.exists(short)).toBe(false);
      await st.delete(name);
    });

    it('stream gives exactly the range asked for, in pieces; past the end is short_read', async () => {
      const big = h(11);
      const bytes = rng.bytes(9_000_000);
      await st.put(big, bytes);
      const collect = async (start: number, end: number) => {
        const parts: Buffer[] = [];
        for await (const p of st.stream(big, start, end)) parts.push(p);
        return Buffer.concat(parts);
      };
      expect((await collect(0, bytes.length - 1)).equals(bytes)).toBe(true);
      expect((await collect(4_194_300, 8_388_700)).equals(bytes.subarray(4_194_300, 8_388_701))).toBe(true);
      expect((await collect(5, 5)).equals(bytes.subarray(5, 6))).toBe(true);
      await expect(collect(0, bytes.length)).rejects.toMatchObject({ code: 'short_read' });
      await expect(collect(0, 10).then(() => st.stream(h(404), 0, 1)[Symbol.asyncIterator]().next())).rejects.toMatchObject({ code: 'not_found' });
      await st.delete(big);
    });

    it('a thread reader, where a store has one, reads exact ranges, and fails on a range past the end or a missing object', async () => {
      const spec = st.threadReader?.();
      if (!spec) return;
      const name = h(12);
      const bytes = rng.bytes(3000);
      await st.put(name, bytes);
      const reader = openThreadReader(spec);
      try {
        expect(reader.read(name, 0, 3000).equals(bytes)).toBe(true);
        expect(reader.read(name, 1000, 17).equals(bytes.subarray(1000, 1017))).toBe(true);
        expect(() => reader.read(name, 2990, 11)).toThrow(expect.objectContaining({ code: 'short_read' }));
        expect(() => reader.read(h(405), 0, 1)).toThrow(expect.objectContaining({ code: 'not_found' }));
      } finally {
        reader.close();
      }
      await st.delete(name);
    });

    it('delete removes; deleting again is not an error', async () => {
      await st.delete(h(2));
      expect(await st.exists(h(2))).toBe(false);
      await st.delete(h(2));
      expect(await st.sweepTemporary(0)).toBe(0);
    });
  });
}

