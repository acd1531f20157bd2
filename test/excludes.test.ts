/**
 * What backup leaves out, and how: exclude files, case-insensitive patterns,
 * marker files and cache directories, a size limit, other file systems, and
 * paths read from a file. Real trees, the CLI end to end.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { initCliRepo, strata, tempDir } from './helpers.js';

/** Every file path the latest snapshot holds under `root`. */
function listed(env: NodeJS.ProcessEnv, root: string): string[] {
  const r = strata(['ls', root, '-R'], env);
  expect(r.status, r.stderr).toBe(0);
  return r.stdout
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => path.relative(root, l))
    .sort();
}

function ok(args: string[], env: NodeJS.ProcessEnv, input?: string) {
  const r = strata(args, env, input === undefined ? {} : { input });
  expect(r.status, `${args.join(' ')}: ${r.stderr}`).toBe(0);
  return r;
}

/** A tree: a.log, B.LOG, keep.txt, big.bin (4 KiB), cache/ (tagged), nobackup/ (marker), fake-cache/ (wrong tag). */
function tree(): string {
  const src = tempDir();
  fs.writeFileSync(path.join(src, 'a.log'), 'a');
  fs.writeFileSync(path.join(src, 'B.LOG'), 'b');
  fs.writeFileSync(path.join(src, 'keep.txt'), 'keep');
  fs.writeFileSync(path.join(src, 'big.bin'), Buffer.alloc(4096, 7));
  fs.mkdirSync(path.join(src, 'cache'));
  fs.writeFileSync(path.join(src, 'cache', 'CACHEDIR.TAG'), 'Signature: 8a477f597d28d172789f06886806bc55\n# a cache\n');
  fs.writeFileSync(path.join(src, 'cache', 'blob'), 'x');
  fs.mkdirSync(path.join(src, 'fake-cache'));
  fs.writeFileSync(path.join(src, 'fake-cache', 'CACHEDIR.TAG'), 'not a signature');
  fs.writeFileSync(path.join(src, 'fake-cache', 'blob'), 'y');
  fs.mkdirSync(path.join(src, 'nobackup'));
  fs.writeFileSync(path.join(src, 'nobackup', '.nobackup'), '');
  fs.writeFileSync(path.join(src, 'nobackup', 'secret'), 's');
  return src;
}

describe('backup: what it leaves out', () => {
  it('--exclude-file and --iexclude-file (comments and blank lines skipped), --iexclude ignoring case', () => {
    const { env } = initCliRepo();
    const src = tree();
    const list = path.join(tempDir(), 'excludes');
    fs.writeFileSync(list, '# logs\n\n*.log\n  keep.txt  \n');
    ok(['backup', src, '--exclude-file', list], env);
    // *.log is case-sensitive: B.LOG stays.
    expect(listed(env, src)).toEqual(['B.LOG', 'big.bin', 'cache', 'cache/CACHEDIR.TAG', 'cache/blob', 'fake-cache', 'fake-cache/CACHEDIR.TAG', 'fake-cache/blob', 'nobackup', 'nobackup/.nobackup', 'nobackup/secret']);
    ok(['backup', src, '--iexclude', '*.LOG'], env);
    expect(listed(env, src).filter((p) => p.endsWith('.log') || p.endsWith('.LOG'))).toEqual([]);
    fs.writeFileSync(list, 'KEEP.TXT\n');
    ok(['backup', src, '--iexclude-file', list], env);
    expect(listed(env, src)).not.toContain('keep.txt');
    const missing = strata(['backup', src, '--exclude-file', path.join(src, 'no-such-file')], env);
    expect(missing.status).toBe(2);
    expect(missing.stderr).toMatch(/--exclude-file: cannot read .*no-such-file \(ENOENT\)/);
  });

  it('--exclude-if-present and --exclude-caches leave out marked directories (a wrong tag is not a cache); counted in --json', () => {
    const { env } = initCliRepo();
    const src = tree();
    const r = ok(['backup', src, '--exclude-if-present', '.nobackup', '--exclude-caches', '--json'], env);
    expect(JSON.parse(r.stdout)).toMatchObject({ dirsExcluded: 2, filesExcluded: 0 });
    const files = listed(env, src);
    expect(files).not.toContain('cache');
    expect(files).not.toContain('nobackup');
    expect(files).toContain('fake-cache/blob');
    // NAME:TEXT: only a marker that starts with TEXT counts.
    ok(['backup', src, '--exclude-if-present', 'CACHEDIR.TAG:not a'], env);
    expect(listed(env, src)).not.toContain('fake-cache');
    expect(listed(env, src)).toContain('cache/blob');
    expect(strata(['backup', src, '--exclude-if-present', 'a/b'], env).status).toBe(2);
  });

  it('--exclude-larger-than: larger files are left out, and one the parent had is gone from the new snapshot', () => {
    const { env } = initCliRepo();
    const src = tree();
    // A directory of files only, which an unchanged backup takes whole from the parent when its stats match.
    fs.mkdirSync(path.join(src, 'files'));
    fs.writeFileSync(path.join(src, 'files', 'small'), 's');
    fs.writeFileSync(path.join(src, 'files', 'large'), Buffer.alloc(8192, 1));
    ok(['backup', src], env);
    expect(listed(env, src)).toContain('big.bin');
    expect(listed(env, src)).toContain('files/large');
    const r = ok(['backup', src, '--exclude-larger-than', '1K', '--json'], env);
    expect(JSON.parse(r.stdout)).toMatchObject({ filesExcluded: 2 });
    expect(listed(env, src)).not.toContain('big.bin');
    expect(listed(env, src)).not.toContain('files/large');
    expect(listed(env, src)).toContain('files/small');
    expect(strata(['cat', path.join(src, 'big.bin')], env).status).not.toBe(0);
    expect(strata(['cat', path.join(src, 'keep.txt')], env).stdout).toBe('keep');
    // A file exactly at the limit stays.
    ok(['backup', src, '--exclude-larger-than', '4K'], env);
    expect(listed(env, src)).toContain('big.bin');
    expect(listed(env, src)).not.toContain('files/large');
    expect(strata(['backup', src, '--exclude-larger-than', 'lots'], env).status).toBe(2);
  });

  it('--files-from (a file, or - for standard input) adds paths; no path at all is a usage error', () => {
    const { env } = initCliRepo();
    const src = tree();
    const list = path.join(tempDir(), 'paths');
    fs.writeFileSync(list, `# what to keep\n${path.join(src, 'keep.txt')}\n\n${path.join(src, 'cache')}\n`);
    ok(['backup', '--files-from', list], env);
    expect(listed(env, src)).toEqual(['cache', 'cache/CACHEDIR.TAG', 'cache/blob', 'keep.txt']);
    ok(['backup', '--files-from', '-', path.join(src, 'a.log')], env, `${path.join(src, 'B.LOG')}\n`);
    const latest = strata(['ls', '-R', src], env).stdout;
    expect(latest).toContain('B.LOG');
    expect(latest).toContain('a.log');
    const none = strata(['backup'], env);
    expect(none.status).toBe(2);
    expect(none.stderr).toMatch(/at least one PATH/);
  });

  it('-x stores a mount point below a source as an empty directory', (ctx) => {
    const src = tree();
    const mnt = path.join(src, 'mnt');
    fs.mkdirSync(mnt);
    const mounted = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', mnt]);
    if (mounted.status !== 0) {
      ctx.skip(`mounting a tmpfs needs root (mount said: ${mounted.stderr.toString().trim()})`);
      return;
    }
    try {
      fs.writeFileSync(path.join(mnt, 'elsewhere'), 'on another file system');
      const { env } = initCliRepo();
      ok(['backup', src], env);
      expect(listed(env, src)).toContain('mnt/elsewhere');
      ok(['backup', src, '--one-file-system'], env);
      const files = listed(env, src);
      expect(files).toContain('mnt');
      expect(files).not.toContain('mnt/elsewhere');
      expect(files).toContain('keep.txt');
    } finally {
      spawnSync('umount', [mnt]);
    }
  });
});
