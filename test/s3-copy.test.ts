/**
 * strata copy to and from a repository in a bucket (real Ceph RGW, as the
 * rest of the S3 suite): snapshots of a local repository copied into an
 * s3:// one, and from there into another local one; every copy restores
 * byte-exact; a copy after a new backup copies only that snapshot, and
 * uploads only what it changed.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { cliEnv, initCliRepo, Rng, strata, tempDir } from './helpers.js';
import { bucketName, gatewayProblem, s3Env } from './s3-helpers.js';

const problem = await gatewayProblem();
if (problem) console.warn(`S3 copy suite skipped: ${problem}`);
const suite = problem ? describe.skip : describe;

function ok(args: string[], env: NodeJS.ProcessEnv): string {
  const r = strata(args, env);
  expect(r.status, `${args.join(' ')}: ${r.stderr}`).toBe(0);
  return r.stdout;
}

interface CopyJson {
  copied: number;
  skipped: number;
  bytesRead: number;
  bytesAdded: number;
  snapshots: { source: string; snapshot?: string; parent: string | null }[];
}

const copy = (env: NodeJS.ProcessEnv): CopyJson => JSON.parse(ok(['copy', '--json'], env)) as CopyJson;
const ids = (env: NodeJS.ProcessEnv) => (JSON.parse(ok(['snapshots', '--json'], env)) as { id: string; copiedFrom: string | null }[]);

/** Every entry below `root`: path, type, mode, mtime and, for a file, its size and SHA-256; for a symlink, its target. */
function describeTree(root: string): string[] {
  const out: string[] = [];
  const visit = (dir: string, rel: string) => {
    for (const name of fs.readdirSync(dir).sort()) {
      const p = path.join(dir, name);
      const st = fs.lstatSync(p, { bigint: true });
      const what = st.isFile()
        ? `file ${st.size} ${createHash('sha256').update(fs.readFileSync(p)).digest('hex')}`
        : st.isSymbolicLink()
          ? `link ${fs.readlinkSync(p)}`
          : st.isDirectory()
            ? 'dir'
            : 'other';
      out.push(`${rel}/${name} ${what} ${st.mode.toString(8)} ${st.mtimeNs}`);
      if (st.isDirectory()) visit(p, `${rel}/${name}`);
    }
  };
  visit(root, '');
  return out;
}

/** What a restore of snapshot `id` makes of `src`. */
function restored(env: NodeJS.ProcessEnv, id: string, src: string): string[] {
  const target = tempDir('strata-s3-copy-restore-');
  ok(['restore', '--at', id, '--target', target, '--quiet'], env);
  return describeTree(path.join(target, src));
}

suite('strata copy to and from a bucket', () => {
  const rng = new Rng(2222);
  const src = tempDir('strata-s3-copy-src-');
  const big = rng.bytes(3 * 1024 * 1024);
  let local: { repo: string; env: NodeJS.ProcessEnv };
  let back: { repo: string; env: NodeJS.ProcessEnv };
  const url = `s3://${bucketName('copy')}/r`;
  const bucket = { env: cliEnv(url, { ...s3Env(), STRATA_CACHE_DIR: tempDir('strata-s3-copy-cache-') }) };
  /** The local repository's snapshots, oldest first. */
  const made: string[] = [];
  const backup = () => made.push(ok(['backup', src, '--quiet'], local.env).trim());

  beforeAll(() => {
    local = initCliRepo();
    back = initCliRepo();
    fs.writeFileSync(path.join(src, 'big.bin'), big);
    fs.mkdirSync(path.join(src, 'd', 'e'), { recursive: true });
    for (let i = 0; i < 20; i++) fs.writeFileSync(path.join(src, 'd', `small-${i}.txt`), rng.bytes(100 + i * 997));
    fs.writeFileSync(path.join(src, 'd', 'e', 'empty'), '');
    fs.symlinkSync('../big.bin', path.join(src, 'd', 'link'));
    fs.chmodSync(path.join(src, 'd', 'small-3.txt'), 0o600);
    backup();
    // A few bytes of the big file changed, a file added.
    const changed = Buffer.from(big);
    rng.bytes(64).copy(changed, 1_500_000);
    fs.writeFileSync(path.join(src, 'big.bin'), changed);
    fs.writeFileSync(path.join(src, 'd', 'added.txt'), 'added\n');
    backup();
    expect(strata(['init', '--scrypt-n', '1024'], bucket.env).status).toBe(0);
  });

  it('from a local repository into the bucket: every copy restores byte-exact; a copy after a new backup copies only it, and uploads little', () => {
    const into = { ...bucket.env, STRATA_FROM_REPO: local.repo, STRATA_FROM_PASSWORD: 'pw' };
    const first = copy(into);
    expect(first).toMatchObject({ copied: 2, skipped: 0 });
    expect(first.snapshots.map((s) => s.source)).toEqual(made);
    // The second goes on top of the first's copy.
    expect(first.snapshots[1]!.parent).toBe(first.snapshots[0]!.snapshot);
    expect(ids(bucket.env).map((s) => s.copiedFrom)).toEqual(made);
    for (const [i, c] of first.snapshots.entries()) expect(restored(bucket.env, c.snapshot!, src)).toEqual(restored(local.env, made[i]!, src));

    // Nothing new: nothing copied.
    expect(copy(into)).toMatchObject({ copied: 0, skipped: 2, bytesAdded: 0 });

    // One more backup: only it is copied, and only what it changed goes up.
    fs.appendFileSync(path.join(src, 'd', 'added.txt'), 'more\n');
    backup();
    const next = copy(into);
    expect(next).toMatchObject({ copied: 1, skipped: 2 });
    expect(next.snapshots[0]!.source).toBe(made[2]);
    expect(next.snapshots[0]!.parent).toBe(first.snapshots[1]!.snapshot);
    // A changed small file, trees, TOCs and the record: far less than the 3 MiB file.
    expect(next.bytesAdded).toBeGreaterThan(0);
    expect(next.bytesAdded).toBeLessThan(256 * 1024);
    expect(restored(bucket.env, next.snapshots[0]!.snapshot!, src)).toEqual(restored(local.env, made[2]!, src));
    const check = strata(['check', '--read-data'], bucket.env);
    expect(check.status, check.stderr).toBe(0);
  });

  it('from the bucket into a local repository: byte-exact; again after a new snapshot there, only it', () => {
    const from = (env: NodeJS.ProcessEnv) => ({ ...env, ...s3Env(), STRATA_CACHE_DIR: tempDir('strata-s3-copy-from-cache-'), STRATA_FROM_REPO: url, STRATA_FROM_PASSWORD: 'pw' });
    const inBucket = ids(bucket.env).map((s) => s.id);
    expect(inBucket).toHaveLength(3);
    const first = copy(from(back.env));
    expect(first).toMatchObject({ copied: 3, skipped: 0 });
    expect(first.snapshots.map((s) => s.source)).toEqual(inBucket);
    for (const [i, c] of first.snapshots.entries()) expect(restored(back.env, c.snapshot!, src)).toEqual(restored(local.env, made[i]!, src));
    expect(copy(from(back.env))).toMatchObject({ copied: 0, skipped: 3 });

    // A fourth snapshot, made straight into the bucket: only it comes back.
    fs.writeFileSync(path.join(src, 'd', 'small-7.txt'), 'rewritten\n');
    const fourth = ok(['backup', src, '--quiet'], bucket.env).trim();
    const next = copy(from(back.env));
    expect(next).toMatchObject({ copied: 1, skipped: 3 });
    expect(next.snapshots[0]!.source).toBe(fourth);
    expect(next.bytesAdded).toBeLessThan(256 * 1024);
    expect(restored(back.env, next.snapshots[0]!.snapshot!, src)).toEqual(restored(bucket.env, fourth, src));
    expect(strata(['check', '--read-data'], back.env).status).toBe(0);
  });
});
