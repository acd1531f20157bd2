import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { Chunker, chunkerParams, gearTable, type ChunkerParams } from '../src/chunker/fastcdc.js';
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

  it('rejects block sizes that are not powers of two', () => {
    expect(() => chunkerParams(3000)).toThrow(/power of two/);
  });
});

/** The gear scan written out plainly: the oracle for the WebAssembly one. */
function referenceCut(buf: Uint8Array, p: ChunkerParams, g: Uint32Array): number {
  if (buf.length <= p.min) return buf.length;
  const bits = Math.log2(p.avg);
  const mask = (n: number) => Number((2n ** BigInt(n) - 1n) << BigInt(32 - n));
  let h = 0;
  for (let i = p.min; i < Math.min(p.max, buf.length); i++) {
    h = (h * 2 + g[buf[i]!]!) % 2 ** 32;
    if ((h & mask(i < p.avg ? bits + 2 : bits - 2)) === 0) return i + 1;
  }
  return Math.min(p.max, buf.length);
}

describe('the WebAssembly gear scan', () => {
  it('cuts exactly where the plain scan does, in its window and outside it', () => {
    const rng = new Rng(7);
    for (let round = 0; round < 12; round++) {
      const p = chunkerParams(2 ** (10 + rng.int(7)));
      const g = gearTable(Buffer.alloc(32, round));
      const c = new Chunker(p, g, p.max * 2);
      // Random bytes, with runs of zeros and of a short repeated pattern.
      const data = rng.bytes(p.max * 2);
      data.fill(0, rng.int(data.length), rng.int(data.length));
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
