/**
 * Damaged media: flipped bytes, truncated and deleted packs, a damaged
 * catalog. check names the affected files and byte ranges (following refs to
 * later snapshots), reads of damaged ranges fail and never emit wrong bytes,
 * and everything else still restores.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import Database from 'better-sqlite3';
import { beforeEach, describe, expect, it } from 'vitest';
import { initCliRepo, Rng, strata, tempDir } from './helpers.js';

interface Setup {
  repo: string;
  env: NodeJS.ProcessEnv;
  a: string;
  b: string;
  a1: Buffer;
  a2: Buffer;
  bData: Buffer;
  ids: string[];
}

/**
 * Two snapshots; a's second version refs into its first. b arrives with the
 * second, so its blocks are in that run's packs and never share one with a's
 * first version (blocks of files stored together may land in any of their
 * run's packs, in the order the workers finish them).
 */
function setup(): Setup {
  const { repo, env } = initCliRepo(['--chunk-avg', '4K', '--pack-size', '64K']);
  const src = tempDir();
  const rng = new Rng(31);
  const a = path.join(src, 'a');
  const b = path.join(src, 'b');
  const a1 = rng.bytes(200_000);
  const bData = rng.bytes(200_000);
  fs.writeFileSync(a, a1);
  const ids = [strata(['backup', src, '-q', '--time', '2026-01-01T00:00:00Z'], env).stdout.trim()];
  const a2 = Buffer.concat([a1.subarray(0, 150_000), Buffer.from('NEW'), a1.subarray(150_000)]);
  fs.writeFileSync(a, a2);
  fs.writeFileSync(b, bData);
  ids.push(strata(['backup', src, '-q', '--time', '2026-01-02T00:00:00Z'], env).stdout.trim());
  return { repo, env, a, b, a1, a2, bData, ids };
}

/**
 * A block of a's first version that snapshot 2 reads through a ref (it lies
 * before the edit), in a pack that holds file data only: damage to a pack
 * that also held a tree would hide the files below it instead.
 */
function blockOfA(s: Setup): { pack: string; offset: number; length: number; start: number; end: number } {
  const toc = JSON.parse(strata(['toc', s.a, '--at', s.ids[0]!, '--json'], s.env).stdout) as { start: number; end: number; block: string }[];
  const db = new Database(path.join(s.repo, 'catalog.db'), { readonly: true });
  try {
    for (const e of toc) {
      if (e.end >= 140_000) break;
      const row = db.prepare('SELECT p.id, p.name AS pack, b.offset, b.length FROM blocks b JOIN packs p ON p.id = b.pack WHERE b.id = ?').get(Buffer.from(e.block, 'hex')) as {
        id: number;
        pack: string;
        offset: number;
        length: number;
      };
      const metadata = db.prepare('SELECT COUNT(*) AS n FROM blocks WHERE pack = ? AND kind != 0').get(row.id) as { n: number };
      if (metadata.n === 0) return { pack: row.pack, offset: row.offset, length: row.length, start: e.start, end: e.end };
    }
  } finally {
    db.close();
  }
  throw new Error('no pack of a holds file data only');
}

const packFile = (s: Setup, name: string) => path.join(s.repo, 'packs', name.slice(0, 2), name);

describe('damage', () => {
  let s: Setup;
  beforeEach(() => {
    s = setup();
  });

  function expectReport(json: string, blockStart: number, blockEnd: number) {
    const r = JSON.parse(json) as { ok: boolean; damagedFiles: { snapshot: string; path: string; ranges: [number, number][] }[] };
    expect(r.ok).toBe(false);
    const forA = r.damagedFiles.filter((f) => f.path === s.a);
    // Both snapshots: the first holds the block, the second reads it through a ref.
    expect(forA.map((f) => f.snapshot).sort()).toEqual([...s.ids].sort());
    for (const f of forA) expect(f.ranges.some(([lo, hi]) => lo <= blockStart && hi >= blockEnd)).toBe(true);
    expect(r.damagedFiles.some((f) => f.path === s.b)).toBe(false);
  }

  /** b restores, and every range of a that the check report calls undamaged reads byte-exact. */
  function unaffectedStillRestores(report: string) {
    expect(strata(['cat', s.b], s.env).raw.equals(s.bData)).toBe(true);
    const target = tempDir();
    expect(strata(['restore', s.b, '--target', target], s.env).status).toBe(0);
    expect(fs.readFileSync(path.join(target, s.b)).equals(s.bData)).toBe(true);
    // Blocks land in packs in the order the workers finish them, so which
    // parts of a share the damaged pack varies: trust the report's ranges.
    const r = JSON.parse(report) as { damagedFiles: { snapshot: string; path: string; ranges: [number, number][] }[] };
    const damaged = r.damagedFiles.find((f) => f.path === s.a && f.snapshot === s.ids[1])!.ranges.sort((x, y) => x[0] - y[0]);
    let pos = 0;
    let checked = 0;
    const until: [number, number][] = [...damaged, [s.a2.length, s.a2.length]];
    for (const [lo, hi] of until) {
      if (lo > pos) {
        expect(strata(['cat', s.a, '--range', `${pos}-${lo - 1}`], s.env).raw.equals(s.a2.subarray(pos, lo))).toBe(true);
        checked += lo - pos;
      }
      pos = Math.max(pos, hi + 1);
    }
    expect(checked).toBeGreaterThan(0);
  }

  function damagedReadFails(blockStart: number, blockEnd: number) {
    for (const at of s.ids) {
      const r = strata(['cat', s.a, '--at', at, '--range', `${blockStart}-${blockEnd}`], s.env);
      expect(r.status).toBe(1);
      expect(r.stderr).toMatch(/block [0-9a-f]+/);
      expect(r.raw.length).toBe(0);
    }
  }

  it('flipped bytes in a pack: check --read-data names the files and ranges', () => {
    const blk = blockOfA(s);
    const fd = fs.openSync(packFile(s, blk.pack), 'r+');
    fs.writeSync(fd, Buffer.from([0xff, 0x00, 0xff]), 0, 3, blk.offset + 40);
    fs.closeSync(fd);
    const r = strata(['check', '--read-data', '--json'], s.env);
    expect(r.status).toBe(1);
    expectReport(r.stdout, blk.start, blk.end);
    const human = strata(['check', '--read-data', '--reset'], s.env);
    expect(human.stdout).toMatch(new RegExp(`damaged: ${s.a} in snapshot ${s.ids[1]!.slice(0, 8)}, bytes ${blk.start}-${blk.end}`));
    damagedReadFails(blk.start, blk.end);
    unaffectedStillRestores(r.stdout);
  });

  it('check --repair, then backup --force, heals every snapshot that used the damaged block', () => {
    const blk = blockOfA(s);
    const fd = fs.openSync(packFile(s, blk.pack), 'r+');
    fs.writeSync(fd, Buffer.from([0xff, 0x00, 0xff]), 0, 3, blk.offset + 40);
    fs.closeSync(fd);
    const repaired = JSON.parse(strata(['check', '--read-data', '--repair', '--json'], s.env).stdout);
    expect(repaired.repaired).toBeGreaterThan(0);
    // The block is gone from the index until a backup stores it again.
    expect(strata(['backup', path.dirname(s.a), '--force', '-q'], s.env).status).toBe(0);
    const after = strata(['check', '--read-data', '--reset', '--json'], s.env);
    expect(JSON.parse(after.stdout).errors).toEqual([]);
    expect(after.status).toBe(0);
    // Snapshot 2 still holds a2 and reads the re-stored block through its ref;
    // snapshot 1 held a1, whose first block is the same content.
    expect(strata(['cat', s.a, '--at', s.ids[1]!], s.env).raw.equals(s.a2)).toBe(true);
    expect(strata(['cat', s.a, '--at', s.ids[0]!, '--range', `0-${blk.end}`], s.env).raw.equals(s.a1.subarray(0, blk.end + 1))).toBe(true);
  });

  it('a truncated pack: check finds it without reading data', () => {
    const blk = blockOfA(s);
    fs.truncateSync(packFile(s, blk.pack), blk.offset + 10);
    const r = strata(['check', '--json'], s.env);
    expect(r.status).toBe(1);
    expect(JSON.parse(r.stdout).errors.join('\n')).toMatch(/truncated/);
    expectReport(r.stdout, blk.start, blk.end);
    damagedReadFails(blk.start, blk.end);
    unaffectedStillRestores(r.stdout);
  });

  it('a deleted pack: named as missing, its files reported', () => {
    const blk = blockOfA(s);
    fs.rmSync(packFile(s, blk.pack));
    const r = strata(['check', '--json'], s.env);
    expect(r.status).toBe(1);
    expect(JSON.parse(r.stdout).errors.join('\n')).toMatch(/missing/);
    expectReport(r.stdout, blk.start, blk.end);
    damagedReadFails(blk.start, blk.end);
    unaffectedStillRestores(r.stdout);
  });

  it('a damaged catalog.db: a clear error, and rebuild-catalog brings everything back', () => {
    const file = path.join(s.repo, 'catalog.db');
    const size = fs.statSync(file).size;
    const fd = fs.openSync(file, 'r+');
    fs.writeSync(fd, Buffer.alloc(size - 100, 0x55), 0, size - 100, 100);
    fs.closeSync(fd);
    const r = strata(['cat', s.b], s.env);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/catalog.db is damaged.*rebuild-catalog/);
    expect(r.stderr).not.toMatch(/\n\s+at /);
    const rebuilt = strata(['rebuild-catalog'], s.env);
    expect(rebuilt.status, rebuilt.stderr).toBe(0);
    expect(strata(['check', '--read-data'], s.env).status).toBe(0);
    expect(strata(['cat', s.a, '--at', s.ids[0]!], s.env).raw.equals(s.a1)).toBe(true);
    expect(strata(['cat', s.a], s.env).raw.equals(s.a2)).toBe(true);
  });

  it('check --read-data remembers its progress and continues where it stopped', () => {
    const first = JSON.parse(strata(['check', '--read-data', '--subset', '1/2', '--json'], s.env).stdout);
    const all = JSON.parse(strata(['check', '--read-data', '--json'], s.env).stdout);
    expect(all.packsAlreadyVerified).toBe(first.packsRead);
    expect(all.packsRead + all.packsAlreadyVerified).toBe(all.packs);
    const again = JSON.parse(strata(['check', '--read-data', '--reset', '--json'], s.env).stdout);
    expect(again.packsRead).toBe(all.packs);
  });
});
