/**
 * What restic and borg users reach for, through the CLI: tag lists and
 * filters, ranges with sizes, compact dates, init's password checks, partial
 * snapshots, `version`, `diff`.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { FORMAT_VERSION } from '../src/repo/config.js';
import { BIN, cliEnv, initCliRepo, ROOT, Rng, strata, tempDir } from './helpers.js';

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

describe('ranges with sizes and START+LENGTH', () => {
  it('cat --range 1M+4K and 1K-2K read those bytes; 1M+0 is refused', () => {
    const { env } = initCliRepo();
    const file = path.join(tempDir(), 'big');
    const data = Buffer.alloc(1_200_000);
    for (let i = 0; i < data.length; i++) data[i] = (i * 7 + (i >> 9)) & 0xff;
    fs.writeFileSync(file, data);
    expect(strata(['backup', file, '--quiet'], env).status).toBe(0);
    expect(strata(['cat', file, '--range', '1M+4K'], env).raw.equals(data.subarray(1024 * 1024, 1024 * 1024 + 4096))).toBe(true);
    expect(strata(['cat', file, '--range', '1K-2K'], env).raw.equals(data.subarray(1024, 2049))).toBe(true);
    const j = JSON.parse(strata(['cat', file, '--range', '1MiB+4KiB', '--json'], env).stdout);
    expect(j).toMatchObject({ start: 1048576, end: 1052671, length: 4096 });
    const zero = strata(['cat', file, '--range', '1M+0'], env);
    expect(zero.status).toBe(2);
    expect(zero.stderr).toMatch(/malformed range/);
  });
});

describe('compact dates in --at and --time', () => {
  it('--at 20261109 is a date when no snapshot id starts so; the error names both readings', () => {
    const { env } = initCliRepo();
    const file = path.join(tempDir(), 'f');
    fs.writeFileSync(file, 'one');
    expect(strata(['backup', file, '--quiet', '--time', '20261108'], env).status).toBe(0);
    fs.writeFileSync(file, 'two!');
    expect(strata(['backup', file, '--quiet', '--time', '20261110T090000Z'], env).status).toBe(0);
    const times = (JSON.parse(strata(['snapshots', '--json'], env).stdout) as { time: string }[]).map((s) => s.time);
    expect(times).toEqual([new Date(2026, 10, 8).toISOString(), '2026-11-10T09:00:00.000Z']);
    expect(strata(['cat', file, '--at', '20261109'], env).stdout).toBe('one');
    expect(strata(['cat', file, '--at', '20261110T090000Z'], env).stdout).toBe('two!');
    expect(strata(['cat', file, '--at', '20261110T085959Z'], env).stdout).toBe('one');
    const none = strata(['ls', '--at', '20251231'], env);
    expect(none.status).toBe(1);
    expect(none.stderr).toMatch(/no snapshot with an id starting 20251231, and read as a date: no snapshot at or before /);
  });
});

describe('init and its new password', () => {
  const hasScript = spawnSync('sh', ['-c', 'command -v script']).status === 0;
  /** Runs init on a terminal (script(1)), typing `typed`. */
  const initOnTerminal = (typed: string) => {
    const dir = tempDir();
    const log = path.join(dir, 'tty.log');
    const { STRATA_PASSWORD: _pw, CI: _ci, ...env } = cliEnv(path.join(dir, 'repo'));
    const r = spawnSync('script', ['-qec', `${process.execPath} ${BIN} init --scrypt-n 1024`, log], { env: { ...env, TERM: 'xterm' }, input: typed, timeout: 60_000 });
    return { status: r.status, out: fs.readFileSync(log, 'utf8'), repo: path.join(dir, 'repo') };
  };

  it.skipIf(!hasScript)('an empty password is refused at the first prompt, exit 2', () => {
    const r = initOnTerminal('\n');
    expect(r.status).toBe(2);
    expect(r.out).toMatch(/the password is empty/);
    expect(r.out).not.toMatch(/repeat password/);
  });

  it.skipIf(!hasScript)('two different entries are refused with exit 2 as well; two equal ones make the repository', () => {
    const bad = initOnTerminal('secret\nsecreT\n');
    expect(bad.status).toBe(2);
    expect(bad.out).toMatch(/repeat password/);
    expect(bad.out).toMatch(/the passwords do not match/);
    const good = initOnTerminal('secret\nsecret\n');
    expect(good.status, good.out).toBe(0);
    expect(strata(['snapshots', '--json'], cliEnv(good.repo, { STRATA_PASSWORD: 'secret' })).stdout.trim()).toBe('[]');
  });

  it('without a terminal: an empty password file is exit 2, no password at all exit 12', () => {
    const dir = tempDir();
    const empty = path.join(dir, 'pw');
    fs.writeFileSync(empty, '\n');
    const env = cliEnv(path.join(dir, 'repo'), { STRATA_PASSWORD: undefined });
    const r = strata(['init', '--scrypt-n', '1024', '--password-file', empty], env);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/the password is empty/);
    const none = strata(['init', '--scrypt-n', '1024'], { ...env, STRATA_PASSWORD: '' });
    expect(none.status).toBe(12);
    expect(fs.existsSync(path.join(dir, 'repo', 'config'))).toBe(false);
  });
});

describe('partial snapshots', () => {
  it('a backup that exits 3 leaves a snapshot marked partial, with how many sources it could not read', () => {
    const { env } = initCliRepo();
    const src = tempDir();
    fs.writeFileSync(path.join(src, 'a'), 'a');
    expect(strata(['backup', src, '--quiet', '--time', '2026-03-01T00:00:00Z'], env).status).toBe(0);
    const r = strata(['backup', src, path.join(src, 'gone1'), path.join(src, 'gone2'), '--quiet', '--time', '2026-03-02T00:00:00Z'], env);
    expect(r.status).toBe(3);
    const list = () => JSON.parse(strata(['snapshots', '--json'], env).stdout) as { id: string; partial: boolean; unreadable: number }[];
    expect(list().map((s) => [s.partial, s.unreadable])).toEqual([
      [false, 0],
      [true, 2],
    ]);
    const human = strata(['snapshots'], env).stdout;
    expect(human).toContain(`${r.stdout.trim().slice(0, 8)}*`);
    expect(human).toMatch(/2 snapshots, 1 partial \(\*: some sources could not be read\)/);
    // The mark is sealed into the snapshot's record, so a rebuilt catalog keeps it.
    expect(strata(['rebuild-catalog', '--quiet'], env).status).toBe(0);
    expect(list().map((s) => s.unreadable)).toEqual([0, 2]);
  });
});

describe('credentials: an option on the command line wins over the environment', () => {
  it('--password-file beats STRATA_PASSWORD and STRATA_KEY_FILE; --key-file beats both', () => {
    const { repo, env } = initCliRepo();
    const dir = tempDir();
    const good = path.join(dir, 'pw');
    fs.writeFileSync(good, 'pw\n');
    const keyFile = path.join(dir, 'key');
    expect(strata(['key', 'export', keyFile], env).status).toBe(0);
    const missingKey = path.join(dir, 'no-such-key');
    const wrong = cliEnv(repo, { STRATA_PASSWORD: 'wrong', STRATA_KEY_FILE: missingKey });
    expect(strata(['snapshots', '--password-file', good], wrong).status).toBe(0);
    expect(strata(['snapshots'], wrong).status).not.toBe(0);
    expect(strata(['snapshots', '--key-file', keyFile, '--password-file', path.join(dir, 'none')], wrong).status).toBe(0);
    expect(strata(['snapshots'], cliEnv(repo, { STRATA_PASSWORD: 'wrong', STRATA_KEY_FILE: keyFile })).status).toBe(0);
  });
});

describe('version, snapshots --latest, and --host/--path filters', () => {
  it('strata version says the version, the Node.js version and the format version', () => {
    const env = cliEnv('', { STRATA_REPO: undefined });
    const j = JSON.parse(strata(['version', '--json'], env).stdout);
    expect(j).toEqual({ version: JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')).version, node: process.versions.node, format: FORMAT_VERSION });
    const human = strata(['version'], env);
    expect(human.status).toBe(0);
    expect(human.stdout).toMatch(new RegExp(`^strata ${j.version}\\nnode ${j.node}\\nrepository format ${j.format}\\n$`));
  });

  it('snapshots --latest N keeps the newest N of each host and paths; --host and --path filter, in snapshots and forget', () => {
    const { env } = initCliRepo();
    const dir = tempDir();
    const a = path.join(dir, 'a');
    const b = path.join(dir, 'b');
    fs.writeFileSync(a, 'a');
    fs.writeFileSync(b, 'b');
    const made: string[] = [];
    const runs: [string, string[]][] = [
      ['h1', [a]],
      ['h1', [a]],
      ['h1', [a]],
      ['h2', [a]],
      ['h1', [a, b]],
      ['h2', [a]],
    ];
    runs.forEach(([host, paths], i) => {
      const r = strata(['backup', ...paths, '--host', host, '--quiet', '--time', `2026-05-0${i + 1}T00:00:00Z`], env);
      expect(r.status, r.stderr).toBe(0);
      made.push(r.stdout.trim());
    });
    const ids = (...args: string[]) => {
      const r = strata(['snapshots', '--json', ...args], env);
      expect(r.status, r.stderr).toBe(0);
      return (JSON.parse(r.stdout) as SnapJson[]).map((s) => made.indexOf(s.id));
    };
    expect(ids('--latest', '1')).toEqual([2, 4, 5]);
    expect(ids('--latest', '2')).toEqual([1, 2, 3, 4, 5]);
    expect(ids('--host', 'h2')).toEqual([3, 5]);
    expect(ids('--host', 'h2', '--host', 'h1', '--latest', '1')).toEqual([2, 4, 5]);
    expect(ids('--path', b)).toEqual([4]);
    expect(ids('--path', a, '--path', b)).toEqual([4]);
    expect(ids('--path', a, '--host', 'h1')).toEqual([0, 1, 2, 4]);
    // A relative --path is taken from the current directory.
    expect(strata(['snapshots', '--json', '--path', 'b'], env, { cwd: dir }).stdout).toContain(made[4]);
    expect(strata(['snapshots', '--latest', '0'], env).status).toBe(2);
    const forget = (...args: string[]) => {
      const r = strata(['forget', '--dry-run', '--json', ...args], env);
      expect(r.status, r.stderr).toBe(0);
      return (JSON.parse(r.stdout) as { removed: string[] }).removed.map((id) => made.indexOf(id)).sort();
    };
    expect(forget('--host', 'h1', '--keep-last', '1')).toEqual([0, 1]);
    expect(forget('--host', 'h2', '--keep-last', '1')).toEqual([3]);
    expect(forget('--path', b, '--keep-last', '0', made[4]!)).toEqual([4]);
    expect(forget('--path', a, '--keep-last', '1')).toEqual([0, 1, 3]);
  });
});

describe('diff', () => {
  interface Diff {
    snapshot1: string;
    snapshot2: string;
    added: { path: string; type: string }[];
    removed: { path: string; type: string }[];
    changed: { path: string; type: string; size1: number; size2: number; ranges: [number, number][]; replaced: [number, number][]; target1?: string; target2?: string }[];
    metadata: { path: string; type: string }[];
    bytesChanged: number;
  }

  it('lists added, removed and changed files, with the changed byte ranges from the TOCs', () => {
    const { env } = initCliRepo(['--chunk-avg', '4K']);
    const src = path.join(tempDir(), 'src');
    fs.mkdirSync(src);
    const rng = new Rng(9);
    const v1 = rng.bytes(300_000);
    const big = path.join(src, 'big');
    fs.writeFileSync(big, v1);
    fs.writeFileSync(path.join(src, 'same'), 'same');
    fs.writeFileSync(path.join(src, 'gone'), 'gone');
    fs.writeFileSync(path.join(src, 'touched'), 'touched');
    fs.writeFileSync(path.join(src, 'becomes-dir'), 'file');
    fs.symlinkSync('same', path.join(src, 'link'));
    const backup = (time: string) => {
      const r = strata(['backup', src, '--quiet', '--time', time], env);
      expect(r.status, r.stderr).toBe(0);
      return r.stdout.trim();
    };
    const s1 = backup('2026-06-01T00:00:00Z');
    // An insertion of 8 bytes at 100000, a removed file, a new directory where a file was, a new file,
    // a file touched but not changed, a symlink pointed elsewhere.
    const v2 = Buffer.concat([v1.subarray(0, 100_000), Buffer.from('INSERTED'), v1.subarray(100_000)]);
    fs.writeFileSync(big, v2);
    fs.rmSync(path.join(src, 'gone'));
    fs.rmSync(path.join(src, 'becomes-dir'));
    fs.mkdirSync(path.join(src, 'becomes-dir'));
    fs.writeFileSync(path.join(src, 'becomes-dir', 'inside'), 'in');
    fs.writeFileSync(path.join(src, 'new'), 'new');
    fs.utimesSync(path.join(src, 'touched'), new Date('2020-01-01T00:00:00Z'), new Date('2020-01-01T00:00:00Z'));
    fs.rmSync(path.join(src, 'link'));
    fs.symlinkSync('new', path.join(src, 'link'));
    const s2 = backup('2026-06-02T00:00:00Z');
    // A second change far from the first: diff across both backups has both.
    const v3 = Buffer.from(v2);
    v3.fill(0x55, 250_000, 250_100);
    fs.writeFileSync(big, v3);
    const s3 = backup('2026-06-03T00:00:00Z');

    const diff = (x: string, y: string) => {
      const r = strata(['diff', x, y, '--json'], env);
      expect(r.status, r.stderr).toBe(0);
      return JSON.parse(r.stdout) as Diff;
    };
    const d = diff(s1.slice(0, 8), s2);
    expect(d.snapshot1).toBe(s1);
    expect(d.snapshot2).toBe(s2);
    const p = (n: string) => path.join(src, n);
    expect(d.added).toEqual([
      { path: p('becomes-dir'), type: 'dir' },
      { path: p('becomes-dir/inside'), type: 'file' },
      { path: p('new'), type: 'file' },
    ]);
    expect(d.removed).toEqual([
      { path: p('becomes-dir'), type: 'file' },
      { path: p('gone'), type: 'file' },
    ]);
    expect(d.metadata).toEqual([{ path: p('touched'), type: 'file' }]);
    expect(d.changed.map((c) => c.path)).toEqual([p('big'), p('link')]);
    expect(d.changed[1]).toMatchObject({ type: 'symlink', target1: 'same', target2: 'new' });
    const c = d.changed[0]!;
    expect(c).toMatchObject({ type: 'file', size1: v1.length, size2: v2.length });
    // The changed ranges are the new version's data entries (the blocks around the insertion), neighbours
    // joined: where the keyed chunker cut there decides whether one block or two took the insertion.
    const toc = JSON.parse(strata(['toc', big, '--at', s2, '--json'], env).stdout) as { start: number; end: number; kind: string }[];
    const joined: [number, number][] = [];
    for (const e of toc.filter((x) => x.kind === 'data')) {
      const last = joined.at(-1);
      if (last && last[1] + 1 === e.start) last[1] = e.end;
      else joined.push([e.start, e.end]);
    }
    expect(c.ranges).toEqual(joined);
    expect(c.ranges.some(([s, e]) => s <= 100_000 && e >= 100_007)).toBe(true);
    expect(d.bytesChanged).toBe(c.ranges.reduce((n, [s, e]) => n + e - s + 1, 0));
    expect(d.bytesChanged).toBeLessThan(40_000);
    // Everything outside the ranges is the old bytes, moved by the insertion.
    const outside = (buf: Buffer, ranges: [number, number][]) => {
      const parts: Buffer[] = [];
      let at = 0;
      for (const [s, e] of ranges) {
        parts.push(buf.subarray(at, s));
        at = e + 1;
      }
      parts.push(buf.subarray(at));
      return Buffer.concat(parts);
    };
    expect(outside(v2, c.ranges).equals(outside(v1, c.replaced))).toBe(true);

    const across = diff(s1, s3).changed.find((x) => x.path === big)!;
    expect(across.ranges.some(([s, e]) => s <= 100_000 && e >= 100_007)).toBe(true);
    expect(across.ranges.some(([s, e]) => s <= 250_000 && e >= 250_099)).toBe(true);
    expect(outside(v3, across.ranges).equals(outside(v1, across.replaced))).toBe(true);

    const none = diff(s2, s2);
    expect([none.added, none.removed, none.changed, none.metadata]).toEqual([[], [], [], []]);

    const human = strata(['diff', s1, s2], env);
    expect(human.status).toBe(0);
    expect(human.stdout).toContain(`+ ${p('becomes-dir')}/\n`);
    expect(human.stdout).toContain(`- ${p('gone')}\n`);
    expect(human.stdout).toContain(`M ${p('big')} (${v1.length} -> ${v2.length} bytes)\n    changed bytes ${c.ranges.map(([s, e]) => `${s}-${e}`).join(', ')}\n`);
    expect(human.stdout).toContain(`U ${p('touched')}\n`);
    expect(human.stdout).toMatch(/3 added, 2 removed, 2 changed \(.* in changed ranges\), 1 metadata change\n$/);
    expect(strata(['diff', s1], env).status).toBe(2);
  });
});
