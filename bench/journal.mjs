#!/usr/bin/env node
// npm run bench:journal -- [--records 300] [--runs 7] [--endpoint http://127.0.0.1:7480] [--json]
//
// What a server's follow of a bucket's catalog journal costs when nothing
// is new (before each request that names snapshots), on an S3 gateway (a
// Ceph RGW from scripts/ceph-rgw-up.sh, credentials STRATAKEY / STRATASECRET
// unless AWS_ACCESS_KEY_ID says otherwise), with a journal of --records
// entries:
// - before: entries named by pack and snapshot (p.PACK, c.SNAPSHOT), found
//   by a listing of the whole journal each time (what a follow did then);
// - after: the numbered log (l.N, newest first by name), found by a listing
//   that stops at the newest record applied.
// Requests and bytes received per idle follow, and its median time.
import { randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Catalog } from '../dist/catalog/catalog.js';
import { CatalogJournal } from '../dist/catalog/journal.js';
import { PACK_MAGIC } from '../dist/catalog/packs.js';
import { LocalService } from '../dist/catalog/service.js';
import { S3Storage } from '../dist/storage/s3.js';
import { arg, flag, log } from './args.mjs';

const opts = {
  records: Number(arg('records', '300')),
  runs: Number(arg('runs', '7')),
  endpoint: arg('endpoint', process.env.AWS_ENDPOINT_URL_S3 ?? 'http://127.0.0.1:7480'),
  json: flag('json'),
};
delete process.env.NODE_EXTRA_CA_CERTS;
const credentials = { accessKeyId: process.env.AWS_ACCESS_KEY_ID ?? 'STRATAKEY', secretAccessKey: process.env.AWS_SECRET_ACCESS_KEY ?? 'STRATASECRET' };
const s3 = new S3Storage({ bucket: `strata-bench-journal-${randomBytes(4).toString('hex')}`, prefix: 'repo/' }, { endpoint: opts.endpoint, region: 'us-east-1', credentials });
await s3.createBucket();

const hexOf = () => randomBytes(32).toString('hex');
const entry = () => [{ id: randomBytes(32), kind: 'data', offset: PACK_MAGIC.length, length: 100, size: 90 }];
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

/** Requests, bytes received and milliseconds of `run`, `opts.runs` times: medians. */
async function measure(run, runs = opts.runs) {
  const requests = [];
  const bytes = [];
  const ms = [];
  for (let i = 0; i < runs; i++) {
    const r0 = Object.values(s3.counters.requests).reduce((a, b) => a + b, 0);
    const b0 = s3.counters.bytesReceived;
    const t0 = performance.now();
    await run();
    ms.push(performance.now() - t0);
    requests.push(Object.values(s3.counters.requests).reduce((a, b) => a + b, 0) - r0);
    bytes.push(s3.counters.bytesReceived - b0);
  }
  return { requests: median(requests), bytes: median(bytes), ms: +median(ms).toFixed(1) };
}

log(`writing ${opts.records} entries of each kind of journal to ${s3.location}`);
// Before: the journal as it was, one object per pack named by the pack (a commit's c.ID sorts with them).
const old = s3.journal;
for (let i = 0; i < opts.records; i++) await old.create(`p.${hexOf()}`, Buffer.from(JSON.stringify({ entries: [[hexOf(), 'data', 8, 100, 90]] })));
const before = await measure(async () => {
  for await (const _ of old.names()) void _;
});

// After: the numbered log, followed into a catalog as a server does.
const writer = new CatalogJournal(s3.journal);
for (let i = 0; i < opts.records; i++) await writer.recordPack(hexOf(), PACK_MAGIC.length + 100, entry(), false);
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'strata-bench-journal-'));
const follower = new LocalService(new Catalog(path.join(dir, 'catalog.db')), s3, true, undefined, new CatalogJournal(s3.journal));
const cold = await measure(async () => void (await follower.followJournal()), 1);
const after = await measure(async () => void (await follower.followJournal()));
const one = await measure(async () => {
  await writer.recordPack(hexOf(), PACK_MAGIC.length + 100, entry(), false);
  await follower.followJournal();
});
await follower.close();
fs.rmSync(dir, { recursive: true, force: true });

const out = { records: opts.records, runs: opts.runs, idleBefore: before, idleAfter: after, firstFollow: cold, appendAndFollowOne: one };
if (opts.json) console.log(JSON.stringify(out, null, 2));
else {
  console.log(`journal of ${opts.records} entries; medians of ${opts.runs} runs`);
  console.log(`idle follow, before (listing of the whole journal): ${before.requests} requests, ${before.bytes} bytes, ${before.ms} ms`);
  console.log(`idle follow, after (listing down to the newest applied): ${after.requests} requests, ${after.bytes} bytes, ${after.ms} ms`);
  console.log(`first follow (every record read): ${cold.requests} requests, ${cold.bytes} bytes, ${cold.ms} ms`);
  console.log(`one record appended, then a follow: ${one.requests} requests, ${one.bytes} bytes, ${one.ms} ms`);
}
