/**
 * Engine behaviour that the CLI tests do not reach: long chains stay flat,
 * snapshot lookup, interruption, zero knowledge.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it, vi } from 'vitest';
import { Chunker } from '../src/chunker/fastcdc.js';
import { alignedBlocks, freshChunks, windowBytes } from '../src/engine/aligned.js';
import { backup } from '../src/engine/backup.js';
import { BlockList } from '../src/catalog/blocklist.js';
import { openFile, readRange } from '../src/engine/read.js';
import { blocksOf, blocksOfMany, resolveRange, type ResolveStats } from '../src/catalog/resolve.js';
import { check } from '../src/engine/check.js';
import { forget } from '../src/engine/forget.js';
import { prune } from '../src/engine/prune.js';
import { findSnapshot, metaAad } from '../src/engine/snapshot.js';
import { MAX_DEPTH } from '../src/catalog/toc-rows.js';
import { sealToc, type SealedEntry } from '../src/engine/versions.js';
import { verifier } from '../src/engine/verify.js';
import { StrataError } from '../src/errors.js';
import { Repository } from '../src/repo/repository.js';
import { SealPool } from '../src/workers/pool.js';
import { makeRepo, readWhole, Rng, tempDir } from './helpers.js';

describe('reference chains', () => {
  it('after 100 incrementals a range read visits as few TOC ranges as after 1', async () => {
    const repo = await makeRepo({ chunkAvg: 4096 });
    const dir = tempDir();
    const file = path.join(dir, 'image');
    const rng = new Rng(5);
    const data = rng.bytes(1024 * 1024);
    fs.writeFileSync(file, data);
    const ids: string[] = [];
    for (let i = 0; i <= 100; i++) {
      // Each incremental rewrites a page near the end; the middle never changes.
      if (i > 0) {
        rng.bytes(4096).copy(data, 900_000 + (i % 20) * 4096);
        fs.writeFileSync(file, data);
      }
      ids.push((await backup(repo, { paths: [dir], time: Date.UTC(2026, 0, 1, 0, i) })).snapshot);
    }
    const frames = async (id: string) => {
      const f = await openFile((await findSnapshot(repo, { kind: 'id', prefix: id })), file);
      const stats: ResolveStats = { frames: 0 };
      const pieces = [...resolveRange(repo.catalog, f.version.id, 500_000, 504_095, stats)];
      expect(pieces.reduce((n, p) => n + p.length, 0)).toBe(4096);
      // Small test blocks (1-16 KiB): 4 KiB may cover a few of them.
      expect(pieces.length).toBeLessThanOrEqual(5);
      return stats.frames;
    };
    const after1 = await frames(ids[1]!);
    const after10 = await frames(ids[10]!);
    const after100 = await frames(ids[100]!);
    expect(after1).toBeLessThanOrEqual(2);
    // At most MAX_DEPTH hops, plus a frame wherever the range crosses from one ref to the next on the
    // way down (the block boundaries, and so the refs, depend on the random key; 8 to 9 frames are
    // usual). Without the depth bound, 100 incrementals would take about 100 frames.
    expect(after10).toBeLessThanOrEqual(2 * (MAX_DEPTH + 1));
    expect(after100).toBeLessThanOrEqual(2 * (MAX_DEPTH + 1));
    // The TOC still grows with what changed, not with the file's 256 blocks.
    const latest = await openFile((await findSnapshot(repo, { kind: 'latest' })), file);
    expect(repo.catalog.toc(latest.version.id).length).toBeLessThan(90);
    // And the bytes are right at the newest version.
    const f = await openFile((await findSnapshot(repo, { kind: 'latest' })), file);
    const parts: Buffer[] = [];
    for await (const p of readRange(repo, f.version, 0, data.length - 1)) parts.push(Buffer.from(p));
    expect(Buffer.concat(parts).equals(data)).toBe(true);
    repo.close();

    // A read is checked against the sealed TOCs, which carry the same shortcut (sealed roots): a fresh
    // process reads a handful of them, not one per incremental (about 100 without the roots).
    const sealedTocsRead = async (id: string) => {
      const r = await Repository.open(repo.root, { password: async () => 'test-password' });
      const read = vi.spyOn(r, 'readBlob');
      const v = await openFile(await findSnapshot(r, { kind: 'id', prefix: id }), file);
      const got: Buffer[] = [];
      for await (const p of readRange(r, v.version, 500_000, 504_095)) got.push(Buffer.from(p));
      expect(Buffer.concat(got).equals(data.subarray(500_000, 504_096))).toBe(true);
      const n = read.mock.calls.filter((c) => c[1] === 'toc').length;
      r.close();
      return n;
    };
    expect(await sealedTocsRead(ids[100]!)).toBeLessThanOrEqual(2 * (MAX_DEPTH + 1));
    expect(await sealedTocsRead(ids[10]!)).toBeLessThanOrEqual(2 * (MAX_DEPTH + 1));
  }, 120_000);

  it('a sealed root that cannot be followed leaves the chain, and forgetting the snapshots roots name keeps reads byte-exact', async () => {
    const repo = await makeRepo({ chunkAvg: 4096 });
    const dir = tempDir();
    const file = path.join(dir, 'image');
    const rng = new Rng(9);
    const data = rng.bytes(256 * 1024);
    const history: Buffer[] = [];
    const ids: string[] = [];
    for (let i = 0; i <= 2 * MAX_DEPTH + 4; i++) {
      if (i > 0) rng.bytes(2048).copy(data, rng.int(data.length - 2048));
      fs.writeFileSync(file, data);
      history.push(Buffer.from(data));
      ids.push((await backup(repo, { paths: [dir], time: Date.UTC(2026, 0, 1, 0, i) })).snapshot);
    }
    const latest = async (r: Repository) => {
      const snap = await findSnapshot(r, { kind: 'latest' });
      const f = await openFile(snap, file);
      return { snap, version: f.version, entries: await (await verifier(r).bind(snap, file, r.keyring.pathId(file), f.version)).truth.entries.all() };
    };
    // The latest version sealed again (with the key) with every root naming a snapshot that is not there.
    const { version, entries } = await latest(repo);
    expect(entries.some((e) => e.length === 7)).toBe(true);
    const lost = 'f'.repeat(ids[0]!.length);
    const packer = repo.newPacker();
    const head = { snapshot: ids[ids.length - 1]!, path: repo.keyring.pathId(file).toString('hex'), size: data.length, generation: Date.now() };
    const broken = entries.map((e): SealedEntry => (e.length === 7 ? [e[0], e[1], e[2], e[3], e[4], lost, e[6]] : e));
    const toc = await sealToc(repo.keyring, packer, 0, head, broken, broken.length);
    await packer.flush();
    await repo.service.setVersionTocs([{ version: version.id, toc: toc.id, segments: [], old: [] }]);
    repo.close();
    let r = await Repository.open(repo.root, { password: async () => 'test-password' });
    expect((await latest(r)).entries.some((e) => e.length === 7 && e[5] === lost)).toBe(true);
    expect((await readWhole(r, ids[ids.length - 1]!, file)).equals(data)).toBe(true);

    // The snapshots the roots name, and the baseline, forgotten (with the key): every other snapshot reads right.
    r.close();
    r = await Repository.open(repo.root, { password: async () => 'test-password' });
    const named = new Set<string>();
    for (const id of ids.slice(-4, -1)) {
      const snap = await findSnapshot(r, { kind: 'id', prefix: id });
      const f = await openFile(snap, file);
      for (const e of await (await verifier(r).bind(snap, file, r.keyring.pathId(file), f.version)).truth.entries.all()) if (e.length === 7) named.add(e[5]);
    }
    const gone = new Set([0, ...[...named].map((id) => ids.indexOf(id)).filter((i) => i >= 0 && i < ids.length - 4)]);
    await forget(r, { ids: [...gone].map((i) => ids[i]!) });
    await prune(r);
    r.close();
    r = await Repository.open(repo.root, { password: async () => 'test-password' });
    for (let i = 0; i < ids.length; i++) {
      if (gone.has(i)) continue;
      expect((await readWhole(r, ids[i]!, file)).equals(history[i]!), `snapshot ${i}`).toBe(true);
    }
    expect((await check(r, { readData: true })).errors).toEqual([]);
    r.close();
  }, 120_000);
});

describe('packing', () => {
  it('many blocks through small packs, sealed in parallel, all land and read back', async () => {
    const repo = await makeRepo({ chunkAvg: 4096, packSize: 64 * 1024 });
    const dir = tempDir();
    const data = new Rng(21).bytes(6 * 1024 * 1024);
    fs.writeFileSync(path.join(dir, 'f'), data);
    const r = await backup(repo, { paths: [dir] });
    expect(r.blocksNew).toBeGreaterThan(500);
    const f = await openFile((await findSnapshot(repo, { kind: 'latest' })), path.join(dir, 'f'));
    const parts: Buffer[] = [];
    for await (const p of readRange(repo, f.version, 0, data.length - 1)) parts.push(Buffer.from(p));
    expect(Buffer.concat(parts).equals(data)).toBe(true);
    repo.close();
  });
});

describe('snapshot lookup', () => {
  it('an ambiguous id prefix is an error naming the count', async () => {
    const repo = await makeRepo();
    for (const id of ['ab12' + '0'.repeat(60), 'ab34' + '0'.repeat(60)]) {
      const seq = repo.catalog.beginSnapshot(id, Date.now(), Buffer.alloc(32), repo.keyring.sealJson({ host: 'h', tags: [], paths: ['/x'] }, metaAad(id)), null);
      repo.catalog.commitSnapshot(seq, Buffer.alloc(32), Buffer.alloc(32), repo.keyring.sealJson({ host: 'h', tags: [], paths: ['/x'] }, metaAad(id)));
    }
    await expect(findSnapshot(repo, { kind: 'id', prefix: 'ab' })).rejects.toThrow(/ambiguous \(2 snapshots match/);
    expect((await findSnapshot(repo, { kind: 'id', prefix: 'ab3' })).id.startsWith('ab34')).toBe(true);
    await expect(findSnapshot(repo, { kind: 'id', prefix: 'cd' })).rejects.toThrow(/no snapshot with id/);
    repo.close();
  });

  it('snapshots of the same time are listed alike by every catalog, whatever order each learnt them in (servers over one bucket)', async () => {
    const time = Date.now();
    const ids = ['f0' + '1'.repeat(62), '0f' + '2'.repeat(62), '77' + '3'.repeat(62)];
    const listed: string[][] = [];
    for (const order of [ids, [...ids].reverse()]) {
      const repo = await makeRepo();
      for (const id of order) {
        const meta = repo.keyring.sealJson({ host: 'h', tags: [], paths: ['/x'] }, metaAad(id));
        repo.catalog.commitSnapshot(repo.catalog.beginSnapshot(id, time, Buffer.alloc(32), meta, null), Buffer.alloc(32), Buffer.alloc(32), meta);
      }
      listed.push(repo.catalog.snapshots().map((s) => s.id));
      repo.close();
    }
    expect(listed[0]).toEqual(listed[1]);
  });
});

describe('pending snapshots', () => {
  it('a snapshot number is never given twice: one a prune dropped as abandoned cannot be committed, nor land in the next snapshot', async () => {
    const repo = await makeRepo();
    const meta = (id: string) => repo.keyring.sealJson({ host: 'h', tags: [], paths: ['/x'] }, metaAad(id));
    const [a, b] = ['aa' + '0'.repeat(62), 'bb' + '0'.repeat(62)];
    // The newest row: a reused number would be its. Begun without a lease, as a journal's replay
    // begins one: this process's is kept; another's, that died, is dropped.
    const dropped = repo.catalog.beginSnapshot(a, Date.now(), Buffer.alloc(32), meta(a), null);
    expect((await prune(repo)).abandonedSnapshots).toBe(0);
    repo.catalog.db.prepare('UPDATE snapshots SET pid = ? WHERE seq = ?').run(2 ** 22 + 4321, dropped);
    expect((await prune(repo)).abandonedSnapshots).toBe(1);
    const next = repo.catalog.beginSnapshot(b, Date.now(), Buffer.alloc(32), meta(b), null);
    expect(next).not.toBe(dropped);
    expect(() => repo.catalog.commitSnapshot(dropped, Buffer.alloc(32), Buffer.alloc(32), meta(a))).toThrow(/no longer being written/);
    repo.catalog.commitSnapshot(next, Buffer.alloc(32), Buffer.alloc(32), meta(b));
    expect(() => repo.catalog.commitSnapshot(next, Buffer.alloc(32), Buffer.alloc(32), meta(b))).toThrow(/no longer being written/);
    expect(repo.catalog.snapshots().map((s) => s.id)).toEqual([b]);
    expect((await findSnapshot(repo, { kind: 'id', prefix: 'bb' })).meta.host).toBe('h');
    repo.close();
  });
});

describe('interruption', () => {
  it('an aborted backup commits nothing, and the next one reuses what was stored', async () => {
    const repo = await makeRepo({ packSize: 1024 * 1024 });
    const dir = tempDir();
    fs.writeFileSync(path.join(dir, 'a'), new Rng(9).bytes(8 * 1024 * 1024));
    const first = await backup(repo, { paths: [dir] });
    fs.writeFileSync(path.join(dir, 'b'), new Rng(10).bytes(16 * 1024 * 1024));
    const ac = new AbortController();
    const err = await backup(repo, {
      paths: [dir],
      signal: ac.signal,
      onProgress: (p) => {
        if (p.bytesRead > 10 * 1024 * 1024) ac.abort();
      },
    }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(StrataError);
    expect((err as StrataError).exitCode).toBe(130);
    expect(repo.catalog.snapshots().map((s) => s.id)).toEqual([first.snapshot]);
    const next = await backup(repo, { paths: [dir] });
    expect(next.blocksReused).toBeGreaterThan(0);
    expect(next.bytesAdded).toBeLessThan(16 * 1024 * 1024 - 1024 * 1024);
    const f = await openFile((await findSnapshot(repo, { kind: 'latest' })), path.join(dir, 'b'));
    expect(f.version.size).toBe(16 * 1024 * 1024);
    repo.close();
  });
});

describe('zero knowledge', () => {
  it('the repository holds no plaintext content, names or metadata', async () => {
    const repo = await makeRepo();
    const root = repo.root;
    const dir = path.join(tempDir(), 'MARKERDIRNAME');
    fs.mkdirSync(dir);
    const content = 'MARKERCONTENT-'.repeat(1000);
    fs.writeFileSync(path.join(dir, 'MARKERFILENAME.txt'), content);
    fs.symlinkSync('MARKERLINKTARGET', path.join(dir, 'link'));
    await backup(repo, { paths: [dir], tags: ['MARKERTAG'], host: 'MARKERHOST' });
    repo.close();
    const haystack = fs
      .readdirSync(root, { recursive: true })
      .map((p) => path.join(root, String(p)))
      .filter((p) => fs.statSync(p).isFile());
    expect(haystack.some((p) => p.endsWith('catalog.db'))).toBe(true);
    for (const p of haystack) {
      const bytes = fs.readFileSync(p);
      for (const marker of ['MARKERCONTENT', 'MARKERDIRNAME', 'MARKERFILENAME', 'MARKERLINKTARGET', 'MARKERTAG', 'MARKERHOST']) {
        expect(bytes.includes(marker), `${marker} in ${p}`).toBe(false);
        expect(bytes.includes(Buffer.from(marker, 'utf16le')), `${marker} in ${p}`).toBe(false);
      }
    }
  });

  it('a key file for another repository is refused', async () => {
    const a = await makeRepo();
    const b = await makeRepo();
    const keyFile = path.join(tempDir(), 'k');
    fs.writeFileSync(keyFile, JSON.stringify(a.exportKey()));
    await expect(Repository.open(b.root, { keyFile })).rejects.toThrow(/another repository/);
    a.close();
    b.close();
  });
});

describe('reading a file seen before', () => {
  /** The block ids a chunking from scratch gives. */
  function chunkIds(repo: Repository, data: Buffer): string[] {
    const chunker = new Chunker(repo.chunker, repo.gear);
    const out = chunker.push(Buffer.from(data)).map((c) => repo.keyring.blockId(c).toString('hex'));
    const last = chunker.finish();
    if (last) out.push(repo.keyring.blockId(last).toString('hex'));
    return out;
  }

  /** The block ids a version is made of, in order. */
  function versionIds(repo: Repository, snapshot: string, file: string): string[] {
    const v = repo.catalog.version(repo.catalog.snapshotsByPrefix(snapshot)[0]!.seq, repo.keyring.pathId(file))!;
    const ids: string[] = [];
    for (const p of resolveRange(repo.catalog, v.id, 0, v.size - 1)) if (p.from === 0) ids.push(p.block.toString('hex'));
    return ids;
  }

  /** Where the first run of 64 or more zeros at or after `at` ends (or `at`, if none follows). */
  function zerosEnd(data: Buffer, at: number): number {
    let i = data.indexOf(Buffer.alloc(64), at);
    if (i < 0) return at;
    while (i < data.length && data[i] === 0) i++;
    return i;
  }

  /** Backs up `steps` random edits of `data` and checks each version's blocks against a full chunking. */
  async function editAndCompare(repo: Repository, data: Buffer, rng: Rng, steps: number, record: Buffer): Promise<void> {
    const dir = tempDir();
    const file = path.join(dir, 'f');
    for (let step = 0; step < steps; step++) {
      fs.writeFileSync(file, data);
      const r = await backup(repo, { paths: [dir], time: Date.UTC(2026, 0, 1, 0, step) });
      expect(versionIds(repo, r.snapshot, file)).toEqual(chunkIds(repo, data));
      const at = rng.int(data.length + 1);
      const n = 1 + rng.int(5000);
      switch (rng.int(8)) {
        case 0: data = Buffer.concat([data.subarray(0, at), rng.bytes(n), data.subarray(at)]); break;
        // Zeros next to runs of zeros move where chunks of zeros end (a cut that depends on the byte after it).
        case 6: data = Buffer.concat([data.subarray(0, zerosEnd(data, at)), Buffer.alloc(n), data.subarray(zerosEnd(data, at))]); break;
        case 7: data = Buffer.concat([data.subarray(0, zerosEnd(data, at)), Buffer.alloc(n), data.subarray(Math.min(data.length, zerosEnd(data, at) + n))]); break;
        case 1: data = Buffer.concat([data.subarray(0, at), data.subarray(Math.min(data.length, at + n))]); break;
        case 2: data = Buffer.concat([data.subarray(0, at), rng.bytes(n), data.subarray(Math.min(data.length, at + n))]); break;
        case 3: data = data.subarray(0, Math.max(at, data.length - 200_000)); break;
        case 4: data = Buffer.concat([data, rng.bytes(n)]); break;
        default: data = Buffer.concat([data.subarray(0, at), record, data.subarray(at)]);
      }
    }
  }

  it('confirms unchanged blocks by hash and gives exactly the blocks a full chunking gives', async () => {
    const repo = await makeRepo({ chunkAvg: 1024 });
    const rng = new Rng(21);
    // Random data with runs of zeros and a repeated record, so blocks repeat.
    const record = rng.bytes(3000);
    const data = Buffer.concat([rng.bytes(60_000), Buffer.alloc(20_000), record, record, rng.bytes(40_000), record, Buffer.alloc(9000)]);
    await editAndCompare(repo, data, rng, 40, record);
    // Every version's block list (read a page of data rows at a time) is what a walk of its whole range gives.
    const versions = repo.catalog.db.prepare('SELECT id, size FROM versions WHERE size > 0').all() as { id: number; size: number }[];
    expect(versions.length).toBeGreaterThan(30);
    for (const v of versions) {
      const walked = [...resolveRange(repo.catalog, v.id, 0, v.size - 1)].map((p) => `${p.from === 0 && p.length === p.blockSize ? p.block.toString('hex') : '-'}:${p.length}`);
      const list = blocksOf(repo.catalog, v.id, v.size);
      expect(Array.from({ length: list.length }, (_, i) => `${list.id(i)?.toString('hex') ?? '-'}:${list.end(i) - list.start(i) + 1}`)).toEqual(walked);
    }
    // And the same, all versions at once (a backup's lookup of a directory's small files).
    const many = blocksOfMany(repo.catalog, [...versions, { id: versions[0]!.id, size: 0 }]);
    expect(many.at(-1)!.length).toBe(0);
    versions.forEach((v, i) => {
      const one = blocksOf(repo.catalog, v.id, v.size);
      const list = many[i]!;
      expect(Array.from({ length: list.length }, (_, k) => `${list.id(k)?.toString('hex') ?? '-'}:${list.start(k)}`)).toEqual(Array.from({ length: one.length }, (_, k) => `${one.id(k)?.toString('hex') ?? '-'}:${one.start(k)}`));
    });
  });

  it('reads a version’s blocks through a chain of incrementals with few catalog queries, whatever order its refs point in', async () => {
    // A disk-like file of repeated blocks (zeros, one record, noise): refs point at their first copies, back and forth.
    const repo = await makeRepo({ chunkAvg: 1024 });
    const rng = new Rng(33);
    const record = rng.bytes(2048);
    const parts: Buffer[] = [];
    for (let i = 0; i < 700; i++) parts.push(i % 3 === 0 ? Buffer.alloc(2048 + rng.int(2048)) : i % 3 === 1 ? record : rng.bytes(2048 + rng.int(2048)));
    const data = Buffer.concat(parts);
    const dir = tempDir();
    const file = path.join(dir, 'disk.img');
    for (let v = 0; v < 10; v++) {
      // Scattered overwrites in place, as a VM's disk changes between backups.
      if (v > 0) for (let k = 0; k < 8; k++) rng.bytes(512).copy(data, rng.int(data.length - 512));
      fs.writeFileSync(file, data);
      await backup(repo, { paths: [dir], time: Date.UTC(2026, 0, 1, 0, v) });
    }
    const top = repo.catalog.db.prepare('SELECT id, size FROM versions WHERE size = ? ORDER BY id DESC LIMIT 1').get(data.length) as { id: number; size: number };
    const rows = (repo.catalog.db.prepare('SELECT COUNT(*) AS n FROM toc WHERE version = (SELECT MIN(id) FROM versions WHERE size = ?)').get(data.length) as { n: number }).n;
    expect(rows).toBeGreaterThan(1000);
    const queries = vi.spyOn(repo.catalog, 'tocSpans');
    const at = vi.spyOn(repo.catalog, 'tocSpanAt');
    const list = blocksOf(repo.catalog, top.id, top.size);
    const made = queries.mock.calls.length + at.mock.calls.length;
    vi.restoreAllMocks();
    const walked = [...resolveRange(repo.catalog, top.id, 0, top.size - 1)].map((p) => `${p.from === 0 && p.length === p.blockSize ? p.block.toString('hex') : '-'}:${p.length}`);
    expect(Array.from({ length: list.length }, (_, i) => `${list.id(i)?.toString('hex') ?? '-'}:${list.end(i) - list.start(i) + 1}`)).toEqual(walked);
    // A query per ref and hop (hundreds here) made each incremental slower than the one before it.
    expect(made, `${made} queries for ${rows} rows`).toBeLessThan(rows / 6);
    repo.close();
  });

  it('confirms the unchanged runs of a large file on the workers, with the same result', async () => {
    const repo = await makeRepo({ chunkAvg: 4096 });
    const rng = new Rng(22);
    const record = rng.bytes(3000);
    const parts: Buffer[] = [];
    for (let i = 0; i < 40; i++) parts.push(rng.bytes(100_000 + rng.int(50_000)), i % 3 ? record : Buffer.alloc(30_000));
    const confirm = vi.spyOn(SealPool.prototype, 'confirm');
    await editAndCompare(repo, Buffer.concat(parts), rng, 12, record);
    expect(confirm.mock.calls.length).toBeGreaterThan(20);
    confirm.mockRestore();
  });
});

describe('directories', () => {
  it('an unchanged directory keeps its tree; a change after many equal entries lists every entry', async () => {
    const repo = await makeRepo();
    const dir = tempDir();
    for (let i = 0; i < 50; i++) fs.writeFileSync(path.join(dir, `f${String(i).padStart(2, '0')}`), `file ${i}`);
    const snap = async (i: number) => (await findSnapshot(repo, { kind: 'id', prefix: (await backup(repo, { paths: [dir], time: Date.UTC(2026, 0, 1, i) })).snapshot }));
    const one = await snap(0);
    const two = await snap(1);
    // The directory's own tree (the root's changes with /tmp's mtime while other tests run).
    const treeOf = async (s: typeof one) => (await s.lookup(dir))!.tree;
    expect(await treeOf(two)).toBe(await treeOf(one));
    fs.writeFileSync(path.join(dir, 'f40'), 'changed');
    fs.writeFileSync(path.join(dir, 'g'), 'new');
    const three = await snap(2);
    const listing = async (s: typeof one) => {
      const entry = await s.lookup(dir);
      return (await s.tree(entry!.tree!)).entries.map((e) => `${e.name}:${e.size}`);
    };
    const before = Array.from({ length: 50 }, (_, i) => `f${String(i).padStart(2, '0')}:${`file ${i}`.length}`);
    expect(await listing(two)).toEqual(before);
    expect(await listing(three)).toEqual([...before.slice(0, 40), 'f40:7', ...before.slice(41), 'g:3']);
  });
});

describe('many files in one directory', () => {
  it('parent versions come in batches, in the order asked; unchanged files are inherited, changed ones are stored; all read back', async () => {
    const repo = await makeRepo();
    const dir = tempDir();
    const rng = new Rng(31);
    const files = new Map<string, Buffer>();
    const write = (name: string, data: Buffer) => {
      fs.writeFileSync(path.join(dir, name), data);
      files.set(path.join(dir, name), data);
    };
    // Sizes differ, so a row handed to the wrong file would show.
    for (let i = 0; i < 2500; i++) write(`f${i}`, rng.bytes(10 + rng.int(300)));
    const snap = async (i: number) => findSnapshot(repo, { kind: 'id', prefix: (await backup(repo, { paths: [dir], time: Date.UTC(2026, 0, 1, i) })).snapshot });
    const one = await snap(0);
    const first = new Map(files);
    for (const i of [5, 1500, 2499]) write(`f${i}`, rng.bytes(200));
    write('new', rng.bytes(50));
    const batched = vi.spyOn(repo.service, 'parentVersions');
    const two = await snap(1);
    // Of the directory's 2,501 files only the three changed and the new one are asked about, with their batches of 1,024
    // (unchanged files are inherited without a question, and the directory itself needs none).
    const asked = batched.mock.calls.map((c) => c[1].length);
    expect(asked.reduce((a, b) => a + b, 0)).toBe(4);
    expect(asked.length).toBeLessThanOrEqual(3);
    batched.mockRestore();
    // In the order asked, a path without a version included.
    const ids = [...first.keys()].slice(0, 40).map((p) => repo.keyring.pathId(p));
    ids.splice(7, 0, repo.keyring.pathId(path.join(dir, 'nowhere')));
    expect(repo.catalog.versions(one.row.seq, ids)).toEqual(ids.map((id) => repo.catalog.version(one.row.seq, id)));
    expect(repo.catalog.versions(one.row.seq, ids)[7]).toBeUndefined();
    for (const [s, expected] of [[one, first], [two, files]] as const) {
      for (const [p, data] of expected) {
        const f = await openFile(s, p);
        const parts: Buffer[] = [];
        for await (const b of readRange(repo, f.version, 0, f.version.size - 1)) parts.push(Buffer.from(b));
        expect(Buffer.concat(parts).equals(data), p).toBe(true);
      }
    }
    // An unchanged file keeps its version: the second snapshot inherits it, with no row of its own.
    const p = path.join(dir, 'f6');
    const was = repo.catalog.version(one.row.seq, repo.keyring.pathId(p))!;
    expect(repo.catalog.version(two.row.seq, repo.keyring.pathId(p))).toEqual(was);
    expect(repo.catalog.ownVersion(two.row.seq, repo.keyring.pathId(p))).toBeUndefined();
    expect(repo.catalog.toc(repo.catalog.version(two.row.seq, repo.keyring.pathId(path.join(dir, 'f5')))!.id).some((r) => r.block !== null)).toBe(true);
  });
});

describe('long reads', () => {
  it('let the event loop turn (Ctrl-C, progress and worker answers wait for it)', async () => {
    const repo = await makeRepo();
    const file = path.join(tempDir(), 'big');
    fs.writeFileSync(file, new Rng(8).bytes(40 * 1024 * 1024));
    const chunker = new Chunker(repo.chunker, repo.gear, windowBytes(1024 * 1024, repo.chunker.max));
    /** Whether a callback queued before the read ran before its last block. */
    const turnsDuring = async (blocks: AsyncIterable<{ length: number } | { data: Buffer }>) => {
      let turned = false;
      let seenTurn = false;
      setImmediate(() => (turned = true));
      for await (const b of blocks) {
        void b;
        if (turned) seenTurn = true;
      }
      return seenTurn;
    };
    const fd = fs.openSync(file, 'r');
    try {
      const previous = new BlockList();
      for await (const c of freshChunks(fd, chunker, () => {})) previous.push(repo.keyring.blockId(c), c.length);
      expect(await turnsDuring(freshChunks(fd, chunker, () => {}))).toBe(true);
      // Every block confirmed by its hash: no chunker, no worker, only reads.
      expect(await turnsDuring(alignedBlocks(fd, chunker, previous, (d) => repo.keyring.blockId(d), () => {}))).toBe(true);
    } finally {
      fs.closeSync(fd);
    }
  });
});
