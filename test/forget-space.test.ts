/**
 * forget on a full disk: the snapshots leave the catalog before the rewritten
 * tables of contents are written, so a failure then must say what was done.
 * A full disk is simulated where it bites (the pack write), as LocalStorage
 * reports one: ENOSPC.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { backup } from '../src/engine/backup.js';
import { check } from '../src/engine/check.js';
import { forget } from '../src/engine/forget.js';
import { prune } from '../src/engine/prune.js';
import { listSnapshots } from '../src/engine/snapshot.js';
import { StrataError } from '../src/errors.js';
import { makeRepo, readWhole, Rng, tempDir } from './helpers.js';

describe('forget when the disk fills', () => {
  it('says which snapshots it removed and that the new TOCs wait for the next prune; the rest reads as before', async () => {
    const repo = await makeRepo({ chunkAvg: 4096 });
    const src = path.join(tempDir(), 'src');
    fs.mkdirSync(src);
    const file = path.join(src, 'f');
    const v1 = new Rng(1).bytes(100_000);
    fs.writeFileSync(file, v1);
    const first = await backup(repo, { paths: [src], time: Date.UTC(2026, 0, 1) });
    const v2 = Buffer.concat([v1.subarray(0, 50_000), Buffer.from('NEW'), v1.subarray(50_000)]);
    fs.writeFileSync(file, v2);
    const second = await backup(repo, { paths: [src], time: Date.UTC(2026, 0, 2) });

    const put = repo.storage.put.bind(repo.storage);
    repo.storage.put = async () => {
      const e = new Error('no space left on device') as NodeJS.ErrnoException;
      e.code = 'ENOSPC';
      throw e;
    };
    let error: unknown;
    await forget(repo, { policy: { last: 1 } }).catch((e: unknown) => (error = e));
    expect(error).toBeInstanceOf(StrataError);
    const err = error as StrataError;
    expect(err.code).toBe('no_space');
    expect(err.message).toMatch(new RegExp(`^no space left on device: removed 1 snapshot \\(${first.snapshot.slice(0, 8)}\\) and rewrote the refs of 1 later file version .*could not write their new sealed tables of contents.*strata prune`));
    expect(err.message).not.toMatch(/nothing was committed/);
    expect(err.toJSON()).toMatchObject({ removed: [first.snapshot], staleTocs: 1 });
    expect((await listSnapshots(repo)).map((s) => s.id)).toEqual([second.snapshot]);
    expect((await readWhole(repo, second.snapshot, file)).equals(v2)).toBe(true);

    repo.storage.put = put;
    const p = await prune(repo);
    expect(p.resealedTocs).toBe(1);
    expect((await check(repo, { readData: true })).ok).toBe(true);
    expect((await readWhole(repo, second.snapshot, file)).equals(v2)).toBe(true);
    repo.close();
  });
});
