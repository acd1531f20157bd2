/**
 * The command line end to end: a real repository directory, real files, the
 * built bin/strata.js in a child process.
 */
import * as fs from 'node:fs';
import * as net from 'node:net';
import Database from 'better-sqlite3';
import * as path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { BIN, cliEnv, cliForEveryone, initCliRepo, Rng, strata, strataAsync, tempDir } from './helpers.js';

const noStack = (s: string) => expect(s).not.toMatch(/\n\s+at .+:\d+:\d+/);

describe('a backup history through the CLI', () => {
  let repo: string;
  let env: NodeJS.ProcessEnv;
  let src: string;
  const ids: string[] = [];
  const rng = new Rng(7);
  const v1 = rng.bytes(300_000);
  const v2 = Buffer.concat([v1.subarray(0, 1000), Buffer.from('INSERTED'), v1.subarray(1000)]);
  const v3 = Buffer.concat([v2.subarray(0, 200_000), Buffer.from('TAIL')]);

  beforeAll(() => {
    ({ repo, env } = initCliRepo(['--chunk-avg', '4K']));
    src = path.join(tempDir(), 'data');
    fs.mkdirSync(path.join(src, 'sub'), { recursive: true });
    fs.writeFileSync(path.join(src, 'big.bin'), v1);
    fs.writeFileSync(path.join(src, 'sub', 'note.txt'), 'hello\n');
    fs.chmodSync(path.join(src, 'sub', 'note.txt'), 0o640);
    fs.symlinkSync('sub/note.txt', path.join(src, 'link'));
    fs.utimesSync(path.join(src, 'sub', 'note.txt'), new Date('2025-05-05T05:05:05Z'), new Date('2025-05-05T05:05:05Z'));
    for (const [i, data] of [v1, v2, v3].entries()) {
      fs.writeFileSync(path.join(src, 'big.bin'), data);
      const r = strata(['backup', src, '--time', `2026-0${i + 1}-15T12:00:00Z`, '--tag', `v${i + 1}`, '--quiet'], env);
      expect(r.status, r.stderr).toBe(0);
      ids.push(r.stdout.trim());
    }
  });

  it('init made a config, a catalog and keys; a second init refuses', () => {
    expect(fs.existsSync(path.join(repo, 'config'))).toBe(true);
    expect(fs.existsSync(path.join(repo, 'catalog.db'))).toBe(true);
    expect(fs.readdirSync(path.join(repo, 'keys'))).toHaveLength(1);
    expect(fs.readdirSync(path.join(repo, 'packs')).length).toBeGreaterThan(0);
    const again = strata(['init', '--scrypt-n', '1024'], env);
    expect(again.status).toBe(1);
    expect(again.stderr).toMatch(/already exists/);
  });

  it('backup prints the snapshot id; snapshots --json lists them oldest first', () => {
    for (const id of ids) expect(id).toMatch(/^[0-9a-f]{64}$/);
    const r = strata(['snapshots', '--json'], env);
    expect(r.status).toBe(0);
    const list = JSON.parse(r.stdout) as { id: string; time: string; host: string; tags: string[]; paths: string[]; bytesTotal: number }[];
    expect(list.map((s) => s.id)).toEqual(ids);
    expect(list[0]).toMatchObject({ time: '2026-01-15T12:00:00.000Z', tags: ['v1'], paths: [src] });
    expect(typeof list[0]!.host).toBe('string');
    expect(list[2]!.bytesTotal).toBe(v3.length + 6);
    const human = strata(['snapshots'], env);
    expect(human.stdout).toContain(ids[0]!.slice(0, 8));
  });

  it('backup --json reports what it did', () => {
    fs.writeFileSync(path.join(src, 'new.txt'), 'new file');
    const r = strata(['backup', src, '--json', '--time', '2026-04-01T00:00:00Z'], env);
    expect(r.status, r.stderr).toBe(0);
    const j = JSON.parse(r.stdout);
    for (const k of ['snapshot', 'filesNew', 'filesChanged', 'filesUnchanged', 'bytesRead', 'bytesAdded', 'blocksNew', 'blocksReused', 'refEntries', 'durationMs']) {
      expect(j).toHaveProperty(k);
    }
    expect(j).toMatchObject({ filesNew: 1, filesChanged: 0, filesUnchanged: 2, bytesRead: 8 });
    ids.push(j.snapshot);
  });

  it('cat returns each version, and ranges in decimal and hex', () => {
    const file = path.join(src, 'big.bin');
    expect(strata(['cat', file, '--at', ids[0]!], env).raw.equals(v1)).toBe(true);
    expect(strata(['cat', file, '--at', ids[1]!.slice(0, 8)], env).raw.equals(v2)).toBe(true);
    expect(strata(['cat', file], env).raw.equals(v3)).toBe(true);
    expect(strata(['cat', file, '--at', ids[1]!, '--range', '990-1017'], env).raw.equals(v2.subarray(990, 1018))).toBe(true);
    expect(strata(['cat', file, '--at', ids[1]!, '--range', '0x3E6-0x3F9'], env).raw.equals(v2.subarray(0x3e6, 0x3fa))).toBe(true);
    expect(strata(['cat', file, '--range', '199990-'], env).raw.equals(v3.subarray(199_990))).toBe(true);
    expect(strata(['cat', file, '--range', '-10'], env).raw.equals(v3.subarray(-10))).toBe(true);
    expect(strata(['cat', file, '--range', '199999-999999999'], env).raw.equals(v3.subarray(199_999))).toBe(true);
  });

  it('cat --json reports the range and how many blocks it read', () => {
    const r = strata(['cat', path.join(src, 'big.bin'), '--range', '100000-104095', '--json'], env);
    const j = JSON.parse(r.stdout);
    expect(j).toMatchObject({ start: 100000, end: 104095, length: 4096 });
    expect(Buffer.from(j.data, 'base64').equals(v3.subarray(100000, 104096))).toBe(true);
    expect(j.blocksRead).toBeLessThanOrEqual(3);
  });

  it('--at takes a date: the newest snapshot at or before it', () => {
    const file = path.join(src, 'big.bin');
    expect(strata(['cat', file, '--at', '2026-02-20'], env).raw.equals(v2)).toBe(true);
    expect(strata(['cat', file, '--at', '2026-01-15T12:00:00Z'], env).raw.equals(v1)).toBe(true);
    expect(strata(['cat', file, '--at', '2026-03-15T11:59:59Z'], env).raw.equals(v2)).toBe(true);
    const before = strata(['cat', file, '--at', '2025-12-31'], env);
    expect(before.status).toBe(1);
    expect(before.stderr).toMatch(/no snapshot .* at or before/);
  });

  it('toc shows data and ref entries with targets and offsets', () => {
    const r = strata(['toc', path.join(src, 'big.bin'), '--at', ids[1]!, '--json'], env);
    const toc = JSON.parse(r.stdout) as { start: number; end: number; kind: string; block?: string; target?: { snapshot: string; start: number; end: number }; offset?: number }[];
    expect(toc[0]!.start).toBe(0);
    expect(toc[toc.length - 1]!.end).toBe(v2.length - 1);
    for (let i = 1; i < toc.length; i++) expect(toc[i]!.start).toBe(toc[i - 1]!.end + 1);
    const refs = toc.filter((e) => e.kind === 'ref');
    expect(refs.length).toBeGreaterThan(0);
    expect(refs.every((e) => e.target!.snapshot === ids[0])).toBe(true);
    expect(refs.some((e) => e.offset === 8)).toBe(true);
    expect(toc.length).toBeLessThan(12);
    const base = JSON.parse(strata(['toc', path.join(src, 'big.bin'), '--at', ids[0]!, '--json'], env).stdout) as { kind: string }[];
    expect(base.every((e) => e.kind === 'data')).toBe(true);
    const blocks = JSON.parse(strata(['toc', path.join(src, 'big.bin'), '--at', ids[1]!, '--json', '--blocks'], env).stdout) as unknown[];
    expect(blocks.length).toBeGreaterThan(toc.length);
    const human = strata(['toc', path.join(src, 'big.bin'), '--at', ids[1]!], env);
    expect(human.stdout).toMatch(/ref\s+snapshot [0-9a-f]{8} 0x/);
  });

  it('ls lists a snapshot, a directory, and long form', () => {
    const all = strata(['ls'], env).stdout.split('\n');
    expect(all).toContain(path.join(src, 'sub', 'note.txt'));
    const dir = strata(['ls', src, '-l'], env).stdout;
    expect(dir).toMatch(/^l.* -> sub\/note.txt$/m);
    const j = JSON.parse(strata(['ls', path.join(src, 'sub'), '--json'], env).stdout);
    expect(j.entries).toEqual([expect.objectContaining({ name: 'note.txt', type: 'file', size: 6, mode: 0o640 })]);
  });

  it('restore --at recreates files, modes, times and symlinks under the target', () => {
    const target = tempDir();
    const r = strata(['restore', '--target', target, '--at', ids[1]!], env);
    expect(r.status, r.stderr).toBe(0);
    const root = path.join(target, src);
    expect(fs.readFileSync(path.join(root, 'big.bin')).equals(v2)).toBe(true);
    const st = fs.statSync(path.join(root, 'sub', 'note.txt'));
    expect(st.mode & 0o777).toBe(0o640);
    expect(st.mtime.toISOString()).toBe('2025-05-05T05:05:05.000Z');
    expect(fs.readlinkSync(path.join(root, 'link'))).toBe('sub/note.txt');
    expect(fs.existsSync(path.join(root, 'new.txt'))).toBe(false);
  });

  it('restore of several paths picks the newest snapshot holding all of them', () => {
    const target = tempDir();
    const r = strata(['restore', path.join(src, 'sub'), path.join(src, 'new.txt'), '--target', target, '--at', '2026-12-31', '--json'], env);
    expect(r.status, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ files: 2 });
    const none = strata(['restore', path.join(src, 'sub'), path.join(src, 'new.txt'), '--target', target, '--at', ids[2]!.slice(0, 12)], env);
    expect(none.status).toBe(1);
    expect(none.stderr).toMatch(/new.txt is not in snapshot/);
  });

  it('restore of one path restores only that path', () => {
    const target = tempDir();
    const r = strata(['restore', path.join(src, 'sub'), '--target', target, '--json'], env);
    expect(JSON.parse(r.stdout)).toMatchObject({ files: 1 });
    expect(fs.readFileSync(path.join(target, src, 'sub', 'note.txt'), 'utf8')).toBe('hello\n');
    expect(fs.existsSync(path.join(target, src, 'big.bin'))).toBe(false);
  });

  it('key export gives a key file that skips the password', () => {
    const keyFile = path.join(tempDir(), 'key.json');
    expect(strata(['key', 'export', keyFile], env).status).toBe(0);
    expect(fs.statSync(keyFile).mode & 0o777).toBe(0o600);
    const noPw = cliEnv(repo, { STRATA_PASSWORD: undefined });
    const r = strata(['cat', path.join(src, 'sub', 'note.txt'), '--key-file', keyFile], noPw);
    expect(r.stdout).toBe('hello\n');
    expect(strata(['snapshots', '--json'], { ...noPw, STRATA_KEY_FILE: keyFile }).status).toBe(0);
    expect(strata(['key', 'export', keyFile], env).status).toBe(1);
  });

  it('a wrong password reads nothing', () => {
    const bad = cliEnv(repo, { STRATA_PASSWORD: 'wrong' });
    for (const args of [['snapshots'], ['ls'], ['cat', path.join(src, 'big.bin')], ['restore', '--target', tempDir()], ['toc', path.join(src, 'big.bin')], ['backup', src]]) {
      const r = strata(args, bad);
      expect(r.status, args.join(' ')).toBe(12);
      expect(r.stdout).toBe('');
      expect(r.stderr).toMatch(/wrong password/);
      noStack(r.stderr);
    }
  });

  it('bad input gets one clear line and the documented exit code', () => {
    const cases: [string[], number, RegExp][] = [
      [['cat', path.join(src, 'nope')], 1, /is not in snapshot/],
      [['cat', src], 1, /is a directory/],
      [['cat', path.join(src, 'big.bin'), '--at', 'ffffffff'], 1, /no snapshot with id/],
      [['cat', path.join(src, 'big.bin'), '--at', 'yesterday'], 2, /malformed WHEN/],
      [['cat', path.join(src, 'big.bin'), '--range', '5'], 2, /malformed range/],
      [['cat', path.join(src, 'big.bin'), '--range', '10-2'], 2, /malformed range/],
      [['cat', path.join(src, 'big.bin'), '--range', '999999999-'], 1, /range not satisfiable/],
      [['ls', '/not/backed/up'], 1, /no snapshot holding/],
      [['restore'], 2, /--target/],
      [['bogus-command'], 2, /unknown command/],
      [['backup', src, '--time', 'soon'], 2, /malformed --time/],
    ];
    for (const [args, code, message] of cases) {
      const r = strata(args, env);
      expect(r.status, args.join(' ') + ': ' + r.stderr).toBe(code);
      expect(r.stderr).toMatch(message);
      noStack(r.stderr);
    }
  });
});

describe('repositories that are missing, foreign or locked away', () => {
  it('no repository: exit 10', () => {
    const env = cliEnv(path.join(tempDir(), 'none'));
    const r = strata(['snapshots'], env);
    expect(r.status).toBe(10);
    expect(r.stderr).toMatch(/no repository at/);
  });

  it('a directory that is not a repository: exit 10', () => {
    const dir = tempDir();
    fs.writeFileSync(path.join(dir, 'config'), 'not json');
    expect(strata(['snapshots'], cliEnv(dir)).status).toBe(10);
  });

  it('no --repo at all: a usage error', () => {
    const r = strata(['snapshots'], cliEnv('', { STRATA_REPO: undefined }));
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/--repo/);
  });

  it('no password and no terminal: exit 12 with advice', () => {
    const { repo } = initCliRepo();
    const r = strata(['snapshots'], cliEnv(repo, { STRATA_PASSWORD: undefined }));
    expect(r.status).toBe(12);
    expect(r.stderr).toMatch(/STRATA_PASSWORD/);
  });

  it('a password file works, and --password-file beats STRATA_PASSWORD', () => {
    const { repo } = initCliRepo();
    const pwFile = path.join(tempDir(), 'pw');
    fs.writeFileSync(pwFile, 'pw\n');
    expect(strata(['snapshots', '--password-file', pwFile], cliEnv(repo, { STRATA_PASSWORD: undefined })).status).toBe(0);
    expect(strata(['snapshots'], cliEnv(repo, { STRATA_PASSWORD: undefined, STRATA_PASSWORD_FILE: pwFile })).status).toBe(0);
    expect(strata(['snapshots', '--password-file', pwFile], cliEnv(repo, { STRATA_PASSWORD: 'wrong' })).status).toBe(0);
    const badFile = path.join(tempDir(), 'bad');
    fs.writeFileSync(badFile, 'wrong');
    expect(strata(['snapshots', '--password-file', badFile], cliEnv(repo, { STRATA_PASSWORD: 'pw' })).status).toBe(12);
  });

  it('usage errors under --json are one JSON document too', () => {
    const r = strata(['cat', '--json'], cliEnv(path.join(tempDir(), 'none')));
    expect(r.status).toBe(2);
    expect(JSON.parse(r.stdout)).toMatchObject({ error: 'usage' });
  });

  it('a config from a newer format is refused clearly', () => {
    const { repo, env } = initCliRepo();
    const cfg = JSON.parse(fs.readFileSync(path.join(repo, 'config'), 'utf8'));
    fs.writeFileSync(path.join(repo, 'config'), JSON.stringify({ ...cfg, version: 99 }));
    const r = strata(['snapshots'], env);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/newer than this strata supports/);
  });
});

describe('backup sources that misbehave', () => {
  it('a missing source is named, the rest is saved, exit 3', () => {
    const { env } = initCliRepo();
    const src = tempDir();
    fs.writeFileSync(path.join(src, 'a'), 'a');
    const r = strata(['backup', src, path.join(src, 'missing')], env);
    expect(r.status).toBe(3);
    expect(r.stderr).toContain(path.join(src, 'missing'));
    expect(strata(['cat', path.join(src, 'a')], env).stdout).toBe('a');
  });

  it('an unreadable file is named and skipped, exit 3', () => {
    const { repo, env } = initCliRepo();
    const src = tempDir();
    fs.chmodSync(src, 0o755);
    fs.writeFileSync(path.join(src, 'ok'), 'ok');
    fs.writeFileSync(path.join(src, 'secret'), 'secret');
    fs.chmodSync(path.join(src, 'secret'), 0o000);
    // Root reads everything: run as nobody, who can use a world-writable repository.
    const asRoot = process.getuid?.() === 0;
    if (asRoot) {
      fs.chmodSync(path.dirname(repo), 0o777);
      for (const p of walk(repo)) fs.chmodSync(p, fs.statSync(p).isDirectory() ? 0o777 : 0o666);
    }
    const r = strata(['backup', src, '--json'], { ...env, HOME: '/tmp' }, asRoot ? { uid: 65534, gid: 65534, bin: cliForEveryone() } : {});
    expect(r.status, r.stderr).toBe(3);
    expect(r.stderr).toMatch(/secret: permission denied/);
    const j = JSON.parse(r.stdout);
    expect(j.incomplete).toBe(true);
    expect(strata(['cat', path.join(src, 'ok')], env).stdout).toBe('ok');
    expect(strata(['cat', path.join(src, 'secret')], env).status).toBe(1);
  });

  it('a source reached through a symlink is named and skipped (exit 3), and one that is a symlink is stored as a link with a warning', () => {
    const { env } = initCliRepo();
    const top = tempDir();
    fs.mkdirSync(path.join(top, 'real'));
    fs.writeFileSync(path.join(top, 'real', 'f.txt'), 'data');
    fs.writeFileSync(path.join(top, 'other.txt'), 'other');
    fs.symlinkSync('real', path.join(top, 'link'));
    const through = strata(['backup', path.join(top, 'link', 'f.txt'), path.join(top, 'other.txt')], env);
    expect(through.status, through.stderr).toBe(3);
    expect(through.stderr).toContain(`skipping source ${path.join(top, 'link', 'f.txt')}: it is reached through the symlink ${path.join(top, 'link')} (-> real); back up ${path.join(fs.realpathSync(top), 'real', 'f.txt')} instead`);
    expect(strata(['cat', path.join(top, 'other.txt')], env).stdout).toBe('other');
    const only = strata(['backup', path.join(top, 'link', 'f.txt')], env);
    expect(only.status).toBe(1);
    expect(only.stderr).toMatch(/none of the source paths can be read/);
    const link = strata(['backup', path.join(top, 'link')], env);
    expect(link.status).toBe(3);
    expect(link.stderr).toContain(`source ${path.join(top, 'link')} is a symlink: stored as a link, not followed`);
  });

  it('a socket is skipped with a warning; a FIFO is stored as one, never read', async () => {
    const { env } = initCliRepo();
    const src = tempDir();
    fs.writeFileSync(path.join(src, 'a'), 'a');
    require_mkfifo(path.join(src, 'pipe'));
    const server = net.createServer();
    await new Promise<void>((resolve) => server.listen(path.join(src, 'sock'), resolve));
    try {
      const r = strata(['backup', src], env);
      expect(r.status, r.stderr).toBe(0);
      expect(r.stderr).toMatch(/skipping .*sock: a socket/);
      expect(r.stderr).not.toContain('pipe');
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
    const listed = strata(['ls', '-l', src], env).stdout;
    expect(listed).toMatch(/^prw.* \/.*\/pipe$/m);
    expect(listed).not.toContain('sock');
  });

  it('an unchanged file is not read again: it keeps its version, with no new row in the catalog', () => {
    const { repo, env } = initCliRepo();
    const src = tempDir();
    fs.writeFileSync(path.join(src, 'a'), new Rng(3).bytes(100_000));
    fs.writeFileSync(path.join(src, 'b'), 'b');
    const first = JSON.parse(strata(['backup', src, '--json'], env).stdout);
    const j = JSON.parse(strata(['backup', src, '--json'], env).stdout);
    expect(j).toMatchObject({ bytesRead: 0, filesUnchanged: 2, filesChanged: 0, refEntries: 2, dataEntries: 0, blocksNew: 0 });
    const toc = (at: string) => JSON.parse(strata(['toc', path.join(src, 'a'), '--json', '--at', at], env).stdout);
    expect(toc(j.snapshot)).toEqual(toc(first.snapshot));
    expect(toc(j.snapshot)[0]).toMatchObject({ start: 0, kind: 'data' });
    expect(strata(['toc', path.join(src, 'a'), '--at', j.snapshot], env).stdout).toContain(`(unchanged since snapshot ${first.snapshot.slice(0, 8)})`);
    expect(strata(['toc', path.join(src, 'a'), '--at', first.snapshot], env).stdout).not.toContain('unchanged since');
    const db = new Database(path.join(repo, 'catalog.db'), { readonly: true });
    expect(db.prepare('SELECT COUNT(*) FROM versions v JOIN snapshots s ON s.seq = v.snapshot WHERE s.id = ?').pluck().get(j.snapshot)).toBe(0);
    db.close();
    expect(strata(['cat', path.join(src, 'b'), '--at', j.snapshot], env).stdout).toBe('b');
  });

  it('a 4 KiB page rewritten in a large file adds well under 256 KiB', () => {
    // Block boundaries depend on the repository's key, so one edit is a random
    // sample: rewrite one page in each of eight files and judge the mean.
    const { env } = initCliRepo();
    const src = tempDir();
    const files = 8;
    for (let i = 0; i < files; i++) fs.writeFileSync(path.join(src, `disk${i}.img`), new Rng(11 + i).bytes(4 * 1024 * 1024));
    strata(['backup', src], env);
    for (let i = 0; i < files; i++) {
      const fd = fs.openSync(path.join(src, `disk${i}.img`), 'r+');
      fs.writeSync(fd, new Rng(100 + i).bytes(4096), 0, 4096, 1024 * 1024 + i * 277_003);
      fs.closeSync(fd);
    }
    const j = JSON.parse(strata(['backup', src, '--json'], env).stdout);
    expect(j.filesChanged).toBe(files);
    expect(j.bytesAdded / files).toBeLessThan(128 * 1024);
    expect(j.refEntries + j.dataEntries).toBeLessThanOrEqual(6 * files);
  });
});

describe('help', () => {
  it('strata help COMMAND and --help work without a repository', () => {
    const env = cliEnv('', { STRATA_REPO: undefined });
    const r = strata(['help', 'cat'], env);
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/--range/);
    expect(r.stdout).toMatch(/Exit codes/);
    expect(strata(['--help'], env).stdout).toMatch(/restore/);
  });
});

function walk(dir: string): string[] {
  const out = [dir];
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) out.push(...walk(p));
    else out.push(p);
  }
  return out;
}

function require_mkfifo(p: string): void {
  const r = require_spawn('mkfifo', [p]);
  if (r !== 0) throw new Error('mkfifo failed');
}

import { execFileSync, spawnSync } from 'node:child_process';
function require_spawn(cmd: string, args: string[]): number {
  return spawnSync(cmd, args).status ?? 1;
}

describe('Ctrl-C', () => {
  it('SIGINT during backup exits 130, keeps earlier snapshots, and the next backup reuses what was stored', async () => {
    const { repo, env } = initCliRepo();
    const src = tempDir();
    fs.writeFileSync(path.join(src, 'small'), 'small');
    expect(strata(['backup', src, '-q'], env).status).toBe(0);
    const rng = new Rng(99);
    const fd = fs.openSync(path.join(src, 'large'), 'w');
    for (let i = 0; i < 24; i++) fs.writeSync(fd, rng.bytes(8 * 1024 * 1024));
    fs.closeSync(fd);
    const child = strataAsync(['backup', src], env);
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    // Interrupt once the first pack of the new data is stored.
    const packsBefore = countPacks(repo);
    const deadline = Date.now() + 20_000;
    while (countPacks(repo) <= packsBefore && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    child.kill('SIGINT');
    const code = await new Promise<number | null>((r) => child.on('exit', (c) => r(c)));
    expect(code).toBe(130);
    expect(stderr).toMatch(/interrupted/);
    expect(JSON.parse(strata(['snapshots', '--json'], env).stdout)).toHaveLength(1);
    const next = JSON.parse(strata(['backup', src, '--json'], env).stdout);
    expect(next.blocksReused).toBeGreaterThan(0);
    expect(strata(['cat', path.join(src, 'small')], env).stdout).toBe('small');
  }, 60_000);
});

function countPacks(repo: string): number {
  const dir = path.join(repo, 'packs');
  if (!fs.existsSync(dir)) return 0;
  return fs.readdirSync(dir).reduce((n, d) => n + fs.readdirSync(path.join(dir, d)).filter((f) => !f.startsWith('.')).length, 0);
}

describe('a read-only repository', () => {
  it.skipIf(process.getuid?.() !== 0)('on a read-only mount can be read; writing fails clearly', () => {
    const { repo, env } = initCliRepo();
    const src = tempDir();
    fs.writeFileSync(path.join(src, 'a'), 'readable');
    expect(strata(['backup', src, '-q'], env).status).toBe(0);
    const ro = tempDir();
    execFileSync('mount', ['--bind', repo, ro]);
    try {
      execFileSync('mount', ['-o', 'remount,ro,bind', ro]);
      const roEnv = { ...env, STRATA_REPO: ro };
      const cat = strata(['cat', path.join(src, 'a')], roEnv);
      expect(cat.stderr).toBe('');
      expect(cat.stdout).toBe('readable');
      expect(strata(['snapshots', '--json'], roEnv).status).toBe(0);
      const write = strata(['backup', src], roEnv);
      expect(write.status).toBe(1);
      expect(write.stderr).toMatch(/read-only/);
      expect(write.stderr).not.toMatch(/\n\s+at /);
    } finally {
      execFileSync('umount', ['-l', ro]);
    }
  });
});

describe('unlock', () => {
  it('removes leases left by processes that are gone and keeps live ones', () => {
    const { repo, env } = initCliRepo();
    const db = new Database(path.join(repo, 'catalog.db'));
    const now = Date.now();
    db.prepare("INSERT INTO leases VALUES ('old', 'backup', 'elsewhere', 1, ?, ?, NULL)").run(now - 3_600_000, now - 3_600_000);
    db.prepare("INSERT INTO leases VALUES ('fresh', 'backup', 'elsewhere', 1, ?, ?, NULL)").run(now, now);
    db.close();
    const r = JSON.parse(strata(['unlock', '--json'], env).stdout);
    expect(r).toEqual({ removed: 1, remaining: 1 });
    expect(JSON.parse(strata(['unlock', '--remove-all', '--json'], env).stdout)).toEqual({ removed: 1, remaining: 0 });
  });
});

describe('progress on a terminal', () => {
  const hasScript = spawnSync('sh', ['-c', 'command -v script']).status === 0;
  it.skipIf(!hasScript)('shows bytes, rate and ETA on a terminal, and stays quiet on a zero-width one', () => {
    const { env } = initCliRepo();
    const src = tempDir();
    fs.writeFileSync(path.join(src, 'f'), new Rng(4).bytes(32 * 1024 * 1024));
    const run = (stty: string) => {
      const log = path.join(tempDir(), 'tty.log');
      const cmd = `${stty}${process.execPath} ${BIN} backup ${src}`;
      // ora (rightly) stays still when CI is set; a person's terminal has no CI.
      const { CI: _ci, ...interactive } = env;
      const r = spawnSync('script', ['-qec', cmd, log], { env: { ...interactive, TERM: 'xterm' }, timeout: 60_000 });
      expect(r.status).toBe(0);
      return fs.readFileSync(log, 'utf8');
    };
    const wide = run('stty cols 100 rows 30; ');
    expect(wide).toMatch(/MiB \/ 32\.0 MiB \([\d.]+%\)/);
    expect(wide).toMatch(/MiB\/s/);
    expect(wide).toMatch(/snapshot [0-9a-f]{8} saved/);
    const narrow = run('stty cols 0; ');
    expect(narrow).not.toMatch(/MiB\/s, /);
    expect(narrow).toMatch(/snapshot [0-9a-f]{8} saved/);
  }, 120_000);
});
