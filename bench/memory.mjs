#!/usr/bin/env node
// npm run bench:memory -- [--size 4G] [--runs 3] [--dir .bench-memory]
//
// Peak RSS of strata on one large file: a baseline backup (every block new),
// an incremental after 50 scattered 4 KiB overwrites, and a full restore.
// The file is seeded pseudo-random data, so nothing compresses or repeats:
// the worst case for memory. Each operation is a whole process under
// /usr/bin/time with --key-file; figures are medians.
import { execFileSync, spawnSync } from 'node:child_process';
import { createCipheriv } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { arg, log, ROOT, size as sizeOf, STRATA } from './args.mjs';

const size = sizeOf(arg('size', '4G'));
const runs = Number(arg('runs', '3'));
const dir = path.resolve(arg('dir', path.join(ROOT, '.bench-memory')));

fs.rmSync(dir, { recursive: true, force: true });
const src = path.join(dir, 'src');
fs.mkdirSync(src, { recursive: true });
const file = path.join(src, 'disk.img');

log(`writing ${(size / 1024 ** 3).toFixed(2)} GiB to ${file}`);
const cipher = createCipheriv('aes-256-ctr', Buffer.alloc(32, 7), Buffer.alloc(16));
const zeros = Buffer.alloc(8 * 1024 * 1024);
const fd = fs.openSync(file, 'w');
for (let done = 0; done < size; done += zeros.length) fs.writeSync(fd, cipher.update(zeros.subarray(0, Math.min(zeros.length, size - done))));
fs.closeSync(fd);

function timed(args) {
  const out = path.join(dir, 'time.txt');
  const r = spawnSync('/usr/bin/time', ['-f', '%e %M', '-o', out, 'node', STRATA, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  if (r.status !== 0) throw new Error(`strata ${args.join(' ')} failed (${r.status}): ${r.stderr.toString().slice(-2000)}`);
  const [wall, rss] = fs.readFileSync(out, 'utf8').trim().split(/\s+/).map(Number);
  return { wall, rssMB: rss / 1024 };
}

const results = { baseline: [], incremental: [], restore: [] };
for (let run = 0; run < runs; run++) {
  const repo = path.join(dir, 'repo');
  const key = path.join(dir, 'repo.key');
  fs.rmSync(repo, { recursive: true, force: true });
  fs.rmSync(key, { force: true });
  const env = { ...process.env, STRATA_PASSWORD: 'bench' };
  execFileSync('node', [STRATA, 'init', '--repo', repo, '--scrypt-n', '1024', '-q'], { env });
  execFileSync('node', [STRATA, 'key', 'export', '--repo', repo, key], { env });
  const common = ['--repo', repo, '--key-file', key, '-q'];
  results.baseline.push(timed(['backup', ...common, src]));
  const w = fs.openSync(file, 'r+');
  for (let i = 0; i < 50; i++) fs.writeSync(w, cipher.update(Buffer.alloc(4096)), 0, 4096, Math.floor(((i + 0.5) * size) / 50) + run);
  fs.closeSync(w);
  results.incremental.push(timed(['backup', ...common, src]));
  const target = path.join(dir, 'restored');
  fs.rmSync(target, { recursive: true, force: true });
  results.restore.push(timed(['restore', ...common, src, '--target', target]));
  fs.rmSync(target, { recursive: true, force: true });
  log(`run ${run + 1}/${runs}: ${Object.entries(results).map(([k, v]) => `${k} ${v.at(-1).wall}s ${v.at(-1).rssMB.toFixed(0)} MiB`).join(', ')}`);
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const label = size >= 1024 ** 3 ? `${(size / 1024 ** 3).toFixed(0)} GiB` : `${(size / 1024 ** 2).toFixed(0)} MiB`;
console.log(`| operation on a ${label} file | wall s | peak RSS MiB |`);
console.log('|---|---|---|');
for (const [k, v] of Object.entries(results)) console.log(`| ${k} | ${median(v.map((r) => r.wall)).toFixed(1)} | ${median(v.map((r) => r.rssMB)).toFixed(0)} |`);
fs.rmSync(dir, { recursive: true, force: true });
