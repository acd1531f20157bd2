/**
 * FIFOs, device nodes and extended attributes through real FUSE mounts: the
 * read-only mount shows the nodes as what they are (type, mode, owner, time,
 * device numbers), and a writable mount renames and chmods them and keeps
 * them, and a written file's attributes, in what it commits. Skipped, with
 * the reason printed, where there is no /dev/fuse.
 */
import { execFileSync } from 'node:child_process';
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
    ro.proc.kill('SIGINT');
    expect(await ro.exited).toBe(0);

    const rw = await startMount(mnt, env, ['--writable', '--at', first]);
    const inside = path.join(mnt, src);
    await fsp.rename(path.join(inside, 'pipe'), path.join(inside, 'pipe2'));
    if (asRoot) await fsp.chmod(path.join(inside, 'null'), 0o644);
    await fsp.appendFile(path.join(inside, 'f'), 'more\n');
    const c = ok(['commit', mnt, '--json'], env);
    const next = (JSON.parse(c.stdout) as { snapshot: string }).snapshot;
    rw.proc.kill('SIGINT');
    expect(await rw.exited).toBe(0);

    const listed = JSON.parse(ok(['ls', '--json', src, '--at', next], env).stdout).entries as { name: string; type: string; mode: number; major?: number; minor?: number; xattrs?: string[] }[];
    const by = (n: string) => listed.find((e) => e.name === n);
    expect(by('pipe')).toBeUndefined();
    expect(by('pipe2')).toMatchObject({ type: 'fifo', mode: 0o640 });
    if (asRoot) expect(by('null')).toMatchObject({ type: 'chardev', mode: 0o644, major: 1, minor: 3 });
    if (attrs) expect(by('f')?.xattrs).toEqual(['user.kept']);
    expect(ok(['cat', path.join(src, 'f'), '--at', next], env).stdout).toBe('some bytes\nmore\n');
  });
});
