/**
 * What restic and borg users reach for, through the CLI: tag lists and
 * filters, ranges with sizes, compact dates, init's password checks, partial
 * snapshots, `version`, `diff`.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { initCliRepo, strata, tempDir } from './helpers.js';

interface SnapJson {
  id: string;
  tags: string[];
  host: string;
  paths: string[];
}

describe('tags: comma lists are several tags; in filters a list means all, repeats mean any', () => {
  let env: NodeJS.ProcessEnv;
  const ids: Record<string, string> = {};

  beforeAll(() => {
    ({ env } = initCliRepo());
    const src = path.join(tempDir(), 'src');
    fs.mkdirSync(src);
    fs.writeFileSync(path.join(src, 'f'), 'x');
    const runs: [string, string[]][] = [
      ['ab', ['--tag', 'a,b']],
      ['a_b', ['--tag', 'a', '--tag', 'b']],
      ['a', ['--tag', 'a']],
      ['c', ['--tag', ' c, ,c']],
      ['none', []],
    ];
    runs.forEach(([name, tags], i) => {
      const r = strata(['backup', src, '--quiet', '--time', `2026-03-0${i + 1}T10:00:00Z`, ...tags], env);
      expect(r.status, r.stderr).toBe(0);
      ids[name] = r.stdout.trim();
    });
  });

  const list = (...args: string[]) => {
    const r = strata(['snapshots', '--json', ...args], env);
    expect(r.status, r.stderr).toBe(0);
    return JSON.parse(r.stdout) as SnapJson[];
  };

  it('backup --tag a,b and --tag a --tag b both store two tags', () => {
    const byId = new Map(list().map((s) => [s.id, s.tags]));
    expect(byId.get(ids.ab!)).toEqual(['a', 'b']);
    expect(byId.get(ids.a_b!)).toEqual(['a', 'b']);
    expect(byId.get(ids.a!)).toEqual(['a']);
    expect(byId.get(ids.c!)).toEqual(['c']);
    expect(byId.get(ids.none!)).toEqual([]);
    expect(strata(['snapshots'], env).stdout).toMatch(/\sa,b\s/);
  });

  it('snapshots --tag a,b wants both tags; --tag a --tag c wants either', () => {
    expect(list('--tag', 'a,b').map((s) => s.id)).toEqual([ids.ab, ids.a_b]);
    expect(list('--tag', 'a').map((s) => s.id)).toEqual([ids.ab, ids.a_b, ids.a]);
    expect(list('--tag', 'b', '--tag', 'c').map((s) => s.id)).toEqual([ids.ab, ids.a_b, ids.c]);
    expect(list('--tag', 'a,c')).toEqual([]);
  });

  it('forget --tag considers only matching snapshots; --keep-tag a,b keeps those with both', () => {
    const plan = (...args: string[]) => {
      const r = strata(['forget', '--dry-run', '--json', ...args], env);
      expect(r.status, r.stderr).toBe(0);
      return JSON.parse(r.stdout) as { removed: string[]; groups: { keep: { id: string; reasons: string[] }[] }[] };
    };
    // Only the snapshots tagged a: the newest of them is kept, the two older go; c and untagged are not considered.
    expect(plan('--tag', 'a', '--keep-last', '1').removed.sort()).toEqual([ids.ab, ids.a_b].sort());
    expect(plan('--tag', 'c', '--tag', 'a,b', '--keep-last', '1').removed.sort()).toEqual([ids.ab, ids.a_b].sort());
    const kept = plan('--keep-tag', 'a,b');
    expect(kept.removed.sort()).toEqual([ids.a, ids.c, ids.none].sort());
    expect(kept.groups[0]!.keep.find((k) => k.id === ids.ab)!.reasons).toEqual(['tag a,b']);
    expect(plan('--keep-tag', 'b', '--keep-tag', 'c').removed.sort()).toEqual([ids.a, ids.none].sort());
  });
});
