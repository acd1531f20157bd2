/** tag --add/--remove/--set (a superseding sealed record, kept by rebuild-catalog and prune), and what snapshots shows as Added. */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { cliEnv, initCliRepo, strata, tempDir } from './helpers.js';
import { serve, token } from './server-helpers.js';

describe('tag', () => {
  it('adds, removes and sets tags; rebuild-catalog and prune keep the new ones', () => {
    const { env } = initCliRepo();
    const src = path.join(tempDir(), 'src');
    fs.mkdirSync(src);
    fs.writeFileSync(path.join(src, 'f'), 'f');
    const ids = ['2026-07-01T00:00:00Z', '2026-07-02T00:00:00Z'].map((t, i) => {
      const r = strata(['backup', src, '--quiet', '--time', t, ...(i === 0 ? ['--tag', 'old'] : [])], env);
      expect(r.status, r.stderr).toBe(0);
      return r.stdout.trim();
    });
    const tags = () => (JSON.parse(strata(['snapshots', '--json'], env).stdout) as { tags: string[] }[]).map((s) => s.tags);
    const tag = (...args: string[]) => {
      const r = strata(['tag', ...args, '--json'], env);
      expect(r.status, r.stderr).toBe(0);
      return JSON.parse(r.stdout) as { changed: { id: string; tags: string[] }[]; unchanged: string[] };
    };
    expect(tag('--add', 'a,b', ids[0]!.slice(0, 8), ids[1]!).changed).toEqual([
      { id: ids[0], tags: ['old', 'a', 'b'] },
      { id: ids[1], tags: ['a', 'b'] },
    ]);
    expect(tag('--remove', 'old', '--remove', 'a', ids[0]!).changed[0]!.tags).toEqual(['b']);
    expect(tag('--add', 'b', ids[0]!).unchanged).toEqual([ids[0]]);
    expect(tag('--set', 'keep', ids[1]!).changed[0]!.tags).toEqual(['keep']);
    expect(tags()).toEqual([['b'], ['keep']]);
    // Filters see the new tags.
    expect(strata(['snapshots', '--tag', 'keep', '--json'], env).stdout).toContain(ids[1]);
    expect(strata(['rebuild-catalog', '--quiet'], env).status).toBe(0);
    expect(tags()).toEqual([['b'], ['keep']]);
    expect(strata(['prune', '--quiet'], env).status).toBe(0);
    expect(strata(['check'], env).status).toBe(0);
    expect(strata(['rebuild-catalog', '--quiet'], env).status).toBe(0);
    expect(tags()).toEqual([['b'], ['keep']]);
    expect(tag('--set', '', ids[1]!).changed[0]!.tags).toEqual([]);
    expect(strata(['tag', ids[0]!], env).status).toBe(2);
    expect(strata(['tag', '--add', 'x', 'ffffffff'], env).status).toBe(1);
  });
});

describe('snapshots: Added', () => {
  it("is what the snapshot's backup added, and stays so when an older snapshot is forgotten", () => {
    const { env } = initCliRepo();
    const src = path.join(tempDir(), 'src');
    fs.mkdirSync(src);
    fs.writeFileSync(path.join(src, 'f'), 'x'.repeat(100_000));
    for (const t of ['2026-08-01T00:00:00Z', '2026-08-02T00:00:00Z']) expect(strata(['backup', src, '--quiet', '--time', t], env).status).toBe(0);
    const added = () => (JSON.parse(strata(['snapshots', '--json'], env).stdout) as { bytesAdded: number }[]).map((s) => s.bytesAdded);
    const before = added();
    expect(before[0]).toBeGreaterThan(0);
    expect(strata(['forget', '--keep-last', '1', '--prune', '--quiet'], env).status).toBe(0);
    expect(added()).toEqual([before[1]]);
  });
});

describe('tag through a server', () => {
  it('works through strata serve (admin token): the server points the snapshot at the new record, and the directory sees it', async () => {
    const { repo, env } = initCliRepo();
    const src = path.join(tempDir(), 'src');
    fs.mkdirSync(src);
    fs.writeFileSync(path.join(src, 'f'), 'f');
    const r = strata(['backup', src, '--quiet', '--tag', 'old'], env);
    expect(r.status, r.stderr).toBe(0);
    const id = r.stdout.trim();
    const s = await serve(repo);
    const remote = cliEnv(s.url, { STRATA_TOKEN: token(repo, 'ops', 'admin'), STRATA_CACHE_DIR: path.join(tempDir(), 'cache'), STRATA_PASSWORD: env.STRATA_PASSWORD });
    const t = strata(['tag', '--add', 'new', '--remove', 'old', id, '--json'], remote);
    expect(t.status, t.stderr).toBe(0);
    expect((JSON.parse(t.stdout) as { changed: { tags: string[] }[] }).changed[0]!.tags).toEqual(['new']);
    const tagsOf = (e: NodeJS.ProcessEnv) => (JSON.parse(strata(['snapshots', '--json'], e).stdout) as { tags: string[] }[]).map((x) => x.tags);
    expect(tagsOf(remote)).toEqual([['new']]);
    expect(tagsOf(env)).toEqual([['new']]);
    // An append token may not: tags are a maintenance change.
    const append = cliEnv(s.url, { STRATA_TOKEN: token(repo, 'writer', 'append'), STRATA_CACHE_DIR: path.join(tempDir(), 'cache'), STRATA_PASSWORD: env.STRATA_PASSWORD });
    const refused = strata(['tag', '--add', 'x', id], append);
    expect(refused.status).not.toBe(0);
    expect(refused.stderr).toMatch(/admin/);
    // The sealed truth has the new revision: a rebuilt catalog keeps it.
    expect(strata(['rebuild-catalog', '--quiet'], env).status).toBe(0);
    expect(tagsOf(env)).toEqual([['new']]);
  });
});
