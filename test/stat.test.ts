/**
 * lstat results packed to cross threads (util/stat.ts): read back, they say
 * what lstat says, and a failure keeps its code.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { lstatAll, PackedStat, packStat, STAT_FIELDS, statError } from '../src/util/stat.js';
import { tempDir } from './helpers.js';

describe('packed lstat', () => {
  it('reads back every field and type; a missing path is a failure with its code', () => {
    const dir = tempDir();
    const file = path.join(dir, 'f');
    fs.writeFileSync(file, 'hello');
    fs.symlinkSync('f', path.join(dir, 'link'));
    fs.utimesSync(file, new Date(-1234), new Date(-5678)); // before 1970: negative times
    const paths = [file, path.join(dir, 'missing'), dir, path.join(dir, 'link')];
    const { values, failures } = lstatAll(paths, (p) => fs.lstatSync(p, { bigint: true }));
    expect(values.length).toBe(paths.length * STAT_FIELDS);
    expect(failures.map((f) => f?.code ?? null)).toEqual([null, 'ENOENT', null, null]);
    expect(statError(failures[1]!)).toMatchObject({ code: 'ENOENT', message: expect.stringMatching(/no such file/) });
    for (const i of [0, 2, 3]) {
      const want = fs.lstatSync(paths[i]!, { bigint: true });
      const got = new PackedStat(values, i * STAT_FIELDS);
      for (const k of ['mode', 'uid', 'gid', 'size', 'mtimeNs', 'ctimeNs', 'ino'] as const) expect(got[k], `${paths[i]} ${k}`).toBe(want[k]);
      for (const k of ['isFile', 'isDirectory', 'isSymbolicLink', 'isFIFO', 'isSocket', 'isBlockDevice', 'isCharacterDevice'] as const) expect(got[k](), `${paths[i]} ${k}`).toBe(want[k]());
    }
    expect(new PackedStat(values, 0).mtimeNs).toBeLessThan(0n);
  });

  it('an inode number above 2^63 survives the signed packing', () => {
    const values = new BigInt64Array(STAT_FIELDS);
    const big = 2n ** 64n - 5n;
    packStat({ ...fs.lstatSync('/', { bigint: true }), ino: big } as fs.BigIntStats, values, 0);
    expect(new PackedStat(values, 0).ino).toBe(big);
  });
});
