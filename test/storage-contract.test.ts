/**
 * The Storage contract (src/storage/storage.ts), run against every driver:
 * a directory, a strata server over HTTP, and the retry wrapper over a store
 * that fails now and then. A new driver (S3) joins the list at the end.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { createHash } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HttpStorage } from '../src/storage/http.js';
import { LocalStorage } from '../src/storage/local.js';
import { locate } from '../src/storage/location.js';
import { openThreadReader } from '../src/storage/thread-reader.js';
import { RetryingStorage, transient } from '../src/storage/retry.js';
import { StorageError, type Handle, type Kind, type Storage } from '../src/storage/storage.js';
import { Rng, tempDir } from './helpers.js';
import { serve, token } from './server-helpers.js';

const hex = (s: string) => createHash('sha256').update(s).digest('hex');

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
function storageContract(label: string, make: () => Promise<Storage>): void {
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


storageContract('LocalStorage', async () => new LocalStorage(path.join(tempDir(), 'local')));

storageContract('HttpStorage (strata serve)', async () => {
  const dir = path.join(tempDir(), 'srv');
  const tok = token(dir, 'c', 'admin');
  const s = await serve(dir);
  return new HttpStorage(s.url, { token: tok });
});

/**
 * A directory that fails every third call with a transient error (as a
 * network store does now and then); a call that failed once passes when it
 * is made again, so a retry gets through however calls interleave.
 */
class Flaky implements Storage {
  calls = 0;
  private readonly failed = new Set<string>();
  constructor(private readonly inner: Storage) {}
  get location(): string {
    return this.inner.location;
  }
  private trip(...what: unknown[]): void {
    const key = JSON.stringify(what);
    if (++this.calls % 3 !== 0 || this.failed.has(key)) return;
    this.failed.add(key);
    throw new StorageError('io', 'connection reset (injected)');
  }
  async put(h: Handle, data: Uint8Array | readonly Uint8Array[]) {
    this.trip('put', h, data.length);
    return this.inner.put(h, data);
  }
  async putStream(h: Handle, source: AsyncIterable<Uint8Array>, size: number) {
    this.trip('putStream', h, size);
    return this.inner.putStream(h, source, size);
  }
  async *stream(h: Handle, start: number, end: number) {
    this.trip('stream', h, start, end);
    yield* this.inner.stream(h, start, end);
  }
  async get(h: Handle) {
    this.trip('get', h);
    return this.inner.get(h);
  }
  async read(h: Handle, offset: number, length: number) {
    this.trip('read', h, offset, length);
    return this.inner.read(h, offset, length);
  }
  async stat(h: Handle) {
    this.trip('stat', h);
    return this.inner.stat(h);
  }
  async exists(h: Handle) {
    this.trip('exists', h);
    return this.inner.exists(h);
  }
  async *list(kind: Kind) {
    this.trip('list', kind);
    yield* this.inner.list(kind);
  }
  async delete(h: Handle) {
    this.trip('delete', h);
    return this.inner.delete(h);
  }
  async sweepTemporary(olderThanMs: number) {
    this.trip('sweepTemporary', olderThanMs);
    return this.inner.sweepTemporary(olderThanMs);
  }
  close() {
    return this.inner.close();
  }
}

storageContract('RetryingStorage over a store that fails every third call', async () => new RetryingStorage(new Flaky(new LocalStorage(path.join(tempDir(), 'flaky'))), { attempts: 3, delayMs: 1 }));

describe('RetryingStorage', () => {
  it('tries transient failures again, up to its attempts, and never an answer', async () => {
    const flaky = new Flaky(new LocalStorage(path.join(tempDir(), 'flaky')));
    const st = new RetryingStorage(flaky, { attempts: 3, delayMs: 1 });
    const h = { kind: 'pack' as const, name: hex('retry') };
    for (let i = 0; i < 10; i++) await st.put({ kind: 'pack', name: hex(`r${i}`) }, Buffer.from(`${i}`));
    expect(st.retried).toBeGreaterThan(0);
    // Without the wrapper the same calls fail.
    const bare = new Flaky(new LocalStorage(path.join(tempDir(), 'bare')));
    const failures = await Promise.all(Array.from({ length: 6 }, (_, i) => bare.put({ kind: 'pack', name: hex(`b${i}`) }, Buffer.from('x')).then(() => 0, () => 1)));
    expect(failures.reduce((a: number, b: number) => a + b, 0)).toBeGreaterThan(0);
    // An answer is final: not found is not tried again.
    const before = flaky.calls;
    await expect(st.get(h)).rejects.toMatchObject({ code: 'not_found' });
    expect(flaky.calls - before).toBeLessThanOrEqual(2);
    // A store that keeps failing gives up after its attempts.
    const dead = new RetryingStorage(
      {
        ...new LocalStorage(tempDir()),
        location: 'dead',
        get: async () => {
          throw new StorageError('io', 'always down');
        },
      } as unknown as Storage,
      { attempts: 3, delayMs: 1 },
    );
    await expect(dead.get(h)).rejects.toMatchObject({ code: 'io' });
    expect(dead.retried).toBe(2);
    expect(transient(new StorageError('conflict', 'x'))).toBe(false);
    expect(transient(Object.assign(new Error('reset'), { code: 'ECONNRESET' }))).toBe(true);
  });
});

describe('locate: the one place a repository location picks its driver', () => {
  it('a directory, file://, http(s)://; S3 and unknown schemes are clear usage errors', () => {
    expect(locate('repo')).toEqual({ kind: 'directory', dir: path.resolve('repo') });
    expect(locate('/tmp/x y')).toEqual({ kind: 'directory', dir: '/tmp/x y' });
    expect(locate('file:///tmp/a%20b')).toEqual({ kind: 'directory', dir: '/tmp/a b' });
    expect(locate('http://127.0.0.1:8080')).toEqual({ kind: 'server', url: 'http://127.0.0.1:8080' });
    expect(locate('HTTPS://host:1')).toEqual({ kind: 'server', url: 'HTTPS://host:1' });
    expect(() => locate('s3://bucket/prefix')).toThrow(/S3 repositories are not supported yet/);
    expect(() => locate('ftp://host/x')).toThrow(/unknown kind of repository location ftp:/);
    for (const bad of ['s3://b', 'ftp://h']) {
      try {
        locate(bad);
      } catch (e) {
        expect((e as { exitCode: number }).exitCode).toBe(2);
      }
    }
    void fs;
  });
});
