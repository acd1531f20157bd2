/**
 * The base of the item readers: RangeReader's reads byte for byte against
 * the file, its kept blocks (a read again costs nothing), what it counts as
 * fetched; and datasets told by content, from real files of each kind.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import Database from 'better-sqlite3';
import { describe, expect, it } from 'vitest';
import { backup } from '../src/engine/backup.js';
import { describeContent, detectDataset, HEAD_BYTES, SnapshotTree } from '../src/engine/snapshot-tree.js';
import { Dataset } from '../src/items/dataset.js';
import { READ_BLOCK, RangeReader } from '../src/items/reader.js';
import { makeRepo, Rng, tempDir } from './helpers.js';

describe('RangeReader', () => {
  it('reads any range exactly, keeps aligned blocks, and counts what it fetched', async () => {
    const dir = tempDir();
    const want = new Rng(7).bytes(1_500_000);
    fs.writeFileSync(path.join(dir, 'f'), want);
    const repo = await makeRepo();
    try {
      await backup(repo, { paths: [dir] });
      const tree = await SnapshotTree.open(repo);
      const r = new RangeReader(await tree.open(path.join(dir, 'f')));
      expect(r.size).toBe(want.length);
      const rng = new Rng(3);
      for (let i = 0; i < 200; i++) {
        const at = rng.int(want.length);
        const len = rng.int(Math.min(want.length - at, rng.int(2) ? 100 : 150_000) + 1);
        expect((await r.read(at, len)).equals(want.subarray(at, at + len))).toBe(true);
      }
      expect((await r.read(want.length - 1, 1))[0]).toBe(want[want.length - 1]);
      expect((await r.read(want.length, 0)).length).toBe(0);
      await expect(r.read(want.length - 1, 2)).rejects.toMatchObject({ code: 'range_not_satisfiable' });
      await expect(r.read(-1, 1)).rejects.toMatchObject({ code: 'usage' });

      // A small read asks for its aligned block once; the same bytes again cost nothing. What was
      // fetched is whole blocks (8-128 KiB, cut where the content says): at least what was asked.
      const MAX_BLOCK = 128 * 1024;
      const fresh = new RangeReader(await tree.open(path.join(dir, 'f')));
      await fresh.read(100, 10);
      expect(fresh.requested).toBe(READ_BLOCK);
      const one = fresh.fetched;
      expect(one).toBeGreaterThanOrEqual(READ_BLOCK);
      expect(one).toBeLessThanOrEqual(READ_BLOCK + 2 * MAX_BLOCK);
      await fresh.read(200, 1000);
      expect([fresh.requested, fresh.fetched]).toEqual([READ_BLOCK, one]);
      // Across a block boundary: only the block it lacks.
      await fresh.read(READ_BLOCK - 5, 10);
      expect(fresh.requested).toBe(2 * READ_BLOCK);
      expect(fresh.fetched).toBeLessThanOrEqual(one + READ_BLOCK + 2 * MAX_BLOCK);
      // A long read goes straight through, counted as it is.
      await fresh.read(0, 1_200_000);
      expect(fresh.requested).toBe(2 * READ_BLOCK + 1_200_000);
      // Each block counted once, whether from the repository or the cache.
      expect(fresh.fetched).toBeGreaterThanOrEqual(1_200_000);
      expect(fresh.fetched).toBeLessThanOrEqual(1_200_000 + MAX_BLOCK);
      await fresh.read(0, 1_200_000);
      expect(fresh.fetched).toBeLessThanOrEqual(1_200_000 + MAX_BLOCK);
      // Reads rounded to a page: a SQLite page asks for a page.
      const paged = new RangeReader(await tree.open(path.join(dir, 'f')));
      paged.align(4096);
      await paged.read(8192, 4096);
      expect(paged.requested).toBe(4096);
      expect(paged.fetched).toBeLessThanOrEqual(2 * MAX_BLOCK);
      // A read of more pages than are kept (a file system's 1 MiB of data): exact, straight through.
      expect((await paged.read(4097, 1024 * 1024)).equals(want.subarray(4097, 4097 + 1024 * 1024))).toBe(true);
      expect(paged.requested).toBe(4096 + 1024 * 1024);
      // A stream goes through the kept blocks: bytes already there cost nothing more.
      const asked = fresh.requested;
      const parts: Buffer[] = [];
      for await (const piece of fresh.stream(1000, 5000)) parts.push(piece);
      expect(Buffer.concat(parts).equals(want.subarray(1000, 5000))).toBe(true);
      expect(fresh.requested).toBe(asked);
      // A long one: windows that grow, every byte once, in order.
      const tail: Buffer[] = [];
      for await (const piece of fresh.stream(1_250_000)) tail.push(piece);
      expect(Buffer.concat(tail).equals(want.subarray(1_250_000))).toBe(true);
      expect(tail.length).toBeGreaterThan(1);
    } finally {
      repo.close();
    }
  });
});

describe('blocks of zeros', () => {
  it('are known by their ids: the id of any length of zeros is the HMAC of those zeros, and no other', async () => {
    const repo = await makeRepo();
    try {
      const { keyring } = repo;
      for (const n of [1, 63, 64, 4095, 4096, 4097, 8192, 2048 + 7, 131_072, 131_073, 262_144, 262_145, 300_000, 7, 4096, 5_000_000]) {
        expect(keyring.zeroBlockId(n).equals(keyring.blockId(Buffer.alloc(n)))).toBe(true);
        expect(keyring.isZeroBlock(keyring.blockId(Buffer.alloc(n)), n)).toBe(true);
        expect(keyring.isZeroBlock(keyring.blockId(Buffer.alloc(n)), n + 1)).toBe(false);
      }
      const one = Buffer.alloc(4096);
      one[4095] = 1;
      expect(keyring.isZeroBlock(keyring.blockId(one), 4096)).toBe(false);
      expect(keyring.isZeroBlock(keyring.blockId(Buffer.alloc(0)), 0)).toBe(false);
      // A length no block can have (a hostile TOC's) is not hashed out.
      expect(keyring.isZeroBlock(keyring.blockId(Buffer.alloc(1)), 2 ** 40)).toBe(false);
    } finally {
      repo.close();
    }
  });

  it('are not fetched: a read of a disk image\'s free space costs nothing, one of a record between runs of zeros only its block', async () => {
    const dir = tempDir();
    const rng = new Rng(12);
    const record = rng.bytes(3000);
    const want = Buffer.concat([rng.bytes(50_000), Buffer.alloc(2_000_000), record, Buffer.alloc(1_000_000), rng.bytes(50_000)]);
    fs.writeFileSync(path.join(dir, 'disk.img'), want);
    const repo = await makeRepo();
    try {
      await backup(repo, { paths: [dir] });
      const tree = await SnapshotTree.open(repo);
      const r = new RangeReader(await tree.open(path.join(dir, 'disk.img')));
      r.align(4096);
      expect((await r.read(1_000_000, 4096)).equals(Buffer.alloc(4096))).toBe(true);
      expect((await r.read(100_000, 1_500_000)).equals(want.subarray(100_000, 1_600_000))).toBe(true);
      expect(r.fetched).toBe(0);
      // The record's block holds at most `zeros` zeros after it (and the record stays whole in one block).
      const at = 2_050_000;
      expect((await r.read(at, 3000)).equals(record)).toBe(true);
      expect(r.fetched).toBeGreaterThanOrEqual(3000);
      expect(r.fetched).toBeLessThanOrEqual(3000 + repo.chunker.zeros!);
      // The whole file, byte for byte: zeros and all.
      expect((await r.read(0, want.length)).equals(want)).toBe(true);
    } finally {
      repo.close();
    }
  });
});

describe('datasets told by content', () => {
  const head = (file: string) => {
    const b = fs.readFileSync(file);
    return b.subarray(0, Math.min(HEAD_BYTES, b.length));
  };

  it('knows mbox, zip and its kinds, tar, SQLite, disk images and qcow2 by their bytes, whatever their names', () => {
    const dir = tempDir();
    const f = (n: string) => path.join(dir, n);
    fs.writeFileSync(f('mail'), 'From a@b Mon Jan  1 00:00:00 2024\nFrom: a@b\nSubject: x\n\nbody\n');
    fs.writeFileSync(f('x.txt'), 'hello\n');
    execFileSync('zip', ['-q', f('z.data'), 'x.txt'], { cwd: dir });
    execFileSync('tar', ['-cf', f('t.data'), 'x.txt'], { cwd: dir });
    execFileSync('tar', ['--format=v7', '-cf', f('v7.data'), 'x.txt'], { cwd: dir });
    new Database(f('db.data')).exec('CREATE TABLE t (a)');
    // An OpenDocument file: a zip whose first entry is "mimetype", stored.
    fs.writeFileSync(f('mimetype'), 'application/vnd.oasis.opendocument.text');
    execFileSync('zip', ['-q0X', f('doc.odt'), 'mimetype'], { cwd: dir });
    // A GPT disk and an MBR disk, as sfdisk writes them.
    for (const [name, label] of [
      ['gpt.img', 'label: gpt\n,2M\n'],
      ['mbr.img', 'label: dos\n,2M,c\n'],
    ] as const) {
      execFileSync('truncate', ['-s', '4M', f(name)]);
      execFileSync('sfdisk', ['-q', f(name)], { input: label });
    }
    // File systems without a partition table.
    execFileSync('mkfs.ext4', ['-q', '-F', f('ext.img'), '2M']);
    for (const bits of ['16', '32']) {
      execFileSync('truncate', ['-s', '40M', f(`fat${bits}.img`)]);
      execFileSync('mkfs.vfat', ['-F', bits, f(`fat${bits}.img`)]);
    }
    const qcow = Buffer.alloc(512);
    qcow.writeUInt32BE(0x514649fb, 0);
    fs.writeFileSync(f('vm.data'), qcow);
    const cases: [string, string | undefined, string][] = [
      ['mail', 'mbox', 'mbox mailbox'],
      ['z.data', 'zip', 'zip archive'],
      ['doc.odt', 'zip', 'zip archive (OpenDocument)'],
      ['t.data', 'tar', 'tar archive'],
      ['v7.data', 'tar', 'tar archive'],
      ['db.data', 'sqlite', 'SQLite database'],
      ['gpt.img', 'disk', 'disk image (GPT)'],
      ['mbr.img', 'disk', 'disk image (MBR)'],
      ['vm.data', 'qcow2', 'qcow2 disk image'],
      ['ext.img', 'disk', 'disk image (ext2/3/4 file system)'],
      ['fat16.img', 'disk', 'disk image (FAT file system)'],
      ['fat32.img', 'disk', 'disk image (FAT file system)'],
      ['x.txt', undefined, ''],
    ];
    for (const [name, type, what] of cases) {
      const d = detectDataset(head(f(name)));
      expect(d?.type, name).toBe(type);
      if (d) expect(d.what, name).toBe(what);
    }
    expect(describeContent(head(f('x.txt')), 6)).toBe('text');
    expect(describeContent(Buffer.alloc(0), 0)).toBe('empty');
    expect(describeContent(Buffer.from([0x1f, 0x8b, 8, 0]), 4)).toBe('gzip data');
    expect(describeContent(head(f('z.data')), 100)).toBe('a zip archive');
    // "From " at the start of a text that is no mailbox.
    expect(detectDataset(Buffer.from('From here we go, said the text.\nAnd on.\n'))).toBeUndefined();
  });
});

describe('a dataset the manifest names', () => {
  it('is known by it: opening it reads nothing of the file, and its items read as from its bytes', async () => {
    const dir = tempDir();
    fs.writeFileSync(path.join(dir, 'x.txt'), 'hello\n'.repeat(1000));
    fs.writeFileSync(path.join(dir, 'noise.bin'), new Rng(4).bytes(400_000));
    execFileSync('zip', ['-q', path.join(dir, 'a.zip'), 'x.txt', 'noise.bin'], { cwd: dir });
    const repo = await makeRepo();
    try {
      await backup(repo, { paths: [dir] });
      const tree = await SnapshotTree.open(repo);
      const ds = await Dataset.of(tree, path.join(dir, 'a.zip'));
      expect([ds.type, ds.fetched]).toEqual(['zip', 0]);
      expect((await ds.items()).map((e) => e.name)).toEqual(['x.txt', 'noise.bin']);
      // A file the manifest does not name is told by its first bytes.
      const plain = await Dataset.of(tree, path.join(dir, 'x.txt'));
      expect(plain.type).toBeUndefined();
      expect(plain.fetched).toBeGreaterThan(0);
    } finally {
      repo.close();
    }
  });
});

describe('a file system image read in this process', () => {
  it('leaves no process-wide handler of ext2fs behind, and reads a bare ext4 image (no partition table)', async () => {
    const dir = tempDir();
    const root = tempDir();
    fs.writeFileSync(path.join(root, 'hello.txt'), 'hello from ext4\n');
    const img = path.join(dir, 'fs.img');
    execFileSync('mkfs.ext4', ['-q', '-F', '-d', root, img, '4M']);
    const repo = await makeRepo();
    try {
      await backup(repo, { paths: [dir] });
      const before = [process.listeners('uncaughtException').length, process.listeners('unhandledRejection').length];
      const ds = await Dataset.of(await SnapshotTree.open(repo), img);
      expect(await ds.items()).toMatchObject([{ number: 1, offset: 0, size: 4 * 1024 * 1024, filesystem: 'ext', table: 'none' }]);
      expect((await ds.items({ inner: '/' })).map((e) => e.name)).toEqual(['hello.txt', 'lost+found']);
      const parts: Buffer[] = [];
      for await (const piece of (await ds.item('/hello.txt')).bytes) parts.push(Buffer.from(piece));
      expect(Buffer.concat(parts).toString()).toBe('hello from ext4\n');
      expect([process.listeners('uncaughtException').length, process.listeners('unhandledRejection').length]).toEqual(before);
    } finally {
      repo.close();
    }
  });

  it('reads FAT12 (a floppy-sized image and a partition of type 1), byte for byte', async () => {
    const dir = tempDir();
    const rng = new Rng(12);
    const a = rng.bytes(200_000);
    fs.writeFileSync(path.join(dir, 'a.bin'), a);
    fs.writeFileSync(path.join(dir, 'b.txt'), 'in a subdirectory\n');
    const images = tempDir();
    const bare = path.join(images, 'floppy.img');
    execFileSync('mkfs.vfat', ['-C', '-F', '12', bare, '1440'], { stdio: 'ignore' });
    execFileSync('mcopy', ['-i', bare, path.join(dir, 'a.bin'), '::']);
    execFileSync('mmd', ['-i', bare, '::sub']);
    execFileSync('mcopy', ['-i', bare, path.join(dir, 'b.txt'), '::sub/b.txt']);
    const mbr = path.join(images, 'mbr.img');
    execFileSync('truncate', ['-s', '8M', mbr]);
    execFileSync('sfdisk', ['-q', mbr], { input: 'label: dos\n2048,8192,1\n' });
    execFileSync('mkfs.vfat', ['-F', '12', '--offset', '2048', mbr, '4096'], { stdio: 'ignore' });
    execFileSync('mcopy', ['-i', `${mbr}@@1M`, path.join(dir, 'a.bin'), '::']);
    const repo = await makeRepo();
    try {
      await backup(repo, { paths: [images] });
      const tree = await SnapshotTree.open(repo);
      const read = async (ds: Dataset, item: string) => {
        const parts: Buffer[] = [];
        for await (const piece of (await ds.item(item)).bytes) parts.push(Buffer.from(piece));
        return Buffer.concat(parts);
      };
      const floppy = await Dataset.of(tree, bare);
      expect(floppy.what).toBe('a disk image (FAT file system)');
      expect(await floppy.items()).toMatchObject([{ number: 1, filesystem: 'fat', table: 'none' }]);
      expect((await floppy.items({ inner: '/' })).map((e) => [e.name, e.type])).toEqual([
        ['A.BIN', 'file'],
        ['SUB', 'dir'],
      ]);
      expect((await read(floppy, '/a.bin')).equals(a)).toBe(true);
      expect((await read(floppy, '/sub/b.txt')).toString()).toBe('in a subdirectory\n');
      const part = await Dataset.of(tree, mbr);
      expect(await part.items()).toMatchObject([{ number: 1, offset: 1024 * 1024, type: '0x01', filesystem: 'fat', table: 'mbr' }]);
      expect((await read(part, 'p1:/a.bin')).equals(a)).toBe(true);
    } finally {
      repo.close();
    }
  });
});
