/**
 * The scan a backup runs ahead of its walk (engine/backup-scan.ts,
 * workers/scanner.ts): it lists directories in exactly the walk's order
 * (odd names included), applies the excludes and markers, posts large
 * directories a part at a time, stays bounded, and any directory it did not
 * deliver is the walk's to read.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { Chunker, chunkerParams, gearTable } from '../src/chunker/fastcdc.js';
import { blockId } from '../src/crypto/keyring.js';
import { FILE_FIELDS, ID_BYTES, TreeScan, walkOrder, SCAN_PART, type ScanOptions, type ScanPart } from '../src/engine/backup-scan.js';
import { compareNames, decodeName, osPath, readNamesSync } from '../src/util/names.js';
import { PackedStat, STAT_FIELDS } from '../src/util/stat.js';
import { tempDir } from './helpers.js';

const OPTS: ScanOptions = { excludes: [], iexcludes: [], markers: [], oneFileSystem: false, xattrs: false };
const scans: TreeScan[] = [];
afterEach(async () => {
  await Promise.all(scans.splice(0).map((s) => s.close()));
});
const scanOf = (roots: string[], opts: Partial<ScanOptions> = {}) => {
  const s = new TreeScan(roots, { ...OPTS, ...opts });
  s.start();
  scans.push(s);
  return s;
};
/** The scan of `dir` once the scan has come to it (a walk takes what is there, never waits). */
const take = async (scan: TreeScan, dir: string) => {
  await scan.reached(dir);
  return scan.take(dir);
};

/** A tree with names that sort differently by path than by component, and one directory of several parts. */
function oddTree(): string {
  const root = tempDir();
  for (const d of ['a', 'a-b', 'a.b', 'a b', 'A', 'é', '日本', 'a/b', 'a/b/c', 'a-b/x', 'big']) fs.mkdirSync(path.join(root, d), { recursive: true });
  // A name that is not UTF-8, with a file inside.
  const odd = Buffer.concat([Buffer.from(`${root}/d`), Buffer.of(0xff)]);
  fs.mkdirSync(odd);
  fs.writeFileSync(Buffer.concat([odd, Buffer.from('/f')]), 'x');
  for (let i = 0; i < SCAN_PART * 2 + 7; i++) fs.writeFileSync(path.join(root, 'big', `f${i}`), String(i));
  fs.mkdirSync(path.join(root, 'big', 'sub'));
  fs.writeFileSync(path.join(root, 'a', 'b', 'c', 'file'), 'hello');
  // A link to a directory is an entry, never entered.
  fs.symlinkSync(path.join(root, 'a'), path.join(root, 'link'));
  return root;
}

/** Walks `dir` as a backup does, taking each directory from the scan; the directories taken, in order. */
async function walk(scan: TreeScan, dir: string, seen: string[] = []): Promise<string[]> {
  const d = await take(scan, dir);
  expect(d, `scan of ${dir}`).toBeDefined();
  seen.push(dir);
  if (d!.excluded) return seen;
  const names = readNamesSync(dir).sort(compareNames);
  expect(d!.names).toEqual(names.filter((n) => d!.names.includes(n)));
  const subdirs: string[] = [];
  for (let k = 0; k * SCAN_PART < d!.names.length; k++) {
    const part = (await d!.part(k))!;
    expect(part.failures.length).toBe(Math.min(SCAN_PART, d!.names.length - k * SCAN_PART));
    part.failures.forEach((f, i) => {
      expect(f).toBeNull();
      const child = `${dir}/${d!.names[k * SCAN_PART + i]}`;
      const st = new PackedStat(part.values, i * STAT_FIELDS);
      expect(st.ino).toBe(fs.lstatSync(osPath(child), { bigint: true }).ino);
      if (st.isDirectory()) subdirs.push(child);
    });
  }
  for (const s of subdirs) await walk(scan, s, seen);
  return seen;
}

describe('the scan ahead of a backup', () => {
  it('delivers every directory in the walk order, odd and non-UTF-8 names and a directory of several parts included', async () => {
    const root = oddTree();
    const seen = await walk(scanOf([root]), root);
    expect(seen).toHaveLength(14);
    expect(seen).toContain(`${root}/d${decodeName(Buffer.of(0xff))}`);
    expect(seen.slice(0, 6)).toEqual([root, `${root}/A`, `${root}/a`, `${root}/a/b`, `${root}/a/b/c`, `${root}/a b`]);
    expect(seen).not.toContain(`${root}/link`);
  });

  it('sorts paths as a walk meets them: a directory before what it holds, names by component', () => {
    const paths = ['/r/a-b', '/r/a/b', '/r', '/r/a b', '/r/a', '/r/a.b/x', '/r/a.b', '/r/A'];
    expect([...paths].sort(walkOrder)).toEqual(['/r', '/r/A', '/r/a', '/r/a/b', '/r/a b', '/r/a-b', '/r/a.b', '/r/a.b/x']);
    expect(walkOrder('/', '/a')).toBeLessThan(0);
    expect(walkOrder('/x', '/x')).toBe(0);
  });

  it('applies excludes and marker files as the walk does', async () => {
    const root = tempDir();
    for (const d of ['keep', 'skipme', 'cache', 'keep/skipped-too']) fs.mkdirSync(path.join(root, d));
    fs.writeFileSync(path.join(root, 'cache', 'CACHEDIR.TAG'), 'Signature: 8a477f597d28d172789f06886806bc55');
    fs.writeFileSync(path.join(root, 'keep', 'f'), 'x');
    const scan = scanOf([root], { excludes: ['skip*'], markers: [{ name: 'CACHEDIR.TAG', header: Buffer.from('Signature: 8a477f597d28d172789f06886806bc55') }] });
    const top = (await take(scan, root))!;
    expect(top.names).toEqual(['cache', 'keep']);
    expect((await take(scan, `${root}/cache`))!.excluded).toBe(true);
    expect((await take(scan, `${root}/keep`))!.names).toEqual(['f']);
    // Nothing was scanned below: the walk would find nothing more.
    expect(await take(scan, `${root}/keep/skipped-too`)).toBeUndefined();
  });

  it('leaves to the walk what it did not deliver, and goes on after a directory the walk passed by', async () => {
    const root = oddTree();
    const scan = scanOf([root]);
    expect(await take(scan, root)).toBeDefined();
    // The walk does not enter "A" nor "a": the scan's records of them are dropped, parts and all.
    const later = await take(scan, `${root}/a b`);
    expect(later?.names).toEqual([]);
    // Asked for what it never listed (it comes before what it has now): the walk reads it itself.
    expect(await take(scan, `${root}/a b/none`)).toBeUndefined();
    const big = (await take(scan, `${root}/big`))!;
    expect(big.names).toHaveLength(SCAN_PART * 2 + 8);
    for (let k = 0; k < 3; k++) expect((await big.part(k))!.failures.every((f) => f === null)).toBe(true);
  });

  it('stays a bounded number of entries ahead, and stops when closed', async () => {
    const root = oddTree();
    const scan = scanOf([root], { ahead: 16 });
    expect((await walk(scan, root)).length).toBe(14);
    const stopped = scanOf([root], { ahead: 16 });
    expect(await take(stopped, root)).toBeDefined();
    await stopped.close();
    expect(await take(stopped, `${root}/big`)).toBeUndefined();
  });

  it('reads small files whole, cut and named as the backup would; only once told which, and only those changed since', async () => {
    const root = tempDir();
    const rng = (n: number, seed: number) => {
      const b = Buffer.alloc(n);
      for (let i = 0, x = seed; i < n; i++) b[i] = (x = (x * 1103515245 + 12345) >>> 0) >>> 24;
      return b;
    };
    const files = { small: rng(3000, 1), blocks: rng(100_000, 2), zeros: Buffer.concat([rng(9000, 3), Buffer.alloc(20_000), rng(5000, 4)]), large: rng(300_000, 5), empty: Buffer.alloc(0) };
    for (const [n, b] of Object.entries(files)) fs.writeFileSync(path.join(root, n), b);
    const idKey = Buffer.alloc(32, 7);
    const params = chunkerParams(32 * 1024);
    const gear = gearTable(Buffer.alloc(32, 9));
    const read = { idKey, gear, chunker: params, maxFile: 128 * 1024, aheadBytes: 1 << 20 };
    const contentsOf = async (scan: TreeScan): Promise<Map<string, { bytes: Buffer; lengths: number[]; ids: Buffer[] }>> => {
      const d = (await take(scan, root))!;
      const part = (await d.part(0)) as ScanPart;
      // The files come after the stats: with the part if they came before the walk took it.
      const out = new Map<string, { bytes: Buffer; lengths: number[]; ids: Buffer[] }>();
      const c = part.contents;
      if (!c) return out;
      for (let f = 0; f < c.files.length; f += FILE_FIELDS) {
        const [i, at, first, count] = [c.files[f]!, c.files[f + 1]!, c.files[f + 2]!, c.files[f + 3]!];
        const lengths = [...c.lengths.subarray(first, first + count)];
        const size = lengths.reduce((a, b) => a + b, 0);
        const ids = lengths.map((_, j) => Buffer.from(c.ids.subarray((first + j) * ID_BYTES, (first + j + 1) * ID_BYTES)));
        out.set(d.names[i]!, { bytes: Buffer.from(c.bytes.subarray(at, at + size)), lengths, ids });
      }
      return out;
    };

    // Not told yet: nothing is read.
    const waiting = scanOf([root], { read });
    // Over: everything it found has come, files read and all.
    await waiting.ended;
    expect((await contentsOf(waiting)).size).toBe(0);

    const all = scanOf([root], { read });
    all.readFrom(undefined);
    await all.ended;
    const got = await contentsOf(all);
    expect([...got.keys()].sort()).toEqual(['blocks', 'small', 'zeros']);
    for (const [name, g] of got) {
      const want = files[name as keyof typeof files];
      expect(g.bytes.equals(want), name).toBe(true);
      const chunker = new Chunker(params, gear);
      const chunks = chunker.push(want);
      const last = chunker.finish();
      if (last) chunks.push(last);
      expect(g.lengths, name).toEqual(chunks.map((c) => c.length));
      expect(g.ids.map((b) => b.toString('hex')), name).toEqual(chunks.map((c) => blockId(idKey, c).toString('hex')));
    }

    // Only what changed since a time: a file touched now, not the others.
    const since = BigInt(Date.now()) * 1_000_000n;
    await new Promise((r) => setTimeout(r, 20));
    fs.appendFileSync(path.join(root, 'small'), 'x');
    const changed = scanOf([root], { read });
    changed.readFrom(since);
    await changed.ended;
    expect([...(await contentsOf(changed)).keys()]).toEqual(['small']);
  });
});
