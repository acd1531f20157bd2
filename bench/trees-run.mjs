#!/usr/bin/env node
// npm run bench:trees -- [--releases 8] [--first-runs 3] [--seed trees] [--files 5000] [--messages 3000] [--tools strata,restic,borg,casync] [--json] [--dir .bench/trees] [--keep]
// node bench/trees-run.mjs --from report.json   (the tables of a saved --json report)
//
// Trees of many small files (bench/trees.mjs): a ~5,000-file source tree
// unpacked afresh for each release, and a Maildir changed in place. For each
// release the data directory is brought to it once, then every tool backs it
// up, tools alternating in order from one release to the next. The first
// backup is timed --first-runs times per tool, in turn, each into an empty
// repository (all but the last then deleted), and reported as the median: a
// single run of it moves by a tenth from one minute to the next. Then each tool
// restores the oldest and the latest snapshot, lists the snapshot root of
// the oldest and writes one file of the oldest to stdout. strata's restores
// are compared with the data byte for byte (diff -r).
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { arg, flag, log, ROOT, STRATA } from './args.mjs';
import { Series, writeRelease } from './trees.mjs';

const opts = {
  releases: Number(arg('releases', '8')),
  firstRuns: Math.max(1, Number(arg('first-runs', '3'))),
  seed: arg('seed', 'trees'),
  files: Number(arg('files', '5000')),
  messages: Number(arg('messages', '3000')),
  tools: arg('tools', 'strata,restic,borg,casync').split(','),
  json: flag('json'),
  dir: path.resolve(arg('dir', path.join(ROOT, '.bench', 'trees'))),
};
// A restore or read that takes longer than this has hung: the bench fails.
const TIMEOUT_S = 900;

delete process.env.NODE_EXTRA_CA_CERTS; // as bench/run.mjs: measured as a user runs strata

const settle = () => execFileSync('sync');
const have = (cmd) => spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;
const du = (p) => Number(execFileSync('du', ['-sb', p]).toString().split(/\s+/)[0]);
const sh = (s) => `'${s.replace(/'/g, `'\\''`)}'`;
const median = (xs) => {
  const s = xs.filter((x) => x !== undefined).sort((a, b) => a - b);
  return s.length === 0 ? undefined : s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

/** Runs a shell command under /usr/bin/time (and a timeout): wall and CPU seconds, peak RSS. */
function timed(cmd, env = {}) {
  const out = path.join(opts.dir, 'time.txt');
  const r = spawnSync('/usr/bin/time', ['-f', '%e %U %S %M', '-o', out, 'timeout', '-s', 'KILL', String(TIMEOUT_S), 'sh', '-c', cmd], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'ignore', 'pipe'],
    maxBuffer: 64 * 1024 * 1024,
  });
  if (r.status !== 0) throw new Error(`failed (${r.status}${r.status === 137 ? `: no exit within ${TIMEOUT_S} s` : ''}): ${cmd}\n${r.stderr.toString().slice(-2000)}`);
  const [wall, user, sys, rss] = fs.readFileSync(out, 'utf8').trim().split(/\s+/).map(Number);
  return { wall, cpu: user + sys, rssMB: rss / 1024 };
}

const pw = { STRATA_PASSWORD: 'bench', RESTIC_PASSWORD: 'bench', BORG_PASSPHRASE: 'bench', BORG_RELOCATED_REPO_ACCESS_IS_OK: 'yes', BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK: 'yes' };
const out = (cmd, args) => execFileSync(cmd, args, { env: { ...process.env, ...pw }, maxBuffer: 256 * 1024 * 1024 }).toString();

/**
 * Each tool on repository r: init; backup of data; the snapshots, oldest
 * first; restore of one into a target; `ls` of the snapshot root (data);
 * one file of it to stdout. Each used the way its users run it.
 */
function tools(work, data) {
  const rel = (p) => p.slice(1);
  const name = (n) => `r${String(n).padStart(3, '0')}`;
  return {
    strata: {
      repo: path.join(work, 'strata'),
      init(r) {
        timed(`node ${STRATA} init -q --repo ${r}`, pw);
        timed(`node ${STRATA} key export --repo ${r} ${r}.key`, pw);
      },
      backup: (r) => `node ${STRATA} backup -q --repo ${r} --key-file ${r}.key ${sh(data)}`,
      snapshots: (r) => JSON.parse(out('node', [STRATA, 'snapshots', '--json', '--repo', r, '--key-file', `${r}.key`])).map((s) => s.id),
      restore: (r, id, t) => `node ${STRATA} restore -q --repo ${r} --key-file ${r}.key --at ${id} --target ${t}`,
      restored: (t) => path.join(t, data),
      ls: (r, id) => `node ${STRATA} ls --repo ${r} --key-file ${r}.key --at ${id} ${sh(data)} > /dev/null`,
      cat: (r, id, file) => `node ${STRATA} cat --repo ${r} --key-file ${r}.key --at ${id} ${sh(file)} > /dev/null`,
    },
    restic: {
      repo: path.join(work, 'restic'),
      init: (r) => timed(`restic init -q --repo ${r}`, pw),
      backup: (r) => `restic backup -q --repo ${r} ${sh(data)}`,
      snapshots: (r) => JSON.parse(out('restic', ['snapshots', '--json', '--repo', r])).map((s) => s.id),
      restore: (r, id, t) => `restic restore -q --repo ${r} ${id} --target ${t}`,
      ls: (r, id) => `restic ls -q --repo ${r} ${id} ${sh(data)} > /dev/null`,
      cat: (r, id, file) => `restic dump -q --repo ${r} ${id} ${sh(file)} > /dev/null`,
    },
    borg: {
      repo: path.join(work, 'borg'),
      n: 0,
      init: (r) => timed(`borg init -e repokey-blake2 ${r}`, pw),
      backup(r) {
        return `borg create ${r}::${name(++this.n)} ${sh(data)}`;
      },
      snapshots: (r) => out('borg', ['list', '--short', r]).trim().split('\n'),
      restore: (r, id, t) => `cd ${t} && borg extract ${r}::${id}`,
      // borg has no listing of one directory: a pattern keeps its entries (the whole archive is still read).
      ls: (r, id) => `borg list --format '{path}{NL}' ${r}::${id} ${sh(`re:^${rel(data)}/[^/]+$`)} > /dev/null`,
      cat: (r, id, file) => `borg extract --stdout ${r}::${id} ${sh(rel(file))} > /dev/null`,
    },
    casync: {
      repo: path.join(work, 'casync'),
      n: 0,
      init: (r) => fs.mkdirSync(r, { recursive: true }),
      backup(r) {
        return `casync make --store=${r}/store ${r}/${name(++this.n)}.caidx ${sh(data)}`;
      },
      snapshots: (r) => fs.readdirSync(r).filter((f) => f.endsWith('.caidx')).sort(),
      restore: (r, id, t) => `casync extract --store=${r}/store ${r}/${id} ${t}/out`,
      ls: (r, id) => `casync list --recursive=no --store=${r}/store ${r}/${id} > /dev/null`,
      // casync cannot write one file of an archive.
    },
  };
}

async function main() {
  fs.rmSync(opts.dir, { recursive: true, force: true });
  fs.mkdirSync(opts.dir, { recursive: true });
  const data = path.join(opts.dir, 'data');
  const work = path.join(opts.dir, 'repos');
  const present = opts.tools.filter((t) => t === 'strata' || have(t));
  for (const t of opts.tools) if (!present.includes(t)) log(`skipping ${t}: not installed (apt-get install ${t === 'borg' ? 'borgbackup' : t})`);
  const all = tools(work, data);
  for (const name of present) all[name].init(all[name].repo);
  const base = Object.fromEntries(present.map((n) => [n, du(all[n].repo)]));

  const shape = { files: opts.files, messages: opts.messages };
  const series = new Series(opts.seed, shape);
  const releases = [];
  const backups = Object.fromEntries(present.map((n) => [n, []]));
  /** Every timed first backup of each tool (the kept one last). */
  const firsts = Object.fromEntries(present.map((n) => [n, []]));
  for (let r = 1; r <= opts.releases; r++) {
    const t0 = Date.now();
    if (r === 1) series.write(data);
    else series.next().update(data);
    releases.push(series.stats());
    settle();
    log(`release ${r}: ${releases.at(-1).files} files, ${(releases.at(-1).bytes / 1e6).toFixed(1)} MB (written in ${((Date.now() - t0) / 1000).toFixed(1)} s)`);
    // First backups that are only timed, each into a copy of the tool's empty repository.
    for (let k = 1; r === 1 && k < opts.firstRuns; k++) {
      for (const name of k % 2 ? [...present].reverse() : present) {
        const t = all[name];
        const scratch = `${t.repo}-first${k}`;
        execFileSync('cp', ['-a', t.repo, scratch]);
        if (fs.existsSync(`${t.repo}.key`)) execFileSync('cp', ['-a', `${t.repo}.key`, `${scratch}.key`]);
        settle();
        firsts[name].push(timed(t.backup(scratch), pw));
        fs.rmSync(scratch, { recursive: true, force: true });
        fs.rmSync(`${scratch}.key`, { force: true });
        log(`  ${name}: first backup ${firsts[name].at(-1).wall.toFixed(2)} s (timed only)`);
      }
    }
    const order = r % 2 ? present : [...present].reverse();
    for (const name of order) {
      const t = all[name];
      const b = timed(t.backup(t.repo), pw);
      settle();
      const m = { wall: b.wall, cpu: b.cpu, rssMB: b.rssMB, repoBytes: du(t.repo) - base[name] };
      if (name === 'strata') m.catalogBytes = catalogBytes(t.repo);
      backups[name].push(m);
      if (r === 1) firsts[name].push(b);
      log(`  ${name}: ${b.wall.toFixed(2)} s, repository ${(m.repoBytes / 1e6).toFixed(1)} MB`);
    }
  }
  const latestStats = releases.at(-1);

  // Reads. The oldest release, written afresh, is what its restores must equal.
  const file = new Series(opts.seed, shape).stableFile();
  const expectOld = path.join(opts.dir, 'expect-1');
  writeRelease(expectOld, opts.seed, 1, shape);
  const reads = Object.fromEntries(present.map((n) => [n, {}]));
  // Each restore goes to a directory of its own, and none is deleted until all are done: on ext4, the
  // first thousands of files made after a large tree was deleted cost several seconds of system time
  // (the inode allocator passes over recently deleted inodes), which would fall on whichever tool
  // restored next.
  const targets = path.join(opts.dir, 'restores');
  for (const [i, which] of ['old', 'latest'].entries()) {
    const order = i % 2 ? [...present].reverse() : present;
    for (const name of order) {
      const t = all[name];
      const ids = t.snapshots(t.repo);
      if (ids.length !== opts.releases) throw new Error(`${name}: ${ids.length} snapshots, not ${opts.releases}`);
      const id = which === 'old' ? ids[0] : ids.at(-1);
      const target = path.join(targets, `${name}-${which}`);
      fs.mkdirSync(target, { recursive: true });
      settle();
      log(`restore ${which}: ${name}`);
      const res = timed(t.restore(t.repo, id, target), pw);
      reads[name][`${which}RestoreWall`] = res.wall;
      reads[name][`${which}RestoreMBps`] = (which === 'old' ? releases[0] : latestStats).bytes / 1e6 / res.wall;
      reads[name][`${which}RestoreRssMB`] = res.rssMB;
      if (t.restored) {
        const d = spawnSync('diff', ['-r', '--no-dereference', which === 'old' ? expectOld : data, t.restored(target)], { maxBuffer: 64 * 1024 * 1024 });
        if (d.status !== 0) throw new Error(`${name}: the ${which} restore differs from the data:\n${d.stdout.toString().slice(0, 3000)}${d.stderr}`);
        log(`  ${name}: byte-exact (diff -r)`);
      }
    }
  }
  fs.rmSync(targets, { recursive: true, force: true });
  for (const name of present) {
    const t = all[name];
    const old = t.snapshots(t.repo)[0];
    reads[name].lsMs = median([0, 1, 2].map(() => timed(t.ls(t.repo, old), pw).wall)) * 1000;
    if (t.cat) reads[name].catMs = median([0, 1, 2].map(() => timed(t.cat(t.repo, old, path.join(data, 'src', file)), pw).wall)) * 1000;
  }

  const summary = {};
  for (const name of present) {
    const b = backups[name];
    const inc = b.slice(1);
    summary[name] = {
      firstWall: median(firsts[name].map((m) => m.wall)),
      firstCpu: median(firsts[name].map((m) => m.cpu)),
      firstRssMB: median(firsts[name].map((m) => m.rssMB)),
      firstRuns: firsts[name].map((m) => m.wall),
      incWall: median(inc.map((m) => m.wall)),
      incCpu: median(inc.map((m) => m.cpu)),
      incRssMB: median(inc.map((m) => m.rssMB)),
      incBytes: median(inc.map((m, i) => m.repoBytes - b[i].repoBytes)),
      repoBytes: b.at(-1).repoBytes,
      catalogBytes: b.at(-1).catalogBytes,
      ...reads[name],
    };
  }
  const machine = {
    cpus: os.cpus().length,
    cpu: os.cpus()[0]?.model,
    memGiB: Math.round(os.totalmem() / 1024 ** 3),
    node: process.version,
    loadavg: os.loadavg().map((x) => x.toFixed(1)).join(' '),
    nodeStartMs: median([0, 1, 2, 3, 4].map(() => timed('node -e 0').wall * 1000)),
  };
  const commit = spawnSync('git', ['-C', ROOT, 'rev-parse', '--short', 'HEAD']).stdout.toString().trim();
  const report = { date: new Date().toISOString(), commit, machine, options: { ...opts, dir: undefined }, file, releases, summary, backups };
  process.stdout.write(opts.json ? JSON.stringify(report, null, 2) + '\n' : markdown(report) + '\n');
  if (!flag('keep')) fs.rmSync(opts.dir, { recursive: true, force: true });
}

/** catalog.db with its WAL, if one is left. */
function catalogBytes(repo) {
  let n = 0;
  for (const f of ['catalog.db', 'catalog.db-wal', 'catalog.db-shm']) if (fs.existsSync(path.join(repo, f))) n += fs.statSync(path.join(repo, f)).size;
  return n;
}

function markdown({ commit, machine, options, releases, summary, backups }) {
  const names = Object.keys(summary);
  const peers = names.filter((n) => n !== 'strata');
  const MB = 1e-6;
  // Reports made before first backups were timed more than once have none.
  const firstRuns = options.firstRuns ?? 1;
  const rows = [
    [`first backup (release 1)${firstRuns > 1 ? `, median of ${firstRuns}` : ''}, wall s`, 'firstWall', 2],
    ['first backup, CPU s', 'firstCpu', 2],
    ['first backup, peak RSS MiB', 'firstRssMB', 0],
    [`incremental backup (releases 2–${options.releases}), median wall s`, 'incWall', 2],
    ['incremental, median CPU s', 'incCpu', 2],
    ['incremental, median peak RSS MiB', 'incRssMB', 0],
    ['incremental, median bytes added, MB', 'incBytes', 2, MB],
    [`repository size after ${options.releases} releases, MB`, 'repoBytes', 1, MB],
    ['of which catalog.db, MB', 'catalogBytes', 1, MB],
    ['restore of release 1, wall s', 'oldRestoreWall', 2],
    ['restore of release 1, MB/s', 'oldRestoreMBps', 1],
    [`restore of release ${options.releases} (latest), wall s`, 'latestRestoreWall', 2],
    [`restore of release ${options.releases}, MB/s`, 'latestRestoreMBps', 1],
    ['restore, peak RSS MiB', 'latestRestoreRssMB', 0],
    ['`ls` of the snapshot root at release 1, ms', 'lsMs', 0],
    ['`cat` of one file at release 1, ms', 'catMs', 0],
  ];
  const fmt = (v, d, scale = 1) => (v === undefined ? 'n/a' : (v * scale).toFixed(d));
  const head = ['measure', ...names, ...peers.map((p) => `strata/${p}`)];
  const lines = [`| ${head.join(' | ')} |`, `|${head.map(() => '---').join('|')}|`];
  for (const [label, key, d, scale] of rows) {
    const vals = names.map((n) => fmt(summary[n][key], d, scale));
    const ratios = peers.map((p) => (summary.strata?.[key] !== undefined && summary[p][key] > 0 ? (summary.strata[key] / summary[p][key]).toFixed(2) : 'n/a'));
    lines.push(`| ${label} | ${vals.join(' | ')} | ${ratios.join(' | ')} |`);
  }
  const per = ['release', 'files', 'MB', ...names.map((n) => `${n} s`), ...names.map((n) => `${n} repo MB`), ...(summary.strata ? ['strata catalog.db MB'] : [])];
  lines.push('', `| ${per.join(' | ')} |`, `|${per.map(() => '---').join('|')}|`);
  releases.forEach((rel, i) => {
    const cells = [i + 1, rel.files + rel.links, (rel.bytes * MB).toFixed(1), ...names.map((n) => backups[n][i].wall.toFixed(2)), ...names.map((n) => (backups[n][i].repoBytes * MB).toFixed(1))];
    if (summary.strata) cells.push((backups.strata[i].catalogBytes * MB).toFixed(2));
    lines.push(`| ${cells.join(' | ')} |`);
  });
  return [
    `Trees: seed "${options.seed}", ${options.files} source files and ${options.messages} messages at release 1, ${options.releases} releases; strata at ${commit}; machine: ${machine.cpus} × ${machine.cpu}, ${machine.memGiB} GiB, Node ${machine.node}, load average ${machine.loadavg} at the end; \`node -e 0\` ${Math.round(machine.nodeStartMs)} ms.`,
    '',
    ...lines,
  ].join('\n');
}

const from = arg('from');
const start = from ? async () => process.stdout.write(markdown(JSON.parse(fs.readFileSync(from, 'utf8'))) + '\n') : main;
start().catch((e) => {
  process.stderr.write(`bench:trees: ${e.message}\n`);
  process.exitCode = 1;
});
