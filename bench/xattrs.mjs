#!/usr/bin/env node
// npm run bench:xattrs -- [--files 20000] [--runs 3] [--dir .bench/xattrs] [--json]
//
// What extended attributes cost a backup and a restore: a tree of small
// files (1 KiB each, 100 per directory), once with one user.* attribute of
// 32 bytes on every file and directory and once with none. For each tree and
// run, in a fresh repository: the first backup, a second backup with nothing
// changed, and a restore, each with and without --no-xattrs (the two orders
// alternating from run to run). Wall seconds, medians over the runs.
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { createRequire } from 'node:module';
import * as path from 'node:path';
import { arg, flag, log, ROOT, STRATA } from './args.mjs';

const opts = {
  files: Number(arg('files', '20000')),
  runs: Number(arg('runs', '3')),
  dir: path.resolve(arg('dir', path.join(ROOT, '.bench', 'xattrs'))),
  json: flag('json'),
};
delete process.env.NODE_EXTRA_CA_CERTS; // measured as a user runs strata

const xattr = createRequire(import.meta.url)('@napi-rs/xattr');
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

function makeTree(root, attrs) {
  fs.mkdirSync(root, { recursive: true });
  const value = Buffer.alloc(32, 7);
  for (let d = 0; d < Math.ceil(opts.files / 100); d++) {
    const dir = path.join(root, `d${d}`);
    fs.mkdirSync(dir);
    if (attrs) xattr.setAttributeSync(dir, 'user.bench', value);
    for (let f = 0; f < 100 && d * 100 + f < opts.files; f++) {
      const p = path.join(dir, `f${f}`);
      fs.writeFileSync(p, Buffer.alloc(1024, (d * 100 + f) & 0xff).fill(String(d * 100 + f), 0));
      if (attrs) xattr.setAttributeSync(p, 'user.bench', value);
    }
  }
}

function timed(args, env) {
  const started = process.hrtime.bigint();
  const r = spawnSync(process.execPath, [STRATA, ...args], { env, stdio: ['ignore', 'ignore', 'pipe'] });
  if (r.status !== 0) throw new Error(`strata ${args.join(' ')}: exit ${r.status}\n${r.stderr.toString().slice(-2000)}`);
  return Number(process.hrtime.bigint() - started) / 1e9;
}

fs.rmSync(opts.dir, { recursive: true, force: true });
const results = {};
for (const attrs of [true, false]) {
  const tree = path.join(opts.dir, attrs ? 'with' : 'without');
  makeTree(tree, attrs);
  for (let run = 0; run < opts.runs; run++) {
    const order = run % 2 === 0 ? [false, true] : [true, false];
    for (const noXattrs of order) {
      const repo = path.join(opts.dir, 'repo');
      const target = path.join(opts.dir, 'target');
      fs.rmSync(repo, { recursive: true, force: true });
      fs.rmSync(target, { recursive: true, force: true });
      const env = { ...process.env, STRATA_REPO: repo, STRATA_PASSWORD: 'bench' };
      execFileSync(process.execPath, [STRATA, 'init', '--scrypt-n', '1024'], { env, stdio: 'ignore' });
      const flagArgs = noXattrs ? ['--no-xattrs'] : [];
      execFileSync('sync');
      const first = timed(['backup', tree, '-q', ...flagArgs], env);
      const second = timed(['backup', tree, '-q', ...flagArgs], env);
      execFileSync('sync');
      const restore = timed(['restore', '--target', target, '-q', ...flagArgs], env);
      const key = `${attrs ? 'with' : 'without'} attributes, ${noXattrs ? '--no-xattrs' : 'default'}`;
      (results[key] ??= { first: [], second: [], restore: [] });
      results[key].first.push(first);
      results[key].second.push(second);
      results[key].restore.push(restore);
      log(`${key}, run ${run + 1}: first ${first.toFixed(2)} s, unchanged ${second.toFixed(2)} s, restore ${restore.toFixed(2)} s`);
    }
  }
}
fs.rmSync(opts.dir, { recursive: true, force: true });

if (opts.json) process.stdout.write(`${JSON.stringify({ opts, results }, null, 2)}\n`);
else {
  console.log(`${opts.files} files of 1 KiB, medians of ${opts.runs} runs (wall seconds)\n`);
  console.log('| tree, backup and restore | first backup | unchanged backup | restore |');
  console.log('| --- | --- | --- | --- |');
  for (const [key, r] of Object.entries(results)) console.log(`| ${key} | ${median(r.first).toFixed(2)} | ${median(r.second).toFixed(2)} | ${median(r.restore).toFixed(2)} |`);
}
