#!/usr/bin/env node
// node bench/trees-ab.mjs --old DIR [--rounds 6] [--restic] [--dir .bench/trees-ab] [--json]
//
// Incremental backups of the trees bench's release series (bench/trees.mjs)
// by two builds of strata in turn, on the same data: this checkout's and the
// one in DIR (a checkout with its own bin/ and dist/, for example
// `git worktree add /tmp/old REV && ln -s "$PWD/node_modules" /tmp/old/ &&
// (cd /tmp/old && npm run build)`), each into a repository of its own, and
// restic's beside them with --restic. Each round brings the data to the next
// release (the source tree unpacked afresh, the Maildir changed in place),
// then each tool backs it up, the order alternating from round to round, so
// a noisy machine weighs on all alike. Prints each run, the medians and
// their ratios. Put --dir on a tmpfs to keep the disk out of it.
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { arg, flag, log, ROOT, STRATA } from './args.mjs';
import { Series } from './trees.mjs';

const opts = {
  old: arg('old', ''),
  rounds: Number(arg('rounds', '6')),
  restic: flag('restic'),
  json: flag('json'),
  dir: path.resolve(arg('dir', path.join(ROOT, '.bench', 'trees-ab'))),
};
if (!opts.old || !fs.existsSync(path.join(opts.old, 'bin', 'strata.js'))) {
  console.error('usage: node bench/trees-ab.mjs --old DIR [--rounds N] [--restic] [--dir DIR] [--json] (DIR: a built checkout of the build to compare with)');
  process.exit(2);
}
delete process.env.NODE_EXTRA_CA_CERTS; // as bench/run.mjs: measured as a user runs strata

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

function timed(cmd, args, env) {
  const out = path.join(opts.dir, 'time.txt');
  const r = spawnSync('/usr/bin/time', ['-f', '%e %U %S', '-o', out, cmd, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'ignore', 'pipe'] });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.status}): ${r.stderr.toString().slice(-2000)}`);
  const [wall, user, sys] = fs.readFileSync(out, 'utf8').trim().split(/\s+/).map(Number);
  return { wall, cpu: user + sys };
}

fs.rmSync(opts.dir, { recursive: true, force: true });
fs.mkdirSync(opts.dir, { recursive: true });
const data = path.join(opts.dir, 'data');
const env = { STRATA_PASSWORD: 'bench', RESTIC_PASSWORD: 'bench' };
const tools = {
  new: { bin: STRATA, repo: path.join(opts.dir, 'new') },
  old: { bin: path.join(opts.old, 'bin', 'strata.js'), repo: path.join(opts.dir, 'old') },
};
const backup = (name) => {
  if (name === 'restic') return timed('restic', ['backup', '-q', '--repo', path.join(opts.dir, 'restic'), data], env);
  const t = tools[name];
  return timed('node', [t.bin, 'backup', '-q', '--repo', t.repo, '--key-file', `${t.repo}.key`, data], {});
};
for (const t of Object.values(tools)) {
  execFileSync('node', [t.bin, 'init', '-q', '--repo', t.repo], { env: { ...process.env, ...env } });
  execFileSync('node', [t.bin, 'key', 'export', '--repo', t.repo, `${t.repo}.key`], { env: { ...process.env, ...env } });
}
const names = ['new', 'old', ...(opts.restic ? ['restic'] : [])];
if (opts.restic) execFileSync('restic', ['init', '-q', '--repo', path.join(opts.dir, 'restic')], { env: { ...process.env, ...env } });

const series = new Series('trees', { files: 5000, messages: 3000 });
series.write(data);
for (const n of names) backup(n);
const runs = Object.fromEntries(names.map((n) => [n, []]));
for (let r = 1; r <= opts.rounds; r++) {
  series.next().update(data);
  execFileSync('sync');
  for (const n of r % 2 ? names : [...names].reverse()) {
    const t = backup(n);
    runs[n].push(t);
    log(`round ${r}: ${n} ${t.wall.toFixed(2)} s wall, ${t.cpu.toFixed(2)} s CPU`);
  }
}
const report = Object.fromEntries(names.map((n) => [n, { wall: median(runs[n].map((t) => t.wall)), cpu: median(runs[n].map((t) => t.cpu)), runs: runs[n] }]));
if (opts.json) console.log(JSON.stringify(report, null, 2));
else {
  console.log('| incremental backup, medians | wall s | CPU s |\n|---|---|---|');
  for (const n of names) console.log(`| ${n} | ${report[n].wall.toFixed(2)} | ${report[n].cpu.toFixed(2)} |`);
  console.log(`\nnew/old: ${(report.new.wall / report.old.wall).toFixed(2)}x wall, ${(report.new.cpu / report.old.cpu).toFixed(2)}x CPU`);
  if (opts.restic) console.log(`new/restic: ${(report.new.wall / report.restic.wall).toFixed(2)}x wall, ${(report.new.cpu / report.restic.cpu).toFixed(2)}x CPU`);
}
fs.rmSync(opts.dir, { recursive: true, force: true });
