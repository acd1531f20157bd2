/**
 * Restore into a target that already holds things: --overwrite policies, a
 * directory in the way of a file, --delete, --dry-run, --include/--exclude,
 * --strip, and progress within a file.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { backup } from '../src/engine/backup.js';
import { restore } from '../src/engine/restore.js';
import { findSnapshot } from '../src/engine/snapshot.js';
import { initCliRepo, makeRepo, Rng, strata, tempDir } from './helpers.js';

interface Result {
  files: number;
  dirs: number;
  skipped: number;
  deleted: number;
  conflicts: { path: string; reason: string }[];
  actions?: { action: string; path: string; type: string }[];
  dryRun: boolean;
}

describe('restore into a target that already holds things', () => {
  let env: NodeJS.ProcessEnv;
  let src: string;
  const T = new Date('2026-01-02T03:04:05Z');

  beforeAll(() => {
    ({ env } = initCliRepo());
    src = path.join(tempDir(), 'src');
    fs.mkdirSync(path.join(src, 'd', 'sub'), { recursive: true });
    fs.mkdirSync(path.join(src, 'logs'));
    fs.writeFileSync(path.join(src, 'a.txt'), 'alpha');
    fs.writeFileSync(path.join(src, 'd', 'b.txt'), 'bravo');
    fs.writeFileSync(path.join(src, 'd', 'sub', 'c.log'), 'charlie');
    fs.writeFileSync(path.join(src, 'logs', 'x.log'), 'x-ray');
    for (const f of ['a.txt', 'd/b.txt', 'd/sub/c.log', 'logs/x.log']) fs.utimesSync(path.join(src, f), T, T);
    const r = strata(['backup', src, '--quiet'], env);
    expect(r.status, r.stderr).toBe(0);
  });

  const run = (target: string, ...args: string[]) => strata(['restore', '--target', target, ...args], env);
  const json = (target: string, ...args: string[]) => {
    const r = run(target, '--json', ...args);
    expect([0, 3], r.stderr).toContain(r.status);
    return { status: r.status, r: JSON.parse(r.stdout) as Result };
  };
  const at = (target: string, rel: string) => path.join(target, src, rel);
  const fresh = () => {
    const t = path.join(tempDir(), 't');
    expect(run(t).status).toBe(0);
    return t;
  };

  it('a non-empty directory where a file belongs is left with a warning and exit 3; --delete replaces it', () => {
    const t = fresh();
    fs.rmSync(at(t, 'a.txt'));
    fs.mkdirSync(at(t, 'a.txt'));
    fs.writeFileSync(at(t, 'a.txt/precious'), 'keep me');
    const r = run(t);
    expect(r.status).toBe(3);
    expect(r.stderr).toMatch(/a\.txt: a non-empty directory is where the snapshot has a file; left as it is/);
    expect(fs.readFileSync(at(t, 'a.txt/precious'), 'utf8')).toBe('keep me');
    expect(fs.readFileSync(at(t, 'd/b.txt'), 'utf8')).toBe('bravo');
    const j = json(t);
    expect(j.status).toBe(3);
    expect(j.r.conflicts).toEqual([{ path: at(t, 'a.txt'), reason: expect.stringMatching(/non-empty directory/) }]);
    // An empty directory in the way holds nothing to lose: it is replaced.
    fs.rmSync(at(t, 'd/b.txt'));
    fs.mkdirSync(at(t, 'd/b.txt'));
    expect(run(t, '--delete').status).toBe(0);
    expect(fs.readFileSync(at(t, 'a.txt'), 'utf8')).toBe('alpha');
    expect(fs.readFileSync(at(t, 'd/b.txt'), 'utf8')).toBe('bravo');
  });

  it('--overwrite never keeps what is there; if-changed keeps files of the same size and mtime; always replaces', () => {
    const t = fresh();
    // Same size and mtime, other content: if-changed takes it for unchanged (content is not read).
    fs.writeFileSync(at(t, 'a.txt'), 'ALPHA');
    fs.utimesSync(at(t, 'a.txt'), T, T);
    fs.writeFileSync(at(t, 'd/b.txt'), 'changed and longer');
    const never = json(t, '--overwrite', 'never').r;
    expect(never.skipped).toBe(4);
    expect(fs.readFileSync(at(t, 'd/b.txt'), 'utf8')).toBe('changed and longer');
    const ifChanged = json(t, '--overwrite', 'if-changed').r;
    expect(ifChanged.files).toBe(1);
    expect(ifChanged.skipped).toBe(3);
    expect(fs.readFileSync(at(t, 'a.txt'), 'utf8')).toBe('ALPHA');
    expect(fs.readFileSync(at(t, 'd/b.txt'), 'utf8')).toBe('bravo');
    const always = json(t).r;
    expect(always.files).toBe(4);
    expect(fs.readFileSync(at(t, 'a.txt'), 'utf8')).toBe('alpha');
    expect(run(t, '--overwrite', 'sometimes').status).toBe(2);
  });

  it('--delete removes what the snapshot lacks below the restored paths, not above them nor excluded files', () => {
    const t = fresh();
    fs.writeFileSync(at(t, 'd/extra'), 'x');
    fs.mkdirSync(at(t, 'd/sub/extra-dir'));
    fs.writeFileSync(at(t, 'd/extra.log'), 'x');
    fs.writeFileSync(at(t, 'outside'), 'x');
    const r = json(t, path.join(src, 'd'), '--delete', '--exclude', '*.log').r;
    expect(r.deleted).toBe(2);
    expect(fs.existsSync(at(t, 'd/extra'))).toBe(false);
    expect(fs.existsSync(at(t, 'd/sub/extra-dir'))).toBe(false);
    expect(fs.existsSync(at(t, 'd/extra.log'))).toBe(true);
    expect(fs.existsSync(at(t, 'outside'))).toBe(true);
    // Without --delete nothing goes.
    fs.writeFileSync(at(t, 'd/extra'), 'x');
    expect(json(t).r.deleted).toBe(0);
    expect(fs.existsSync(at(t, 'd/extra'))).toBe(true);
  });

  it('--dry-run lists what would be done and writes nothing', () => {
    const t = fresh();
    fs.rmSync(at(t, 'a.txt'));
    fs.writeFileSync(at(t, 'd/extra'), 'x');
    fs.writeFileSync(at(t, 'd/b.txt'), 'other');
    const before = fs.readdirSync(t, { recursive: true }).sort();
    const { r } = json(t, '--dry-run', '--delete', '--overwrite', 'if-changed');
    expect(r.dryRun).toBe(true);
    expect(r.actions).toEqual([
      { action: 'create', path: at(t, 'a.txt'), type: 'file' },
      { action: 'delete', path: at(t, 'd/extra'), type: 'file' },
      { action: 'replace', path: at(t, 'd/b.txt'), type: 'file' },
    ]);
    expect(fs.readdirSync(t, { recursive: true }).sort()).toEqual(before);
    expect(fs.readFileSync(at(t, 'd/b.txt'), 'utf8')).toBe('other');
    const human = run(t, '--dry-run');
    expect(human.stdout).toMatch(/^would create +.*a\.txt$/m);
    expect(human.stdout).toMatch(/nothing was written\n$/);
    const none = path.join(tempDir(), 'none');
    expect(run(none, '--dry-run').status).toBe(0);
    expect(fs.existsSync(none)).toBe(false);
  });

  it('--include selects entries (with their parents), --exclude leaves them out', () => {
    const t = path.join(tempDir(), 't');
    expect(run(t, '--include', '*.log', '--exclude', 'logs').status).toBe(0);
    expect(fs.readdirSync(path.join(t, src), { recursive: true }).sort()).toEqual(['d', 'd/sub', 'd/sub/c.log']);
    const t2 = path.join(tempDir(), 't');
    expect(run(t2, '--include', 'd').status).toBe(0);
    expect(fs.readdirSync(path.join(t2, src), { recursive: true }).sort()).toEqual(['d', 'd/b.txt', 'd/sub', 'd/sub/c.log']);
  });

  it('--strip restores one path as the target itself, without its absolute prefix', () => {
    const t = path.join(tempDir(), 't');
    expect(run(t, path.join(src, 'd'), '--strip').status).toBe(0);
    expect(fs.readdirSync(t, { recursive: true }).sort()).toEqual(['b.txt', 'sub', 'sub/c.log']);
    const f = path.join(tempDir(), 'f');
    expect(run(f, path.join(src, 'a.txt'), '--strip').status).toBe(0);
    expect(fs.readFileSync(path.join(f, 'a.txt'), 'utf8')).toBe('alpha');
    const two = run(f, path.join(src, 'a.txt'), path.join(src, 'd'), '--strip');
    expect(two.status).toBe(2);
    expect(two.stderr).toMatch(/--strip takes exactly one path/);
  });
});

describe('restore progress', () => {
  it('reports bytes within a large file, and the total of the selection first', async () => {
    const repo = await makeRepo({ chunkAvg: 4096 });
    const src = path.join(tempDir(), 'src');
    fs.mkdirSync(src);
    const data = new Rng(5).bytes(3 * 1024 * 1024);
    fs.writeFileSync(path.join(src, 'big'), data);
    fs.writeFileSync(path.join(src, 'small'), 'small');
    await backup(repo, { paths: [src] });
    const snap = await findSnapshot(repo, { kind: 'latest' });
    for (const paths of [[], [path.join(src, 'big')]]) {
      const totals: number[] = [];
      const seen: { files: number; bytes: number }[] = [];
      await restore(repo, snap, { target: path.join(tempDir(), 't'), paths, onTotal: (b) => totals.push(b), onProgress: (p) => seen.push(p) });
      expect(totals).toEqual([paths.length === 0 ? data.length + 5 : data.length]);
      // Before the large file is done, its bytes so far are reported (the small file, made by a worker, may be done first).
      expect(seen.some((p) => p.files <= 1 && ![0, 5, data.length, data.length + 5].includes(p.bytes))).toBe(true);
    }
    // Files the policy keeps count towards the total as they are passed.
    const target = path.join(tempDir(), 't');
    await restore(repo, snap, { target });
    const seen: { bytes: number; skippedBytes: number }[] = [];
    const r = await restore(repo, snap, { target, overwrite: 'never', onProgress: (p) => seen.push(p) });
    expect(r.skipped).toBe(2);
    expect(seen[seen.length - 1]).toMatchObject({ bytes: 0, skippedBytes: data.length + 5 });
    repo.close();
  });
});

describe('restored times', () => {
  it('come back to the microsecond, also on a whole millisecond (a double of epoch seconds, truncated, used to land a microsecond low)', () => {
    const { env } = initCliRepo();
    const src = tempDir();
    const rng = new Rng(77);
    const want = new Map<string, bigint>();
    for (let i = 0; i < 200; i++) {
      const f = path.join(src, `f${i}`);
      fs.writeFileSync(f, String(i));
      // Whole milliseconds for half of them, any microsecond for the rest.
      const us = 1_765_000_000_000_000n + BigInt(rng.int(1_000_000_000)) * (i % 2 ? 1000n : 1n);
      fs.utimesSync(f, Number(us) / 1e6, Number(us) / 1e6);
      want.set(`f${i}`, fs.statSync(f, { bigint: true }).mtimeNs / 1000n);
    }
    expect(strata(['backup', src], env).status).toBe(0);
    const target = tempDir();
    const r = strata(['restore', '--target', target], env);
    expect(r.status, r.stderr).toBe(0);
    for (const [name, us] of want) expect(fs.statSync(path.join(target, src, name), { bigint: true }).mtimeNs / 1000n, name).toBe(us);
  });
});

describe('restore of a sparse file', () => {
  it('reads no block of zeros: the holes of a disk image cost nothing to fetch', async () => {
    const repo = await makeRepo();
    try {
      const src = tempDir();
      const img = path.join(src, 'disk.img');
      const rng = new Rng(6);
      const want = Buffer.concat([rng.bytes(100_000), Buffer.alloc(6 * 1024 * 1024), rng.bytes(50_000), Buffer.alloc(3 * 1024 * 1024), rng.bytes(10)]);
      fs.writeFileSync(img, want);
      await backup(repo, { paths: [src] });
      const snap = await findSnapshot(repo, { kind: 'latest' });
      repo.blocksRead = 0;
      const target = tempDir();
      const r = await restore(repo, snap, { target });
      const out = path.join(target, img);
      expect(fs.readFileSync(out).equals(want)).toBe(true);
      expect(r.bytes).toBe(want.length);
      // The data's blocks (150 KB in 8-128 KiB blocks, each with at most 2 KiB of zeros), none of the 70-odd blocks of zeros.
      expect(repo.blocksRead).toBeLessThanOrEqual(24);
      expect(fs.statSync(out).blocks * 512).toBeLessThan(2 * 1024 * 1024);
    } finally {
      repo.close();
    }
  });
});
