#!/usr/bin/env node
// npm run bench:copy -- [--mib 64] [--runs 3] [--dir .bench/copy] [--json]
//
// What `strata copy` costs beside the backups it copies: a tree of files of
// random bytes (2 MiB each, --mib in all) backed up three times (the first
// backup, then two that each change 64 KiB in the middle of an eighth of the
// files and add one file), then all three snapshots copied into a fresh
// repository. For each run: wall seconds of each backup, of the copy, and of
// a second copy (nothing left to copy); the bytes the two repositories hold
// (their packs). Medians over the runs.
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { arg, flag, log, ROOT, STRATA } from './args.mjs';

const opts = {
  mib: Number(arg('mib', '64')),
  runs: Number(arg('runs', '3')),
  dir: path.resolve(arg('dir', path.join(ROOT, '.bench', 'copy'))),
  json: flag('json'),
};
delete process.env.NODE_EXTRA_CA_CERTS; // measured as a user runs strata

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

let seed = 0x2222;
function random(n) {
  const b = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i += 4) {
    seed ^= seed << 13;
    seed ^= seed >>> 17;
    seed ^= seed << 5;
    b.writeInt32LE(seed | 0, Math.min(i, n - 4));
  }
  return b;
}

const FILE = 2 * 1024 * 1024;

function timed(args, env) {
  const started = process.hrtime.bigint();
  const r = spawnSync(process.execPath, [STRATA, ...args], { env, stdio: ['ignore', 'ignore', 'pipe'] });
  if (r.status !== 0) throw new Error(`strata ${args.join(' ')}: exit ${r.status}\n${r.stderr.toString().slice(-2000)}`);
  return Number(process.hrtime.bigint() - started) / 1e9;
}

function packBytes(repo) {
  let n = 0;
  const walk = (d) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else n += fs.statSync(p).size;
    }
  };
  walk(path.join(repo, 'packs'));
  return n;
}

const results = { backup1: [], backup2: [], backup3: [], copy: [], copyAgain: [], sourceBytes: [], destBytes: [] };
for (let run = 0; run < opts.runs; run++) {
  fs.rmSync(opts.dir, { recursive: true, force: true });
  const tree = path.join(opts.dir, 'tree');
  fs.mkdirSync(tree, { recursive: true });
  const files = Math.max(8, Math.round((opts.mib * 1024 * 1024) / FILE));
  for (let i = 0; i < files; i++) fs.writeFileSync(path.join(tree, `f${i}`), random(FILE));
  const source = path.join(opts.dir, 'source');
  const dest = path.join(opts.dir, 'dest');
  const env = { ...process.env, STRATA_REPO: source, STRATA_PASSWORD: 'bench', STRATA_FROM_PASSWORD: 'bench' };
  execFileSync(process.execPath, [STRATA, 'init', '--scrypt-n', '1024'], { env, stdio: 'ignore' });
  execFileSync(process.execPath, [STRATA, 'init', '--scrypt-n', '1024'], { env: { ...env, STRATA_REPO: dest }, stdio: 'ignore' });
  execFileSync('sync');
  const times = [timed(['backup', tree, '-q'], env)];
  for (let edit = 0; edit < 2; edit++) {
    for (let i = edit; i < files; i += 8) {
      const fd = fs.openSync(path.join(tree, `f${i}`), 'r+');
      fs.writeSync(fd, random(64 * 1024), 0, 64 * 1024, FILE / 2);
      fs.closeSync(fd);
    }
    fs.writeFileSync(path.join(tree, `new${edit}`), random(FILE));
    times.push(timed(['backup', tree, '-q'], env));
  }
  execFileSync('sync');
  const copy = timed(['copy', '-q', '--from-repo', source], { ...env, STRATA_REPO: dest });
  const again = timed(['copy', '-q', '--from-repo', source], { ...env, STRATA_REPO: dest });
  results.backup1.push(times[0]);
  results.backup2.push(times[1]);
  results.backup3.push(times[2]);
  results.copy.push(copy);
  results.copyAgain.push(again);
  results.sourceBytes.push(packBytes(source));
  results.destBytes.push(packBytes(dest));
  log(`run ${run + 1}: backups ${times.map((t) => t.toFixed(2)).join(' + ')} s; copy of the three ${copy.toFixed(2)} s, again ${again.toFixed(2)} s; packs ${packBytes(source)} B in the source, ${packBytes(dest)} B in the copy`);
}
fs.rmSync(opts.dir, { recursive: true, force: true });

if (opts.json) process.stdout.write(`${JSON.stringify({ opts, results }, null, 2)}\n`);
else {
  const m = (k) => median(results[k]);
  const backups = m('backup1') + m('backup2') + m('backup3');
  console.log(`${opts.mib} MiB of random files in 2 MiB files, three snapshots; medians of ${opts.runs} runs\n`);
  console.log('| what | wall seconds |');
  console.log('| --- | --- |');
  console.log(`| first backup | ${m('backup1').toFixed(2)} |`);
  console.log(`| second and third backups | ${m('backup2').toFixed(2)}, ${m('backup3').toFixed(2)} |`);
  console.log(`| copy of the three snapshots | ${m('copy').toFixed(2)} (${(m('copy') / backups).toFixed(2)} x the three backups) |`);
  console.log(`| copy again (nothing to copy) | ${m('copyAgain').toFixed(2)} |`);
  console.log(`\nPacks: ${(m('sourceBytes') / 1048576).toFixed(1)} MiB in the source, ${(m('destBytes') / 1048576).toFixed(1)} MiB in the copy.`);
}
