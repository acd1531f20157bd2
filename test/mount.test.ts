/**
 * strata mount: real FUSE mounts of real repositories, read through child
 * processes (cat, dd, cmp, stat, tar, git, python3's sqlite3) and async fs
 * only: a synchronous call into a mount this process waits on would hang it.
 * Skipped, with the reason printed, only where there is no /dev/fuse.
 */
import { execFile, spawn, type ChildProcessByStdio } from 'node:child_process';
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
import type { Readable } from 'node:stream';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { backup as backupEngine } from '../src/engine/backup.js';
import { SnapshotTree } from '../src/engine/snapshot-tree.js';
import { BufferPool } from '../src/mount/buffer-pool.js';
import type { MemoryLine } from '../src/mount/memory.js';
import { CHUNK, OpenFiles } from '../src/mount/handles.js';
import { Layout, timeName as layoutTimeName } from '../src/mount/layout.js';
import { direntStats, Listings } from '../src/mount/listings.js';
import { BIN, initCliRepo, makeRepo, ROOT, Rng, strata, tempDir } from './helpers.js';
import { client, serve, token } from './server-helpers.js';
import { mountedAt, until } from './mount-helpers.js';

const run = promisify(execFile);
const HAS_FUSE = fs.existsSync('/dev/fuse');
if (!HAS_FUSE) console.warn('no /dev/fuse on this machine: the strata mount tests were skipped');

interface Mounted {
  dir: string;
  proc: ChildProcessByStdio<null, Readable, Readable>;
  ready: string;
  stderr: () => string;
  exited: Promise<number | null>;
}

const mounted: Mounted[] = [];

/** Starts `strata mount DIR ...args` and waits for its ready line. */
async function startMount(dir: string, env: NodeJS.ProcessEnv, args: string[] = []): Promise<Mounted> {
  const proc = spawn(process.execPath, [BIN, 'mount', dir, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  proc.stderr.on('data', (c: Buffer) => (err += c.toString()));
  const exited = new Promise<number | null>((r) => proc.on('exit', (code) => r(code)));
  const ready = await new Promise<string>((resolve, reject) => {
    let out = '';
    proc.stdout.on('data', (c: Buffer) => {
      out += c.toString();
      if (out.includes('\n')) resolve(out.split('\n')[0]!);
    });
    void exited.then((code) => reject(new Error(`mount exited with ${code}: ${err}`)));
  });
  const m = { dir, proc, ready, stderr: () => err, exited };
  mounted.push(m);
  return m;
}

/** A command's stdout (a Buffer), run as a child process. */
async function sh(cmd: string, args: string[], opts: { cwd?: string } = {}): Promise<Buffer> {
  const r = await run(cmd, args, { encoding: 'buffer', maxBuffer: 256 * 1024 * 1024, ...opts });
  return r.stdout;
}

afterAll(async () => {
  for (const m of mounted) if (m.proc.exitCode === null && m.proc.signalCode === null) m.proc.kill('SIGTERM');
  await Promise.all(mounted.map((m) => Promise.race([m.exited, new Promise((r) => setTimeout(r, 5000))])));
  for (const m of mounted) if (await mountedAt(m.dir)) await run('fusermount3', ['-uz', m.dir]).catch(() => {});
});

function snapshotIds(env: NodeJS.ProcessEnv): { id: string; time: string; tags: string[] }[] {
  const r = strata(['snapshots', '--json'], env);
  expect(r.status, r.stderr).toBe(0);
  const doc = JSON.parse(r.stdout) as { snapshots: { id: string; time: string; tags?: string[] }[] } | { id: string; time: string; tags?: string[] }[];
  const list = Array.isArray(doc) ? doc : doc.snapshots;
  return list.map((s) => ({ id: s.id, time: s.time, tags: s.tags ?? [] }));
}

function backup(env: NodeJS.ProcessEnv, dir: string, extra: string[] = []): void {
  const r = strata(['backup', dir, '-q', ...extra], env);
  expect(r.status, r.stderr).toBe(0);
}

const timeName = (iso: string) => new Date(iso).toISOString().replace(/\.\d{3}Z$/, 'Z');

describe.skipIf(!HAS_FUSE)('strata mount', () => {
  /** A repository with an edit history of one file and the truth of each snapshot. */
  let env: NodeJS.ProcessEnv;
  let src: string;
  let truthDir: string;
  const truths: Buffer[] = [];
  let ids: { id: string; time: string; tags: string[] }[] = [];

  beforeAll(async () => {
    ({ env } = initCliRepo(['--chunk-avg', '4K']));
    const base = tempDir('strata-mount-');
    src = path.join(base, 'src');
    truthDir = path.join(base, 'truth');
    fs.mkdirSync(path.join(src, 'sub', 'deeper'), { recursive: true });
    fs.mkdirSync(truthDir);
    fs.writeFileSync(path.join(src, 'sub', 'small.txt'), 'small file\n');
    fs.writeFileSync(path.join(src, 'sub', 'deeper', 'empty'), '');
    fs.chmodSync(path.join(src, 'sub', 'small.txt'), 0o640);
    fs.symlinkSync('sub/small.txt', path.join(src, 'link'));
    fs.symlinkSync('/nowhere/at/all', path.join(src, 'dangling'));
    // A name that is not UTF-8 (Latin-1 "café"): shown with its odd byte as \xe9.
    fs.writeFileSync(Buffer.concat([Buffer.from(path.join(src, 'sub', 'caf')), Buffer.of(0xe9)]), 'latin-1 name\n');
    fs.utimesSync(path.join(src, 'sub', 'small.txt'), new Date('2020-05-06T07:08:09.123Z'), new Date('2020-05-06T07:08:09.123Z'));
    // The edit history: inserts that shift what follows, overwrites, truncation, appends.
    const rng = new Rng(18);
    let data = rng.bytes(600_000);
    const edits: ((b: Buffer) => Buffer)[] = [
      (b) => Buffer.concat([b.subarray(0, 1000), rng.bytes(777), b.subarray(1000)]),
      (b) => {
        const c = Buffer.from(b);
        rng.bytes(5000).copy(c, 300_000);
        return c;
      },
      (b) => b.subarray(0, 450_001),
      (b) => Buffer.concat([rng.bytes(3), b, rng.bytes(123_457)]),
    ];
    for (let k = 0; k <= edits.length; k++) {
      if (k > 0) data = edits[k - 1]!(data);
      fs.writeFileSync(path.join(src, 'data.bin'), data);
      fs.writeFileSync(path.join(truthDir, `data.${k}`), data);
      truths.push(data);
      backup(env, src, k === 1 || k === 3 ? ['--tag', 'weekly'] : []);
    }
    ids = snapshotIds(env);
    expect(ids).toHaveLength(truths.length);
  });

  it('every snapshot, whole files and random ranges, byte for byte (cmp, dd, async reads)', async () => {
    const mnt = path.join(tempDir(), 'mnt');
    fs.mkdirSync(mnt);
    const memoryLog = path.join(tempDir(), 'memory.jsonl');
    const m = await startMount(mnt, { ...env, STRATA_MOUNT_MEMORY_LOG: memoryLog });
    expect(m.ready).toContain(`mounted ${ids.length} snapshots read-only at ${mnt}`);
    const rng = new Rng(7);
    for (let k = 0; k < ids.length; k++) {
      // Ranges first: once a whole file was read, the kernel answers from its page cache.
      const file = path.join(mnt, 'ids', ids[k]!.id.slice(0, 8), src, 'data.bin');
      const truth = truths[k]!;
      for (let i = 0; i < 6; i++) {
        const start = rng.int(truth.length);
        const count = 1 + rng.int(Math.min(200_000, truth.length - start));
        const out = await sh('dd', [`if=${file}`, 'iflag=skip_bytes,count_bytes', `skip=${start}`, `count=${count}`, 'bs=65536', 'status=none']);
        expect(out.equals(truth.subarray(start, start + count)), `snapshot ${k}: ${count} bytes at ${start}`).toBe(true);
      }
      // Many small reads at once, as an application's would come.
      const fh = await fsp.open(file, 'r');
      try {
        const reads = Array.from({ length: 40 }, () => {
          const at = rng.int(truth.length);
          return { at, len: Math.min(1 + rng.int(9000), truth.length - at) };
        });
        const got = await Promise.all(
          reads.map(async ({ at, len }) => {
            const b = Buffer.alloc(len);
            const { bytesRead } = await fh.read(b, 0, len, at);
            return b.subarray(0, bytesRead);
          }),
        );
        for (let i = 0; i < reads.length; i++) expect(got[i]!.equals(truth.subarray(reads[i]!.at, reads[i]!.at + reads[i]!.len))).toBe(true);
        // Past the end: nothing.
        expect((await fh.read(Buffer.alloc(10), 0, 10, truth.length)).bytesRead).toBe(0);
      } finally {
        await fh.close();
      }
      await sh('cmp', [path.join(truthDir, `data.${k}`), file]);
    }
    // latest is the newest; snapshots/<UTC time> and the tags show the same trees.
    await sh('cmp', [path.join(truthDir, `data.${ids.length - 1}`), path.join(mnt, 'latest', src, 'data.bin')]);
    const byTime = (await fsp.readdir(path.join(mnt, 'snapshots'))).find((n) => n === timeName(ids[2]!.time) || n === `${timeName(ids[2]!.time)}-${ids[2]!.id.slice(0, 8)}`)!;
    await sh('cmp', [path.join(truthDir, 'data.2'), path.join(mnt, 'snapshots', byTime, src, 'data.bin')]);
    // STRATA_MOUNT_MEMORY_LOG: a line of the mount's memory every 200 ms; its young generation stayed at its first size.
    await until('two lines of the memory log', async () => fs.existsSync(memoryLog) && fs.readFileSync(memoryLog, 'utf8').split('\n').length > 2);
    m.proc.kill('SIGTERM');
    expect(await m.exited).toBe(0);
    const lines = fs.readFileSync(memoryLog, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as MemoryLine);
    expect(Object.keys(lines[0]!).sort()).toEqual(['arrayBuffers', 'external', 'heapTotal', 'heapUsed', 'newSpace', 'oldSpace', 'poolInUse', 'poolMade', 'rss', 't']);
    expect(lines.every((l) => l.rss > 0 && l.newSpace <= 4)).toBe(true);
  });

  it('lists the layout and the trees with their stats as stored: modes, sizes, times, owners, symlinks', async () => {
    const mnt = path.join(tempDir(), 'mnt');
    fs.mkdirSync(mnt);
    const m = await startMount(mnt, env, ['--json']);
    const ready = JSON.parse(m.ready) as { mountpoint: string; snapshots: number; pid: number };
    expect(ready).toMatchObject({ mountpoint: mnt, snapshots: ids.length, pid: m.proc.pid });
    expect((await fsp.readdir(mnt)).sort()).toEqual(['ids', 'latest', 'snapshots', 'tags']);
    expect((await fsp.readdir(path.join(mnt, 'ids'))).sort()).toEqual(ids.map((s) => s.id.slice(0, 8)).sort());
    const times = await fsp.readdir(path.join(mnt, 'snapshots'));
    expect(times).toHaveLength(ids.length);
    // Snapshots of one second are told apart by their ids; all others are named by their time alone.
    for (const s of ids) expect(times.some((t) => t === timeName(s.time) || t === `${timeName(s.time)}-${s.id.slice(0, 8)}`)).toBe(true);
    expect(await fsp.readdir(path.join(mnt, 'tags'))).toEqual(['weekly']);
    expect(await fsp.readdir(path.join(mnt, 'tags', 'weekly'))).toHaveLength(2);
    // stat(1) of the source and of the mount: the same fields.
    // (A directory's size is the file system's own business: backup does not keep it.)
    for (const [fmt, names] of [
      ['%n|%F|%s|%a|%u|%g|%Y', ['data.bin', 'sub/small.txt', 'sub/deeper/empty', 'link', 'dangling']],
      ['%n|%F|%a|%u|%g|%Y', ['sub', 'sub/deeper']],
    ] as const) {
      const mine = (await sh('stat', ['-c', fmt, ...names], { cwd: src })).toString();
      const theirs = (await sh('stat', ['-c', fmt, ...names], { cwd: path.join(mnt, 'latest', src) })).toString();
      expect(theirs).toBe(mine);
    }
    // Times to the nanosecond.
    const ns = ['data.bin', 'sub/small.txt'];
    expect((await sh('stat', ['-c', '%y', ...ns], { cwd: path.join(mnt, 'latest', src) })).toString()).toBe((await sh('stat', ['-c', '%y', ...ns], { cwd: src })).toString());
    expect((await sh('readlink', [path.join(mnt, 'latest', src, 'link')])).toString()).toBe('sub/small.txt\n');
    expect((await sh('readlink', [path.join(mnt, 'latest', src, 'dangling')])).toString()).toBe('/nowhere/at/all\n');
    expect((await sh('cat', [path.join(mnt, 'latest', src, 'link')])).toString()).toBe('small file\n');
    expect(await fsp.readdir(path.join(mnt, 'latest', src, 'sub'))).toEqual(['caf\\xe9', 'deeper', 'small.txt']);
    // A listing gives each entry's type (d_type) from the stored mode, the same when listed again (kept).
    for (let i = 0; i < 2; i++) {
      const typed = await fsp.readdir(path.join(mnt, 'latest', src), { withFileTypes: true });
      const kind = (d: fs.Dirent) => (d.isDirectory() ? 'dir' : d.isSymbolicLink() ? 'link' : d.isFile() ? 'file' : 'other');
      expect(Object.fromEntries(typed.map((d) => [d.name, kind(d)]))).toMatchObject({ 'data.bin': 'file', sub: 'dir', link: 'link', dangling: 'link' });
    }
    expect((await sh('ls', ['-1a', path.join(mnt, 'latest', src, 'sub', 'deeper')])).toString()).toBe('.\n..\nempty\n');
    expect(await fsp.readFile(path.join(mnt, 'latest', src, 'sub', 'caf\\xe9'), 'utf8')).toBe('latin-1 name\n');
    // Read-only: every change is refused with EROFS.
    const inside = path.join(mnt, 'latest', src);
    for (const attempt of [
      () => fsp.writeFile(path.join(inside, 'new'), 'x'),
      () => fsp.appendFile(path.join(inside, 'data.bin'), 'x'),
      () => fsp.mkdir(path.join(inside, 'newdir')),
      () => fsp.unlink(path.join(inside, 'data.bin')),
      () => fsp.rename(path.join(inside, 'data.bin'), path.join(inside, 'moved')),
      () => fsp.chmod(path.join(inside, 'data.bin'), 0o777),
      () => fsp.truncate(path.join(inside, 'data.bin'), 0),
    ]) {
      await expect(attempt()).rejects.toMatchObject({ code: 'EROFS' });
    }
    await expect(fsp.stat(path.join(mnt, 'latest', 'no', 'such'))).rejects.toMatchObject({ code: 'ENOENT' });
    m.proc.kill('SIGINT');
    expect(await m.exited).toBe(0);
    expect(await mountedAt(mnt)).toBe(false);
  });

  it('--at mounts one snapshot as the whole tree', async () => {
    const mnt = path.join(tempDir(), 'mnt');
    fs.mkdirSync(mnt);
    const m = await startMount(mnt, env, ['--at', ids[1]!.id.slice(0, 8)]);
    expect(m.ready).toContain(`mounted snapshot ${ids[1]!.id.slice(0, 8)}`);
    expect(await fsp.readdir(mnt)).toEqual([src.split('/')[1]]);
    await sh('cmp', [path.join(truthDir, 'data.1'), path.join(mnt, src, 'data.bin')]);
    m.proc.kill('SIGTERM');
    expect(await m.exited).toBe(0);
  });

  it('applications read through it: tar archives a tree, sqlite3 answers a query, git reads a repository', async () => {
    const { env: appEnv } = initCliRepo();
    const apps = path.join(tempDir('strata-mount-apps-'), 'apps');
    fs.mkdirSync(apps);
    const db = path.join(apps, 'shop.db');
    await run('python3', [
      '-c',
      `import sqlite3
c = sqlite3.connect(${JSON.stringify(db)})
c.execute('create table items (id integer primary key, name text)')
c.executemany('insert into items values (?, ?)', [(i, 'item %d' % i) for i in range(20000)])
c.commit()`,
    ]);
    const repo = path.join(apps, 'project');
    fs.mkdirSync(repo);
    const git = (...args: string[]) => run('git', ['-c', 'user.name=Tester', '-c', 'user.email=t@example.org', '-c', 'init.defaultBranch=main', ...args], { cwd: repo });
    await git('init', '-q');
    fs.writeFileSync(path.join(repo, 'README'), 'a project\n');
    await git('add', 'README');
    await git('commit', '-q', '-m', 'first commit');
    fs.writeFileSync(path.join(repo, 'README'), 'a project, changed\n');
    await git('commit', '-q', '-am', 'the second commit');
    backup(appEnv, apps);
    const mnt = path.join(tempDir(), 'mnt');
    fs.mkdirSync(mnt);
    const m = await startMount(mnt, appEnv);
    const at = path.join(mnt, 'latest', apps);
    const answer = await sh('python3', [
      '-c',
      `import sqlite3
c = sqlite3.connect('file:' + ${JSON.stringify(path.join(at, 'shop.db'))} + '?immutable=1', uri=True)
print(c.execute('select name from items where id = 12345').fetchone()[0])`,
    ]);
    expect(answer.toString()).toBe('item 12345\n');
    expect((await sh('git', ['-C', path.join(at, 'project'), 'log', '-1', '--format=%s'])).toString()).toBe('the second commit\n');
    expect((await sh('git', ['-C', path.join(at, 'project'), 'show', 'HEAD~1:README'])).toString()).toBe('a project\n');
    const out = path.join(tempDir(), 'out');
    fs.mkdirSync(out);
    const tarball = path.join(tempDir(), 'apps.tar');
    await sh('tar', ['-cf', tarball, '-C', at, '.']);
    await sh('tar', ['-xf', tarball, '-C', out]);
    await sh('diff', ['-r', '--no-dereference', apps, out]);
    m.proc.kill('SIGTERM');
    expect(await m.exited).toBe(0);
  });

  it('works on a served repository', async () => {
    const { repo, env: own } = initCliRepo();
    const data = path.join(tempDir(), 'served');
    fs.mkdirSync(data);
    const bytes = new Rng(3).bytes(700_000);
    fs.writeFileSync(path.join(data, 'f.bin'), bytes);
    backup(own, data);
    const srv = await serve(repo);
    const reader = { ...client(srv.url, token(repo, 'reader', 'read')), STRATA_PASSWORD: 'pw' };
    const mnt = path.join(tempDir(), 'mnt');
    fs.mkdirSync(mnt);
    const m = await startMount(mnt, reader);
    await sh('cmp', [path.join(data, 'f.bin'), path.join(mnt, 'latest', data, 'f.bin')]);
    const part = await sh('dd', [`if=${path.join(mnt, 'latest', data, 'f.bin')}`, 'iflag=skip_bytes,count_bytes', 'skip=123456', 'count=4096', 'status=none']);
    expect(part.equals(bytes.subarray(123456, 123456 + 4096))).toBe(true);
    // A backup through the server while mounted: shown at once in a listing, latest on it.
    const writer = { ...client(srv.url, token(repo, 'writer', 'append')), STRATA_PASSWORD: 'pw' };
    fs.writeFileSync(path.join(data, 'g.txt'), 'made while mounted\n');
    backup(writer, data);
    const newest = snapshotIds(writer).at(-1)!;
    await until('the served snapshot to be listed', async () => (await fsp.readdir(path.join(mnt, 'ids'))).includes(newest.id.slice(0, 8)));
    expect(await fsp.readFile(path.join(mnt, 'latest', data, 'g.txt'), 'utf8')).toBe('made while mounted\n');
    m.proc.kill('SIGTERM');
    expect(await m.exited).toBe(0);
  });

  it('follows the repository: a backup made while mounted appears (latest moves to it), a forgotten snapshot goes, and a read of its file after prune fails with EIO, never other bytes', async () => {
    const { env: own } = initCliRepo();
    const dir = path.join(tempDir('strata-mount-follow-'), 'data');
    fs.mkdirSync(dir);
    // Bytes of their own, in the first snapshot only: prune takes every block of them away.
    const big = new Rng(99).bytes(24 * 1024 * 1024);
    fs.writeFileSync(path.join(dir, 'big.bin'), big);
    fs.writeFileSync(path.join(dir, 'note.txt'), 'one\n');
    backup(own, dir);
    const [first] = snapshotIds(own);
    const mnt = path.join(tempDir(), 'mnt');
    fs.mkdirSync(mnt);
    const m = await startMount(mnt, own);
    expect(await fsp.readlink(path.join(mnt, 'latest'))).toBe(`ids/${first!.id.slice(0, 8)}`);
    expect(await fsp.readFile(path.join(mnt, 'latest', dir, 'note.txt'), 'utf8')).toBe('one\n');
    // A file of the first snapshot held open, read once at its start.
    const held = await fsp.open(path.join(mnt, 'ids', first!.id.slice(0, 8), dir, 'big.bin'), 'r');
    try {
      const head = Buffer.alloc(4096);
      await held.read(head, 0, 4096, 0);
      expect(head.equals(big.subarray(0, 4096))).toBe(true);
      // A backup through the CLI while mounted: listed under ids/ and snapshots/, and latest points at it.
      fs.rmSync(path.join(dir, 'big.bin'));
      fs.writeFileSync(path.join(dir, 'note.txt'), 'two\n');
      backup(own, dir);
      const second = snapshotIds(own).find((s) => s.id !== first!.id)!;
      await until('the new snapshot to be listed', async () => (await fsp.readdir(path.join(mnt, 'ids'))).includes(second.id.slice(0, 8)));
      // (Named by its time, or by its time and id if it came in the first snapshot's second.)
      const secondName = (await fsp.readdir(path.join(mnt, 'snapshots'))).find((n) => n.startsWith(timeName(second.time)) && n !== timeName(first!.time));
      expect(secondName).toBeDefined();
      expect(await fsp.readlink(path.join(mnt, 'latest'))).toBe(`ids/${second.id.slice(0, 8)}`);
      expect(await fsp.readFile(path.join(mnt, 'latest', dir, 'note.txt'), 'utf8')).toBe('two\n');
      await expect(fsp.stat(path.join(mnt, 'latest', dir, 'big.bin'))).rejects.toMatchObject({ code: 'ENOENT' });
      // The first snapshot is forgotten and pruned: its names go, the kernel's too.
      const forgot = strata(['forget', first!.id.slice(0, 8), '--prune', '-q'], own);
      expect(forgot.status, forgot.stderr).toBe(0);
      await until('the forgotten snapshot to go', async () => !(await fsp.readdir(path.join(mnt, 'ids'))).includes(first!.id.slice(0, 8)));
      await until('the kernel to forget its name', () =>
        fsp.stat(path.join(mnt, 'ids', first!.id.slice(0, 8))).then(
          () => false,
          (e: NodeJS.ErrnoException) => e.code === 'ENOENT',
        ),
      );
      expect(await fsp.readdir(path.join(mnt, 'snapshots'))).toEqual([secondName]);
      await expect(fsp.readFile(path.join(mnt, 'snapshots', timeName(first!.time), dir, 'note.txt'))).rejects.toMatchObject({ code: 'ENOENT' });
      // The open file: bytes never read before (far from the first read, so not fetched ahead) are an I/O error.
      await expect(held.read(Buffer.alloc(65536), 0, 65536, 20 * 1024 * 1024)).rejects.toMatchObject({ code: 'EIO' });
    } finally {
      await held.close();
    }
    expect(await fsp.readFile(path.join(mnt, 'latest', dir, 'note.txt'), 'utf8')).toBe('two\n');
    m.proc.kill('SIGTERM');
    expect(await m.exited).toBe(0);
    expect(m.stderr()).toContain('read ');
  });

  it('many snapshots: each under its id, its time (told apart by id within one second) and its tags; latest is the newest', async () => {
    const repo = await makeRepo();
    const dir = path.join(tempDir(), 'many');
    fs.mkdirSync(dir);
    const base = Date.UTC(2026, 2, 1, 9, 0, 0);
    const made: { id: string; time: number; text: string; tags: string[] }[] = [];
    for (let i = 0; i < 30; i++) {
      const text = `version ${i}\n`;
      fs.writeFileSync(path.join(dir, 'note.txt'), text);
      // Two snapshots in each of the first five seconds; then one a day.
      const time = i < 10 ? base + Math.floor(i / 2) * 1000 + (i % 2) * 300 : base + (i - 9) * 86_400_000;
      const tags = i % 10 === 0 ? ['monthly', 'keep'] : i % 3 === 0 ? ['daily'] : [];
      const r = await backupEngine(repo, { paths: [dir], time, tags });
      made.push({ id: r.snapshot, time, text, tags });
    }
    const root = repo.root;
    repo.close();
    const manyEnv = { ...env, STRATA_REPO: root, STRATA_PASSWORD: 'test-password' };
    const mnt = path.join(tempDir(), 'mnt');
    fs.mkdirSync(mnt);
    const m = await startMount(mnt, manyEnv);
    expect(m.ready).toContain('mounted 30 snapshots');
    const names = await fsp.readdir(path.join(mnt, 'snapshots'));
    expect(names).toHaveLength(30);
    for (const s of made) {
      const name = s.time < base + 5_000 ? `${layoutTimeName(s.time)}-${s.id.slice(0, 8)}` : layoutTimeName(s.time);
      expect(names).toContain(name);
      expect(await fsp.readFile(path.join(mnt, 'snapshots', name, dir, 'note.txt'), 'utf8')).toBe(s.text);
      expect(await fsp.readFile(path.join(mnt, 'ids', s.id.slice(0, 8), dir, 'note.txt'), 'utf8')).toBe(s.text);
    }
    expect((await fsp.readdir(path.join(mnt, 'tags'))).sort()).toEqual(['daily', 'keep', 'monthly']);
    expect(await fsp.readdir(path.join(mnt, 'tags', 'monthly'))).toHaveLength(made.filter((s) => s.tags.includes('monthly')).length);
    expect(await fsp.readdir(path.join(mnt, 'tags', 'daily'))).toHaveLength(made.filter((s) => s.tags.includes('daily')).length);
    expect(await fsp.readFile(path.join(mnt, 'latest', dir, 'note.txt'), 'utf8')).toBe('version 29\n');
    // The snapshots' directories carry their times; the mount's own directories the newest one's.
    expect((await fsp.stat(path.join(mnt, 'snapshots'))).mtimeMs).toBe(made[29]!.time);
    expect((await fsp.stat(path.join(mnt, 'ids', made[20]!.id.slice(0, 8)))).mtimeMs).toBe(made[20]!.time);
    m.proc.kill('SIGTERM');
    expect(await m.exited).toBe(0);
  });

  it('ends cleanly on fusermount3 -u; a SIGKILLed mount leaves no stale mount behind', async () => {
    const mnt = path.join(tempDir(), 'mnt');
    fs.mkdirSync(mnt);
    const a = await startMount(mnt, env);
    await run('fusermount3', ['-u', mnt]);
    expect(await a.exited).toBe(0);
    expect(await mountedAt(mnt)).toBe(false);
    const b = await startMount(mnt, env);
    expect(await mountedAt(mnt)).toBe(true);
    b.proc.kill('SIGKILL');
    await b.exited;
    // fusermount3's auto_unmount takes it; on a busy machine that has taken many seconds.
    await until('the mount to go', async () => !(await mountedAt(mnt)), 60_000);
    expect(await fsp.readdir(mnt)).toEqual([]);
  }, 90_000);

  it('says what is wrong with a mountpoint: missing, not empty, a stale mount (and how to clear it)', async () => {
    const base = tempDir();
    const missing = strata(['mount', path.join(base, 'nope')], env);
    expect(missing.status).toBe(1);
    expect(missing.stderr).toContain('does not exist');
    fs.mkdirSync(path.join(base, 'full'));
    fs.writeFileSync(path.join(base, 'full', 'x'), '');
    const full = strata(['mount', path.join(base, 'full')], env);
    expect(full.status).toBe(1);
    expect(full.stderr).toContain('is not empty');
    // A stale mount: the mount's process and the helper that would unmount it are both killed.
    const mnt = path.join(base, 'mnt');
    fs.mkdirSync(mnt);
    const m = await startMount(mnt, env);
    const helpers: number[] = [];
    for (const pid of await fsp.readdir('/proc')) {
      if (!/^\d+$/.test(pid)) continue;
      const cmd = await fsp.readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
      if (cmd.startsWith('fusermount3') && cmd.split('\0').includes(mnt)) helpers.push(Number(pid));
    }
    expect(helpers.length).toBe(1);
    for (const pid of helpers) process.kill(pid, 'SIGKILL');
    m.proc.kill('SIGKILL');
    await m.exited;
    const stale = strata(['mount', mnt], env);
    expect(stale.status).toBe(1);
    expect(stale.stderr).toContain('stale mount');
    expect(stale.stderr).toContain(`fusermount3 -u ${mnt}`);
    expect(stale.stderr).not.toMatch(/\n\s+at /);
    await run('fusermount3', ['-u', mnt]);
    expect(await mountedAt(mnt)).toBe(false);
  });

  it('without FUSE says how to get it: no binding installed, no /dev/fuse (exit 1, no stack trace)', async () => {
    // A strata installed without the binding (npm left it out, or libfuse's headers were missing).
    const copy = tempDir('strata-nofuse-');
    for (const part of ['bin', 'dist']) fs.cpSync(path.join(ROOT, part), path.join(copy, part), { recursive: true });
    for (const pkg of ['better-sqlite3', 'bindings', 'file-uri-to-path', 'zstd-napi']) {
      fs.cpSync(path.join(ROOT, 'node_modules', pkg), path.join(copy, 'node_modules', pkg), { recursive: true, dereference: true });
    }
    const mnt = path.join(tempDir(), 'mnt');
    fs.mkdirSync(mnt);
    const r = strata(['mount', mnt], env, { bin: path.join(copy, 'bin', 'strata.js') });
    expect(r.status).toBe(1);
    expect(r.stderr).toContain('apt-get install fuse3 libfuse3-dev pkg-config');
    expect(r.stderr).not.toMatch(/\n\s+at /);
    // No FUSE device: a mount namespace whose /dev lacks it (root only).
    if (process.getuid?.() !== 0) return console.warn('not root: the no-/dev/fuse message was not checked');
    const script = `mount -t tmpfs none /dev && exec ${JSON.stringify(process.execPath)} ${JSON.stringify(BIN)} mount ${JSON.stringify(mnt)}`;
    const nodev = await run('unshare', ['-m', 'sh', '-c', script], { env }).then(
      () => ({ code: 0, stderr: '' }),
      (e: { code: number; stderr: string }) => ({ code: e.code, stderr: e.stderr }),
    );
    expect(nodev.code).toBe(1);
    expect(nodev.stderr).toContain('no /dev/fuse');
    expect(nodev.stderr).not.toMatch(/\n\s+at /);
  });
});

describe('listings of a mount (no FUSE needed)', () => {
  it('a directory is listed once and kept, within a bound of entries; a listing gives each entry its type only', async () => {
    const l = new Listings(10);
    const make = (n: number) => async () => ({ names: Array.from({ length: n }, (_, i) => `n${i}`), stats: Array.from({ length: n }, () => direntStats(0o100644)) });
    const a = await l.get('a', make(4));
    expect(await l.get('a', make(4))).toBe(a);
    expect(l.made).toBe(1);
    await l.get('b', make(4));
    // Over the bound: the least recently used (b, since a was asked for after it) goes.
    await l.get('a', make(4));
    await l.get('c', make(4));
    expect(l.made).toBe(3);
    await l.get('a', make(4));
    expect(l.made).toBe(3);
    await l.get('b', make(4));
    expect(l.made).toBe(4);
    // Larger than the bound: made each time, never kept.
    await l.get('big', make(11));
    await l.get('big', make(11));
    expect(l.made).toBe(6);
    expect(direntStats(0o100644)).toEqual({ mode: 0o100000 });
    expect(direntStats(0o40755)).toBe(direntStats(0o40500));
  });
});

describe('the memory of a mount', () => {
  it("keeps V8's young generation at its first size in the process that asks (strata mount does, at start)", async () => {
    // In a process of its own: V8's flags are the process's. Short-lived objects, many surviving a while, as a long read makes them.
    const script = [
      "import * as v8 from 'node:v8';",
      'const { keepYoungGenerationSmall } = await import(process.argv[1]);',
      "if (process.argv[2] === 'small') keepYoungGenerationSmall();",
      'let keep = [];',
      'for (let i = 0; i < 3e6; i++) { keep.push({ i, b: Buffer.allocUnsafe(64) }); if (keep.length > 100000) keep = []; }',
      "console.log(v8.getHeapSpaceStatistics().find((s) => s.space_name === 'new_space').space_size);",
    ].join('\n');
    const memory = pathToFileURL(path.join(ROOT, 'dist', 'mount', 'memory.js')).href;
    const newSpace = async (mode: string) => Number((await run(process.execPath, ['--input-type=module', '-e', script, memory, mode])).stdout) / 2 ** 20;
    expect(await newSpace('small')).toBeLessThanOrEqual(4);
    // Without: it grows (to 32 MiB on Node 20).
    expect(await newSpace('default')).toBeGreaterThanOrEqual(16);
  });
});

describe('the buffer pool of a mount', () => {
  it('lends each buffer to one borrower at a time, lends given-back buffers again, keeps at most its bound', () => {
    const pool = new BufferPool(4096, 2);
    const a = pool.take();
    const b = pool.take();
    const c = pool.take();
    expect(new Set([a, b, c]).size).toBe(3);
    expect([a.length, pool.made, pool.inUse]).toEqual([4096, 3, 3]);
    pool.give(b);
    // Given back twice, or never lent: a bug, said at once (a buffer lent twice would serve two readers).
    expect(() => pool.give(b)).toThrow(/given back/);
    expect(() => pool.give(Buffer.alloc(4096))).toThrow(/did not lend/);
    const d = pool.take();
    expect(d).toBe(b);
    expect(pool.made).toBe(3);
    // Many lent at once are all different, and none of them is one still lent.
    const lent = new Set([a, c, d]);
    for (let i = 0; i < 10; i++) {
      const e = pool.take();
      expect(lent.has(e)).toBe(false);
      lent.add(e);
    }
    expect(pool.inUse).toBe(13);
    for (const e of lent) pool.give(e);
    // Only `keep` are kept for later; the rest are left to the garbage collector.
    expect([pool.inUse, pool.kept]).toEqual([0, 2]);
  });
});

describe('open files of a mount (no FUSE needed)', () => {
  it('reads in order, out of order, concurrently and after seeks give exactly the stored bytes, fetched ahead only in order', async () => {
    const repo = await makeRepo({ chunkAvg: 4096 });
    const dir = path.join(tempDir(), 'data');
    fs.mkdirSync(dir);
    const truth = new Rng(42).bytes(5 * CHUNK + 12345);
    fs.writeFileSync(path.join(dir, 'f'), truth);
    const long = new Rng(43).bytes(12 * CHUNK);
    fs.writeFileSync(path.join(dir, 'g'), long);
    await backupEngine(repo, { paths: [dir] });
    const tree = await SnapshotTree.open(repo);
    const files = new OpenFiles();
    // The bytes a read hands over are the caller's only until the next turn of the event loop.
    const copy = (b: Buffer) => Buffer.from(b);
    const checkWith = async (set: OpenFiles, fd: number, truthOf: Buffer, at: number, len: number) =>
      expect((await set.get(fd)!.read(at, len, copy)).equals(truthOf.subarray(at, Math.min(truthOf.length, at + len))), `${len} at ${at}`).toBe(true);
    const check = async (fd: number, at: number, len: number) => {
      const b = await files.get(fd)!.read(at, len, copy);
      expect(b.equals(truth.subarray(at, Math.min(truth.length, at + len))), `${len} at ${at}`).toBe(true);
    };
    // In order, 128 KiB at a time, four at once (as the kernel sends them): fetched ahead in chunks.
    const a = files.open(await tree.open(path.join(dir, 'f')));
    for (let at = 0; at < truth.length; at += 4 * 131072) {
      await Promise.all([0, 1, 2, 3].map((i) => check(a, at + i * 131072, 131072)));
    }
    expect(files.stats.prefetched).toBeGreaterThan(30);
    expect(files.stats.chunks).toBeLessThanOrEqual(6);
    // Random reads, however near each other, are each read as they are: nothing is fetched ahead for them.
    const b = files.open(await tree.open(path.join(dir, 'f')));
    const rng = new Rng(5);
    const before = files.stats.chunks;
    for (let i = 0; i < 30; i++) {
      const at = rng.int(truth.length);
      await check(b, at, 1 + rng.int(70_000));
      await check(b, rng.int(truth.length), 4096);
    }
    expect(files.stats.chunks).toBe(before);
    // In order again from the middle, past the end, and at the end.
    for (let at = 2 * CHUNK + 77; at < truth.length + 5000; at += 65536) await check(b, at, 65536);
    expect(files.stats.chunks).toBeGreaterThan(before);
    // A read late, near the stream, of a chunk it already passed and dropped: read as it is (it used to wait for ever).
    const c = files.open(await tree.open(path.join(dir, 'g')));
    const checkLong = async (at: number, len: number) => expect((await files.get(c)!.read(at, len, copy)).equals(long.subarray(at, at + len))).toBe(true);
    for (let at = 0; at < long.length; at += 131072) await checkLong(at, 131072);
    const late = checkLong(CHUNK + 12345, 4096);
    await Promise.race([late, new Promise((_, reject) => setTimeout(() => reject(new Error('a late read never came back')), 5000))]);
    files.release(c);
    // Many reads in order at once (the kernel sends several): a chunk a reader waits for is never dropped before it is filled.
    const d = files.open(await tree.open(path.join(dir, 'g')));
    const all = Promise.all(Array.from({ length: 12 }, (_, i) => files.get(d)!.read(i * CHUNK, CHUNK, copy)));
    const got = await Promise.race([all, new Promise<never>((_, reject) => setTimeout(() => reject(new Error('reads in flight never came back')), 10_000))]);
    expect(Buffer.concat(got).equals(long)).toBe(true);
    // Reads across two chunks, many answered at once (the stream ran ahead): the bytes handed over stay right until the next turn
    // (the FUSE binding copies them a process.nextTick later), though chunks and joined replies come from the pool and go back to it.
    const own = new OpenFiles();
    const e = own.open(await tree.open(path.join(dir, 'g')));
    for (let at = 0; at < CHUNK; at += 131072) await own.get(e)!.read(at, 131072, copy);
    await until('chunks fetched ahead', async () => own.stats.held >= 8);
    const copied: Promise<boolean>[] = [];
    const across = Array.from({ length: 6 }, (_, i) =>
      own.get(e)!.read((i + 2) * CHUNK - 70_000, 131072, (view) => {
        const at = (i + 2) * CHUNK - 70_000;
        copied.push(new Promise((r) => process.nextTick(() => r(view.equals(long.subarray(at, at + 131072))))));
        return view.length;
      }),
    );
    expect(await Promise.all(across)).toEqual(Array(6).fill(131072));
    expect(await Promise.all(copied)).toEqual(Array(6).fill(true));
    own.release(e);
    // None is lent once the file is closed (the stream gives back the chunk it was filling when its next piece comes).
    await until('the pool given back', async () => own.pool.inUse === 0);
    // At most what could be lent at once (however far the stream ran ahead): the file's 12 chunks, the 6 joined replies, one being filled.
    const atOnce = 12 + 6 + 1;
    expect(own.pool.made).toBeLessThanOrEqual(atOnce);
    // Read again: the buffers given back serve the new stream.
    const again = own.open(await tree.open(path.join(dir, 'g')));
    for (let at = 0; at < long.length; at += 131072) await checkWith(own, again, long, at, 131072);
    own.release(again);
    await until('the pool given back', async () => own.pool.inUse === 0);
    // Without reuse a second whole read would have made another buffer per chunk.
    expect(own.pool.made).toBeLessThanOrEqual(atOnce);
    // The mount keeps no set of the blocks a file read (it grew with the file): only an item reader asks for that count.
    expect(files.get(d)!.file.countBlocks).toBe(false);
    expect(files.get(d)!.file.blockBytes).toBe(0);
    files.release(d);
    expect((await files.get(b)!.read(truth.length, 10, copy)).length).toBe(0);
    expect(files.stats.held).toBeGreaterThan(0);
    files.release(a);
    files.release(b);
    expect(files.count).toBe(0);
    // Nothing fetched ahead is held once the files are closed, and no buffer of the pool is lent.
    expect(files.stats.held).toBe(0);
    await until('the pool given back', async () => files.pool.inUse === 0);
    // The layout: names by time, and by id where two share a second.
    const layout = Layout.of([tree]);
    expect(layout.resolve(`/snapshots/${layoutTimeName(tree.time)}${dir}/f`)).toMatchObject({ kind: 'tree', path: `${dir}/f` });
    expect(layout.resolve('/latest')).toMatchObject({ kind: 'link', link: { target: `ids/${tree.id.slice(0, 8)}` } });
    expect(layout.resolve(`/ids/${tree.id.slice(0, 8)}`)).toMatchObject({ kind: 'tree', path: '/' });
    expect(layout.resolve('/nothing')).toBeUndefined();
    repo.close();
  });

  it('the layout follows the repository: a name stays with the snapshot it was given to, and what went is told', () => {
    const tree = (id: string, time: number, tags: string[] = []) => ({ id: id.padEnd(64, '0'), time, tags }) as unknown as SnapshotTree;
    const t0 = Date.UTC(2026, 2, 1, 9, 0, 0);
    const a = tree('aaaaaaaa1', t0);
    const b = tree('bbbbbbbb1', t0 + 1000, ['x']);
    const layout = Layout.of([a, b]);
    const at = (p: string) => {
      const place = layout.resolve(p);
      return place?.kind === 'tree' ? place.tree.id : place?.kind === 'link' ? place.link.target : place?.kind;
    };
    expect(at('/ids/aaaaaaaa')).toBe(a.id);
    expect(at(`/snapshots/${layoutTimeName(t0 + 1000)}`)).toBe(b.id);
    expect(at(`/tags/x/${layoutTimeName(t0 + 1000)}`)).toBe(b.id);
    expect(at('/latest')).toBe('ids/bbbbbbbb');
    // A newcomer with a shown snapshot's id prefix and second gets its id added; the shown one keeps its names.
    const c = tree('aaaaaaaa2', t0 + 1200);
    expect(layout.update([a, b, c])).toEqual([]);
    expect(at('/ids/aaaaaaaa')).toBe(a.id);
    expect(at(`/ids/${c.id}`)).toBe(c.id);
    expect(at(`/snapshots/${layoutTimeName(t0 + 1000)}`)).toBe(b.id);
    expect(at(`/snapshots/${layoutTimeName(t0 + 1000)}-aaaaaaaa`)).toBe(c.id);
    expect(at('/latest')).toBe(`ids/${c.id}`);
    // b's tag taken off, a forgotten: their paths are told, and a's names are never given to c.
    const bUntagged = tree('bbbbbbbb1', t0 + 1000);
    expect(layout.update([bUntagged, c]).sort()).toEqual(['/ids/aaaaaaaa', `/snapshots/${layoutTimeName(t0)}`, '/tags/x', `/tags/x/${layoutTimeName(t0 + 1000)}`].sort());
    expect(at('/ids/aaaaaaaa')).toBeUndefined();
    expect(at(`/ids/${c.id}`)).toBe(c.id);
    expect(at('/tags/x')).toBeUndefined();
    // b forgotten too: c keeps its name; then none left, and latest goes.
    expect(layout.update([c])).toEqual(['/ids/bbbbbbbb', `/snapshots/${layoutTimeName(t0 + 1000)}`]);
    expect(at(`/snapshots/${layoutTimeName(t0 + 1000)}-aaaaaaaa`)).toBe(c.id);
    expect(layout.update([]).sort()).toEqual([`/ids/${c.id}`, '/latest', `/snapshots/${layoutTimeName(t0 + 1000)}-aaaaaaaa`].sort());
    expect(layout.resolve('/latest')).toBeUndefined();
    expect(layout.resolve('/ids')).toMatchObject({ kind: 'layout' });
  });
});
