#!/usr/bin/env node
// npm run build && node bench/read-at.mjs [--size 64M] [--reads 4096] [--read 4K] [--api tree|range] [--cache 64M] [--remote]
//
// Many small reads of one large file, as a mount makes them: consecutive
// reads from its start, then as many at random offsets, each timed by
// the CPU the process used (all threads) and the wall clock. `--api range`
// reads through openFile/readRange, one range read per call; `--api tree`
// (the default) through SnapshotTree's VersionFile.readAt, with `--cache`
// bytes of decoded blocks and checked pieces (0: none). `--remote` reads
// through a `strata serve` on loopback.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import { arg, flag, log, ROOT, size } from './args.mjs';
import { addToken, startServer } from './remote.mjs';

const dist = (m) => import(path.join(ROOT, 'dist', m));
const { Repository } = await dist('repo/repository.js');
const { backup } = await dist('engine/backup.js');

const opts = { size: size(arg('size', '64M')), reads: Number(arg('reads', '4096')), read: size(arg('read', '4K')), api: arg('api', 'tree'), remote: flag('remote') };
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'strata-read-at-'));
process.on('exit', () => fs.rmSync(work, { recursive: true, force: true }));

// Compressible like a mailbox: words from a small vocabulary, seeded.
// xorshift32: integer steps only (a float LCG loses bits and falls into a short cycle).
let seed = 7;
const rand = () => {
  seed ^= seed << 13;
  seed ^= seed >>> 17;
  seed ^= seed << 5;
  return (seed >>> 0) / 2 ** 32;
};
const words = Array.from({ length: 2000 }, (_, i) => `w${i.toString(36)}${'x'.repeat(i % 7)}`);
function text(n) {
  const parts = [];
  let len = 0;
  while (len < n) {
    const w = words[Math.floor(rand() * words.length)] + (rand() < 0.1 ? '\n' : ' ');
    parts.push(w);
    len += w.length;
  }
  return Buffer.from(parts.join('')).subarray(0, n);
}

const src = path.join(work, 'src');
fs.mkdirSync(src);
const file = path.join(src, 'big');
const first = text(opts.size);
fs.writeFileSync(file, first);
const dir = path.join(work, 'repo');
let repo = await Repository.init(dir, 'bench', { scrypt: { N: 1024, r: 8, p: 1 } });
await backup(repo, { paths: [src], time: Date.UTC(2026, 0, 1) });
// A second version with an insertion: the reads go through reference entries.
const second = Buffer.concat([first.subarray(0, first.length >> 1), Buffer.from('INSERTED '), first.subarray(first.length >> 1)]);
fs.writeFileSync(file, second);
await backup(repo, { paths: [src], time: Date.UTC(2026, 0, 2) });
repo.close();

const remoteOpts = {};
let where = dir;
if (opts.remote) {
  const tok = addToken(dir, 'bench');
  where = startServer(dir, path.join(work, 'serve.log')).url;
  Object.assign(remoteOpts, { token: tok, cacheDir: path.join(work, 'cache') });
}
repo = await Repository.open(where, { password: async () => 'bench' }, { readonly: true }, remoteOpts);

let readAt;
if (opts.api === 'range') {
  const { openFile, readRange } = await dist('engine/read.js');
  const { findSnapshot } = await dist('engine/snapshot.js');
  const f = await openFile(await findSnapshot(repo, { kind: 'latest' }), file);
  readAt = async (offset, length) => {
    const parts = [];
    for await (const p of readRange(repo, f.version, offset, offset + length - 1)) parts.push(p);
    return Buffer.concat(parts);
  };
} else {
  const { SnapshotTree, setDecodedCacheBytes } = await dist('engine/snapshot-tree.js');
  setDecodedCacheBytes(size(arg('cache', '64M')));
  const f = await (await SnapshotTree.open(repo, { at: 'latest' })).open(file);
  readAt = (offset, length) => f.readAt(offset, length);
}

async function run(name, offsets) {
  const cpu = process.cpuUsage();
  const wall = performance.now();
  for (const o of offsets) {
    const b = await readAt(o, Math.min(opts.read, second.length - o));
    if (!b.equals(second.subarray(o, o + b.length))) throw new Error(`wrong bytes at ${o}`);
  }
  const used = process.cpuUsage(cpu);
  const ms = { cpu: (used.user + used.system) / 1000, wall: performance.now() - wall };
  log(`${name}: ${offsets.length} reads of ${opts.read} B, CPU ${ms.cpu.toFixed(0)} ms (${((ms.cpu * 1000) / offsets.length).toFixed(0)} us a read), wall ${ms.wall.toFixed(0)} ms`);
  return ms;
}

const sequential = Array.from({ length: Math.min(opts.reads, Math.ceil(second.length / opts.read)) }, (_, i) => i * opts.read);
log(`${opts.api}${opts.remote ? ' (remote)' : ''}: a file of ${second.length} bytes`);
await run('sequential', sequential);
const random = Array.from({ length: opts.reads }, () => Math.floor(rand() * (second.length - 1)));
await run('random', random);
await run('random again', random);
repo.close();
process.exit(0);
