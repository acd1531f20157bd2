/**
 * SnapshotTree, the one point-in-time file tree every reader uses: reads
 * checked byte for byte against an in-memory oracle over random edit
 * sequences, directories of thousands of odd names listed and paged,
 * symlinks, a path's history, the same through `strata serve`, a tampered
 * catalog still caught, and the decoded cache doing its work within its
 * bound.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { backup } from '../src/engine/backup.js';
import { decodedCacheStats, DEFAULT_DECODED_CACHE_BYTES, openFileAt, setDecodedCacheBytes, SnapshotTree, type Entry, type VersionFile } from '../src/engine/snapshot-tree.js';
import { Repository } from '../src/repo/repository.js';
import { decodeName } from '../src/util/names.js';
import { makeRepo, Rng, swapSmallBlocks, tempDir } from './helpers.js';
import { serve, token } from './server-helpers.js';

const PASSWORD = { password: async () => 'test-password' };

afterAll(() => setDecodedCacheBytes(DEFAULT_DECODED_CACHE_BYTES));

async function collect(chunks: AsyncIterable<Buffer>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of chunks) parts.push(c);
  return Buffer.concat(parts);
}

/** readAt and stream of `file` against `want`: random ranges, 0-length reads, the last byte, the whole file, and reads past the end. */
async function checkReads(file: VersionFile, want: Buffer, rng: Rng, reads: number): Promise<void> {
  const size = want.length;
  expect(file.size).toBe(size);
  expect((await file.readAt(0, 0)).length).toBe(0);
  expect((await file.readAt(size, 0)).length).toBe(0);
  expect((await file.readAt(0, size)).equals(want)).toBe(true);
  if (size > 0) expect((await file.readAt(size - 1, 1)).equals(want.subarray(size - 1))).toBe(true);
  await expect(file.readAt(size, 1)).rejects.toMatchObject({ code: 'range_not_satisfiable', message: expect.stringMatching(/past the end/) });
  await expect(file.readAt(Math.max(0, size - 1), 2)).rejects.toMatchObject({ code: 'range_not_satisfiable' });
  await expect(file.readAt(size + 10, 0)).rejects.toMatchObject({ code: 'range_not_satisfiable' });
  await expect(file.readAt(-1, 1)).rejects.toMatchObject({ code: 'usage' });
  await expect(collect(file.stream(0, size))).rejects.toMatchObject({ code: 'range_not_satisfiable' });
  expect((await collect(file.stream(size, size - 1))).length).toBe(0);
  expect((await collect(file.stream())).equals(want)).toBe(true);
  for (let i = 0; i < reads && size > 0; i++) {
    const at = rng.int(size);
    const length = rng.int(Math.min(size - at, rng.int(2) ? 300 : 40_000) + 1);
    const got = await file.readAt(at, length);
    if (!got.equals(want.subarray(at, at + length))) throw new Error(`readAt(${at}, ${length}) of ${file.path} differs`);
    const end = at + rng.int(Math.min(size - at, 50_000));
    const streamed = await collect(file.stream(at, end));
    if (!streamed.equals(want.subarray(at, end + 1))) throw new Error(`stream(${at}, ${end}) of ${file.path} differs`);
  }
}

type Oracle = Map<string, Buffer>;

/** One random edit of the files (overwrite, insert, delete, append, truncate, new, remove). */
function edit(rng: Rng, files: Oracle, dir: string): void {
  const names = [...files.keys()];
  const op = names.length === 0 ? 'new' : rng.pick(['overwrite', 'insert', 'delete', 'append', 'truncate', 'new', 'remove', 'overwrite', 'insert']);
  if (op === 'new') {
    files.set(path.join(dir, `f${rng.int(1_000_000)}.bin`), rng.bytes(rng.int(4) === 0 ? rng.int(50) : rng.int(120_000)));
    return;
  }
  const name = rng.pick(names);
  const data = files.get(name)!;
  const at = rng.int(data.length + 1);
  if (op === 'overwrite') {
    const patch = rng.bytes(1 + rng.int(4000));
    files.set(name, Buffer.concat([data.subarray(0, at), patch, data.subarray(Math.min(data.length, at + patch.length))]));
  } else if (op === 'insert') files.set(name, Buffer.concat([data.subarray(0, at), rng.bytes(1 + rng.int(3000)), data.subarray(at)]));
  else if (op === 'delete') files.set(name, Buffer.concat([data.subarray(0, at), data.subarray(Math.min(data.length, at + 1 + rng.int(5000)))]));
  else if (op === 'append') files.set(name, Buffer.concat([data, rng.bytes(1 + rng.int(8000))]));
  else if (op === 'truncate') files.set(name, data.subarray(0, at));
  else files.delete(name);
}

function sync(dir: string, files: Oracle): void {
  for (const f of fs.readdirSync(dir)) if (!files.has(path.join(dir, f))) fs.rmSync(path.join(dir, f));
  for (const [name, data] of files) if (!fs.existsSync(name) || !fs.readFileSync(name).equals(data)) fs.writeFileSync(name, data);
}

describe('reads against an oracle over random edit sequences', () => {
  const runs = [
    ...Array.from({ length: 6 }, (_, i) => ({ seed: 2000 + i, cache: DEFAULT_DECODED_CACHE_BYTES })),
    // Without a cache, readAt resolves each range on its own: that path is checked too.
    ...Array.from({ length: 3 }, (_, i) => ({ seed: 2100 + i, cache: 0 })),
  ];
  for (const { seed, cache } of runs) {
    it(`seed ${seed}, cache ${cache} bytes`, async () => {
      setDecodedCacheBytes(cache);
      const rng = new Rng(seed);
      const repo = await makeRepo({ chunkAvg: 2048 });
      const dir = path.join(tempDir(), 'src');
      fs.mkdirSync(dir);
      const files: Oracle = new Map();
      const history: { id: string; files: Oracle }[] = [];
      for (let v = 0; v < 5; v++) {
        for (let k = v === 0 ? 4 : 1 + rng.int(4); k > 0; k--) edit(rng, files, dir);
        sync(dir, files);
        const r = await backup(repo, { paths: [dir], time: Date.UTC(2026, 0, 1 + v) });
        history.push({ id: r.snapshot, files: new Map(files) });
      }
      for (const h of history) {
        const tree = await SnapshotTree.open(repo, { at: h.id.slice(0, 12) });
        expect(tree.id).toBe(h.id);
        expect((await tree.list(dir)).map((e) => e.path)).toEqual([...h.files.keys()].sort());
        for (const [name, data] of h.files) {
          expect((await tree.stat(name)).size).toBe(data.length);
          await checkReads(await tree.open(name), data, rng, 12);
        }
      }
      repo.close();
    });
  }
});

const raw = (s: string) => Buffer.from(s, 'latin1');
const DIR_FILES = 3000;

/** A name of the big directory: spaces, newlines, tabs, backslashes, bytes that are not UTF-8, and plain ones. */
function oddName(i: number): Buffer {
  const base = `f${String(i).padStart(4, '0')}`;
  switch (i % 6) {
    case 0:
      return Buffer.from(`${base} with spaces `);
    case 1:
      return Buffer.from(`${base}\nnew line`);
    case 2:
      return Buffer.concat([Buffer.from(base), Buffer.from([0xff, 0xfe, 0x20, 0x80, 0xc3])]);
    case 3:
      return Buffer.from(`${base}-é-😀`);
    case 4:
      return Buffer.from(`${base}\\back\ttab`);
    default:
      return Buffer.from(base);
  }
}

const oddContent = (i: number) => Buffer.from(`content of ${i}\n`.repeat(i % 5));

interface Fixture {
  dir: string;
  data: string;
  odd: string;
  notes: string;
  big: string;
  link: string;
  /** Snapshot ids, oldest first, and what notes and big held in each (notes: undefined when deleted). */
  snaps: { id: string; notes?: Buffer; big: Buffer }[];
}

/**
 * Five snapshots: notes changed, then deleted, then made again, then only
 * touched; a 5 MiB file with an insertion; a directory of 3,000 odd names
 * with symlinks, unchanged throughout.
 */
async function makeFixture(): Promise<Fixture> {
  const rng = new Rng(77);
  const repo = await makeRepo();
  const data = path.join(tempDir(), 'data');
  const odd = path.join(data, 'odd dir');
  fs.mkdirSync(odd, { recursive: true });
  for (let i = 0; i < DIR_FILES; i++) fs.writeFileSync(Buffer.concat([raw(odd + '/'), oddName(i)]), oddContent(i));
  const link = path.join(odd, 'link to first');
  fs.symlinkSync(oddName(0), Buffer.concat([raw(link)]));
  fs.symlinkSync(Buffer.from([0x74, 0xff, 0x0a]), Buffer.concat([raw(odd + '/'), Buffer.from([0x6c, 0xfe])]));
  const notes = path.join(data, 'notes.txt');
  const big = path.join(data, 'big.bin');
  const snaps: Fixture['snaps'] = [];
  let bigBytes = rng.bytes(5 * 1024 * 1024 + 12345);
  const step = async (k: number, notesBytes: Buffer | undefined) => {
    const r = await backup(repo, { paths: [data], time: Date.UTC(2026, 0, k) });
    snaps.push({ id: r.snapshot, notes: notesBytes, big: bigBytes });
  };
  fs.writeFileSync(big, bigBytes);
  fs.writeFileSync(notes, 'first');
  await step(1, Buffer.from('first'));
  bigBytes = Buffer.concat([bigBytes.subarray(0, 3_000_000), Buffer.from('INSERTED'), bigBytes.subarray(3_000_000)]);
  fs.writeFileSync(big, bigBytes);
  fs.writeFileSync(notes, 'second, longer');
  await step(2, Buffer.from('second, longer'));
  fs.rmSync(notes);
  await step(3, undefined);
  fs.writeFileSync(notes, 'second, longer');
  await step(4, Buffer.from('second, longer'));
  const later = new Date(Date.UTC(2026, 0, 20));
  fs.utimesSync(notes, later, later);
  await step(5, Buffer.from('second, longer'));
  repo.close();
  return { dir: repo.root, data, odd, notes, big, link, snaps };
}

/** The same checks on a repository opened by `open` (a directory, or a server). */
function treeChecks(name: string, open: () => Promise<Repository>, fixture: () => Fixture) {
  describe(name, () => {
    let repo: Repository;
    let fx: Fixture;
    beforeAll(async () => {
      fx = fixture();
      repo = await open();
    });
    afterAll(() => repo.close());

    it('picks snapshots by id prefix, latest, and time', async () => {
      expect((await SnapshotTree.open(repo)).id).toBe(fx.snaps[4]!.id);
      expect((await SnapshotTree.open(repo, { at: 'latest' })).id).toBe(fx.snaps[4]!.id);
      expect((await SnapshotTree.open(repo, { at: fx.snaps[1]!.id.slice(0, 8) })).id).toBe(fx.snaps[1]!.id);
      expect((await SnapshotTree.open(repo, { at: '2026-01-02T12:00:00Z' })).id).toBe(fx.snaps[1]!.id);
      const third = await SnapshotTree.open(repo, { at: new Date(Date.UTC(2026, 0, 3, 12)) });
      expect(third.id).toBe(fx.snaps[2]!.id);
      expect(await third.lookup(fx.notes)).toBeUndefined();
      await expect(third.stat(fx.notes)).rejects.toMatchObject({ code: 'not_found' });
      await expect(SnapshotTree.open(repo, { at: Date.UTC(2025, 0, 1) })).rejects.toMatchObject({ code: 'not_found' });
      await expect(SnapshotTree.open(repo, { at: 'deadbeef' })).rejects.toMatchObject({ code: 'not_found' });
    });

    it('lists and pages a directory of 3,000 odd names in name order, with stats as stored', async () => {
      const tree = await SnapshotTree.open(repo);
      const want = fs
        .readdirSync(raw(fx.odd), { encoding: 'buffer' })
        .map(decodeName)
        .sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
      expect(want.length).toBe(DIR_FILES + 2);
      const listed = await tree.list(fx.odd);
      expect(listed.map((e) => e.name)).toEqual(want);
      expect(listed.every((e) => e.path === `${fx.odd}/${e.name}`)).toBe(true);

      // Pages in name order, from the start, after any name (there or not), to the end.
      const paged: Entry[] = [];
      let pages = 0;
      for (let after: string | undefined, next = true; next; pages++) {
        const page = await tree.page(fx.odd, after, 97);
        paged.push(...page.entries);
        expect(page.entries.length).toBe(page.next === undefined ? (DIR_FILES + 2) % 97 : 97);
        after = page.next;
        next = after !== undefined;
      }
      expect(pages).toBe(Math.ceil((DIR_FILES + 2) / 97));
      expect(paged.map((e) => e.name)).toEqual(want);
      const between = `${want[1000]!}\u0000`;
      expect((await tree.page(fx.odd, between, 3)).entries.map((e) => e.name)).toEqual(want.slice(1001, 1004));
      expect((await tree.page(fx.odd, want[want.length - 1], 10)).entries).toEqual([]);
      await expect(tree.page(fx.odd, undefined, 0)).rejects.toMatchObject({ code: 'usage' });

      // Stats and bytes of names that are not UTF-8, or hold a newline.
      for (const i of [0, 1, 2, 3, 4, 5, 2998]) {
        const name = decodeName(oddName(i));
        const st = fs.lstatSync(Buffer.concat([raw(fx.odd + '/'), oddName(i)]), { bigint: true });
        const e = (await tree.lookup(`${fx.odd}/${name}`))!;
        expect(e.name).toBe(name);
        expect(e.type).toBe('file');
        expect(e.size).toBe(Number(st.size));
        expect(e.mode).toBe(Number(st.mode));
        expect([e.uid, e.gid]).toEqual([Number(st.uid), Number(st.gid)]);
        expect(e.mtimeNs).toBe(st.mtimeNs);
        expect(e.mtime.getTime()).toBe(Number(st.mtimeNs / 1_000_000n));
        expect(e.target).toBeUndefined();
        expect((await (await tree.open(e)).readAt(0, e.size)).equals(oddContent(i))).toBe(true);
      }
      await expect(tree.list(`${fx.odd}/${decodeName(oddName(0))}`)).rejects.toMatchObject({ code: 'not_directory' });
    });

    it('symlinks: targets as stored (bytes that are not UTF-8 too), never opened as files', async () => {
      const tree = await SnapshotTree.open(repo);
      const link = (await tree.stat(fx.link))!;
      expect(link.type).toBe('symlink');
      expect(link.target).toBe(decodeName(oddName(0)));
      const odd = (await tree.stat(`${fx.odd}/${decodeName(Buffer.from([0x6c, 0xfe]))}`))!;
      expect(odd.type).toBe('symlink');
      expect(odd.target).toBe(decodeName(Buffer.from([0x74, 0xff, 0x0a])));
      await expect(tree.open(fx.link)).rejects.toMatchObject({ code: 'not_file' });
      await expect(tree.open(fx.odd)).rejects.toMatchObject({ code: 'is_directory' });
      expect((await tree.list(fx.odd)).filter((e) => e.type === 'symlink').map((e) => e.target)).toEqual([link.target, odd.target]);
    });

    it('walks a subtree: every entry once, each directory listed before what is below it', async () => {
      const tree = await SnapshotTree.open(repo, { at: fx.snaps[0]!.id });
      const walked = [];
      for await (const e of tree.walk(fx.data)) walked.push(e.path);
      expect(walked).toEqual([`${fx.data}/big.bin`, `${fx.data}/notes.txt`, fx.odd, ...(await tree.list(fx.odd)).map((e) => e.path)]);
      expect(new Set(walked).size).toBe(walked.length);
      // Kept out of a directory, the walk skips what is below it.
      const shallow = [];
      for await (const e of tree.walk(fx.data, { descend: () => false })) shallow.push(e.path);
      expect(shallow.length).toBe(3);
      const root = [];
      for await (const e of tree.walk('/')) root.push(e);
      expect(root.length).toBeGreaterThan(walked.length);
    });

    it("a path's history: changes, a deletion and a file made again, and a touch that changed nothing", async () => {
      const tree = await SnapshotTree.open(repo, { at: fx.snaps[0]!.id });
      const notes = await tree.history(fx.notes);
      expect(notes.map((h) => h.snapshot)).toEqual([0, 1, 3, 4].map((i) => fx.snaps[i]!.id));
      expect(notes.map((h) => h.changed)).toEqual([true, true, true, false]);
      expect(notes.map((h) => h.size)).toEqual([5, 14, 14, 14]);
      expect(notes.map((h) => h.time)).toEqual([1, 2, 4, 5].map((d) => Date.UTC(2026, 0, d)));
      expect(notes[3]!.entry.mtime.getTime()).toBe(Date.UTC(2026, 0, 20));
      const big = await tree.history(fx.big);
      expect(big.map((h) => h.changed)).toEqual([true, true, false, false, false]);
      expect(big.map((h) => h.size)).toEqual(fx.snaps.map((s) => s.big.length));
      const link = await tree.history(fx.link);
      expect(link.map((h) => [h.type, h.changed])).toEqual([['symlink', true], ...Array.from({ length: 4 }, () => ['symlink', false])]);
      // Each version reads as it was.
      for (const h of notes) {
        const file = await (await SnapshotTree.open(repo, { at: h.snapshot })).open(fx.notes);
        expect((await file.readAt(0, file.size)).equals(fx.snaps.find((s) => s.id === h.snapshot)!.notes!)).toBe(true);
      }
      expect(await tree.history(path.join(fx.data, 'never there'))).toEqual([]);
      // An entry of one snapshot given to another is that snapshot's path: looked up there again.
      const latest = await SnapshotTree.open(repo);
      expect((await (await latest.open(notes[0]!.entry)).readAt(0, 14)).toString()).toBe('second, longer');
      await expect((await SnapshotTree.open(repo, { at: fx.snaps[2]!.id })).open(notes[0]!.entry)).rejects.toMatchObject({ code: 'not_found' });
    });

    it('reads a large file across its cached windows, its TOC as strata toc shows it, and a range by WHEN in one step', async () => {
      const rng = new Rng(5);
      for (const [i, s] of fx.snaps.entries()) {
        const file = await (await SnapshotTree.open(repo, { at: s.id })).open(fx.big);
        const edge = 4 * 1024 * 1024;
        expect((await file.readAt(edge - 100, 5000)).equals(s.big.subarray(edge - 100, edge + 4900))).toBe(true);
        expect((await collect(file.readable(edge - 7, edge + 7))).equals(s.big.subarray(edge - 7, edge + 8))).toBe(true);
        if (i < 2) await checkReads(file, s.big, rng, 20);
      }
      const second = await (await SnapshotTree.open(repo, { at: fx.snaps[1]!.id })).open(fx.big);
      const toc = await second.toc();
      expect(toc.snapshot).toBe(fx.snaps[1]!.id);
      expect(toc.since).toBeUndefined();
      expect(toc.entries.some((e) => e.kind === 'ref' && e.offset === 0 && e.target.snapshot === fx.snaps[0]!.id)).toBe(true);
      expect(toc.entries.some((e) => e.kind === 'ref' && e.offset === 8)).toBe(true);
      expect(toc.entries.some((e) => e.kind === 'data')).toBe(true);
      expect(toc.entries[toc.entries.length - 1]!.end).toBe(fx.snaps[1]!.big.length - 1);
      const blocks = await second.toc({ blocks: true });
      expect(blocks.entries.length).toBeGreaterThan(toc.entries.length);
      // Asked for many of a snapshot's versions, a server sends its whole table of them: still the owner's id.
      const latest = await SnapshotTree.open(repo);
      for (const e of (await latest.list(fx.odd)).slice(0, 12)) if (e.type === 'file') await latest.open(e);
      const unchanged = await latest.open(fx.big);
      expect((await unchanged.toc()).since).toBe(fx.snaps[1]!.id);

      const at = await openFileAt(repo, fx.big, { at: '2026-01-01T12:00:00Z' }, { start: 1000, end: 1999 });
      expect([at.tree.id, at.start, at.end]).toEqual([fx.snaps[0]!.id, 1000, 1999]);
      expect((await collect(at.file.stream(at.start, at.end))).equals(fx.snaps[0]!.big.subarray(1000, 2000))).toBe(true);
      await expect(openFileAt(repo, fx.notes, { at: fx.snaps[2]!.id })).rejects.toMatchObject({ code: 'not_found' });
    });
  });
}

describe('one point-in-time tree, on a directory and through strata serve', () => {
  let fx: Fixture;
  let url: string;
  let tok: string;
  beforeAll(async () => {
    fx = await makeFixture();
    const srv = await serve(fx.dir);
    url = srv.url;
    tok = token(fx.dir, 'reader', 'read');
  }, 120_000);

  treeChecks('on a directory', () => Repository.open(fx.dir, PASSWORD), () => fx);
  treeChecks('through strata serve', () => Repository.open(url, PASSWORD, { readonly: true }, { token: tok, cacheDir: path.join(tempDir(), 'cache') }), () => fx);
});

describe('the decoded cache', () => {
  it('decodes each block once over many small reads, asks the catalog once per window, and keeps within its bound', async () => {
    const rng = new Rng(9);
    const made = await makeRepo();
    const dir = path.join(tempDir(), 'src');
    fs.mkdirSync(dir);
    const bytes = rng.bytes(2 * 1024 * 1024);
    fs.writeFileSync(path.join(dir, 'f'), bytes);
    await backup(made, { paths: [dir] });
    made.close();
    setDecodedCacheBytes(DEFAULT_DECODED_CACHE_BYTES);
    const repo = await Repository.open(made.root, PASSWORD);
    let asked = 0;
    const pieces = repo.service.pieces.bind(repo.service);
    repo.service.pieces = (v, s, e) => (asked++, pieces(v, s, e));
    const file = await (await SnapshotTree.open(repo)).open(path.join(dir, 'f'));
    const blocks = (await file.toc()).entries.length;
    expect(blocks).toBeGreaterThan(32);
    const offsets = Array.from({ length: bytes.length / 4096 }, (_, i) => i * 4096).sort(() => rng.int(3) - 1);
    // Reads of one block at once (a mount issues them in parallel) fetch and decode it once.
    const parallel = await Promise.all(Array.from({ length: 8 }, (_, i) => file.readAt(i * 512, 512)));
    expect(Buffer.concat(parallel).equals(bytes.subarray(0, 4096))).toBe(true);
    expect(repo.blocksRead).toBe(1);
    const before = decodedCacheStats();
    for (const o of offsets) expect((await file.readAt(o, 4096)).equals(bytes.subarray(o, o + 4096))).toBe(true);
    expect(repo.blocksRead).toBe(blocks);
    expect(asked).toBe(1);
    // Again, in another order: nothing is fetched or decoded again.
    for (const o of offsets.reverse()) expect((await file.readAt(o, 4096)).equals(bytes.subarray(o, o + 4096))).toBe(true);
    expect(repo.blocksRead).toBe(blocks);
    expect(asked).toBe(1);
    const after = decodedCacheStats();
    expect(after.hits - before.hits).toBeGreaterThanOrEqual(2 * offsets.length - blocks);
    // A buffer handed out is the caller's: changing it changes no later read.
    (await file.readAt(0, 4096)).fill(0);
    expect((await file.readAt(0, 4096)).equals(bytes.subarray(0, 4096))).toBe(true);
    for await (const chunk of file.stream(0, 65535)) chunk.fill(0);
    expect((await file.readAt(0, 65536)).equals(bytes.subarray(0, 65536))).toBe(true);

    // Bounded by bytes: a cache of 256 KiB holds at most that, and reads stay right.
    setDecodedCacheBytes(256 * 1024);
    expect(decodedCacheStats().bytes).toBeLessThanOrEqual(256 * 1024);
    for (const o of offsets.slice(0, 100)) expect((await file.readAt(o, 4096)).equals(bytes.subarray(o, o + 4096))).toBe(true);
    expect(decodedCacheStats().bytes).toBeLessThanOrEqual(256 * 1024);
    expect(decodedCacheStats().entries).toBeGreaterThan(0);
    setDecodedCacheBytes(DEFAULT_DECODED_CACHE_BYTES);
    repo.close();
  });
});

describe('a tampered catalog', () => {
  /** Two 4000-byte files, one block each, backed up; then the two data rows' blocks swapped in the catalog. */
  async function swapped() {
    const rng = new Rng(31);
    const made = await makeRepo();
    const dir = path.join(tempDir(), 'src');
    fs.mkdirSync(dir);
    const a = path.join(dir, 'a');
    fs.writeFileSync(a, rng.bytes(4000));
    fs.writeFileSync(path.join(dir, 'b'), rng.bytes(4000));
    await backup(made, { paths: [dir] });
    made.close();
    swapSmallBlocks(made.root);
    return { dir: made.root, a };
  }

  /**
   * A file of one block is read by its tree entry (format 3), so the
   * tampered rows are not even looked at: its own bytes. toc shows the
   * catalog's rows, and is caught. A server's read plan is the catalog's,
   * checked against the entry: caught.
   */
  async function expectCaught(repo: Repository, a: string, remote: boolean) {
    const want = fs.readFileSync(a);
    const file = await (await SnapshotTree.open(repo)).open(a);
    expect((await file.readAt(0, 10)).equals(want.subarray(0, 10))).toBe(true);
    expect((await collect(file.stream())).equals(want)).toBe(true);
    await expect(file.toc()).rejects.toMatchObject({ code: 'integrity', message: expect.stringMatching(/sealed TOC/) });
    const at = await openFileAt(repo, a);
    if (remote) await expect(collect(at.file.stream(at.start, at.end))).rejects.toMatchObject({ code: 'integrity', message: expect.stringContaining(a) });
    else expect((await collect(at.file.stream(at.start, at.end))).equals(want)).toBe(true);
  }

  it('never gives the other file\'s bytes through the tree, locally', async () => {
    const { dir, a } = await swapped();
    const repo = await Repository.open(dir, PASSWORD);
    await expectCaught(repo, a, false);
    repo.close();
  });

  it('and through a server', async () => {
    const { dir, a } = await swapped();
    const srv = await serve(dir);
    const repo = await Repository.open(srv.url, PASSWORD, { readonly: true }, { token: token(dir, 'reader', 'read'), cacheDir: path.join(tempDir(), 'cache') });
    await expectCaught(repo, a, true);
    repo.close();
  });
});

describe('the cache of decoded trees', () => {
  it('keeps a directory larger than its bound together with the directories above it (a lookup of each of its files used to decode it again)', async () => {
    const { TreeCache } = await import('../src/engine/snapshot.js');
    const tree = (n: number) => ({ entries: Array.from({ length: n }, (_, i) => ({ name: `f${i}`, type: 'file' as const, mode: 0o100644, uid: 0, gid: 0, mtimeNs: '0', ctimeNs: '0', ino: '0', size: 0 })) });
    const cache = new TreeCache(1000);
    const root = tree(3);
    const big = tree(1000);
    // A lookup below the big directory: the root, then the big one, again and again.
    for (let i = 0; i < 3; i++) {
      if (!cache.get('root')) cache.add('root', root);
      if (!cache.get('big')) cache.add('big', big);
    }
    expect(cache.get('root')).toBe(root);
    expect(cache.get('big')).toBe(big);
    // Still bounded: many small trees push the oldest out.
    for (let i = 0; i < 1000; i++) cache.add(`small${i}`, tree(5));
    expect(cache.get('root')).toBeUndefined();
    expect(cache.get('small999')).toBeDefined();
  });
});
