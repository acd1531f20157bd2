/**
 * Hard links: names of one file are backed up as such and restored as one
 * file again (one inode), through the CLI; a file of one name stays apart.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { initCliRepo, strata, tempDir } from './helpers.js';

function ok(args: string[], env: NodeJS.ProcessEnv) {
  const r = strata(args, env);
  expect(r.status, `${args.join(' ')}: ${r.stderr}`).toBe(0);
  return r;
}

describe('hard links', () => {
  it('names of one file come back as one file, at every snapshot, and a file of one name stays apart', () => {
    const { env } = initCliRepo();
    const src = tempDir();
    fs.mkdirSync(path.join(src, 'sub'));
    fs.writeFileSync(path.join(src, 'a'), 'shared bytes\n'.repeat(1000));
    fs.linkSync(path.join(src, 'a'), path.join(src, 'sub', 'b'));
    fs.linkSync(path.join(src, 'a'), path.join(src, 'c'));
    fs.writeFileSync(path.join(src, 'd'), 'shared bytes\n'.repeat(1000));
    fs.writeFileSync(path.join(src, 'e'), 'pair');
    fs.linkSync(path.join(src, 'e'), path.join(src, 'sub', 'f'));
    const first = JSON.parse(ok(['backup', src, '--json'], env).stdout).snapshot;
    // Written through one name: every name has the new bytes.
    fs.appendFileSync(path.join(src, 'c'), 'appended through c\n');
    ok(['backup', src], env);

    const check = (target: string, want: string) => {
      const at = (n: string) => path.join(target, src, n);
      const ino = (n: string) => fs.statSync(at(n)).ino;
      expect(ino('sub/b')).toBe(ino('a'));
      expect(ino('c')).toBe(ino('a'));
      expect(fs.statSync(at('a')).nlink).toBe(3);
      expect(ino('sub/f')).toBe(ino('e'));
      expect(ino('d')).not.toBe(ino('a'));
      expect(ino('e')).not.toBe(ino('a'));
      expect(fs.statSync(at('d')).nlink).toBe(1);
      for (const n of ['a', 'sub/b', 'c']) expect(fs.readFileSync(at(n), 'utf8')).toBe(want);
      expect(fs.readFileSync(at('d'), 'utf8')).toBe('shared bytes\n'.repeat(1000));
      expect(fs.readFileSync(at('sub/f'), 'utf8')).toBe('pair');
    };
    const latest = tempDir();
    const r = JSON.parse(ok(['restore', '--target', latest, '--json'], env).stdout);
    expect(r.files).toBe(6);
    check(latest, 'shared bytes\n'.repeat(1000) + 'appended through c\n');
    const old = tempDir();
    ok(['restore', '--at', first, '--target', old], env);
    check(old, 'shared bytes\n'.repeat(1000));
    // Restored again over itself: the names stay one file.
    ok(['restore', '--target', latest], env);
    check(latest, 'shared bytes\n'.repeat(1000) + 'appended through c\n');
  });
});
