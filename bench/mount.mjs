#!/usr/bin/env node
// npm run bench:mount -- [--size 256M] [--runs 5] [--snapshots 1000] [--image 1G] [--dir .bench-mount]
//
// strata mount, read-only (needs /dev/fuse, fusermount3 and the fuse-napi
// binding; python3 for the O_DIRECT reads):
// - a sequential read of one file through the mount (dd bs=1M, a fresh mount
//   each run) beside `strata restore` and `strata cat` of the same file;
// - 1,000 random 4 KiB reads at distinct offsets with O_DIRECT, so that each
//   reaches strata: cold (blocks not yet decoded) and warm (again), p50 and p99;
// - a repository of --snapshots snapshots: mount start to the ready line, the
//   first `ls` of snapshots/ and `ls -l ids/`.
// - writable (--image, 0 to leave it out): 1 MiB written into an image of
//   that size through `strata mount --writable` (dd conv=notrunc,fsync), in
//   one piece and as 256 scattered 4 KiB writes, then `strata commit`: the
//   overlay's size on disk, the bytes the commit added to the repository and
//   how long it took.
// The file is seeded pseudo-random data. Figures are medians of --runs.
import { execFileSync, spawn } from 'node:child_process';
import { createCipheriv } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { arg, log, ROOT, size as sizeOf, STRATA } from './args.mjs';

const size = sizeOf(arg('size', '256M'));
const runs = Number(arg('runs', '5'));
const snapshots = Number(arg('snapshots', '1000'));
const imageSize = sizeOf(arg('image', '1G'));
const dir = path.resolve(arg('dir', path.join(ROOT, '.bench-mount')));
const env = { ...process.env, STRATA_PASSWORD: 'bench' };

fs.rmSync(dir, { recursive: true, force: true });
const src = path.join(dir, 'src');
fs.mkdirSync(src, { recursive: true });
const file = path.join(src, 'data.bin');
const cipher = createCipheriv('aes-256-ctr', Buffer.alloc(32, 7), Buffer.alloc(16));
const zeros = Buffer.alloc(8 * 1024 * 1024);
/** A file of `bytes` pseudo-random bytes. */
function randomFile(where, bytes) {
  const fd = fs.openSync(where, 'w');
  for (let done = 0; done < bytes; done += zeros.length) fs.writeSync(fd, cipher.update(zeros.subarray(0, Math.min(zeros.length, bytes - done))));
  fs.closeSync(fd);
}
randomFile(file, size);

const repo = path.join(dir, 'repo');
const key = path.join(dir, 'repo.key');
const strata = (args, opts = {}) => execFileSync('node', [STRATA, '--repo', repo, ...args], { env, ...opts });
strata(['init', '--scrypt-n', '1024', '-q']);
strata(['key', 'export', key]);
strata(['--key-file', key, 'backup', src, '-q']);
const mnt = path.join(dir, 'mnt');
fs.mkdirSync(mnt);

const seconds = (f) => {
  const t = process.hrtime.bigint();
  f();
  return Number(process.hrtime.bigint() - t) / 1e9;
};

/** Runs `strata mount` until `f` is done with it; f gets the time the ready line took. */
async function mounted(repoDir, keyFile, f) {
  const t = process.hrtime.bigint();
  const p = spawn('node', [STRATA, '--repo', repoDir, '--key-file', keyFile, 'mount', mnt], { env, stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise((resolve, reject) => {
    p.stdout.once('data', resolve);
    p.once('exit', (code) => reject(new Error(`strata mount exited with ${code}`)));
  });
  const ready = Number(process.hrtime.bigint() - t) / 1e9;
  try {
    return await f(ready);
  } finally {
    const exited = new Promise((r) => p.once('exit', r));
    p.kill('SIGTERM');
    await exited;
  }
}

const LATENCY = `
import mmap, os, random, sys, time
path = sys.argv[1]
random.seed(1)
offs = [o * 4096 for o in random.sample(range(os.stat(path).st_size // 4096), 1000)]
fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
buf = mmap.mmap(-1, 4096)
for _ in range(2):
    lat = []
    for o in offs:
        t = time.perf_counter(); os.preadv(fd, [buf], o); lat.append((time.perf_counter() - t) * 1000)
    lat.sort()
    print(lat[500], lat[990])
`;

const inMount = path.join(mnt, 'latest', file);
const results = { mountRead: [], restore: [], cat: [], cold50: [], cold99: [], warm50: [], warm99: [] };
for (let run = 0; run < runs; run++) {
  await mounted(repo, key, () => results.mountRead.push(seconds(() => execFileSync('dd', [`if=${inMount}`, 'of=/dev/null', 'bs=1M', 'status=none']))));
  const target = path.join(dir, 'restored');
  fs.rmSync(target, { recursive: true, force: true });
  results.restore.push(seconds(() => strata(['--key-file', key, 'restore', file, '--target', target, '-q'])));
  fs.rmSync(target, { recursive: true, force: true });
  results.cat.push(seconds(() => strata(['--key-file', key, 'cat', file, '-o', '/dev/null'])));
  await mounted(repo, key, () => {
    const [cold, warm] = execFileSync('python3', ['-c', LATENCY, inMount]).toString().trim().split('\n').map((l) => l.split(' ').map(Number));
    results.cold50.push(cold[0]);
    results.cold99.push(cold[1]);
    results.warm50.push(warm[0]);
    results.warm99.push(warm[1]);
  });
  log(`run ${run + 1}/${runs}: mount ${results.mountRead.at(-1).toFixed(2)} s, restore ${results.restore.at(-1).toFixed(2)} s, cat ${results.cat.at(-1).toFixed(2)} s`);
}

// Many snapshots of a small tree: made in this process, through the engine (a CLI backup each would take minutes).
const many = { ready: [], ls: [], lsl: [] };
if (snapshots > 0) {
  const { Repository } = await import('../dist/repo/repository.js');
  const { backup } = await import('../dist/engine/backup.js');
  const manyRepo = path.join(dir, 'many');
  const small = path.join(dir, 'small');
  fs.mkdirSync(small);
  const r = await Repository.init(manyRepo, 'bench', { scrypt: { N: 1024, r: 8, p: 1 } });
  const t0 = Date.UTC(2024, 0, 1);
  for (let i = 0; i < snapshots; i++) {
    fs.writeFileSync(path.join(small, 'note.txt'), `version ${i}\n`);
    await backup(r, { paths: [small], time: t0 + i * 3_600_000, tags: i % 7 === 0 ? ['weekly'] : [] });
  }
  r.close();
  const manyKey = path.join(dir, 'many.key');
  execFileSync('node', [STRATA, '--repo', manyRepo, 'key', 'export', manyKey], { env });
  for (let run = 0; run < runs; run++) {
    await mounted(manyRepo, manyKey, (ready) => {
      many.ready.push(ready);
      many.ls.push(seconds(() => execFileSync('ls', [path.join(mnt, 'snapshots')])));
      many.lsl.push(seconds(() => execFileSync('ls', ['-l', path.join(mnt, 'ids')])));
    });
  }
}

// Writable: 1 MiB into an image, committed.
const writable = { oneOverlay: [], oneAdded: [], oneCommit: [], oneWall: [], scatterOverlay: [], scatterAdded: [], scatterCommit: [], scatterWall: [] };
if (imageSize > 0) {
  const imageDir = path.join(dir, 'images');
  fs.mkdirSync(imageDir);
  const image = path.join(imageDir, 'disk.img');
  randomFile(image, imageSize);
  const imageRepo = path.join(dir, 'image-repo');
  const at = (args) => execFileSync('node', [STRATA, '--repo', imageRepo, '--key-file', key2(), ...args], { env, maxBuffer: 1 << 26 }).toString();
  execFileSync('node', [STRATA, '--repo', imageRepo, 'init', '--scrypt-n', '1024', '-q'], { env });
  function key2() {
    const k = path.join(dir, 'image-repo.key');
    if (!fs.existsSync(k)) execFileSync('node', [STRATA, '--repo', imageRepo, 'key', 'export', k], { env });
    return k;
  }
  const base = JSON.parse(at(['backup', imageDir, '--json'])).snapshot;
  fs.rmSync(image);
  const cacheDir = path.join(dir, 'cache');
  const MIB = 1024 * 1024;
  const pieceFile = path.join(dir, 'piece');
  let seed = 1;
  const rand = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
  for (let run = 0; run < runs; run++) {
    for (const how of ['one', 'scatter']) {
      const p = spawn('node', [STRATA, '--repo', imageRepo, '--key-file', key2(), '--cache-dir', cacheDir, 'mount', mnt, '--writable', '--at', base, '--json'], { env, stdio: ['ignore', 'pipe', 'inherit'] });
      const ready = JSON.parse(
        await new Promise((resolve, reject) => {
          p.stdout.once('data', (d) => resolve(d.toString().split('\n')[0]));
          p.once('exit', (code) => reject(new Error(`strata mount --writable exited with ${code}`)));
        }),
      );
      const target = path.join(mnt, image);
      // Bytes never written before: none of them is in the repository yet.
      fs.writeFileSync(pieceFile, cipher.update(zeros.subarray(0, MIB)));
      if (how === 'one') {
        const at4k = Math.floor((rand() * (imageSize - MIB)) / 4096);
        execFileSync('dd', [`if=${pieceFile}`, `of=${target}`, 'bs=4096', `seek=${at4k}`, 'count=256', 'conv=notrunc,fsync', 'status=none']);
      } else {
        // 256 writes of 4 KiB at distinct random places, in one process, then one fsync.
        const offsets = new Set();
        while (offsets.size < 256) offsets.add(Math.floor((rand() * imageSize) / 4096) * 4096);
        execFileSync('python3', ['-c', 'import os,sys\nfd=os.open(sys.argv[1],os.O_WRONLY)\nb=open(sys.argv[2],"rb").read()\nfor i,o in enumerate(sys.argv[3:]): os.pwrite(fd,b[i*4096:(i+1)*4096],int(o))\nos.fsync(fd)\nos.close(fd)', target, pieceFile, ...[...offsets].map(String)]);
      }
      const overlayKiB = Number.parseInt(execFileSync('du', ['-sk', ready.overlay]).toString(), 10);
      const t = process.hrtime.bigint();
      const c = JSON.parse(at(['--cache-dir', cacheDir, 'commit', mnt, '--json']));
      writable[`${how}Wall`].push(Number(process.hrtime.bigint() - t) / 1e9);
      writable[`${how}Commit`].push(c.durationMs / 1000);
      writable[`${how}Added`].push(c.bytesAdded);
      writable[`${how}Overlay`].push(overlayKiB);
      const exited = new Promise((r) => p.once('exit', r));
      p.kill('SIGTERM');
      await exited;
    }
    log(`run ${run + 1}/${runs}: 1 MiB in one piece committed ${(writable.oneAdded.at(-1) / MIB).toFixed(2)} MiB in ${writable.oneWall.at(-1).toFixed(2)} s; scattered ${(writable.scatterAdded.at(-1) / MIB).toFixed(2)} MiB in ${writable.scatterWall.at(-1).toFixed(2)} s`);
  }
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const mib = size / 1024 ** 2;
console.log(`| strata mount, ${mib.toFixed(0)} MiB file, medians of ${runs} | result |`);
console.log('|---|---|');
console.log(`| sequential read through the mount (dd bs=1M) | ${median(results.mountRead).toFixed(2)} s (${(mib / median(results.mountRead)).toFixed(0)} MiB/s) |`);
console.log(`| strata restore of the file | ${median(results.restore).toFixed(2)} s: mount/restore throughput ${(median(results.restore) / median(results.mountRead)).toFixed(2)}x |`);
console.log(`| strata cat of the file | ${median(results.cat).toFixed(2)} s |`);
console.log(`| random 4 KiB reads (O_DIRECT), cold, p50 / p99 | ${median(results.cold50).toFixed(3)} / ${median(results.cold99).toFixed(1)} ms |`);
console.log(`| the same reads again, warm, p50 / p99 | ${median(results.warm50).toFixed(3)} / ${median(results.warm99).toFixed(1)} ms |`);
if (snapshots > 0) {
  console.log(`| ${snapshots} snapshots: start to ready line | ${(median(many.ready) * 1000).toFixed(0)} ms |`);
  console.log(`| then ls snapshots/ | ${(median(many.ls) * 1000).toFixed(0)} ms |`);
  console.log(`| then ls -l ids/ | ${(median(many.lsl) * 1000).toFixed(0)} ms |`);
}
if (imageSize > 0) {
  const mb = (b) => (b / 1024 ** 2).toFixed(2);
  console.log('');
  console.log(`| strata mount --writable, 1 MiB into a ${(imageSize / 1024 ** 3).toFixed(2)} GiB image, medians of ${runs} | one piece | 256 scattered 4 KiB writes |`);
  console.log('|---|---|---|');
  console.log(`| overlay on disk before the commit (du) | ${median(writable.oneOverlay)} KiB | ${median(writable.scatterOverlay)} KiB |`);
  console.log(`| new data the commit added (packs written) | ${mb(median(writable.oneAdded))} MiB | ${mb(median(writable.scatterAdded))} MiB |`);
  console.log(`| the commit in the mount (durationMs) | ${median(writable.oneCommit).toFixed(2)} s | ${median(writable.scatterCommit).toFixed(2)} s |`);
  console.log(`| strata commit MOUNTPOINT, start to exit | ${median(writable.oneWall).toFixed(2)} s | ${median(writable.scatterWall).toFixed(2)} s |`);
}
fs.rmSync(dir, { recursive: true, force: true });
