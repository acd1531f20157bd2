#!/usr/bin/env node
// npm run bench:s3 -- [--size 256M] [--endpoint http://127.0.0.1:7480] [--json] [--dir .bench-s3] [--runs 3] [--old DIR]
//
// strata and restic (its s3 backend) on one S3 gateway (a Ceph RGW from
// scripts/ceph-rgw-up.sh, credentials STRATAKEY / STRATASECRET unless
// AWS_ACCESS_KEY_ID says otherwise) and the benchmark corpus: full backup,
// an incremental after the mutation, a restore, and a cold 4 KiB range read.
// Each runs twice: timed straight to the gateway, then through a counting
// proxy for the requests and bytes it costs. Last, the raw throughput of
// parallel ranged GETs of strata's own packs, the ceiling of a restore. Then
// (--runs N) each tool's restore and the raw GETs again, N times in turn, so
// that a noisy machine weighs on each alike: medians and their ratios.
// --old DIR: another build of strata (a directory with its bin/ and dist/)
// restores the same bucket in that turn too, for a before and after.
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import { makeCorpus, mutate } from './corpus.mjs';
import { arg, flag, log, ROOT, size, STRATA } from './args.mjs';

const opts = {
  size: size(arg('size', '256M')),
  endpoint: arg('endpoint', process.env.AWS_ENDPOINT_URL_S3 ?? 'http://127.0.0.1:7480'),
  json: flag('json'),
  dir: path.resolve(arg('dir', path.join(ROOT, '.bench-s3'))),
  runs: Number(arg('runs', '3')),
  old: arg('old', undefined),
};
delete process.env.NODE_EXTRA_CA_CERTS;
const creds = { AWS_ACCESS_KEY_ID: process.env.AWS_ACCESS_KEY_ID ?? 'STRATAKEY', AWS_SECRET_ACCESS_KEY: process.env.AWS_SECRET_ACCESS_KEY ?? 'STRATASECRET', AWS_REGION: 'us-east-1' };
const MiB = 1024 * 1024;
/** The middle of a list (the upper one of an even count's two). */
const median = (l) => [...l].sort((a, b) => a - b)[Math.floor(l.length / 2)];

/** A proxy that counts requests (by method, and ranged GETs apart) and bytes each way. */
async function countingProxy(target) {
  const t = new URL(target);
  const stats = { requests: {}, up: 0, down: 0 };
  const server = http.createServer((req, res) => {
    const kind = `${req.method}${req.headers.range ? ' range' : ''}${/[?&](uploads|partNumber|uploadId)/.test(req.url) ? ' multipart' : ''}`;
    stats.requests[kind] = (stats.requests[kind] ?? 0) + 1;
    req.on('data', (c) => (stats.up += c.length));
    const up = http.request({ hostname: t.hostname, port: t.port, method: req.method, path: req.url, headers: req.headers }, (r) => {
      res.writeHead(r.statusCode ?? 502, r.headers);
      r.on('data', (c) => (stats.down += c.length));
      r.pipe(res);
    });
    up.on('error', () => res.destroy());
    req.pipe(up);
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    take() {
      const out = { requests: { ...stats.requests }, total: Object.values(stats.requests).reduce((a, b) => a + b, 0), upMiB: +(stats.up / MiB).toFixed(2), downMiB: +(stats.down / MiB).toFixed(2) };
      stats.requests = {};
      stats.up = stats.down = 0;
      return out;
    },
    close: () => server.close(),
  };
}

/** Runs a shell command (asynchronously: the counting proxy lives in this process) and times it. */
async function run(cmd, env) {
  const t = process.hrtime.bigint();
  const child = spawn('sh', ['-c', cmd], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.on('data', (c) => (out += c));
  child.stderr.on('data', (c) => (err += c));
  const code = await new Promise((resolve) => child.on('close', resolve));
  if (code !== 0) throw new Error(`failed (${code}): ${cmd}\n${err.slice(-2000)}`);
  return { seconds: Number(process.hrtime.bigint() - t) / 1e9, out };
}

const sh = (s) => `'${s.replace(/'/g, `'\\''`)}'`;

function tools(endpoint, tag) {
  const bucket = `bench-${tag}-${randomBytes(3).toString('hex')}`;
  const pw = { STRATA_PASSWORD: 'bench', RESTIC_PASSWORD: 'bench', ...creds, AWS_ENDPOINT_URL_S3: endpoint };
  const key = path.join(opts.dir, `${bucket}.key`);
  const restic = `restic -q -r s3:${endpoint}/${bucket}-restic/repo`;
  return {
    strata: {
      bucket,
      env: { ...pw, STRATA_CACHE_DIR: path.join(opts.dir, `${bucket}.cache`) },
      init: () => `node ${STRATA} init -q --repo s3://${bucket}/repo && node ${STRATA} key export --repo s3://${bucket}/repo ${key}`,
      backup: (src) => `node ${STRATA} backup -q --repo s3://${bucket}/repo --key-file ${key} ${sh(src)}`,
      restore: (target) => `node ${STRATA} restore -q --repo s3://${bucket}/repo --key-file ${key} --target ${target}`,
      rangeOnly: (file, off, id) => `node ${STRATA} cat --repo s3://${bucket}/repo --key-file ${key} --at ${id} --range ${off}+4096 ${sh(file)} > /dev/null`,
      oldest: async (env) => JSON.parse((await run(`node ${STRATA} snapshots --json --repo s3://${bucket}/repo --key-file ${key}`, env)).out)[0].id,
    },
    restic: {
      env: pw,
      init: () => `${restic} init`,
      backup: (src) => `${restic} backup ${sh(src)}`,
      restore: (target) => `${restic} restore latest --target ${target}`,
      rangeOnly: (file, off, id) => `${restic} dump ${id} ${sh(file)} | dd bs=4096 skip=${off / 4096} count=1 status=none > /dev/null`,
      oldest: async (env) => JSON.parse((await run(`${restic.replace(' -q', '')} snapshots --json`, env)).out)[0].short_id,
    },
  };
}

async function main() {
  fs.rmSync(opts.dir, { recursive: true, force: true });
  fs.mkdirSync(opts.dir, { recursive: true });
  const corpus = path.join(opts.dir, 'corpus');
  log(`corpus of ${opts.size / MiB} MiB`);
  const base = path.join(opts.dir, 'base');
  makeCorpus(base, opts.size);
  const proxy = await countingProxy(opts.endpoint);
  const report = { size: opts.size, endpoint: opts.endpoint, timed: {}, counted: {} };
  for (const [mode, endpoint] of [['timed', opts.endpoint], ['counted', proxy.url]]) {
    const all = tools(endpoint, mode);
    for (const [name, t] of Object.entries(all)) {
      log(`${mode}: ${name}`);
      fs.rmSync(corpus, { recursive: true, force: true });
      fs.cpSync(base, corpus, { recursive: true });
      const out = (report[mode][name] = {});
      const step = async (label, cmd, bytes) => {
        spawnSync('sync');
        proxy.take();
        const { seconds: s } = await run(cmd, t.env);
        out[label] = { seconds: +s.toFixed(3), ...(bytes ? { MiBps: +(bytes / MiB / s).toFixed(1) } : {}), ...(mode === 'counted' ? proxy.take() : {}) };
      };
      await step('init', t.init());
      await step('full backup', t.backup(corpus), opts.size);
      mutate(corpus, 0);
      await step('incremental', t.backup(corpus));
      await step('no-change backup', t.backup(corpus));
      const target = path.join(opts.dir, `restore-${mode}-${name}`);
      fs.mkdirSync(target);
      await step('restore', t.restore(target), opts.size);
      fs.rmSync(target, { recursive: true, force: true });
      const id = await t.oldest(t.env);
      // One read is noise on a machine whose speed drifts: timed, five at other offsets in the image (each block cold), their median.
      const image = path.join(corpus, 'disk.img');
      const pages = Math.floor(fs.statSync(image).size / 4096) - 1;
      const reads = mode === 'timed' ? 5 : 1;
      const secs = [];
      for (let i = 0; i < reads; i++) {
        await step('cold 4 KiB range read', t.rangeOnly(image, ((861 + 6983 * i) % pages) * 4096, id));
        secs.push(out['cold 4 KiB range read'].seconds);
      }
      if (reads > 1) out['cold 4 KiB range read'] = { seconds: median(secs), runs: secs };
    }
    if (mode === 'timed') {
      report.raw = await rawGets(all.strata.bucket);
      if (opts.runs > 0) report.restores = await restoresInTurn(all);
    }
  }
  proxy.close();
  fs.rmSync(base, { recursive: true, force: true });
  fs.rmSync(corpus, { recursive: true, force: true });
  if (opts.json) process.stdout.write(JSON.stringify(report, null, 2) + '\n');
  else print(report);
}

/** Each tool's restore and the raw GETs, `runs` times in turn: medians, and the restores' throughput as a share of the raw GETs'. */
async function restoresInTurn(all) {
  const times = { strata: [], restic: [], raw: [], ...(opts.old ? { old: [] } : {}) };
  const restorers = { ...all };
  if (opts.old) {
    const old = path.join(path.resolve(opts.old), 'bin', 'strata.js');
    restorers.old = { ...all.strata, restore: (target) => all.strata.restore(target).replace(`node ${STRATA} `, `node ${old} `) };
  }
  const entries = Object.entries(restorers);
  for (let i = 0; i < opts.runs; i++) {
    // The order turns from one round to the next: whoever goes first meets a cooler gateway.
    const k = i % entries.length;
    for (const [name, t] of [...entries.slice(k), ...entries.slice(0, k)]) {
      const target = path.join(opts.dir, `restore-turn-${name}`);
      fs.rmSync(target, { recursive: true, force: true });
      fs.mkdirSync(target);
      spawnSync('sync');
      times[name].push((await run(t.restore(target), t.env)).seconds);
      fs.rmSync(target, { recursive: true, force: true });
    }
    times.raw.push((await rawGets(all.strata.bucket)).MiBps);
    log(`restores in turn ${i + 1}/${opts.runs}: strata ${times.strata.at(-1).toFixed(2)} s,${opts.old ? ` old build ${times.old.at(-1).toFixed(2)} s,` : ''} restic ${times.restic.at(-1).toFixed(2)} s, raw GETs ${times.raw.at(-1)} MiB/s`);
  }
  const MiBps = (s) => +(opts.size / MiB / s).toFixed(1);
  const out = { runs: opts.runs, strata: { seconds: times.strata, MiBps: MiBps(median(times.strata)) }, restic: { seconds: times.restic, MiBps: MiBps(median(times.restic)) }, raw: { MiBps: times.raw, median: median(times.raw) } };
  out.strataOfRaw = +(out.strata.MiBps / out.raw.median).toFixed(2);
  out.resticOfRaw = +(out.restic.MiBps / out.raw.median).toFixed(2);
  out.strataOfRestic = +(out.strata.MiBps / out.restic.MiBps).toFixed(2);
  if (opts.old) {
    out.old = { build: opts.old, seconds: times.old, MiBps: MiBps(median(times.old)) };
    out.oldOfRaw = +(out.old.MiBps / out.raw.median).toFixed(2);
    out.oldOfRestic = +(out.old.MiBps / out.restic.MiBps).toFixed(2);
    // Per round, this build's time against the old one's: the median of those ratios says more than a ratio of medians on a noisy machine.
    out.strataOfOldPaired = +median(times.strata.map((t, j) => t / times.old[j])).toFixed(3);
  }
  return out;
}

/** Parallel 4 MiB ranged GETs of every pack strata stored (16 at a time, as its driver's connections): the gateway's ceiling for a restore. */
async function rawGets(bucket) {
  const { S3Storage } = await import(path.join(ROOT, 'dist', 'storage', 's3.js'));
  const st = new S3Storage({ bucket, prefix: 'repo/' }, { endpoint: opts.endpoint, region: 'us-east-1', credentials: { accessKeyId: creds.AWS_ACCESS_KEY_ID, secretAccessKey: creds.AWS_SECRET_ACCESS_KEY } });
  const ranges = [];
  for await (const name of st.list('pack')) {
    const { size: n } = await st.stat({ kind: 'pack', name });
    for (let at = 0; at < n; at += 4 * MiB) ranges.push({ name, at, len: Math.min(4 * MiB, n - at) });
  }
  const t = process.hrtime.bigint();
  let bytes = 0;
  let next = 0;
  await Promise.all(
    Array.from({ length: 16 }, async () => {
      while (next < ranges.length) {
        const r = ranges[next++];
        const got = await st.read({ kind: 'pack', name: r.name }, r.at, r.len);
        bytes += got.length;
      }
    }),
  );
  const s = Number(process.hrtime.bigint() - t) / 1e9;
  await st.close();
  return { seconds: +s.toFixed(2), MiB: +(bytes / MiB).toFixed(1), MiBps: +(bytes / MiB / s).toFixed(1) };
}

function print(r) {
  const steps = Object.keys(r.timed.strata);
  console.log(`corpus ${r.size / MiB} MiB, gateway ${r.endpoint}\n`);
  console.log('| step | strata s | restic s | strata MiB/s | restic MiB/s | strata requests | restic requests | strata up/down MiB | restic up/down MiB |');
  console.log('|---|---|---|---|---|---|---|---|---|');
  for (const s of steps) {
    const [a, b, ca, cb] = [r.timed.strata[s], r.timed.restic[s], r.counted.strata[s], r.counted.restic[s]];
    console.log(`| ${s} | ${a.seconds} | ${b.seconds} | ${a.MiBps ?? ''} | ${b.MiBps ?? ''} | ${ca.total} | ${cb.total} | ${ca.upMiB}/${ca.downMiB} | ${cb.upMiB}/${cb.downMiB} |`);
  }
  console.log(`\nraw parallel ranged GETs of strata's packs: ${r.raw.MiB} MiB in ${r.raw.seconds} s, ${r.raw.MiBps} MiB/s`);
  if (r.restores) {
    const t = r.restores;
    console.log(`\nrestores in turn with the raw GETs (${t.runs} runs, medians): strata ${t.strata.MiBps} MiB/s, restic ${t.restic.MiBps} MiB/s, raw GETs ${t.raw.median} MiB/s`);
    console.log(`strata ${t.strataOfRaw} of the raw GETs, restic ${t.resticOfRaw}; strata ${t.strataOfRestic} of restic`);
    if (t.old) console.log(`old build (${t.old.build}) ${t.old.MiBps} MiB/s, ${t.oldOfRaw} of the raw GETs; this build's time against the old one's, per round: median ${t.strataOfOldPaired}`);
  }
  console.log('\nrequests by kind (counted pass):');
  for (const tool of ['strata', 'restic']) for (const s of steps) console.log(`  ${tool} ${s}: ${JSON.stringify(r.counted[tool][s].requests)}`);
}

await main();
