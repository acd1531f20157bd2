/**
 * A restore from a bucket (real Ceph RGW): a pack read a few times is
 * fetched whole, once, and kept for the rest of the restore, so the
 * restore costs a few requests per pack rather than one per run of blocks;
 * its blocks are decoded and written on the worker threads, handed over as
 * views of the shared memory the packs were read into; byte-exact; a read
 * outside a restore still asks only for its ranges.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { beforeAll, describe, expect, it, vi } from 'vitest';
import { refreshCatalog } from '../src/engine/rebuild.js';
import { restore } from '../src/engine/restore.js';
import { SnapshotTree } from '../src/engine/snapshot-tree.js';
import { Repository } from '../src/repo/repository.js';
import type { CoalescingStorage } from '../src/storage/coalesce.js';
import { S3Storage } from '../src/storage/s3.js';
import { locate } from '../src/storage/location.js';
import { UnpackPool } from '../src/workers/unpack-pool.js';
import type { UnpackBatch } from '../src/workers/unpacker.js';
import { cliEnv, readWhole, Rng, strata, tempDir } from './helpers.js';
import { bucketName, gatewayProblem, OPTIONS, s3Env } from './s3-helpers.js';

const problem = await gatewayProblem();
if (problem) console.warn(`S3 restore suite skipped: ${problem}`);
const suite = problem ? describe.skip : describe;

suite('a restore from a bucket', () => {
  const rng = new Rng(2020_7);
  const src = tempDir('strata-s3-whole-src-');
  const url = `s3://${bucketName('whole')}/w`;
  const cacheDir = tempDir('strata-s3-whole-cache-');
  const env = cliEnv(url, { ...s3Env(), STRATA_CACHE_DIR: cacheDir });
  const big = rng.bytes(20 * 1024 * 1024);
  const smalls = Array.from({ length: 60 }, (_, i) => rng.bytes(2000 + i * 1500));
  let packs = 0;

  beforeAll(async () => {
    fs.writeFileSync(path.join(src, 'big.bin'), big);
    fs.mkdirSync(path.join(src, 'small'));
    smalls.forEach((b, i) => fs.writeFileSync(path.join(src, 'small', `f${i}`), b));
    expect(strata(['init', '--scrypt-n', '1024'], env).status).toBe(0);
    const r = strata(['backup', src], env);
    expect(r.status, r.stderr).toBe(0);
    const st = new S3Storage(locate(url) as { bucket: string; prefix: string }, OPTIONS);
    for await (const _ of st.list('pack')) packs++;
    await st.close();
  });

  it('fetches each pack whole after a few reads of it: a few requests per pack, byte-exact; a range read outside a restore fetches only its range', async () => {
    const repo = (await refreshCatalog(await Repository.open(url, { password: async () => 'pw' }, {}, { cacheDir, s3: OPTIONS }))).repo;
    try {
      const storage = repo.storage as CoalescingStorage;
      const s3 = (storage as unknown as { inner: { inner: S3Storage } }).inner.inner;
      const heads = () => s3.counters.requests['HEAD'] ?? 0;
      const [tree] = await SnapshotTree.all(repo);
      const target = tempDir('strata-s3-whole-target-');
      const before = storage.requests;
      const headsBefore = heads();
      const run = vi.spyOn(UnpackPool.prototype, 'run');
      const r = await restore(repo, tree!, { target });
      const requests = storage.requests - before;
      // The sealed bytes go to the workers as views of the shared memory the packs were read into, not
      // copied; only a batch of short range reads alone (less than 64 KiB each, before their packs came whole)
      // is, and in a batch with others a short read's bytes are copied beside them (unpack.ts, fetchSealed).
      const batches = run.mock.calls.map(([b]) => b as Omit<UnpackBatch, 'seq'>);
      run.mockRestore();
      const viewed = batches.flatMap((b) => b.parts ?? []);
      expect(viewed.every((p) => p.buffer instanceof SharedArrayBuffer)).toBe(true);
      const viewedBytes = viewed.reduce((n, p) => n + p.length, 0);
      const copiedBytes = batches.reduce((n, b) => n + (b.sealed?.length ?? 0), 0);
      expect(viewedBytes).toBeGreaterThan(19 * 1024 * 1024);
      expect(copiedBytes).toBeLessThan(viewedBytes / 20);
      expect(r.files).toBe(61);
      // Decoded and written on the workers, handed the sealed bytes this thread fetched.
      const pool = await repo.unpackers();
      expect(pool.reads).toBe(false);
      expect(pool.started).toBe(true);
      expect(fs.readFileSync(path.join(target, src, 'big.bin')).equals(big)).toBe(true);
      smalls.forEach((b, i) => expect(fs.readFileSync(path.join(target, src, 'small', `f${i}`)).equals(b)).toBe(true));
      // A pack comes whole in one ranged GET of its size as the catalog has it: no HEAD first.
      expect(heads() - headsBefore).toBe(0);
      // At most a few ranges of a pack before it comes whole, and the trees and TOCs read first.
      // Each run of blocks of a pack is a request without it: 60 files of a few blocks each, and 20 MiB in bursts of 8 MiB.
      expect(packs).toBeGreaterThan(1);
      expect(requests).toBeLessThanOrEqual(packs * 4 + 12);
      // Off once the restore is done: a read of 4 KiB is one ranged GET, kept nowhere.
      expect(storage.wholePacks).toBe(false);
      const [id] = (JSON.parse(strata(['snapshots', '--json'], env).stdout) as { id: string }[]).map((s) => s.id);
      const gets = () => s3.counters.requests['GET'] ?? 0;
      const wholeBefore = gets();
      for (let k = 0; k < 4; k++) expect((await readWhole(repo, id!, path.join(src, 'small', `f${k}`))).equals(smalls[k]!)).toBe(true);
      expect(gets() - wholeBefore).toBe(0);
    } finally {
      repo.close();
    }
  });
});
