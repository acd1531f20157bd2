/**
 * The local block cache: hits and misses, sharing between instances and
 * processes, the size bound with LRU eviction, atomic entries, and a cache
 * that cannot be written.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';
import { afterEach, describe, expect, it } from 'vitest';
import { cachedDictionary } from '../src/catalog/service.js';
import { BlockCache, DEFAULT_CACHE_BYTES, defaultCacheDir } from '../src/storage/cache.js';

const REPO = '0123abcd';
const made: string[] = [];
afterEach(() => {
  for (const d of made.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});

function tempDir(): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'strata-cache-'));
  made.push(d);
  return d;
}

function id(n: number): Buffer {
  return createHash('sha256').update(`block ${n}`).digest();
}

function entryFile(dir: string, block: Uint8Array): string {
  const hex = Buffer.from(block).toString('hex');
  return path.join(dir, REPO, hex.slice(0, 2), hex);
}

/** Every file under the repository's cache directory, relative to it. */
function filesIn(dir: string): string[] {
  return (fs.readdirSync(path.join(dir, REPO), { recursive: true }) as string[]).filter((f) => fs.statSync(path.join(dir, REPO, f)).isFile());
}

/** The cache's entries (files named by a block id), relative to its directory. */
function entries(dir: string): string[] {
  return filesIn(dir).filter((f) => /^[0-9a-f]{2}\/[0-9a-f]{64}$/.test(f));
}

function tempFiles(dir: string): string[] {
  return filesIn(dir).filter((f) => path.basename(f).startsWith('.tmp-'));
}

/** Sets an entry's last use to `secondsAgo` in the past. */
function age(file: string, secondsAgo: number): void {
  const t = new Date(Date.now() - secondsAgo * 1000);
  fs.utimesSync(file, t, t);
}

describe('BlockCache', () => {
  it('returns what was put as a hit and an unknown id as a miss, in a 0700 directory', () => {
    const dir = tempDir();
    const cache = BlockCache.open(dir, REPO);
    const sealed = Buffer.from('sealed bytes of block 1');
    expect(cache.get(id(1))).toBeUndefined();
    cache.put(id(1), sealed);
    expect(cache.get(id(1))).toEqual(sealed);
    expect(cache.get(id(2))).toBeUndefined();
    expect([cache.hits, cache.misses]).toEqual([1, 2]);
    expect(cache.size).toBe(sealed.length);
    // The documented layout, named by the id's hex.
    expect(fs.readFileSync(entryFile(dir, id(1)))).toEqual(sealed);
    expect(fs.statSync(path.join(dir, REPO)).mode & 0o777).toBe(0o700);
    // Ids in a larger buffer: only the id's own bytes name the entry.
    const inside = Buffer.concat([Buffer.alloc(5), id(1), Buffer.alloc(3)]).subarray(5, 37);
    expect(cache.get(inside)).toEqual(sealed);
  });

  it('shares entries and their total size between instances on one directory', () => {
    const dir = tempDir();
    const a = BlockCache.open(dir, REPO);
    a.put(id(1), Buffer.alloc(1000, 1));
    a.put(id(2), Buffer.alloc(500, 2));
    const b = BlockCache.open(dir, REPO);
    expect(b.get(id(1))).toEqual(Buffer.alloc(1000, 1));
    expect(b.size).toBe(1500);
    b.put(id(3), Buffer.alloc(250, 3));
    b.delete(id(1));
    expect(b.size).toBe(750);
    expect(a.get(id(1))).toBeUndefined();
    expect(a.get(id(3))).toEqual(Buffer.alloc(250, 3));
    // `a` learns of b's changes with its next update.
    a.put(id(4), Buffer.alloc(50, 4));
    expect(a.size).toBe(800);
    // Another repository's cache is separate.
    expect(BlockCache.open(dir, 'ffffffff').get(id(3))).toBeUndefined();
  });

  it('rebuilds a lost usage record from the entries on the next put', () => {
    const dir = tempDir();
    const a = BlockCache.open(dir, REPO);
    for (let i = 0; i < 4; i++) a.put(id(i), Buffer.alloc(1000, i));
    const usage = path.join(dir, REPO, 'usage');
    fs.rmSync(usage);
    const b = BlockCache.open(dir, REPO);
    b.put(id(9), Buffer.alloc(10));
    expect(b.size).toBe(4010);
    // An instance that read an older record starts over from the new one.
    const c = BlockCache.open(dir, REPO);
    fs.rmSync(usage);
    b.put(id(10), Buffer.alloc(5));
    b.put(id(11), Buffer.alloc(1));
    c.put(id(12), Buffer.alloc(2));
    expect(c.size).toBe(4018);
  });

  it('keeps its usage record short, so opening stays cheap', () => {
    const dir = tempDir();
    const a = BlockCache.open(dir, REPO);
    a.put(id(1), Buffer.alloc(700));
    // What many puts and deletes of other processes leave.
    const usage = path.join(dir, REPO, 'usage');
    fs.appendFileSync(usage, '+10\n-10\n'.repeat(10_000));
    a.put(id(2), Buffer.alloc(300));
    expect(fs.statSync(usage).size).toBeLessThan(100);
    expect(BlockCache.open(dir, REPO).size).toBe(1000);
  });

  it('stays within its bound, evicting the least recently used first down to 90%', () => {
    const dir = tempDir();
    const cache = BlockCache.open(dir, REPO, 10_000);
    for (let i = 0; i < 9; i++) {
      cache.put(id(i), Buffer.alloc(1000, i));
      age(entryFile(dir, id(i)), 1000 - i);
    }
    expect(cache.size).toBe(9000);
    // A stray file where a prefix directory would be does not stop eviction.
    const used = new Set(Array.from({ length: 13 }, (_, i) => id(i).toString('hex').slice(0, 2)));
    const stray = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, '0')).find((p) => !used.has(p))!;
    fs.writeFileSync(path.join(dir, REPO, stray), 'x');
    // The oldest entry is used again, so the next two oldest go instead.
    expect(cache.get(id(0))).toBeDefined();
    cache.put(id(9), Buffer.alloc(1000, 9));
    expect(entries(dir)).toHaveLength(10);
    cache.put(id(10), Buffer.alloc(1000, 10));
    expect(cache.size).toBe(9000);
    expect(cache.get(id(0))).toBeDefined();
    expect(cache.get(id(1))).toBeUndefined();
    expect(cache.get(id(2))).toBeUndefined();
    for (let i = 3; i <= 10; i++) expect(cache.get(id(i)), `block ${i}`).toBeDefined();
    const onDisk = entries(dir).reduce((n, f) => n + fs.statSync(path.join(dir, REPO, f)).size, 0);
    expect(onDisk).toBe(9000);
    // Down to 90%: the next put fits without evicting anything.
    cache.put(id(11), Buffer.alloc(1000, 11));
    expect(cache.size).toBe(10_000);
    for (let i = 3; i <= 11; i++) expect(cache.get(id(i)), `block ${i}`).toBeDefined();
    // A block larger than the whole cache is not cached and evicts nothing.
    cache.put(id(12), Buffer.alloc(10_001));
    expect(cache.get(id(12))).toBeUndefined();
    expect(cache.size).toBe(10_000);
  });

  it('never returns a torn write, and evicts the temporary files of dead writers', () => {
    const dir = tempDir();
    const cache = BlockCache.open(dir, REPO, 10_000);
    cache.put(id(0), Buffer.alloc(1000));
    expect(tempFiles(dir)).toEqual([]);
    // A writer died halfway through block 1, and another is writing block 2.
    const sub = path.dirname(entryFile(dir, id(1)));
    fs.mkdirSync(sub, { recursive: true });
    const dead = path.join(sub, '.tmp-0000000000000000');
    fs.writeFileSync(dead, Buffer.alloc(600, 1));
    age(dead, 3 * 3600);
    const live = path.join(path.dirname(entryFile(dir, id(2))), '.tmp-1111111111111111');
    fs.mkdirSync(path.dirname(live), { recursive: true });
    fs.writeFileSync(live, Buffer.alloc(10, 2));
    expect(cache.get(id(1))).toBeUndefined();
    // An empty entry is what a crash leaves of data that never reached the disk.
    fs.mkdirSync(path.dirname(entryFile(dir, id(3))), { recursive: true });
    fs.writeFileSync(entryFile(dir, id(3)), '');
    expect(cache.get(id(3))).toBeUndefined();
    // ...and the next put replaces it by a new file: a reader that has the
    // old one open never sees it change under it.
    const held = path.join(dir, 'held');
    fs.linkSync(entryFile(dir, id(3)), held);
    cache.put(id(3), Buffer.alloc(100, 3));
    expect(cache.get(id(3))).toEqual(Buffer.alloc(100, 3));
    expect(fs.readFileSync(held)).toEqual(Buffer.alloc(0));

    for (let i = 10; i < 25; i++) cache.put(id(i), Buffer.alloc(1000, i));
    expect(cache.size).toBeLessThanOrEqual(10_000);
    expect(fs.existsSync(dead)).toBe(false);
    expect(fs.existsSync(live)).toBe(true);
    expect(tempFiles(dir)).toEqual([path.relative(path.join(dir, REPO), live)]);
  });

  it('removes its temporary file when an entry cannot be renamed into place', () => {
    const dir = tempDir();
    const cache = BlockCache.open(dir, REPO);
    // A directory where the entry should go makes the rename fail.
    fs.mkdirSync(path.join(entryFile(dir, id(1)), 'x'), { recursive: true });
    expect(() => cache.put(id(1), Buffer.alloc(100, 1))).not.toThrow();
    expect(tempFiles(dir)).toEqual([]);
    expect(cache.get(id(1))).toBeUndefined();
    expect(cache.size).toBe(0);
  });

  it('does nothing, without throwing, when its directory cannot be created', () => {
    const dir = tempDir();
    const file = path.join(dir, 'not-a-directory');
    fs.writeFileSync(file, 'x');
    const cache = BlockCache.open(path.join(file, 'cache'), REPO);
    expect(() => cache.put(id(1), Buffer.alloc(100, 1))).not.toThrow();
    expect(cache.get(id(1))).toBeUndefined();
    expect(() => cache.delete(id(1))).not.toThrow();
    expect(cache.size).toBe(0);
    expect(fs.readFileSync(file, 'utf8')).toBe('x');
  });

  // Permissions do not stop root.
  it.skipIf(process.getuid?.() === 0)('serves but does not grow a cache in a read-only directory', () => {
    const dir = tempDir();
    const a = BlockCache.open(dir, REPO);
    a.put(id(1), Buffer.alloc(100, 1));
    const root = path.join(dir, REPO);
    const dirs = [root, path.dirname(entryFile(dir, id(1))), path.dirname(entryFile(dir, id(2)))];
    fs.mkdirSync(dirs[2]!, { recursive: true });
    for (const d of dirs) fs.chmodSync(d, 0o500);
    try {
      const b = BlockCache.open(dir, REPO);
      expect(() => b.put(id(2), Buffer.alloc(100, 2))).not.toThrow();
      expect(b.get(id(2))).toBeUndefined();
      expect(b.get(id(1))).toEqual(Buffer.alloc(100, 1));
      expect(b.size).toBe(100);
    } finally {
      for (const d of dirs) fs.chmodSync(d, 0o700);
    }
  });

  it('rejects a repository id that is not hex, and a block id of the wrong length', () => {
    const dir = tempDir();
    for (const bad of ['../../etc', 'ABCDEF12', 'abc', '0123abcd/x', 'a'.repeat(65), '']) {
      let error: unknown;
      try {
        BlockCache.open(dir, bad);
      } catch (e) {
        error = e;
      }
      expect(error, bad).toBeInstanceOf(Error);
      expect((error as Error).constructor).toBe(Error);
      expect((error as Error).message).toMatch(/repository id/);
    }
    expect(fs.readdirSync(dir)).toEqual([]);
    expect(() => BlockCache.open(dir, REPO, 0)).toThrow(/size bound/);
    const cache = BlockCache.open(dir, REPO);
    expect(() => cache.put(Buffer.alloc(0), Buffer.alloc(1))).toThrow(/32 bytes/);
    expect(() => cache.get(Buffer.alloc(31))).toThrow(/32 bytes/);
    expect(filesIn(dir)).toEqual([]);
  });

  it('defaults to $STRATA_CACHE_DIR, then $XDG_CACHE_HOME/strata, then ~/.cache/strata', () => {
    const saved = { STRATA_CACHE_DIR: process.env.STRATA_CACHE_DIR, XDG_CACHE_HOME: process.env.XDG_CACHE_HOME, HOME: process.env.HOME };
    try {
      process.env.HOME = '/home/someone';
      process.env.STRATA_CACHE_DIR = '/srv/strata-cache';
      process.env.XDG_CACHE_HOME = '/xdg/cache';
      expect(defaultCacheDir()).toBe('/srv/strata-cache');
      delete process.env.STRATA_CACHE_DIR;
      expect(defaultCacheDir()).toBe('/xdg/cache/strata');
      // The XDG spec says a relative path is to be ignored.
      process.env.XDG_CACHE_HOME = 'relative/cache';
      expect(defaultCacheDir()).toBe('/home/someone/.cache/strata');
      delete process.env.XDG_CACHE_HOME;
      expect(defaultCacheDir()).toBe('/home/someone/.cache/strata');
      expect(DEFAULT_CACHE_BYTES).toBe(1024 ** 3);
    } finally {
      for (const [k, v] of Object.entries(saved)) {
        if (v === undefined) delete process.env[k];
        else process.env[k] = v;
      }
    }
  });

  it('survives processes putting, reading and evicting at once, and hands out only whole entries', async () => {
    const dir = tempDir();
    // The module needs only node: built-ins, so a plain transpile runs it in a child.
    const source = fs.readFileSync(path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../src/storage/cache.ts'), 'utf8');
    const js = ts.transpileModule(source, { compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022 } }).outputText;
    fs.writeFileSync(path.join(dir, 'cache.mjs'), js);
    // A block's length and bytes follow from its id, so a torn read shows.
    fs.writeFileSync(
      path.join(dir, 'worker.mjs'),
      `import { createHash } from 'node:crypto';
import { BlockCache } from './cache.mjs';
const [dir, repo, seed] = process.argv.slice(2);
const cache = BlockCache.open(dir, repo, 2_000_000);
let bad = 0;
for (let n = 0; n < 400; n++) {
  const id = createHash('sha256').update('block ' + ((n * 7 + Number(seed) * 13) % 60)).digest();
  const data = Buffer.alloc(20_000 + id[0] * 1000);
  for (let o = 0; o < data.length; o += 32) id.copy(data, o);
  const got = cache.get(id);
  if (got && !got.equals(data)) bad++;
  if (!got) {
    cache.put(id, data);
    const again = cache.get(id);
    if (again && !again.equals(data)) bad++;
  }
  if (n % 50 === 49) cache.delete(id);
}
process.stdout.write(JSON.stringify({ bad, hits: cache.hits }));
`,
    );
    const cacheDir = path.join(dir, 'cache');
    const runs = [0, 1, 2, 3].map(
      (seed) =>
        new Promise<{ code: number | null; out: string; err: string }>((resolve) => {
          const child = spawn(process.execPath, [path.join(dir, 'worker.mjs'), cacheDir, REPO, String(seed)]);
          let out = '';
          let err = '';
          child.stdout.on('data', (d: Buffer) => (out += d.toString()));
          child.stderr.on('data', (d: Buffer) => (err += d.toString()));
          child.on('exit', (code) => resolve({ code, out, err }));
        }),
    );
    for (const r of await Promise.all(runs)) {
      expect(r.code, r.err).toBe(0);
      const { bad, hits } = JSON.parse(r.out) as { bad: number; hits: number };
      expect(bad).toBe(0);
      expect(hits).toBeGreaterThan(100);
    }
    const root = path.join(cacheDir, REPO);
    expect(tempFiles(cacheDir)).toEqual([]);
    let total = 0;
    for (const f of entries(cacheDir)) {
      const block = Buffer.from(path.basename(f), 'hex');
      const data = fs.readFileSync(path.join(root, f));
      expect(data.length).toBe(20_000 + block[0]! * 1000);
      for (let o = 0; o < data.length; o += 32) expect(data.subarray(o, o + 32).equals(block.subarray(0, Math.min(32, data.length - o)))).toBe(true);
      total += data.length;
    }
    // Races may let the record drift a little, never far.
    expect(total).toBeLessThanOrEqual(2_000_000 * 1.25);
    expect(total).toBeGreaterThan(0);
  });
});

describe("a client's dictionaries in its cache (cachedDictionary)", () => {
  it('fetched once, then found there; a copy that failed to open is replaced by the one fetched again', async () => {
    const cache = BlockCache.open(tempDir(), REPO);
    let fetched = 0;
    const fetch = async () => Buffer.from(`sealed dictionary, fetch ${++fetched}`);
    expect((await cachedDictionary(cache, 'ab12', false, fetch)).toString()).toBe('sealed dictionary, fetch 1');
    expect((await cachedDictionary(cache, 'ab12', false, fetch)).toString()).toBe('sealed dictionary, fetch 1');
    expect(fetched).toBe(1);
    // The reader found it damaged and asks afresh: fetched, and kept in place of the damaged one.
    expect((await cachedDictionary(cache, 'ab12', true, fetch)).toString()).toBe('sealed dictionary, fetch 2');
    expect((await cachedDictionary(cache, 'ab12', false, fetch)).toString()).toBe('sealed dictionary, fetch 2');
    expect(fetched).toBe(2);
    // Without a cache (--no-cache), every call fetches.
    await cachedDictionary(undefined, 'ab12', false, fetch);
    expect(fetched).toBe(3);
  });
});
