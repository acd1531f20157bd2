/**
 * A hostile repository: trees, TOC rows and packs crafted to make restore
 * write outside its target, loop, exhaust memory or hand out wrong bytes.
 * Each ends in an error, with nothing written outside the target and no
 * partial file left behind.
 */
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it, vi } from 'vitest';
import { backup } from '../src/engine/backup.js';
import { openFile, readRange } from '../src/engine/read.js';
import { blocksOf, resolveRange } from '../src/catalog/resolve.js';
import { restore, type RestoreOptions } from '../src/engine/restore.js';
import { metaAad, Snapshot } from '../src/engine/snapshot.js';
import { decodeTree, encodeTree, findEntry, type TreeEntry } from '../src/engine/tree.js';
import { decodeBlock, encodeBlock } from '../src/repo/blockcodec.js';
import { seal } from '../src/crypto/keyring.js';
import { CompressStream } from 'zstd-napi';
import { Catalog, type TocRow, type VersionRow } from '../src/catalog/catalog.js';
import { StrataError } from '../src/errors.js';
import type { Repository } from '../src/repo/repository.js';
import { makeRepo, tempDir } from './helpers.js';

const NS = '1700000000000000000';

function entry(name: string, type: TreeEntry['type'], more: Partial<TreeEntry> = {}): TreeEntry {
  const mode = { file: 0o100644, dir: 0o40755, symlink: 0o120777, fifo: 0o10644, chardev: 0o20666, blockdev: 0o60660 }[type];
  return { name, type, mode, uid: 0, gid: 0, mtimeNs: NS, ctimeNs: NS, ino: '1', size: 0, ...more };
}

async function storeBlob(repo: Repository, kind: 'data' | 'tree', plain: Buffer): Promise<Buffer> {
  const id = repo.keyring.blockId(plain);
  const packer = repo.newPacker();
  await packer.add(id, kind, encodeBlock(repo.keyring.encKey, id, plain, 3), plain.length);
  await packer.flush();
  return id;
}

/** Entries are taken as given: a hostile tree need not be well-formed. */
async function storeTree(repo: Repository, entries: unknown[]): Promise<string> {
  return (await storeBlob(repo, 'tree', encodeTree({ entries: entries as TreeEntry[] }))).toString('hex');
}

function beginSnapshot(repo: Repository): number {
  const id = randomBytes(32).toString('hex');
  return repo.catalog.beginSnapshot(id, Date.now(), Buffer.alloc(32), repo.keyring.sealJson({ host: 'h', tags: [], paths: ['/'] }, metaAad(id)), null);
}

/**
 * Seals a TOC for each hand-made version of the snapshot, as a writer with
 * the key would: its rows as they are where they cover the version in order
 * (a ref names its target's snapshot), else one entry that no read matches.
 * Reads check the catalog against these (engine/verify.ts); what is probed
 * here is what the catalog's rows do, so they agree with them.
 */
async function sealTocs(repo: Repository, seq: number): Promise<void> {
  const db = repo.catalog.db;
  const snapshotId = repo.catalog.snapshotBySeq(seq)!.id;
  const ownerOf = db.prepare('SELECT s.id FROM versions v JOIN snapshots s ON s.seq = v.snapshot WHERE v.id = ?').pluck();
  const packer = repo.newPacker();
  for (const v of db.prepare('SELECT id, path, size FROM versions WHERE snapshot = ? AND size >= 0').all(seq) as { id: number; path: Buffer; size: number }[]) {
    const rows = repo.catalog.toc(v.id);
    let cursor = 0;
    const entries: unknown[] = [];
    for (const r of rows) {
      if (r.start !== cursor || !Number.isSafeInteger(r.end) || r.end < r.start) break;
      const owner = r.target !== null ? (ownerOf.get(r.target) as string | undefined) : undefined;
      if (r.block) entries.push([r.start, r.end, r.block.toString('hex')]);
      else if (owner && Number.isSafeInteger(r.target_start)) entries.push([r.start, r.end, owner, r.target_start]);
      else break;
      cursor = r.end + 1;
    }
    const faithful = cursor === v.size && entries.length === rows.length;
    const toc = { snapshot: snapshotId, path: v.path.toString('hex'), size: v.size, entries: faithful ? entries : v.size > 0 ? [[0, v.size - 1, randomBytes(32).toString('hex')]] : [] };
    const plain = Buffer.from(JSON.stringify(toc));
    const id = repo.keyring.blockId(plain);
    await packer.add(id, 'toc', encodeBlock(repo.keyring.encKey, id, plain, 3), plain.length);
    db.prepare('UPDATE versions SET toc = ? WHERE id = ?').run(id, v.id);
  }
  await packer.flush();
}

async function commit(repo: Repository, seq: number, rootTree: string): Promise<Snapshot> {
  await sealTocs(repo, seq);
  const id = repo.catalog.snapshotBySeq(seq)!.id;
  repo.catalog.commitSnapshot(seq, Buffer.from(rootTree, 'hex'), randomBytes(32), repo.keyring.sealJson({ host: 'h', tags: [], paths: ['/'] }, metaAad(id)));
  return new Snapshot(repo, repo.catalog.snapshotBySeq(seq)!);
}

/** A snapshot whose root tree holds `entries` and nothing else is stored. */
async function treeSnapshot(repo: Repository, entries: unknown[]): Promise<Snapshot> {
  return await commit(repo, beginSnapshot(repo), await storeTree(repo, entries));
}

/**
 * TOC rows written straight into the database, as a hostile writer's would
 * be: insertVersion's own checks never see them.
 */
function addRows(repo: Repository, version: number, rows: Partial<TocRow>[]): void {
  const insert = repo.catalog.db.prepare(
    'INSERT INTO toc(version, start, end, block, target, target_start, root, root_start, depth) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)',
  );
  for (const r of rows) insert.run(version, r.start, r.end, r.block ?? null, r.target ?? null, r.target_start ?? null, r.root ?? null, r.root_start ?? null, r.depth ?? 1);
}

function addVersion(repo: Repository, seq: number, pathId: Buffer, size: number, rows: Partial<TocRow>[]): number {
  const id = repo.catalog.insertVersion(seq, pathId, size, randomBytes(32), []);
  addRows(repo, id, rows);
  return id;
}

async function dataRow(repo: Repository, bytes: Buffer, start = 0): Promise<Partial<TocRow>> {
  return { start, end: start + bytes.length - 1, block: await storeBlob(repo, 'data', bytes), depth: 0 };
}

const ref = (start: number, end: number, target: number, targetStart: number): Partial<TocRow> => ({ start, end, target, target_start: targetStart });

/** A snapshot with one file "/f" of `size` bytes whose TOC is `rows`. */
async function fileSnapshot(repo: Repository, size: number, rows: (seq: number) => Promise<Partial<TocRow>[]> | Partial<TocRow>[]) {
  const seq = beginSnapshot(repo);
  const version = addVersion(repo, seq, repo.keyring.pathId('/f'), size, await rows(seq));
  const snap = await commit(repo, seq, await storeTree(repo, [entry('f', 'file', { size })]));
  return { snap, version: repo.catalog.versionById(version)! };
}

async function cat(repo: Repository, snap: Snapshot, abs: string): Promise<Buffer> {
  const f = await openFile(snap, abs);
  const parts: Buffer[] = [];
  if (f.version.size > 0) for await (const p of readRange(repo, f.version, 0, f.version.size - 1)) parts.push(Buffer.from(p));
  return Buffer.concat(parts);
}

/**
 * The bytes of a hand-made version as the catalog's rows resolve them, without
 * the sealed TOCs every command checks them against (engine/verify.ts): what
 * these tests probe is the resolver's own bounds.
 */
async function* readRows(repo: Repository, version: VersionRow, start: number, end: number): AsyncGenerator<Buffer> {
  if (end >= version.size) throw new StrataError('integrity', 'read past the end');
  for await (const p of repo.service.pieces(version.id, start, end)) {
    const block = await repo.readBlob(p.block);
    if (block.length !== p.blockSize) throw new StrataError('integrity', 'wrong block size');
    yield block.subarray(p.from, p.from + p.length);
  }
}

async function collect(gen: AsyncIterable<Buffer>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const p of gen) parts.push(Buffer.from(p));
  return Buffer.concat(parts);
}

/** Everything under `dir` (names, modes, times, link targets, contents), to compare before and after. */
function listing(dir: string): string[] {
  const out: string[] = [];
  const visit = (p: string) => {
    const st = fs.lstatSync(p);
    const what = st.isSymbolicLink() ? `-> ${fs.readlinkSync(p)}` : st.isFile() ? fs.readFileSync(p, 'hex') : '';
    out.push(`${path.relative(dir, p)} ${st.mode.toString(8)} ${st.mtimeMs} ${what}`);
    if (st.isDirectory()) for (const n of fs.readdirSync(p).sort()) visit(path.join(p, n));
  };
  visit(dir);
  return out;
}

/**
 * A target inside a scratch directory that also holds "outside" (with a
 * file "victim"); `untouched` checks the scratch directory outside the
 * target did not change.
 */
function arena() {
  const base = tempDir('strata-hostile-');
  const target = path.join(base, 'target');
  const outside = path.join(base, 'outside');
  fs.mkdirSync(outside, { mode: 0o755 });
  fs.writeFileSync(path.join(outside, 'victim'), 'original');
  fs.utimesSync(path.join(outside, 'victim'), 1000, 1000);
  fs.utimesSync(outside, 1000, 1000);
  const outsideTarget = () => [...fs.readdirSync(base).filter((n) => n !== 'target'), ...listing(outside)];
  const before = outsideTarget();
  return { base, target, outside, untouched: () => expect(outsideTarget()).toEqual(before) };
}

async function restoreInto(repo: Repository, snap: Snapshot, target: string, more: Partial<RestoreOptions> = {}) {
  return restore(repo, snap, { target, ...more });
}

describe('1. tree entry names', () => {
  const bad = ['../escape', '/abs', 'a/b', '.', '..', '', 'nul\0name', '../../../../../../tmp/strata-escape'];

  it('a name that is not one path component is an integrity error, and nothing lands outside the target', async () => {
    const repo = await makeRepo();
    for (const name of bad) {
      const { target, untouched } = arena();
      const snap = await treeSnapshot(repo, [entry('ok', 'file'), entry(name, 'file', { size: 4 })]);
      await expect(restoreInto(repo, snap, target), JSON.stringify(name)).rejects.toMatchObject({ code: 'integrity', message: expect.stringMatching(/invalid entry name/) });
      await expect(openFile(snap, '/ok')).rejects.toMatchObject({ code: 'integrity' });
      untouched();
    }
    expect(fs.existsSync('/abs')).toBe(false);
    expect(fs.existsSync('/tmp/strata-escape')).toBe(false);
    repo.close();
  });

  it('a bad name deep in the tree fails the restore there, still inside the target', async () => {
    const repo = await makeRepo();
    const { target, untouched } = arena();
    const sub = await storeTree(repo, [entry('..', 'dir', { tree: '00'.repeat(32) })]);
    const snap = await treeSnapshot(repo, [entry('d', 'dir', { tree: sub })]);
    await expect(restoreInto(repo, snap, target)).rejects.toMatchObject({ code: 'integrity' });
    untouched();
    repo.close();
  });

  it('duplicate names, and entries that are not objects, are integrity errors', async () => {
    const repo = await makeRepo();
    const out = (...names: string[]) => names.map((n) => entry(n, 'file'));
    // A repeat next to its twin, and repeats in a tree out of name order (where the check cannot lean on the order).
    for (const entries of [[entry('a', 'file'), entry('a', 'dir', { tree: '00'.repeat(32) })], out('b', 'a', 'b'), out('a', 'c', 'b', 'a'), out('a', 'b', 'c', 'a'), [null], ['a'], [{ ...entry('a', 'file'), type: 'socket' }]]) {
      const { target, untouched } = arena();
      await expect(restoreInto(repo, await treeSnapshot(repo, entries), target)).rejects.toMatchObject({ code: 'integrity' });
      untouched();
    }
    // Decoding alone finds the repeats; out of order without repeats is still a tree.
    const decode = (entries: TreeEntry[]) => decodeTree(Buffer.from(JSON.stringify({ entries })), 'x'.repeat(64));
    for (const names of [['a', 'a'], ['b', 'a', 'b'], ['a', 'c', 'b', 'a'], ['a', 'b', 'c', 'a']]) expect(() => decode(out(...names)), names.join()).toThrow(/invalid entry name/);
    expect(decode(out('c', 'a', 'b')).entries.map((e) => e.name)).toEqual(['c', 'a', 'b']);
    // Every name of a tree out of order is still found; one in order is searched by halves.
    const unordered = decode(out('c', 'a', 'd', 'b'));
    for (const n of ['a', 'b', 'c', 'd']) expect(findEntry(unordered, n)?.name).toBe(n);
    expect(findEntry(unordered, 'e')).toBeUndefined();
    const inOrder = decode(out('a', 'b', 'c'));
    for (const n of ['a', 'b', 'c']) expect(findEntry(inOrder, n)?.name).toBe(n);
    expect(findEntry(inOrder, 'bb')).toBeUndefined();
    repo.close();
  });

  it('malformed times, modes, owners, subtree ids and link targets are integrity errors, not crashes', async () => {
    const repo = await makeRepo();
    const malformed: TreeEntry[] = [
      entry('a', 'file', { mtimeNs: 'soon' }),
      entry('a', 'file', { mtimeNs: '1'.repeat(400) }),
      entry('a', 'file', { ctimeNs: undefined as unknown as string }),
      entry('a', 'file', { mode: -1 }),
      entry('a', 'file', { uid: 0.5 }),
      entry('a', 'dir', { tree: '../../etc' }),
      entry('a', 'dir'),
      entry('a', 'symlink', { target: '/tmp\0/x' }),
      entry('a', 'symlink', { target: '' }),
      entry('a', 'symlink'),
      // FIFOs and devices: an unknown type, a device without its number (or with one it cannot have).
      entry('a', 'socket' as TreeEntry['type']),
      entry('a', 'chardev'),
      entry('a', 'blockdev', { rdev: '-5' }),
      entry('a', 'fifo', { rdev: '259' }),
      entry('a', 'file', { rdev: '259' }),
      // Extended attributes: not pairs, a name not kept, out of order or repeated, not base64, a default ACL on a file, over the bound.
      entry('a', 'file', { xattrs: {} as unknown as TreeEntry['xattrs'] }),
      entry('a', 'file', { xattrs: [] }),
      entry('a', 'file', { xattrs: [['user.a']] as unknown as TreeEntry['xattrs'] }),
      entry('a', 'file', { xattrs: [['system.nfs4_acl', 'AA==']] }),
      entry('a', 'file', { xattrs: [['user.b', 'AA=='], ['user.a', 'AA==']] }),
      entry('a', 'file', { xattrs: [['user.a', 'AA=='], ['user.a', 'AA==']] }),
      entry('a', 'file', { xattrs: [['user.a', 'not base64!']] }),
      entry('a', 'file', { xattrs: [['user.a', 'AA=A']] }),
      entry('a', 'file', { xattrs: [['system.posix_acl_default', 'AA==']] }),
      entry('a', 'file', { xattrs: [['user.a', Buffer.alloc(40 * 1024).toString('base64')], ['user.b', Buffer.alloc(40 * 1024).toString('base64')]] }),
    ];
    for (const e of malformed) {
      const { target, untouched } = arena();
      const snap = await treeSnapshot(repo, [e]);
      await expect(restoreInto(repo, snap, target), JSON.stringify(e)).rejects.toMatchObject({ code: 'integrity', message: expect.stringMatching(/entry a /) });
      untouched();
    }
    repo.close();
  });
});

describe('2. symlinks never lead restore outside the target', () => {
  it('a symlink already in the target where the snapshot has a directory or file is replaced, not followed', async () => {
    const repo = await makeRepo();
    const { target, outside, untouched } = arena();
    const seq = beginSnapshot(repo);
    addVersion(repo, seq, repo.keyring.pathId('/d/x'), 6, [await dataRow(repo, Buffer.from('inside'))]);
    addVersion(repo, seq, repo.keyring.pathId('/victim'), 3, [await dataRow(repo, Buffer.from('new'))]);
    const d = await storeTree(repo, [entry('x', 'file', { size: 6, mode: 0o100777 })]);
    const snap = await commit(repo, seq, await storeTree(repo, [entry('d', 'dir', { tree: d, mode: 0o40777 }), entry('victim', 'file', { size: 3, mode: 0o100777 })]));
    fs.mkdirSync(target);
    fs.symlinkSync(outside, path.join(target, 'd'));
    fs.symlinkSync(path.join(outside, 'victim'), path.join(target, 'victim'));

    await restoreInto(repo, snap, target);
    untouched();
    expect(fs.lstatSync(path.join(target, 'd')).isDirectory()).toBe(true);
    expect(fs.readFileSync(path.join(target, 'd', 'x'), 'utf8')).toBe('inside');
    expect(fs.lstatSync(path.join(target, 'victim')).isFile()).toBe(true);
    expect(fs.readFileSync(path.join(target, 'victim'), 'utf8')).toBe('new');
    repo.close();
  });

  it('symlinks pointing out of the snapshot are restored as links; nothing is written, chmodded or touched through them', async () => {
    const repo = await makeRepo();
    const { target, outside, untouched } = arena();
    const seq = beginSnapshot(repo);
    addVersion(repo, seq, repo.keyring.pathId('/dir/f'), 5, [await dataRow(repo, Buffer.from('hello'))]);
    const dir = await storeTree(repo, [entry('f', 'file', { size: 5 })]);
    const snap = await commit(
      repo,
      seq,
      await storeTree(repo, [
        entry('dir', 'dir', { tree: dir }),
        entry('etc', 'symlink', { target: '/etc' }),
        entry('link', 'symlink', { target: outside, mtimeNs: '0' }),
        entry('up', 'symlink', { target: '../../..' }),
      ]),
    );
    const r = await restoreInto(repo, snap, target);
    expect(r).toMatchObject({ files: 1, symlinks: 3 });
    untouched();
    expect(fs.readlinkSync(path.join(target, 'link'))).toBe(outside);
    expect(fs.readlinkSync(path.join(target, 'up'))).toBe('../../..');
    expect(fs.readFileSync(path.join(target, 'dir', 'f'), 'utf8')).toBe('hello');
    // A path through a link is not in the snapshot, so there is nothing to restore there.
    await expect(restoreInto(repo, snap, target, { paths: ['/link/victim'] })).rejects.toMatchObject({ code: 'not_found' });
    untouched();
    repo.close();
  });

  it('a directory turned into a symlink during the restore is not written through', async () => {
    // On a case-insensitive file system, entries "d" (a directory) and "D"
    // (a symlink) of one tree land on the same name; this makes the same swap.
    const repo = await makeRepo();
    const { target, outside, untouched } = arena();
    const seq = beginSnapshot(repo);
    addVersion(repo, seq, repo.keyring.pathId('/d/x'), 6, [await dataRow(repo, Buffer.from('inside'))]);
    // Files before d's own: many are written at once (up to 128), and the swap must come before d/x is placed.
    // (Were d/x placed first, its worker would make it in the directory checked, which the swap then removes.)
    const names = Array.from({ length: 300 }, (_, i) => `z${i}`);
    for (const n of names) addVersion(repo, seq, repo.keyring.pathId(`/${n}`), 1, [await dataRow(repo, Buffer.from('z'))]);
    const d = await storeTree(repo, [entry('x', 'file', { size: 6 })]);
    const snap = await commit(repo, seq, await storeTree(repo, [entry('d', 'dir', { tree: d }), ...names.map((n) => entry(n, 'file', { size: 1 }))]));
    const swap = () => {
      fs.rmSync(path.join(target, 'd'), { recursive: true });
      fs.symlinkSync(outside, path.join(target, 'd'));
    };
    await expect(restoreInto(repo, snap, target, { onProgress: (p) => p.files === 1 && swap() })).rejects.toMatchObject({ code: 'unsafe_path' });
    untouched();
    expect(fs.existsSync(path.join(outside, 'x'))).toBe(false);
    repo.close();
  });

  it("a directory's mode and times are never applied through a symlink", async () => {
    const repo = await makeRepo();
    const { target, outside, untouched } = arena();
    const seq = beginSnapshot(repo);
    addVersion(repo, seq, repo.keyring.pathId('/z'), 1, [await dataRow(repo, Buffer.from('z'))]);
    const empty = await storeTree(repo, []);
    const snap = await commit(repo, seq, await storeTree(repo, [entry('d', 'dir', { tree: empty, mode: 0o40700, mtimeNs: '0' }), entry('z', 'file', { size: 1 })]));
    const swap = () => {
      fs.rmdirSync(path.join(target, 'd'));
      fs.symlinkSync(outside, path.join(target, 'd'));
    };
    await restoreInto(repo, snap, target, { onProgress: (p) => p.files === 1 && swap() });
    untouched();
    expect(fs.statSync(outside).mode & 0o7777).toBe(0o755);
    repo.close();
  });
});

describe('3. sizes a repository cannot back', () => {
  it('a tree entry claiming 2^53-1 bytes for a 5-byte version is an integrity error', async () => {
    const repo = await makeRepo();
    const { target, untouched } = arena();
    const seq = beginSnapshot(repo);
    addVersion(repo, seq, repo.keyring.pathId('/f'), 5, [await dataRow(repo, Buffer.from('hello'))]);
    const snap = await commit(repo, seq, await storeTree(repo, [entry('f', 'file', { size: Number.MAX_SAFE_INTEGER })]));
    await expect(cat(repo, snap, '/f')).rejects.toMatchObject({ code: 'integrity', message: expect.stringMatching(/size|bytes/) });
    await expect(restoreInto(repo, snap, target)).rejects.toMatchObject({ code: 'integrity' });
    expect(fs.existsSync(path.join(target, 'f'))).toBe(false);
    untouched();
    repo.close();
  });

  it('a 1e15-byte version whose TOC covers 5 bytes fails before a byte is written', async () => {
    const repo = await makeRepo();
    const { target, untouched } = arena();
    const size = 1e15;
    const { snap, version } = await fileSnapshot(repo, size, async () => [await dataRow(repo, Buffer.from('hello'))]);
    const heap = process.memoryUsage().heapUsed;
    await expect(openFile(snap, '/f')).rejects.toMatchObject({ code: 'integrity', message: expect.stringMatching(/does not end at its size/) });
    await expect(collect(readRows(repo, version, size - 10, size - 1))).rejects.toMatchObject({ code: 'integrity', message: expect.stringMatching(/does not cover/) });
    await expect(restoreInto(repo, snap, target)).rejects.toMatchObject({ code: 'integrity' });
    // (A walk of its 1e15 bytes would not end within the test's timeout.)
    expect(process.memoryUsage().heapUsed - heap).toBeLessThan(64 * 1024 * 1024);
    expect(fs.existsSync(path.join(target, 'f'))).toBe(false);
    untouched();
    repo.close();
  });

  it('a data entry claiming 1e15 bytes for a 5-byte block is an integrity error', async () => {
    const repo = await makeRepo();
    const { target } = arena();
    const size = 1e15;
    const { snap } = await fileSnapshot(repo, size, async () => [{ ...(await dataRow(repo, Buffer.from('hello'))), end: size - 1 }]);
    await expect(cat(repo, snap, '/f')).rejects.toMatchObject({ code: 'integrity', message: expect.stringMatching(/is 5 bytes/) });
    await expect(restoreInto(repo, snap, target)).rejects.toMatchObject({ code: 'integrity' });
    expect(fs.existsSync(path.join(target, 'f'))).toBe(false);
    repo.close();
  });
});

describe('4. reference cycles and endless chains', () => {
  // An endless loop would be caught by the test's own timeout: no wall-clock bound here, which load would break.
  it('A -> B -> A ends in an integrity error', async () => {
    const repo = await makeRepo();
    const { target } = arena();
    let b = 0;
    const { snap, version: a } = await fileSnapshot(repo, 100, (seq) => {
      b = addVersion(repo, seq, randomBytes(32), 100, []);
      return [ref(0, 99, b, 0)];
    });
    addRows(repo, b, [ref(0, 99, a.id, 0)]);
    expect(() => [...resolveRange(repo.catalog, a.id, 0, 99)]).toThrow(/reference chain/);
    // The next backup's alignment with it, which follows refs page by page, too.
    expect(() => blocksOf(repo.catalog, a.id, 100)).toThrow(/reference chain/);
    await expect(cat(repo, snap, '/f')).rejects.toMatchObject({ code: 'integrity', message: expect.stringMatching(/reference chain/) });
    await expect(restoreInto(repo, snap, target)).rejects.toMatchObject({ code: 'integrity' });
    expect(fs.existsSync(path.join(target, 'f'))).toBe(false);
    repo.close();
  });

  it('a version that refers to itself ends in an integrity error', async () => {
    const repo = await makeRepo();
    const seq = beginSnapshot(repo);
    const v = addVersion(repo, seq, randomBytes(32), 100, []);
    addRows(repo, v, [ref(0, 99, v, 0)]);
    expect(() => [...resolveRange(repo.catalog, v, 0, 99)]).toThrow(/reference chain/);
    repo.close();
  });

  it('a cycle under each of 2,000 one-byte refs ends at the first', async () => {
    const repo = await makeRepo();
    const seq = beginSnapshot(repo);
    const width = 2000;
    const a = addVersion(repo, seq, randomBytes(32), width, []);
    const b = addVersion(repo, seq, randomBytes(32), width, [ref(0, width - 1, a, 0)]);
    addRows(repo, a, Array.from({ length: width }, (_, i) => ref(i, i, b, i)));
    expect(() => [...resolveRange(repo.catalog, a, 0, width - 1)]).toThrow(/reference chain/);
    repo.close();
  });

  it('a long chain without a cycle still reads: forget leaves chains as long as the history', async () => {
    const repo = await makeRepo();
    const seq = beginSnapshot(repo);
    const bytes = randomBytes(100);
    let v = addVersion(repo, seq, randomBytes(32), 100, [await dataRow(repo, bytes)]);
    repo.catalog.db.transaction(() => {
      for (let i = 0; i < 1000; i++) v = addVersion(repo, seq, randomBytes(32), 100, [ref(0, 99, v, 0)]);
    })();
    expect(await collect(readRows(repo, repo.catalog.versionById(v)!, 10, 99))).toEqual(bytes.subarray(10));
    expect(blocksOf(repo.catalog, v, 100).length).toBe(1);
    repo.close();
  });
});

describe('5. TOCs that do not add up', () => {
  const A = randomBytes(100);
  const B = randomBytes(100);

  it('a ref past the end of its target is an integrity error, and restore leaves no partial file', async () => {
    const repo = await makeRepo();
    const { target } = arena();
    const { snap, version } = await fileSnapshot(repo, 100, async (seq) => {
      const base = addVersion(repo, seq, randomBytes(32), 100, [await dataRow(repo, A)]);
      return [ref(0, 99, base, 50)];
    });
    // The first 50 bytes are there; the rest of the ref points past the target.
    expect(await collect(readRows(repo, version, 0, 49))).toEqual(A.subarray(50));
    await expect(cat(repo, snap, '/f')).rejects.toMatchObject({ code: 'integrity', message: expect.stringMatching(/does not cover offset 100/) });
    await expect(restoreInto(repo, snap, target)).rejects.toMatchObject({ code: 'integrity' });
    expect(fs.existsSync(path.join(target, 'f'))).toBe(false);
    repo.close();
  });

  it("a version's block list follows refs page by page, into the middle of rows too, and agrees with a walk of its range", async () => {
    const repo = await makeRepo();
    const C = randomBytes(100);
    const base = await fileSnapshot(repo, 200, async () => [await dataRow(repo, A), await dataRow(repo, B, 100)]);
    // Half of A (a piece, which has no id of its own), all of B, then C.
    const middle = await fileSnapshot(repo, 250, async () => [ref(0, 149, base.version.id, 50), await dataRow(repo, C, 150)]);
    const top = await fileSnapshot(repo, 250, () => [ref(0, 249, middle.version.id, 0)]);
    const walked = [...resolveRange(repo.catalog, top.version.id, 0, 249)].map((p) => `${p.from === 0 && p.length === p.blockSize ? p.block.toString('hex') : '-'}:${p.length}`);
    expect(walked).toHaveLength(3);
    const slow = vi.spyOn(Catalog.prototype, 'tocAfter');
    const list = blocksOf(repo.catalog, top.version.id, 250);
    expect(slow).not.toHaveBeenCalled();
    slow.mockRestore();
    expect(Array.from({ length: list.length }, (_, i) => `${list.id(i)?.toString('hex') ?? '-'}:${list.end(i) - list.start(i) + 1}`)).toEqual(walked);
    repo.close();
  });

  it('a gap between entries is an integrity error', async () => {
    const repo = await makeRepo();
    const { target } = arena();
    const { snap, version } = await fileSnapshot(repo, 201, async () => [await dataRow(repo, A), await dataRow(repo, B, 101)]);
    await expect(cat(repo, snap, '/f')).rejects.toMatchObject({ code: 'integrity', message: expect.stringMatching(/does not cover offset 100/) });
    await expect(restoreInto(repo, snap, target)).rejects.toMatchObject({ code: 'integrity' });
    expect(fs.existsSync(path.join(target, 'f'))).toBe(false);
    // The next backup's alignment with this version meets the gap too.
    expect(() => blocksOf(repo.catalog, version.id, 201)).toThrow(/does not cover offset 100/);
    repo.close();
  });

  it('overlapping entries are an integrity error, not bytes from whichever entry comes first', async () => {
    const repo = await makeRepo();
    const { snap, version } = await fileSnapshot(repo, 150, async () => [await dataRow(repo, A), await dataRow(repo, B, 50)]);
    await expect(cat(repo, snap, '/f')).rejects.toMatchObject({ code: 'integrity', message: expect.stringMatching(/overlap/) });
    expect(() => blocksOf(repo.catalog, version.id, 150)).toThrow(/overlap/);
    repo.close();
  });

  it('entries with fractional, reversed or missing positions are integrity errors', async () => {
    const repo = await makeRepo();
    const seq = beginSnapshot(repo);
    const base = addVersion(repo, seq, randomBytes(32), 100, [await dataRow(repo, A)]);
    const half = await dataRow(repo, A.subarray(0, 50));
    const tocs: Partial<TocRow>[][] = [
      [ref(0, 49, base, 0.5), ref(50, 99, base, 50)],
      [ref(0, 99, base, -1)],
      [{ ...ref(0, 99, base, 0), root: base }],
      [ref(0, 49, base, 0), { ...half, start: 40, end: 89 }, ref(90, 99, base, 90)],
      [{ start: 0, end: 99 }],
      [half, { ...half, start: 50, end: 20 }],
      [{ ...half, end: 49.5 }, ref(50, 99, base, 50)],
      [ref(0, 49.5, base, 0), ref(50.5, 99, base, 50)],
    ];
    for (const rows of tocs) {
      const v = addVersion(repo, seq, randomBytes(32), 100, rows);
      await expect(collect(readRows(repo, repo.catalog.versionById(v)!, 0, 99)), JSON.stringify(rows)).rejects.toMatchObject({ code: 'integrity' });
    }
    repo.close();
  });
});

describe('6. a block shorter than its entry', () => {
  it('is an integrity error naming both lengths', async () => {
    const repo = await makeRepo();
    const { target } = arena();
    const { snap } = await fileSnapshot(repo, 200, async () => [{ ...(await dataRow(repo, randomBytes(100))), end: 199 }]);
    await expect(cat(repo, snap, '/f')).rejects.toMatchObject({ code: 'integrity', message: expect.stringMatching(/is 100 bytes, its TOC entry says 200/) });
    await expect(restoreInto(repo, snap, target)).rejects.toMatchObject({ code: 'integrity' });
    expect(fs.existsSync(path.join(target, 'f'))).toBe(false);
    repo.close();
  });
});

describe('7. sealed bytes changed in the pack', () => {
  /** Flips one bit in the middle of a stored blob. */
  function flip(repo: Repository, id: Buffer): void {
    const loc = repo.catalog.blockLocation(id)!;
    const file = path.join(repo.root, 'packs', loc.pack.slice(0, 2), loc.pack);
    const fd = fs.openSync(file, 'r+');
    const at = loc.offset + Math.floor(loc.length / 2);
    const b = Buffer.alloc(1);
    fs.readSync(fd, b, 0, 1, at);
    b.writeUInt8(b.readUInt8(0) ^ 1);
    fs.writeSync(fd, b, 0, 1, at);
    fs.closeSync(fd);
  }

  it('a data block fails authentication: cat and restore stop, no file is left', async () => {
    const repo = await makeRepo();
    const { target } = arena();
    const row = await dataRow(repo, randomBytes(1000));
    const { snap } = await fileSnapshot(repo, 1000, () => [row]);
    flip(repo, row.block!);
    await expect(cat(repo, snap, '/f')).rejects.toMatchObject({ code: 'integrity', message: expect.stringMatching(/authentication failed/) });
    await expect(restoreInto(repo, snap, target)).rejects.toMatchObject({ code: 'integrity', message: expect.stringMatching(/authentication failed/) });
    expect(fs.existsSync(path.join(target, 'f'))).toBe(false);
    repo.close();
  });

  it('a tree fails authentication', async () => {
    const repo = await makeRepo();
    const { target, untouched } = arena();
    const snap = await treeSnapshot(repo, [entry('a', 'file')]);
    flip(repo, snap.row.root!);
    await expect(restoreInto(repo, snap, target)).rejects.toMatchObject({ code: 'integrity', message: expect.stringMatching(/authentication failed/) });
    untouched();
    repo.close();
  });
});

describe('blocks that authenticate but do not decompress', () => {
  it('fail as integrity errors (a cut stream may even decode, short), and the blocks after them still decode', async () => {
    const repo = await makeRepo();
    const { encKey, idKey } = repo.keyring;
    const plain = Buffer.alloc(40_000, 7);
    const id = repo.keyring.blockId(plain);
    // A frame cut short, written without its content size (as a stream is), so decoding stops mid-stream.
    const stream = new CompressStream();
    const frame = await new Promise<Buffer>((resolve, reject) => {
      const parts: Buffer[] = [];
      stream.on('data', (d: Buffer) => parts.push(d)).on('end', () => resolve(Buffer.concat(parts))).on('error', reject);
      stream.end(Buffer.concat([randomBytes(30_000), plain]));
    });
    const bad = [Buffer.from([1, 0xde, 0xad, 0xbe, 0xef]), Buffer.concat([Buffer.from([1]), frame.subarray(0, frame.length - 20)])];
    for (const framed of bad) {
      expect(() => decodeBlock(encKey, idKey, id, seal(encKey, framed, id), 1 << 20)).toThrow(/cannot be decompressed|does not match its id/);
      expect(decodeBlock(encKey, idKey, id, encodeBlock(encKey, id, plain, 3), 1 << 20).equals(plain)).toBe(true);
    }
    repo.close();
  });
});

describe('a block row claiming more bytes than its pack holds', () => {
  it('fails as a short read without allocating the claimed size', async () => {
    const repo = await makeRepo();
    const dir = tempDir();
    fs.writeFileSync(path.join(dir, 'f'), 'five!');
    await backup(repo, { paths: [dir] });
    const row = repo.catalog.db.prepare("SELECT id FROM blocks WHERE kind = 0").get() as { id: Buffer };
    repo.catalog.db.prepare('UPDATE blocks SET length = ? WHERE id = ?').run(2 ** 40, row.id);
    const before = process.memoryUsage().rss;
    await expect(repo.readBlob(row.id)).rejects.toThrow(/wanted 1099511627776 bytes/);
    expect(process.memoryUsage().rss - before).toBeLessThan(64 * 1024 * 1024);
    repo.close();
  });
});
