#!/usr/bin/env node
// npm run bench:ui [-- --snapshots 1000 --lineages 4 --entries 100000 --file 64M --range 32M --messages 1000 --zip-entries 1000000 --runs 5 --only timeline,tree,mbox,zip --fresh]
//
// strata ui against its targets, in Debian's chromium (headless, through
// playwright-core) and over HTTP:
// - the timeline of a repository of 1,000 snapshots, painted: from the
//   navigation's start to the first frame after the last row is in the page
//   (performance.now() in the page), first on a fresh server, then on reloads;
//   the list is virtualised: "painted" is its first rows, then End pressed
//   until the oldest snapshot's row is painted;
// - the first page of a 100,000-entry directory, likewise;
// - a range download (HTTP Range) against `strata cat --range` of the same
//   range to /dev/null: the first of each, then the median of --runs more,
//   in MB/s (cat's time includes its start, as a user waits for it).
// - the items of an mbox dataset of 1,000 messages: the items page's first
//   rows painted on a fresh server (one pass over the mailbox), on reloads
//   (the server keeps the listing), and `strata items --json` of the same;
// - a zip of 1,000,000 entries: its items page's first rows painted on a
//   fresh server, the next page over HTTP, and the server's peak memory
//   (VmHWM) after them: the central directory is read a window at a time, as
//   far as the page goes, and no listing is held;
// The repositories are kept in .bench-ui/ between runs (--fresh makes them again).
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import { chromium } from 'playwright-core';
import { arg, flag, log, ROOT, size, STRATA } from './args.mjs';

const dist = (m) => import(path.join(ROOT, 'dist', m));
const { Repository } = await dist('repo/repository.js');
const { backup } = await dist('engine/backup.js');

const opts = {
  snapshots: Number(arg('snapshots', '1000')),
  entries: Number(arg('entries', '100000')),
  file: size(arg('file', '64M')),
  range: size(arg('range', '32M')),
  runs: Number(arg('runs', '5')),
  messages: Number(arg('messages', '1000')),
  lineages: Number(arg('lineages', '4')),
  zipEntries: Number(arg('zip-entries', '1000000')),
  /** Some of timeline,tree,mbox,zip (default all). */
  only: arg('only', undefined),
};
const work = path.join(ROOT, '.bench-ui');
if (flag('fresh')) fs.rmSync(work, { recursive: true, force: true });
fs.mkdirSync(work, { recursive: true });
const PASSWORD = 'bench';
const median = (xs) => [...xs].sort((a, b) => a - b)[xs.length >> 1];

/**
 * A repository of `snapshots` snapshots of small directories, one file
 * changed each time. A backup of a few tiny files is mostly waiting (its
 * worker threads start, its commit), so --lineages directories are backed
 * up side by side in this process, each its own lineage.
 */
async function manySnapshots() {
  const dir = path.join(work, `snapshots-${opts.snapshots}`);
  if (fs.existsSync(path.join(dir, 'done'))) return path.join(dir, 'repo');
  fs.rmSync(dir, { recursive: true, force: true });
  const repo = await Repository.init(path.join(dir, 'repo'), PASSWORD, { scrypt: { N: 1024, r: 8, p: 1 } });
  const t = performance.now();
  let made = 0;
  await Promise.all(
    Array.from({ length: opts.lineages }, async (_, l) => {
      const src = path.join(dir, `src${l}`);
      fs.mkdirSync(src, { recursive: true });
      for (let i = l; i < opts.snapshots; i += opts.lineages) {
        fs.writeFileSync(path.join(src, `f${i % 20}`), `version ${i}\n`.repeat(100 + i));
        await backup(repo, { paths: [src], time: Date.UTC(2024, 0, 1) + i * 3_600_000, tags: i % 7 === 0 ? ['weekly'] : [] });
        if (++made % 100 === 0) log(`  ${made} snapshots (${((performance.now() - t) / 1000).toFixed(0)} s)`);
      }
    }),
  );
  log(`  ${opts.snapshots} snapshots made in ${((performance.now() - t) / 1000).toFixed(0)} s (${opts.lineages} side by side)`);
  repo.close();
  fs.writeFileSync(path.join(dir, 'done'), '');
  return path.join(dir, 'repo');
}

/** A repository of one snapshot: a directory of `entries` files, and a large file of random bytes. */
async function bigTree() {
  const dir = path.join(work, `tree-${opts.entries}-${opts.file}`);
  if (fs.existsSync(path.join(dir, 'done'))) return { repo: path.join(dir, 'repo'), src: path.join(dir, 'src') };
  fs.rmSync(dir, { recursive: true, force: true });
  const src = path.join(dir, 'src');
  fs.mkdirSync(path.join(src, 'many'), { recursive: true });
  for (let i = 0; i < opts.entries; i++) fs.writeFileSync(path.join(src, 'many', `file-${String(i).padStart(6, '0')}.txt`), '');
  const big = fs.openSync(path.join(src, 'big.bin'), 'w');
  let seed = 99;
  for (let done = 0; done < opts.file; done += 1 << 20) {
    const b = Buffer.allocUnsafe(Math.min(1 << 20, opts.file - done));
    for (let i = 0; i < b.length; i += 4) {
      seed ^= seed << 13;
      seed ^= seed >>> 17;
      seed ^= seed << 5;
      b.writeUInt32LE(seed >>> 0, i);
    }
    fs.writeSync(big, b);
  }
  fs.closeSync(big);
  const repo = await Repository.init(path.join(dir, 'repo'), PASSWORD, { scrypt: { N: 1024, r: 8, p: 1 } });
  await backup(repo, { paths: [src] });
  repo.close();
  fs.writeFileSync(path.join(dir, 'done'), '');
  return { repo: path.join(dir, 'repo'), src };
}

/** A repository of one snapshot holding an mbox of `messages` messages of 1-4 KiB. */
async function mailbox() {
  const dir = path.join(work, `mbox-${opts.messages}`);
  const mbox = path.join(dir, 'src', 'mail.mbox');
  if (fs.existsSync(path.join(dir, 'done'))) return { repo: path.join(dir, 'repo'), mbox };
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(path.dirname(mbox), { recursive: true });
  const parts = [];
  for (let i = 0; i < opts.messages; i++) {
    const body = `Line ${i} of a message body, some words to fill it.\n`.repeat(20 + (i % 60));
    parts.push(`From s${i}@example.org Mon Jan  1 00:00:00 2024\nFrom: Sender ${i} <s${i}@example.org>\nSubject: message ${i}\nDate: Mon, 1 Jan 2024 00:00:00 +0000\nMessage-ID: <m${i}@example.org>\n\n${body}\n`);
  }
  fs.writeFileSync(mbox, parts.join(''));
  const repo = await Repository.init(path.join(dir, 'repo'), PASSWORD, { scrypt: { N: 1024, r: 8, p: 1 } });
  await backup(repo, { paths: [path.dirname(mbox)] });
  repo.close();
  fs.writeFileSync(path.join(dir, 'done'), '');
  return { repo: path.join(dir, 'repo'), mbox };
}

/** A repository of one snapshot holding a zip of `zipEntries` empty stored entries (written here: zip would take minutes). */
async function bigZip() {
  const dir = path.join(work, `zip-${opts.zipEntries}`);
  const zip = path.join(dir, 'src', 'many.zip');
  if (fs.existsSync(path.join(dir, 'done'))) return { repo: path.join(dir, 'repo'), zip };
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(path.dirname(zip), { recursive: true });
  const fd = fs.openSync(zip, 'w');
  const central = fs.openSync(zip + '.dir', 'w+');
  let at = 0;
  let dirSize = 0;
  const batch = [];
  const dirBatch = [];
  for (let i = 0; i < opts.zipEntries; i++) {
    const name = Buffer.from(`entries/entry-${String(i).padStart(7, '0')}.txt`);
    const local = Buffer.alloc(30);
    local.writeUInt32LE(0x04034b50, 0);
    local.writeUInt16LE(10, 4);
    local.writeUInt16LE(name.length, 26);
    const cd = Buffer.alloc(46);
    cd.writeUInt32LE(0x02014b50, 0);
    cd.writeUInt16LE(20, 4);
    cd.writeUInt16LE(10, 6);
    cd.writeUInt16LE(0x21, 12);
    cd.writeUInt16LE(name.length, 28);
    cd.writeUInt32LE(at, 42);
    batch.push(local, name);
    dirBatch.push(cd, name);
    at += 30 + name.length;
    dirSize += 46 + name.length;
    if (batch.length >= 20_000) {
      fs.writeSync(fd, Buffer.concat(batch.splice(0)));
      fs.writeSync(central, Buffer.concat(dirBatch.splice(0)));
    }
  }
  fs.writeSync(fd, Buffer.concat(batch));
  fs.writeSync(central, Buffer.concat(dirBatch));
  // The central directory after the entries, then the end records (zip64: more than 65,535 entries).
  for (let pos = 0; pos < dirSize; ) {
    const b = Buffer.alloc(Math.min(1 << 20, dirSize - pos));
    fs.readSync(central, b, 0, b.length, pos);
    fs.writeSync(fd, b);
    pos += b.length;
  }
  fs.closeSync(central);
  fs.rmSync(zip + '.dir');
  const eocd64 = Buffer.alloc(56);
  eocd64.writeUInt32LE(0x06064b50, 0);
  eocd64.writeBigUInt64LE(44n, 4);
  eocd64.writeUInt16LE(45, 12);
  eocd64.writeUInt16LE(45, 14);
  eocd64.writeBigUInt64LE(BigInt(opts.zipEntries), 24);
  eocd64.writeBigUInt64LE(BigInt(opts.zipEntries), 32);
  eocd64.writeBigUInt64LE(BigInt(dirSize), 40);
  eocd64.writeBigUInt64LE(BigInt(at), 48);
  const locator = Buffer.alloc(20);
  locator.writeUInt32LE(0x07064b50, 0);
  locator.writeBigUInt64LE(BigInt(at + dirSize), 8);
  locator.writeUInt32LE(1, 16);
  const eocd = Buffer.alloc(22);
  eocd.writeUInt32LE(0x06054b50, 0);
  eocd.writeUInt16LE(0xffff, 8);
  eocd.writeUInt16LE(0xffff, 10);
  eocd.writeUInt32LE(0xffffffff, 12);
  eocd.writeUInt32LE(0xffffffff, 16);
  fs.writeSync(fd, Buffer.concat([eocd64, locator, eocd]));
  fs.closeSync(fd);
  const repo = await Repository.init(path.join(dir, 'repo'), PASSWORD, { scrypt: { N: 1024, r: 8, p: 1 } });
  await backup(repo, { paths: [path.dirname(zip)] });
  repo.close();
  fs.writeFileSync(path.join(dir, 'done'), '');
  return { repo: path.join(dir, 'repo'), zip };
}

/** Reads every file below `dir` once, into the kernel's page cache. */
function warmFiles(dir) {
  const b = Buffer.allocUnsafe(1 << 20);
  for (const e of fs.readdirSync(dir, { withFileTypes: true, recursive: true })) {
    if (!e.isFile()) continue;
    const fd = fs.openSync(path.join(e.parentPath ?? e.path, e.name), 'r');
    while (fs.readSync(fd, b, 0, b.length, null) > 0);
    fs.closeSync(fd);
  }
}

/** The peak resident memory of a process so far (VmHWM), in MiB. */
function peakMiB(pid) {
  const m = /VmHWM:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}

const env = (repo) => ({ ...process.env, STRATA_REPO: repo, STRATA_PASSWORD: PASSWORD });

async function startUi(repo) {
  const proc = spawn(process.execPath, [STRATA, 'ui', '--listen', '127.0.0.1:0'], { env: env(repo), stdio: ['ignore', 'pipe', 'inherit'] });
  const url = await new Promise((resolve, reject) => {
    let out = '';
    proc.stdout.on('data', (c) => {
      out += c;
      const m = /open (http:\/\/\S+)\n/.exec(out);
      if (m) resolve(m[1]);
    });
    proc.on('exit', (code) => reject(new Error(`strata ui exited with ${code}`)));
  });
  return { proc, url, origin: new URL(url).origin, stop: () => new Promise((r) => (proc.once('exit', r), proc.kill('SIGTERM'))) };
}

/** ms from the navigation's start to the first frame after `ready` holds. */
async function painted(page, ready) {
  await page.waitForFunction(ready, undefined, { timeout: 60_000, polling: 'raf' });
  return page.evaluate(() => new Promise((r) => globalThis.requestAnimationFrame(() => r(performance.now()))));
}

log(`preparing (${work})`);
const want = (part) => opts.only === undefined || opts.only.split(',').includes(part);
const snapshotsRepo = want('timeline') ? await manySnapshots() : undefined;
const tree = want('tree') ? await bigTree() : undefined;
const mail = want('mbox') ? await mailbox() : undefined;
const zipped = want('zip') ? await bigZip() : undefined;
const browser = await chromium.launch({ executablePath: process.env.STRATA_CHROMIUM ?? '/usr/bin/chromium', headless: true, args: ['--no-sandbox'] });
const results = [];
try {
  // The timeline.
  if (want('timeline')) {
    const ui = await startUi(snapshotsRepo);
    const page = await (await browser.newContext()).newPage();
    const rows = `() => document.querySelector('.timeline .row[data-snapshot]') !== null`;
    await page.goto(ui.url);
    const first = await painted(page, rows);
    // To the oldest snapshot: End, then its row painted.
    await page.locator('.grid.timeline').focus();
    const t = await page.evaluate(() => performance.now());
    await page.keyboard.press('End');
    const end = (await painted(page, `() => document.querySelector('.timeline .row[aria-rowindex="${opts.snapshots + 1}"][data-snapshot]') !== null`)) - t;
    const again = [];
    for (let i = 0; i < opts.runs; i++) {
      // Each reload asks the catalog for the page again (the server keeps no list).
      await page.goto('about:blank');
      await page.goto(`${ui.origin}/#/`);
      again.push(await painted(page, rows));
    }
    results.push(['timeline of ' + opts.snapshots + ' snapshots painted, fresh server (ms)', first.toFixed(0)], ['same, reloads, median (ms)', median(again).toFixed(0)], ['End pressed to the oldest snapshot painted (ms)', end.toFixed(0)]);
    await ui.stop();
  }
  // The first page of the big directory, and the range download.
  if (want('tree')) {
    const ui = await startUi(tree.repo);
    const ctx = await browser.newContext();
    const page = await ctx.newPage();
    await page.goto(ui.url);
    await page.waitForSelector('.timeline .row[data-snapshot]');
    const dir = path.join(tree.src, 'many');
    const target = `${ui.origin}/#/browse?at=latest&path=${encodeURIComponent(dir)}`;
    const firstRow = `() => document.querySelector('.spacer .row[data-path]') !== null`;
    await page.goto('about:blank');
    await page.goto(target);
    const first = await painted(page, firstRow);
    const again = [];
    for (let i = 0; i < opts.runs; i++) {
      await page.goto('about:blank');
      await page.goto(target);
      again.push(await painted(page, firstRow));
    }
    results.push([`first page of a ${opts.entries}-entry directory painted, fresh server (ms)`, first.toFixed(0)], ['same, reloads, median (ms)', median(again).toFixed(0)]);

    const cookie = (await ctx.cookies()).map((c) => `${c.name}=${c.value}`).join('; ');
    const file = path.join(tree.src, 'big.bin');
    const start = Math.floor((opts.file - opts.range) / 2);
    const end = start + opts.range - 1;
    const u = new URL(`${ui.origin}/api/download?path=${encodeURIComponent(file)}`);
    const download = () =>
      new Promise((resolve, reject) => {
        const t = performance.now();
        let n = 0;
        http
          .get({ host: u.hostname, port: u.port, path: u.pathname + u.search, headers: { cookie, range: `bytes=${start}-${end}` }, agent: false }, (res) => {
            res.on('data', (c) => (n += c.length));
            res.on('end', () => (n === opts.range && res.statusCode === 206 ? resolve(performance.now() - t) : reject(new Error(`got ${n} bytes, status ${res.statusCode}`))));
          })
          .on('error', reject);
      });
    const cat = () => {
      const t = performance.now();
      const r = spawnSync(process.execPath, [STRATA, 'cat', file, '--range', `${start}-${end}`, '-o', '/dev/null'], { env: env(tree.repo) });
      if (r.status !== 0) throw new Error(r.stderr.toString());
      return performance.now() - t;
    };
    // The first of each is reported apart: the server's first download also warms its process. The
    // repository's files are read once before, so neither first finds them on disk and the other in memory.
    warmFiles(tree.repo);
    const firstUi = await download();
    const firstCat = cat();
    const ui_ = [];
    const cli = [];
    for (let i = 0; i < opts.runs; i++) {
      ui_.push(await download());
      cli.push(cat());
    }
    const mbs = (ms) => (opts.range / 1e6 / (ms / 1000)).toFixed(0);
    results.push(
      [`range download of ${opts.range >> 20} MiB, HTTP Range, first (MB/s)`, mbs(firstUi)],
      [`strata cat --range of the same range to /dev/null, first (MB/s)`, mbs(firstCat)],
      [`range download, median of the next ${opts.runs} (MB/s)`, mbs(median(ui_))],
      [`strata cat --range, median of the next ${opts.runs} (MB/s)`, mbs(median(cli))],
      ['ratio download / cat, medians', (median(cli) / median(ui_)).toFixed(2)],
    );
    await ui.stop();
  }
  // The items of a mailbox.
  if (want('mbox')) {
    const fresh = [];
    const again = [];
    const firstRow = `() => document.querySelector('table[aria-label=Items] tbody tr') !== null`;
    for (let i = 0; i < opts.runs; i++) {
      const ui = await startUi(mail.repo);
      const page = await (await browser.newContext()).newPage();
      await page.goto(ui.url);
      await page.waitForSelector('.timeline .row[data-snapshot]');
      const target = `${ui.origin}/#/items?at=latest&path=${encodeURIComponent(mail.mbox)}`;
      await page.goto('about:blank');
      await page.goto(target);
      fresh.push(await painted(page, firstRow));
      await page.goto('about:blank');
      await page.goto(target);
      again.push(await painted(page, firstRow));
      await page.context().close();
      await ui.stop();
    }
    const cli = [];
    for (let i = 0; i < opts.runs; i++) {
      const t = performance.now();
      const r = spawnSync(process.execPath, [STRATA, 'items', mail.mbox, '--json'], { env: env(mail.repo), maxBuffer: 1 << 28 });
      if (r.status !== 0) throw new Error(r.stderr.toString());
      if (JSON.parse(r.stdout.toString()).items.length !== opts.messages) throw new Error('strata items: wrong count');
      cli.push(performance.now() - t);
    }
    results.push(
      [`items page of a ${opts.messages}-message mbox painted, fresh server, median of ${opts.runs} (ms)`, median(fresh).toFixed(0)],
      ['same, reload (listing kept by the server), median (ms)', median(again).toFixed(0)],
      [`strata items --json of the same mbox, median (ms)`, median(cli).toFixed(0)],
    );
  }
  // The items of a zip of a million entries.
  if (want('zip')) {
    const fresh = [];
    const next = [];
    const peaks = [];
    const firstRow = `() => document.querySelector('table[aria-label=Items] tbody tr') !== null`;
    for (let i = 0; i < opts.runs; i++) {
      const ui = await startUi(zipped.repo);
      const ctx = await browser.newContext();
      const page = await ctx.newPage();
      await page.goto(ui.url);
      await page.waitForSelector('.timeline .row[data-snapshot]');
      const target = `${ui.origin}/#/items?at=latest&path=${encodeURIComponent(zipped.zip)}`;
      await page.goto('about:blank');
      await page.goto(target);
      fresh.push(await painted(page, firstRow));
      const cookie = (await ctx.cookies()).map((c) => `${c.name}=${c.value}`).join('; ');
      const u = new URL(ui.origin);
      const t = performance.now();
      const body = await new Promise((resolve, reject) => {
        const q = `at=latest&path=${encodeURIComponent(zipped.zip)}&offset=200&limit=200`;
        http
          .get({ host: u.hostname, port: u.port, path: `/api/items?${q}`, headers: { cookie }, agent: false }, (res) => {
            let text = '';
            res.on('data', (c) => (text += c));
            res.on('end', () => (res.statusCode === 200 ? resolve(JSON.parse(text)) : reject(new Error(text))));
          })
          .on('error', reject);
      });
      next.push(performance.now() - t);
      if (body.items.length !== 200 || body.items[0].id !== 'entries/entry-0000200.txt') throw new Error('the zip listing is wrong');
      peaks.push(peakMiB(ui.proc.pid));
      await ctx.close();
      await ui.stop();
    }
    results.push(
      [`items page of a ${opts.zipEntries}-entry zip painted, fresh server, median of ${opts.runs} (ms)`, median(fresh).toFixed(0)],
      ['its next page over HTTP (the cursor goes on), median (ms)', median(next).toFixed(0)],
      ['peak memory of strata ui after both, median (MiB)', median(peaks).toFixed(0)],
    );
  }
} finally {
  await browser.close();
}
console.log('| measure | value |\n|---|---|');
for (const [k, v] of results) console.log(`| ${k} | ${v} |`);
