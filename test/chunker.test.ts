import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { Chunker, chunkerParams, cutHolds, gearTable, type ChunkerParams } from '../src/chunker/fastcdc.js';
import { Keyring } from '../src/crypto/keyring.js';
import { Rng, ROOT } from './helpers.js';

const params = chunkerParams(64 * 1024);
const gear = gearTable(Buffer.alloc(32, 1));

function chunk(data: Buffer, readSize: number, g = gear): Buffer[] {
  const c = new Chunker(params, g);
  const out: Buffer[] = [];
  for (let i = 0; i < data.length; i += readSize) out.push(...c.push(data.subarray(i, i + readSize)));
  const last = c.finish();
  if (last) out.push(last);
  return out;
}

const ids = (chunks: Buffer[]) => chunks.map((c) => new Keyring(Buffer.alloc(32, 2)).blockId(c).toString('hex'));

describe('FastCDC chunker', () => {
  const data = new Rng(42).bytes(4 * 1024 * 1024);

  it('is deterministic whatever the read size', () => {
    const a = chunk(data, 1 << 20);
    const b = chunk(data, 4096);
    const c = chunk(data, 777_777);
    expect(ids(b)).toEqual(ids(a));
    expect(ids(c)).toEqual(ids(a));
    expect(Buffer.concat(a).equals(data)).toBe(true);
  });

  it('keeps sizes within min and max, near the average', () => {
    const sizes = chunk(data, 1 << 20).map((c) => c.length);
    for (const s of sizes.slice(0, -1)) {
      expect(s).toBeGreaterThanOrEqual(params.min);
      expect(s).toBeLessThanOrEqual(params.max);
    }
    const mean = data.length / sizes.length;
    expect(mean).toBeGreaterThan(params.avg / 2);
    expect(mean).toBeLessThan(params.avg * 2);
  });

  it('resynchronises after a one-byte insert near the start', () => {
    const before = new Set(ids(chunk(data, 1 << 20)));
    const edited = Buffer.concat([data.subarray(0, 100), Buffer.from([0x5a]), data.subarray(100)]);
    const after = ids(chunk(edited, 1 << 20));
    const reused = after.filter((id) => before.has(id)).length;
    expect(after.length - reused).toBeLessThanOrEqual(2);
    expect(reused / after.length).toBeGreaterThan(0.9);
  });

  it('cuts a run of zeros at max size and is keyed', () => {
    const zeros = Buffer.alloc(1024 * 1024);
    const sizes = chunk(zeros, 1 << 20).map((c) => c.length);
    expect(new Set(sizes.slice(0, -1))).toEqual(new Set([params.max]));
    const other = chunk(data, 1 << 20, gearTable(Buffer.alloc(32, 9)));
    expect(ids(other)).not.toEqual(ids(chunk(data, 1 << 20)));
  });

  it('cuts runs of zeros out: a record between them is a block of its own with at most `zeros` zeros after it', () => {
    const rng = new Rng(5);
    const record = rng.bytes(3000);
    const image = Buffer.concat([Buffer.alloc(300_000), record, Buffer.alloc(200_000), record, Buffer.alloc(50_000), rng.bytes(100_000)]);
    const c = chunk(image, 1 << 20);
    const sizes = c.map((b) => b.length);
    expect(Buffer.concat(c).equals(image)).toBe(true);
    const holding = c.filter((b) => b.includes(record));
    expect(holding.map((b) => b.length)).toEqual([3000 + params.zeros!, 3000 + params.zeros!]);
    // The same block both times: its bytes do not depend on how long the zeros before it ran.
    expect(new Set(ids(holding)).size).toBe(1);
    // Every other block before the random tail holds zeros only.
    const tail = sizes.findIndex((_, i) => c[i] === holding[1]);
    for (const b of c.slice(0, tail)) if (b !== holding[0]) expect(b.every((x) => x === 0)).toBe(true);
    // A repository made before (zeros 0): the records share max-size blocks with the zeros.
    const old = new Chunker({ ...params, zeros: 0 }, gear);
    const oldHolding = [...old.push(image), old.finish()!].filter((b) => b.includes(record));
    expect(Math.min(...oldHolding.map((b) => b.length))).toBeGreaterThan(10 * (3000 + params.zeros!));
  });

  it('says when a chunk confirmed by its hash is cut at the same place: only a chunk of zeros depends on the byte after it', () => {
    const z = params.zeros!;
    expect(cutHolds(params, Buffer.alloc(z + 10), 7)).toBe(true);
    expect(cutHolds(params, Buffer.alloc(z + 10), undefined)).toBe(true);
    expect(cutHolds(params, Buffer.alloc(z + 10), 0)).toBe(false);
    expect(cutHolds(params, Buffer.alloc(params.max), 0)).toBe(true);
    expect(cutHolds(params, Buffer.concat([Buffer.from([1]), Buffer.alloc(z)]), 0)).toBe(true);
    expect(cutHolds({ ...params, zeros: 0 }, Buffer.alloc(z + 10), 0)).toBe(true);
    // What the chunker does with the same bytes.
    const c = new Chunker(params, gear);
    expect(c.firstCut(Buffer.concat([Buffer.alloc(z + 10), Buffer.from([7]), Buffer.alloc(params.max)]))).toBe(z + 10);
    expect(c.firstCut(Buffer.alloc(params.max + 10))).toBe(params.max);
  });

  it('rejects block sizes that are not powers of two', () => {
    expect(() => chunkerParams(3000)).toThrow(/power of two/);
  });
});

/** The gear scan written out plainly: the oracle for the WebAssembly one. */
function referenceCut(buf: Uint8Array, p: ChunkerParams, g: Uint32Array): number {
  const limit = Math.min(p.max, buf.length);
  const zeros = p.zeros ?? 0;
  let lead = 0;
  while (zeros > 0 && lead < limit && buf[lead] === 0) lead++;
  if (zeros > 0 && lead >= zeros) return lead;
  const bits = Math.log2(p.avg);
  const mask = (n: number) => Number((2n ** BigInt(n) - 1n) << BigInt(32 - n));
  let h = 0;
  let run = 0;
  for (let i = 0; i < limit; i++) {
    run = buf[i] === 0 ? run + 1 : 0;
    if (zeros > 0 && run === zeros && i + 1 > run) return i + 1;
    if (i < p.min) continue;
    h = (h * 2 + g[buf[i]!]!) % 2 ** 32;
    if ((h & mask(i < p.avg ? bits + 2 : bits - 2)) === 0) return i + 1;
  }
  return limit;
}

describe('the WebAssembly gear scan', () => {
  it('cuts exactly where the plain scan does, in its window and outside it', () => {
    const rng = new Rng(7);
    for (let round = 0; round < 24; round++) {
      // Every other round as a repository made before runs of zeros were cut out.
      const p = { ...chunkerParams(2 ** (10 + rng.int(7))), ...(round % 2 ? { zeros: 0 } : {}) };
      const g = gearTable(Buffer.alloc(32, round));
      const c = new Chunker(p, g, p.max * 2);
      // Random bytes, with runs of zeros (long, and around `zeros` long) and of a short repeated pattern.
      const data = rng.bytes(p.max * 2);
      data.fill(0, rng.int(data.length), rng.int(data.length));
      for (let k = 0; k < 12; k++) {
        const at = rng.int(data.length);
        data.fill(0, at, Math.min(data.length, at + (k % 2 ? p.avg / 16 - 2 + rng.int(5) : 20 + rng.int(p.avg / 4))));
      }
      for (let i = rng.int(data.length), end = i + p.max; i < Math.min(end, data.length); i++) data[i] = i % 7;
      c.window.set(data);
      for (let at = 0; at < data.length; ) {
        const len = Math.min(data.length - at, rng.int(3) === 0 ? rng.int(p.max + 1) : p.max + rng.int(p.max));
        const want = referenceCut(data.subarray(at, at + len), p, g);
        expect(c.firstCut(c.window.subarray(at, at + len))).toBe(want);
        expect(c.firstCut(data.subarray(at, at + len))).toBe(want);
        at += want;
      }
    }
  });

  it('is the module gear.wat assembles to', () => {
    const check = spawnSync(process.execPath, [path.join(ROOT, 'scripts', 'wasm.mjs'), '--check'], { encoding: 'utf8' });
    expect(check.stderr).toBe('');
    expect(check.status).toBe(0);
  });
});

describe('chunks of a stream (backup --stdin)', () => {
  it('are cut where a file of the same bytes is cut, however the stream arrives in pieces', async () => {
    const { freshChunks, streamChunks, windowBytes } = await import('../src/engine/aligned.js');
    const fs = await import('node:fs');
    const { tempDir } = await import('./helpers.js');
    const rng = new Rng(31);
    for (let round = 0; round < 8; round++) {
      const p = chunkerParams(2 ** (10 + rng.int(6)));
      const g = gearTable(Buffer.alloc(32, round + 40));
      const data = rng.bytes(rng.int(p.max * 12) + (round === 0 ? 0 : 1));
      if (round % 3 === 1) data.fill(0, rng.int(data.length), rng.int(data.length));
      const file = `${tempDir()}/f`;
      fs.writeFileSync(file, data);
      const fd = fs.openSync(file, 'r');
      const fromFile: number[] = [];
      for await (const c of freshChunks(fd, new Chunker(p, g, windowBytes(64 * 1024, p.max)), () => {})) fromFile.push(c.length);
      fs.closeSync(fd);
      async function* pieces() {
        for (let at = 0; at < data.length; ) {
          const n = 1 + rng.int(rng.int(2) ? 100 : p.max * 3);
          yield data.subarray(at, at + n);
          at += n;
        }
      }
      const fromStream: number[] = [];
      const seen: Buffer[] = [];
      for await (const c of streamChunks(pieces(), new Chunker(p, g, windowBytes(64 * 1024, p.max)), () => {})) {
        fromStream.push(c.length);
        seen.push(Buffer.from(c));
      }
      expect(fromStream).toEqual(fromFile);
      expect(Buffer.concat(seen).equals(data)).toBe(true);
    }
  });
});
