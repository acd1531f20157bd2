/**
 * The seed's FIGS. 6 and 7, built exactly: reference blocks with offsets, and
 * chains of references across incrementals.
 */
import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { metaAad } from '../src/engine/snapshot.js';
import { blocksOf, resolveRange } from '../src/catalog/resolve.js';
import { BlockList } from '../src/catalog/blocklist.js';
import { diffBlocks, offsetOf, referenceBlocks, type BlockSpan, type TocEntry } from '../src/catalog/toc.js';
import { storeVersion } from '../src/engine/versions.js';
import { type TargetVersion } from '../src/catalog/toc-rows.js';
import { encodeBlock } from '../src/repo/blockcodec.js';
import type { Packer } from '../src/repo/packer.js';
import type { Repository } from '../src/repo/repository.js';
import { makeRepo } from './helpers.js';

function spans(repo: Repository, blocks: Buffer[]): BlockSpan[] {
  let pos = 0;
  return blocks.map((b) => {
    const s = { id: repo.keyring.blockId(b), start: pos, end: pos + b.length - 1 };
    pos += b.length;
    return s;
  });
}

async function storeBlocks(repo: Repository, packer: Packer, blocks: Buffer[]): Promise<void> {
  for (const b of blocks) {
    const id = repo.keyring.blockId(b);
    if (!packer.has(id)) await packer.add(id, 'data', encodeBlock(repo.keyring.encKey, id, b, 3), b.length);
  }
  await packer.flush();
}

/** Stores one version of path "/f" in a new snapshot, aligned with `prev`. */
async function storeFileVersion(repo: Repository, blocks: Buffer[], prev?: { version: TargetVersion; blocks: Buffer[] }) {
  const packer = repo.newPacker();
  await storeBlocks(repo, packer, blocks);
  const snapshotId = randomBytes(32).toString('hex');
  const seq = repo.catalog.beginSnapshot(snapshotId, Date.now(), Buffer.alloc(32), repo.keyring.sealJson({ host: 'h', tags: [], paths: ['/f'] }, metaAad(snapshotId)), null);
  const entries = diffBlocks(prev ? spans(repo, prev.blocks) : [], spans(repo, blocks));
  const size = blocks.reduce((n, b) => n + b.length, 0);
  const id = await storeVersion(repo.catalog, repo.keyring, packer, 3, {
    snapshotSeq: seq,
    snapshotId,
    pathId: repo.keyring.pathId('/f'),
    size,
    entries,
    target: prev?.version,
  });
  await packer.flush();
  return { entries, version: { id, snapshotId, depth: repo.catalog.versionById(id)!.depth } as TargetVersion, blocks, size };
}

async function readAll(repo: Repository, version: number, start: number, end: number): Promise<Buffer> {
  const parts: Buffer[] = [];
  for (const p of resolveRange(repo.catalog, version, start, end)) {
    parts.push((await repo.readBlob(p.block)).subarray(p.from, p.from + p.length));
  }
  return Buffer.concat(parts);
}

describe("FIG. 6: an incremental whose second block grew by one byte", () => {
  // Baseline blocks 912, 914, 916, 918 at 0-1FA, 1FB-2ED, 2EE-531, 532-678.
  const b912 = randomBytes(0x1fa + 1);
  const b914 = randomBytes(0x2ed - 0x1fb + 1);
  const b916 = randomBytes(0x531 - 0x2ee + 1);
  const b918 = randomBytes(0x678 - 0x532 + 1);
  // Block 922 is block 914 plus the data "A": 1FB-2EE.
  const b922 = Buffer.concat([b914, Buffer.from('A')]);

  it('lays out the baseline as the seed does', async () => {
    const repo = await makeRepo();
    const base = spans(repo, [b912, b914, b916, b918]);
    expect(base.map((s) => [s.start, s.end])).toEqual([
      [0x0, 0x1fa],
      [0x1fb, 0x2ed],
      [0x2ee, 0x531],
      [0x532, 0x678],
    ]);
    repo.close();
  });

  it('holds block 922 as data and REF 1, REF 2, REF 3 with their offsets', async () => {
    const repo = await makeRepo();
    const base = spans(repo, [b912, b914, b916, b918]);
    const inc = spans(repo, [b912, b922, b916, b918]);
    const toc = diffBlocks(base, inc);

    // Stored form: one ref entry per maximal run of unchanged bytes.
    expect([...toc]).toEqual([
      { kind: 'ref', start: 0x0, end: 0x1fa, targetStart: 0x0, targetEnd: 0x1fa },
      { kind: 'data', start: 0x1fb, end: 0x2ee, block: repo.keyring.blockId(b922) },
      { kind: 'ref', start: 0x2ef, end: 0x679, targetStart: 0x2ee, targetEnd: 0x678 },
    ]);

    // The seed's view: one reference block per unchanged baseline block.
    const refs = referenceBlocks(toc, BlockList.from(base)).filter((e) => e.kind === 'ref');
    expect(refs.map((e) => [e.start, e.end, (e as Extract<TocEntry, { kind: 'ref' }>).targetStart, (e as Extract<TocEntry, { kind: 'ref' }>).targetEnd])).toEqual([
      [0x0, 0x1fa, 0x0, 0x1fa], // REF 1
      [0x2ef, 0x532, 0x2ee, 0x531], // REF 2
      [0x533, 0x679, 0x532, 0x678], // REF 3
    ]);
    expect(refs.map((e) => offsetOf(e as Extract<TocEntry, { kind: 'ref' }>))).toEqual([0, 1, 1]);
    repo.close();
  });

  it('stores both versions and reads any range of either byte-exact', async () => {
    const repo = await makeRepo();
    const v0 = await storeFileVersion(repo, [b912, b914, b916, b918]);
    const v1 = await storeFileVersion(repo, [b912, b922, b916, b918], { version: v0.version, blocks: v0.blocks });
    const plain0 = Buffer.concat([b912, b914, b916, b918]);
    const plain1 = Buffer.concat([b912, b922, b916, b918]);
    // A client asking the incremental for 2EF-532 gets block 916, not parts of 916 and 918.
    expect(await readAll(repo, v1.version.id, 0x2ef, 0x532)).toEqual(b916);
    expect(await readAll(repo, v0.version.id, 0x2ee, 0x531)).toEqual(b916);
    for (let i = 0; i < 200; i++) {
      const s = Math.floor(Math.random() * plain1.length);
      const e = s + Math.floor(Math.random() * (plain1.length - s));
      expect(await readAll(repo, v1.version.id, s, e)).toEqual(plain1.subarray(s, e + 1));
      const s0 = Math.min(s, plain0.length - 1);
      const e0 = Math.min(e, plain0.length - 1);
      expect(await readAll(repo, v0.version.id, s0, e0)).toEqual(plain0.subarray(s0, e0 + 1));
    }
    // The catalog's rows carry the target version and the offset.
    const rows = repo.catalog.toc(v1.version.id);
    expect(rows.map((r) => [r.start, r.end, r.target, r.target_start])).toEqual([
      [0x0, 0x1fa, v0.version.id, 0x0],
      [0x1fb, 0x2ee, null, null],
      [0x2ef, 0x679, v0.version.id, 0x2ee],
    ]);
    // Seen through the stored baseline, the same three reference blocks.
    const view = referenceBlocks(v1.entries, blocksOf(repo.catalog, v0.version.id, v0.size)).filter((e) => e.kind === 'ref');
    expect(view).toHaveLength(3);
    repo.close();
  });
});

describe('FIG. 7: references to references, across incrementals', () => {
  const A = randomBytes(3000); // block 952
  const X = randomBytes(2000);
  const C = randomBytes(2500);
  const Y = randomBytes(1900);
  const Z = randomBytes(2100);
  const D = randomBytes(2200); // block 974
  const W = randomBytes(1800);

  it('chains 982 -> 972 -> 962 -> 952 and 984 -> 974, and reads them back', async () => {
    const repo = await makeRepo();
    const base = await storeFileVersion(repo, [A, X, C]); // baseline 950
    const inc1 = await storeFileVersion(repo, [A, Y, C], { version: base.version, blocks: base.blocks }); // 960
    const inc2 = await storeFileVersion(repo, [A, Z, D], { version: inc1.version, blocks: inc1.blocks }); // 970
    const incN = await storeFileVersion(repo, [A, W, D], { version: inc2.version, blocks: inc2.blocks }); // 980

    // 962: a ref in the first incremental to block 952 of the baseline.
    const r962 = repo.catalog.tocAt(inc1.version.id, 0)!;
    expect(r962.block).toBeNull();
    expect(r962.target).toBe(base.version.id);
    expect(repo.catalog.tocAt(base.version.id, r962.target_start!)!.block).toEqual(repo.keyring.blockId(A));

    // 972: a ref in the second incremental to ref 962; 974 is its new block.
    const r972 = repo.catalog.tocAt(inc2.version.id, 0)!;
    expect(r972.target).toBe(inc1.version.id);
    expect(repo.catalog.tocAt(inc1.version.id, r972.target_start!)!.start).toBe(r962.start);
    const b974 = repo.catalog.tocAt(inc2.version.id, A.length + Z.length)!;
    expect(b974.block).toEqual(repo.keyring.blockId(D));

    // 982 -> 972 and 984 -> 974, both in the nth incremental's TOC.
    const r982 = repo.catalog.tocAt(incN.version.id, 0)!;
    const r984 = repo.catalog.tocAt(incN.version.id, A.length + W.length)!;
    expect(r982.target).toBe(inc2.version.id);
    expect(r984.target).toBe(inc2.version.id);
    expect(r984.target_start).toBe(b974.start);
    expect([...incN.entries].map((e) => e.kind)).toEqual(['ref', 'data', 'ref']);

    // Reads take the shortcut: 982 resolves straight to the baseline.
    expect(r982.root).toBe(base.version.id);
    expect(r984.root).toBe(inc2.version.id);

    const plainN = Buffer.concat([A, W, D]);
    expect(await readAll(repo, incN.version.id, 0, plainN.length - 1)).toEqual(plainN);
    expect(await readAll(repo, incN.version.id, 10, 2999)).toEqual(A.subarray(10));
    expect(await readAll(repo, inc2.version.id, 0, A.length + Z.length + D.length - 1)).toEqual(Buffer.concat([A, Z, D]));
    repo.close();
  });
});

describe('diffBlocks', () => {
  const id = (n: number) => Buffer.alloc(32, n);
  const seq = (ids: number[], size = 10): BlockSpan[] => ids.map((n, i) => ({ id: id(n), start: i * size, end: i * size + size - 1 }));

  it('gives a baseline data entries only', () => {
    expect([...diffBlocks([], seq([1, 2, 3]))].every((e) => e.kind === 'data')).toBe(true);
  });

  it('makes one ref of an unchanged file', () => {
    expect([...diffBlocks(seq([1, 2, 3]), seq([1, 2, 3]))]).toEqual([{ kind: 'ref', start: 0, end: 29, targetStart: 0, targetEnd: 29 }]);
  });

  it('follows moved ranges and picks the nearest of repeated blocks', () => {
    const toc = diffBlocks(seq([7, 7, 7, 1, 2]), seq([9, 7, 7, 7, 1, 2]));
    expect([...toc]).toEqual([
      { kind: 'data', start: 0, end: 9, block: id(9) },
      { kind: 'ref', start: 10, end: 59, targetStart: 0, targetEnd: 49 },
    ]);
  });

  it('tells apart ids that share their first bytes (the index hashes a prefix)', () => {
    const near = (n: number) => Buffer.concat([Buffer.alloc(4, 1), Buffer.alloc(28, n)]);
    const spans = (ids: Buffer[]): BlockSpan[] => ids.map((b, i) => ({ id: b, start: i * 10, end: i * 10 + 9 }));
    const toc = [...diffBlocks(spans([near(1), near(2), near(3)]), spans([near(3), near(4), near(1)]))];
    expect(toc.map((e) => [e.kind, e.start, e.kind === 'ref' ? e.targetStart : -1])).toEqual([
      ['ref', 0, 20],
      ['data', 10, -1],
      ['ref', 20, 0],
    ]);
  });

  it('stays small when one block of many changes', () => {
    const n = 20_000;
    const prev = seq(Array.from({ length: n }, (_, i) => i % 250));
    const cur = prev.map((s, i) => (i === n / 2 ? { ...s, id: Buffer.alloc(32, 255) } : s));
    expect(diffBlocks(prev, cur)).toHaveLength(3);
  });
});

describe('BlockList', () => {
  it('pushFrom appends a run of another list: ids, unknown ids and lengths', () => {
    const id = (n: number) => Buffer.alloc(32, n);
    const from = BlockList.from([
      { id: id(1), start: 0, end: 9 },
      { id: null, start: 10, end: 14 },
      { id: id(3), start: 15, end: 114 },
      { id: id(4), start: 115, end: 115 },
    ]);
    const list = new BlockList(1);
    list.push(id(9), 7);
    list.pushFrom(from, 1, 3);
    expect(list.length).toBe(4);
    expect(list.size).toBe(7 + 5 + 100 + 1);
    expect([0, 1, 2, 3].map((i) => [list.start(i), list.end(i), list.id(i)?.[0] ?? null])).toEqual([
      [0, 6, 9],
      [7, 11, null],
      [12, 111, 3],
      [112, 112, 4],
    ]);
    expect(list.sameId(2, from, 2)).toBe(true);
  });

  it('grows from its small start without losing or inventing an id', () => {
    const id = (n: number) => Buffer.alloc(32, n % 256);
    const list = new BlockList();
    for (let i = 0; i < 1000; i++) {
      if (i % 7 === 3) list.push(null, i + 1);
      else if (i % 5 === 0) list.pushHex(id(i).toString('hex'), i + 1);
      else list.push(id(i), i + 1);
    }
    expect(list.length).toBe(1000);
    expect(list.size).toBe((1000 * 1001) / 2);
    for (let i = 0; i < 1000; i++) {
      expect(list.id(i)?.equals(id(i)) ?? null).toBe(i % 7 === 3 ? null : true);
      expect(list.end(i) - list.start(i) + 1).toBe(i + 1);
    }
    // A TOC of many entries grows from its small start too.
    const whole = new BlockList();
    for (let i = 0; i < 1000; i++) whole.push(id(i), i + 1);
    const toc = [...diffBlocks([], whole)];
    expect(toc).toHaveLength(1000);
    expect(toc.every((e, i) => e.kind === 'data' && e.start === whole.start(i) && e.end === whole.end(i) && e.block.equals(id(i)))).toBe(true);
  });
});
