/**
 * The Storage contract (src/storage/storage.ts), run against every driver:
 * a directory, a strata server over HTTP, and the retry wrapper over a store
 * that fails now and then (the contract itself is storage-contract.ts; S3's
 * run is in s3.test.ts, against a real Ceph RGW).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { HttpStorage } from '../src/storage/http.js';
import { LocalStorage } from '../src/storage/local.js';
import { locate } from '../src/storage/location.js';
import { CoalescingStorage } from '../src/storage/coalesce.js';
import { RetryingStorage, transient } from '../src/storage/retry.js';
import { StorageError, type Handle, type Kind, type Storage } from '../src/storage/storage.js';
import { tempDir } from './helpers.js';
import { hex, storageContract } from './storage-contract.js';
import { serve, token } from './server-helpers.js';

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

storageContract('CoalescingStorage over a directory', async () => new CoalescingStorage(new LocalStorage(path.join(tempDir(), 'coalesce'))));

describe('CoalescingStorage', () => {
  it('joins reads of neighbouring ranges asked in one turn into one request; each caller gets exactly its bytes', async () => {
    const inner = new LocalStorage(path.join(tempDir(), 'co'));
    const calls: [number, number][] = [];
    const counting = Object.assign(Object.create(inner) as LocalStorage, {
      read: (h: Handle, offset: number, length: number) => {
        calls.push([offset, length]);
        return inner.read(h, offset, length);
      },
    });
    const st = new CoalescingStorage(counting, { gap: 1000, span: 100_000 });
    const h = { kind: 'pack' as const, name: hex('co') };
    const bytes = Buffer.from(Array.from({ length: 300_000 }, (_, i) => (i * 7) % 251));
    await st.put(h, bytes);
    // Ten neighbours (gaps of 500), one far away, one overlapping another, in no order.
    const asks: [number, number][] = [...Array.from({ length: 10 }, (_, i) => [i * 2500, 2000] as [number, number]).reverse(), [200_000, 10], [1000, 3000]];
    const got = await Promise.all(asks.map(([o, l]) => st.read(h, o, l)));
    asks.forEach(([o, l], i) => expect(got[i]!.equals(bytes.subarray(o, o + l)), `${o}+${l}`).toBe(true));
    expect(calls.sort((a, b) => a[0] - b[0])).toEqual([
      [0, 24_500],
      [200_000, 10],
    ]);
    // No longer than the span: a run past it is cut in two.
    calls.length = 0;
    await Promise.all(Array.from({ length: 30 }, (_, i) => st.read(h, i * 5000, 5000)));
    expect(calls).toHaveLength(2);
    // A joined read that fails is made again one by one: only the read past the end fails, with its own short_read.
    calls.length = 0;
    const results = await Promise.allSettled([st.read(h, 299_000, 500), st.read(h, 299_600, 1000)]);
    expect(results[0]).toMatchObject({ status: 'fulfilled' });
    expect(results[1]).toMatchObject({ status: 'rejected', reason: { code: 'short_read' } });
    expect(calls).toHaveLength(3);
    expect(st.reads).toBe(44);
  });
});

describe('CoalescingStorage with whole packs (a restore)', () => {
  /** A directory store that counts what it is asked. */
  const counted = (dir: string) => {
    const inner = new LocalStorage(dir);
    const calls = { stat: 0, get: 0, read: [] as [number, number][] };
    const store = Object.assign(Object.create(inner) as LocalStorage, {
      stat: (h: Handle) => (calls.stat++, inner.stat(h)),
      get: (h: Handle) => (calls.get++, inner.get(h)),
      read: (h: Handle, offset: number, length: number) => (calls.read.push([offset, length]), inner.read(h, offset, length)),
    });
    return { store, calls };
  };
  const bytes = Buffer.from(Array.from({ length: 200_000 }, (_, i) => (i * 13) % 251));
  const name = hex('whole');
  /** Three reads in three turns (the third fetches the pack whole), then one more. */
  const reads = async (st: CoalescingStorage, h: Handle) => {
    const asks: [number, number][] = [
      [0, 1000],
      [100_000, 1000],
      [50_000, 2000],
      [150_000, 50_000],
    ];
    for (const [o, l] of asks) expect((await st.read(h, o, l)).equals(bytes.subarray(o, o + l)), `${o}+${l}`).toBe(true);
  };

  it('a pack whose size the catalog gave is fetched whole without asking the store its size', async () => {
    const { store, calls } = counted(path.join(tempDir(), 'w'));
    await store.put({ kind: 'pack', name }, bytes);
    const st = new CoalescingStorage(store);
    st.wholePacks = true;
    await reads(st, { kind: 'pack', name, size: bytes.length });
    expect(calls.stat).toBe(0);
    expect(calls.read).toEqual([
      [0, 1000],
      [100_000, 1000],
      [0, bytes.length],
    ]);
    // Without the size: asked first, then fetched whole.
    const { store: bare, calls: bareCalls } = counted(path.join(tempDir(), 'w2'));
    await bare.put({ kind: 'pack', name }, bytes);
    const st2 = new CoalescingStorage(bare);
    st2.wholePacks = true;
    await reads(st2, { kind: 'pack', name });
    expect(bareCalls.stat).toBe(1);
    expect(bareCalls.get).toBe(1);
  });

  it('a wrong size costs requests, never a wrong byte: too small keeps part of the pack, too large keeps none', async () => {
    for (const size of [120_000, 300_000]) {
      const { store, calls } = counted(path.join(tempDir(), `w${size}`));
      await store.put({ kind: 'pack', name }, bytes);
      const st = new CoalescingStorage(store);
      st.wholePacks = true;
      await reads(st, { kind: 'pack', name, size });
      expect(calls.stat).toBe(0);
      // The last read lies past 120,000 bytes, and no range of 300,000 exists: it is read as a range of its own.
      expect(calls.read.at(-1)).toEqual([150_000, 50_000]);
      await expect(st.read({ kind: 'pack', name, size }, 199_000, 2000)).rejects.toMatchObject({ code: 'short_read' });
    }
  });
});

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
  it('a directory, file://, http(s)://, s3://; unknown schemes are clear usage errors', () => {
    expect(locate('repo')).toEqual({ kind: 'directory', dir: path.resolve('repo') });
    expect(locate('/tmp/x y')).toEqual({ kind: 'directory', dir: '/tmp/x y' });
    expect(locate('file:///tmp/a%20b')).toEqual({ kind: 'directory', dir: '/tmp/a b' });
    expect(locate('http://127.0.0.1:8080')).toEqual({ kind: 'server', url: 'http://127.0.0.1:8080' });
    expect(locate('HTTPS://host:1')).toEqual({ kind: 'server', url: 'HTTPS://host:1' });
    expect(locate('s3://bucket/prefix')).toEqual({ kind: 's3', url: 's3://bucket/prefix', bucket: 'bucket', prefix: 'prefix/' });
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
