/**
 * strata copy, through the CLI: a chain of snapshots with edits copied into
 * another repository, each copy restored byte-exact and metadata-equal to a
 * restore of its source; a second copy copies nothing; filters; a served
 * source and a served destination; an interrupted copy leaves the
 * destination clean and the next one finishes it; copied incrementals hold
 * reference blocks.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import { createRequire } from 'node:module';
import * as path from 'node:path';
import Database from 'better-sqlite3';
import { describe, expect, it } from 'vitest';
import { backup } from '../src/engine/backup.js';
import { copySnapshots, type CopyProgress } from '../src/engine/copy.js';
import { cliEnv, initCliRepo, makeRepo, Rng, ROOT, strata, strataAsync, takesUserXattrs, tempDir } from './helpers.js';
import { client, serve, token } from './server-helpers.js';

const xattr = createRequire(import.meta.url)('@napi-rs/xattr') as {
  listAttributesSync(p: string): string[];
  getAttributeSync(p: string, name: string): Buffer | null;
  setAttributeSync(p: string, name: string, value: Uint8Array): void;
};

function ok(args: string[], env: NodeJS.ProcessEnv) {
  const r = strata(args, env);
  expect(r.status, `${args.join(' ')}: ${r.stderr}`).toBe(0);
  return r;
}

/** The environment of a copy from `from` (a directory) into `env`'s repository. */
function copyEnv(env: NodeJS.ProcessEnv, from: string, extra: Record<string, string | undefined> = {}): NodeJS.ProcessEnv {
  return { ...env, STRATA_FROM_REPO: from, STRATA_FROM_PASSWORD: 'pw', ...extra };
}

interface CopyJson {
  copied: number;
  skipped: number;
  bytesRead: number;
  bytesAdded: number;
  snapshots: { source: string; snapshot?: string; parent: string | null; filesUnchanged: number; bytesRead: number; refEntries: number }[];
}

function copy(env: NodeJS.ProcessEnv, args: string[] = []): CopyJson {
  return JSON.parse(ok(['copy', '--json', ...args], env).stdout) as CopyJson;
}

/** A long command run without blocking this worker (a blocked test worker misses its runner's messages). */
async function okAsync(args: string[], env: NodeJS.ProcessEnv): Promise<string> {
  const child = strataAsync(args, env);
  let out = '';
  let err = '';
  child.stdout.on('data', (c: Buffer) => (out += c.toString()));
  child.stderr.on('data', (c: Buffer) => (err += c.toString()));
  const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
  expect(code, `${args.join(' ')}: ${err}`).toBe(0);
  return out;
}

interface SnapJson {
  id: string;
  time: string;
  host: string;
  tags: string[];
  paths: string[];
  partial: boolean;
  unreadable: number;
  files: number;
  bytesTotal: number;
  copiedFrom: string | null;
}

const snapshots = (env: NodeJS.ProcessEnv) => JSON.parse(ok(['snapshots', '--json'], env).stdout) as SnapJson[];

/**
 * Everything a restore made below `root`, one line per entry in name order:
 * its path (bytes, as hex when not UTF-8), type, mode, owner, mtime to the
 * nanosecond, size, content hash, link target, device number, user.*
 * attributes, and which earlier path it is a hard link of.
 */
function describeTree(root: string): string[] {
  const out: string[] = [];
  const inodes = new Map<bigint, string>();
  const visit = (dir: Buffer, rel: string) => {
    const names = fs.readdirSync(dir, { encoding: 'buffer' }).sort(Buffer.compare);
    for (const n of names) {
      const p = Buffer.concat([dir, Buffer.from('/'), n]);
      const text = n.toString('utf8');
      const name = Buffer.from(text, 'utf8').equals(n) ? text : `hex:${n.toString('hex')}`;
      const r = `${rel}/${name}`;
      const st = fs.lstatSync(p, { bigint: true });
      const type = st.isDirectory() ? 'dir' : st.isFile() ? 'file' : st.isSymbolicLink() ? 'link' : st.isFIFO() ? 'fifo' : st.isCharacterDevice() ? 'chr' : 'other';
      let extra = '';
      if (st.isFile()) {
        extra = `${st.size} ${createHash('sha256').update(fs.readFileSync(p)).digest('hex')}`;
        if (st.nlink > 1n) {
          const first = inodes.get(st.ino);
          if (first) extra += ` link-of ${first}`;
          else inodes.set(st.ino, r);
        }
      } else if (st.isSymbolicLink()) extra = fs.readlinkSync(p, { encoding: 'buffer' }).toString('hex');
      else if (st.isCharacterDevice()) extra = String(st.rdev);
      let attrs = '';
      const whole = p.toString('utf8');
      if (Buffer.from(whole, 'utf8').equals(p) && !st.isSymbolicLink()) {
        attrs = xattr
          .listAttributesSync(whole)
          .filter((a) => a.startsWith('user.'))
          .sort()
          .map((a) => `${a}=${xattr.getAttributeSync(whole, a)!.toString('hex')}`)
          .join(',');
      }
      out.push(`${r} ${type} ${st.mode.toString(8)} ${st.uid}:${st.gid} ${st.mtimeNs} ${extra} ${attrs}`);
      if (st.isDirectory()) visit(p, r);
    }
  };
  visit(Buffer.from(root), '');
  return out;
}

/** A source tree of every kind of entry, and what a later backup of it changes. */
function makeSource(base: string, rng: Rng): { src: string; edits: ((src: string) => void)[] } {
  const src = path.join(base, 'src');
  fs.mkdirSync(path.join(src, 'docs', 'deep'), { recursive: true });
  fs.mkdirSync(path.join(src, 'empty'));
  fs.writeFileSync(path.join(src, 'big.bin'), rng.bytes(1_500_000));
  fs.writeFileSync(path.join(src, 'touched.bin'), rng.bytes(400_000));
  fs.writeFileSync(path.join(src, 'docs', 'a.txt'), 'alpha\n'.repeat(1000));
  fs.writeFileSync(path.join(src, 'docs', 'deep', 'b.txt'), 'beta');
  fs.writeFileSync(path.join(src, 'empty.txt'), '');
  fs.writeFileSync(path.join(src, 'mode.sh'), '#!/bin/sh\n', { mode: 0o750 });
  fs.linkSync(path.join(src, 'docs', 'a.txt'), path.join(src, 'hardlink.txt'));
  fs.symlinkSync('docs/a.txt', path.join(src, 'link'));
  fs.symlinkSync('/nowhere/at/all', path.join(src, 'dangling'));
  fs.writeFileSync(Buffer.from(`${src}/latin-\xe9.txt`, 'latin1'), 'not utf-8 name');
  fs.mkdirSync(Buffer.from(`${src}/dir-\xff`, 'latin1'));
  fs.writeFileSync(Buffer.from(`${src}/dir-\xff/inside`, 'latin1'), 'inside');
  // coreutils' mkfifo: Node has no call for it.
  execFileSync('mkfifo', [path.join(src, 'pipe')]);
  if (takesUserXattrs(src)) {
    xattr.setAttributeSync(path.join(src, 'docs', 'a.txt'), 'user.note', Buffer.from([0, 1, 2, 255]));
    xattr.setAttributeSync(path.join(src, 'docs'), 'user.dir', Buffer.from('d'));
  }
  if (process.getuid?.() === 0) fs.lchownSync(path.join(src, 'docs', 'deep', 'b.txt'), 65534, 65534);
  fs.utimesSync(path.join(src, 'docs', 'deep', 'b.txt'), new Date('2001-02-03T04:05:06.789Z'), new Date('2001-02-03T04:05:06.789Z'));
  const edits = [
    (s: string) => {
      // A few bytes changed in the middle of the big file, a file added, one removed, a mode changed.
      const fd = fs.openSync(path.join(s, 'big.bin'), 'r+');
      fs.writeSync(fd, Buffer.from('CHANGED'), 0, 7, 700_000);
      fs.closeSync(fd);
      fs.writeFileSync(path.join(s, 'docs', 'new.txt'), 'new file');
      fs.rmSync(path.join(s, 'docs', 'deep', 'b.txt'));
      fs.chmodSync(path.join(s, 'mode.sh'), 0o700);
    },
    (s: string) => {
      // Appended to, touched without a change of bytes, a directory renamed.
      fs.appendFileSync(path.join(s, 'big.bin'), Buffer.alloc(50_000, 7));
      fs.utimesSync(path.join(s, 'docs', 'a.txt'), new Date('2020-01-01T00:00:00Z'), new Date('2020-01-01T00:00:00Z'));
      // Of many blocks: the copy proves its inherited version by the content mark.
      fs.utimesSync(path.join(s, 'touched.bin'), new Date('2020-01-01T00:00:00Z'), new Date('2020-01-01T00:00:00Z'));
      fs.renameSync(path.join(s, 'docs', 'deep'), path.join(s, 'docs', 'deeper'));
      fs.writeFileSync(path.join(s, 'docs', 'deeper', 'c.txt'), 'gamma');
    },
  ];
  return { src, edits };
}

/**
 * Backs up the chain: the first snapshot, then one per edit, each on top of
 * the one before; then a partial one (a source that does not exist, so of
 * other paths: a chain of its own).
 */
function backupChain(env: NodeJS.ProcessEnv, src: string, edits: ((s: string) => void)[]): string[] {
  const ids: string[] = [];
  const time = (i: number) => `2026-03-0${i + 1}T10:00:00Z`;
  const tags = ['daily,first', ...edits.map((_, i) => (i === edits.length - 1 ? 'daily,last' : 'daily'))];
  [undefined, ...edits].forEach((edit, i) => {
    edit?.(src);
    ids.push(ok(['backup', src, '--quiet', '--time', time(i), '--tag', tags[i]!, '--host', 'alpha'], env).stdout.trim());
  });
  const r = strata(['backup', src, path.join(src, '..', 'missing'), '--quiet', '--time', time(ids.length), '--tag', 'weekly', '--host', 'alpha'], env);
  expect(r.status, r.stderr).toBe(3);
  ids.push(r.stdout.trim());
  return ids;
}

function restored(env: NodeJS.ProcessEnv, id: string, src: string): string[] {
  const target = path.join(tempDir(), 'restore');
  ok(['restore', '--at', id, '--target', target, '--quiet'], env);
  return describeTree(path.join(target, src));
}

/** The fields of `snapshots --json` a copy keeps. */
const kept = (s: SnapJson) => ({ time: s.time, host: s.host, tags: s.tags, paths: s.paths, partial: s.partial, unreadable: s.unreadable, files: s.files, bytesTotal: s.bytesTotal });

describe('copy', () => {
  it('copies a chain of snapshots: every copy restores as its source does, a second copy copies nothing, incrementals keep reference blocks', () => {
    const base = tempDir();
    const { src, edits } = makeSource(base, new Rng(22));
    const from = initCliRepo();
    const ids = backupChain(from.env, src, edits);
    const to = initCliRepo();
    const env = copyEnv(to.env, from.repo);

    // A dry run says what it would copy and stores nothing.
    const dry = JSON.parse(ok(['copy', '--dry-run', '--json'], env).stdout) as CopyJson & { dryRun: boolean };
    expect(dry).toMatchObject({ copied: 4, skipped: 0, dryRun: true });
    expect(snapshots(to.env)).toEqual([]);

    const first = copy(env);
    expect(first.copied).toBe(4);
    expect(first.skipped).toBe(0);
    expect(first.snapshots.map((s) => s.source)).toEqual(ids);
    // Each goes on top of the copy of its source parent; the partial one, of other paths, had none.
    expect(first.snapshots.map((s) => s.parent)).toEqual([null, first.snapshots[0]!.snapshot, first.snapshots[1]!.snapshot, null]);
    // Unchanged files were inherited from the copy below, not read again.
    expect(first.snapshots[1]!.filesUnchanged).toBeGreaterThan(0);
    // The third read the appended big file (1.55 MB) and the new one, not the touched 400 KB one.
    expect(first.snapshots[2]!.bytesRead).toBeGreaterThan(1_550_000);
    expect(first.snapshots[2]!.bytesRead).toBeLessThan(1_700_000);
    expect(first.bytesAdded).toBeGreaterThan(0);

    const theirs = snapshots(from.env);
    const ours = snapshots(to.env);
    expect(ours.map(kept)).toEqual(theirs.map(kept));
    expect(ours.map((s) => s.partial)).toEqual([false, false, false, true]);
    expect(ours.map((s) => s.copiedFrom)).toEqual(ids);
    expect(theirs.map((s) => s.copiedFrom)).toEqual(ids.map(() => null));
    for (let i = 0; i < ids.length; i++) {
      const want = restored(from.env, ids[i]!, src);
      // Every kind of entry is there to compare.
      for (const kind of [' fifo ', ' link ', 'link-of', '/hex:', '/empty dir', 'user.note=000102ff', 'user.dir=']) expect(want.join('\n')).toContain(kind);
      expect(restored(to.env, first.snapshots[i]!.snapshot!, src)).toEqual(want);
    }
    // The copied chain deduplicates: the second snapshot added far less than the first.
    expect(ours[1]!.bytesTotal).toBeGreaterThan(1_500_000);

    // The copied incremental's TOC holds reference blocks into the copy of its parent.
    const toc = JSON.parse(ok(['toc', '--at', first.snapshots[1]!.snapshot!, path.join(src, 'big.bin'), '--json'], to.env).stdout) as { kind: string; target?: { snapshot: string } }[];
    const refs = toc.filter((e) => e.kind === 'ref');
    expect(refs.length).toBeGreaterThan(0);
    expect(refs.every((e) => e.target!.snapshot === first.snapshots[0]!.snapshot)).toBe(true);
    expect(toc.some((e) => e.kind === 'data')).toBe(true);

    // Again: nothing is missing, nothing is copied.
    const second = copy(env);
    expect(second).toMatchObject({ copied: 0, skipped: 4, bytesRead: 0, bytesAdded: 0 });
    expect(snapshots(to.env)).toHaveLength(4);
    // Nor back: the copies are the source's own snapshots.
    expect(copy(copyEnv(from.env, to.repo))).toMatchObject({ copied: 0, skipped: 4 });
    ok(['check'], to.env);
    // A backup here of the same tree goes on top of the copy and finds nothing changed: it reads no file.
    const next = JSON.parse(ok(['backup', src, '--host', 'alpha', '--json'], to.env).stdout) as { parent: string; filesNew: number; filesChanged: number; bytesRead: number };
    expect(next).toMatchObject({ parent: first.snapshots[2]!.snapshot, filesNew: 0, filesChanged: 0, bytesRead: 0 });
    // The record of where each came from survives a rebuilt catalog.
    ok(['rebuild-catalog', '--quiet'], to.env);
    expect(copy(env)).toMatchObject({ copied: 0, skipped: 4 });
  });

  it('copies only the snapshots named or filtered, each on top of its nearest copied ancestor', () => {
    const base = tempDir();
    const { src, edits } = makeSource(base, new Rng(5));
    const from = initCliRepo();
    const ids = backupChain(from.env, src, edits);
    const to = initCliRepo();
    const env = copyEnv(to.env, from.repo);
    // "daily,first" is the first snapshot alone, "last" the third.
    expect(copy(env, ['--tag', 'daily,first']).snapshots.map((s) => s.source)).toEqual([ids[0]]);
    const last = copy(env, ['--tag', 'last']);
    expect(last.snapshots.map((s) => s.source)).toEqual([ids[2]]);
    // Its source parent is not copied: it goes on top of the copy of the first.
    const copies = snapshots(to.env);
    expect(last.snapshots[0]!.parent).toBe(copies[0]!.id);
    expect(restored(to.env, last.snapshots[0]!.snapshot!, src)).toEqual(restored(from.env, ids[2]!, src));
    // A host that has none copies nothing; by id prefix; repeated tags are any of them.
    expect(copy(env, ['--host', 'nobody']).copied).toBe(0);
    expect(copy(env, [ids[1]!.slice(0, 8)]).snapshots.map((s) => s.source)).toEqual([ids[1]]);
    expect(copy(env, ['--tag', 'weekly', '--tag', 'first']).snapshots.map((s) => s.source)).toEqual([ids[3]]);
    expect(copy(env).copied).toBe(0);
    ok(['check'], to.env);
  });

  it('refuses clearly: a wrong source password, the same repository twice, a missing snapshot, no source', () => {
    const from = initCliRepo();
    const src = path.join(tempDir(), 'src');
    fs.mkdirSync(src);
    fs.writeFileSync(path.join(src, 'f'), 'f');
    ok(['backup', src, '--quiet'], from.env);
    const to = initCliRepo();
    const wrong = strata(['copy'], copyEnv(to.env, from.repo, { STRATA_FROM_PASSWORD: 'nope' }));
    expect(wrong.status).toBe(12);
    expect(wrong.stderr).toContain('source repository');
    const noPassword = strata(['copy', '--from-repo', from.repo], { ...to.env });
    expect(noPassword.status).toBe(12);
    expect(noPassword.stderr).toContain('STRATA_FROM_PASSWORD');
    const same = strata(['copy', '--from-repo', to.repo], copyEnv(to.env, to.repo));
    expect(same.status).toBe(2);
    expect(same.stderr).toContain('same repository');
    const missing = strata(['copy', 'ffffffff', '--json'], copyEnv(to.env, from.repo));
    expect(missing.status).toBe(1);
    expect(JSON.parse(missing.stdout)).toMatchObject({ error: 'not_found' });
    const none = strata(['copy'], to.env);
    expect(none.status).toBe(2);
    expect(none.stderr).toContain('--from-repo');
    // A password file and a key file name the source's credentials too.
    const pwFile = path.join(tempDir(), 'pw');
    fs.writeFileSync(pwFile, 'pw\n');
    const r = strata(['copy', '--from-repo', from.repo, '--from-password-file', pwFile, '--json'], to.env);
    expect(r.status, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ copied: 1 });
  });

  it('copies from a served repository, and into one', async () => {
    const base = tempDir();
    const { src, edits } = makeSource(base, new Rng(9));
    const from = initCliRepo();
    const ids = backupChain(from.env, src, edits.slice(0, 1));
    const server = await serve(from.repo);
    const reader = token(from.repo, 'reader', 'read');
    const to = initCliRepo();
    const env = copyEnv(to.env, server.url, { STRATA_FROM_TOKEN: reader, STRATA_CACHE_DIR: path.join(tempDir(), 'cache') });
    const r = copy(env);
    expect(r.copied).toBe(3);
    for (let i = 0; i < ids.length; i++) expect(restored(to.env, r.snapshots[i]!.snapshot!, src)).toEqual(restored(from.env, ids[i]!, src));
    expect(copy(env).copied).toBe(0);

    // The other way: from a directory into a server's repository.
    const far = initCliRepo();
    const farServer = await serve(far.repo);
    const writer = token(far.repo, 'writer', 'append');
    const into = client(farServer.url, writer, { STRATA_FROM_REPO: from.repo, STRATA_FROM_PASSWORD: 'pw' });
    const back = copy(into);
    expect(back.copied).toBe(3);
    expect(back.snapshots[1]!.parent).toBe(back.snapshots[0]!.snapshot);
    expect(restored(cliEnv(far.repo), back.snapshots[1]!.snapshot!, src)).toEqual(restored(from.env, ids[1]!, src));
    expect(copy(into).copied).toBe(0);
    ok(['check'], cliEnv(far.repo));
  });

  it('copies from a repository of format version 1 (with its key file): every file reads back byte-exact', () => {
    const source = path.join(tempDir(), 'repo');
    fs.cpSync(path.join(ROOT, 'fixtures', 'repo-v1'), source, { recursive: true });
    const expected = JSON.parse(fs.readFileSync(path.join(ROOT, 'fixtures', 'repo-v1.expected.json'), 'utf8')) as { files: Record<string, Record<string, string>> };
    const to = initCliRepo();
    const r = JSON.parse(ok(['copy', '--from-repo', source, '--from-key-file', path.join(ROOT, 'fixtures', 'repo-v1.key.json'), '--json'], to.env).stdout) as CopyJson;
    expect(r.snapshots.map((s) => s.source)).toEqual(Object.keys(expected.files));
    for (const c of r.snapshots) {
      for (const [file, sha] of Object.entries(expected.files[c.source]!)) {
        const cat = strata(['cat', file, '--at', c.snapshot!], to.env);
        expect(cat.status, cat.stderr).toBe(0);
        expect(createHash('sha256').update(cat.raw).digest('hex')).toBe(sha);
      }
    }
    ok(['check'], to.env);
  });

  it('an interrupted copy leaves the destination clean, and the next one finishes it', async () => {
    const src = path.join(tempDir(), 'src');
    fs.mkdirSync(src);
    const rng = new Rng(130);
    const from = initCliRepo();
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) {
      // Each snapshot a large file of new bytes: copying one takes a while.
      fs.writeFileSync(path.join(src, `part${i}`), rng.bytes(24_000_000));
      ids.push((await okAsync(['backup', src, '--quiet', '--time', `2026-04-0${i + 1}T00:00:00Z`], from.env)).trim());
    }
    const to = initCliRepo();
    const env = copyEnv(to.env, from.repo);
    const child = strataAsync(['copy'], env);
    let out = '';
    let err = '';
    child.stderr.on('data', (c: Buffer) => (err += c.toString()));
    const code = await new Promise<number | null>((resolve) => {
      let sent = false;
      child.stdout.on('data', (c: Buffer) => {
        out += c.toString();
        // The first snapshot is in: stop in the middle of the second.
        if (!sent && out.includes('copied as')) {
          sent = true;
          child.kill('SIGINT');
        }
      });
      child.on('exit', (c) => resolve(c));
    });
    expect(code, err).toBe(130);
    expect(err).toContain('interrupted');
    const after = snapshots(to.env);
    expect(after.length).toBeGreaterThanOrEqual(1);
    expect(after.length).toBeLessThan(3);
    ok(['check'], to.env);
    const rest = JSON.parse(await okAsync(['copy', '--json'], env)) as CopyJson;
    expect(rest.copied).toBe(3 - after.length);
    expect(rest.skipped).toBe(after.length);
    ok(['check'], to.env);
    const all = snapshots(to.env);
    expect(all).toHaveLength(3);
    const target = path.join(tempDir(), 'r');
    await okAsync(['restore', '--at', all[2]!.id, '--target', target, '--quiet'], to.env);
    for (let i = 0; i < 3; i++) {
      const want = createHash('sha256').update(fs.readFileSync(path.join(src, `part${i}`))).digest('hex');
      expect(createHash('sha256').update(fs.readFileSync(path.join(target, src, `part${i}`))).digest('hex')).toBe(want);
    }
  }, 180_000);
  it("carries item indexes over: a copied mailbox or tar archive is read through its index, sealed again with the destination's key", () => {
    const from = initCliRepo();
    const data = path.join(tempDir(), 'data');
    const files = path.join(tempDir(), 'files');
    fs.mkdirSync(data);
    fs.mkdirSync(files);
    const rng = new Rng(44);
    const messages = Array.from({ length: 2030 }, (_, n) => `From s@example.org Mon Jan  1 00:00:00 2024\nMessage-ID: <m${n}@example.org>\nSubject: s${n}\n\n${'body '.repeat(rng.int(200))}\n>From quoted\n\n`);
    const message = (n: number) => messages[n]!;
    const mbox = path.join(data, 'mail.mbox');
    const tar = path.join(data, 'files.tar');
    fs.writeFileSync(mbox, Array.from({ length: 2000 }, (_, n) => message(n)).join(''));
    for (let i = 0; i < 20; i++) fs.writeFileSync(path.join(files, `f${i}.bin`), rng.bytes(rng.int(30_000)));
    execFileSync('tar', ['--format=gnu', '-cf', tar, ...fs.readdirSync(files).sort()], { cwd: files });
    ok(['backup', data, '--quiet'], from.env);
    // The mailbox grows; the archive stays as it was (its copy inherits the index of the first copy).
    fs.appendFileSync(mbox, Array.from({ length: 30 }, (_, n) => message(2000 + n)).join(''));
    fs.writeFileSync(path.join(data, 'note.txt'), 'new');
    ok(['backup', data, '--quiet'], from.env);
    const to = initCliRepo();
    expect(copy(copyEnv(to.env, from.repo)).copied).toBe(2);
    const json = <T>(args: string[], env: NodeJS.ProcessEnv) => JSON.parse(ok([...args, '--json'], env).stdout) as T;
    type Manifest = { datasets: { path: string; index?: string; items?: number }[] };
    const [first, second] = snapshots(to.env);
    const m1 = json<Manifest>(['manifest', '--at', first!.id], to.env).datasets;
    const m2 = json<Manifest>(['manifest', '--at', second!.id], to.env).datasets;
    expect(m1.find((d) => d.path === mbox)).toMatchObject({ items: 2000, index: expect.stringMatching(/^[0-9a-f]{64}$/) });
    expect(m2.find((d) => d.path === mbox)).toMatchObject({ items: 2030 });
    expect(m2.find((d) => d.path === mbox)!.index).not.toBe(m1.find((d) => d.path === mbox)!.index);
    expect(m2.find((d) => d.path === tar)!.index).toBe(m1.find((d) => d.path === tar)!.index);
    // Sealed for the destination: not the source's ids.
    const src2 = json<Manifest>(['manifest'], from.env).datasets;
    expect(src2.find((d) => d.path === mbox)!.index).not.toBe(m2.find((d) => d.path === mbox)!.index);
    for (const [at, count] of [[first!.id, 2000], [second!.id, 2030]] as const) {
      const listed = json<{ items: { number: number }[]; indexFetched?: number }>(['items', mbox, '--at', at], to.env);
      expect(listed.items).toHaveLength(count);
      expect(listed.indexFetched).toBeGreaterThan(0);
      const one = strata(['item', mbox, String(count), '--at', at], to.env);
      expect(one.status, one.stderr).toBe(0);
      expect(one.stdout).toBe(message(count - 1).replace(/^From .*\n/, '').replace('>From quoted', 'From quoted').replace(/\n$/, ''));
      const entries = json<{ items: { name: string }[]; indexFetched?: number }>(['items', tar, '--at', at], to.env);
      expect(entries.indexFetched).toBeGreaterThan(0);
      expect(entries.items.map((e) => e.name)).toEqual(fs.readdirSync(files).sort());
      expect(strata(['item', tar, 'f7.bin', '--at', at], to.env).raw.equals(fs.readFileSync(path.join(files, 'f7.bin')))).toBe(true);
    }
    ok(['check'], to.env);
    // The first copy's index outlives the snapshot it was made for: the second uses it too.
    ok(['forget', first!.id, '--prune', '--quiet'], to.env);
    ok(['check', '--read-data'], to.env);
    expect(json<{ indexFetched?: number }>(['items', tar], to.env).indexFetched).toBeGreaterThan(0);
  }, 120_000);
  it('keeps the source snapshots it reads from a forget of the source meanwhile', async () => {
    const src = path.join(tempDir(), 'src');
    fs.mkdirSync(src);
    const rng = new Rng(77);
    const from = initCliRepo();
    fs.writeFileSync(path.join(src, 'a'), rng.bytes(100_000));
    const first = (await okAsync(['backup', src, '--quiet', '--time', '2026-05-01T00:00:00Z'], from.env)).trim();
    // The second snapshot a large file of new bytes: its copy takes a while.
    fs.writeFileSync(path.join(src, 'b'), rng.bytes(48_000_000));
    const second = (await okAsync(['backup', src, '--quiet', '--time', '2026-05-02T00:00:00Z'], from.env)).trim();
    const to = initCliRepo();
    const child = strataAsync(['copy', '--quiet'], copyEnv(to.env, from.repo));
    let err = '';
    child.stderr.on('data', (c: Buffer) => (err += c.toString()));
    const exited = new Promise<number | null>((resolve) => child.on('exit', resolve));
    // Caught while it copies the second snapshot on top of the first's copy: both are leased in the source.
    const catalog = new Database(path.join(from.repo, 'catalog.db'), { readonly: true });
    try {
      for (let n = 0; (catalog.prepare("SELECT count(*) AS n FROM leases WHERE kind = 'mount'").get() as { n: number }).n < 2; n++) {
        expect(n, 'the copy never leased its source snapshots').toBeLessThan(3000);
        await new Promise((r) => setTimeout(r, 10));
      }
    } finally {
      catalog.close();
    }
    child.kill('SIGSTOP');
    try {
      const named = strata(['forget', second], from.env);
      expect(named.status, named.stderr).toBe(11);
      expect(named.stderr).toContain(`not forgetting snapshot ${second.slice(0, 8)} (leased by process ${child.pid} on this host): a writable mount (strata mount --writable) is based on it, or a copy (strata copy) is reading it; nothing was removed`);
      const policy = JSON.parse(ok(['forget', '--keep-last', '1', '--prune', '--json'], from.env).stdout) as { removed: string[]; groups: { keep: { id: string; reasons: string[] }[] }[] };
      expect(policy.removed).toEqual([]);
      expect(policy.groups[0]!.keep.find((k) => k.id === first)!.reasons).toEqual([`held by a writable mount or a copy (leased by process ${child.pid} on this host)`]);
    } finally {
      child.kill('SIGCONT');
    }
    expect(await exited, err).toBe(0);
    const copies = snapshots(to.env);
    expect(copies).toHaveLength(2);
    expect(restored(to.env, copies[1]!.id, src)).toEqual(restored(from.env, second, src));
    // Once the copy has ended, the forget goes through.
    expect((JSON.parse(ok(['forget', '--keep-last', '1', '--json'], from.env).stdout) as { removed: string[] }).removed).toEqual([first]);
  }, 120_000);
  it("reports progress to the end: a directory kept whole from the last copy counts its snapshot's bytes as done", async () => {
    const src = path.join(tempDir(), 'src');
    const rng = new Rng(91);
    fs.mkdirSync(path.join(src, 'same'), { recursive: true });
    for (let i = 0; i < 5; i++) fs.writeFileSync(path.join(src, 'same', `f${i}`), rng.bytes(20_000));
    fs.writeFileSync(path.join(src, 'top'), rng.bytes(5000));
    const from = await makeRepo();
    const to = await makeRepo();
    await backup(from, { paths: [src], time: Date.UTC(2026, 5, 1) });
    fs.writeFileSync(path.join(src, 'top'), rng.bytes(6000));
    await backup(from, { paths: [src], time: Date.UTC(2026, 5, 2) });
    let last: CopyProgress | undefined;
    const r = await copySnapshots(from, to, { onProgress: (p) => (last = { ...p }) });
    expect(r.copied).toHaveLength(2);
    expect(last).toMatchObject({ snapshot: 2, snapshots: 2, bytesTotal: 2 * 100_000 + 5000 + 6000 });
    expect(last!.bytesDone).toBe(last!.bytesTotal);
  });
});
