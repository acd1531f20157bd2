/** Test helpers: temp dirs, cheap repositories, a seeded PRNG, running the CLI. */
import { spawn, spawnSync, type SpawnSyncReturns } from 'node:child_process';
import Database from 'better-sqlite3';
import * as fs from 'node:fs';
import { createRequire } from 'node:module';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, expect } from 'vitest';
import { openFile, readRange } from '../src/engine/read.js';
import { rebuildCatalog } from '../src/engine/rebuild.js';
import { findSnapshot } from '../src/engine/snapshot.js';
import { Repository } from '../src/repo/repository.js';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const BIN = path.join(ROOT, 'bin', 'strata.js');

const made: string[] = [];
/** Repositories makeRepo() made: closed at the end (a test that closes one itself closes it twice, harmlessly), never left to the garbage collector's closing of their files. */
const repos: Repository[] = [];
afterAll(() => {
  for (const r of repos.splice(0)) r.close();
  for (const d of made) fs.rmSync(d, { recursive: true, force: true });
});

/** Whether `dir`'s file system takes user.* attributes (tmpfs before Linux 6.6 does not). */
export function takesUserXattrs(dir: string): boolean {
  const probe = path.join(dir, '.probe');
  fs.writeFileSync(probe, '');
  try {
    (createRequire(import.meta.url)('@napi-rs/xattr') as { setAttributeSync(p: string, name: string, value: Uint8Array): void }).setAttributeSync(probe, 'user.probe', Buffer.from('1'));
    return true;
  } catch {
    return false;
  } finally {
    fs.rmSync(probe);
  }
}

export function tempDir(prefix = 'strata-test-'): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  made.push(d);
  return d;
}

/** A repository with cheap key derivation (tests only). */
export async function makeRepo(opts: { chunkAvg?: number; packSize?: number } = {}): Promise<Repository> {
  const dir = path.join(tempDir(), 'repo');
  const repo = await Repository.init(dir, 'test-password', { scrypt: { N: 1024, r: 8, p: 1 }, ...opts });
  repos.push(repo);
  return repo;
}

/** A whole file as a snapshot holds it (read through the catalog, as cat does). */
export async function readWhole(repo: Repository, snapshotId: string, file: string): Promise<Buffer> {
  const f = await openFile(await findSnapshot(repo, { kind: 'id', prefix: snapshotId }), file);
  const parts: Buffer[] = [];
  if (f.version.size > 0) for await (const p of readRange(repo, f.version, 0, f.version.size - 1)) parts.push(Buffer.from(p));
  return Buffer.concat(parts);
}

/** Closes a makeRepo() repository, deletes its catalog, and rebuilds it from the packs. */
export async function loseCatalogAndRebuild(repo: Repository) {
  const root = repo.root;
  repo.close();
  for (const f of fs.readdirSync(root)) if (f.startsWith('catalog.db')) fs.rmSync(path.join(root, f));
  const { repo: fresh } = await Repository.openForRebuild(root, { password: async () => 'test-password' });
  return { fresh, r: await rebuildCatalog(fresh) };
}

/** Deterministic pseudo-random bytes (xorshift32), so failures reproduce. */
export class Rng {
  private s: number;
  constructor(seed: number) {
    this.s = seed >>> 0 || 1;
  }
  next(): number {
    let x = this.s;
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    this.s = x;
    return x;
  }
  int(n: number): number {
    return this.next() % n;
  }
  bytes(n: number): Buffer {
    const b = Buffer.allocUnsafe(n);
    for (let i = 0; i < n; i++) b[i] = this.next() & 0xff;
    return b;
  }
  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)]!;
  }
}

export interface CliResult {
  status: number;
  stdout: string;
  stderr: string;
  raw: Buffer;
}

export function cliEnv(repo: string, extra: Record<string, string | undefined> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, STRATA_REPO: repo, STRATA_PASSWORD: 'pw', NO_COLOR: '1', ...extra };
  for (const k of Object.keys(env)) if (env[k] === undefined) delete env[k];
  return env;
}

/** Runs the built CLI synchronously (`bin`: another copy of it). */
export function strata(args: string[], env: NodeJS.ProcessEnv, opts: { cwd?: string; input?: string | Buffer; uid?: number; gid?: number; bin?: string } = {}): CliResult {
  const r: SpawnSyncReturns<Buffer> = spawnSync(process.execPath, [opts.bin ?? BIN, ...args], {
    env,
    cwd: opts.cwd,
    input: opts.input ?? '',
    maxBuffer: 256 * 1024 * 1024,
    uid: opts.uid,
    gid: opts.gid,
  });
  return { status: r.status ?? -1, stdout: r.stdout.toString('utf8'), stderr: r.stderr.toString('utf8'), raw: r.stdout };
}

export function strataAsync(args: string[], env: NodeJS.ProcessEnv) {
  return spawn(process.execPath, [BIN, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
}

/** A CLI repository with cheap key derivation. */
export function initCliRepo(extra: string[] = []): { repo: string; env: NodeJS.ProcessEnv } {
  const repo = path.join(tempDir(), 'repo');
  const env = cliEnv(repo);
  const r = strata(['init', '--scrypt-n', '1024', ...extra], env);
  if (r.status !== 0) throw new Error(`init failed: ${r.stderr}`);
  return { repo, env };
}

/** Packages the bundled CLI loads at run time (native addons and what they require). */
const RUNTIME_PACKAGES = [
  'better-sqlite3',
  'bindings',
  'file-uri-to-path',
  'zstd-napi',
  // The extended attributes binding and its binary for this platform (a package of its own).
  ...fs.readdirSync(path.join(ROOT, 'node_modules', '@napi-rs')).filter((n) => n.startsWith('xattr')).map((n) => `@napi-rs/${n}`),
];

/**
 * A copy of the built CLI that any user can run: the checkout may sit where
 * others cannot reach (a clone under /root, mode 700). Returns its bin/strata.js.
 */
export function cliForEveryone(): string {
  const dir = tempDir('strata-cli-');
  for (const part of ['bin', 'dist']) fs.cpSync(path.join(ROOT, part), path.join(dir, part), { recursive: true });
  for (const pkg of RUNTIME_PACKAGES) fs.cpSync(path.join(ROOT, 'node_modules', pkg), path.join(dir, 'node_modules', pkg), { recursive: true, dereference: true });
  fs.chmodSync(dir, 0o755);
  return path.join(dir, 'bin', 'strata.js');
}

/** Swaps the blocks of the two 4000-byte files' single data rows (which is which depends on their keyed path ids). */
export function swapSmallBlocks(repo: string): void {
  const db = new Database(path.join(repo, 'catalog.db'));
  try {
    const rows = db.prepare('SELECT t.version, t.block FROM toc t JOIN versions v ON v.id = t.version WHERE v.size = 4000').all() as { version: number; block: Buffer }[];
    expect(rows).toHaveLength(2);
    const set = db.prepare('UPDATE toc SET block = ? WHERE version = ?');
    db.transaction(() => {
      set.run(rows[1]!.block, rows[0]!.version);
      set.run(rows[0]!.block, rows[1]!.version);
    })();
  } finally {
    db.close();
  }
}
