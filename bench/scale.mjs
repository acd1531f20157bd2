#!/usr/bin/env node
// npm run bench:scale -- [--blocks 10000000] [--snapshots 1000] [--entries 100000] [--dir .bench-scale]
//
// A catalog at scale: millions of blocks and a thousand snapshots (synthetic
// rows beside real backups), then the operations a user waits for, timed as
// whole processes with --key-file: a backup of an unchanged tree, `ls` of a
// directory with 100k entries, and a 4 KiB range read.
import { execFileSync, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import Database from 'better-sqlite3';
import { Keyring } from '../dist/crypto/keyring.js';
import { metaAad } from '../dist/engine/snapshot.js';
import { arg, log, ROOT, STRATA } from './args.mjs';

const blocks = Number(arg('blocks', '10000000'));
const snapshots = Number(arg('snapshots', '1000'));
const entries = Number(arg('entries', '100000'));
const dir = path.resolve(arg('dir', path.join(ROOT, '.bench-scale')));

fs.rmSync(dir, { recursive: true, force: true });
fs.mkdirSync(dir, { recursive: true });
const repo = path.join(dir, 'repo');
const key = path.join(dir, 'key.json');
const env = { ...process.env, STRATA_PASSWORD: 'scale', STRATA_REPO: repo };
const strata = (args) => execFileSync('node', [STRATA, ...args], { env, maxBuffer: 1024 ** 3 });

function timed(args) {
  const out = path.join(dir, 'time.txt');
  const r = spawnSync('/usr/bin/time', ['-f', '%e %M', '-o', out, 'node', STRATA, ...args, '--key-file', key], { env, stdio: ['ignore', 'ignore', 'pipe'], maxBuffer: 1024 ** 3 });
  if (r.status !== 0) throw new Error(`${args.join(' ')} failed: ${r.stderr}`);
  const [wall, rss] = fs.readFileSync(out, 'utf8').trim().split(/\s+/).map(Number);
  return { seconds: wall, rssMB: Math.round(rss / 1024) };
}

// Real data: a tree with one big directory and a file to read from.
const src = path.join(dir, 'src');
const big = path.join(src, 'big');
fs.mkdirSync(big, { recursive: true });
log(`making a directory of ${entries} files`);
for (let i = 0; i < entries; i++) fs.writeFileSync(path.join(big, `f${String(i).padStart(6, '0')}`), String(i));
fs.writeFileSync(path.join(src, 'image'), randomBytes(64 * 1024 * 1024));
strata(['init', '--scrypt-n', '1024', '-q']);
strata(['key', 'export', key]);
log('first backup');
const first = timed(['backup', src, '-q', '--time', '2020-01-01T00:00:00Z']);

// Synthetic history: blocks and snapshots the real ones must be found among.
log(`adding ${blocks} blocks and ${snapshots} snapshots to the catalog`);
const db = new Database(path.join(repo, 'catalog.db'));
db.pragma('journal_mode = WAL');
const pack = Number(db.prepare("INSERT INTO packs(name, size) VALUES ('0'||hex(randomblob(31)), 16777216)").run().lastInsertRowid);
const insertBlock = db.prepare('INSERT OR IGNORE INTO blocks(id, pack, offset, length, size, kind) VALUES (?, ?, 0, 65536, 65536, 0)');
const batch = 100_000;
for (let done = 0; done < blocks; done += batch) {
  const ids = randomBytes(32 * Math.min(batch, blocks - done));
  db.transaction(() => {
    for (let i = 0; i < ids.length; i += 32) insertBlock.run(ids.subarray(i, i + 32), pack);
  })();
  if ((done / batch) % 10 === 0) log(`  ${done + batch} blocks`);
}
const real = db.prepare('SELECT * FROM snapshots WHERE committed = 1').get();
const keyring = new Keyring(Buffer.from(JSON.parse(fs.readFileSync(key, 'utf8')).key, 'base64'));
const insertSnap = db.prepare(
  'INSERT INTO snapshots(id, time, lineage, meta, root, record, parent, committed, pid, lease, blobs_known) VALUES (?, ?, ?, ?, ?, ?, NULL, 1, NULL, NULL, 1)',
);
db.transaction(() => {
  for (let i = 0; i < snapshots - 1; i++) {
    // Other hosts' snapshots: distinct lineages, older times, the real snapshot's trees.
    const id = randomBytes(32).toString('hex');
    const meta = keyring.sealJson({ host: `host-${i}`, tags: [], paths: [src] }, metaAad(id));
    insertSnap.run(id, Date.UTC(2019, 0, 1) + i * 60_000, randomBytes(32), meta, real.root, real.record);
  }
})();
db.close();

log('measuring');
const unchanged = timed(['backup', src, '-q']);
const ls = timed(['ls', big]);
const size = fs.statSync(path.join(src, 'image')).size;
const mid = Math.floor(size / 2 / 4096) * 4096;
const range = timed(['cat', path.join(src, 'image'), '--range', `${mid}-${mid + 4095}`]);
const report = { blocks, snapshots, entries, firstBackup: first, unchangedBackup: unchanged, lsBigDirectory: ls, rangeRead: range };
process.stdout.write(JSON.stringify(report, null, 2) + '\n');
if (!process.argv.includes('--keep')) fs.rmSync(dir, { recursive: true, force: true });
