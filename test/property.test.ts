/**
 * Property test: random edit sequences (overwrite, insert, delete, append,
 * truncate, new file, removed file) across versions; every version restores
 * byte-exact and hundreds of random ranges match an in-memory oracle.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { backup } from '../src/engine/backup.js';
import { openFile, readRange } from '../src/engine/read.js';
import { restore } from '../src/engine/restore.js';
import { findSnapshot } from '../src/engine/snapshot.js';
import type { Repository } from '../src/repo/repository.js';
import { makeRepo, Rng, tempDir } from './helpers.js';

const SEQUENCES = 30;
const VERSIONS = 5;
const RANGES_PER_SEQUENCE = 300;

type Oracle = Map<string, Buffer>;

function edit(rng: Rng, files: Oracle, dir: string): string {
  const names = [...files.keys()];
  const op = names.length === 0 ? 'new' : rng.pick(['overwrite', 'insert', 'delete', 'append', 'truncate', 'new', 'remove', 'overwrite', 'insert']);
  if (op === 'new') {
    const name = path.join(dir, `f${rng.int(1_000_000)}.bin`);
    const size = rng.int(4) === 0 ? rng.int(50) : rng.int(120_000);
    files.set(name, rng.bytes(size));
    return op;
  }
  const name = rng.pick(names);
  const data = files.get(name)!;
  const at = rng.int(data.length + 1);
  switch (op) {
    case 'overwrite': {
      const patch = rng.bytes(1 + rng.int(4000));
      const out = Buffer.concat([data.subarray(0, at), patch, data.subarray(Math.min(data.length, at + patch.length))]);
      files.set(name, out);
      break;
    }
    case 'insert':
      files.set(name, Buffer.concat([data.subarray(0, at), rng.bytes(1 + rng.int(3000)), data.subarray(at)]));
      break;
    case 'delete':
      files.set(name, Buffer.concat([data.subarray(0, at), data.subarray(Math.min(data.length, at + 1 + rng.int(5000)))]));
      break;
    case 'append':
      files.set(name, Buffer.concat([data, rng.bytes(1 + rng.int(8000))]));
      break;
    case 'truncate':
      files.set(name, data.subarray(0, at));
      break;
    case 'remove':
      files.delete(name);
      break;
  }
  return op;
}

function sync(dir: string, files: Oracle): void {
  for (const f of fs.readdirSync(dir)) if (!files.has(path.join(dir, f))) fs.rmSync(path.join(dir, f));
  for (const [name, data] of files) {
    if (fs.existsSync(name) && fs.readFileSync(name).equals(data)) continue;
    fs.writeFileSync(name, data);
  }
}

async function checkVersion(repo: Repository, snapshotId: string, files: Oracle, rng: Rng, ranges: number): Promise<void> {
  const snap = (await findSnapshot(repo, { kind: 'id', prefix: snapshotId }));
  for (let i = 0; i < ranges && files.size > 0; i++) {
    const [name, data] = [...files.entries()][rng.int(files.size)]!;
    const file = await openFile(snap, name);
    expect(file.version.size).toBe(data.length);
    if (data.length === 0) continue;
    const s = rng.int(data.length);
    const e = s + rng.int(Math.min(data.length - s, rng.int(2) ? 300 : 40_000));
    const parts: Buffer[] = [];
    for await (const p of readRange(repo, file.version, s, e)) parts.push(Buffer.from(p));
    const got = Buffer.concat(parts);
    if (!got.equals(data.subarray(s, e + 1))) throw new Error(`range ${s}-${e} of ${name} in ${snapshotId.slice(0, 8)} differs`);
  }
  const target = tempDir('strata-restore-');
  await restore(repo, snap, { target });
  const dir = [...snap.meta.paths][0]!;
  const restoredDir = path.join(target, dir);
  const restored = fs.existsSync(restoredDir) ? fs.readdirSync(restoredDir).sort() : [];
  expect(restored).toEqual([...files.keys()].map((f) => path.basename(f)).sort());
  for (const [name, data] of files) {
    if (!fs.readFileSync(path.join(target, name)).equals(data)) throw new Error(`restored ${name} of ${snapshotId.slice(0, 8)} differs`);
  }
  fs.rmSync(target, { recursive: true, force: true });
}

describe('random edit sequences, checked against an oracle', () => {
  let withRefs = 0;
  for (let seq = 0; seq < SEQUENCES; seq++) {
    it(`sequence ${seq} (seed ${1000 + seq})`, async () => {
      const rng = new Rng(1000 + seq);
      const repo = await makeRepo({ chunkAvg: 2048 });
      const dir = path.join(tempDir(), 'src');
      fs.mkdirSync(dir);
      const files: Oracle = new Map();
      const history: { id: string; files: Oracle }[] = [];
      let sawRef = false;
      for (let v = 0; v < VERSIONS; v++) {
        const edits = v === 0 ? 3 + rng.int(3) : 1 + rng.int(4);
        for (let k = 0; k < edits; k++) edit(rng, files, dir);
        sync(dir, files);
        const r = await backup(repo, { paths: [dir], time: Date.UTC(2026, 0, 1 + v) });
        if (r.refEntries > 0) sawRef = true;
        history.push({ id: r.snapshot, files: new Map(files) });
      }
      if (sawRef) withRefs++;
      for (const h of history) await checkVersion(repo, h.id, h.files, rng, Math.ceil(RANGES_PER_SEQUENCE / VERSIONS));
      repo.close();
    });
  }

  it('exercised reference blocks in most sequences', () => {
    expect(withRefs).toBeGreaterThanOrEqual(SEQUENCES * 0.8);
  });
});
