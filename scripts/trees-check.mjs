#!/usr/bin/env node
// npm run check:trees -- [--releases 6] [--seed trees] [--files 5000] [--messages 3000] [--timeout 600] [--dir .bench/trees-check] [--keep] [DIR...]
//
// Real data through one repository: every release of the generated trees
// (bench/trees.mjs), and each DIR given (e.g. /usr/share/doc), backed up
// into one repository; then every snapshot restored and compared with what
// was backed up: names (bytes, so names that are not UTF-8 too), types,
// contents, permission bits, symlink targets, file and directory mtimes (to
// the millisecond) and, as root, owners. Any difference, or a command that
// does not exit within --timeout seconds, ends it with exit code 1.
// Not part of `npm test`: it takes minutes.
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { arg, flag, log, ROOT, STRATA } from '../bench/args.mjs';
import { Series } from '../bench/trees.mjs';

const releases = Number(arg('releases', '6'));
const seed = arg('seed', 'trees');
const shape = { files: Number(arg('files', '5000')), messages: Number(arg('messages', '3000')) };
const timeout = Number(arg('timeout', '600'));
const dir = path.resolve(arg('dir', path.join(ROOT, '.bench', 'trees-check')));
const valued = new Set(['--releases', '--seed', '--files', '--messages', '--timeout', '--dir']);
const extra = process.argv.slice(2).filter((a, i, all) => !a.startsWith('--') && !valued.has(all[i - 1])).map((d) => path.resolve(d));

delete process.env.NODE_EXTRA_CA_CERTS;
const repo = path.join(dir, 'repo');
const key = path.join(dir, 'key');
const env = { ...process.env, STRATA_PASSWORD: 'check' };

/** Runs strata; fails on a non-zero exit or on no exit within the bound. */
function strata(args) {
  const t0 = Date.now();
  const r = spawnSync('node', [STRATA, ...args], { env, timeout: timeout * 1000, killSignal: 'SIGKILL', maxBuffer: 256 * 1024 * 1024 });
  const s = ((Date.now() - t0) / 1000).toFixed(1);
  if (r.error?.code === 'ETIMEDOUT' || r.signal) throw new Error(`strata ${args.join(' ')}: no exit within ${timeout} s (${r.signal ?? r.error.code})`);
  if (r.status !== 0) throw new Error(`strata ${args.join(' ')}: exit ${r.status}\n${r.stderr.toString().slice(-3000)}`);
  return { out: r.stdout.toString().trim(), seconds: s };
}

/**
 * What a tree holds, keyed by relative path (names as bytes, in latin1 so the
 * key is lossless): type, permission bits, owner, mtime in ms, and a file's
 * SHA-256 or a link's target.
 */
function manifest(root) {
  const m = new Map();
  const walk = (abs, rel) => {
    for (const name of fs.readdirSync(abs, { encoding: 'buffer' }).sort(Buffer.compare)) {
      const a = Buffer.concat([abs, Buffer.from('/'), name]);
      const r = rel.length ? Buffer.concat([rel, Buffer.from('/'), name]) : name;
      const st = fs.lstatSync(a, { bigint: true });
      const e = { mode: Number(st.mode & 0o7777n), uid: Number(st.uid), gid: Number(st.gid), mtimeMs: Number(st.mtimeNs / 1_000_000n) };
      if (st.isSymbolicLink()) {
        e.type = 'symlink';
        e.target = fs.readlinkSync(a, { encoding: 'buffer' }).toString('latin1');
        delete e.mtimeMs;
        delete e.mode;
      } else if (st.isDirectory()) {
        e.type = 'dir';
        walk(a, r);
      } else if (st.isFile()) {
        e.type = 'file';
        e.size = Number(st.size);
        e.sha256 = createHash('sha256').update(fs.readFileSync(a)).digest('hex');
      } else e.type = 'special'; // not backed up: left out of the comparison
      if (e.type !== 'special') m.set(r.toString('latin1'), e);
    }
  };
  walk(Buffer.from(root), Buffer.alloc(0));
  return m;
}

/** Differences between what was backed up and what was restored, as lines. */
function compare(want, got) {
  const out = [];
  const show = (k) => JSON.stringify(Buffer.from(k, 'latin1').toString());
  for (const [k, w] of want) {
    const g = got.get(k);
    if (!g) {
      out.push(`missing: ${show(k)}`);
      continue;
    }
    const fields = ['type', 'mode', 'size', 'sha256', 'target', 'mtimeMs', ...(process.getuid?.() === 0 ? ['uid', 'gid'] : [])];
    for (const f of fields) if (w[f] !== g[f]) out.push(`${f} differs: ${show(k)}: backed up ${w[f]}, restored ${g[f]}`);
  }
  for (const k of got.keys()) if (!want.has(k)) out.push(`extra: ${show(k)}`);
  return out;
}

function main() {
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true });
  strata(['init', '-q', '--repo', repo]);
  strata(['key', 'export', '--repo', repo, key]);
  const opts = ['--repo', repo, '--key-file', key];
  const versions = []; // { id, source, manifest }
  const backup = (source) => {
    const want = manifest(source);
    const b = strata(['backup', '-q', ...opts, source]);
    versions.push({ id: b.out.split('\n').at(-1), source, want });
    log(`backup of ${source}: ${want.size} entries, ${b.seconds} s, snapshot ${versions.at(-1).id.slice(0, 8)}`);
  };
  for (const d of extra) backup(d);
  const data = path.join(dir, 'data');
  const series = new Series(seed, shape);
  for (let r = 1; r <= releases; r++) {
    if (r === 1) series.write(data);
    else series.next().update(data);
    backup(data);
  }
  for (const d of extra) backup(d); // again, now an incremental among the others

  let failed = 0;
  const target = path.join(dir, 'restore');
  for (const v of versions) {
    fs.rmSync(target, { recursive: true, force: true });
    fs.mkdirSync(target);
    const r = strata(['restore', '-q', ...opts, '--at', v.id, '--target', target]);
    const diffs = compare(v.want, manifest(path.join(target, v.source)));
    log(`restore of ${v.id.slice(0, 8)} (${v.source}): ${r.seconds} s, ${diffs.length ? `${diffs.length} differences` : 'identical'}`);
    for (const d of diffs.slice(0, 20)) log(`  ${d}`);
    if (diffs.length) failed++;
  }
  fs.rmSync(target, { recursive: true, force: true });
  const c = strata(['check', ...opts]);
  log(`check: ${c.seconds} s`);
  if (failed) throw new Error(`${failed} of ${versions.length} restores differ from what was backed up`);
  log(`all ${versions.length} snapshots restore as backed up`);
  if (!flag('keep')) fs.rmSync(dir, { recursive: true, force: true });
}

try {
  main();
} catch (e) {
  process.stderr.write(`check:trees: FAILED: ${e.message}\n`);
  process.exitCode = 1;
}
