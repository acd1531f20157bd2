/**
 * Restoring from a repository on this machine: worker threads read runs of
 * blocks from the packs and write them into the restored file. Byte-exact
 * through refs and many packs; a piece a worker cannot restore is read again
 * on the main thread (a block that moved, a damaged one that must fail with
 * its own error); no file is left behind by a failure.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { backup } from '../src/engine/backup.js';
import { restore } from '../src/engine/restore.js';
import { SnapshotTree } from '../src/engine/snapshot-tree.js';
import { fetchSealed, SmallFileWriter } from '../src/engine/unpack.js';
import { findSnapshot } from '../src/engine/snapshot.js';
import { Repository } from '../src/repo/repository.js';
import { UnpackPool } from '../src/workers/unpack-pool.js';
import { PIECE_FIELDS } from '../src/workers/unpacker.js';
import { makeRepo, Rng, tempDir } from './helpers.js';

/** Two versions of a 3 MB file, the second with edits (so it reads through refs), in 64 KiB packs. */
async function setup(): Promise<{ repo: Repository; file: string; data: Buffer; first: Buffer; ids: string[] }> {
  const repo = await makeRepo({ chunkAvg: 4096, packSize: 64 * 1024 });
  const src = tempDir();
  const file = path.join(src, 'disk.img');
  const rng = new Rng(7);
  const first = rng.bytes(3_000_000);
  fs.writeFileSync(file, first);
  const ids = [(await backup(repo, { paths: [src] })).snapshot];
  const data = Buffer.concat([first.subarray(0, 1_000_000), rng.bytes(5000), first.subarray(1_000_000, 2_500_000), first.subarray(2_600_000)]);
  fs.writeFileSync(file, data);
  ids.push((await backup(repo, { paths: [src] })).snapshot);
  return { repo, file, data, first, ids };
}

/** Flips a byte of a block's sealed bytes in its pack (flipped, not set: a set byte may already have that value). */
function damage(repo: Repository, block: Buffer): void {
  const loc = repo.catalog.blockLocation(block)!;
  const fd = fs.openSync(path.join(repo.root, 'packs', loc.pack.slice(0, 2), loc.pack), 'r+');
  const byte = Buffer.alloc(1);
  fs.readSync(fd, byte, 0, 1, loc.offset + 40);
  fs.writeSync(fd, Buffer.from([byte[0]! ^ 0xff]), 0, 1, loc.offset + 40);
  fs.closeSync(fd);
}

async function restoreSnapshot(repo: Repository, id: string): Promise<string> {
  const target = tempDir('strata-restore-');
  await restore(repo, await findSnapshot(repo, { kind: 'id', prefix: id }), { target });
  return target;
}

afterEach(() => {
  vi.restoreAllMocks();
});

describe('restore on worker threads', () => {
  it('writes every version byte-exact through refs and many packs, in batches on the workers', async () => {
    const { repo, file, data, first, ids } = await setup();
    const run = vi.spyOn(UnpackPool.prototype, 'run');
    const packs = (repo.catalog.db.prepare('SELECT COUNT(*) AS n FROM packs').get() as { n: number }).n;
    expect(packs).toBeGreaterThan(40);
    expect(fs.readFileSync(path.join(await restoreSnapshot(repo, ids[0]!), file)).equals(first)).toBe(true);
    expect(fs.readFileSync(path.join(await restoreSnapshot(repo, ids[1]!), file)).equals(data)).toBe(true);
    // About 700 blocks of 4 KiB a version, 64 a batch.
    expect(run.mock.calls.length).toBeGreaterThan(15);
    repo.close();
  });

  it('a restore of a few small files starts no worker; a larger one starts them; both byte-exact', async () => {
    const { repo, file, data, ids } = await setup();
    const small = tempDir();
    const files = new Map(Array.from({ length: 5 }, (_, i) => [path.join(small, `f${i}`), new Rng(40 + i).bytes(1000 + 9000 * i)] as const));
    for (const [f, bytes] of files) fs.writeFileSync(f, bytes);
    const few = (await backup(repo, { paths: [small] })).snapshot;
    const target = await restoreSnapshot(repo, few);
    for (const [f, bytes] of files) expect(fs.readFileSync(path.join(target, f)).equals(bytes)).toBe(true);
    const pool = await repo.unpackers();
    expect(pool.started).toBe(false);
    expect(fs.readFileSync(path.join(await restoreSnapshot(repo, ids[1]!), file)).equals(data)).toBe(true);
    expect(pool.started).toBe(true);
    repo.close();
  });

  it('a piece a worker cannot read is read again here: the restore is still byte-exact', async () => {
    const { repo, file, data, ids } = await setup();
    // Workers read a copy of the repository that lacks half of its packs, so batches fail part way
    // through (after pieces were gathered for writing); this thread reads the rest through the catalog and storage.
    const copy = path.join(tempDir(), 'repo');
    fs.cpSync(repo.root, copy, { recursive: true });
    const packs = fs.readdirSync(path.join(copy, 'packs'), { recursive: true, withFileTypes: true }).filter((e) => e.isFile());
    expect(packs.length).toBeGreaterThan(2);
    packs.forEach((e, i) => i % 2 === 1 && fs.rmSync(path.join(e.parentPath, e.name)));
    Object.defineProperty(repo, 'threadReader', { get: () => ({ driver: 'directory', root: copy }) });
    const run = vi.spyOn(UnpackPool.prototype, 'run');
    expect(fs.readFileSync(path.join(await restoreSnapshot(repo, ids[1]!), file)).equals(data)).toBe(true);
    const answers = await Promise.all(run.mock.results.map((r) => r.value as Promise<{ failed?: number }>));
    expect(answers.some((a) => a.failed !== undefined)).toBe(true);
    repo.close();
  });

  it('from a store the workers cannot read (a bucket), this thread fetches the sealed bytes and hands them over: byte-exact, and a damaged block fails with its own error', async () => {
    const { repo, file, data, first, ids } = await setup();
    const small = tempDir();
    const smalls = new Map(Array.from({ length: 40 }, (_, i) => [path.join(small, `s${i}`), new Rng(70 + i).bytes(500 + 3000 * i)] as const));
    for (const [f, bytes] of smalls) fs.writeFileSync(f, bytes);
    const few = (await backup(repo, { paths: [small] })).snapshot;
    // As for a bucket: no reader of the store for the workers.
    Object.defineProperty(repo, 'threadReader', { get: () => undefined });
    expect(repo.unpacksOnThreads).toBe(true);
    // Each batch's sealed bytes, as handed over (they move to the worker, leaving the batch's view empty).
    const handed: { sealed: number | undefined; pieces: number }[] = [];
    const through = UnpackPool.prototype.run;
    const run = vi.spyOn(UnpackPool.prototype, 'run').mockImplementation(function (this: UnpackPool, batch) {
      let pieces = 0;
      for (let i = 2; i < batch.pieces.length; i += PIECE_FIELDS) pieces += batch.pieces[i]!;
      handed.push({ sealed: batch.sealed?.length, pieces });
      return through.call(this, batch);
    });
    expect(fs.readFileSync(path.join(await restoreSnapshot(repo, ids[0]!), file)).equals(first)).toBe(true);
    expect(fs.readFileSync(path.join(await restoreSnapshot(repo, ids[1]!), file)).equals(data)).toBe(true);
    const target = await restoreSnapshot(repo, few);
    for (const [f, bytes] of smalls) expect(fs.readFileSync(path.join(target, f)).equals(bytes), f).toBe(true);
    expect((await repo.unpackers()).reads).toBe(false);
    expect(handed.length).toBeGreaterThan(15);
    for (const h of handed) expect(h.sealed).toBe(h.pieces);
    const answers = await Promise.all(run.mock.results.map((r) => r.value as Promise<{ failed?: number }>));
    expect(answers.every((a) => a.failed === undefined)).toBe(true);
    vi.restoreAllMocks();

    const snap = await findSnapshot(repo, { kind: 'id', prefix: ids[0]! });
    const version = await repo.service.version(snap.row.seq, repo.keyring.pathId(file));
    damage(repo, repo.catalog.tocAt(version!.id, 1_500_000)!.block!);
    const again = tempDir('strata-restore-');
    await expect(restore(repo, snap, { target: again })).rejects.toMatchObject({ code: 'integrity', message: expect.stringMatching(/authentication failed/) });
    expect(fs.existsSync(path.join(again, file))).toBe(false);
    repo.close();
  });

  it('sealed bytes read into shared memory go to the workers as views, whether a run of blocks lies in one buffer or across several: byte-exact', async () => {
    const { repo, file, data, first, ids } = await setup();
    Object.defineProperty(repo, 'threadReader', { get: () => undefined });
    const storage = repo.storage;
    const read = storage.read.bind(storage);
    const shared = (b: Buffer) => {
      const s = Buffer.from(new SharedArrayBuffer(b.length));
      b.copy(s);
      return s;
    };
    // As from a bucket: first each read in shared memory of its own (a run of blocks then spans several buffers) ...
    const spy = vi.spyOn(storage, 'read').mockImplementation(async (h, offset, length) => shared(await read(h, offset, length)));
    const run = vi.spyOn(UnpackPool.prototype, 'run');
    expect(fs.readFileSync(path.join(await restoreSnapshot(repo, ids[1]!), file)).equals(data)).toBe(true);
    // ... then each pack read whole once into shared memory, and every read a view of it (a run then lies in one).
    const packs = new Map<string, Promise<Buffer>>();
    spy.mockImplementation(async (h, offset, length) => {
      let whole = packs.get(h.name);
      if (!whole) packs.set(h.name, (whole = storage.get(h).then(shared)));
      return (await whole).subarray(offset, offset + length);
    });
    expect(fs.readFileSync(path.join(await restoreSnapshot(repo, ids[0]!), file)).equals(first)).toBe(true);
    const batches = run.mock.calls.map(([b]) => b);
    // Every batch done where it was sent: none left to this thread to read again.
    const answers = await Promise.all(run.mock.results.map((r) => r.value as Promise<{ failed?: number }>));
    vi.restoreAllMocks();
    expect(batches.length).toBeGreaterThan(10);
    expect(batches.every((b) => b.sealed === undefined && b.parts !== undefined)).toBe(true);
    expect(answers.every((a) => a.failed === undefined)).toBe(true);
    repo.close();
  });

  it("a batch's sealed bytes: views of shared memory as read, short reads of memory of their own copied beside them; none shared, one buffer", async () => {
    const rng = new Rng(90);
    const packs = new Map([['a', rng.bytes(200_000)], ['b', rng.bytes(5_000)]]);
    const inShared = (b: Buffer) => {
      const s = Buffer.from(new SharedArrayBuffer(b.length));
      b.copy(s);
      return s;
    };
    const places = [
      { pack: 'a', offset: 1000, length: 150_000 },
      { pack: 'b', offset: 10, length: 4_000 },
      { pack: 'a', offset: 160_000, length: 30_000 },
    ];
    const given: Buffer[] = [];
    const fetch = (shared: (length: number) => boolean) =>
      fetchSealed(
        {
          storage: {
            read: async (h: { name: string }, offset: number, length: number) => {
              const b = packs.get(h.name)!.subarray(offset, offset + length);
              const r = shared(length) ? inShared(b) : Buffer.from(b);
              given.push(r);
              return r;
            },
          } as unknown as Repository['storage'],
        },
        {
          *places() {
            yield* places;
          },
        },
      );
    const want = places.map((p) => packs.get(p.pack)!.subarray(p.offset, p.offset + p.length));
    // As from a bucket: 64 KiB or more read into shared memory, less into memory of its own.
    const mixed = await fetch((n) => n >= 64 * 1024);
    expect('parts' in mixed).toBe(true);
    const parts = (mixed as { parts: Uint8Array[] }).parts;
    parts.forEach((p, i) => expect(Buffer.from(p).equals(want[i]!)).toBe(true));
    expect(parts.every((p) => p.buffer instanceof SharedArrayBuffer)).toBe(true);
    // The long read is handed over as it was read; only the two short ones were copied, into one buffer of their size.
    expect(parts[0]!.buffer).toBe(given[0]!.buffer);
    expect(parts[1]!.buffer).toBe(parts[2]!.buffer);
    expect(parts[1]!.buffer.byteLength).toBe(4_000 + 30_000);
    given.length = 0;
    const all = await fetch(() => true);
    expect((all as { parts: Uint8Array[] }).parts.map((p) => p.buffer)).toEqual(given.map((g) => g.buffer));
    const none = await fetch(() => false);
    expect(Buffer.from((none as { sealed: Uint8Array }).sealed).equals(Buffer.concat(want))).toBe(true);
  });

  it('a disk image whose blocks repeat (zeros, a pattern) restores byte-exact', async () => {
    const repo = await makeRepo({ chunkAvg: 4096, packSize: 64 * 1024 });
    const src = tempDir();
    const file = path.join(src, 'disk.img');
    const rng = new Rng(9);
    const pattern = rng.bytes(5000);
    const parts: Buffer[] = [];
    for (let i = 0; i < 30; i++) parts.push(i % 3 === 0 ? Buffer.alloc(100_000) : i % 3 === 1 ? Buffer.concat(Array.from({ length: 20 }, () => pattern)) : rng.bytes(50_000));
    const data = Buffer.concat(parts);
    fs.writeFileSync(file, data);
    const id = (await backup(repo, { paths: [src] })).snapshot;
    expect(fs.readFileSync(path.join(await restoreSnapshot(repo, id), file)).equals(data)).toBe(true);
    repo.close();
  });

  it('a damaged block in the middle fails the restore with its own error and leaves no file', async () => {
    const { repo, file, ids } = await setup();
    const snap = await findSnapshot(repo, { kind: 'id', prefix: ids[0]! });
    const version = await repo.service.version(snap.row.seq, repo.keyring.pathId(file));
    const middle = repo.catalog.tocAt(version!.id, 1_500_000)!;
    expect(middle.block).toBeTruthy();
    const loc = repo.catalog.blockLocation(middle.block!)!;
    const fd = fs.openSync(path.join(repo.root, 'packs', loc.pack.slice(0, 2), loc.pack), 'r+');
    const at = loc.offset + Math.floor(loc.length / 2);
    const b = Buffer.alloc(1);
    fs.readSync(fd, b, 0, 1, at);
    fs.writeSync(fd, Buffer.from([b[0]! ^ 1]), 0, 1, at);
    fs.closeSync(fd);
    const target = tempDir('strata-restore-');
    await expect(restore(repo, snap, { target })).rejects.toMatchObject({ code: 'integrity', message: expect.stringMatching(/authentication failed/) });
    expect(fs.existsSync(path.join(target, file))).toBe(false);
    repo.close();
  });

  it('files written at once: all byte-exact, and a damaged one fails the restore with nothing still writing', async () => {
    const repo = await makeRepo({ chunkAvg: 4096, packSize: 64 * 1024 });
    const src = tempDir();
    const rng = new Rng(11);
    const files = new Map<string, Buffer>();
    for (let i = 0; i < 24; i++) files.set(path.join(src, `f${String(i).padStart(2, '0')}`), rng.bytes(20_000 + rng.int(200_000)));
    for (const [f, data] of files) fs.writeFileSync(f, data);
    const snap = await findSnapshot(repo, { kind: 'id', prefix: (await backup(repo, { paths: [src] })).snapshot });
    // The workers have batches of more than one file at a time.
    const run = UnpackPool.prototype.run;
    const busy = new Map<number, number>();
    let most = 0;
    vi.spyOn(UnpackPool.prototype, 'run').mockImplementation(function (this: UnpackPool, batch) {
      // Each piece names its output file (a batch may write several small files).
      const fds = new Set<number>();
      for (let i = 7; i < batch.pieces.length; i += PIECE_FIELDS) fds.add(batch.pieces[i]!);
      for (const fd of fds) busy.set(fd, (busy.get(fd) ?? 0) + 1);
      most = Math.max(most, busy.size);
      return run.call(this, batch).finally(() => {
        for (const fd of fds) if (busy.get(fd) === 1) busy.delete(fd);
        else busy.set(fd, busy.get(fd)! - 1);
      });
    });
    const target = tempDir('strata-restore-');
    await restore(repo, snap, { target });
    for (const [f, data] of files) expect(fs.readFileSync(path.join(target, f)).equals(data), f).toBe(true);
    expect(most).toBeGreaterThan(1);
    vi.restoreAllMocks();

    // Damage the middle block of a file in the middle of the list.
    const bad = path.join(src, 'f12');
    const version = await repo.service.version(snap.row.seq, repo.keyring.pathId(bad));
    damage(repo, repo.catalog.tocAt(version!.id, Math.floor(version!.size / 2))!.block!);
    // Opened again, as the next command would: what this one read is not kept anywhere in between.
    const fresh = await Repository.open(repo.root, { password: async () => 'test-password' });
    const again = tempDir('strata-restore-');
    await expect(restore(fresh, await findSnapshot(fresh, { kind: 'id', prefix: snap.id }), { target: again })).rejects.toMatchObject({ code: 'integrity' });
    fresh.close();
    expect(fs.existsSync(path.join(again, bad))).toBe(false);
    // Whatever else was written is whole, and stays as it is: nothing writes after the restore has failed.
    const state = () => fs.readdirSync(path.join(again, src)).map((n) => `${n} ${fs.statSync(path.join(again, src, n)).size}`);
    const seen = state();
    for (const line of seen) {
      const [n, size] = line.split(' ');
      if (Number(size) === files.get(path.join(src, n!))!.length) expect(fs.readFileSync(path.join(again, src, n!)).equals(files.get(path.join(src, n!))!)).toBe(true);
    }
    await new Promise((r) => setTimeout(r, 100));
    expect(state()).toEqual(seen);
    repo.close();
  });

  it('small files go to the workers many to a message: byte-exact, and a damaged one fails the restore, never a cut or empty file', async () => {
    const repo = await makeRepo({ chunkAvg: 4096, packSize: 64 * 1024 });
    const src = tempDir();
    const rng = new Rng(12);
    const files = new Map<string, Buffer>();
    // One-block files (named by their entries), small files of a few blocks, empty ones, in a few directories.
    for (let i = 0; i < 300; i++) {
      const dir = path.join(src, `d${i % 7}`);
      fs.mkdirSync(dir, { recursive: true });
      const size = i % 50 === 0 ? 0 : i % 3 === 0 ? 5000 + rng.int(40_000) : 1 + rng.int(900);
      files.set(path.join(dir, `f${i}`), rng.bytes(size));
    }
    for (const [f, data] of files) fs.writeFileSync(f, data);
    const snap = await findSnapshot(repo, { kind: 'id', prefix: (await backup(repo, { paths: [src] })).snapshot });
    const run = UnpackPool.prototype.run;
    let most = 0;
    vi.spyOn(UnpackPool.prototype, 'run').mockImplementation(function (this: UnpackPool, batch) {
      const fds = new Set<number>();
      for (let i = 7; i < batch.pieces.length; i += PIECE_FIELDS) fds.add(batch.pieces[i]!);
      most = Math.max(most, fds.size);
      return run.call(this, batch);
    });
    const target = tempDir('strata-restore-');
    const result = await restore(repo, snap, { target });
    vi.restoreAllMocks();
    for (const [f, data] of files) expect(fs.readFileSync(path.join(target, f)).equals(data), f).toBe(true);
    expect(result.files).toBe(files.size);
    expect(result.bytes).toBe([...files.values()].reduce((a, b) => a + b.length, 0));
    expect(most).toBeGreaterThan(1);

    // Damage the one block of a small file.
    const bad = [...files.keys()].find((f) => files.get(f)!.length > 100 && files.get(f)!.length < 900)!;
    const version = await repo.service.version(snap.row.seq, repo.keyring.pathId(bad));
    damage(repo, repo.catalog.tocAt(version!.id, 0)!.block!);
    const fresh = await Repository.open(repo.root, { password: async () => 'test-password' });
    const again = tempDir('strata-restore-');
    await expect(restore(fresh, await findSnapshot(fresh, { kind: 'id', prefix: snap.id }), { target: again })).rejects.toMatchObject({ code: 'integrity' });
    fresh.close();
    expect(fs.existsSync(path.join(again, bad))).toBe(false);
    // Every other file there is whole or absent.
    for (const [f, data] of files) {
      const at = path.join(again, f);
      if (fs.existsSync(at)) expect(fs.readFileSync(at).equals(data), f).toBe(true);
    }
    repo.close();
  });

  it('small files are created, written and given their metadata by the workers, in the directory the restore checked', async () => {
    const repo = await makeRepo();
    const src = tempDir();
    const files = new Map<string, { data: Buffer; mode: number; mtime: Date }>();
    for (let i = 0; i < 60; i++) {
      const dir = path.join(src, `d${i % 3}`);
      fs.mkdirSync(dir, { recursive: true });
      // Modes the umask would take bits from, and one with the setgid bit: set after the creation.
      const mode = [0o640, 0o666, 0o2755, 0o400][i % 4]!;
      files.set(path.join(dir, `f${i}`), { data: Buffer.from(`file ${i} `.repeat(i)), mode, mtime: new Date(1_700_000_000_000 + i * 1_234_567) });
    }
    for (const [f, { data, mode, mtime }] of files) {
      fs.writeFileSync(f, data);
      fs.chmodSync(f, mode);
      fs.utimesSync(f, mtime, mtime);
    }
    const snap = await findSnapshot(repo, { kind: 'id', prefix: (await backup(repo, { paths: [src] })).snapshot });
    const run = vi.spyOn(UnpackPool.prototype, 'run');
    const target = tempDir('strata-restore-');
    const result = await restore(repo, snap, { target });
    const created = run.mock.calls.reduce((n, [batch]) => n + (batch.nameEnds?.length ?? 0), 0);
    expect(created).toBe(files.size);
    expect(result.files).toBe(files.size);
    for (const [f, { data, mode }] of files) {
      const at = path.join(target, f);
      const st = fs.statSync(at);
      expect(fs.readFileSync(at).equals(data), f).toBe(true);
      expect(st.mode & 0o7777, f).toBe(mode);
      // Times are kept to the microsecond.
      expect(fs.statSync(at, { bigint: true }).mtimeNs / 1000n, f).toBe(fs.statSync(f, { bigint: true }).mtimeNs / 1000n);
    }
    repo.close();
  });

  it('a file made by a worker goes into the directory opened when it was checked, not where a symlink put in its place since leads', async () => {
    const repo = await makeRepo();
    const src = tempDir();
    fs.writeFileSync(path.join(src, 'f'), 'the bytes of f');
    const snap = await findSnapshot(repo, { kind: 'id', prefix: (await backup(repo, { paths: [src] })).snapshot });
    const tree = SnapshotTree.of(snap);
    const file = await tree.open(await tree.stat(path.join(src, 'f')));
    const root = tempDir();
    const dir = path.join(root, 'dir');
    const elsewhere = path.join(root, 'elsewhere');
    fs.mkdirSync(dir);
    fs.mkdirSync(elsewhere);
    const fd = fs.openSync(dir, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
    // The directory is moved away and a symlink to another takes its name, after it was opened.
    fs.renameSync(dir, path.join(root, 'moved'));
    fs.symlinkSync(elsewhere, dir);
    const writer = new SmallFileWriter(repo);
    const made = await writer.create(file.version, { dir: fd, name: Buffer.from('f'), mode: 0o600, chmod: -1, uid: -1, gid: -1, mtime: 1_700_000_000 });
    fs.closeSync(fd);
    expect(made).toBe('done');
    expect(fs.readFileSync(path.join(root, 'moved', 'f'), 'utf8')).toBe('the bytes of f');
    expect(fs.readdirSync(elsewhere)).toEqual([]);
    // Something already at the name is left as it is, for the restore to decide about.
    const fd2 = fs.openSync(path.join(root, 'moved'), fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
    expect(await writer.create(file.version, { dir: fd2, name: Buffer.from('f'), mode: 0o600, chmod: -1, uid: -1, gid: -1, mtime: 1 })).toBe('not-made');
    fs.closeSync(fd2);
    expect(fs.statSync(path.join(root, 'moved', 'f'), { bigint: true }).mtimeNs / 1_000_000n).toBe(1_700_000_000_000n);
    repo.close();
  });
});
