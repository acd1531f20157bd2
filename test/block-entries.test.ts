/**
 * Format 3: a file of one block has that block's id in its tree entry and no
 * sealed TOC. The entry is then the file's sealed truth: reads are checked
 * against it, refs into it are followed through it (also in a snapshot a
 * forget without the key removed), and rebuild-catalog makes the version
 * from it.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it, vi } from 'vitest';
import { backup } from '../src/engine/backup.js';
import { check } from '../src/engine/check.js';
import { forgetWithoutKey } from '../src/engine/forget.js';
import { prune } from '../src/engine/prune.js';
import { rebuildCatalog } from '../src/engine/rebuild.js';
import { findSnapshot } from '../src/engine/snapshot.js';
import { BLOB_KINDS } from '../src/catalog/catalog.js';
import { KeylessRepository, Repository } from '../src/repo/repository.js';
import { FileSaver } from '../src/engine/backup-file.js';
import { loseCatalogAndRebuild, makeRepo, readWhole, Rng, tempDir } from './helpers.js';

const password = async () => 'test-password';

async function entryOf(repo: Repository, snapshot: string, file: string) {
  return (await findSnapshot(repo, { kind: 'id', prefix: snapshot })).lookup(file);
}

function ownRow(repo: Repository, snapshot: string, file: string) {
  return repo.catalog.db.prepare('SELECT id, toc FROM versions WHERE snapshot = ? AND path = ?').get(repo.catalog.snapshotsByPrefix(snapshot)[0]!.seq, repo.keyring.pathId(file)) as
    | { id: number; toc: Buffer | null }
    | undefined;
}

const sealedTocs = (repo: Repository) => repo.catalog.db.prepare('SELECT COUNT(*) FROM blocks WHERE kind = ?').pluck().get(BLOB_KINDS.indexOf('toc')) as number;

// Files of at most 256 bytes are one block whatever the key (the chunker's minimum at an average of 1 KiB).
describe('a file of one block', () => {
  it('is named by its tree entry, with no sealed TOC; refs into it are followed after a forget without the key, a rebuild, and a prune with the key', async () => {
    const repo = await makeRepo({ chunkAvg: 1024 });
    const dir = tempDir();
    const rng = new Rng(31);
    const one = path.join(dir, 'one');
    const grow = path.join(dir, 'grow');
    // Where the repository's keyed chunker cuts is found by backing up the whole file once under another name.
    const whole = rng.bytes(20_000);
    const probe = path.join(dir, 'probe');
    fs.writeFileSync(probe, whole);
    const s0 = (await backup(repo, { paths: [dir], time: Date.UTC(2025, 0, 1) })).snapshot;
    const firstCut = repo.catalog.toc(ownRow(repo, s0, probe)!.id)[0]!.end + 1;
    fs.rmSync(probe);
    const tocsBefore = sealedTocs(repo);
    const first = { one: rng.bytes(200), grow: whole.subarray(0, firstCut) };
    fs.writeFileSync(one, first.one);
    fs.writeFileSync(grow, first.grow);
    const s1 = (await backup(repo, { paths: [dir], time: Date.UTC(2026, 0, 1) })).snapshot;
    expect(sealedTocs(repo)).toBe(tocsBefore);
    for (const f of [one, grow]) {
      expect(ownRow(repo, s1, f)).toMatchObject({ toc: null });
      const e = await entryOf(repo, s1, f);
      expect(e?.block).toMatch(/^[0-9a-f]{64}$/);
      expect(e?.parentContent).toBeUndefined();
    }

    // The file grows to the whole: its first block is the one its entry named, and is a ref into it.
    const second = { one: first.one, grow: whole };
    fs.writeFileSync(grow, second.grow);
    const s2 = (await backup(repo, { paths: [dir], time: Date.UTC(2026, 0, 2) })).snapshot;
    const growRow = ownRow(repo, s2, grow)!;
    expect(growRow.toc).not.toBeNull();
    expect((await entryOf(repo, s2, grow))?.block).toBeUndefined();
    expect(repo.catalog.toc(growRow.id).some((r) => r.target !== null)).toBe(true);
    // Unchanged: inherited with its block, no row.
    expect(ownRow(repo, s2, one)).toBeUndefined();
    expect((await entryOf(repo, s2, one))?.block).toBe((await entryOf(repo, s1, one))?.block);

    // One block again, of other bytes; and the same bytes rewritten (a new inode): the entry names the same block.
    const third = { one: rng.bytes(150), grow: second.grow };
    fs.writeFileSync(one, third.one);
    fs.rmSync(grow);
    fs.writeFileSync(grow, third.grow);
    const s3 = (await backup(repo, { paths: [dir], time: Date.UTC(2026, 0, 3) })).snapshot;
    expect(ownRow(repo, s3, one)).toMatchObject({ toc: null });
    expect(ownRow(repo, s3, grow)).toBeUndefined();

    const expectAll = async (r: Repository, skipFirst = false) => {
      for (const [id, files] of [
        [s1, first],
        [s2, second],
        [s3, third],
      ] as const) {
        if (skipFirst && id === s1) continue;
        expect((await readWhole(r, id, one)).equals(files.one)).toBe(true);
        expect((await readWhole(r, id, grow)).equals(files.grow)).toBe(true);
      }
    };
    await expectAll(repo);
    expect((await check(repo, { readData: true })).errors).toEqual([]);

    // The first snapshot forgotten without the key: the ref of s2 still reads through s1's kept tree.
    const keyless = await KeylessRepository.open(repo.root);
    await forgetWithoutKey(keyless.service, { ids: [s0, s1] });
    await prune(keyless);
    keyless.close();
    // Opened again: what this process verified before the forget is not remembered.
    const again = await Repository.open(repo.root, { password });
    await expectAll(again, true);
    again.close();

    // A catalog rebuilt from the packs (s1 kept for its refs): versions come back from the entries.
    const copy = path.join(tempDir(), 'copy');
    fs.cpSync(repo.root, copy, { recursive: true });
    for (const name of fs.readdirSync(copy)) if (name.startsWith('catalog.db')) fs.rmSync(path.join(copy, name));
    const { repo: rebuilt } = await Repository.openForRebuild(copy, { password });
    expect((await rebuildCatalog(rebuilt)).problems).toEqual([]);
    await expectAll(rebuilt, true);
    rebuilt.close();

    // With the key, prune reseals; a catalog rebuilt after it reads everything too.
    await prune(repo);
    const { fresh, r } = await loseCatalogAndRebuild(repo);
    expect(r.problems).toEqual([]);
    await expectAll(fresh, true);
    expect((await check(fresh, { readData: true })).errors).toEqual([]);
    fresh.close();
  });

  it("a catalog row naming another file's block (of the same size) never gives its bytes: a read goes by the entry, check names the row", async () => {
    const repo = await makeRepo({ chunkAvg: 1024 });
    const dir = tempDir();
    const rng = new Rng(32);
    const a = path.join(dir, 'a');
    const b = path.join(dir, 'b');
    fs.writeFileSync(a, rng.bytes(250));
    fs.writeFileSync(b, rng.bytes(250));
    const s = (await backup(repo, { paths: [dir] })).snapshot;
    const rowOf = (f: string) => repo.catalog.toc(ownRow(repo, s, f)!.id)[0]!;
    repo.catalog.db.prepare('UPDATE toc SET block = ? WHERE version = ?').run(rowOf(b).block, ownRow(repo, s, a)!.id);
    // The entry names the file's one block: a read needs no catalog row, so the tampered one is not even looked at.
    expect((await readWhole(repo, s, a)).equals(fs.readFileSync(a))).toBe(true);
    expect((await check(repo, {})).errors.join('\n')).toMatch(/disagrees/);
  });

  it('a repository of format 2 keeps a sealed TOC for every version, as the strata that made it reads them', async () => {
    const made = await makeRepo({ chunkAvg: 1024 });
    const root = made.root;
    made.close();
    const config = path.join(root, 'config');
    fs.writeFileSync(config, JSON.stringify({ ...JSON.parse(fs.readFileSync(config, 'utf8')), version: 2 }));
    const repo = await Repository.open(root, { password });
    const dir = tempDir();
    const f = path.join(dir, 'small');
    fs.writeFileSync(f, 'a few bytes');
    const s = (await backup(repo, { paths: [dir] })).snapshot;
    expect(ownRow(repo, s, f)?.toc).not.toBeNull();
    expect((await entryOf(repo, s, f))?.block).toBeUndefined();
    expect((await readWhole(repo, s, f)).toString()).toBe('a few bytes');
    repo.close();
  });

  it('a file of more blocks names its sealed TOC: inherited later, it is checked without the tree of the snapshot that stored it', async () => {
    const repo = await makeRepo({ chunkAvg: 1024 });
    const src = tempDir();
    const f = path.join(src, 'f');
    const data = new Rng(33).bytes(5000); // more than the 4 KiB maximum block: several blocks
    fs.writeFileSync(f, data);
    const first = (await backup(repo, { paths: [src], time: Date.UTC(2026, 0, 1) })).snapshot;
    const toc = (await entryOf(repo, first, f))?.toc;
    expect(toc).toBe(ownRow(repo, first, f)!.toc!.toString('hex'));
    fs.writeFileSync(path.join(src, 'g'), 'another file: the directory changes');
    const second = (await backup(repo, { paths: [src], time: Date.UTC(2026, 0, 2) })).snapshot;
    expect((await entryOf(repo, second, f))?.toc).toBe(toc);
    const root = repo.root;
    repo.close();
    const fresh = await Repository.open(root, { password });
    const snap = await findSnapshot(fresh, { kind: 'id', prefix: second });
    const ownTrees = new Set<string>([snap.root!.tree!]);
    for (let dir = src; dir !== '/'; dir = path.dirname(dir)) ownTrees.add((await snap.lookup(dir))!.tree!);
    const read = vi.spyOn(fresh, 'readBlob');
    expect((await readWhole(fresh, second, f)).equals(data)).toBe(true);
    const trees = read.mock.calls.filter(([, kind]) => kind === 'tree').map(([id]) => id.toString('hex'));
    expect(trees.filter((t) => !ownTrees.has(t))).toEqual([]);
    fresh.close();
  });

  it('read again (a new inode) with the bytes of its parent entry: no catalog lookup; one that changed is looked up and stored', async () => {
    const repo = await makeRepo({ chunkAvg: 1024 });
    const dir = tempDir();
    const rng = new Rng(33);
    const files = Array.from({ length: 40 }, (_, i) => path.join(dir, `f${i}`));
    const data = new Map(files.map((f) => [f, rng.bytes(200)]));
    for (const f of files) fs.writeFileSync(f, data.get(f)!);
    await backup(repo, { paths: [dir] });
    // Unpacked afresh: every file a new inode; one of them with other bytes of the same size.
    const edited = files[7]!;
    data.set(edited, rng.bytes(200));
    for (const f of files) {
      fs.rmSync(f);
      fs.writeFileSync(f, data.get(f)!);
    }
    const looked: string[] = [];
    const lookup = FileSaver.prototype.parentVersions;
    vi.spyOn(FileSaver.prototype, 'parentVersions').mockImplementation(function (this: FileSaver, paths) {
      looked.push(...paths);
      return lookup.call(this, paths);
    });
    const r = await backup(repo, { paths: [dir] });
    vi.restoreAllMocks();
    expect(looked).toEqual([edited]);
    expect(r.filesChanged).toBe(1);
    expect(r.filesUnchanged).toBe(files.length - 1);
    for (const f of files) expect((await readWhole(repo, r.snapshot, f)).equals(data.get(f)!), f).toBe(true);
    expect((await check(repo, { readData: true })).errors).toEqual([]);
    repo.close();
  });
});
