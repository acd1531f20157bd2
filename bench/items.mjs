#!/usr/bin/env node
// npm run bench:items -- [--size 1G] [--disk-size SIZE] [--index-dirs] [--runs 5] [--dir .bench-items] [--only mbox,zip,sqlite,disk] [--no-dump]
//
// Items inside backed-up files, fetching only what they need, beside what a
// restic or borg user must do (dump the whole file, then extract: timed here
// as `strata cat` of the whole file to a temporary file, then the tool that
// extracts):
// - one message of an mbox of --size (a message near the start by number,
//   one near the end by number and one by Message-ID, each found through
//   the item index the backup sealed), and the listing of all messages;
//   then the mailbox grown by 1,000 messages and backed up again (the
//   index is reused up to the first changed block: `itemIndexes`);
// - one 1 MiB entry of a zip of --size (made by `zip` from seeded random files);
// - a point query by primary key and one by index on a SQLite database of --size;
// - one 1 MiB file of an ext4 file system in a raw GPT disk image of
//   --disk-size (default --size; beside: the image dumped, then the file
//   taken out by debugfs). mke2fs -d writes directories without an htree
//   (the kernel indexes a directory once it outgrows a block); --index-dirs
//   indexes them afterwards (e2fsck -fD), as a file system the kernel wrote;
// - the same through `strata serve` with no client cache: bytes on the wire
//   against bytes fetched.
// Each command is a fresh process (a cold cache of decoded blocks). Figures
// are medians of --runs, wall time and CPU time (user + system, as
// /usr/bin/time gives them: the machine may be shared, and CPU time is what
// the command itself spent); `fetched` is the command's own --json figure
// (and `indexFetched` the part of it that was the item index). --only builds
// and reads only those datasets; --no-dump skips the dump-and-extract baseline;
// --reuse reads the datasets and repository an earlier run left in --dir
// (its meta.json) instead of making them again, and does not grow the mailbox.
import { execFileSync, spawn } from 'node:child_process';
import { createCipheriv } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import Database from 'better-sqlite3';
import { arg, flag, log, ROOT, size as sizeOf, STRATA } from './args.mjs';

const size = sizeOf(arg('size', '1G'));
const diskSize = sizeOf(arg('disk-size', arg('size', '1G')));
const runs = Number(arg('runs', '5'));
const dir = path.resolve(arg('dir', path.join(ROOT, '.bench-items')));
const only = new Set(arg('only', 'mbox,zip,sqlite,disk').split(','));
const dumps = !flag('no-dump');
const indexDirs = flag('index-dirs');
const metaFile = path.join(dir, 'meta.json');
const reuse = flag('reuse') && fs.existsSync(metaFile);
const meta = reuse ? JSON.parse(fs.readFileSync(metaFile, 'utf8')) : undefined;
const env = { ...process.env, STRATA_PASSWORD: 'bench' };
delete env.NODE_EXTRA_CA_CERTS;

if (!reuse) fs.rmSync(dir, { recursive: true, force: true });
const src = path.join(dir, 'src');
fs.mkdirSync(src, { recursive: true });
const cipher = createCipheriv('aes-256-ctr', Buffer.alloc(32, 9), Buffer.alloc(16));
const random = (n) => cipher.update(Buffer.alloc(n));

// An mbox of messages of about 4 KiB: headers, then base64 of random bytes (as an attachment is).
const mbox = path.join(src, 'mail.mbox');
let messages = meta?.messages ?? 0;
const mboxMessage = (i) => {
  const body = random(2900).toString('base64').replace(/.{76}/g, '$&\n');
  return `From sender${i}@example.org Mon Jan  1 00:00:00 2024\nFrom: Sender ${i} <sender${i}@example.org>\nTo: someone@example.org\nSubject: message ${i}\nDate: Mon, 1 Jan 2024 00:00:00 +0000\nMessage-ID: <m${i}@example.org>\n\n${body}\n\n`;
};
if (only.has('mbox') && !reuse) {
  const fd = fs.openSync(mbox, 'w');
  let written = 0;
  const batch = [];
  while (written < size) {
    const m = mboxMessage(messages++);
    batch.push(m);
    written += m.length;
    if (batch.length === 1000) fs.writeSync(fd, batch.splice(0).join(''));
  }
  fs.writeSync(fd, batch.join(''));
  fs.closeSync(fd);
  log(`mbox: ${messages} messages, ${fs.statSync(mbox).size} bytes`);
}

// A zip of 1 MiB files of random bytes, by zip.
const files = Math.max(2, Math.floor(size / (1024 * 1024)));
const zip = path.join(src, 'archive.zip');
const entry = `f${String(Math.floor(files / 2)).padStart(5, '0')}.bin`;
if (only.has('zip') && !reuse) {
  const zipDir = path.join(dir, 'zipsrc');
  fs.mkdirSync(zipDir);
  for (let i = 0; i < files; i++) fs.writeFileSync(path.join(zipDir, `f${String(i).padStart(5, '0')}.bin`), random(1024 * 1024));
  execFileSync('zip', ['-q', '-r', zip, '.'], { cwd: zipDir });
  fs.rmSync(zipDir, { recursive: true });
  log(`zip: ${files} entries, ${fs.statSync(zip).size} bytes`);
}

// A SQLite database of rows of about 1 KiB, with an index on a text column.
const dbPath = path.join(src, 'app.db');
let rows = meta?.rows ?? 0;
if (only.has('sqlite') && !reuse) {
  const db = new Database(dbPath);
  db.pragma('journal_mode = DELETE');
  db.exec('CREATE TABLE items (id INTEGER PRIMARY KEY, sku TEXT, payload TEXT)');
  const add = db.prepare('INSERT INTO items VALUES (?, ?, ?)');
  const per = 1100;
  const target = Math.floor(size / per);
  const step = 10_000;
  for (let from = 0; from < target; from += step) {
    db.transaction(() => {
      for (let i = from; i < Math.min(target, from + step); i++) add.run(i, `sku-${(i * 2654435761) % 4294967296}`, random(750).toString('base64'));
    })();
  }
  rows = target;
  db.exec('CREATE INDEX items_sku ON items (sku)');
  db.close();
  log(`sqlite: ${rows} rows, ${fs.statSync(dbPath).size} bytes`);
}

// A raw disk image of --size: GPT, one ext4 partition made by mkfs.ext4 -d from 1 MiB files filling half of it.
const image = path.join(src, 'disk.img');
if (only.has('disk') && !reuse) {
  const tree = path.join(dir, 'imgsrc');
  fs.mkdirSync(path.join(tree, 'data'), { recursive: true });
  const n = Math.max(2, Math.floor(diskSize / 2 / (1024 * 1024)));
  for (let i = 0; i < n; i++) fs.writeFileSync(path.join(tree, 'data', `f${String(i).padStart(5, '0')}.bin`), random(1024 * 1024));
  execFileSync('truncate', ['-s', String(diskSize), image]);
  execFileSync('sfdisk', ['-q', image], { input: 'label: gpt\n,\n' });
  const sectors = Math.floor((diskSize - 2 * 1024 * 1024) / 1024);
  execFileSync('mkfs.ext4', ['-q', '-F', '-d', tree, '-E', 'offset=1048576', image, `${sectors}k`]);
  if (indexDirs) {
    try {
      execFileSync('e2fsck', ['-fyD', `${image}?offset=1048576`], { stdio: 'ignore' });
    } catch (e) {
      // 1: the file system was changed (its directories indexed).
      if (e.status !== 1) throw e;
    }
  }
  fs.rmSync(tree, { recursive: true });
  log(`disk: ${fs.statSync(image).size} bytes${indexDirs ? ', directories indexed' : ''}`);
}
const imageFile = `/data/f${String(Math.floor(diskSize / 4 / (1024 * 1024))).padStart(5, '0')}.bin`;

const repo = path.join(dir, 'repo');
const key = path.join(dir, 'repo.key');
const strata = (args, opts = {}) => execFileSync('node', [STRATA, ...args], { env: { ...env, ...(opts.env ?? {}) }, maxBuffer: 1 << 30, ...opts });
const local = ['--repo', repo, '--key-file', key];
let backupSeconds = meta?.backupSeconds;
if (!reuse) {
  strata(['--repo', repo, 'init', '--scrypt-n', '1024', '-q']);
  strata(['--repo', repo, 'key', 'export', key]);
  const t = process.hrtime.bigint();
  const first = JSON.parse(strata([...local, 'backup', src, '--json']).toString());
  backupSeconds = Number(process.hrtime.bigint() - t) / 1e9;
  log(`backup: ${backupSeconds.toFixed(1)} s, item indexes ${JSON.stringify(first.itemIndexes ?? null)}`);
  fs.writeFileSync(metaFile, JSON.stringify({ messages, rows, backupSeconds, itemIndexes: first.itemIndexes ?? null }));
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const timed = (f) => {
  const s = process.hrtime.bigint();
  const out = f();
  return { seconds: Number(process.hrtime.bigint() - s) / 1e9, out };
};
// A strata command under /usr/bin/time: its output, wall seconds and CPU seconds (user + system).
const cpuFile = path.join(dir, 'cpu.txt');
const timedStrata = (args) => {
  const s = process.hrtime.bigint();
  const out = execFileSync('/usr/bin/time', ['-f', '%U %S', '-o', cpuFile, 'node', STRATA, ...args], { env, maxBuffer: 1 << 30, stdio: ['ignore', 'pipe', 'inherit'] });
  const seconds = Number(process.hrtime.bigint() - s) / 1e9;
  const [user, sys] = fs.readFileSync(cpuFile, 'utf8').trim().split('\n').at(-1).split(' ').map(Number);
  return { seconds, cpu: user + sys, out };
};

const tmp = path.join(dir, 'dump');
const early = 10;
const late = messages - 10;
const mboxBaseline = (n) => () => execFileSync('python3', ['-c', `import mailbox,sys; m=mailbox.mbox(sys.argv[1]); sys.stdout.buffer.write(m.get_bytes(${n - 1}))`, tmp], { maxBuffer: 1 << 30 });
const cases = [
  { set: 'mbox', name: `one message (#${early}) of the mbox`, file: mbox, args: ['item', mbox, String(early)], baseline: mboxBaseline(early) },
  { set: 'mbox', name: `one message (#${late}) of the mbox`, file: mbox, args: ['item', mbox, String(late)], baseline: mboxBaseline(late) },
  { set: 'mbox', name: `one message (#${late}, by Message-ID) of the mbox`, file: mbox, args: ['item', mbox, `m${late - 1}@example.org`], baseline: mboxBaseline(late) },
  { set: 'mbox', name: 'the list of all messages of the mbox', file: mbox, args: ['items', mbox], baseline: () => execFileSync('python3', ['-c', 'import mailbox,sys; print(sum(1 for _ in mailbox.mbox(sys.argv[1])))', tmp]) },
  { set: 'zip', name: 'one 1 MiB entry of the zip', file: zip, args: ['item', zip, entry], baseline: () => execFileSync('unzip', ['-p', tmp, entry], { maxBuffer: 1 << 30 }) },
  { set: 'sqlite', name: 'point query by primary key', file: dbPath, args: ['sql', dbPath, `SELECT sku FROM items WHERE id = ${Math.floor(rows / 3)}`], baseline: () => execFileSync('sqlite3', [tmp, `SELECT sku FROM items WHERE id = ${Math.floor(rows / 3)}`]) },
  {
    set: 'disk',
    name: 'one 1 MiB file of an ext4 disk image',
    file: image,
    args: ['item', image, `p1:${imageFile}`],
    baseline: () => execFileSync('debugfs', ['-R', `dump ${imageFile} ${tmp}.out`, `${tmp}?offset=1048576`], { stdio: 'ignore' }),
  },
  { set: 'sqlite', name: 'point query by index', file: dbPath, args: ['sql', dbPath, `SELECT id FROM items WHERE sku = 'sku-${(Math.floor(rows / 5) * 2654435761) % 4294967296}'`], baseline: () => execFileSync('sqlite3', [tmp, `SELECT id FROM items WHERE sku = 'sku-${(Math.floor(rows / 5) * 2654435761) % 4294967296}'`]) },
].filter((c) => only.has(c.set));

const results = [];
for (const c of cases) {
  const itemRuns = [];
  const cpuRuns = [];
  const dumpRuns = [];
  let fetched = 0;
  let index = 0;
  let fileSize = 0;
  for (let r = 0; r < runs; r++) {
    const { seconds, cpu, out } = timedStrata([...local, ...c.args, '--json']);
    cpuRuns.push(cpu);
    const j = JSON.parse(out.toString());
    fetched = j.fetched;
    index = j.indexFetched ?? 0;
    fileSize = j.size;
    itemRuns.push(seconds);
    if (dumps) dumpRuns.push(
      timed(() => {
        strata([...local, 'cat', c.file, '-o', tmp]);
        c.baseline();
      }).seconds,
    );
    fs.rmSync(tmp, { force: true });
    fs.rmSync(`${tmp}.out`, { force: true });
  }
  const dump = dumps ? median(dumpRuns) : undefined;
  results.push({ name: c.name, size: fileSize, fetched, index, item: median(itemRuns), cpu: median(cpuRuns), dump });
  log(`${c.name}: ${median(itemRuns).toFixed(3)} s (CPU ${median(cpuRuns).toFixed(3)} s), fetched ${fetched} (index ${index}) of ${fileSize}${dump === undefined ? '' : `; dump and extract ${dump.toFixed(3)} s`}`);
}

// Through a server, with no client cache: what came over the wire against what was fetched.
const serve = spawn('node', [STRATA, '--repo', repo, 'serve', '--listen', '127.0.0.1:0'], { env, stdio: ['ignore', 'pipe', 'ignore'] });
const url = await new Promise((resolve) => {
  let out = '';
  serve.stdout.on('data', (d) => {
    out += d;
    const m = /listening on (\S+)\n/.exec(out);
    if (m) resolve(m[1]);
  });
});
// A run with --reuse finds the token an earlier run made: replaced.
if (reuse && strata(['--repo', repo, 'token', 'list']).toString().includes('bench')) strata(['--repo', repo, 'token', 'revoke', 'bench']);
const token = JSON.parse(strata(['--repo', repo, 'token', 'add', 'bench', '--role', 'read', '--json']).toString()).token;
const remote = ['--repo', url, '--token', token, '--key-file', key, '--no-cache'];
const wire = [];
try {
  for (const c of cases) {
    const secs = [];
    const cpus = [];
    let j;
    for (let r = 0; r < runs; r++) {
      const { seconds, cpu, out } = timedStrata([...remote, ...c.args, '--json']);
      j = JSON.parse(out.toString());
      secs.push(seconds);
      cpus.push(cpu);
    }
    wire.push({ name: c.name, seconds: median(secs), cpu: median(cpus), fetched: j.fetched, index: j.indexFetched ?? 0, received: j.bytesReceived, sent: j.bytesSent });
    log(`served ${c.name}: ${median(secs).toFixed(3)} s, fetched ${j.fetched}, received ${j.bytesReceived} (${(j.bytesReceived / j.fetched).toFixed(2)}x)`);
  }
} finally {
  serve.kill('SIGTERM');
}

// The mailbox grown at its end, backed up again: its index is reused up to the first changed block.
let grown;
if (only.has('mbox') && !reuse) {
  const more = [];
  for (let k = 0; k < 1000; k++) more.push(mboxMessage(messages++));
  fs.appendFileSync(mbox, more.join(''));
  const g = timed(() => JSON.parse(strata([...local, 'backup', src, '--json']).toString()));
  grown = { seconds: g.seconds, ...g.out.itemIndexes, size: fs.statSync(mbox).size };
  log(`after 1,000 messages appended: backup ${g.seconds.toFixed(1)} s, item indexes ${JSON.stringify(g.out.itemIndexes ?? null)}`);
}

const mib = (n) => (n / 1024 / 1024).toFixed(2);
console.log(`\nDatasets of ${mib(size)} MiB (the disk image ${mib(diskSize)} MiB); medians of ${runs} runs, each a fresh process. First backup: ${backupSeconds.toFixed(1)} s.\n`);
console.log('| item | strata item / sql | CPU | fetched | of which index | of the file | dump whole file + extract | ratio |');
console.log('| --- | --- | --- | --- | --- | --- | --- | --- |');
for (const r of results) {
  const dump = r.dump === undefined ? '- | -' : `${r.dump.toFixed(2)} s | ${(r.dump / r.item).toFixed(1)}x`;
  console.log(`| ${r.name} | ${r.item.toFixed(3)} s | ${r.cpu.toFixed(3)} s | ${mib(r.fetched)} MiB | ${r.index ? `${mib(r.index)} MiB` : '-'} | ${((100 * r.fetched) / r.size).toFixed(3)}% | ${dump} |`);
}
console.log('\nThrough `strata serve`, no client cache:\n');
console.log('| item | time | CPU | fetched | received | received / fetched |');
console.log('| --- | --- | --- | --- | --- | --- |');
for (const w of wire) console.log(`| ${w.name} | ${w.seconds.toFixed(3)} s | ${w.cpu.toFixed(3)} s | ${mib(w.fetched)} MiB | ${mib(w.received)} MiB | ${(w.received / w.fetched).toFixed(2)} |`);
if (grown) console.log(`\nThe mailbox grown by 1,000 messages (${mib(grown.size)} MiB) and backed up again: ${grown.seconds.toFixed(1)} s; ${mib(grown.bytesScanned ?? 0)} MiB scanned for its item index.`);
