/**
 * Byte-range blame (VersionFile.blame and `strata blame`) against an oracle:
 * an edit history in which the test knows which snapshot wrote every byte.
 * Blocks are content-defined, so a block around an edit is written again
 * and its unchanged bytes are blamed on the later snapshot: the oracle keeps,
 * for each byte, the snapshot that wrote it and the last snapshot that edited
 * near it, and blame must lie between the two. Bytes far from every later
 * edit are blamed exactly; bytes the newest edit wrote are blamed on it.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { backup } from '../src/engine/backup.js';
import { SnapshotTree, type BlameSpan } from '../src/engine/snapshot-tree.js';
import type { Repository } from '../src/repo/repository.js';
import { cliEnv, makeRepo, Rng, strata, tempDir } from './helpers.js';

/** Past this distance from an edit the chunker is back on its old cuts (chunkAvg 1 KiB: blocks of at most 4 KiB). */
const NEAR = 24 * 1024;

interface Byte {
  writer: number;
  near: number;
}

/** The file's bytes and who wrote each, edited as a user would. */
class History {
  data = Buffer.alloc(0);
  who: Byte[] = [];
  constructor(private readonly rng: Rng) {}

  /** Replaces [at, at+remove) with `insert` fresh bytes, written by snapshot `k`. */
  splice(k: number, at: number, remove: number, insert: number): void {
    const fresh = this.rng.bytes(insert);
    this.data = Buffer.concat([this.data.subarray(0, at), fresh, this.data.subarray(at + remove)]);
    this.who = [...this.who.slice(0, at), ...Array.from({ length: insert }, () => ({ writer: k, near: k })), ...this.who.slice(at + remove)];
    for (let i = Math.max(0, at - NEAR); i < Math.min(this.who.length, at + insert + NEAR); i++) this.who[i]!.near = k;
  }
}

function perByte(spans: BlameSpan[], order: Map<string, number>, start: number, end: number): number[] {
  const out: number[] = [];
  let cursor = start;
  for (const s of spans) {
    expect(s.start).toBe(cursor);
    expect(s.end).toBeGreaterThanOrEqual(s.start);
    const k = order.get(s.snapshot);
    expect(k).toBeDefined();
    for (let i = s.start; i <= s.end; i++) out.push(k!);
    cursor = s.end + 1;
  }
  expect(cursor).toBe(end + 1);
  return out;
}

/** Checks blame of [start, end] against the oracle; returns how many bytes were blamed exactly. */
function checkAgainst(blamed: number[], who: Byte[], start: number): number {
  let exact = 0;
  blamed.forEach((k, i) => {
    const b = who[start + i]!;
    if (k < b.writer || k > Math.max(b.writer, b.near)) throw new Error(`byte ${start + i}: blamed on snapshot ${k}, written by ${b.writer}, last edited near by ${b.near}`);
    if (b.near <= b.writer && k !== b.writer) throw new Error(`byte ${start + i}: far from later edits, blamed on ${k}, written by ${b.writer}`);
    if (k === b.writer) exact++;
  });
  return exact;
}

describe('blame', () => {
  let repo: Repository;
  let dir: string;
  let file: string;
  const ids: string[] = [];
  const states: { data: Buffer; who: Byte[] }[] = [];

  beforeAll(async () => {
    const rng = new Rng(21);
    repo = await makeRepo({ chunkAvg: 1024 });
    dir = path.join(tempDir(), 'src');
    fs.mkdirSync(dir);
    file = path.join(dir, 'f.bin');
    const h = new History(rng);
    const edits: ((k: number) => void)[] = [
      (k) => h.splice(k, 0, 0, 160 * 1024), // baseline
      (k) => h.splice(k, 40 * 1024, 40 * 1024, 40 * 1024), // overwrite
      (k) => h.splice(k, 120 * 1024, 0, 40 * 1024), // insert
      (k) => h.splice(k, 10 * 1024, 4 * 1024, 0), // delete
      (k) => h.splice(k, h.data.length, 0, 30 * 1024), // append
      (k) => h.splice(k, 150 * 1024, 100, 100), // a 100-byte overwrite
      () => fs.writeFileSync(path.join(dir, 'other'), 'x'), // the file unchanged
    ];
    for (let k = 0; k < edits.length; k++) {
      edits[k]!(k);
      fs.writeFileSync(file, h.data);
      const r = await backup(repo, { paths: [dir], time: Date.UTC(2026, 0, 1 + k) });
      ids.push(r.snapshot);
      states.push({ data: h.data, who: h.who.map((b) => ({ ...b })) });
    }
  });

  it('names, for every byte of every version, the snapshot that last changed it', async () => {
    const order = new Map(ids.map((id, k) => [id, k]));
    for (let k = 0; k < ids.length; k++) {
      const tree = await SnapshotTree.open(repo, { at: ids[k] });
      const f = await tree.open(file);
      const { data, who } = states[k]!;
      expect(f.size).toBe(data.length);
      const blamed = perByte(await f.blame(), order, 0, data.length - 1);
      const exact = checkAgainst(blamed, who, 0);
      // Most bytes are far from any later edit (the chunker cannot be assumed beyond that).
      expect(exact / data.length).toBeGreaterThan(0.5);
      // A reference may point at a reference (FIG. 7): the baseline's far bytes are still the baseline's.
      if (k > 0) expect(blamed.filter((x) => x === 0).length).toBeGreaterThan(40 * 1024);
    }
    // The last edit's 100 bytes are its own, exactly; the unchanged last snapshot blames nothing on itself.
    const last = await (await SnapshotTree.open(repo, { at: ids[6] })).open(file);
    const spans = await last.blame(150 * 1024, 150 * 1024 + 99);
    expect(new Set(spans.map((s) => s.snapshot))).toEqual(new Set([ids[5]]));
    expect((await last.blame()).some((s) => s.snapshot === ids[6])).toBe(false);
  });

  it('a range is the whole-file answer cut to it, and checked', async () => {
    const f = await (await SnapshotTree.open(repo, { at: ids[5] })).open(file);
    const whole = await f.blame();
    const rng = new Rng(7);
    for (let i = 0; i < 20; i++) {
      const a = rng.int(f.size);
      const b = a + rng.int(Math.min(f.size - a, 60_000));
      const cut = whole
        .filter((s) => s.end >= a && s.start <= b)
        .map((s) => ({ ...s, start: Math.max(a, s.start), end: Math.min(b, s.end) }));
      expect(await f.blame(a, b)).toEqual(cut);
    }
    expect(await f.blame(5, 4)).toEqual([]);
    await expect(f.blame(0, f.size)).rejects.toMatchObject({ code: 'range_not_satisfiable' });
    await expect(f.blame(-1, 3)).rejects.toMatchObject({ code: 'usage' });
  });

  it('strata blame --range --at --json, and its table', async () => {
    const env = cliEnv(repo.root, { STRATA_PASSWORD: 'test-password' });
    const a = 100 * 1024;
    const b = 200 * 1024 - 1;
    const r = strata(['blame', file, '--range', `${a}-${b}`, '--at', ids[5]!.slice(0, 10), '--json'], env);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    const out = JSON.parse(r.stdout) as { snapshot: string; start: number; end: number; spans: (BlameSpan & { length: number; time: string })[] };
    expect(out).toMatchObject({ snapshot: ids[5], start: a, end: b });
    const order = new Map(ids.map((id, k) => [id, k]));
    checkAgainst(perByte(out.spans, order, a, b), states[5]!.who, a);
    expect(out.spans[0]!.time).toBe(new Date(Date.UTC(2026, 0, 1 + order.get(out.spans[0]!.snapshot)!)).toISOString());
    const t = strata(['blame', file, '--range', `${a}+16`], env);
    expect(t.status).toBe(0);
    expect(t.stdout).toMatch(new RegExp(`bytes ${a}-${a + 15} of ${states[6]!.data.length}`));
    expect(t.stdout).toContain(ids[0]!.slice(0, 8));
    const bad = strata(['blame', file, '--range', `${states[6]!.data.length + 10}-${states[6]!.data.length + 20}`], env);
    expect(bad.status).not.toBe(0);
    expect(bad.stderr).not.toMatch(/at .*\.js:/);
  });
});
