#!/usr/bin/env node
// npm run bench -- [--corpora large,trees] [--size 1G] [--runs 3] [--chain 100] [--tools strata,strata-remote,restic,borg,casync] [--json] [--dir .bench] [--keep]
// node bench/run.mjs --from report.json   (the tables of a saved --json report)
//
// Runs strata and each installed peer on the same deterministic corpora, in
// one run, alternating tools, and prints medians and strata/peer ratios:
// `large`, a few large files (a disk image, logs, a mailbox, media), and
// `trees`, many small files (bench/trees-run.mjs: a source tree's releases
// and a Maildir, with its own defaults; strata-remote does not run there).
// Peers come from Debian: apt-get install restic borgbackup casync.
// strata-remote is strata through a `strata serve` on loopback (bench/remote.mjs);
// it adds a table of what goes over the wire: bytes and round trips.
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { makeCorpus, mutate, touchImage } from './corpus.mjs';
import { arg, flag, log, ROOT, size, STRATA } from './args.mjs';
import { addToken, isBlockGet, isPackPut, kinds, roundTrips, startServer } from './remote.mjs';



const opts = {
  size: size(arg('size', '1G')),
  runs: Number(arg('runs', '3')),
  chain: Number(arg('chain', '100')),
  tools: arg('tools', 'strata,strata-remote,restic,borg,casync').split(','),
  json: flag('json'),
  dir: path.resolve(arg('dir', path.join(ROOT, '.bench'))),
  corpora: arg('corpora', 'large,trees').split(','),
};
const CORPORA = ['large', 'trees'];
if (opts.corpora.length === 0 || opts.corpora.some((c) => !CORPORA.includes(c))) {
  console.error(`bench: --corpora takes a list of ${CORPORA.join(', ')}`);
  process.exit(2);
}

// Node parses every certificate named by NODE_EXTRA_CA_CERTS each time it
// starts (85 ms a process on a machine where it is set for a proxy); strata
// speaks TLS only to its own server, given --ca-cert. Measured as a user
// runs it, without; the report gives `node -e 0` timed the same way.
delete process.env.NODE_EXTRA_CA_CERTS;

/** Flushes writes from setting up a step (the corpus copy, the mutation, a backup), so no tool pays for another step's writeback. */
const settle = () => execFileSync('sync');

const have = (cmd) => spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;

/** Runs a shell command under /usr/bin/time: wall and CPU seconds, peak RSS. */
function timed(cmd, env = {}) {
  const out = path.join(opts.dir, 'time.txt');
  const r = spawnSync('/usr/bin/time', ['-f', '%e %U %S %M', '-o', out, 'sh', '-c', cmd], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'ignore', 'pipe'],
    maxBuffer: 64 * 1024 * 1024,
  });
  if (r.status !== 0) throw new Error(`failed (${r.status}): ${cmd}\n${r.stderr.toString().slice(-2000)}`);
  const [wall, user, sys, rss] = fs.readFileSync(out, 'utf8').trim().split(/\s+/).map(Number);
  return { wall, cpu: user + sys, rssMB: rss / 1024 };
}

const du = (p) => Number(execFileSync('du', ['-sb', p]).toString().split(/\s+/)[0]);
const sh = (s) => `'${s.replace(/'/g, `'\\''`)}'`;

// Each tool: init, backup, restore of the latest snapshot, and a command that
// writes 4 KiB at OFFSET of FILE at the OLDEST snapshot to stdout.
function tools(work, corpus) {
  const pw = { STRATA_PASSWORD: 'bench', RESTIC_PASSWORD: 'bench', BORG_PASSPHRASE: 'bench', BORG_RELOCATED_REPO_ACCESS_IS_OK: 'yes', BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK: 'yes' };
  const all = {
    strata: strata(path.join(work, 'strata'), corpus, pw, false),
    'strata-remote': strata(path.join(work, 'strata-remote'), corpus, pw, true),
    restic: {
      repo: path.join(work, 'restic'),
      init(r) {
        timed(`restic init -q --repo ${r}`, pw);
      },
      backup: (r) => `restic backup -q --repo ${r} ${sh(corpus)}`,
      restore: (r, t) => `restic restore -q --repo ${r} latest --target ${t}`,
      rangeCmd: (r, file, off, id) => `restic dump -q --repo ${r} ${id} ${sh(file)} | dd bs=4096 skip=${off / 4096} count=1 status=none > /dev/null`,
      oldest: (r) => JSON.parse(execFileSync('restic', ['snapshots', '--json', '--repo', r], { env: { ...process.env, ...pw } }).toString())[0].short_id,
      latest: () => 'latest',
      env: pw,
    },
    borg: {
      repo: path.join(work, 'borg'),
      n: 0,
      init(r) {
        timed(`borg init -e repokey-blake2 ${r}`, pw);
      },
      backup(r) {
        return `borg create ${r}::s${String(this.n++).padStart(5, '0')} ${sh(corpus)}`;
      },
      restore: (r, t) => `cd ${t} && borg extract ${r}::$(borg list --short --last 1 ${r})`,
      rangeCmd: (r, file, off, id) => `borg extract --stdout ${r}::${id} ${sh(file.slice(1))} | dd bs=4096 skip=${off / 4096} count=1 status=none > /dev/null`,
      oldest: (r) => execFileSync('borg', ['list', '--short', '--first', '1', r], { env: { ...process.env, ...pw } }).toString().trim(),
      latest: (r) => execFileSync('borg', ['list', '--short', '--last', '1', r], { env: { ...process.env, ...pw } }).toString().trim(),
      env: pw,
    },
    casync: {
      repo: path.join(work, 'casync'),
      n: 0,
      init(r) {
        fs.mkdirSync(r, { recursive: true });
      },
      backup(r) {
        return `casync make --store=${r}/store ${r}/s${String(this.n++).padStart(5, '0')}.caidx ${sh(corpus)}`;
      },
      restore(r, t) {
        const last = fs.readdirSync(r).filter((f) => f.endsWith('.caidx')).sort().at(-1);
        return `casync extract --store=${r}/store ${r}/${last} ${t}/out`;
      },
      env: {},
    },
  };
  for (const t of Object.values(all)) {
    t.reset = () => {
      t.server?.stop();
      t.server = undefined;
      fs.rmSync(t.repo, { recursive: true, force: true });
    };
  }
  return all;
}

/**
 * strata on the repository directory r, or (remote) on a `strata serve` of r
 * on loopback, started by init (and stopped by reset) with its own block
 * cache beside r. Both use a key file; the remote backup writes its --json
 * report (bytes sent, sealed bytes added) to r.backup.json.
 */
function strata(repo, corpus, pw, remote) {
  const t = {
    repo,
    env: { ...pw },
    where: (r) => (remote ? t.server.url : r),
    init(r) {
      if (remote) {
        t.tokens = { bench: addToken(r, 'bench'), cold: addToken(r, 'cold') };
        t.server = startServer(r, `${r}.log`);
        Object.assign(t.env, { STRATA_TOKEN: t.tokens.bench, STRATA_CACHE_DIR: `${r}.cache` });
      }
      timed(`node ${STRATA} init -q --repo ${t.where(r)}`, t.env);
      timed(`node ${STRATA} key export --repo ${t.where(r)} ${r}.key`, t.env);
    },
    backup: (r) =>
      remote
        ? `node ${STRATA} backup --json --repo ${t.where(r)} --key-file ${r}.key ${sh(corpus)} > ${r}.backup.json`
        : `node ${STRATA} backup -q --repo ${r} --key-file ${r}.key ${sh(corpus)}`,
    restore: (r, target) => `node ${STRATA} restore -q --repo ${t.where(r)} --key-file ${r}.key --target ${target}`,
    rangeCmd: (r, file, off, id, withPassword) =>
      `node ${STRATA} cat --repo ${t.where(r)} ${withPassword ? '' : `--key-file ${r}.key`} --at ${id} ${sh(file)} --range ${off}-${off + 4095} > /dev/null`,
    /** `cat --json` of the same range: blocks read, bytes sent and received. */
    rangeJson: (r, file, off, id, env = {}) =>
      JSON.parse(
        execFileSync('node', [STRATA, 'cat', '--json', '--repo', t.where(r), '--key-file', `${r}.key`, '--at', id, file, '--range', `${off}-${off + 4095}`], {
          env: { ...process.env, ...t.env, ...env },
        }).toString(),
      ),
    snapshots: (r) => JSON.parse(execFileSync('node', [STRATA, 'snapshots', '--json', '--repo', t.where(r), '--key-file', `${r}.key`], { env: { ...process.env, ...t.env } }).toString()),
    oldest: (r) => t.snapshots(r)[0].id,
    latest: (r) => t.snapshots(r).at(-1).id,
  };
  return t;
}

const median = (xs) => {
  const s = xs.filter((x) => x !== undefined).sort((a, b) => a - b);
  return s.length === 0 ? undefined : s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
/** The median of numbers; the distinct values of strings (lists of requests), joined. */
const summarize = (xs) => (typeof xs[0] === 'string' ? [...new Set(xs)].join(' / ') : median(xs));
const sum = (xs) => xs.reduce((a, b) => a + b, 0);

/** A remote backup's traffic: its --json report (bytes sent, sealed bytes added) and the pack uploads the server logged since `mark`. */
function upload(t, mark, prefix) {
  const j = JSON.parse(fs.readFileSync(`${t.repo}.backup.json`, 'utf8'));
  const packs = sum(t.server.requests(mark, 'bench').filter(isPackPut).map((r) => r.in));
  return { [`${prefix}Sent`]: j.bytesSent, [`${prefix}Sealed`]: j.bytesAdded, [`${prefix}PacksSent`]: packs };
}

/**
 * A cold 4 KiB `cat --range` from the server, 3 times, each in a fresh cache
 * directory that holds only the server's config kept by earlier commands
 * (keepConfig) or nothing: medians of wall time, bytes received, blocks read,
 * and the requests the server logged for it (under the "cold" token).
 */
function coldRead(t, file, off, id, keepConfig) {
  const kept = path.join(t.env.STRATA_CACHE_DIR, 'servers');
  if (keepConfig && !fs.existsSync(kept)) throw new Error(`no server config kept in ${kept}`);
  const cache = `${t.repo}.cold-cache`;
  const json = `${t.repo}.cat.json`;
  const reads = [0, 1, 2].map(() => {
    fs.rmSync(cache, { recursive: true, force: true });
    fs.mkdirSync(cache);
    if (keepConfig) fs.cpSync(kept, path.join(cache, 'servers'), { recursive: true });
    const mark = t.server.mark();
    const cmd = `node ${STRATA} cat --json --repo ${t.server.url} --key-file ${t.repo}.key --at ${id} ${sh(file)} --range ${off}-${off + 4095} > ${json}`;
    const { wall } = timed(cmd, { ...t.env, STRATA_CACHE_DIR: cache, STRATA_TOKEN: t.tokens.cold });
    const j = JSON.parse(fs.readFileSync(json, 'utf8'));
    if (j.length !== 4096) throw new Error(`cold read returned ${j.length} bytes, not 4096`);
    const reqs = t.server.requests(mark, 'cold');
    return {
      Ms: wall * 1000,
      Received: j.bytesReceived,
      BlockBytes: sum(reqs.filter(isBlockGet).map((r) => r.out)),
      BlocksRead: j.blocksRead,
      Requests: reqs.length,
      RoundTrips: roundTrips(reqs),
      Kinds: kinds(reqs),
    };
  });
  fs.rmSync(cache, { recursive: true, force: true });
  const prefix = keepConfig ? 'cold' : 'fullyCold';
  return Object.fromEntries(Object.keys(reads[0]).map((k) => [prefix + k, summarize(reads.map((r) => r[k]))]));
}

async function main() {
  fs.mkdirSync(opts.dir, { recursive: true });
  const report = opts.corpora.includes('large') ? await largeCorpus() : {};
  if (opts.corpora.includes('trees')) report.trees = treesCorpus();
  process.stdout.write(opts.json ? JSON.stringify(report, null, 2) + '\n' : tables(report) + '\n');
  if (!flag('keep')) fs.rmSync(opts.dir, { recursive: true, force: true });
}

/** The trees corpus, by bench/trees-run.mjs in a process of its own (its --json report); the same tools but strata-remote. */
function treesCorpus() {
  const tools = opts.tools.filter((t) => t !== 'strata-remote');
  log(`trees: ${tools.join(', ')}`);
  const args = [path.join(ROOT, 'bench', 'trees-run.mjs'), '--json', '--tools', tools.join(','), '--dir', path.join(opts.dir, 'trees')];
  const r = spawnSync(process.execPath, args, { stdio: ['ignore', 'pipe', 'inherit'], maxBuffer: 64 * 1024 * 1024 });
  if (r.status !== 0) throw new Error(`the trees corpus failed (exit ${r.status})`);
  return JSON.parse(r.stdout.toString());
}

/** The tables of a report: the large corpus's (markdown below), then the trees' as bench/trees-run.mjs prints them. */
function tables(report) {
  const parts = [];
  if (report.summary) parts.push(markdown(report));
  if (report.trees) {
    const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'strata-bench-')), 'trees.json');
    fs.writeFileSync(file, JSON.stringify(report.trees));
    const r = spawnSync(process.execPath, [path.join(ROOT, 'bench', 'trees-run.mjs'), '--from', file]);
    fs.rmSync(path.dirname(file), { recursive: true, force: true });
    if (r.status !== 0) throw new Error(`cannot print the trees report: ${r.stderr}`);
    parts.push(r.stdout.toString().trimEnd());
  }
  return parts.join('\n\n');
}

/** The large corpus: every step with every tool, `--runs` times; the chain of incrementals. */
async function largeCorpus() {
  const corpus = path.join(opts.dir, 'corpus');
  const pristine = path.join(opts.dir, 'pristine');
  log(`corpus: ${(opts.size / 1024 ** 3).toFixed(2)} GiB in ${corpus}`);
  makeCorpus(pristine, opts.size);
  const present = opts.tools.filter((t) => t === 'strata' || t === 'strata-remote' || have(t));
  for (const t of opts.tools) if (!present.includes(t)) log(`skipping ${t}: not installed (apt-get install ${t === 'borg' ? 'borgbackup' : t})`);
  const work = path.join(opts.dir, 'repos');
  const all = tools(work, corpus);
  const image = path.join(corpus, 'disk.img');
  const imageSize = fs.statSync(path.join(pristine, 'disk.img')).size;
  const mid = Math.floor(imageSize / 2 / 4096) * 4096;
  const results = Object.fromEntries(present.map((t) => [t, []]));

  for (let run = 0; run < opts.runs; run++) {
    // Alternate the order so no tool always runs on a warm or cold cache.
    const order = run % 2 ? [...present].reverse() : present;
    for (const name of order) {
      const t = all[name];
      log(`run ${run + 1}/${opts.runs}: ${name}`);
      fs.rmSync(corpus, { recursive: true, force: true });
      execFileSync('cp', ['-a', pristine, corpus]);
      t.reset();
      settle();
      fs.rmSync(work, { recursive: true, force: true });
      fs.mkdirSync(work, { recursive: true });
      if (name === 'borg' || name === 'casync') t.n = 0;
      t.init(t.repo);
      const m = {};
      const base = du(t.repo);
      const fullMark = t.server?.mark();
      const full = timed(t.backup(t.repo), t.env);
      if (t.server) Object.assign(m, upload(t, fullMark, 'full'));
      m.fullWall = full.wall;
      m.fullCpu = full.cpu;
      m.fullRssMB = full.rssMB;
      m.repoBytes = du(t.repo) - base;
      m.fullMBps = opts.size / 1024 ** 2 / full.wall;
      m.noChangeWall = timed(t.backup(t.repo), t.env).wall;
      mutate(corpus, 0);
      settle();
      const before = du(t.repo);
      const incMark = t.server?.mark();
      const inc = timed(t.backup(t.repo), t.env);
      if (t.server) Object.assign(m, upload(t, incMark, 'inc'));
      m.incWall = inc.wall;
      m.incBytesAdded = du(t.repo) - before;
      const target = path.join(opts.dir, 'restore');
      fs.rmSync(target, { recursive: true, force: true });
      fs.mkdirSync(target, { recursive: true });
      settle();
      const rest = timed(t.restore(t.repo, target), t.env);
      m.restoreWall = rest.wall;
      m.restoreRssMB = rest.rssMB;
      m.restoreMBps = opts.size / 1024 ** 2 / rest.wall;
      fs.rmSync(target, { recursive: true, force: true });
      if (t.rangeCmd) {
        const oldest = t.oldest(t.repo);
        const reads = [0, 1, 2].map(() => timed(t.rangeCmd(t.repo, image, mid, oldest, false), t.env).wall);
        m.rangeMs = median(reads) * 1000;
        if (t.rangeJson) {
          m.rangePasswordMs = median([0, 1, 2].map(() => timed(t.rangeCmd(t.repo, image, mid, oldest, true), t.env).wall)) * 1000;
          m.rangeBlocksRead = t.rangeJson(t.repo, image, mid, oldest).blocksRead;
        }
        if (t.server) Object.assign(m, coldRead(t, image, mid, oldest, true), coldRead(t, image, mid, oldest, false));
      }
      results[name].push(m);
      t.reset();
    }
  }

  // Chain depth: the image alone, 100 incrementals of a few pages each. Not
  // for strata-remote: its server walks the chain with the same catalog code.
  const chain = {};
  if (opts.chain > 0) {
    const dir = path.join(opts.dir, 'chain');
    for (const name of present.filter((n) => all[n].rangeCmd && n !== 'strata-remote')) {
      log(`chain: ${name}, ${opts.chain} incrementals`);
      fs.rmSync(dir, { recursive: true, force: true });
      fs.mkdirSync(dir, { recursive: true });
      fs.copyFileSync(path.join(pristine, 'disk.img'), path.join(dir, 'disk.img'));
      const t = tools(work, dir)[name];
      t.reset();
      fs.rmSync(work, { recursive: true, force: true });
      fs.mkdirSync(work, { recursive: true });
      t.init(t.repo);
      const file = path.join(dir, 'disk.img');
      chain[name] = {};
      for (let i = 0; i <= opts.chain; i++) {
        if (i > 0) touchImage(file, i);
        timed(t.backup(t.repo), t.env);
        if (i === 1 || i === 10 || i === opts.chain) {
          const latest = t.latest(t.repo);
          // The backup's writeback done and the file's pages read once, for every N alike.
          settle();
          timed(t.rangeCmd(t.repo, file, mid, latest, false), t.env);
          // Seven reads: single reads spread by a third around the median, which three reads do not pin down.
          chain[name][`after${i}Ms`] = median(Array.from({ length: 7 }, () => timed(t.rangeCmd(t.repo, file, mid, latest, false), t.env).wall)) * 1000;
        }
      }
      t.reset();
    }
  }

  const summary = Object.fromEntries(
    present.map((name) => [name, Object.fromEntries(Object.keys(results[name][0]).map((k) => [k, summarize(results[name].map((m) => m[k]))]))]),
  );
  const machine = { cpus: os.cpus().length, cpu: os.cpus()[0]?.model, memGiB: Math.round(os.totalmem() / 1024 ** 3), node: process.version, platform: `${os.type()} ${os.release()}`, nodeStartMs: median([0, 1, 2, 3, 4].map(() => timed('node -e 0').wall * 1000)) };
  // Room for the trees corpus, on a tmpfs.
  if (!flag('keep')) for (const d of [corpus, pristine, work, path.join(opts.dir, 'chain')]) fs.rmSync(d, { recursive: true, force: true });
  return { date: new Date().toISOString(), machine, options: { ...opts, dir: undefined }, summary, chain, runs: results };
}

function markdown({ machine, options, summary, chain }) {
  const names = Object.keys(summary);
  const peers = names.filter((n) => n !== 'strata');
  const rows = [
    ['full backup, wall s', 'fullWall', 1],
    ['full backup, MiB/s', 'fullMBps', 0],
    ['full backup, CPU s', 'fullCpu', 1],
    ['full backup, peak RSS MiB', 'fullRssMB', 0],
    ['repository size, MiB', 'repoBytes', 1, 1 / 1024 ** 2],
    ['incremental after mutation, wall s', 'incWall', 2],
    ['incremental, bytes added, MiB', 'incBytesAdded', 2, 1 / 1024 ** 2],
    ['no-change backup, wall s', 'noChangeWall', 2],
    ['restore latest, wall s', 'restoreWall', 1],
    ['restore latest, MiB/s', 'restoreMBps', 0],
    ['restore, peak RSS MiB', 'restoreRssMB', 0],
    ['4 KiB range at oldest snapshot, ms', 'rangeMs', 0],
    ['same with a password (KDF), ms', 'rangePasswordMs', 0],
    ['blocks read for that range', 'rangeBlocksRead', 0],
  ];
  const fmt = (v, d, scale = 1) => (v === undefined ? 'n/a' : (v * scale).toFixed(d));
  const head = ['measure', ...names, ...peers.map((p) => `strata/${p}`)];
  const lines = [`| ${head.join(' | ')} |`, `|${head.map(() => '---').join('|')}|`];
  for (const [label, key, d, scale] of rows) {
    const vals = names.map((n) => fmt(summary[n][key], d, scale));
    const ratios = peers.map((p) => (summary.strata?.[key] !== undefined && summary[p][key] ? (summary.strata[key] / summary[p][key]).toFixed(2) : 'n/a'));
    lines.push(`| ${label} | ${vals.join(' | ')} | ${ratios.join(' | ')} |`);
  }
  const chainNames = Object.keys(chain);
  if (chainNames.length > 0) {
    lines.push('', `| 4 KiB range at the latest of N incrementals of the image, ms | ${chainNames.join(' | ')} |`, `|---|${chainNames.map(() => '---').join('|')}|`);
    for (const k of Object.keys(chain[chainNames[0]])) lines.push(`| ${k.replace('after', 'N = ').replace('Ms', '')} | ${chainNames.map((n) => fmt(chain[n][k], 0)).join(' | ')} |`);
  }
  const remote = summary['strata-remote'];
  if (remote) lines.push('', ...wire(remote, fmt));
  return [
    `Corpus ${(options.size / 1024 ** 3).toFixed(2)} GiB, ${options.runs} run(s), medians; machine: ${machine.cpus} × ${machine.cpu}, ${machine.memGiB} GiB, Node ${machine.node}${machine.nodeStartMs ? `; \`node -e 0\` ${Math.round(machine.nodeStartMs)} ms` : ''}.`,
    '',
    ...lines,
  ].join('\n');
}

/** What went over the wire for strata-remote, against the issue's targets. */
function wire(r, fmt) {
  const mib = (v) => fmt(v, 2, 1 / 1024 ** 2);
  const ratio = (a, b) => (a !== undefined && b ? (a / b).toFixed(3) : 'n/a');
  const out = ['| strata through a server on loopback | figure |', '|---|---|'];
  for (const [label, p] of [['full backup', 'full'], ['incremental after the mutation', 'inc']]) {
    out.push(`| ${label}: bytes sent, MiB | ${mib(r[`${p}Sent`])} |`);
    out.push(`| ${label}: new sealed bytes, MiB | ${mib(r[`${p}Sealed`])} |`);
    out.push(`| ${label}: pack bytes uploaded, MiB | ${mib(r[`${p}PacksSent`])} |`);
    out.push(`| ${label}: sent / new sealed bytes | ${ratio(r[`${p}Sent`], r[`${p}Sealed`])} |`);
  }
  for (const [label, p] of [['config kept', 'cold'], ['nothing kept', 'fullyCold']]) {
    out.push(`| cold 4 KiB range (${label}): wall ms | ${fmt(r[`${p}Ms`], 0)} |`);
    out.push(`| cold 4 KiB range (${label}): bytes received | ${fmt(r[`${p}Received`], 0)} |`);
    out.push(`| cold 4 KiB range (${label}): of which block bodies | ${fmt(r[`${p}BlockBytes`], 0)} |`);
    out.push(`| cold 4 KiB range (${label}): blocks read | ${fmt(r[`${p}BlocksRead`], 0)} |`);
    out.push(`| cold 4 KiB range (${label}): requests, round trips | ${fmt(r[`${p}Requests`], 0)}, ${fmt(r[`${p}RoundTrips`], 0)} |`);
    out.push(`| cold 4 KiB range (${label}): requests made | ${r[`${p}Kinds`] ?? 'n/a'} |`);
  }
  return out;
}

// --from FILE: print the table of a saved --json report.
const from = arg('from');
const start = from ? async () => process.stdout.write(tables(JSON.parse(fs.readFileSync(from, 'utf8'))) + '\n') : main;
start().catch((e) => {
  process.stderr.write(`bench: ${e.message}\n`);
  process.exitCode = 1;
});
