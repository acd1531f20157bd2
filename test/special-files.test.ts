/**
 * FIFOs, device nodes and extended attributes (POSIX ACLs among them),
 * through the CLI on real files: stored by backup, shown by ls and diff,
 * recreated by restore with their bytes and metadata exact; `--no-xattrs` on
 * either side; a device node restored by a user who is not root, and
 * attributes only root may set, are named and counted (exit 3).
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import { createRequire } from 'node:module';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { readXattrs, writeXattrs } from '../src/util/xattrs.js';
import { cliForEveryone, initCliRepo, Rng, strata, takesUserXattrs, tempDir } from './helpers.js';

const xattr = createRequire(import.meta.url)('@napi-rs/xattr') as {
  listAttributesSync(p: string): string[];
  getAttributeSync(p: string, name: string): Buffer | null;
  setAttributeSync(p: string, name: string, value: Uint8Array): void;
  removeAttributeSync(p: string, name: string): void;
};

const asRoot = process.getuid?.() === 0;

function ok(args: string[], env: NodeJS.ProcessEnv) {
  const r = strata(args, env);
  expect(r.status, `${args.join(' ')}: ${r.stderr}`).toBe(0);
  return r;
}

function hasSetfacl(): boolean {
  try {
    execFileSync('setfacl', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** All of an entry's attributes, name to value. */
function attrsOf(p: string): Record<string, string> {
  return Object.fromEntries(
    xattr
      .listAttributesSync(p)
      .sort()
      .map((n) => [n, xattr.getAttributeSync(p, n)!.toString('hex')]),
  );
}

/** What restore must bring back of an entry: type, permission bits, owner, time (to the microsecond), device, bytes. */
function metaOf(p: string) {
  const st = fs.lstatSync(p, { bigint: true });
  return {
    type: st.isFIFO() ? 'fifo' : st.isCharacterDevice() ? 'chardev' : st.isBlockDevice() ? 'blockdev' : st.isSymbolicLink() ? 'symlink' : st.isDirectory() ? 'dir' : 'file',
    mode: Number(st.mode & 0o7777n),
    uid: Number(st.uid),
    gid: Number(st.gid),
    mtimeUs: (st.mtimeNs / 1000n).toString(),
    rdev: st.isCharacterDevice() || st.isBlockDevice() ? st.rdev.toString() : undefined,
    bytes: st.isFile() ? fs.readFileSync(p).toString('hex') : undefined,
  };
}

function getfacl(p: string): string {
  return execFileSync('getfacl', ['--omit-header', '--absolute-names', p], { encoding: 'utf8' });
}

const NAMES = ['data', 'link', 'sub', 'sub/pipe', 'sub/null'];

describe('FIFOs, device nodes and extended attributes', () => {
  // mknod of a device (and trusted.* attributes) need root; CI runs as root.
  it.skipIf(!asRoot || !hasSetfacl())('round-trip exactly, show in ls and diff, and --no-xattrs leaves them out (needs root for mknod, and setfacl)', () => {
    const src = tempDir();
    if (!takesUserXattrs(src)) return void console.warn(`skipped: ${src} takes no user.* extended attributes`);
    const { env } = initCliRepo();
    const at = (n: string) => path.join(src, n);
    fs.writeFileSync(at('data'), new Rng(7).bytes(100_000));
    fs.symlinkSync('data', at('link'));
    fs.mkdirSync(at('sub'));
    execFileSync('mkfifo', ['-m', '0640', at('sub/pipe')]);
    fs.chownSync(at('sub/pipe'), 65534, 65534);
    // A copy of /dev/null: the same device numbers.
    const nul = fs.statSync('/dev/null', { bigint: true });
    execFileSync('mknod', ['-m', '0600', at('sub/null'), 'c', String(Number(nul.rdev >> 8n) & 0xfff), String(Number(nul.rdev & 0xffn))]);
    expect(fs.statSync(at('sub/null'), { bigint: true }).rdev).toBe(nul.rdev);
    xattr.setAttributeSync(at('data'), 'user.note', Buffer.from([0, 1, 2, 255, 104, 105]));
    xattr.setAttributeSync(at('data'), 'trusted.mark', Buffer.from('root only'));
    xattr.setAttributeSync(at('sub'), 'user.dir', Buffer.from('a directory'));
    // user.* is for files and directories only; root may mark anything trusted.*.
    xattr.setAttributeSync(at('sub/null'), 'trusted.dev', Buffer.from('on a device'));
    execFileSync('setfacl', ['-m', 'u:65534:rw,g:65534:r', at('data')]);
    execFileSync('setfacl', ['-d', '-m', 'u:65534:rx', at('sub')]);
    // The times last: setting attributes changes only the ctime, but the directory's mtime moved with its entries.
    for (const n of NAMES) fs.lutimesSync(at(n), 1_700_000_000.123456, 1_700_000_000.123456);
    const want = Object.fromEntries(NAMES.map((n) => [n, { ...metaOf(at(n)), attrs: n === 'link' ? {} : attrsOf(at(n)) }]));
    expect(Object.keys(want['data']!.attrs)).toEqual(['system.posix_acl_access', 'trusted.mark', 'user.note']);
    expect(Object.keys(want['sub']!.attrs)).toEqual(['system.posix_acl_default', 'user.dir']);

    const b = JSON.parse(ok(['backup', src, '--json'], env).stdout);
    expect(b.specials).toBe(2);
    expect(b.xattrsLeftOut).toBe(0);
    expect(b.warnings).toEqual([]);

    const listed = JSON.parse(ok(['ls', '--json', '-R', src], env).stdout).entries as { path: string; type: string; major?: number; minor?: number; xattrs?: string[] }[];
    const byPath = (n: string) => listed.find((e) => e.path === at(n))!;
    expect(byPath('sub/pipe').type).toBe('fifo');
    expect(byPath('sub/null')).toMatchObject({ type: 'chardev', major: 1, minor: 3 });
    expect(byPath('data').xattrs).toEqual(['system.posix_acl_access', 'trusted.mark', 'user.note']);
    const long = ok(['ls', '-l', path.join(src, 'sub')], env).stdout;
    expect(long).toMatch(/^prw-r----- +65534 +65534 +0 .* \/.*\/sub\/pipe$/m);
    expect(long).toMatch(/^crw------- +0 +0 +1, 3 .*\/sub\/null$/m);
    const cat = strata(['cat', at('sub/pipe')], env);
    expect(cat.status).toBe(1);
    expect(cat.stderr).toMatch(/sub\/pipe is a FIFO, not a file/);

    const check = (target: string, attrs: boolean) => {
      for (const n of NAMES) {
        const p = path.join(target, at(n));
        expect({ ...metaOf(p), attrs: n === 'link' || !attrs ? {} : attrsOf(p) }, n).toEqual(attrs ? want[n] : { ...want[n], attrs: {} });
      }
      if (attrs) {
        // The ACLs as their own tool reads them: the mask and the group bits agree.
        expect(getfacl(path.join(target, at('data')))).toBe(getfacl(at('data')));
        expect(getfacl(path.join(target, at('sub')))).toBe(getfacl(at('sub')));
      }
    };
    const target = tempDir();
    const r = JSON.parse(ok(['restore', '--target', target, '--json'], env).stdout);
    expect(r).toMatchObject({ specials: 2, xattrs: 6, notRestored: [] });
    check(target, true);
    // Again over what is there: each node is replaced, not written through.
    ok(['restore', '--target', target], env);
    check(target, true);
    // Into a target with a default ACL: what had no ACL gets none from it, and modes stay the stored ones.
    const inherited = tempDir();
    execFileSync('setfacl', ['-d', '-m', 'u:65534:rwx,m:rwx', inherited]);
    ok(['restore', '--target', inherited], env);
    check(inherited, true);
    const top = path.join(inherited, src.split('/')[1]!);
    expect(fs.existsSync(top)).toBe(true);
    expect(attrsOf(top)).toEqual(attrsOf(`/${src.split('/')[1]!}`));
    const bare = tempDir();
    const rb = JSON.parse(ok(['restore', '--target', bare, '--no-xattrs', '--json'], env).stdout);
    expect(rb).toMatchObject({ specials: 2, xattrs: 0 });
    check(bare, false);

    // An attribute changed (the ctime with it) is found by the next backup; the rest come from the parent.
    xattr.setAttributeSync(at('data'), 'user.note', Buffer.from('changed'));
    const second = JSON.parse(ok(['backup', src, '--json'], env).stdout).snapshot;
    const d = ok(['diff', b.snapshot, second], env).stdout;
    expect(d).toContain(`U ${at('data')}`);
    expect(d).not.toContain('sub');
    const after = tempDir();
    ok(['restore', '--target', after], env);
    expect(attrsOf(path.join(after, at('data')))['user.note']).toBe(Buffer.from('changed').toString('hex'));
    expect(attrsOf(path.join(after, at('sub')))).toEqual(want['sub']!.attrs);

    // Without attributes, then with them again, nothing else changed: the parent says nothing of them, so they are read.
    ok(['backup', src, '--no-xattrs'], env);
    expect((JSON.parse(ok(['ls', '--json', '-R', src], env).stdout).entries as { xattrs?: string[] }[]).some((e) => e.xattrs)).toBe(false);
    ok(['backup', src], env);
    const back = JSON.parse(ok(['ls', '--json', '-R', src], env).stdout).entries as { path: string; xattrs?: string[] }[];
    expect(back.find((e) => e.path === at('sub'))?.xattrs).toEqual(['system.posix_acl_default', 'user.dir']);
    expect(back.find((e) => e.path === at('sub/null'))?.xattrs).toEqual(['trusted.dev']);

    // Another device under the same name: changed, with both numbers; a FIFO whose mode changed: metadata.
    const before = (JSON.parse(ok(['snapshots', '--json'], env).stdout) as { id: string }[]).at(-1)!.id;
    fs.rmSync(at('sub/null'));
    execFileSync('mknod', ['-m', '0600', at('sub/null'), 'c', '1', '5']);
    fs.chmodSync(at('sub/pipe'), 0o600);
    const latest = JSON.parse(ok(['backup', src, '--json'], env).stdout).snapshot;
    const dd = ok(['diff', before, latest], env).stdout;
    expect(dd).toContain(`M ${at('sub/null')} (character device 1,3 -> 1,5)`);
    expect(dd).toContain(`U ${at('sub/pipe')}`);
    const dj = JSON.parse(ok(['diff', before, latest, '--json'], env).stdout);
    expect(dj.changed).toContainEqual(expect.objectContaining({ path: at('sub/null'), type: 'chardev', rdev1: String(nul.rdev), rdev2: String(fs.statSync(at('sub/null'), { bigint: true }).rdev) }));
  });

  it.skipIf(!asRoot)('a device node and a root-only attribute restored by another user are named and counted, exit 3; FIFOs and user attributes come back (needs root to make the device and to run as another user)', () => {
    const src = tempDir();
    const xattrs = takesUserXattrs(src);
    const { repo, env } = initCliRepo();
    execFileSync('mknod', [path.join(src, 'null'), 'c', '1', '3']);
    execFileSync('mkfifo', [path.join(src, 'pipe')]);
    fs.writeFileSync(path.join(src, 'f'), 'f');
    if (xattrs) {
      xattr.setAttributeSync(path.join(src, 'f'), 'user.kept', Buffer.from('yes'));
      xattr.setAttributeSync(path.join(src, 'f'), 'trusted.root', Buffer.from('no'));
    }
    ok(['backup', src], env);
    // Run as nobody, who can use a world-writable repository and a target of its own.
    fs.chmodSync(path.dirname(repo), 0o777);
    for (const p of walk(repo)) fs.chmodSync(p, fs.statSync(p).isDirectory() ? 0o777 : 0o666);
    const target = tempDir();
    fs.chownSync(target, 65534, 65534);
    const r = strata(['restore', '--target', target, '--json'], { ...env, HOME: '/tmp' }, { uid: 65534, gid: 65534, bin: cliForEveryone() });
    expect(r.status, r.stderr).toBe(3);
    const j = JSON.parse(r.stdout);
    const missed = [{ path: path.join(target, src, 'null'), what: 'character device', reason: expect.stringMatching(/as root/) }];
    if (xattrs) missed.push({ path: path.join(target, src, 'f'), what: 'extended attribute trusted.root', reason: expect.stringMatching(/not permitted/i) });
    expect(j.notRestored).toEqual(expect.arrayContaining(missed));
    expect(j.notRestored).toHaveLength(missed.length);
    expect(j.specials).toBe(1);
    expect(fs.lstatSync(path.join(target, src, 'pipe')).isFIFO()).toBe(true);
    expect(fs.existsSync(path.join(target, src, 'null'))).toBe(false);
    if (xattrs) expect(attrsOf(path.join(target, src, 'f'))).toEqual({ 'user.kept': Buffer.from('yes').toString('hex') });
    // Without --json, each is named on standard error.
    const again = tempDir();
    fs.chownSync(again, 65534, 65534);
    const t = strata(['restore', '--target', again], { ...env, HOME: '/tmp' }, { uid: 65534, gid: 65534, bin: cliForEveryone() });
    expect(t.status).toBe(3);
    expect(t.stderr).toContain(`${path.join(again, src, 'null')}: character device not restored: device nodes are made only when restoring as root`);
    expect(t.stdout).toMatch(/1 FIFO or device node.*not restored/);
  });

  it('a directory of files only, reused unread while its stats stand, still sees an attribute set, removed or left out', () => {
    const src = tempDir();
    if (!takesUserXattrs(src)) return void console.warn(`skipped: ${src} takes no user.* extended attributes`);
    const { env } = initCliRepo();
    const dir = path.join(src, 'files');
    fs.mkdirSync(dir);
    for (let i = 0; i < 5; i++) fs.writeFileSync(path.join(dir, `f${i}`), `file ${i}\n`.repeat(100));
    xattr.setAttributeSync(path.join(dir, 'f1'), 'user.one', Buffer.from('1'));
    const names = () => Object.fromEntries((JSON.parse(ok(['ls', '--json', dir], env).stdout).entries as { name: string; xattrs?: string[] }[]).map((e) => [e.name, e.xattrs ?? []]));
    ok(['backup', src], env);
    expect(names()).toMatchObject({ f1: ['user.one'], f2: [] });
    // Nothing changed: the same tree.
    const again = JSON.parse(ok(['backup', src, '--json'], env).stdout);
    expect(again).toMatchObject({ filesUnchanged: 5, filesNew: 0, filesChanged: 0 });
    expect(names()).toMatchObject({ f1: ['user.one'], f2: [] });
    // An attribute set on one file and removed from another: their ctimes moved, the directory is read again.
    xattr.setAttributeSync(path.join(dir, 'f2'), 'user.two', Buffer.from('2'));
    xattr.removeAttributeSync(path.join(dir, 'f1'), 'user.one');
    ok(['backup', src], env);
    expect(names()).toMatchObject({ f1: [], f2: ['user.two'] });
    // Left out, then read again, the stats unchanged all along.
    ok(['backup', src, '--no-xattrs'], env);
    expect(names()).toMatchObject({ f1: [], f2: [] });
    ok(['backup', src], env);
    expect(names()).toMatchObject({ f1: [], f2: ['user.two'] });
  });

  it("names that are not UTF-8: attributes below such a directory, of it, and of a file or FIFO of such a name round-trip; a symlink of such a name is said once and never read through", () => {
    const src = tempDir();
    if (!takesUserXattrs(src)) return void console.warn(`skipped: ${src} takes no user.* extended attributes`);
    const { env } = initCliRepo();
    // Latin-1 "café" as a directory, a file of a UTF-8 name in it, a file, a FIFO and a symlink of Latin-1 names.
    const bytes = (...parts: (string | Buffer)[]) => Buffer.concat(parts.map((x) => (typeof x === 'string' ? Buffer.from(x) : x)));
    const dir = bytes(src, '/caf', Buffer.of(0xe9));
    fs.mkdirSync(dir);
    fs.writeFileSync(bytes(dir, '/inner.txt'), 'inner');
    // The binding takes text: attributes are set here under names of text, which are then renamed (attributes go along).
    const named = (name: Buffer, make: (p: string) => void, attrs: Record<string, string>) => {
      const p = path.join(src, 'ascii-name');
      make(p);
      for (const [n, v] of Object.entries(attrs)) xattr.setAttributeSync(p, n, Buffer.from(v));
      fs.renameSync(p, bytes(src, '/', name));
    };
    named(Buffer.of(0x66, 0xff), (p) => fs.writeFileSync(p, 'odd'), { 'user.odd': 'of a file of a Latin-1 name', 'user.empty': '' });
    if (asRoot) named(Buffer.of(0x70, 0xfe), (p) => execFileSync('mkfifo', [p]), { 'trusted.fifo': 'of a FIFO' });
    // A symlink of a Latin-1 name to a file with an attribute of its own: the link's entry must not take it.
    fs.writeFileSync(path.join(src, 'target.txt'), 'target');
    xattr.setAttributeSync(path.join(src, 'target.txt'), 'user.target', Buffer.from('of the target'));
    fs.symlinkSync('target.txt', bytes(src, '/l', Buffer.of(0xfd)));
    const fd = fs.openSync(dir, 'r');
    try {
      xattr.setAttributeSync(`/proc/self/fd/${fd}/.`, 'user.dir', Buffer.from('of the directory'));
      xattr.setAttributeSync(`/proc/self/fd/${fd}/inner.txt`, 'user.file', Buffer.from('of the file'));
    } finally {
      fs.closeSync(fd);
    }
    const b = strata(['backup', src, '--json'], env);
    expect(b.status, b.stderr).toBe(0);
    expect(JSON.parse(b.stdout).warnings).toEqual([`extended attributes not read of 1 entry whose names are not UTF-8: a symlink of such a name is never read through a descriptor, and anything else needs attr's getfattr (${src}/l\\xfd)`]);
    const listed = (JSON.parse(ok(['ls', src, '--json'], env).stdout) as { entries: { name: string; xattrs?: string[] }[] }).entries;
    const attrNames = (name: string) => listed.find((e) => e.name === name)?.xattrs ?? [];
    expect(attrNames('f\udcff')).toEqual(['user.empty', 'user.odd']);
    expect(attrNames('l\udcfd')).toEqual([]);
    expect(attrNames('target.txt')).toEqual(['user.target']);
    const target = tempDir();
    const r = JSON.parse(ok(['restore', '--target', target, '--json'], env).stdout);
    expect(r).toMatchObject({ xattrs: 5 + (asRoot ? 1 : 0), notRestored: [] });
    const back = fs.openSync(bytes(target, src, '/caf', Buffer.of(0xe9)), 'r');
    try {
      expect(attrsOf(`/proc/self/fd/${back}/.`)).toEqual({ 'user.dir': Buffer.from('of the directory').toString('hex') });
      expect(attrsOf(`/proc/self/fd/${back}/inner.txt`)).toEqual({ 'user.file': Buffer.from('of the file').toString('hex') });
    } finally {
      fs.closeSync(back);
    }
    expect(fs.readFileSync(bytes(target, src, '/f', Buffer.of(0xff)), 'utf8')).toBe('odd');
    // Read back under a second name of text (a hard link made here, by the test).
    const textName = (name: Buffer) => {
      const p = path.join(tempDir(), 'x');
      fs.linkSync(bytes(target, src, '/', name), p);
      return p;
    };
    const hex = (v: string) => Buffer.from(v).toString('hex');
    expect(attrsOf(textName(Buffer.of(0x66, 0xff)))).toEqual({ 'user.empty': '', 'user.odd': hex('of a file of a Latin-1 name') });
    if (asRoot) {
      expect(fs.lstatSync(bytes(target, src, '/p', Buffer.of(0xfe))).isFIFO()).toBe(true);
      expect(attrsOf(textName(Buffer.of(0x70, 0xfe)))).toMatchObject({ 'trusted.fifo': hex('of a FIFO') });
    }
    // The link is a link, and its target has only its own attribute.
    expect(fs.readlinkSync(bytes(target, src, '/l', Buffer.of(0xfd)), 'utf8')).toBe('target.txt');
    expect(attrsOf(path.join(target, src, 'target.txt'))).toEqual({ 'user.target': hex('of the target') });
  });

  it('a symlink whose name is not UTF-8 never has attributes read or set through it; a file of such a name has them read and set', () => {
    const dir = tempDir();
    if (!takesUserXattrs(dir)) return void console.warn(`skipped: ${dir} takes no user.* extended attributes`);
    fs.writeFileSync(path.join(dir, 'target'), 't');
    xattr.setAttributeSync(path.join(dir, 'target'), 'user.own', Buffer.from('own'));
    fs.symlinkSync('target', Buffer.concat([Buffer.from(`${dir}/l`), Buffer.of(0xfd)]));
    // Names as strata holds them: a byte that is not UTF-8 as a lone surrogate (util/names.ts).
    expect(readXattrs(`${dir}/l\udcfd`, false)).toEqual({ attrs: [], problems: [], unnamed: true });
    expect(writeXattrs(`${dir}/l\udcfd`, false, [['user.evil', Buffer.from('x')]])).toHaveLength(1);
    expect(attrsOf(path.join(dir, 'target'))).toEqual({ 'user.own': Buffer.from('own').toString('hex') });
    fs.writeFileSync(Buffer.concat([Buffer.from(`${dir}/f`), Buffer.of(0xff)]), 'f');
    expect(writeXattrs(`${dir}/f\udcff`, false, [['user.a', Buffer.of(0, 0x3d, 0xff)], ['user.b=c', Buffer.from('with = in its name')]])).toEqual([]);
    expect(readXattrs(`${dir}/f\udcff`, false)).toEqual({ attrs: [['user.a', Buffer.of(0, 0x3d, 0xff)], ['user.b=c', Buffer.from('with = in its name')]], problems: [] });
  });

  it.skipIf(!asRoot)('a target without extended attributes (ramfs) names and counts each refused, exit 3; a source over the bound keeps what fits, exit 3 (needs root to mount ramfs and tmpfs)', () => {
    const mounts: string[] = [];
    const mountAt = (type: string): string | undefined => {
      const dir = tempDir();
      try {
        execFileSync('mount', ['-t', type, 'none', dir], { stdio: 'ignore' });
      } catch {
        return undefined;
      }
      mounts.push(dir);
      return dir;
    };
    try {
      const src = mountAt('tmpfs');
      const target = mountAt('ramfs');
      if (!src || !target) return void console.warn('skipped: cannot mount tmpfs and ramfs here (no CAP_SYS_ADMIN)');
      const { env } = initCliRepo();
      const f = path.join(src, 'f');
      fs.writeFileSync(f, 'f');
      // Two values of 40,000 bytes: the first (in name order) fits in an entry's 64 KiB, the second does not.
      try {
        xattr.setAttributeSync(f, 'user.a', Buffer.alloc(40_000, 1));
        xattr.setAttributeSync(f, 'user.b', Buffer.alloc(40_000, 2));
      } catch {
        return void console.warn('skipped: this tmpfs takes no user.* attributes of 40,000 bytes');
      }
      xattr.setAttributeSync(f, 'user.c', Buffer.from('small'));
      execFileSync('mkfifo', [path.join(src, 'pipe')]);
      const b = strata(['backup', src, '--json'], env);
      expect(b.status, b.stderr).toBe(3);
      const j = JSON.parse(b.stdout);
      expect(j.xattrsLeftOut).toBe(1);
      expect(j.warnings).toEqual([`${f}: extended attribute user.b left out: the attributes of one entry are kept up to 64 KiB`]);
      expect(JSON.parse(ok(['ls', '--json', f], env).stdout).entries[0].xattrs).toEqual(['user.a', 'user.c']);

      // Into ramfs, which keeps no extended attributes: the file and the FIFO are made, the attributes named.
      const r = strata(['restore', '--target', target, '--json'], env);
      expect(r.status, r.stderr).toBe(3);
      const rj = JSON.parse(r.stdout);
      const at = path.join(target, f);
      expect(rj.notRestored).toEqual(['user.a', 'user.c'].map((name) => ({ path: at, what: `extended attribute ${name}`, reason: expect.stringMatching(/not supported/i) })));
      expect(rj).toMatchObject({ files: 1, specials: 1, xattrs: 0 });
      expect(fs.readFileSync(at, 'utf8')).toBe('f');
      expect(fs.lstatSync(path.join(target, src, 'pipe')).isFIFO()).toBe(true);
      // ramfs is a source without attributes too: nothing to warn about.
      ok(['backup', target], env);
      // And --no-xattrs asks for none: exit 0.
      const again = strata(['restore', '--target', target, '--no-xattrs'], env);
      expect(again.status, again.stderr).toBe(0);
    } finally {
      for (const m of mounts.reverse()) execFileSync('umount', [m]);
    }
  });
});

function* walk(dir: string): Generator<string> {
  yield dir;
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) yield* walk(p);
    else yield p;
  }
}
