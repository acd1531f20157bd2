/**
 * Inherited versions: a snapshot holds catalog rows only for the files that
 * changed since its parent, and a tombstone for each file it no longer has.
 * Random edit histories, forgets that hand rows down to children, branches,
 * and a rebuilt catalog must all read back byte-exact against an oracle.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it, vi } from 'vitest';
import { backup } from '../src/engine/backup.js';
import { check } from '../src/engine/check.js';
import { forget } from '../src/engine/forget.js';
import { prune } from '../src/engine/prune.js';
import { findSnapshot, Snapshot } from '../src/engine/snapshot.js';
import { Repository } from '../src/repo/repository.js';
import { loseCatalogAndRebuild, makeRepo, readWhole, Rng, tempDir } from './helpers.js';

/** What a snapshot should hold: file path to contents. */
type Oracle = Map<string, Buffer>;

/** Every file of every snapshot reads back; every path a snapshot lacks has no version in the catalog. */
async function verify(repo: Repository, snaps: Map<string, Oracle>, everPaths: Set<string>): Promise<void> {
  for (const [id, oracle] of snaps) {
    const seq = (await findSnapshot(repo, { kind: 'id', prefix: id })).row.seq;
    for (const p of everPaths) {
      const want = oracle.get(p);
      const v = repo.catalog.version(seq, repo.keyring.pathId(p));
      if (!want) {
        expect(v, `${p} in ${id.slice(0, 8)}`).toBeUndefined();
        continue;
      }
      expect(v?.size, `${p} in ${id.slice(0, 8)}`).toBe(want.length);
      expect((await readWhole(repo, id, p)).equals(want), `${p} in ${id.slice(0, 8)}`).toBe(true);
    }
  }
}

/** Walks `dir` into an oracle of its files. */
function snapshotOf(dir: string): Oracle {
  const out: Oracle = new Map();
  const walk = (d: string) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.isFile()) out.set(p, fs.readFileSync(p));
    }
  };
  walk(dir);
  return out;
}

/** One random edit of the tree: change, add, delete a file or a directory, or turn one into the other. */
function edit(dir: string, rng: Rng): void {
  const files = [...snapshotOf(dir).keys()];
  const dirs = fs.readdirSync(dir, { recursive: true, withFileTypes: true }).filter((e) => e.isDirectory()).map((e) => path.join(e.parentPath, e.name));
  const pick = <T>(xs: T[]) => xs[rng.int(xs.length)]!;
  switch (rng.int(7)) {
    case 0:
    case 1: {
      if (files.length === 0) break;
      const f = pick(files);
      const data = fs.readFileSync(f);
      const at = rng.int(data.length + 1);
      fs.writeFileSync(f, Buffer.concat([data.subarray(0, at), rng.bytes(1 + rng.int(2000)), data.subarray(at + rng.int(500))]));
      break;
    }
    case 2: {
      const where = dirs.length > 0 && rng.int(2) === 0 ? pick(dirs) : dir;
      const sub = rng.int(3) === 0 ? path.join(where, `d${rng.int(1000)}`) : where;
      if (fs.existsSync(sub) && !fs.statSync(sub).isDirectory()) break;
      fs.mkdirSync(sub, { recursive: true });
      const f = path.join(sub, `f${rng.int(1000)}`);
      if (!fs.existsSync(f)) fs.writeFileSync(f, rng.bytes(rng.int(6000)));
      break;
    }
    case 3:
      if (files.length > 0) fs.rmSync(pick(files));
      break;
    case 4:
      if (dirs.length > 0) fs.rmSync(pick(dirs), { recursive: true });
      break;
    case 5: {
      // A file becomes a directory of the same name, or the other way round.
      if (files.length > 0 && rng.int(2) === 0) {
        const f = pick(files);
        fs.rmSync(f);
        fs.mkdirSync(f);
        fs.writeFileSync(path.join(f, 'inner'), rng.bytes(100));
      } else if (dirs.length > 0) {
        const d = pick(dirs);
        fs.rmSync(d, { recursive: true });
        fs.writeFileSync(d, rng.bytes(300));
      }
      break;
    }
    default:
      // Touched, not changed: read again, the same bytes.
      if (files.length > 0) {
        const f = pick(files);
        fs.utimesSync(f, new Date(), new Date(Date.now() + rng.int(100_000)));
      }
  }
}

describe('inherited versions', () => {
  it('a deleted file, a deleted directory and a file turned directory leave tombstones; the rest inherits with no rows', async () => {
    const repo = await makeRepo({ chunkAvg: 1024 });
    const dir = tempDir();
    const rng = new Rng(5);
    fs.mkdirSync(path.join(dir, 'sub', 'deep'), { recursive: true });
    for (const f of ['a', 'b', 'c', 'sub/x', 'sub/deep/y']) fs.writeFileSync(path.join(dir, f), rng.bytes(3000));
    const one = await backup(repo, { paths: [dir], time: Date.UTC(2026, 0, 1) });
    fs.rmSync(path.join(dir, 'a'));
    fs.rmSync(path.join(dir, 'sub'), { recursive: true });
    fs.rmSync(path.join(dir, 'b'));
    fs.mkdirSync(path.join(dir, 'b'));
    fs.writeFileSync(path.join(dir, 'b', 'x'), 'x');
    const two = await backup(repo, { paths: [dir], time: Date.UTC(2026, 0, 2), excludes: [path.join(dir, 'c')] });
    const seq = (id: string) => repo.catalog.snapshotsByPrefix(id)[0]!.seq;
    const rows = repo.catalog.ownRows(seq(two.snapshot));
    // Five tombstones and the new b/x: c is excluded, so gone too.
    expect(rows.map((r) => r.size).sort()).toEqual([-1, -1, -1, -1, -1, 1]);
    for (const f of ['a', 'b', 'c', 'sub/x', 'sub/deep/y']) {
      const id = repo.keyring.pathId(path.join(dir, f));
      expect(repo.catalog.version(seq(one.snapshot), id)?.size).toBe(3000);
      expect(repo.catalog.version(seq(two.snapshot), id)).toBeUndefined();
    }
    // The whole table a served backup fetches of its parent: own and inherited versions, no tombstones.
    fs.writeFileSync(path.join(dir, 'd'), 'dee');
    const mid = await backup(repo, { paths: [dir], time: Date.UTC(2026, 0, 2, 12) });
    const table = repo.catalog.versionPaths(seq(mid.snapshot));
    // (c, excluded from the last backup, is back as a new file.)
    expect(table.map((r) => r.path.toString('hex')).sort()).toEqual(['b/x', 'c', 'd'].map((f) => repo.keyring.pathId(path.join(dir, f)).toString('hex')).sort());
    expect(table.find((r) => r.path.equals(repo.keyring.pathId(path.join(dir, 'd'))))).toMatchObject({ size: 3, end: 2 });
    // Back again: a new row, read back.
    fs.writeFileSync(path.join(dir, 'a'), 'again');
    const three = await backup(repo, { paths: [dir], time: Date.UTC(2026, 0, 3) });
    expect((await readWhole(repo, three.snapshot, path.join(dir, 'a'))).toString()).toBe('again');
    expect(three.filesNew).toBe(1);
    expect((await readWhole(repo, three.snapshot, path.join(dir, 'd'))).toString()).toBe('dee');
  });

  it('random edit histories, forgets in any order, branches and a rebuilt catalog read back byte-exact', async () => {
    for (const seed of [1, 2, 3]) {
      const repo = await makeRepo({ chunkAvg: 1024 });
      const dir = tempDir();
      const rng = new Rng(100 + seed);
      for (let i = 0; i < 6; i++) fs.writeFileSync(path.join(dir, `f${i}`), rng.bytes(rng.int(5000)));
      const snaps = new Map<string, Oracle>();
      const everPaths = new Set<string>();
      const ids: string[] = [];
      for (let step = 0; step < 12; step++) {
        if (step > 0) for (let k = 1 + rng.int(3); k > 0; k--) edit(dir, rng);
        const oracle = snapshotOf(dir);
        for (const p of oracle.keys()) everPaths.add(p);
        // Now and then a branch: a backup against an older snapshot than the latest.
        const parent = step > 3 && rng.int(4) === 0 ? ids[rng.int(ids.length)] : undefined;
        const r = await backup(repo, { paths: [dir], time: Date.UTC(2026, 0, 1, step), ...(parent ? { parent } : {}) });
        ids.push(r.snapshot);
        snaps.set(r.snapshot, oracle);
      }
      await verify(repo, snaps, everPaths);
      // Deeper than the chain walked one by one: the lookup by path's rows.
      expect(repo.catalog.db.prepare('SELECT MAX(inherits) FROM snapshots').pluck().get()).toBe(1);

      for (const round of [0, 1]) {
        const doomed = [...snaps.keys()].filter(() => rng.int(3) === 0).slice(0, 4);
        if (round === 1 && doomed.length === 0) doomed.push([...snaps.keys()][0]!);
        await forget(repo, { ids: doomed });
        for (const id of doomed) snaps.delete(id);
        await verify(repo, snaps, everPaths);
      }
      await prune(repo);
      await verify(repo, snaps, everPaths);
      expect((await check(repo, { readData: true })).errors).toEqual([]);

      const { fresh, r } = await loseCatalogAndRebuild(repo);
      expect(r.problems).toEqual([]);
      await verify(fresh, snaps, everPaths);
      fresh.close();
    }
  });

  it('a tree unpacked anew (every inode new) keeps no row and no TOC for a file whose bytes are the same, and rebuilds', async () => {
    const repo = await makeRepo({ chunkAvg: 1024 });
    const rng = new Rng(21);
    const one = tempDir();
    const files = ['a', 'b', 'sub/c', 'sub/empty'];
    fs.mkdirSync(path.join(one, 'sub'));
    for (const f of files) fs.writeFileSync(path.join(one, f), f === 'sub/empty' ? '' : rng.bytes(5000));
    const src = path.join(tempDir(), 'release');
    fs.cpSync(one, src, { recursive: true });
    const first = await backup(repo, { paths: [src], time: Date.UTC(2026, 0, 1) });
    // The next release: the whole tree written again, one file edited.
    fs.rmSync(src, { recursive: true });
    fs.cpSync(one, src, { recursive: true });
    const b = fs.readFileSync(path.join(src, 'b'));
    fs.writeFileSync(path.join(src, 'b'), Buffer.concat([b.subarray(0, 100), Buffer.from('edit'), b.subarray(100)]));
    const second = await backup(repo, { paths: [src], time: Date.UTC(2026, 0, 2) });
    expect(second).toMatchObject({ filesChanged: 1, filesUnchanged: 3, filesNew: 0 });
    const seq = repo.catalog.snapshotsByPrefix(second.snapshot)[0]!.seq;
    expect(repo.catalog.ownRows(seq)).toHaveLength(1);
    const want = new Map(files.map((f) => [path.join(src, f), fs.readFileSync(path.join(src, f))]));
    for (const [p, data] of want) expect((await readWhole(repo, second.snapshot, p)).equals(data), p).toBe(true);
    const snap = await findSnapshot(repo, { kind: 'id', prefix: second.snapshot });
    expect((await snap.lookup(path.join(src, 'a')))?.parentContent).toMatch(/^[0-9a-f]{32}$/);
    expect((await snap.lookup(path.join(src, 'b')))?.parentContent).toBeUndefined();
    // Unpacked once more, nothing edited; then the snapshot between goes: its child's marks find the first one's versions.
    const tree = fs.mkdtempSync(path.join(path.dirname(src), 'copy'));
    fs.cpSync(src, tree, { recursive: true });
    fs.rmSync(src, { recursive: true });
    fs.renameSync(tree, src);
    const third = await backup(repo, { paths: [src], time: Date.UTC(2026, 0, 3) });
    expect(third).toMatchObject({ filesChanged: 0, filesUnchanged: 4 });
    await forget(repo, { ids: [second.snapshot] });
    const { fresh, r } = await loseCatalogAndRebuild(repo);
    expect(r.problems).toEqual([]);
    for (const [p, data] of want) expect((await readWhole(fresh, third.snapshot, p)).equals(data), p).toBe(true);
    expect((await readWhole(fresh, first.snapshot, path.join(src, 'b'))).equals(b)).toBe(true);
    expect((await check(fresh, { readData: true })).errors).toEqual([]);
    fresh.close();
  });

  // Small files are checked in groups on the main thread; groups of a megabyte or more on the workers (backup-file.ts, SAME_BYTES).
  it.each([
    ['small files, checked here', 300, 6000],
    ['large files, checked on the workers', 30_000, 400_000],
  ])('a file unpacked anew with its size and mtime but other bytes is stored as changed, in any of its blocks (%s)', async (_what, odd, even) => {
    const repo = await makeRepo({ chunkAvg: 1024 });
    const rng = new Rng(22);
    const src = tempDir();
    const names = Array.from({ length: 40 }, (_, i) => `f${i}`);
    const original = new Map(names.map((n, i) => [n, rng.bytes(i % 2 ? odd : even)]));
    const write = (edited: Map<string, Buffer>) => {
      for (const n of names) {
        const p = path.join(src, n);
        fs.rmSync(p, { force: true });
        fs.writeFileSync(p, edited.get(n) ?? original.get(n)!);
        fs.utimesSync(p, 1_700_000_000, 1_700_000_000);
      }
    };
    write(new Map());
    await backup(repo, { paths: [src], time: Date.UTC(2026, 0, 1) });
    // Every file written anew (new inode and ctime, same mtime); in some, a byte flipped in one block or another.
    const edited = new Map<string, Buffer>();
    for (const n of names.filter((_, i) => i % 3 === 0)) {
      const data = Buffer.from(original.get(n)!);
      data[rng.int(data.length)]! ^= 0x5a;
      edited.set(n, data);
    }
    write(edited);
    const second = await backup(repo, { paths: [src], time: Date.UTC(2026, 0, 2) });
    expect(second).toMatchObject({ filesChanged: edited.size, filesUnchanged: names.length - edited.size, bytesRead: [...original.values()].reduce((a, b) => a + b.length, 0) });
    for (const n of names) expect((await readWhole(repo, second.snapshot, path.join(src, n))).equals(edited.get(n) ?? original.get(n)!), n).toBe(true);
  });

  it('a file inherited by its content mark is checked without the tree of the snapshot that stored it', async () => {
    const repo = await makeRepo({ chunkAvg: 1024 });
    const rng = new Rng(23);
    const src = tempDir();
    const data = rng.bytes(5000);
    fs.writeFileSync(path.join(src, 'f'), data);
    await backup(repo, { paths: [src], time: Date.UTC(2026, 0, 1) });
    // Unpacked anew: a new inode, the same bytes, so the second snapshot inherits the first one's version by its mark.
    fs.rmSync(path.join(src, 'f'));
    fs.writeFileSync(path.join(src, 'f'), data);
    const second = await backup(repo, { paths: [src], time: Date.UTC(2026, 0, 2) });
    expect(second.filesUnchanged).toBe(1);
    const root = repo.root;
    repo.close();
    const fresh = await Repository.open(root, { password: async () => 'test-password' });
    const snap = await findSnapshot(fresh, { kind: 'id', prefix: second.snapshot });
    const ownTrees = new Set<string>();
    for (let dir = src; ; dir = path.dirname(dir)) {
      const e = dir === '/' ? undefined : await snap.lookup(dir);
      if (e?.tree) ownTrees.add(e.tree);
      if (dir === '/') break;
    }
    ownTrees.add(snap.root!.tree!);
    const read = vi.spyOn(fresh, 'readBlob');
    expect((await readWhole(fresh, second.snapshot, path.join(src, 'f'))).equals(data)).toBe(true);
    const trees = read.mock.calls.filter(([, kind]) => kind === 'tree').map(([id]) => id.toString('hex'));
    expect(trees.filter((t) => !ownTrees.has(t))).toEqual([]);
    fresh.close();
  });

  it('a parent tree that cannot be read stops the backup with a clear error, and --parent another snapshot gets past it', async () => {
    const repo = await makeRepo();
    const dir = tempDir();
    fs.mkdirSync(path.join(dir, 'sub'));
    fs.writeFileSync(path.join(dir, 'sub', 'f'), 'f');
    const first = await backup(repo, { paths: [dir], time: Date.UTC(2026, 0, 1) });
    fs.writeFileSync(path.join(dir, 'sub', 'g'), 'g');
    const second = await backup(repo, { paths: [dir], time: Date.UTC(2026, 0, 2) });
    // Damage the second snapshot's tree of sub (the first one's is another blob).
    const snap = await findSnapshot(repo, { kind: 'id', prefix: second.snapshot });
    const sub = (await snap.lookup(path.join(dir, 'sub')))!;
    const loc = repo.catalog.blockLocation(Buffer.from(sub.tree!, 'hex'))!;
    const fd = fs.openSync(path.join(repo.root, 'packs', loc.pack.slice(0, 2), loc.pack), 'r+');
    fs.writeSync(fd, Buffer.from([0xff, 0xff, 0xff, 0xff]), 0, 4, loc.offset + 20);
    fs.closeSync(fd);
    repo.close();
    fs.writeFileSync(path.join(dir, 'sub', 'h'), 'h');
    const reopened = await Repository.open(repo.root, { password: async () => 'test-password' });
    await expect(backup(reopened, { paths: [dir], time: Date.UTC(2026, 0, 3) })).rejects.toThrow(/cannot read tree [0-9a-f]+ of the parent snapshot/);
    const third = await backup(reopened, { paths: [dir], time: Date.UTC(2026, 0, 3), parent: first.snapshot });
    expect((await readWhole(reopened, third.snapshot, path.join(dir, 'sub', 'h'))).toString()).toBe('h');
    expect((await readWhole(reopened, third.snapshot, path.join(dir, 'sub', 'f'))).toString()).toBe('f');
    reopened.close();
  });

  it('a catalog open in another process sees forgets, and a forgotten snapshot\'s number is not given again', async () => {
    const repo = await makeRepo();
    const dir = tempDir();
    const other = tempDir();
    fs.writeFileSync(path.join(dir, 'a'), 'a');
    fs.writeFileSync(path.join(other, 'o'), 'o');
    await backup(repo, { paths: [dir], time: Date.UTC(2026, 0, 1) });
    const two = await backup(repo, { paths: [dir], time: Date.UTC(2026, 0, 2) });
    const seq = repo.catalog.snapshotsByPrefix(two.snapshot)[0]!.seq;
    const a = repo.keyring.pathId(path.join(dir, 'a'));
    expect(repo.catalog.version(seq, a)).toBeDefined();
    // Elsewhere: the newest snapshot goes, and a backup of other paths (no parent) follows; its number
    // is a new one (were it the one forgotten, a reader keeping that number's chain would mix the two).
    const elsewhere = await Repository.open(repo.root, { password: async () => 'test-password' });
    await forget(elsewhere, { ids: [two.snapshot] });
    const three = await backup(elsewhere, { paths: [other], time: Date.UTC(2026, 0, 3) });
    elsewhere.close();
    const threeSeq = repo.catalog.snapshotsByPrefix(three.snapshot)[0]!.seq;
    expect(threeSeq).toBeGreaterThan(seq);
    expect(repo.catalog.version(seq, a)).toBeUndefined();
    expect(repo.catalog.version(threeSeq, a)).toBeUndefined();
    expect(repo.catalog.version(threeSeq, repo.keyring.pathId(path.join(other, 'o')))).toBeDefined();
  });

  it('an unchanged directory of files is recognised from its stats alone: the parent tree is not read', async () => {
    const repo = await makeRepo();
    const dir = tempDir();
    const leaf = path.join(dir, 'leaf');
    fs.mkdirSync(leaf);
    // Names JSON must escape, and enough entries for the workers to stat them.
    const names = ['plain', 'quo"te', 'back\\slash', 'new\nline', 'tab\t', 'ünï cødé', '😀', 'ctl\u0001'];
    for (let i = 0; i < 300; i++) names.push(`f${i}`);
    for (const [i, n] of names.entries()) fs.writeFileSync(path.join(leaf, n), 'x'.repeat(i % 7));
    fs.symlinkSync('plain', path.join(dir, 'link'));
    await backup(repo, { paths: [dir], time: Date.UTC(2026, 0, 1) });
    const first = await findSnapshot(repo, { kind: 'id', prefix: (await backup(repo, { paths: [dir], time: Date.UTC(2026, 0, 2) })).snapshot });
    const leafTree = (await first.lookup(leaf))!.tree!;
    const read = vi.spyOn(Snapshot.prototype, 'tree');
    const again = await backup(repo, { paths: [dir], time: Date.UTC(2026, 0, 3) });
    expect(read.mock.calls.map((c) => c[0])).not.toContain(leafTree);
    expect(again).toMatchObject({ filesUnchanged: names.length, filesChanged: 0, bytesRead: 0 });
    const snap = await findSnapshot(repo, { kind: 'id', prefix: again.snapshot });
    expect((await snap.lookup(leaf))!.tree).toBe(leafTree);
    // One file changed: the parent tree is read, and only that file is.
    read.mockClear();
    fs.writeFileSync(path.join(leaf, '😀'), 'changed');
    const changed = await backup(repo, { paths: [dir], time: Date.UTC(2026, 0, 4) });
    expect(read.mock.calls.map((c) => c[0])).toContain(leafTree);
    expect(changed).toMatchObject({ filesUnchanged: names.length - 1, filesChanged: 1 });
    read.mockRestore();
    for (const [i, n] of names.entries()) expect((await readWhole(repo, changed.snapshot, path.join(leaf, n))).toString()).toBe(n === '😀' ? 'changed' : 'x'.repeat(i % 7));
  });

  it('two children of one snapshot both keep its files when it is forgotten', async () => {
    const repo = await makeRepo({ chunkAvg: 1024 });
    const dir = tempDir();
    const rng = new Rng(8);
    const keep = rng.bytes(4000);
    fs.writeFileSync(path.join(dir, 'keep'), keep);
    fs.writeFileSync(path.join(dir, 'gone'), rng.bytes(100));
    const base = await backup(repo, { paths: [dir], time: Date.UTC(2026, 0, 1) });
    fs.rmSync(path.join(dir, 'gone'));
    const left = await backup(repo, { paths: [dir], time: Date.UTC(2026, 0, 2) });
    fs.writeFileSync(path.join(dir, 'gone'), 'other');
    const right = await backup(repo, { paths: [dir], time: Date.UTC(2026, 0, 3), parent: base.snapshot });
    expect(right.parent).toBe(base.snapshot);
    await forget(repo, { ids: [base.snapshot] });
    await prune(repo);
    const seq = (id: string) => repo.catalog.snapshotsByPrefix(id)[0]!.seq;
    for (const id of [left.snapshot, right.snapshot]) expect((await readWhole(repo, id, path.join(dir, 'keep'))).equals(keep)).toBe(true);
    expect(repo.catalog.version(seq(left.snapshot), repo.keyring.pathId(path.join(dir, 'gone')))).toBeUndefined();
    expect((await readWhole(repo, right.snapshot, path.join(dir, 'gone'))).toString()).toBe('other');
    // One child took the version over, the other got a copy: both own a row now, with sealed TOCs.
    for (const id of [left.snapshot, right.snapshot]) expect(repo.catalog.ownVersion(seq(id), repo.keyring.pathId(path.join(dir, 'keep')))).toBeDefined();
    expect((await check(repo, { readData: true })).errors).toEqual([]);
    const { fresh, r } = await loseCatalogAndRebuild(repo);
    expect(r.problems).toEqual([]);
    for (const id of [left.snapshot, right.snapshot]) expect((await readWhole(fresh, id, path.join(dir, 'keep'))).equals(keep)).toBe(true);
    fresh.close();
  });
});
