/**
 * forget / prune / rebuild-catalog on real repositories: history rewritten
 * around forgotten snapshots stays byte-exact, space comes back, and a lost
 * catalog is rebuilt from the packs alone.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it, vi } from 'vitest';
import { backup } from '../src/engine/backup.js';
import { check } from '../src/engine/check.js';
import { forget, forgetWithoutKey } from '../src/engine/forget.js';
import { applyPolicy, parseDuration } from '../src/engine/policy.js';
import { prune } from '../src/engine/prune.js';
import { openFile, readRange } from '../src/engine/read.js';
import { rebuildCatalog } from '../src/engine/rebuild.js';
import { resolveRange, type ResolveStats } from '../src/catalog/resolve.js';
import { findSnapshot, listSnapshots } from '../src/engine/snapshot.js';
import { BLOB_KINDS } from '../src/catalog/catalog.js';
import { KeylessRepository, Repository } from '../src/repo/repository.js';
import type { SealedToc } from '../src/engine/versions.js';
import { SealedEntries } from '../src/engine/verify.js';
import { loseCatalogAndRebuild, makeRepo, readWhole, Rng, tempDir } from './helpers.js';

/** A 30-version history of one file with scattered edits; returns ids and contents. */
async function history(repo: Repository, versions = 30) {
  const dir = tempDir();
  const file = path.join(dir, 'f.bin');
  const rng = new Rng(77);
  let data = rng.bytes(200_000);
  const out: { id: string; data: Buffer }[] = [];
  for (let i = 0; i < versions; i++) {
    if (i > 0) {
      const at = rng.int(data.length);
      const op = rng.int(3);
      if (op === 0) data = Buffer.concat([data.subarray(0, at), rng.bytes(1 + rng.int(3000)), data.subarray(at)]);
      else if (op === 1) data = Buffer.concat([data.subarray(0, at), data.subarray(Math.min(data.length, at + rng.int(3000)))]);
      else data = Buffer.concat([data.subarray(0, at), rng.bytes(2000), data.subarray(Math.min(data.length, at + 2000))]);
    }
    fs.writeFileSync(file, data);
    const r = await backup(repo, { paths: [dir], time: Date.UTC(2026, 0, 1, i) });
    out.push({ id: r.snapshot, data });
  }
  return { dir, file, out };
}

describe('forget keeps every later incremental readable', () => {
  it('forgetting every other snapshot of a 30-version history, then pruning, leaves the rest byte-exact', async () => {
    const repo = await makeRepo({ chunkAvg: 2048, packSize: 256 * 1024 });
    const { file, out } = await history(repo);
    const sizeBefore = repo.catalog.db.prepare('SELECT SUM(size) FROM packs').pluck().get() as number;
    const doomed = out.filter((_, i) => i % 2 === 0).map((v) => v.id);
    const r = await forget(repo, { ids: doomed });
    expect(r.removed.sort()).toEqual([...doomed].sort());
    expect(r.rewrittenVersions).toBeGreaterThan(0);
    const survivors = out.filter((_, i) => i % 2 === 1);
    for (const v of survivors) expect((await readWhole(repo, v.id, file)).equals(v.data)).toBe(true);
    const p = await prune(repo);
    expect(p.deletedBlocks).toBeGreaterThan(0);
    const sizeAfter = repo.catalog.db.prepare('SELECT SUM(size) FROM packs').pluck().get() as number;
    expect(sizeAfter).toBeLessThan(sizeBefore);
    for (const v of survivors) expect((await readWhole(repo, v.id, file)).equals(v.data)).toBe(true);
    const c = await check(repo, { readData: true });
    expect(c.errors).toEqual([]);
    expect(c.ok).toBe(true);
    repo.close();
  }, 60_000);

  it('without the key, on the directory: chains through forgotten snapshots stay rebuildable until a prune with the key reseals them', async () => {
    const repo = await makeRepo({ chunkAvg: 2048, packSize: 256 * 1024 });
    const { file, out } = await history(repo, 12);
    const survivors = out.filter((_, i) => i % 3 === 2);
    const keyless = await KeylessRepository.open(repo.root);
    const f = await forgetWithoutKey(keyless.service, { ids: out.filter((_, i) => i % 3 !== 2).map((v) => v.id) });
    expect(f.removed).toHaveLength(8);
    expect(f.staleTocs).toBeGreaterThan(0);
    const p = await prune(keyless);
    expect(p.unusedBlocks).toBeGreaterThan(0);
    expect(p.repackedPacks).toBe(0);
    expect(p.packsNeedingKey).toBeGreaterThan(0); // their unused blocks wait for the key
    keyless.close();
    for (const v of survivors) expect((await readWhole(repo, v.id, file)).equals(v.data)).toBe(true);

    // A catalog rebuilt now follows the stale sealed TOCs through the forgotten snapshots' kept metadata.
    const copy = path.join(tempDir(), 'copy');
    fs.cpSync(repo.root, copy, { recursive: true });
    for (const name of fs.readdirSync(copy)) if (name.startsWith('catalog.db')) fs.rmSync(path.join(copy, name));
    const { repo: rebuilt } = await Repository.openForRebuild(copy, { password: async () => 'test-password' });
    const r = await rebuildCatalog(rebuilt);
    expect(r.problems).toEqual([]);
    for (const v of survivors) expect((await readWhole(rebuilt, v.id, file)).equals(v.data)).toBe(true);
    rebuilt.close();

    // With the key, prune reseals first; after it, a rebuilt catalog has the survivors and nothing else.
    const q = await prune(repo);
    expect(q.resealedTocs).toBe(f.staleTocs);
    expect(repo.catalog.staleTocs()).toEqual([]);
    const { fresh } = await loseCatalogAndRebuild(repo);
    expect((await listSnapshots(fresh)).map((s) => s.id)).toEqual(survivors.map((v) => v.id));
    for (const v of survivors) expect((await readWhole(fresh, v.id, file)).equals(v.data)).toBe(true);
    expect((await check(fresh, { readData: true })).ok).toBe(true);
    fresh.close();
  }, 60_000);

  it('a later backup still compares against the survivors', async () => {
    const repo = await makeRepo({ chunkAvg: 2048 });
    const { dir, file, out } = await history(repo, 6);
    await forget(repo, { policy: { last: 2 } });
    await prune(repo);
    expect((await listSnapshots(repo)).map((s) => s.id)).toEqual(out.slice(-2).map((v) => v.id));
    fs.appendFileSync(file, 'more');
    const r = await backup(repo, { paths: [dir] });
    expect(r.refEntries).toBeGreaterThan(0);
    expect((await readWhole(repo, r.snapshot, file)).equals(Buffer.concat([out[5]!.data, Buffer.from('more')]))).toBe(true);
    repo.close();
  });
});

describe('forget keeps reads flat', () => {
  it('after forgetting the baseline of 30 unchanged backups, the newest reads in one hop', async () => {
    const repo = await makeRepo({ chunkAvg: 2048 });
    const dir = tempDir();
    const file = path.join(dir, 'f');
    const data = new Rng(12).bytes(100_000);
    fs.writeFileSync(file, data);
    const ids: string[] = [];
    for (let i = 0; i < 30; i++) ids.push((await backup(repo, { paths: [dir], time: Date.UTC(2026, 0, 1, i) })).snapshot);
    await forget(repo, { ids: [ids[0]!] });
    const f = await openFile((await findSnapshot(repo, { kind: 'latest' })), file);
    const stats: ResolveStats = { frames: 0 };
    const pieces = [...resolveRange(repo.catalog, f.version.id, 50_000, 50_100, stats)];
    expect(pieces.reduce((n, p) => n + p.length, 0)).toBe(101);
    expect(stats.frames).toBeLessThanOrEqual(2);
    expect((await readWhole(repo, ids[29]!, file)).equals(data)).toBe(true);
    repo.close();
  });
});

describe('retention policy', () => {
  const day = 86_400_000;
  const t0 = new Date(2026, 0, 1, 12).getTime();
  const snaps = Array.from({ length: 40 }, (_, i) => ({ id: `s${i}`, time: t0 + i * day, tags: i === 3 ? ['keep'] : [] }));

  it('keeps the last N, one per day/week/month, within a duration, and tagged ones, saying why', () => {
    expect([...applyPolicy(snaps, { last: 3 }).keys()].sort()).toEqual(['s37', 's38', 's39']);
    expect(applyPolicy(snaps, { daily: 5 }).size).toBe(5);
    const weekly = applyPolicy(snaps, { weekly: 3 });
    expect(weekly.size).toBe(3);
    expect([...weekly.values()].every((r) => r[0]!.startsWith('weekly 2026-W'))).toBe(true);
    expect([...applyPolicy(snaps, { monthly: 12 }).keys()].sort()).toEqual(['s30', 's39']);
    expect(applyPolicy(snaps, { within: parseDuration('2d') }).size).toBe(3);
    expect(applyPolicy(snaps, { tags: ['keep'] }).get('s3')).toEqual(['tag keep']);
    expect(applyPolicy(snaps, { last: 1, daily: 2 }).get('s39')).toEqual(['last 1 of 1', 'daily 2026-02-09']);
  });

  it('parses durations and refuses nonsense', () => {
    expect(parseDuration('1y6m')).toBe((365 + 180) * day);
    expect(parseDuration('36h')).toBe(36 * 3_600_000);
    expect(() => parseDuration('soon')).toThrow(/invalid duration/);
  });
});

describe('rebuild-catalog', () => {
  it('a deleted catalog.db comes back from the packs: every snapshot restores, check --read-data is clean', async () => {
    const repo = await makeRepo({ chunkAvg: 2048 });
    const { file, out } = await history(repo, 8);
    await forget(repo, { ids: [out[2]!.id, out[5]!.id] });
    await prune(repo);
    const { fresh, r } = await loseCatalogAndRebuild(repo);
    expect(r.snapshots).toBe(6);
    expect(r.damagedPacks).toEqual([]);
    const kept = out.filter((_, i) => i !== 2 && i !== 5);
    expect((await listSnapshots(fresh)).map((s) => s.id)).toEqual(kept.map((v) => v.id));
    for (const v of kept) expect((await readWhole(fresh, v.id, file)).equals(v.data)).toBe(true);
    const c = await check(fresh, { readData: true });
    expect(c.errors).toEqual([]);
    expect(c.ok).toBe(true);
    fresh.close();
  });
});

describe('files unchanged since the parent snapshot', () => {
  it('get no row and no sealed TOC; forget hands them down when their parent goes, and rebuild-catalog derives the rest', async () => {
    const repo = await makeRepo({ chunkAvg: 1024 });
    const dir = tempDir();
    const rng = new Rng(9);
    const b = rng.bytes(30_000);
    fs.mkdirSync(path.join(dir, 'sub'));
    fs.writeFileSync(path.join(dir, 'b'), b);
    fs.writeFileSync(path.join(dir, 'empty'), '');
    fs.writeFileSync(path.join(dir, 'sub', 'd'), 'dee');
    const ids: string[] = [];
    const a: Buffer[] = [];
    for (let i = 0; i < 3; i++) {
      a.push(rng.bytes(20_000 + i));
      fs.writeFileSync(path.join(dir, 'a'), a[i]!);
      ids.push((await backup(repo, { paths: [dir], time: Date.UTC(2026, 0, 1, i) })).snapshot);
    }
    // A snapshot's own row for a file (undefined when it inherits the file's version), and its sealed TOC.
    const own = (snapshot: string, file: string) =>
      repo.catalog.db.prepare('SELECT id, toc FROM versions WHERE snapshot = ? AND path = ?').get(repo.catalog.snapshotsByPrefix(snapshot)[0]!.seq, repo.keyring.pathId(path.join(dir, file))) as
        | { id: number; toc: Buffer | null }
        | undefined;
    for (const f of ['b', 'empty', 'sub/d']) {
      // A file of one block has its block in its tree entry (format 3), and no sealed TOC.
      if (f === 'sub/d') expect(own(ids[0]!, f)).toMatchObject({ toc: null });
      else expect(own(ids[0]!, f)?.toc).not.toBeNull();
      expect(own(ids[1]!, f)).toBeUndefined();
      expect(own(ids[2]!, f)).toBeUndefined();
    }
    expect(own(ids[1]!, 'a')?.toc).not.toBeNull();
    const baseline = own(ids[0]!, 'b')!.id;

    // The baseline goes: its versions of the unchanged files move to the next snapshot (same ids), resealed under it.
    await forget(repo, { ids: [ids[0]!] });
    await prune(repo);
    expect(own(ids[1]!, 'b')).toMatchObject({ id: baseline, toc: expect.any(Buffer) });
    expect(own(ids[2]!, 'b')).toBeUndefined();
    // A later backup: unchanged again, and again without a row.
    a.push(rng.bytes(25_000));
    fs.writeFileSync(path.join(dir, 'a'), a[3]!);
    ids.push((await backup(repo, { paths: [dir], time: Date.UTC(2026, 0, 1, 3) })).snapshot);
    expect(own(ids[3]!, 'b')).toBeUndefined();

    const { fresh, r } = await loseCatalogAndRebuild(repo);
    expect(r.problems).toEqual([]);
    for (const [i, id] of ids.entries()) {
      if (i === 0) continue;
      expect((await readWhole(fresh, id, path.join(dir, 'a'))).equals(a[i]!)).toBe(true);
      expect((await readWhole(fresh, id, path.join(dir, 'b'))).equals(b)).toBe(true);
      expect((await readWhole(fresh, id, path.join(dir, 'sub', 'd'))).toString()).toBe('dee');
      expect((await readWhole(fresh, id, path.join(dir, 'empty'))).length).toBe(0);
    }
    expect((await check(fresh, { readData: true })).errors).toEqual([]);
    fresh.close();
  });
});

describe('a TOC longer than one sealed segment', () => {
  /** Segments each snapshot keeps alive, and those its versions' sealed TOCs list. */
  async function segments(repo: Repository): Promise<{ kept: string[]; listed: string[] }> {
    const db = repo.catalog.db;
    const kept = (db.prepare('SELECT hex(sb.block) AS id FROM snapshot_blobs sb JOIN blocks b ON b.id = sb.block WHERE b.kind = ?').all(BLOB_KINDS.indexOf('toc')) as { id: string }[]).map((r) => r.id.toLowerCase());
    const listed: string[] = [];
    for (const { toc } of db.prepare('SELECT toc FROM versions').all() as { toc: Buffer }[]) {
      listed.push(...((JSON.parse((await repo.readBlob(toc, 'toc')).toString('utf8')) as SealedToc).segments ?? []));
    }
    return { kept: kept.sort(), listed: listed.sort() };
  }

  it('is sealed in segments that forget reseals, prune keeps and rebuild-catalog follows', async () => {
    const repo = await makeRepo({ chunkAvg: 1024 });
    const dir = tempDir();
    const file = path.join(dir, 'big.bin');
    const rng = new Rng(5);
    const datas = [rng.bytes(6_000_000)];
    for (let i = 1; i < 4; i++) {
      const d = Buffer.from(datas[i - 1]!);
      for (let k = 0; k < 5; k++) rng.bytes(100).copy(d, rng.int(d.length - 100));
      datas.push(d);
    }
    const ids: string[] = [];
    for (const [i, d] of datas.entries()) {
      fs.writeFileSync(file, d);
      ids.push((await backup(repo, { paths: [dir], time: Date.UTC(2026, 0, 1, i) })).snapshot);
    }
    // The baseline has about 6,000 data entries: two segments, both kept alive by its snapshot.
    let s = await segments(repo);
    expect(s.listed.length).toBeGreaterThanOrEqual(2);
    expect(s.kept).toEqual(s.listed);

    // Forgetting the baseline turns the next version's refs into data: its TOC is resealed long.
    await forget(repo, { ids: [ids[0]!] });
    await forget(repo, { ids: [ids[1]!] });
    s = await segments(repo);
    expect(s.listed.length).toBeGreaterThanOrEqual(2);
    expect(s.kept).toEqual(s.listed);
    await prune(repo);
    for (const i of [2, 3]) expect((await readWhole(repo, ids[i]!, file)).equals(datas[i]!)).toBe(true);
    expect((await check(repo, { readData: true })).errors).toEqual([]);

    const { fresh, r } = await loseCatalogAndRebuild(repo);
    expect(r.problems).toEqual([]);
    expect(r.snapshots).toBe(2);
    for (const i of [2, 3]) expect((await readWhole(fresh, ids[i]!, file)).equals(datas[i]!)).toBe(true);
    s = await segments(fresh);
    expect(s.kept).toEqual(s.listed);
    expect((await check(fresh, { readData: true })).errors).toEqual([]);
    fresh.close();
  });
});

describe('a range read of a TOC sealed in segments', () => {
  it('opens only the segments the range falls in, and reads every range byte-exact', async () => {
    const repo = await makeRepo({ chunkAvg: 1024 });
    const dir = tempDir();
    const file = path.join(dir, 'big.bin');
    const rng = new Rng(6);
    const data = rng.bytes(20_000_000);
    fs.writeFileSync(file, data);
    const id = (await backup(repo, { paths: [dir] })).snapshot;
    repo.close();
    // About 20,000 data entries: five segments.
    const r = await Repository.open(repo.root, { password: async () => 'test-password' });
    const reads = vi.spyOn(r, 'readBlob');
    const f = await openFile(await findSnapshot(r, { kind: 'id', prefix: id }), file);
    const head = JSON.parse((await r.readBlob((await r.service.versionRecord(f.version.id))!.toc!, 'toc')).toString('utf8')) as SealedToc;
    expect(head.segments!.length).toBeGreaterThanOrEqual(4);
    reads.mockClear();
    const range = async (start: number, length: number) => {
      const parts: Buffer[] = [];
      for await (const p of readRange(r, f.version, start, start + length - 1)) parts.push(Buffer.from(p));
      expect(Buffer.concat(parts).equals(data.subarray(start, start + length)), `${start}+${length}`).toBe(true);
    };
    // Near the end: the head and the last segment or two, not all of them.
    await range(data.length - 5000, 4096);
    const tocReads = () => reads.mock.calls.filter((c) => c[1] === 'toc').length;
    expect(tocReads()).toBeLessThanOrEqual(3);
    // Across every segment boundary, and random ranges.
    for (let k = 0; k < 40; k++) await range(rng.int(data.length - 200_000), 1 + rng.int(200_000));
    await range(0, data.length);
    // A read of the whole file went through every segment, and kept only the last ones opened (a 4 GiB file has a thousand).
    expect(head.segments!.length).toBeGreaterThan(100);
    expect(f.version.bound.truth.entries.kept).toBeLessThanOrEqual(64);
    r.close();
  }, 120_000);
});

describe('the starts a segmented TOC lists', () => {
  it('lead a small read to the one segment that holds it; a TOC without them is searched, and starts that lie are an integrity error', async () => {
    const repo = await makeRepo({ chunkAvg: 1024 });
    const dir = tempDir();
    const file = path.join(dir, 'uneven.bin');
    const rng = new Rng(8);
    // Random bytes, then zeros: blocks of very different sizes, so a segment's place is not proportional to its offset.
    const data = Buffer.concat([rng.bytes(2_000_000), Buffer.alloc(6_000_000), rng.bytes(500_000)]);
    fs.writeFileSync(file, data);
    const id = (await backup(repo, { paths: [dir] })).snapshot;
    const f = await openFile(await findSnapshot(repo, { kind: 'id', prefix: id }), file);
    const head = JSON.parse((await repo.readBlob((await repo.service.versionRecord(f.version.id))!.toc!, 'toc')).toString('utf8')) as SealedToc;
    expect(head.segments!.length).toBeGreaterThanOrEqual(8);
    expect(head.starts).toHaveLength(head.segments!.length);
    const reads = vi.spyOn(repo, 'readBlob');
    const tocReads = () => reads.mock.calls.filter((c) => c[1] === 'toc').length;
    let searched = 0;
    for (let k = 0; k < 40; k++) {
      const offset = k === 0 ? data.length - 1 : rng.int(data.length);
      for (const [view, direct] of [
        [new SealedEntries(repo, head, 'with starts'), true],
        [new SealedEntries(repo, { ...head, starts: undefined }, 'without starts'), false],
      ] as const) {
        reads.mockClear();
        const { list, i } = await view.locate(offset);
        expect(list[i]![0]).toBeLessThanOrEqual(offset);
        expect(list[i]![1]).toBeGreaterThanOrEqual(offset);
        if (direct) expect(tocReads()).toBe(1);
        else searched += tocReads();
      }
    }
    // Without the starts, guesses by proportion open more than one segment a read here.
    expect(searched).toBeGreaterThan(40);
    const lying = { ...head, starts: head.starts!.map((s, k) => (k === 2 ? s + 1 : s)) };
    await expect(new SealedEntries(repo, lying, 'lying').locate(head.starts![2]! + 10)).rejects.toMatchObject({ code: 'integrity', message: expect.stringMatching(/does not begin where the TOC says/) });
    // Every byte reads the same through the TOC.
    const parts: Buffer[] = [];
    for await (const p of readRange(repo, f.version, 0, data.length - 1)) parts.push(Buffer.from(p));
    expect(Buffer.concat(parts).equals(data)).toBe(true);
    repo.close();
  }, 60_000);
});

describe('prune beside a running backup', () => {
  it('blocks looked up together are rescued from prune like blocks looked up alone', async () => {
    const repo = await makeRepo();
    const dir = tempDir();
    fs.writeFileSync(path.join(dir, 'a'), new Rng(6).bytes(100_000));
    await backup(repo, { paths: [dir] });
    const ids = repo.catalog.db.prepare('SELECT id FROM blocks WHERE kind = 0').pluck().all() as Buffer[];
    repo.catalog.db.prepare('UPDATE blocks SET condemned = 1 WHERE id = ?').run(ids[0]);
    expect(repo.catalog.hasBlocks([ids[0]!, Buffer.alloc(32), ...ids.slice(1)])).toEqual([true, false, ...ids.slice(1).map(() => true)]);
    expect(repo.catalog.db.prepare('SELECT condemned FROM blocks WHERE id = ?').pluck().get(ids[0])).toBeNull();
    repo.close();
  });

  it('a block a backup has decided to reuse survives a prune that finds it unused', async () => {
    const repo = await makeRepo({ chunkAvg: 2048, packSize: 128 * 1024 });
    const dir = tempDir();
    const data = new Rng(5).bytes(600_000);
    fs.writeFileSync(path.join(dir, 'a'), data);
    const first = await backup(repo, { paths: [dir] });
    // The only snapshot goes: its blocks become unused...
    await forget(repo, { ids: [first.snapshot] });
    // ...while a new backup of the same data reuses them. Prune runs in the
    // middle of that backup, through its own connection, as another process would.
    const other = await Repository.open(repo.root, { password: async () => 'test-password' });
    let pruned: Awaited<ReturnType<typeof prune>> | undefined;
    let started = false;
    const second = await backup(repo, {
      paths: [dir],
      onProgress: async (p) => {
        if (started || p.bytesRead < 300_000) return;
        started = true;
        pruned = await prune(other);
      },
    });
    while (!pruned) await new Promise((r) => setTimeout(r, 10));
    expect(pruned.unusedBlocks).toBeGreaterThan(0);
    expect(pruned.deferredBlocks).toBeGreaterThan(0);
    expect((await readWhole(repo, second.snapshot, path.join(dir, 'a'))).equals(data)).toBe(true);
    // Once the backup is done, its blocks are used again: only the forgotten
    // snapshot's own record, tree and TOC go, and nothing the new one reads.
    const later = await prune(other);
    expect(later.deletedBlocks).toBeLessThan(pruned.unusedBlocks);
    expect((await readWhole(repo, second.snapshot, path.join(dir, 'a'))).equals(data)).toBe(true);
    expect((await check(repo, { readData: true })).ok).toBe(true);
    other.close();
    repo.close();
  });

  it('forget keeps a snapshot that a running backup uses as its parent', async () => {
    const repo = await makeRepo({ chunkAvg: 2048 });
    const dir = tempDir();
    fs.writeFileSync(path.join(dir, 'a'), new Rng(6).bytes(300_000));
    const first = await backup(repo, { paths: [dir] });
    fs.appendFileSync(path.join(dir, 'a'), 'x');
    const other = await Repository.open(repo.root, { password: async () => 'test-password' });
    let result: Awaited<ReturnType<typeof forget>> | undefined;
    let started = false;
    const second = await backup(repo, {
      paths: [dir],
      onProgress: async () => {
        if (started) return;
        started = true;
        result = await forget(other, { ids: [first.snapshot] });
      },
    });
    while (!result) await new Promise((r) => setTimeout(r, 10));
    expect(result!.removed).toEqual([]);
    expect(result!.groups[0]!.keep[0]!.reasons).toEqual(['parent of a running backup']);
    expect(second.refEntries).toBeGreaterThan(0);
    const again = await forget(other, { ids: [first.snapshot] });
    expect(again.removed).toEqual([first.snapshot]);
    await prune(other);
    expect((await check(repo, { readData: true })).ok).toBe(true);
    other.close();
    repo.close();
  });
});
