/**
 * FIFOs, device nodes and extended attributes through real FUSE mounts: the
 * read-only mount shows the nodes as what they are (type, mode, owner, time,
 * device numbers) and the stored attributes (getfattr); a writable mount
 * renames and chmods nodes, makes new ones (mkfifo, mknod), sets and removes
 * attributes (setfattr), and keeps all of it in what it commits. Skipped,
 * with the reason printed, where there is no /dev/fuse.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import { createRequire } from 'node:module';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { initCliRepo, strata, tempDir } from './helpers.js';
import { startMount, stopMounts } from './mount-helpers.js';

const HAS_FUSE = fs.existsSync('/dev/fuse');
if (!HAS_FUSE) console.warn('no /dev/fuse on this machine: the mount tests of FIFOs and devices were skipped');
const asRoot = process.getuid?.() === 0;
if (!asRoot) console.warn('not root: the mount tests of FIFOs and devices leave out the device node (mknod needs root)');

const xattr = createRequire(import.meta.url)('@napi-rs/xattr') as { setAttributeSync(p: string, name: string, value: Uint8Array): void };

const HAS_GETFATTR = spawnSync('sh', ['-c', 'command -v getfattr && command -v setfattr']).status === 0;
if (!HAS_GETFATTR) console.warn('no getfattr/setfattr (apt-get install attr): the mount tests of extended attributes were left out');

/** An entry's attributes (all names, not following a symlink) through getfattr, name to text value. */
function attributes(p: string): Record<string, string> {
  const out = execFileSync('getfattr', ['-h', '-d', '-m', '-', '--absolute-names', p], { encoding: 'utf8' });
  return Object.fromEntries([...out.matchAll(/^([^#\s][^=]*)="(.*)"$/gm)].map((m) => [m[1]!, m[2]!]));
}

afterAll(stopMounts);

function ok(args: string[], env: NodeJS.ProcessEnv) {
  const r = strata(args, env);
  expect(r.status, `${args.join(' ')}: ${r.stderr}`).toBe(0);
  return r;
}

describe.skipIf(!HAS_FUSE)('FIFOs and devices in mounts', () => {
  it('the read-only mount shows them as stored; a writable mount renames and chmods them and commits them, attributes kept', async () => {
    const { env } = initCliRepo();
    const src = tempDir();
    execFileSync('mkfifo', ['-m', '0640', path.join(src, 'pipe')]);
    if (asRoot) execFileSync('mknod', ['-m', '0600', path.join(src, 'null'), 'c', '1', '3']);
    fs.writeFileSync(path.join(src, 'f'), 'some bytes\n');
    let attrs = true;
    try {
      xattr.setAttributeSync(path.join(src, 'f'), 'user.kept', Buffer.from('yes'));
    } catch {
      attrs = false;
    }
    const nodes = asRoot ? ['pipe', 'null'] : ['pipe'];
    const first = JSON.parse(ok(['backup', src, '--json'], env).stdout).snapshot as string;
    const fmt = '%n|%F|%a|%u|%g|%Y|%t|%T';

    const mnt = path.join(tempDir(), 'mnt');
    fs.mkdirSync(mnt);
    const ro = await startMount(mnt, env, ['--at', first]);
    const want = execFileSync('stat', ['-c', fmt, ...nodes], { cwd: src, encoding: 'utf8' });
    expect(execFileSync('stat', ['-c', fmt, ...nodes], { cwd: path.join(mnt, src), encoding: 'utf8' })).toBe(want);
    expect((await fsp.readdir(path.join(mnt, src))).sort()).toEqual(['f', ...nodes].sort());
    if (attrs && HAS_GETFATTR) {
      // The stored attributes, read through the mount (getxattr, listxattr); none where none were stored.
      expect(attributes(path.join(mnt, src, 'f'))).toEqual({ 'user.kept': 'yes' });
      expect(attributes(path.join(mnt, src))).toEqual({});
      expect(spawnSync('getfattr', ['-n', 'user.none', path.join(mnt, src, 'f')], { encoding: 'utf8' }).stderr).toMatch(/No such attribute/);
      // An SELinux label or ACL not there is "not supported", so that ls -l stops asking every file for them.
      for (const name of ['security.selinux', 'system.posix_acl_access']) {
        expect(spawnSync('getfattr', ['-n', name, path.join(mnt, src, 'f')], { encoding: 'utf8' }).stderr).toMatch(/Operation not supported/);
      }
      expect(spawnSync('setfattr', ['-n', 'user.new', '-v', 'x', path.join(mnt, src, 'f')], { encoding: 'utf8' }).stderr).toMatch(/Read-only file system/);
    }
    ro.proc.kill('SIGINT');
    expect(await ro.exited).toBe(0);

    const rw = await startMount(mnt, env, ['--writable', '--at', first]);
    const inside = path.join(mnt, src);
    await fsp.rename(path.join(inside, 'pipe'), path.join(inside, 'pipe2'));
    if (asRoot) await fsp.chmod(path.join(inside, 'null'), 0o644);
    await fsp.appendFile(path.join(inside, 'f'), 'more\n');
    // New FIFOs and devices (mknod), kept by the commit.
    execFileSync('mkfifo', ['-m', '0604', path.join(inside, 'made-pipe')]);
    if (asRoot) execFileSync('mknod', ['-m', '0640', path.join(inside, 'made-dev'), 'b', '7', '200']);
    expect(execFileSync('stat', ['-c', '%F|%a', path.join(inside, 'made-pipe')], { encoding: 'utf8' })).toBe('fifo|604\n');
    if (HAS_GETFATTR) {
      // Attributes set and removed through the mount: shown at once, committed with the entry.
      execFileSync('setfattr', ['-n', 'user.added', '-v', 'one', path.join(inside, 'f')]);
      execFileSync('setfattr', ['-n', 'user.added', '-v', 'two', path.join(inside, 'f')]);
      execFileSync('setfattr', ['-n', 'user.on-dir', '-v', 'd', inside]);
      if (attrs) execFileSync('setfattr', ['-x', 'user.kept', path.join(inside, 'f')]);
      expect(spawnSync('setfattr', ['-x', 'user.never', path.join(inside, 'f')], { encoding: 'utf8' }).stderr).toMatch(/No such attribute/);
      expect(attributes(path.join(inside, 'f'))).toEqual({ 'user.added': 'two' });
      expect(attributes(inside)).toEqual({ 'user.on-dir': 'd' });
    }
    const c = ok(['commit', mnt, '--json'], env);
    const next = (JSON.parse(c.stdout) as { snapshot: string }).snapshot;
    rw.proc.kill('SIGINT');
    expect(await rw.exited).toBe(0);

    const listed = JSON.parse(ok(['ls', '--json', src, '--at', next], env).stdout).entries as { name: string; type: string; mode: number; major?: number; minor?: number; xattrs?: string[] }[];
    const by = (n: string) => listed.find((e) => e.name === n);
    expect(by('pipe')).toBeUndefined();
    expect(by('pipe2')).toMatchObject({ type: 'fifo', mode: 0o640 });
    expect(by('made-pipe')).toMatchObject({ type: 'fifo', mode: 0o604 });
    if (asRoot) expect(by('null')).toMatchObject({ type: 'chardev', mode: 0o644, major: 1, minor: 3 });
    if (asRoot) expect(by('made-dev')).toMatchObject({ type: 'blockdev', mode: 0o640, major: 7, minor: 200 });
    if (HAS_GETFATTR) expect(by('f')?.xattrs).toEqual(['user.added']);
    else if (attrs) expect(by('f')?.xattrs).toEqual(['user.kept']);
    expect(ok(['cat', path.join(src, 'f'), '--at', next], env).stdout).toBe('some bytes\nmore\n');
    if (HAS_GETFATTR) {
      // The committed values, through a read-only mount of the new snapshot.
      const again = await startMount(mnt, env, ['--at', next]);
      expect(attributes(path.join(mnt, src, 'f'))).toEqual({ 'user.added': 'two' });
      expect(attributes(path.join(mnt, src))).toEqual({ 'user.on-dir': 'd' });
      again.proc.kill('SIGINT');
      expect(await again.exited).toBe(0);
    }
  });
});
