#!/usr/bin/env node
// npm run bench:mount-peers -- [--big 1G] [--huge 4G] [--entries 100000] [--runs 3] [--tools strata,restic,borg] [--dir .bench-mount-peers] [--keep] [--reuse] [--restore] [--rss-only]
//
// strata mount beside `restic mount` and `borg mount`, on the same data backed
// up once by each tool (not timed):
// - time to first byte: from starting the mount command to the first byte of
//   the big file read through it (head -c 1, tried every 20 ms);
// - a sequential read of the big file (--big) through a fresh mount (dd bs=1M);
// - `ls -l` of a directory of --entries small files, on a fresh mount (cold),
//   then again (warm), named by its real path (a `latest` symlink resolved once);
// - peak RSS (VmHWM) of the mount process after dd has read the huge file
//   (--huge, 0 to leave it out) through it.
// --restore: also `strata restore` of the big file each run (strata only), for
// the mount's read against restore's throughput on the same file.
// --rss-only: only the read of the huge file and the peak RSS (and, with
// STRATA_MOUNT_MEMORY_LOG, strata's largest figures from its memory log).
// A quick run: --big 64M --huge 256M --entries 2000 --runs 1.
//
// Needs /dev/fuse, fusermount3 and the fuse-napi binding (strata); restic and
// borgbackup from Debian (apt-get install restic borgbackup); borg mount needs
// python3-llfuse (apt-get install python3-llfuse). A tool that is not
// installed is left out, and said so. The data is seeded pseudo-random (not
// compressible, as for every tool). Figures are medians of --runs.
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { createCipheriv } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { arg, flag, log, ROOT, size as sizeOf, STRATA } from './args.mjs';

// Measured as a user runs it (see bench/run.mjs).
delete process.env.NODE_EXTRA_CA_CERTS;

const big = sizeOf(arg('big', '1G'));
const huge = sizeOf(arg('huge', '4G'));
const entries = Number(arg('entries', '100000'));
const runs = Number(arg('runs', '3'));
const dir = path.resolve(arg('dir', path.join(ROOT, '.bench-mount-peers')));
const have = (cmd) => spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;
const borgFuse = () => spawnSync('/usr/bin/python3', ['-c', 'import llfuse']).status === 0 || spawnSync('/usr/bin/python3', ['-c', 'import pyfuse3']).status === 0;
const wanted = arg('tools', 'strata,restic,borg').split(',');
const tools = wanted.filter((t) => {
  if (t === 'strata') return true;
  if (t === 'restic' && have('restic')) return true;
  if (t === 'borg' && have('borg') && borgFuse()) return true;
  log(`skipping ${t}: not installed (${t === 'borg' ? 'apt-get install borgbackup python3-llfuse' : `apt-get install ${t}`})`);
  return false;
});

const env = { ...process.env, STRATA_PASSWORD: 'bench', RESTIC_PASSWORD: 'bench', BORG_PASSPHRASE: 'bench', BORG_RELOCATED_REPO_ACCESS_IS_OK: 'yes' };

// --reuse: the data and repositories a run with --keep left in --dir (the same --big, --huge, --entries and tools), not made again.
const reuse = flag('reuse');
if (!reuse) fs.rmSync(dir, { recursive: true, force: true });
const data = path.join(dir, 'data');
const many = path.join(data, 'many');
fs.mkdirSync(many, { recursive: true });
const cipher = createCipheriv('aes-256-ctr', Buffer.alloc(32, 9), Buffer.alloc(16));
const zeros = Buffer.alloc(8 * 1024 * 1024);
function randomFile(where, bytes) {
  const fd = fs.openSync(where, 'w');
  for (let done = 0; done < bytes; done += zeros.length) fs.writeSync(fd, cipher.update(zeros.subarray(0, Math.min(zeros.length, bytes - done))));
  fs.closeSync(fd);
}
const bigFile = path.join(data, 'big.bin');
const hugeFile = path.join(data, 'huge.bin');
if (!reuse) {
  log(`making the data: ${big} + ${huge} bytes, ${entries} small files`);
  randomFile(bigFile, big);
  if (huge > 0) randomFile(hugeFile, huge);
  for (let i = 0; i < entries; i++) fs.writeFileSync(path.join(many, `f${String(i).padStart(6, '0')}`), `${i}\n`);
  execFileSync('sync');
}

const strataRepo = path.join(dir, 'strata');
const strataKey = path.join(dir, 'strata.key');
const resticRepo = path.join(dir, 'restic');
const borgRepo = path.join(dir, 'borg');
const run = (cmd, args) => execFileSync(cmd, args, { env, stdio: ['ignore', 'ignore', 'inherit'], maxBuffer: 1 << 26 });
for (const t of reuse ? [] : tools) {
  log(`backing up with ${t}`);
  if (t === 'strata') {
    run('node', [STRATA, '--repo', strataRepo, 'init', '--scrypt-n', '1024', '-q']);
    run('node', [STRATA, '--repo', strataRepo, 'key', 'export', strataKey]);
    run('node', [STRATA, '--repo', strataRepo, '--key-file', strataKey, 'backup', data, '-q']);
  } else if (t === 'restic') {
    run('restic', ['init', '-q', '--repo', resticRepo]);
    run('restic', ['backup', '-q', '--repo', resticRepo, data]);
  } else {
    run('borg', ['init', '-e', 'repokey-blake2', borgRepo]);
    run('borg', ['create', `${borgRepo}::data`, data]);
  }
}
execFileSync('sync');

const mnt = path.join(dir, 'mnt');
fs.mkdirSync(mnt, { recursive: true });

/** The command that mounts each tool's repository (borg: its one archive) in the foreground, and where the latest data is in it. */
const mounts = {
  strata: { cmd: 'node', args: [STRATA, '--repo', strataRepo, '--key-file', strataKey, 'mount', mnt], at: path.join(mnt, 'latest', data) },
  restic: { cmd: 'restic', args: ['mount', '--repo', resticRepo, mnt], at: path.join(mnt, 'snapshots', 'latest', data) },
  borg: { cmd: 'borg', args: ['mount', '-f', `${borgRepo}::data`, mnt], at: path.join(mnt, data.slice(1)) },
};

const seconds = (f) => {
  const t = process.hrtime.bigint();
  f();
  return Number(process.hrtime.bigint() - t) / 1e9;
};
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const mountedHere = () => fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n').some((l) => l.split(' ')[4] === mnt);

/** Mounts with `tool`, runs `f(mount)` once the first byte of the big file reads, and unmounts (always). */
async function mounted(tool, f) {
  const m = mounts[tool];
  const started = process.hrtime.bigint();
  const p = spawn(m.cmd, m.args, { env, stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  p.stderr.on('data', (c) => (err += c.toString()));
  let exited = false;
  const gone = new Promise((r) => p.once('exit', () => ((exited = true), r())));
  try {
    const file = path.join(m.at, 'big.bin');
    for (;;) {
      if (exited) throw new Error(`${tool} mount exited: ${err}`);
      if (spawnSync('head', ['-c', '1', file], { stdio: ['ignore', 'pipe', 'ignore'] }).stdout?.length === 1) break;
      if (Number(process.hrtime.bigint() - started) > 600e9) throw new Error(`${tool} mount: no first byte in 10 minutes`);
      await sleep(20);
    }
    const firstByte = Number(process.hrtime.bigint() - started) / 1e9;
    return await f({ at: m.at, pid: p.pid, firstByte });
  } finally {
    if (!exited) p.kill('SIGINT');
    await Promise.race([gone, sleep(10_000)]);
    if (!exited) p.kill('SIGKILL');
    await Promise.race([gone, sleep(5_000)]);
    for (let i = 0; i < 50 && mountedHere(); i++) {
      spawnSync('fusermount3', ['-u', mnt]);
      if (mountedHere()) await sleep(100);
    }
    if (mountedHere()) spawnSync('fusermount3', ['-uz', mnt]);
  }
}

/** Peak resident memory of a process so far (VmHWM), in MiB. */
const peakRss = (pid) => Number(/VmHWM:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))[1]) / 1024;

const rssOnly = flag('rss-only');
const withRestore = flag('restore') && !rssOnly;
const memoryLog = process.env.STRATA_MOUNT_MEMORY_LOG ? path.resolve(process.env.STRATA_MOUNT_MEMORY_LOG) : undefined;
/** strata's largest figures in its memory log (MiB), by field. */
const memoryPeaks = (file) =>
  fs
    .readFileSync(file, 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l))
    .reduce((m, l) => Object.fromEntries(Object.keys(l).filter((k) => k !== 't').map((k) => [k, Math.max(m[k] ?? 0, l[k])])), {});
const results = Object.fromEntries(tools.map((t) => [t, { firstByte: [], seq: [], lsCold: [], lsWarm: [], rss: [], restore: [], memory: [] }]));
for (let r = 0; r < runs; r++) {
  for (const t of tools) {
    const res = results[t];
    if (!rssOnly) {
      await mounted(t, ({ at, firstByte }) => {
        res.firstByte.push(firstByte);
        res.seq.push(seconds(() => execFileSync('dd', [`if=${path.join(at, 'big.bin')}`, 'of=/dev/null', 'bs=1M', 'status=none'])));
      });
      if (withRestore && t === 'strata') {
        const target = path.join(dir, 'restored');
        fs.rmSync(target, { recursive: true, force: true });
        res.restore.push(seconds(() => run('node', [STRATA, '--repo', strataRepo, '--key-file', strataKey, 'restore', bigFile, '--target', target, '-q'])));
        fs.rmSync(target, { recursive: true, force: true });
      }
      await mounted(t, ({ at }) => {
        // The directory itself, as after `cd`: a path through a `latest` symlink (strata's, restic's) costs a readlink per lookup.
        const many = fs.realpathSync(path.join(at, 'many'));
        res.lsCold.push(seconds(() => execFileSync('ls', ['-l', many], { stdio: ['ignore', 'ignore', 'inherit'], maxBuffer: 1 << 28 })));
        res.lsWarm.push(seconds(() => execFileSync('ls', ['-l', many], { stdio: ['ignore', 'ignore', 'inherit'], maxBuffer: 1 << 28 })));
      });
    }
    if (huge > 0) {
      if (memoryLog) fs.rmSync(memoryLog, { force: true });
      await mounted(t, ({ at, pid }) => {
        execFileSync('dd', [`if=${path.join(at, 'huge.bin')}`, 'of=/dev/null', 'bs=1M', 'status=none']);
        res.rss.push(peakRss(pid));
      });
      if (memoryLog && t === 'strata' && fs.existsSync(memoryLog)) res.memory.push(memoryPeaks(memoryLog));
    }
    const parts = [];
    if (!rssOnly) parts.push(`first byte ${res.firstByte.at(-1).toFixed(2)} s, read ${(big / 2 ** 20 / res.seq.at(-1)).toFixed(0)} MiB/s, ls -l ${res.lsCold.at(-1).toFixed(2)} / ${res.lsWarm.at(-1).toFixed(2)} s`);
    if (res.restore.length > 0) parts.push(`restore ${(big / 2 ** 20 / res.restore.at(-1)).toFixed(0)} MiB/s`);
    if (huge > 0) parts.push(`peak RSS ${res.rss.at(-1).toFixed(0)} MiB`);
    if (res.memory.length > 0) parts.push(`memory log peaks ${JSON.stringify(res.memory.at(-1))}`);
    log(`run ${r + 1}/${runs} ${t}: ${parts.join(', ')}`);
  }
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const mib = (b) => `${(b / 2 ** 20).toFixed(0)} MiB`;
console.log(`| mounts, medians of ${runs} | ${tools.join(' | ')} |`);
console.log(`|---|${tools.map(() => '---').join('|')}|`);
const row = (label, f) => console.log(`| ${label} | ${tools.map((t) => f(results[t])).join(' | ')} |`);
if (!rssOnly) {
  row('time to first byte (mount command to 1 byte read)', (r) => `${median(r.firstByte).toFixed(2)} s`);
  row(`sequential read of ${mib(big)} (dd bs=1M, fresh mount)`, (r) => `${median(r.seq).toFixed(2)} s (${(big / 2 ** 20 / median(r.seq)).toFixed(0)} MiB/s)`);
  row(`ls -l of ${entries} entries, cold`, (r) => `${median(r.lsCold).toFixed(2)} s`);
  row(`the same ls -l again, warm`, (r) => `${median(r.lsWarm).toFixed(2)} s`);
}
if (huge > 0) row(`peak RSS of the mount process after reading ${mib(huge)}`, (r) => `${median(r.rss).toFixed(0)} MiB`);
if (withRestore) {
  const s = results.strata;
  console.log(`\nstrata restore of the ${mib(big)} file: ${median(s.restore).toFixed(2)} s (${(big / 2 ** 20 / median(s.restore)).toFixed(0)} MiB/s); the mount's read is ${(median(s.restore) / median(s.seq)).toFixed(2)}x its throughput`);
}
if (tools.includes('strata') && !rssOnly) {
  for (const t of tools.filter((x) => x !== 'strata')) {
    const s = results.strata;
    const o = results[t];
    console.log(`\nstrata/${t}: first byte ${(median(s.firstByte) / median(o.firstByte)).toFixed(2)}x the time, read ${(median(o.seq) / median(s.seq)).toFixed(2)}x the throughput, ls -l cold ${(median(s.lsCold) / median(o.lsCold)).toFixed(2)}x and warm ${(median(s.lsWarm) / median(o.lsWarm)).toFixed(2)}x the time${huge > 0 ? `, ${(median(s.rss) / median(o.rss)).toFixed(2)}x the peak RSS` : ''}`);
  }
}
if (!flag('keep')) fs.rmSync(dir, { recursive: true, force: true });
