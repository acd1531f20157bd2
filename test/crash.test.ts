/**
 * Crash safety: SIGKILL backup, forget --prune and prune at random moments.
 * After every kill: check is clean, every committed snapshot restores
 * byte-exact, and the next run succeeds without storing the same data twice
 * (beyond one pack). A full disk fails cleanly.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { check } from '../src/engine/check.js';
import { openFile, readRange } from '../src/engine/read.js';
import { findSnapshot, listSnapshots } from '../src/engine/snapshot.js';
import { Repository } from '../src/repo/repository.js';
import { initCliRepo, Rng, strata, strataAsync, tempDir } from './helpers.js';

// The test suite kills each operation 12 times (it stays within its time budget); `npm run soak` 200 times.
const KILLS = Number(process.env.STRATA_SOAK_KILLS ?? 12);
const PACK = 64 * 1024;

type Oracle = Map<string, Map<string, Buffer>>;

function snapshotOf(dir: string): Map<string, Buffer> {
  return new Map(fs.readdirSync(dir).map((f) => [path.join(dir, f), fs.readFileSync(path.join(dir, f))]));
}

async function killAt(args: string[], env: NodeJS.ProcessEnv, ms: number): Promise<number | null> {
  const child = strataAsync(args, env);
  const timer = setTimeout(() => child.kill('SIGKILL'), ms);
  const code = await new Promise<number | null>((r) => child.on('exit', (c) => r(c)));
  clearTimeout(timer);
  return code;
}

const verified = new Set<string>();

/** check is clean; snapshots not verified before (or all, with readData) restore byte-exact. */
async function verify(repoDir: string, oracle: Oracle, readData: boolean): Promise<void> {
  const repo = await Repository.open(repoDir, { password: async () => 'pw' });
  try {
    const c = await check(repo, { readData });
    expect(c.errors).toEqual([]);
    expect(c.ok).toBe(true);
    for (const s of (await listSnapshots(repo))) {
      if (!readData && verified.has(s.id)) continue;
      verified.add(s.id);
      const files = oracle.get(s.id);
      expect(files, `snapshot ${s.id} has no oracle`).toBeDefined();
      for (const [name, data] of files!) {
        const f = await openFile((await findSnapshot(repo, { kind: 'id', prefix: s.id })), name);
        const parts: Buffer[] = [];
        if (f.version.size > 0) for await (const p of readRange(repo, f.version, 0, f.version.size - 1)) parts.push(Buffer.from(p));
        if (!Buffer.concat(parts).equals(data)) throw new Error(`${name} in ${s.id.slice(0, 8)} differs`);
      }
    }
  } finally {
    repo.close();
  }
}

function packBytes(repoDir: string): number {
  const dir = path.join(repoDir, 'packs');
  let n = 0;
  for (const d of fs.existsSync(dir) ? fs.readdirSync(dir) : []) for (const f of fs.readdirSync(path.join(dir, d))) n += fs.statSync(path.join(dir, d, f)).size;
  return n;
}

/** Runs a backup to completion and records what it saved. */
function completeBackup(src: string, env: NodeJS.ProcessEnv, oracle: Oracle): { snapshot: string; bytesAdded: number } {
  const r = strata(['backup', src, '--json'], env);
  expect(r.status, r.stderr).toBe(0);
  const j = JSON.parse(r.stdout);
  oracle.set(j.snapshot, snapshotOf(src));
  return j;
}

/** Records snapshots a killed backup managed to commit (the source did not change meanwhile). */
function adoptNew(env: NodeJS.ProcessEnv, oracle: Oracle, state: Map<string, Buffer>): void {
  for (const s of JSON.parse(strata(['snapshots', '--json'], env).stdout) as { id: string }[]) if (!oracle.has(s.id)) oracle.set(s.id, state);
}

describe('SIGKILL at random moments', () => {
  it(`backup, killed ${KILLS} times: committed snapshots survive, the retry stores the new data again only where the kill left a pack half done`, async () => {
    const { repo, env } = initCliRepo(['--chunk-avg', '4K', '--pack-size', '64K']);
    const src = tempDir();
    const rng = new Rng(2024);
    const oracle: Oracle = new Map();
    fs.writeFileSync(path.join(src, 'base'), rng.bytes(100_000));
    completeBackup(src, env, oracle);
    for (let i = 0; i < KILLS; i++) {
      const fresh = 200_000 + rng.int(300_000);
      fs.writeFileSync(path.join(src, `new${i}`), rng.bytes(fresh));
      const state = snapshotOf(src);
      const before = packBytes(repo);
      await killAt(['backup', src], env, 100 + rng.int(400));
      adoptNew(env, oracle, state);
      const uploaded = packBytes(repo) - before;
      await verify(repo, oracle, i % 5 === 4);
      const next = completeBackup(src, env, oracle);
      // The killed run's uploads are reused: new data is stored about once. What a kill can cost
      // beyond that: a pack written but not yet indexed, and a pack's temporary file half written
      // (each up to PACK and one 16 KiB block more), the orphan's blocks stored again by the retry,
      // and the trees, TOCs and records of both runs.
      expect(uploaded + next.bytesAdded).toBeLessThan(fresh + 3 * (PACK + 16 * 1024) + 64 * 1024);
    }
    await verify(repo, oracle, true);
  }, KILLS * 9_000);

  it(`forget --prune, killed ${KILLS} times: survivors stay byte-exact and check stays clean`, async () => {
    const { repo, env } = initCliRepo(['--chunk-avg', '4K', '--pack-size', '64K']);
    const src = tempDir();
    const rng = new Rng(7);
    const oracle: Oracle = new Map();
    const file = path.join(src, 'f');
    let data = rng.bytes(200_000);
    const edit = () => {
      const at = rng.int(data.length);
      data = Buffer.concat([data.subarray(0, at), rng.bytes(1 + rng.int(20_000)), data.subarray(at + rng.int(20_000))]);
      fs.writeFileSync(file, data);
    };
    for (let i = 0; i < 6; i++) {
      edit();
      completeBackup(src, env, oracle);
    }
    for (let i = 0; i < KILLS; i++) {
      edit();
      completeBackup(src, env, oracle);
      const code = await killAt(['forget', '--keep-last', String(3 + rng.int(3)), '--prune'], env, 100 + rng.int(500));
      void code;
      for (const id of [...oracle.keys()]) if (!JSON.parse(strata(['snapshots', '--json'], env).stdout).some((s: { id: string }) => s.id === id)) oracle.delete(id);
      await verify(repo, oracle, i % 5 === 4);
    }
    expect(strata(['prune'], env).status).toBe(0);
    await verify(repo, oracle, true);
  }, KILLS * 9_000);

  it(`prune, killed ${KILLS} times: nothing in use is lost`, async () => {
    const { repo, env } = initCliRepo(['--chunk-avg', '4K', '--pack-size', '64K']);
    const src = tempDir();
    const rng = new Rng(99);
    const oracle: Oracle = new Map();
    for (let i = 0; i < KILLS; i++) {
      fs.writeFileSync(path.join(src, `f${i % 4}`), rng.bytes(100_000 + rng.int(200_000)));
      const made = completeBackup(src, env, oracle);
      if (oracle.size > 3) {
        const oldest = [...oracle.keys()].find((id) => id !== made.snapshot)!;
        expect(strata(['forget', oldest], env).status).toBe(0);
        oracle.delete(oldest);
      }
      await killAt(['prune'], env, 100 + rng.int(400));
      await verify(repo, oracle, i % 5 === 4);
    }
    // Packs a killed prune wrote but never indexed go once they are older than
    // the prune that finds them (a running writer's newest pack is never touched).
    await new Promise((r) => setTimeout(r, 1100));
    expect(strata(['prune'], env).status).toBe(0);
    await verify(repo, oracle, true);
    const r = JSON.parse(strata(['prune', '--json'], env).stdout);
    expect(r.orphanPacks).toBe(0);
  }, KILLS * 9_000);
});

describe('a full disk', () => {
  const root = process.getuid?.() === 0;
  it.skipIf(!root)('ENOSPC during backup fails with a clear message and leaves the repository as it was', async () => {
    const mount = tempDir();
    // Room for the repository's first small backup (its catalog's log grows on a busy machine), not for 20 MiB more.
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=8m', 'tmpfs', mount]);
    try {
      const repoDir = path.join(mount, 'repo');
      const { env } = initCliRepo();
      env.STRATA_REPO = repoDir;
      expect(strata(['init', '--scrypt-n', '1024', '--pack-size', '256K'], env).status).toBe(0);
      const src = tempDir();
      const oracle: Oracle = new Map();
      fs.writeFileSync(path.join(src, 'small'), 'small');
      completeBackup(src, env, oracle);
      fs.writeFileSync(path.join(src, 'big'), new Rng(1).bytes(20 * 1024 * 1024));
      const r = strata(['backup', src], env);
      expect(r.status).toBe(1);
      expect(r.stderr).toMatch(/no space left on device/);
      expect(r.stderr).not.toMatch(/\n\s+at /);
      fs.rmSync(path.join(src, 'big'));
      await verify(repoDir, oracle, true);
      // Space comes back and the repository works on.
      expect(strata(['prune'], env).status).toBe(0);
      fs.writeFileSync(path.join(src, 'more'), 'more');
      completeBackup(src, env, oracle);
      await verify(repoDir, oracle, true);
    } finally {
      execFileSync('umount', ['-l', mount]);
    }
  }, 60_000);
});
