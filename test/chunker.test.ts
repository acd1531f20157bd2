import { describe, expect, it } from 'vitest';
import { Chunker, chunkerParams, gearTable } from '../src/chunker/fastcdc.js';
import { Keyring } from '../src/crypto/keyring.js';
import { Rng } from './helpers.js';

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
