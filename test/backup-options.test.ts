/**
 * backup --dry-run (reads and compares, stores nothing), --list (names
 * each file stored anew and each file gone) and --stdin, through the CLI.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { BIN, initCliRepo, Rng, strata, tempDir } from './helpers.js';

function ok(args: string[], env: NodeJS.ProcessEnv) {
  const r = strata(args, env);
  expect(r.status, `${args.join(' ')}: ${r.stderr}`).toBe(0);
  return r;
}

/**
 * Every file under a repository directory with its size and mtime; the
 * catalog's by size only (a dry run takes the backup lease, as restic's locks
 * the repository, and that is a write to the catalog).
 */
function contents(dir: string): string[] {
  return (fs.readdirSync(dir, { recursive: true }) as string[])
    .map((p) => {
      const st = fs.statSync(path.join(dir, p));
      return `${p} ${st.isFile() ? st.size : 'dir'} ${p.startsWith('catalog.db') ? '' : st.mtimeMs}`;
    })
    .sort();
}

describe('backup --dry-run and --list', () => {
  it('a dry run says what a backup would store (new, changed, removed files) and leaves the repository as it was', () => {
    const { env, repo } = initCliRepo();
    const src = tempDir();
    fs.mkdirSync(path.join(src, 'sub'));
    for (const n of ['a', 'b', 'sub/c', 'sub/d']) fs.writeFileSync(path.join(src, n), `${n} `.repeat(5000));
    const first = JSON.parse(ok(['backup', src, '--json', '--list'], env).stdout);
    expect(first.changes.map((c: { change: string; path: string }) => `${c.change} ${path.relative(src, c.path)}`).sort()).toEqual(['new a', 'new b', 'new sub/c', 'new sub/d']);

    fs.appendFileSync(path.join(src, 'a'), 'more');
    fs.rmSync(path.join(src, 'sub', 'c'));
    fs.writeFileSync(path.join(src, 'sub', 'e'), 'a new file with new bytes '.repeat(300));
    const before = contents(repo);
    const dry = JSON.parse(ok(['backup', src, '--dry-run', '--list', '--json'], env).stdout);
    expect(dry).toMatchObject({ dryRun: true, filesNew: 1, filesChanged: 1, filesUnchanged: 2 });
    expect(dry.bytesAdded).toBeGreaterThan(0);
    expect(dry.changes.map((c: { change: string; path: string }) => `${c.change} ${path.relative(src, c.path)}`).sort()).toEqual(['changed a', 'new sub/e', 'removed sub/c']);
    // Nothing stored: the same files, sizes and times (the catalog included), one snapshot still.
    expect(contents(repo)).toEqual(before);
    expect(JSON.parse(ok(['snapshots', '--json'], env).stdout)).toHaveLength(1);

    // The text form names them as found; a real backup then finds the same.
    const text = ok(['backup', src, '-n', '--list'], env).stdout;
    expect(text).toContain(`changed  ${path.join(src, 'a')}`);
    expect(text).toContain(`removed  ${path.join(src, 'sub', 'c')}`);
    expect(text).toMatch(/dry run: nothing was stored/);
    const real = JSON.parse(ok(['backup', src, '--json'], env).stdout);
    expect(real).toMatchObject({ filesNew: 1, filesChanged: 1, filesUnchanged: 2 });
    expect(real.dryRun).toBeUndefined();
    expect(real.changes).toBeUndefined();
    expect(JSON.parse(ok(['snapshots', '--json'], env).stdout)).toHaveLength(2);
  });
});

describe('backup --stdin', () => {
  it('stores what is piped in as one file below /; the next dump is an incremental of refs and few data entries', () => {
    const { env } = initCliRepo();
    const lines = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => `INSERT INTO t VALUES (${from + i}, 'row ${from + i}');\n`).join('');
    const first = lines(1, 30000);
    const r1 = strata(['backup', '--stdin', '--stdin-filename', 'db.sql', '--json'], env, { input: first });
    expect(r1.status, r1.stderr).toBe(0);
    expect(JSON.parse(r1.stdout)).toMatchObject({ filesNew: 1, bytesRead: first.length });
    // A row inserted in the middle: the dump shifts by its length after it.
    const second = lines(1, 15000) + "INSERT INTO t VALUES (0, 'inserted');\n" + lines(15001, 30000);
    const r2 = strata(['backup', '--stdin', '--stdin-filename', 'db.sql', '--json'], env, { input: second });
    expect(r2.status, r2.stderr).toBe(0);
    const s2 = JSON.parse(r2.stdout);
    expect(s2).toMatchObject({ filesChanged: 1, bytesTotal: second.length });
    expect(s2.refEntries).toBeGreaterThanOrEqual(2);
    // Of some 32 blocks: the one the row went into, and the next few while the cuts (keyed, so never
    // the same twice) find their places again after a cut that moved past the minimum block size.
    expect(s2.dataEntries).toBeLessThanOrEqual(6);
    expect(ok(['cat', '/db.sql'], env).stdout).toBe(second);
    expect(ok(['cat', '/db.sql', '--at', r1.stdout ? JSON.parse(r1.stdout).snapshot : ''], env).stdout).toBe(first);
    const listing = ok(['ls', '/', '-l'], env).stdout;
    expect(listing).toMatch(/^-rw-r--r-- .* \/db\.sql$/m);
  });

  it('a wait for a writer that sends nothing more ends at one SIGTERM (exit 130), and stores no snapshot', async () => {
    const { env } = initCliRepo();
    // Standard input a pipe kept open and silent after a first line, as a stalled pg_dump's.
    const child = spawn(process.execPath, [BIN, 'backup', '--stdin'], { env, stdio: ['pipe', 'pipe', 'pipe'] });
    child.stdin.write('a first line\n');
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    await new Promise((resolve) => setTimeout(resolve, 1500));
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    child.kill('SIGTERM');
    const code = await Promise.race([exited, new Promise<'hung'>((resolve) => setTimeout(() => resolve('hung'), 15_000))]);
    if (code === 'hung') child.kill('SIGKILL');
    expect(code, stderr).toBe(130);
    expect(JSON.parse(ok(['snapshots', '--json'], env).stdout)).toEqual([]);
  });

  it('refuses what cannot work, with a usage error', () => {
    const { env } = initCliRepo();
    const src = tempDir();
    for (const [args, message] of [
      [['--stdin', src], /standard input alone/],
      [['--stdin', '--stdin-filename', 'a/b'], /one file name/],
      [['--stdin-filename', 'x', src], /needs --stdin/],
    ] as const) {
      const r = strata(['backup', ...args], env, { input: 'x' });
      expect(r.status, r.stderr).toBe(2);
      expect(r.stderr).toMatch(message);
    }
  });
});

describe('--compression', () => {
  it('off stores new blocks as they are, max squeezes them harder, and init sets what auto means; every byte reads back', () => {
    // Compressible but never repeating, within a file or between them (repeats would be deduplicated, not compressed).
    const rng = new Rng(5);
    const texts = new Map<string, string>();
    const textOf = (name: string) => {
      if (!texts.has(name)) texts.set(name, Array.from({ length: 20000 }, (_, i) => `line ${i}: value ${rng.int(1_000_000)} of a text that compresses well\n`).join(''));
      return texts.get(name)!;
    };
    const text = textOf('a');
    const added = (args: string[], env: NodeJS.ProcessEnv, name: string) => {
      const src = tempDir();
      const text = textOf(name);
      fs.writeFileSync(path.join(src, name), text);
      const r = JSON.parse(ok(['backup', src, '--json', ...args], env).stdout);
      expect(ok(['cat', path.join(src, name)], env).stdout).toBe(text);
      return r.bytesAdded as number;
    };
    const { env } = initCliRepo();
    const off = added(['--compression', 'off'], env, 'a');
    const auto = added([], env, 'b');
    const max = added(['--compression', 'max'], env, 'c');
    expect(off).toBeGreaterThan(text.length);
    expect(auto).toBeLessThan(text.length / 5);
    expect(max).toBeLessThanOrEqual(auto);
    // A repository made with compression off: auto means off.
    const { env: plain } = initCliRepo(['--compression', 'off']);
    expect(added([], plain, 'd')).toBeGreaterThan(text.length);
    expect(added(['--compression', '5'], plain, 'e')).toBeLessThan(text.length / 5);
    for (const bad of ['20', 'zip', '-1']) {
      const r = strata(['backup', tempDir(), '--compression', bad], env);
      expect(r.status, r.stderr).toBe(2);
      expect(r.stderr).toMatch(/--compression/);
    }
  });
});
