/**
 * FIFOs, device nodes and extended attributes through real FUSE mounts: the
 * read-only mount shows the nodes as what they are (type, mode, owner, time,
 * device numbers), and a writable mount renames and chmods them and keeps
 * them, and a written file's attributes, in what it commits. Skipped, with
 * the reason printed, where there is no /dev/fuse.
 */
import { execFile, execFileSync, spawn, type ChildProcessByStdio } from 'node:child_process';
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import { createRequire } from 'node:module';
import * as path from 'node:path';
import type { Readable } from 'node:stream';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import { BIN, initCliRepo, strata, tempDir } from './helpers.js';
import { mountedAt } from './mount-helpers.js';

const run = promisify(execFile);
const HAS_FUSE = fs.existsSync('/dev/fuse');
if (!HAS_FUSE) console.warn('no /dev/fuse on this machine: the mount tests of FIFOs and devices were skipped');
const asRoot = process.getuid?.() === 0;
if (!asRoot) console.warn('not root: the mount tests of FIFOs and devices leave out the device node (mknod needs root)');

const xattr = createRequire(import.meta.url)('@napi-rs/xattr') as { setAttributeSync(p: string, name: string, value: Uint8Array): void };

interface Mounted {
  proc: ChildProcessByStdio<null, Readable, Readable>;
  ready: string;
  exited: Promise<number | null>;
  dir: string;
}
const mounted: Mounted[] = [];

async function startMount(dir: string, env: NodeJS.ProcessEnv, args: string[]): Promise<Mounted> {
  const proc = spawn(process.execPath, [BIN, 'mount', dir, '--json', ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  let out = '';
  proc.stderr.on('data', (c: Buffer) => (err += c.toString()));
  const exited = new Promise<number | null>((r) => proc.on('exit', (code) => r(code)));
  const ready = await new Promise<string>((resolve, reject) => {
    proc.stdout.on('data', (c: Buffer) => {
      out += c.toString();
      if (out.includes('\n')) resolve(out.split('\n')[0]!);
    });
    void exited.then((code) => reject(new Error(`mount exited with ${code}: ${err}`)));
  });
  const m = { proc, ready, exited, dir };
  mounted.push(m);
  return m;
}

afterAll(async () => {
  for (const m of mounted) if (m.proc.exitCode === null && m.proc.signalCode === null) m.proc.kill('SIGKILL');
  await Promise.all(mounted.map((m) => Promise.race([m.exited, new Promise((r) => setTimeout(r, 5000))])));
  for (const m of mounted) if (await mountedAt(m.dir)) await run('fusermount3', ['-uz', m.dir]).catch(() => {});
});

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
