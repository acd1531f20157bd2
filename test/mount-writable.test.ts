/**
 * strata mount --writable: real FUSE mounts of real repositories, changed
 * through async fs and child processes (a mount runs in a process of its
 * own), committed with strata commit and at unmount, and checked byte for
 * byte against a copy of the tree that took the same changes. Skipped, with
 * the reason printed, only where there is no /dev/fuse.
 */
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { backup } from '../src/engine/backup.js';
import { SnapshotTree } from '../src/engine/snapshot-tree.js';
import { Overlay } from '../src/mount/overlay.js';
import { initCliRepo, makeRepo, readWhole, Rng, strata, tempDir } from './helpers.js';
import { client, serve, token } from './server-helpers.js';
import { killedMountGone, startMount, stopMounts } from './mount-helpers.js';

const run = promisify(execFile);
const HAS_FUSE = fs.existsSync('/dev/fuse');
if (!HAS_FUSE) console.warn('no /dev/fuse on this machine: the writable strata mount tests were skipped');

afterAll(stopMounts);

/** What a tree holds, path by path: a file's bytes and mode bits, a symlink's target, a directory. */
async function treeOf(root: string): Promise<Map<string, string | Buffer>> {
  const out = new Map<string, string | Buffer>();
  const visit = async (rel: string) => {
    for (const name of (await fsp.readdir(path.join(root, rel))).sort()) {
      const r = rel ? `${rel}/${name}` : name;
      const abs = path.join(root, r);
      const st = await fsp.lstat(abs);
      if (st.isSymbolicLink()) out.set(r, `-> ${await fsp.readlink(abs)}`);
      else if (st.isDirectory()) {
        out.set(r, 'dir');
        await visit(r);
      } else {
        out.set(r, await fsp.readFile(abs));
        out.set(`${r} mode`, (st.mode & 0o7777).toString(8));
      }
    }
  };
  await visit('');
  return out;
}

/** Fails naming the first path where two trees differ. */
async function expectSameTree(got: string, want: string): Promise<void> {
  const a = await treeOf(got);
  const b = await treeOf(want);
  expect([...a.keys()].sort()).toEqual([...b.keys()].sort());
  for (const [k, v] of b) {
    const g = a.get(k)!;
    if (Buffer.isBuffer(v)) expect(Buffer.isBuffer(g) && g.equals(v), `${k} differs`).toBe(true);
    else expect(g, k).toBe(v);
  }
}

function cli(args: string[], env: NodeJS.ProcessEnv): { status: number | null; stdout: string; stderr: string } {
  return strata(args, env);
}

function restoreTo(env: NodeJS.ProcessEnv, id: string, src: string): string {
  const target = tempDir('strata-wrestore-');
  const r = cli(['restore', src, '--at', id, '--target', target, '-q'], env);
  expect(r.status, r.stderr).toBe(0);
  return path.join(target, src);
}

/** Writes `bytes` at `at` of a file (made if missing), with fsync. */
async function writeAt(file: string, at: number, bytes: Buffer): Promise<void> {
  const fh = await fsp.open(file, fs.existsSync(file) ? 'r+' : 'w+');
  try {
    await fh.write(bytes, 0, bytes.length, at);
    await fh.sync();
  } finally {
    await fh.close();
  }
}

interface TocLine {
  kind: 'data' | 'ref';
  start: number;
  end: number;
  size?: number;
  offset?: number;
}

describe.skipIf(!HAS_FUSE)('strata mount --writable', () => {
  let env: NodeJS.ProcessEnv;
  let base: string;
  let src: string;
  let parent: string;
  const BIG = 3 * 1024 * 1024;

  beforeAll(() => {
    const made = initCliRepo(['--chunk-avg', '4K']);
    base = tempDir('strata-wmount-');
    env = { ...made.env, STRATA_CACHE_DIR: path.join(base, 'cache') };
    src = path.join(base, 'src');
    const rng = new Rng(1818);
    fs.mkdirSync(path.join(src, 'sub', 'deeper'), { recursive: true });
    fs.mkdirSync(path.join(src, 'gone', 'inner'), { recursive: true });
    fs.writeFileSync(path.join(src, 'big.bin'), rng.bytes(BIG));
    fs.writeFileSync(path.join(src, 'medium.bin'), rng.bytes(300_000));
    fs.writeFileSync(path.join(src, 'sub', 'small.txt'), 'small file\n');
    fs.writeFileSync(path.join(src, 'sub', 'deeper', 'x.txt'), 'x\n');
    fs.writeFileSync(path.join(src, 'gone', 'a'), 'a\n');
    fs.writeFileSync(path.join(src, 'gone', 'inner', 'b'), 'b\n');
    fs.symlinkSync('sub/small.txt', path.join(src, 'link'));
    const r = cli(['backup', src, '--json'], env);
    expect(r.status, r.stderr).toBe(0);
    parent = (JSON.parse(r.stdout) as { snapshot: string }).snapshot;
  });

  it('overwrite, append and insert into a large file, names made, renamed and removed: commit, toc, restore, parent unchanged; then a random history committed at unmount', async () => {
    const truth = path.join(tempDir(), 'truth');
    fs.cpSync(src, truth, { recursive: true, verbatimSymlinks: true });
    const mnt = path.join(tempDir(), 'mnt');
    fs.mkdirSync(mnt);
    const m = await startMount(mnt, env, ['--writable', '--at', parent.slice(0, 12)]);
    const ready = JSON.parse(m.ready) as { snapshot: string; writable: boolean; overlay: string; resumed: number };
    expect(ready).toMatchObject({ snapshot: parent, writable: true, resumed: 0 });
    const mine = path.join(mnt, src);
    /** The same change to the truth and through the mount. */
    const both = async (change: (root: string) => Promise<unknown>) => {
      await change(truth);
      await change(mine);
    };
    const rng = new Rng(99);
    // Overwrite 4 KiB in the middle, append 10 KiB, insert 100 bytes (the rest rewritten, shifted).
    const patch = rng.bytes(4096);
    await both((r) => writeAt(path.join(r, 'big.bin'), 1024 * 1024, patch));
    const tail = rng.bytes(10_240);
    await both((r) => fsp.appendFile(path.join(r, 'big.bin'), tail));
    const insertAt = 2_000_000;
    const rest = (await fsp.readFile(path.join(truth, 'big.bin'))).subarray(insertAt);
    const inserted = Buffer.concat([rng.bytes(100), rest]);
    await both((r) => writeAt(path.join(r, 'big.bin'), insertAt, inserted));
    // A byte changed just before each of a few of the parent's cuts (read from its TOC): the chunker
    // no longer cuts there, and the file's chunks after it run into the blocks that follow.
    const parentToc = JSON.parse(cli(['toc', path.join(src, 'big.bin'), '--at', parent, '--blocks', '--json'], env).stdout) as TocLine[];
    for (const e of parentToc.filter((x) => x.end < 1_900_000).filter((_, k) => k % 37 === 5)) {
      const flip = Buffer.of(rng.int(256));
      await both((r) => writeAt(path.join(r, 'big.bin'), e.end - 2, flip));
    }
    // Truncated, made, renamed (a file, and a directory with what is in it), removed, linked, chmod'ed.
    await both((r) => fsp.truncate(path.join(r, 'medium.bin'), 100_000));
    await both(async (r) => {
      await fsp.mkdir(path.join(r, 'newdir'));
      await fsp.writeFile(path.join(r, 'newdir', 'new.txt'), 'a new file\n');
    });
    await both((r) => fsp.rename(path.join(r, 'sub', 'small.txt'), path.join(r, 'renamed.txt')));
    await both((r) => fsp.rename(path.join(r, 'sub', 'deeper'), path.join(r, 'moved')));
    await both((r) => fsp.rm(path.join(r, 'gone'), { recursive: true }));
    await both((r) => fsp.unlink(path.join(r, 'link')));
    await both((r) => fsp.symlink('renamed.txt', path.join(r, 'newlink')));
    await both((r) => fsp.chmod(path.join(r, 'renamed.txt'), 0o600));
    const when = new Date('2021-02-03T04:05:06.789Z');
    await both((r) => fsp.utimes(path.join(r, 'newdir', 'new.txt'), when, when));
    // cp and dd in child processes: an application writing through the mount.
    await both((r) => run('cp', [path.join(truth, 'medium.bin'), path.join(r, 'copy.bin')]));
    await expectSameTree(mine, truth);
    // Only what was written is stored locally: not a copy of the 3 MiB file.
    const { stdout: du } = await run('du', ['-sk', ready.overlay]);
    expect(Number.parseInt(du, 10)).toBeLessThan(1500);

    // A backup, and a forget of it and a prune, meanwhile: the commit's parent stays the mounted snapshot.
    const other = cli(['backup', src, '--json'], env);
    expect(other.status, other.stderr).toBe(0);
    const forget = cli(['forget', (JSON.parse(other.stdout) as { snapshot: string }).snapshot, '--prune'], env);
    expect(forget.status, forget.stderr).toBe(0);
    const c = cli(['commit', mnt, '--json'], env);
    expect(c.status, c.stderr).toBe(0);
    const first = JSON.parse(c.stdout) as { snapshot: string; parent: string; filesNew: number; filesChanged: number; filesRemoved: number };
    expect(first.parent).toBe(parent);
    expect(first.filesRemoved).toBe(4); // gone/a, gone/inner/b, sub/small.txt, sub/deeper/x.txt
    // The big file: refs to the mounted version around a few data entries.
    const toc = JSON.parse(cli(['toc', path.join(src, 'big.bin'), '--at', first.snapshot, '--json'], env).stdout) as TocLine[];
    const refs = toc.filter((e) => e.kind === 'ref');
    const data = toc.filter((e) => e.kind === 'data');
    expect(refs.length).toBeGreaterThanOrEqual(3);
    expect(refs.some((e) => e.offset === 100)).toBe(true);
    // How many depends on where the keyed chunker cuts: the bound is loose, the bytes' below is what counts.
    expect(data.length).toBeLessThanOrEqual(64);
    expect(data.reduce((s, e) => s + (e.end - e.start + 1), 0)).toBeLessThan(256 * 1024);
    const restored = restoreTo(env, first.snapshot, src);
    await expectSameTree(restored, truth);
    expect((await fsp.stat(path.join(restored, 'newdir', 'new.txt'))).mtime.toISOString()).toBe(when.toISOString());
    // Its blocks are those a backup of the same bytes makes: such a backup stores no new block.
    const again = cli(['backup', path.join(truth, 'big.bin'), '--json'], env);
    expect((JSON.parse(again.stdout) as { blocksNew: number }).blocksNew).toBe(0);
    // The mounted snapshot is as it was.
    await expectSameTree(restoreTo(env, parent, src), src);
    // The mount goes on, from the new snapshot.
    await expectSameTree(mine, truth);

    // A random history: writes at any offset (some past the end), truncations, names made, renamed and removed.
    const files = ['big.bin', 'medium.bin', 'renamed.txt', 'newdir/new.txt', 'copy.bin'];
    const dirs = ['newdir', 'moved'];
    for (let k = 0; k < 60; k++) {
      const op = rng.int(9);
      if (op <= 2 && files.length > 0) {
        const f = rng.pick(files);
        const size = (await fsp.stat(path.join(truth, f))).size;
        const at = rng.int(size + 5000);
        const bytes = rng.bytes(1 + rng.int(20_000));
        await both((r) => writeAt(path.join(r, f), at, bytes));
      } else if (op === 3 && files.length > 0) {
        const f = rng.pick(files);
        const size = (await fsp.stat(path.join(truth, f))).size;
        const to = rng.int(size + 3000);
        await both((r) => fsp.truncate(path.join(r, f), to));
      } else if (op === 4) {
        const f = `${rng.pick(dirs)}/f${k}`;
        const bytes = rng.bytes(rng.int(9000));
        await both((r) => fsp.writeFile(path.join(r, f), bytes));
        files.push(f);
      } else if (op === 5 && files.length > 1) {
        const i = rng.int(files.length);
        const to = `${rng.pick(dirs)}/r${k}`;
        const from = files[i]!;
        await both((r) => fsp.rename(path.join(r, from), path.join(r, to)));
        files[i] = to;
      } else if (op === 6 && files.length > 1) {
        const [f] = files.splice(rng.int(files.length), 1);
        await both((r) => fsp.unlink(path.join(r, f!)));
      } else if (op === 7) {
        const d = `${rng.pick(dirs)}/d${k}`;
        await both((r) => fsp.mkdir(path.join(r, d)));
        dirs.push(d);
      } else if (op === 8 && files.length > 0) {
        // Rewritten whole: opened with O_TRUNC.
        const f = rng.pick(files);
        const bytes = rng.bytes(rng.int(30_000));
        await both((r) => fsp.writeFile(path.join(r, f), bytes));
      }
    }
    // More files written than the overlay keeps open at once.
    await both(async (r) => {
      await fsp.mkdir(path.join(r, 'many'));
      for (let k = 0; k < 100; k++) await fsp.writeFile(path.join(r, 'many', `f${k}`), `file ${k}\n`.repeat(k));
    });
    await expectSameTree(mine, truth);
    // Unmounting commits.
    m.proc.kill('SIGTERM');
    expect(await m.exited, m.err()).toBe(0);
    const lines = m.out().trim().split('\n');
    const second = JSON.parse(lines[lines.length - 1]!) as { snapshot: string; parent: string };
    expect(second.parent).toBe(first.snapshot);
    await expectSameTree(restoreTo(env, second.snapshot, src), truth);
    await expectSameTree(restoreTo(env, first.snapshot, src), restoreTo(env, first.snapshot, src));
    // Nothing is left in the overlays once all is committed.
    expect(fs.readdirSync(path.dirname(ready.overlay))).toEqual([]);
  });

  it('a SIGKILLed mount loses nothing fsynced: the next mount resumes it, strata commit --at commits what one left, --discard drops it', async () => {
    const mnt = path.join(tempDir(), 'mnt');
    fs.mkdirSync(mnt);
    const truth = path.join(tempDir(), 'truth');
    fs.cpSync(src, truth, { recursive: true, verbatimSymlinks: true });
    const rng = new Rng(5);
    let m = await startMount(mnt, env, ['--writable', '--at', parent]);
    const mine = path.join(mnt, src);
    const patch = rng.bytes(8192);
    await writeAt(path.join(mine, 'big.bin'), 777_777, patch);
    await writeAt(path.join(truth, 'big.bin'), 777_777, patch);
    // dd with fsync in a child process, then a new file and a rename (each synced before it is answered).
    const ddIn = path.join(tempDir(), 'in');
    fs.writeFileSync(ddIn, rng.bytes(5000));
    await run('dd', [`if=${ddIn}`, `of=${path.join(mine, 'medium.bin')}`, 'bs=5000', 'seek=10', 'conv=notrunc,fsync', 'status=none']);
    await run('dd', [`if=${ddIn}`, `of=${path.join(truth, 'medium.bin')}`, 'bs=5000', 'seek=10', 'conv=notrunc', 'status=none']);
    await writeAt(path.join(mine, 'made.txt'), 0, Buffer.from('made before the kill\n'));
    await writeAt(path.join(truth, 'made.txt'), 0, Buffer.from('made before the kill\n'));
    await fsp.rename(path.join(mine, 'sub'), path.join(mine, 'sub2'));
    await fsp.rename(path.join(truth, 'sub'), path.join(truth, 'sub2'));
    m.proc.kill('SIGKILL');
    await m.exited;
    await killedMountGone(mnt);

    m = await startMount(mnt, env, ['--writable', '--at', parent]);
    expect((JSON.parse(m.ready) as { resumed: number }).resumed).toBeGreaterThan(0);
    await expectSameTree(mine, truth);
    // More, synced, and killed again: this time committed without a mount.
    await writeAt(path.join(mine, 'big.bin'), BIG - 10, Buffer.from('past the old end of the file'));
    await writeAt(path.join(truth, 'big.bin'), BIG - 10, Buffer.from('past the old end of the file'));
    m.proc.kill('SIGKILL');
    await m.exited;
    await killedMountGone(mnt);
    const c = cli(['commit', '--at', parent, '--json'], env);
    expect(c.status, c.stderr).toBe(0);
    const made = JSON.parse(c.stdout) as { snapshot: string; parent: string };
    expect(made.parent).toBe(parent);
    await expectSameTree(restoreTo(env, made.snapshot, src), truth);
    // A commit with nothing to commit says so.
    const none = cli(['commit', '--at', parent, '--json'], env);
    expect(JSON.parse(none.stdout)).toEqual({ snapshot: null });

    // Changes left by a killed mount, thrown away with --discard.
    m = await startMount(mnt, env, ['--writable', '--at', parent]);
    await writeAt(path.join(mine, 'big.bin'), 0, Buffer.from('to be discarded'));
    m.proc.kill('SIGKILL');
    await m.exited;
    await killedMountGone(mnt);
    m = await startMount(mnt, env, ['--writable', '--at', parent, '--discard']);
    expect((JSON.parse(m.ready) as { resumed: number }).resumed).toBe(0);
    await expectSameTree(mine, src);
    m.proc.kill('SIGTERM');
    expect(await m.exited).toBe(0);
    expect(m.out().trim().split('\n').pop()).toBe(JSON.stringify({ snapshot: null }));
  });

  it('a repository behind strata serve: changes committed through the server, with an append token', async () => {
    const made = initCliRepo(['--chunk-avg', '4K']);
    const server = await serve(made.repo);
    const env2 = client(server.url, token(made.repo, 'laptop', 'append'));
    const here = path.join(tempDir(), 'src');
    fs.mkdirSync(here);
    const rng = new Rng(77);
    fs.writeFileSync(path.join(here, 'img'), rng.bytes(500_000));
    const b = cli(['backup', here, '--json'], env2);
    expect(b.status, b.stderr).toBe(0);
    const first = (JSON.parse(b.stdout) as { snapshot: string }).snapshot;
    const truth = path.join(tempDir(), 'truth');
    fs.cpSync(here, truth, { recursive: true });
    const mnt = path.join(tempDir(), 'mnt');
    fs.mkdirSync(mnt);
    const m = await startMount(mnt, env2, ['--writable']);
    const patch = rng.bytes(5000);
    await writeAt(path.join(mnt, here, 'img'), 250_000, patch);
    await writeAt(path.join(truth, 'img'), 250_000, patch);
    await fsp.writeFile(path.join(mnt, here, 'new'), 'new\n');
    await fsp.writeFile(path.join(truth, 'new'), 'new\n');
    // The server holds the mount's lease on its snapshot (renewed by the mount): a forget through it keeps the snapshot.
    const refused = cli(['forget', first], client(server.url, token(made.repo, 'admin', 'admin')));
    expect(refused.status).toBe(11);
    expect(refused.stderr).toContain(`not forgetting snapshot ${first.slice(0, 8)} (leased by process ${server.proc.pid} on this host): a writable mount`);
    m.proc.kill('SIGTERM');
    expect(await m.exited, m.err()).toBe(0);
    const committed = JSON.parse(m.out().trim().split('\n').pop()!) as { snapshot: string; parent: string };
    expect(committed.parent).toBe(first);
    await expectSameTree(restoreTo(env2, committed.snapshot, here), truth);
  });

  it('forget keeps the snapshot a writable mount stands on: named, it is refused (exit 11); by a policy, kept with the reason; after a commit, the new snapshot instead', async () => {
    const made = initCliRepo();
    const own = { ...made.env, STRATA_CACHE_DIR: path.join(tempDir(), 'cache') };
    const dir = path.join(tempDir('strata-wpin-'), 'data');
    fs.mkdirSync(dir);
    const backupId = () => {
      const r = cli(['backup', dir, '--json'], own);
      expect(r.status, r.stderr).toBe(0);
      return (JSON.parse(r.stdout) as { snapshot: string }).snapshot;
    };
    fs.writeFileSync(path.join(dir, 'a.txt'), 'one\n');
    const first = backupId();
    fs.writeFileSync(path.join(dir, 'a.txt'), 'two\n');
    const second = backupId();
    const ids = () => (JSON.parse(cli(['snapshots', '--json'], own).stdout) as { id: string }[]).map((s) => s.id);
    const mnt = path.join(tempDir(), 'mnt');
    fs.mkdirSync(mnt);
    const m = await startMount(mnt, own, ['--writable', '--at', first]);
    const named = cli(['forget', first.slice(0, 8)], own);
    expect(named.status).toBe(11);
    expect(named.stderr).toContain(`not forgetting snapshot ${first.slice(0, 8)} (leased by process ${m.proc.pid} on this host): a writable mount (strata mount --writable) is based on it, or a copy (strata copy) is reading it; nothing was removed`);
    expect(named.stderr).not.toMatch(/\n\s+at /);
    const policy = cli(['forget', '--keep-last', '1', '--json'], own);
    expect(policy.status, policy.stderr).toBe(0);
    const result = JSON.parse(policy.stdout) as { removed: string[]; groups: { keep: { id: string; reasons: string[] }[] }[] };
    expect(result.removed).toEqual([]);
    expect(result.groups[0]!.keep.find((k) => k.id === first)!.reasons).toEqual([`held by a writable mount or a copy (leased by process ${m.proc.pid} on this host)`]);
    expect(ids()).toEqual([first, second]);
    // A commit: the mount stands on the new snapshot, which is kept now, and the one below may go.
    await writeAt(path.join(mnt, dir, 'a.txt'), 0, Buffer.from('ONE'));
    const c = cli(['commit', mnt, '--json'], own);
    expect(c.status, c.stderr).toBe(0);
    const committed = (JSON.parse(c.stdout) as { snapshot: string }).snapshot;
    expect(cli(['forget', first], own).status).toBe(0);
    expect(cli(['forget', committed], own).status).toBe(11);
    expect(ids()).toEqual([second, committed]);
    m.proc.kill('SIGTERM');
    expect(await m.exited, m.err()).toBe(0);
    // Unmounted: nothing holds it.
    expect(cli(['forget', committed], own).status).toBe(0);
    expect(ids()).toEqual([second]);
  });

  it('says what is wrong: no mount at the path, the overlay in use, the mounted snapshot forgotten once its lease is taken away (the changes are kept)', async () => {
    const nowhere = tempDir();
    const r = cli(['commit', nowhere], env);
    expect(r.status).toBe(1);
    expect(r.stderr).toContain(`no writable strata mount is at ${nowhere}`);
    expect(cli(['commit'], env).status).toBe(2);
    expect(cli(['mount', nowhere, '--discard'], env).status).toBe(2);

    // A snapshot of its own, to be forgotten under the mount.
    fs.writeFileSync(path.join(src, 'medium.bin'), new Rng(3).bytes(1000));
    const b = cli(['backup', src, '--json'], env);
    const own = (JSON.parse(b.stdout) as { snapshot: string }).snapshot;
    const mnt = path.join(tempDir(), 'mnt');
    fs.mkdirSync(mnt);
    const m = await startMount(mnt, env, ['--writable', '--at', own]);
    const overlay = (JSON.parse(m.ready) as { overlay: string }).overlay;
    const busy = cli(['commit', '--at', own], env);
    expect(busy.status).toBe(1);
    expect(busy.stderr).toContain(`in use by process ${m.proc.pid}`);
    await writeAt(path.join(mnt, src, 'medium.bin'), 0, Buffer.from('changed'));
    // The mount keeps its snapshot from forget; with its lease taken away (unlock --remove-all), a forget goes through.
    expect(cli(['forget', own], env).status).toBe(11);
    expect(cli(['unlock', '--remove-all'], env).status).toBe(0);
    expect(cli(['forget', own], env).status).toBe(0);
    const c = cli(['commit', mnt], env);
    expect(c.status).toBe(1);
    expect(c.stderr).toContain('is no longer in the repository');
    m.proc.kill('SIGTERM');
    expect(await m.exited).toBe(1);
    expect(m.err()).toContain(`the changes were not committed, and are kept in ${overlay}`);
    expect(fs.existsSync(path.join(overlay, 'journal'))).toBe(true);
  });
});

// The overlay and the commit without FUSE: these run everywhere.
describe('a writable mount\'s overlay, without a mount', () => {
  it('a renamed large file is committed with no new block, and one renamed then edited with only the blocks its edit touched; both restore byte for byte', async () => {
    const repo = await makeRepo({ chunkAvg: 16 * 1024 });
    try {
      const src = path.join(tempDir(), 'src');
      fs.mkdirSync(src);
      const rng = new Rng(77);
      const size = 8 * 1024 * 1024;
      const a = rng.bytes(size);
      const b = rng.bytes(size);
      fs.writeFileSync(path.join(src, 'a.img'), a);
      fs.writeFileSync(path.join(src, 'b.img'), b);
      const parent = (await backup(repo, { paths: [src] })).snapshot;
      const ov = await Overlay.open({ root: path.join(tempDir(), 'overlays'), repository: 'r', tree: await SnapshotTree.open(repo, { at: parent }) });
      try {
        // A rename alone: every block is the original's, none is read or stored again.
        await ov.rename(`${src}/a.img`, `${src}/moved.img`);
        const moved = (await ov.commit())!;
        expect(moved).toMatchObject({ filesNew: 1, filesRemoved: 1, blocksNew: 0, bytesRead: 0 });
        // What it adds is the new version's table of contents (one data entry per block: a reference
        // names the same path in its target, and the new path has none in the parent), a tree and the record.
        expect(moved.bytesAdded).toBeLessThan(size / 50);
        expect((await readWhole(repo, moved.snapshot, `${src}/moved.img`)).equals(a)).toBe(true);
        const toc = await (await (await SnapshotTree.open(repo, { at: moved.snapshot })).open(`${src}/moved.img`)).toc();
        expect(toc.entries.every((e) => e.kind === 'data')).toBe(true);
        // Renamed, then 4 KiB written in its middle: only the blocks around the write are new.
        await ov.rename(`${src}/b.img`, `${src}/edited.img`);
        const node = (await ov.lookup(`${src}/edited.img`))!;
        const patch = rng.bytes(4096);
        await ov.write(`${src}/edited.img`, node, 3 * 1024 * 1024 + 123, patch);
        const edited = (await ov.commit())!;
        expect(edited).toMatchObject({ filesNew: 1, filesRemoved: 1 });
        expect(edited.blocksNew).toBeGreaterThan(0);
        expect(edited.blocksNew).toBeLessThan(20);
        expect(edited.bytesRead).toBeLessThan(size / 8);
        expect(edited.bytesAdded).toBeLessThan(size / 20);
        const want = Buffer.from(b);
        patch.copy(want, 3 * 1024 * 1024 + 123);
        expect((await readWhole(repo, edited.snapshot, `${src}/edited.img`)).equals(want)).toBe(true);
        expect((await readWhole(repo, edited.snapshot, `${src}/moved.img`)).equals(a)).toBe(true);
        expect((await readWhole(repo, parent, `${src}/b.img`)).equals(b)).toBe(true);
      } finally {
        await ov.close();
      }
    } finally {
      repo.close();
    }
  });

  it('a commit cuts a file as a backup of the same bytes does, where writes lengthen or end runs of zeros', async () => {
    const repo = await makeRepo({ chunkAvg: 4096 });
    try {
      const src = path.join(tempDir(), 'src');
      fs.mkdirSync(src);
      const rng = new Rng(78);
      // Records between runs of zeros, as in a disk image: chunks of zeros end where a record starts.
      const parts: Buffer[] = [];
      for (let i = 0; i < 60; i++) parts.push(rng.bytes(300 + rng.int(9000)), Buffer.alloc(600 + rng.int(20_000)));
      const file = Buffer.concat(parts);
      fs.writeFileSync(path.join(src, 'disk.img'), file);
      const parent = (await backup(repo, { paths: [src] })).snapshot;
      const ov = await Overlay.open({ root: path.join(tempDir(), 'overlays'), repository: 'r', tree: await SnapshotTree.open(repo, { at: parent }) });
      try {
        const node = (await ov.lookup(`${src}/disk.img`))!;
        const want = Buffer.from(file);
        // Zeros written over the first bytes of records (a chunk of zeros no longer ends there), and
        // bytes written over the last zeros of runs (it ends earlier).
        for (let at = 0, k = 0; (at = want.indexOf(Buffer.alloc(600), at)) >= 0; k++) {
          while (at < want.length && want[at] === 0) at++;
          if (at >= want.length || k % 3 === 2) continue;
          const patch = k % 3 === 0 ? Buffer.alloc(1 + rng.int(200)) : Buffer.from(rng.bytes(1 + rng.int(100)).map((b) => b | 1));
          const where = k % 3 === 0 ? at : at - patch.length;
          patch.copy(want, where);
          await ov.write(`${src}/disk.img`, node, where, patch);
        }
        const r = (await ov.commit())!;
        expect((await readWhole(repo, r.snapshot, `${src}/disk.img`)).equals(want)).toBe(true);
        // The same bytes under a new name, chunked whole by a backup: not one block is new.
        const other = path.join(tempDir(), 'other');
        fs.mkdirSync(other);
        fs.writeFileSync(path.join(other, 'disk.img'), want);
        expect((await backup(repo, { paths: [other] })).blocksNew).toBe(0);
      } finally {
        await ov.close();
      }
    } finally {
      repo.close();
    }
  });

  it('journals changes, replays them in a new process\'s overlay, and commits them as an incremental of the mounted snapshot', async () => {
    const repo = await makeRepo({ chunkAvg: 4096 });
    try {
      const src = path.join(tempDir(), 'src');
      fs.mkdirSync(src);
      const rng = new Rng(42);
      const original = rng.bytes(400_000);
      fs.writeFileSync(path.join(src, 'img'), original);
      fs.writeFileSync(path.join(src, 'old.txt'), 'old\n');
      const parent = (await backup(repo, { paths: [src] })).snapshot;
      const tree = await SnapshotTree.open(repo, { at: parent });
      const root = path.join(tempDir(), 'overlays');
      const ov = await Overlay.open({ root, repository: 'r', tree });
      const img = (await ov.lookup(`${src}/img`))!;
      const patch = rng.bytes(3000);
      await ov.write(`${src}/img`, img, 100_000, patch);
      await ov.truncate(`${src}/img`, img, 390_000);
      await ov.rename(`${src}/old.txt`, `${src}/new.txt`);
      const made = await ov.create(`${src}/made.bin`, 0o640);
      await ov.write(`${src}/made.bin`, made, 10, Buffer.from('made'));
      // Extended attributes: set, replaced, removed; XATTR_CREATE of one there, a name a backup does not keep: refused, not journaled.
      await ov.setXattr(`${src}/img`, 'user.b', Buffer.from('b'), 0);
      await ov.setXattr(`${src}/img`, 'user.a', Buffer.from('1'), 0);
      await ov.removeXattr(`${src}/img`, 'user.b');
      await expect(ov.setXattr(`${src}/img`, 'user.a', Buffer.from('2'), 1)).rejects.toMatchObject({ errno: 'EEXIST' });
      await expect(ov.setXattr(`${src}/img`, 'user.none', Buffer.from('2'), 2)).rejects.toMatchObject({ errno: 'ENODATA' });
      await expect(ov.setXattr(`${src}/img`, 'system.other', Buffer.from('2'), 0)).rejects.toMatchObject({ errno: 'ENOTSUP' });
      await ov.sync();
      // Only what was written is on disk.
      expect(fs.statSync(path.join(ov.dir, 'data', String(img.data))).blocks * 512).toBeLessThan(64 * 1024);
      const want = Buffer.from(original.subarray(0, 390_000));
      patch.copy(want, 100_000);
      expect((await ov.read(img, 0, 1_000_000)).equals(want)).toBe(true);

      // A line a crash cut short, never synced: left out, and cut off before the next line is appended.
      fs.appendFileSync(path.join(ov.dir, 'journal'), '{"o":"mk","p":"/tor');
      // Another overlay of the same snapshot, as the next mount would open it: the same tree, replayed.
      const again = await Overlay.open({ root, repository: 'r', tree });
      expect(again.resumed).toBe(9);
      expect((await again.lookup(`${src}/img`))!.xattrs).toEqual([['user.a', Buffer.from('1')]]);
      await again.chmod(`${src}/new.txt`, 0o600);
      const third = await Overlay.open({ root, repository: 'r', tree });
      expect(third.resumed).toBe(10);
      await third.close();
      expect((await again.read((await again.lookup(`${src}/img`))!, 0, 1_000_000)).equals(want)).toBe(true);
      expect(await again.lookup(`${src}/old.txt`)).toBeUndefined();
      expect((await again.read((await again.lookup(`${src}/made.bin`))!, 0, 100)).equals(Buffer.concat([Buffer.alloc(10), Buffer.from('made')]))).toBe(true);
      const r = (await again.commit())!;
      expect(r.parent).toBe(parent);
      expect(r).toMatchObject({ filesNew: 2, filesChanged: 1, filesRemoved: 1 });
      expect(await readWhole(repo, r.snapshot, `${src}/img`)).toEqual(want);
      expect(await readWhole(repo, r.snapshot, `${src}/new.txt`)).toEqual(Buffer.from('old\n'));
      expect(await readWhole(repo, parent, `${src}/img`)).toEqual(original);
      expect((await (await SnapshotTree.open(repo, { at: r.snapshot })).stat(`${src}/img`)).xattrs).toEqual([['user.a', Buffer.from('1')]]);
      // An incremental: most of the image is refs to the mounted version.
      const toc = await (await (await SnapshotTree.open(repo, { at: r.snapshot })).open(`${src}/img`)).toc();
      const dataBytes = toc.entries.filter((e) => e.kind === 'data').reduce((n, e) => n + e.end - e.start + 1, 0);
      // The patch, the blocks it touched and those the chunker needs to fall back in step (at most a few of 16 KiB, the largest at a 4 KiB average), and the cut tail's last block: wherever the keyed chunker cuts, a quarter of the file at most.
      expect(dataBytes).toBeLessThan(3000 + 6 * 16 * 1024);
      // Committed: the overlay now stands on the new snapshot, with nothing changed.
      expect(again.tree.id).toBe(r.snapshot);
      expect(again.changed).toBe(false);
      expect(await again.commit()).toBeUndefined();
      await again.close();
      await ov.close().catch(() => {});
      expect(fs.readdirSync(root)).toEqual([]);
    } finally {
      repo.close();
    }
  });
});
