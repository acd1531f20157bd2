#!/usr/bin/env node
// node bench/trees-ab.mjs --old DIR [--mode incremental|same|first] [--rounds 6] [--restic] [--dir .bench/trees-ab] [--json]
//
// Backups of the trees bench's release series (bench/trees.mjs) by two builds
// of strata in turn, on the same data: this checkout's and the one in DIR (a
// checkout with its own bin/ and dist/, for example `git worktree add
// /tmp/old REV && ln -s "$PWD/node_modules" /tmp/old/ && (cd /tmp/old && npm
// run build)`), each into a repository of its own, and restic's beside them
// with --restic. The order alternates from round to round, so a noisy machine
// weighs on all alike. Modes:
//   incremental  each round brings the data to the next release (the source
//                tree unpacked afresh, the Maildir changed in place) and each
//                tool backs it up;
//   same         the incremental of release 2 against release 1, every round
//                (each repository copied back from release 1's first);
//   first        the first backup of release 1, every round (each repository
//                copied back from an empty one).
// Prints each run (wall, CPU of all threads, CPU of the main thread, read
// from /proc by bench/thread-cpu.cjs) and the medians of the per-round
// ratios: on a machine whose speed drifts within minutes, only pairs compare.
// Put --dir on a tmpfs to keep the disk out of it.
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { arg, flag, log, ROOT, STRATA } from './args.mjs';
import { Series } from './trees.mjs';

const opts = {
  old: arg('old', ''),
  mode: arg('mode', 'incremental'),
  rounds: Number(arg('rounds', '6')),
  restic: flag('restic'),
  json: flag('json'),
  dir: path.resolve(arg('dir', path.join(ROOT, '.bench', 'trees-ab'))),
};
if (!opts.old || !fs.existsSync(path.join(opts.old, 'bin', 'strata.js')) || !['incremental', 'same', 'first'].includes(opts.mode)) {
  console.error('usage: node bench/trees-ab.mjs --old DIR [--mode incremental|same|first] [--rounds N] [--restic] [--dir DIR] [--json] (DIR: a built checkout of the build to compare with)');
  process.exit(2);
}
delete process.env.NODE_EXTRA_CA_CERTS; // as bench/run.mjs: measured as a user runs strata
const CPU_PRELOAD = path.join(ROOT, 'bench', 'thread-cpu.cjs');

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

function timed(cmd, args, env) {
  const out = path.join(opts.dir, 'time.txt');
  const cpuFile = path.join(opts.dir, 'main-cpu.txt');
  fs.rmSync(cpuFile, { force: true });
  const r = spawnSync('/usr/bin/time', ['-f', '%e %U %S', '-o', out, cmd, ...args], { env: { ...process.env, ...env, STRATA_BENCH_CPU_FILE: cpuFile }, stdio: ['ignore', 'ignore', 'pipe'] });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.status}): ${r.stderr.toString().slice(-2000)}`);
  const [wall, user, sys] = fs.readFileSync(out, 'utf8').trim().split(/\s+/).map(Number);
  const main = fs.existsSync(cpuFile) ? Number(fs.readFileSync(cpuFile, 'utf8').trim().split('\n').at(-1)) : undefined;
  return { wall, cpu: user + sys, ...(main !== undefined ? { main } : {}) };
}

fs.rmSync(opts.dir, { recursive: true, force: true });
fs.mkdirSync(opts.dir, { recursive: true });
const data = path.join(opts.dir, 'data');
const env = { STRATA_PASSWORD: 'bench', RESTIC_PASSWORD: 'bench' };
const tools = {
  new: { bin: STRATA, repo: path.join(opts.dir, 'new') },
  old: { bin: path.join(opts.old, 'bin', 'strata.js'), repo: path.join(opts.dir, 'old') },
};
const resticRepo = path.join(opts.dir, 'restic');
const backup = (name) => {
  if (name === 'restic') return timed('restic', ['backup', '-q', '--repo', resticRepo, data], env);
  const t = tools[name];
  return timed('node', ['-r', CPU_PRELOAD, t.bin, 'backup', '-q', '--repo', t.repo, '--key-file', `${t.repo}.key`, data], {});
};
const repoOf = (name) => (name === 'restic' ? resticRepo : tools[name].repo);
for (const t of Object.values(tools)) {
  execFileSync('node', [t.bin, 'init', '-q', '--repo', t.repo], { env: { ...process.env, ...env } });
  execFileSync('node', [t.bin, 'key', 'export', '--repo', t.repo, `${t.repo}.key`], { env: { ...process.env, ...env } });
}
const names = ['new', 'old', ...(opts.restic ? ['restic'] : [])];
if (opts.restic) execFileSync('restic', ['init', '-q', '--repo', resticRepo], { env: { ...process.env, ...env } });

const series = new Series('trees', { files: 5000, messages: 3000 });
series.write(data);
// For `same` and `first`: each repository as every round starts it, copied back before each run.
const base = (name) => `${repoOf(name)}.base`;
const keep = () => names.forEach((n) => execFileSync('cp', ['-a', repoOf(n), base(n)]));
const restore = (name) => {
  fs.rmSync(repoOf(name), { recursive: true, force: true });
  execFileSync('cp', ['-a', base(name), repoOf(name)]);
};
if (opts.mode === 'first') keep();
else {
  for (const n of names) backup(n);
  if (opts.mode === 'same') {
    series.next().update(data);
    keep();
  }
}
const runs = Object.fromEntries(names.map((n) => [n, []]));
for (let r = 1; r <= opts.rounds; r++) {
  if (opts.mode === 'incremental') series.next().update(data);
  else names.forEach(restore);
  execFileSync('sync');
  for (const n of r % 2 ? names : [...names].reverse()) {
    const t = backup(n);
    runs[n].push(t);
    log(`round ${r}: ${n} ${t.wall.toFixed(2)} s wall, ${t.cpu.toFixed(2)} s CPU${t.main !== undefined ? `, main thread ${t.main.toFixed(2)} s` : ''}`);
  }
}
/** The median over rounds of a's measure over b's, each round's pair on its own. */
const paired = (a, b, key) => {
  const ratios = runs[a].map((t, i) => (t[key] !== undefined && runs[b][i][key] !== undefined ? t[key] / runs[b][i][key] : undefined)).filter((x) => x !== undefined);
  return ratios.length > 0 ? median(ratios) : undefined;
};
const pairs = [['new', 'old'], ...(opts.restic ? [['new', 'restic']] : [])].map(([a, b]) => ({
  of: `${a}/${b}`,
  wall: paired(a, b, 'wall'),
  cpu: paired(a, b, 'cpu'),
  ...(b !== 'restic' ? { main: paired(a, b, 'main') } : {}),
  faster: runs[a].filter((t, i) => t.wall < runs[b][i].wall).length,
}));
const report = {
  mode: opts.mode,
  ...Object.fromEntries(names.map((n) => [n, { wall: median(runs[n].map((t) => t.wall)), cpu: median(runs[n].map((t) => t.cpu)), runs: runs[n] }])),
  pairs,
};
const label = { incremental: 'incremental backups of the next release', same: 'the incremental of release 2', first: 'first backups of release 1' }[opts.mode];
if (opts.json) console.log(JSON.stringify(report, null, 2));
else {
  console.log(`| ${label}, medians | wall s | CPU s |\n|---|---|---|`);
  for (const n of names) console.log(`| ${n} | ${report[n].wall.toFixed(2)} | ${report[n].cpu.toFixed(2)} |`);
  console.log('\nmedians of the per-round ratios:');
  for (const p of pairs) {
    const main = p.main !== undefined ? `, ${p.main.toFixed(3)}x main-thread CPU` : '';
    console.log(`${p.of}: ${p.wall.toFixed(3)}x wall, ${p.cpu.toFixed(3)}x CPU${main} (faster in ${p.faster} of ${opts.rounds})`);
  }
}
fs.rmSync(opts.dir, { recursive: true, force: true });
