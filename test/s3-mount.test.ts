/**
 * strata mount of a repository in a bucket (real Ceph RGW and a real FUSE
 * mount): it follows the bucket as a mount of a directory follows its
 * repository. Backups by another client (a catalog cache of its own) appear
 * under the mount's latest/ within a bound, read byte-exact; a snapshot that
 * client forgets and prunes goes from the mount.
 */
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { cliEnv, Rng, strata, tempDir } from './helpers.js';
import { startMount, stopMounts, until } from './mount-helpers.js';
import { bucketName, gatewayProblem, s3Env } from './s3-helpers.js';

const problem = (await gatewayProblem()) ?? (fs.existsSync('/dev/fuse') ? undefined : 'no /dev/fuse on this machine');
if (problem) console.warn(`S3 mount suite skipped: ${problem}`);
const suite = problem ? describe.skip : describe;

/** A client of the bucket's repository with a catalog cache of its own (another machine, as far as the cache goes). */
const client = (url: string) => cliEnv(url, { ...s3Env(), STRATA_CACHE_DIR: tempDir('strata-s3-mount-cache-') });

function ok(args: string[], env: NodeJS.ProcessEnv): string {
  const r = strata(args, env);
  expect(r.status, `${args.join(' ')}: ${r.stderr}`).toBe(0);
  return r.stdout;
}

suite('strata mount of a repository in a bucket', () => {
  afterAll(() => stopMounts());

  it("follows the bucket: another client's backup appears under latest/ and reads byte-exact; a snapshot it forgets and prunes goes", async () => {
    const url = `s3://${bucketName('mount')}/m`;
    const a = client(url);
    const b = client(url);
    const mounting = client(url);
    ok(['init', '--scrypt-n', '1024'], a);
    const dir = path.join(tempDir('strata-s3-mount-src-'), 'data');
    fs.mkdirSync(dir);
    const big = new Rng(18).bytes(2 * 1024 * 1024);
    fs.writeFileSync(path.join(dir, 'note.txt'), 'one\n');
    fs.writeFileSync(path.join(dir, 'big.bin'), big);
    const first = ok(['backup', dir, '--quiet'], a).trim();
    const mnt = path.join(tempDir(), 'mnt');
    fs.mkdirSync(mnt);
    const m = await startMount(mnt, mounting, []);
    expect(JSON.parse(m.ready)).toMatchObject({ snapshots: 1 });
    expect(await fsp.readlink(path.join(mnt, 'latest'))).toBe(`ids/${first.slice(0, 8)}`);
    expect(await fsp.readFile(path.join(mnt, 'latest', dir, 'note.txt'), 'utf8')).toBe('one\n');

    // Another client backs up after the mount is ready: the mount shows it within a bound.
    const changed = Buffer.from(big);
    changed.write('changed', 1_000_000);
    fs.writeFileSync(path.join(dir, 'big.bin'), changed);
    fs.writeFileSync(path.join(dir, 'note.txt'), 'two\n');
    fs.writeFileSync(path.join(dir, 'new.txt'), 'made after the mount\n');
    const second = ok(['backup', dir, '--quiet'], b).trim();
    await until('the other client\'s snapshot under latest/', async () => (await fsp.readlink(path.join(mnt, 'latest'))) === `ids/${second.slice(0, 8)}`, 20_000);
    expect(await fsp.readFile(path.join(mnt, 'latest', dir, 'note.txt'), 'utf8')).toBe('two\n');
    expect(await fsp.readFile(path.join(mnt, 'latest', dir, 'new.txt'), 'utf8')).toBe('made after the mount\n');
    expect((await fsp.readFile(path.join(mnt, 'latest', dir, 'big.bin'))).equals(changed)).toBe(true);
    // The first is still there, as it was.
    expect((await fsp.readFile(path.join(mnt, 'ids', first.slice(0, 8), dir, 'big.bin'))).equals(big)).toBe(true);

    // The other client forgets and prunes the first: packs leave the bucket, the mount's cache is rebuilt, and the first goes.
    ok(['forget', first.slice(0, 8), '--prune', '-q'], b);
    await until('the forgotten snapshot to go', async () => !(await fsp.readdir(path.join(mnt, 'ids'))).includes(first.slice(0, 8)), 20_000);
    expect(await fsp.readdir(path.join(mnt, 'ids'))).toEqual([second.slice(0, 8)]);
    expect((await fsp.readFile(path.join(mnt, 'latest', dir, 'big.bin'))).equals(changed)).toBe(true);

    m.proc.kill('SIGTERM');
    expect(await m.exited).toBe(0);
  });
});
