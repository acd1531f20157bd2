/** find PATTERN across snapshots, and stats. */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { initCliRepo, Rng, strata, tempDir } from './helpers.js';

describe('find and stats', () => {
  let env: NodeJS.ProcessEnv;
  let src: string;
  const ids: string[] = [];
  const data = new Rng(3).bytes(200_000);

  beforeAll(() => {
    ({ env } = initCliRepo(['--chunk-avg', '4K']));
    src = path.join(tempDir(), 'src');
    fs.mkdirSync(path.join(src, 'docs'), { recursive: true });
    fs.writeFileSync(path.join(src, 'docs', 'a.txt'), 'a');
    fs.writeFileSync(path.join(src, 'big.bin'), data);
    const backup = (time: string) => {
      const r = strata(['backup', src, '--quiet', '--time', time], env);
      expect(r.status, r.stderr).toBe(0);
      ids.push(r.stdout.trim());
    };
    backup('2026-04-01T00:00:00Z');
    fs.writeFileSync(path.join(src, 'docs', 'b.txt'), 'bb');
    // The same content twice: stored once.
    fs.writeFileSync(path.join(src, 'copy.bin'), data);
    backup('2026-04-02T00:00:00Z');
  });

  const json = <T>(...args: string[]): T => {
    const r = strata([...args, '--json'], env);
    expect(r.status, r.stderr).toBe(0);
    return JSON.parse(r.stdout) as T;
  };

  it('find matches names (and paths with "/") in the latest snapshot, --at one, or --all', () => {
    type F = { snapshot: string; path: string; size: number; type: string; mtime: string }[];
    expect(json<F>('find', '*.txt').map((f) => f.path)).toEqual([path.join(src, 'docs/a.txt'), path.join(src, 'docs/b.txt')]);
    expect(json<F>('find', '*.txt', '--at', ids[0]!).map((f) => f.path)).toEqual([path.join(src, 'docs/a.txt')]);
    const all = json<F>('find', 'a.txt', '--all');
    expect(all.map((f) => f.snapshot)).toEqual(ids);
    expect(all[0]).toMatchObject({ type: 'file', size: 1 });
    expect(json<F>('find', 'docs/*.txt', '--all')).toHaveLength(3);
    const big = json<F>('find', '*.bin')[0]!;
    expect(big).toMatchObject({ path: path.join(src, 'big.bin'), size: data.length });
    expect(Math.abs(Date.parse(big.mtime) - fs.statSync(path.join(src, 'big.bin')).mtimeMs)).toBeLessThan(1);
    const human = strata(['find', 'b.txt'], env);
    expect(human.stdout).toMatch(new RegExp(`^${ids[1]!.slice(0, 8)} .*docs/b\\.txt\\n1 match\\n$`));
    expect(strata(['find', 'x', '--all', '--at', 'latest'], env).status).toBe(2);
  });

  it('stats counts files and bytes per snapshot, blocks once, and the deduplication ratio', () => {
    type S = { snapshots: number; files: number; bytes: number; uniqueBlocks: number; uniqueBytes: number; repositoryBytes: number; dedupRatio: number };
    const one = json<S>('stats', '--at', ids[0]!);
    expect(one).toMatchObject({ snapshots: 1, files: 2, bytes: data.length + 1, uniqueBytes: data.length + 1 });
    const all = json<S>('stats');
    expect(all).toMatchObject({ snapshots: 2, files: 6, bytes: 3 * data.length + 1 + 1 + 2, uniqueBytes: data.length + 3, uniqueBlocks: one.uniqueBlocks + 1 });
    expect(all.dedupRatio).toBeCloseTo(all.bytes / all.uniqueBytes, 2);
    expect(all.repositoryBytes).toBeGreaterThan(0);
    expect(strata(['stats'], env).stdout).toMatch(/deduplication: +3\.00x/);
  });
});
