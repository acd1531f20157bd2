/**
 * The hand-written ext2/3/4 reader (src/items/ext4.ts) against real file
 * systems made by mkfs from directories (mke2fs -d), in the layouts mke2fs
 * makes (ext2 and ext3 block maps, ext4 with and without metadata_csum, 1 KiB
 * blocks, 128-byte inodes, meta_bg, 64-bit) and the htree hashes e2fsck
 * indexes with: every file byte for byte against its source, every
 * directory's listing against the source's, symbolic links followed as the
 * kernel follows them. Then damage (a changed byte of an inode, a directory
 * block, an extent block) is an integrity error, hostile structures end, and
 * through a repository one file of an image that holds much else fetches
 * its blocks and a few of metadata.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { backup } from '../src/engine/backup.js';
import { SnapshotTree } from '../src/engine/snapshot-tree.js';
import { Dataset } from '../src/items/dataset.js';
import { Ext4, Ext4Unsupported } from '../src/items/ext4.js';
import { crc32cRaw } from '../src/items/ext4-hash.js';
import type { ByteSource } from '../src/items/qcow2.js';
import { makeRepo, Rng, tempDir } from './helpers.js';

/** An image file on disk as the reader's byte source, counting the reads. */
const opened: number[] = [];
afterAll(() => {
  for (const fd of opened) fs.closeSync(fd);
});

function fileSource(file: string): ByteSource & { reads: number; bytes: number } {
  const fd = fs.openSync(file, 'r');
  opened.push(fd);
  const size = fs.fstatSync(fd).size;
  const src = {
    path: file,
    size,
    reads: 0,
    bytes: 0,
    async read(offset: number, length: number) {
      if (offset + length > size) throw new Error(`read past the end: ${offset}+${length}`);
      src.reads++;
      src.bytes += length;
      const b = Buffer.alloc(length);
      fs.readSync(fd, b, 0, length, offset);
      return b;
    },
  };
  return src;
}

async function open(img: string): Promise<Ext4> {
  const size = fs.statSync(img).size;
  return Ext4.open(fileSource(img), { number: 1, offset: 0, size });
}

async function readAll(fs4: Ext4, p: string): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const piece of fs4.data(await fs4.file(p))) parts.push(Buffer.from(piece));
  return Buffer.concat(parts);
}

/** A tree of what mke2fs copies: small, empty, large, sparse, fragmented, a big directory, links, odd names. */
function sourceTree(seed: number): string {
  const root = tempDir('strata-ext4-src-');
  const rng = new Rng(seed);
  const w = (p: string, data: Buffer | string) => {
    fs.mkdirSync(path.dirname(path.join(root, p)), { recursive: true });
    fs.writeFileSync(path.join(root, p), data);
  };
  w('small.txt', 'hello from ext4\n');
  w('empty', '');
  w('large.bin', rng.bytes(6 * 1024 * 1024 + 123));
  // Sparse: data, a hole of 5 MiB, data, a hole to the end.
  const sparse = fs.openSync(path.join(root, 'sparse.bin'), 'w');
  fs.writeSync(sparse, rng.bytes(10_000), 0, 10_000, 0);
  fs.writeSync(sparse, rng.bytes(70_000), 0, 70_000, 5 * 1024 * 1024 + 17);
  fs.ftruncateSync(sparse, 9 * 1024 * 1024);
  fs.closeSync(sparse);
  // One 4 KiB piece of data every 8 KiB: a file of many extents, which ext4 keeps in a tree of depth 1 or more.
  const frag = fs.openSync(path.join(root, 'frag.bin'), 'w');
  for (let i = 0; i < 500; i++) fs.writeSync(frag, rng.bytes(4096), 0, 4096, i * 8192);
  fs.closeSync(frag);
  // A directory of thousands of entries: an htree of more than one leaf.
  for (let i = 0; i < 3000; i++) w(`many/entry-${i.toString(36)}-${'x'.repeat(i % 40)}.txt`, `entry ${i}\n`);
  w('a/b/c/deep.txt', 'deep\n');
  // Odd names: spaces, UTF-8, a newline, a leading dash, 255 bytes.
  for (const name of ['with space', 'café au lait', '日本語のファイル', 'line\nbreak', '-dash', 'n'.repeat(255), 'é'.repeat(127)]) {
    w(`odd/${name}`, `name ${name}\n`);
    w(`many/${name}`, `name ${name}\n`);
  }
  // Symbolic links: fast (in the inode) and slow (a block), relative, absolute, through a directory, a chain, a loop, dangling.
  fs.symlinkSync('small.txt', path.join(root, 'fast-link'));
  fs.symlinkSync(`${'./'.repeat(40)}a/b/c/deep.txt`, path.join(root, 'slow-link'));
  fs.symlinkSync('../../small.txt', path.join(root, 'a/b/up-link'));
  fs.symlinkSync('/a/b', path.join(root, 'abs-dir-link'));
  fs.symlinkSync('abs-dir-link', path.join(root, 'chain-link'));
  fs.symlinkSync('loop-b', path.join(root, 'loop-a'));
  fs.symlinkSync('loop-a', path.join(root, 'loop-b'));
  fs.symlinkSync('nowhere', path.join(root, 'dangling'));
  return root;
}

/** Every file and directory of the source read back through the reader (or as debugfs reads the image, for `asDebugfs`). */
async function compareTree(fs4: Ext4, root: string, img: string, asDebugfs: string[] = []): Promise<number> {
  let files = 0;
  const walk = async (rel: string) => {
    const abs = path.join(root, rel);
    const listed = await fs4.list(rel === '' ? '/' : `/${rel}`);
    const names = fs.readdirSync(abs).sort();
    expect(
      listed.map((e) => e.name).filter((n) => n !== 'lost+found'),
      rel,
    ).toEqual(names);
    for (const e of listed) {
      if (e.name === 'lost+found') continue;
      const p = path.join(abs, e.name);
      const st = fs.lstatSync(p);
      const type = st.isFile() ? 'file' : st.isDirectory() ? 'dir' : st.isSymbolicLink() ? 'symlink' : 'other';
      expect(e.type, p).toBe(type);
      expect(e.mtime, p).toBe(new Date(Math.floor(st.mtimeMs / 1000) * 1000).toISOString());
      const oracle = asDebugfs.includes(`${rel}/${e.name}`.replace(/^\//, '')) ? debugfsDump(img, `/${path.posix.join(rel, e.name)}`) : type === 'file' ? fs.readFileSync(p) : undefined;
      if (type === 'file' || type === 'symlink') expect(e.size, p).toBe(oracle?.length ?? st.size);
      if (type === 'dir') await walk(path.join(rel, e.name));
      if (type === 'file') {
        expect((await readAll(fs4, `/${rel}/${e.name}`)).equals(oracle!), p).toBe(true);
        files++;
      }
    }
  };
  await walk('');
  return files;
}

const mkfs = (args: string[], root: string, img: string, size: string) => execFileSync('mke2fs', ['-q', '-F', ...args, '-d', root, img, size], { stdio: ['ignore', 'ignore', 'pipe'] });

describe('the ext2/3/4 reader', () => {
  const root = sourceTree(4);
  const dir = tempDir('strata-ext4-img-');

  it.each([
    ['ext4 (metadata_csum, 64bit, extents, flex_bg)', ['-t', 'ext4', '-O', '64bit,metadata_csum']],
    ['ext4 with uninit_bg (CRC-16 descriptors), 1 KiB blocks, 128-byte inodes', ['-t', 'ext4', '-O', '^metadata_csum,^64bit,uninit_bg', '-b', '1024', '-I', '128']],
    ['ext4 with meta_bg and 2 KiB blocks', ['-t', 'ext4', '-O', 'meta_bg,^resize_inode', '-b', '2048']],
    ['ext4 with inline_data (small files and directories in their inodes)', ['-t', 'ext4', '-O', 'inline_data', '-I', '512']],
    ['ext3 (block maps, htree)', ['-t', 'ext3']],
    ['ext2 (block maps, no htree)', ['-t', 'ext2', '-O', '^dir_index']],
  ])('reads %s byte for byte', async (_name, args) => {
    const img = path.join(dir, `${args.join('').replace(/[^a-z0-9]/gi, '')}.img`);
    mkfs(args, root, img, '64M');
    const fs4 = await open(img);
    // mke2fs 1.47's -d with inline_data records a file that ends in a hole as ending where its data ends: the image is the oracle there.
    expect(await compareTree(fs4, root, img, args.includes('inline_data') ? ['sparse.bin'] : [])).toBeGreaterThan(3000);
    // Inline data, in i_block alone and beyond it in the system.data attribute, for a file and a directory.
    if (args.includes('inline_data')) for (const p of ['/small.txt', `/odd/${'n'.repeat(255)}`, '/a/b/c']) expect(debugfs(img, `stat "${p}"`), p).toMatch(/Size of inline data: \d+/);
    if (args.includes('inline_data')) expect(Number(/Size of inline data: (\d+)/.exec(debugfs(img, `stat "/odd/${'n'.repeat(255)}"`))![1])).toBeGreaterThan(60);
  });

  it('follows symbolic links as the kernel does, fast and slow, and ends loops', async () => {
    const img = path.join(dir, 'links.img');
    mkfs(['-t', 'ext4'], root, img, '64M');
    const fs4 = await open(img);
    // The oracle: the kernel's own resolution of the same links in the source tree.
    for (const p of ['slow-link', 'a/b/up-link', 'abs-dir-link/c/deep.txt', 'chain-link/c/deep.txt', 'chain-link/up-link']) {
      const want = p.startsWith('abs') || p.startsWith('chain') ? fs.readFileSync(path.join(root, 'a/b', p.split('/').slice(1).join('/'))) : fs.readFileSync(path.join(root, p));
      // The last component is a link in two of these: a file is read only when it is not one.
      if (fs.lstatSync(path.join(root, p.startsWith('abs') || p.startsWith('chain') ? path.join('a/b', p.split('/').slice(1).join('/')) : p)).isSymbolicLink()) {
        await expect(fs4.file(`/${p}`)).rejects.toMatchObject({ code: 'not_file' });
        continue;
      }
      expect((await readAll(fs4, `/${p}`)).equals(want), p).toBe(true);
    }
    const links = await fs4.list('/');
    expect(links.find((e) => e.name === 'slow-link')).toMatchObject({ type: 'symlink', size: fs.readlinkSync(path.join(root, 'slow-link')).length });
    expect((await fs4.list('/chain-link')).map((e) => e.name)).toEqual(['c', 'up-link']);
    expect((await readAll(fs4, '/a/b/c/../../b/c/deep.txt')).toString()).toBe('deep\n');
    await expect(fs4.file('/fast-link')).rejects.toMatchObject({ code: 'not_file' });
    await expect(fs4.list('/loop-a')).rejects.toMatchObject({ code: 'not_found', message: expect.stringMatching(/more than 40 symbolic links/) });
    await expect(fs4.list('/dangling')).rejects.toMatchObject({ code: 'not_found' });
    await expect(fs4.file('/many')).rejects.toMatchObject({ code: 'is_directory' });
    await expect(fs4.file('/small.txt/x')).rejects.toMatchObject({ code: 'not_directory' });
    await expect(fs4.file('/many/entry-none.txt')).rejects.toMatchObject({ code: 'not_found' });
  });

  it('finds names through htrees of each hash (half-MD4, TEA, legacy; signed and unsigned), reading few blocks', async () => {
    const names = fs.readdirSync(path.join(root, 'many'));
    for (const [hash, unsigned] of [
      ['half_md4', false],
      ['tea', false],
      ['legacy', false],
      ['half_md4', true],
      ['tea', true],
      ['legacy', true],
    ] as const) {
      const img = path.join(dir, `hash-${hash}-${unsigned}.img`);
      mkfs(['-t', 'ext4'], root, img, '64M');
      execFileSync('tune2fs', ['-E', `hash_alg=${hash}`, img], { stdio: 'ignore' });
      execFileSync('debugfs', ['-w', '-R', `ssv flags ${unsigned ? 2 : 1}`, img], { stdio: 'ignore' });
      // e2fsck -D indexes every directory again with the file system's hash.
      try {
        execFileSync('e2fsck', ['-fyD', img], { stdio: 'ignore' });
      } catch (e) {
        if ((e as { status?: number }).status !== 1) throw e;
      }
      const src = fileSource(img);
      const fs4 = await Ext4.open(src, { number: 1, offset: 0, size: src.size });
      const before = src.reads;
      // Names with bytes above 127 hash differently with signed and unsigned chars.
      const odd = fs.readdirSync(path.join(root, 'odd'));
      for (const name of [...odd, ...names.slice(0, 200 - odd.length)]) expect((await readAll(fs4, `/many/${name}`)).toString()).toBe(fs.readFileSync(path.join(root, 'many', name), 'utf8'));
      // Each lookup: the root's inode and directory, many's inode and its htree (root, node, leaf), the file's inode
      // and data, and the descriptors of their groups: about a dozen reads. A linear scan of many would read 75 on average.
      expect((src.reads - before) / 200, `${hash} ${unsigned}`).toBeLessThan(20);
    }
  });

  it('reads uninitialized extents as zeros whatever their blocks hold, and keeps extent trees of depth 1', async () => {
    const img = path.join(dir, 'uninit.img');
    mkfs(['-t', 'ext4', '-b', '4096'], root, img, '64M');
    execFileSync('debugfs', ['-w', '-R', 'fallocate /sparse.bin 100 400', img], { stdio: 'ignore' });
    const ex = debugfs(img, 'ex /sparse.bin');
    const uninit = /^\s*0\/\s*0\s+\d+\/\s*\d+\s+(\d+)\s+-\s+(\d+)\s+(\d+)\s+-\s+(\d+)\s+\d+ Uninit$/m.exec(ex);
    expect(uninit, ex).not.toBeNull();
    // What the blocks under the uninitialized extent hold must not be read.
    const [first, last] = [Number(uninit![3]), Number(uninit![4])];
    const fd = fs.openSync(img, 'r+');
    fs.writeSync(fd, Buffer.alloc((last - first + 1) * 4096, 0xaa), 0, (last - first + 1) * 4096, first * 4096);
    fs.closeSync(fd);
    const fs4 = await open(img);
    expect((await readAll(fs4, '/sparse.bin')).equals(fs.readFileSync(path.join(root, 'sparse.bin')))).toBe(true);
    // frag.bin's 500 extents do not fit in the inode: a tree with index and leaf levels.
    expect(debugfs(img, 'ex /frag.bin')).toMatch(/^\s*1\/\s*1\s/m);
    expect((await readAll(fs4, '/frag.bin')).equals(fs.readFileSync(path.join(root, 'frag.bin')))).toBe(true);
  });

  it('refuses damage with an integrity error: checksums (metadata_csum) and structures out of bounds', async () => {
    const base = path.join(dir, 'damage.img');
    mkfs(['-t', 'ext4', '-b', '4096', '-O', 'metadata_csum'], root, base, '64M');
    const cases: [string, (img: string) => void, (fs4: Ext4) => Promise<unknown>, RegExp][] = [
      ['a byte of the superblock', (img) => poke(img, 1024 + 0x78, 0x41), () => open(path.join(dir, 'case.img')), /its superblock fails its checksum/],
      ['a byte of an inode', (img) => poke(img, inodeAt(img, '/large.bin') + 0x10, 0x41), (fs4) => fs4.file('/large.bin'), /inode \d+ fails its checksum/],
      ['a byte of a directory block', (img) => poke(img, blockOf(img, '/many', 0) * 4096 + 20, 0x41), (fs4) => fs4.file('/many/entry-5-xxxxx.txt'), /block 0 of directory \d+ fails its checksum/],
      ['a byte of an extent block', (img) => poke(img, leafOf(img, '/frag.bin') * 4096 + 40, 0x41), (fs4) => readAll(fs4, '/frag.bin'), /the extent tree of inode \d+ fails its checksum/],
    ];
    // The same image with its directories indexed: an htree root.
    const indexed = path.join(dir, 'damage-indexed.img');
    fs.copyFileSync(base, indexed);
    try {
      execFileSync('e2fsck', ['-fyD', indexed], { stdio: 'ignore' });
    } catch (e) {
      if ((e as { status?: number }).status !== 1) throw e;
    }
    cases.push(['a byte of an htree root', (img) => poke(img, blockOf(img, '/many', 0) * 4096 + 0x30, 0x41), (fs4) => fs4.file('/many/entry-5-xxxxx.txt'), /the htree of directory \d+ fails its checksum/]);
    for (const [i, [what, damage, read, message]] of cases.entries()) {
      const img = path.join(dir, 'case.img');
      fs.copyFileSync(i === cases.length - 1 ? indexed : base, img);
      damage(img);
      await expect(
        (async () => read(await open(img)))(),
        what,
      ).rejects.toMatchObject({ code: 'integrity', message: expect.stringMatching(message) });
    }

    // Without checksums, structures that point out of bounds or back on themselves.
    const plain = path.join(dir, 'plain.img');
    mkfs(['-t', 'ext4', '-b', '4096', '-O', '^metadata_csum'], root, plain, '64M');
    const hostile: [string, (img: string) => void, (fs4: Ext4) => Promise<unknown>, RegExp][] = [
      ['an extent past the end', (img) => poke32(img, leafOf(img, '/frag.bin') * 4096 + 12 + 8, 0xfffffff0), (fs4) => readAll(fs4, '/frag.bin'), /maps blocks .* to 4294967280/],
      ['an index whose second entry starts where its first does (its leaf read twice)', (img) => poke32(img, inodeAt(img, '/frag.bin') + 0x28 + 24, 0), (fs4) => readAll(fs4, '/frag.bin'), /has its index out of order at block 0/],
      ['an extent leaf that says it is an index over itself', (img) => poke16(img, leafOf(img, '/frag.bin') * 4096 + 6, 1), (fs4) => readAll(fs4, '/frag.bin'), /has a node of depth 1/],
      ['a directory entry longer than its block', (img) => poke16(img, blockOf(img, '/many', 0) * 4096 + 4, 8192), (fs4) => fs4.file('/many/entry-5-xxxxx.txt'), /has an entry of 8192 bytes/],
      ['a directory entry naming an inode that does not exist', (img) => poke32(img, blockOf(img, '/many', 0) * 4096 + 24, 0x7fffffff), (fs4) => fs4.list('/many'), /names inode 2147483647/],
    ];
    for (const [what, damage, read, message] of hostile) {
      const img = path.join(dir, 'case.img');
      fs.copyFileSync(plain, img);
      damage(img);
      await expect(
        (async () => read(await open(img)))(),
        what,
      ).rejects.toMatchObject({ code: 'integrity', message: expect.stringMatching(message) });
    }
  });

  it('finds names as stored in a case-folded directory; leaves a file system with features it does not know to libext2fs', async () => {
    const img = path.join(dir, 'casefold.img');
    mkfs(['-t', 'ext4', '-O', 'casefold'], root, img, '64M');
    // The case-folding flag on /many: its names are read whole, not through a hash of the name as given.
    execFileSync('debugfs', ['-w', '-R', 'sif /many flags 0x40080000', img], { stdio: 'ignore' });
    const fs4 = await open(img);
    expect((await readAll(fs4, '/many/entry-5-xxxxx.txt')).toString()).toBe('entry 5\n');
    await expect(fs4.file('/many/ENTRY-5-XXXXX.TXT')).rejects.toMatchObject({ code: 'not_found' });

    // An incompatible feature unknown here (and to libext2fs): a clear error, no byte.
    const odd = path.join(dir, 'unknown.img');
    mkfs(['-t', 'ext4'], root, odd, '64M');
    const sb = Buffer.alloc(1024);
    const fd = fs.openSync(odd, 'r+');
    fs.readSync(fd, sb, 0, 1024, 1024);
    sb.writeUInt32LE((sb.readUInt32LE(0x60) | 0x1000000) >>> 0, 0x60);
    sb.writeUInt32LE(crc32cRaw(0xffffffff, sb.subarray(0, 0x3fc)), 0x3fc);
    fs.writeSync(fd, sb, 0, 1024, 1024);
    fs.closeSync(fd);
    await expect(open(odd)).rejects.toBeInstanceOf(Ext4Unsupported);
    const repo = await makeRepo();
    try {
      const images = tempDir();
      fs.copyFileSync(odd, path.join(images, 'unknown.img'));
      await backup(repo, { paths: [images] });
      const ds = await Dataset.of(await SnapshotTree.open(repo), path.join(images, 'unknown.img'));
      const handlers = () => [process.listeners('uncaughtException').length, process.listeners('unhandledRejection').length];
      const before = handlers();
      // libext2fs (loaded now, its process-wide handlers taken out again) refuses it too.
      await expect(bytesOf(ds, '/small.txt')).rejects.toMatchObject({ code: 'integrity', message: expect.stringMatching(/partition 1 cannot be read as ext2\/3\/4 \(.*node_ext2fs_mount/) });
      expect(handlers()).toEqual(before);
    } finally {
      repo.close();
    }
  });
});

describe('one file of an ext4 image in a repository', () => {
  it('fetches its blocks and a few of metadata, not the bitmaps or the whole directory; a damaged image is an integrity error', async () => {
    const src = tempDir('strata-ext4-big-');
    const rng = new Rng(9);
    fs.mkdirSync(path.join(src, 'data'));
    // Much else: 40 MiB of other files, and 2,000 names in the file's directory.
    for (let i = 0; i < 40; i++) fs.writeFileSync(path.join(src, `other-${i}.bin`), rng.bytes(1024 * 1024));
    for (let i = 0; i < 2000; i++) fs.writeFileSync(path.join(src, 'data', `f${String(i).padStart(5, '0')}.txt`), `${i}\n`);
    const want = rng.bytes(1024 * 1024);
    fs.writeFileSync(path.join(src, 'data', 'f01000.bin'), want);
    const images = tempDir();
    const img = path.join(images, 'disk.img');
    execFileSync('truncate', ['-s', '96M', img]);
    execFileSync('sfdisk', ['-q', img], { input: 'label: gpt\n,\n' });
    // 1 KiB blocks: twelve groups, each with bitmaps a mount would read. e2fsck -D indexes the directories, as the kernel does.
    execFileSync('mke2fs', ['-q', '-F', '-t', 'ext4', '-b', '1024', '-d', src, '-E', 'offset=1048576', img, `${94 * 1024}k`], { stdio: 'ignore' });
    try {
      execFileSync('e2fsck', ['-fyD', `${img}?offset=1048576`], { stdio: 'ignore' });
    } catch (e) {
      if ((e as { status?: number }).status !== 1) throw e;
    }
    const damaged = path.join(images, 'damaged.img');
    fs.copyFileSync(img, damaged);
    poke(damaged, 1048576 + inodeAt(`${img}?offset=1048576`, '/data/f01000.bin') + 0x10, 0x41);
    const repo = await makeRepo();
    try {
      await backup(repo, { paths: [images] });
      const tree = await SnapshotTree.open(repo);
      const ds = await Dataset.of(tree, img);
      let reads = 0;
      ds.onProgress(() => reads++);
      expect((await bytesOf(ds, 'p1:/data/f01000.bin')).equals(want)).toBe(true);
      // What was asked of the repository, in 4 KiB reads: the file, the partition table, the superblock and one
      // descriptor block, three inode table blocks, the root directory and the htree root and one leaf of /data.
      // A mount through libext2fs reads the 24 bitmaps besides, and its lookup scans /data block by block.
      // (And 64 KiB at the start, where the dataset's type is told.)
      expect(ds.requested).toBeLessThanOrEqual(want.length + 64 * 1024 + 16 * 4096);
      // Fetched: the whole content-defined blocks those reads touch, at most 128 KiB past either end of each
      // (wherever the keyed chunker cut), and no more reads than the places named above.
      expect(reads).toBeLessThanOrEqual(16);
      expect(ds.fetched).toBeLessThanOrEqual(ds.requested + reads * 2 * 128 * 1024);
      // The listing of a directory reads its blocks and its entries' inodes, in inode order: each 4 KiB of the
      // inode table once (2,001 inodes of 256 bytes: 126 reads), not once per entry as the htree orders names.
      const asked = ds.requested;
      const listed = (await ds.items({ inner: 'p1:/data' })) as { name: string; size: number }[];
      expect(listed.length).toBe(2001);
      expect(ds.requested - asked).toBeLessThan(1024 * 1024);
      expect(listed.find((e) => e.name === 'f01000.bin')?.size).toBe(want.length);
      const bad = await Dataset.of(tree, damaged);
      await expect(bytesOf(bad, 'p1:/data/f01000.bin')).rejects.toMatchObject({ code: 'integrity', message: expect.stringMatching(/partition 1 cannot be read as ext2\/3\/4 \(inode \d+ fails its checksum\)/) });
    } finally {
      repo.close();
    }
  });
});

async function bytesOf(ds: Dataset, item: string): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const piece of (await ds.item(item)).bytes) parts.push(Buffer.from(piece));
  return Buffer.concat(parts);
}

function debugfsDump(img: string, p: string): Buffer {
  const out = path.join(tempDir(), 'dump');
  execFileSync('debugfs', ['-R', `dump "${p}" ${out}`, img], { stdio: 'ignore' });
  return fs.readFileSync(out);
}

function debugfs(img: string, request: string): string {
  return execFileSync('debugfs', ['-R', request, img], { stdio: ['ignore', 'pipe', 'ignore'] }).toString();
}

/** Where an inode lies in the image (debugfs imap). */
function inodeAt(img: string, p: string): number {
  const m = /located at block (\d+), offset 0x([0-9a-f]+)/.exec(debugfs(img, `imap ${p}`))!;
  const bs = Number(/Block size:\s+(\d+)/.exec(debugfs(img, 'stats'))![1]);
  return Number(m[1]) * bs + parseInt(m[2]!, 16);
}

function blockOf(img: string, p: string, logical: number): number {
  return Number(debugfs(img, `bmap ${p} ${logical}`).trim());
}

/** The first leaf of a file's extent tree (debugfs ex: the physical block of its first index entry). */
function leafOf(img: string, p: string): number {
  const m = /^\s*0\/\s*1\s+1\/\s*\d+\s+\d+\s+-\s+\d+\s+(\d+)/m.exec(debugfs(img, `ex ${p}`))!;
  return Number(m[1]);
}

function poke(img: string, at: number, byte: number): void {
  const fd = fs.openSync(img, 'r+');
  const b = Buffer.alloc(1);
  fs.readSync(fd, b, 0, 1, at);
  b[0] = b[0] === byte ? byte ^ 0xff : byte;
  fs.writeSync(fd, b, 0, 1, at);
  fs.closeSync(fd);
}

function poke16(img: string, at: number, v: number): void {
  const fd = fs.openSync(img, 'r+');
  const b = Buffer.alloc(2);
  b.writeUInt16LE(v);
  fs.writeSync(fd, b, 0, 2, at);
  fs.closeSync(fd);
}

function poke32(img: string, at: number, v: number): void {
  const fd = fs.openSync(img, 'r+');
  const b = Buffer.alloc(4);
  b.writeUInt32LE(v >>> 0);
  fs.writeSync(fd, b, 0, 4, at);
  fs.closeSync(fd);
}
