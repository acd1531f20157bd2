/**
 * S3 repositories against a real Ceph RGW (scripts/ceph-rgw-up.sh; .ci/run
 * starts it): the Storage contract, what the S3 driver adds (create-only
 * puts, multipart, paging, retries), its faults, and strata end to end on a
 * bucket. Run with `npm run test:s3`; skipped, saying why, when no gateway
 * answers.
 */
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { Catalog } from '../src/catalog/catalog.js';
import { CatalogJournal, logName, logSeq } from '../src/catalog/journal.js';
import { PACK_MAGIC } from '../src/catalog/packs.js';
import { LocalService } from '../src/catalog/service.js';
import { listPacks, packDrift, SharedLeases } from '../src/catalog/shared-lease.js';
import { refreshCatalog } from '../src/engine/rebuild.js';
import { Repository } from '../src/repo/repository.js';
import { CoalescingStorage } from '../src/storage/coalesce.js';
import { locate } from '../src/storage/location.js';
import { RetryingStorage } from '../src/storage/retry.js';
import { S3Storage } from '../src/storage/s3.js';
import { cliEnv, readWhole, Rng, strata, strataAsync, tempDir } from './helpers.js';
import { bucketName, CEPH_DIR, ENDPOINT, freshStore, gatewayProblem, OPTIONS, s3Env } from './s3-helpers.js';
import { client, serve, type Server } from './server-helpers.js';
import { hex, storageContract } from './storage-contract.js';

const problem = await gatewayProblem();
if (problem) console.warn(`S3 suite skipped: ${problem}`);
const suite = problem ? describe.skip : describe;

if (!problem) {
  storageContract('S3Storage on Ceph RGW, through RetryingStorage', async () => new RetryingStorage(await freshStore('contract')));
  // Small parts and pages, so that the contract's 9 MB object goes up in parts and listings take several pages.
  storageContract('S3Storage on Ceph RGW, multipart from 5 MiB, 2 keys a page', async () =>
    freshStore('contract-mp', { multipartThreshold: 5 * 1024 * 1024, partSize: 5 * 1024 * 1024, pageSize: 2 }),
  );
}

suite('S3Storage on Ceph RGW', () => {
  const rng = new Rng(20);
  let st: S3Storage;
  beforeAll(async () => {
    st = await freshStore('driver', { multipartThreshold: 5 * 1024 * 1024, partSize: 5 * 1024 * 1024 });
  });
  afterAll(() => st.close());

  it('create-only puts: of two different writes of one name at once, exactly one wins and the other is a conflict', async () => {
    for (let round = 0; round < 5; round++) {
      const h = { kind: 'pack' as const, name: hex(`race ${round}`) };
      const a = rng.bytes(300_000);
      const b = rng.bytes(300_000);
      const results = await Promise.allSettled([st.put(h, a), st.put(h, b)]);
      expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
      const lost = results.find((r) => r.status === 'rejected') as PromiseRejectedResult;
      expect(lost.reason).toMatchObject({ code: 'conflict' });
      const kept = await st.get(h);
      expect(kept.equals(results[0]!.status === 'fulfilled' ? a : b)).toBe(true);
    }
  });

  it('a large put goes up in parts, completed create-only: a second one of other bytes is a conflict', async () => {
    const h = { kind: 'pack' as const, name: hex('multipart') };
    const bytes = rng.bytes(12 * 1024 * 1024);
    const before = st.counters.requests['PUT part'] ?? 0;
    await st.put(h, [bytes.subarray(0, 1000), bytes.subarray(1000)]);
    expect((st.counters.requests['PUT part'] ?? 0) - before).toBe(3);
    expect((await st.get(h)).equals(bytes)).toBe(true);
    await st.put(h, bytes);
    const other = Buffer.from(bytes);
    other.writeUInt8(other.readUInt8(7_000_000) ^ 1, 7_000_000);
    await expect(st.put(h, other)).rejects.toMatchObject({ code: 'conflict' });
    expect((await st.get(h)).equals(bytes)).toBe(true);
  });

  it('putStream of a large object holds a few parts at a time, and a source failing half way leaves no object and no upload', async () => {
    const h = { kind: 'pack' as const, name: hex('stream-mp') };
    const total = 23 * 1024 * 1024;
    const chunk = rng.bytes(1024 * 1024);
    async function* source(fail: boolean) {
      for (let sent = 0; sent < total; sent += chunk.length) {
        if (fail && sent > 12 * 1024 * 1024) throw new Error('the client went away');
        yield chunk;
      }
    }
    await expect(st.putStream(h, source(true), total)).rejects.toThrow(/went away/);
    expect(await st.exists(h)).toBe(false);
    expect(await st.sweepTemporary(0)).toBe(0);
    expect(await st.putStream(h, source(false), total)).toBe('created');
    const { size } = await st.stat(h);
    expect(size).toBe(total);
    expect((await st.read(h, 22 * 1024 * 1024, 1024 * 1024)).equals(chunk)).toBe(true);
    expect(await st.putStream(h, source(false), total)).toBe('identical');
  });

  it('sweepTemporary aborts an interrupted multipart upload and counts its parts', async () => {
    const key = 'repo/packs/aa/' + hex('abandoned');
    const raw = st as unknown as { exchange(m: string, k: string, o: object): Promise<{ status: number; body: Buffer }> };
    const started = await raw.exchange('POST', key, { query: { uploads: '' } });
    const uploadId = /<UploadId>([^<]+)</.exec(started.body.toString())![1]!;
    const part = await raw.exchange('PUT', key, { query: { partNumber: '1', uploadId }, body: [rng.bytes(6 * 1024 * 1024)] });
    expect(part.status).toBe(200);
    expect(await st.sweepTemporary(3_600_000)).toBe(0);
    expect(await st.sweepTemporary(0)).toBe(6 * 1024 * 1024);
    expect(await st.sweepTemporary(0)).toBe(0);
  });
});

suite('S3: a gateway that ignores byte ranges', () => {
  it('read and stream cut the range from the whole object it sends; past the end is still short_read', async () => {
    const owned = await freshStore('noranges');
    const h = { kind: 'pack' as const, name: hex('noranges') };
    const bytes = new Rng(5).bytes(3 * 1024 * 1024 + 17);
    await owned.put(h, bytes);
    const proxy = await faultyProxy(() => 'no-ranges');
    const st = new S3Storage(owned.where, { ...OPTIONS, endpoint: proxy.url });
    try {
      expect((await st.read(h, 1_000_000, 5000)).equals(bytes.subarray(1_000_000, 1_005_000))).toBe(true);
      expect((await st.read(h, 0, 10)).equals(bytes.subarray(0, 10))).toBe(true);
      await expect(st.read(h, bytes.length - 5, 10)).rejects.toMatchObject({ code: 'short_read' });
      const parts: Buffer[] = [];
      for await (const p of st.stream(h, 2_000_000, 2_500_000)) parts.push(p);
      expect(Buffer.concat(parts).equals(bytes.subarray(2_000_000, 2_500_001))).toBe(true);
      await expect((async () => {
        for await (const _ of st.stream(h, 10, bytes.length)) void _;
      })()).rejects.toMatchObject({ code: 'short_read' });
    } finally {
      await st.close();
      await owned.close();
      proxy.close();
    }
  });
});

suite('S3: connections to a plain-http endpoint', () => {
  it('a small answer (a short range, a listing, a small object) comes over a connection of its own; large reads and HEADs keep to the shared ones', async () => {
    const owned = await freshStore('conns');
    const h = { kind: 'pack' as const, name: hex('conns') };
    const bytes = new Rng(8).bytes(3 * 1024 * 1024);
    await owned.put(h, bytes);
    const key = { kind: 'key' as const, name: 'k1' };
    await owned.put(key, Buffer.from('a small object'));
    const proxy = await connectionCounter();
    const st = new S3Storage(owned.where, { ...OPTIONS, endpoint: proxy.url });
    try {
      // Each of these would otherwise wait on a reused connection for Ceph's held-back body (see s3.ts).
      for (let i = 0; i < 4; i++) expect((await st.read(h, i * 10_000, 4096)).equals(bytes.subarray(i * 10_000, i * 10_000 + 4096))).toBe(true);
      expect(proxy.connections).toBe(4);
      for (let i = 0; i < 3; i++) expect(await st.get(key)).toEqual(Buffer.from('a small object'));
      for (let i = 0; i < 2; i++) {
        const names: string[] = [];
        for await (const n of st.list('pack')) names.push(n);
        expect(names).toEqual([h.name]);
      }
      expect(proxy.connections).toBe(4 + 3 + 2);
      for (let i = 0; i < 4; i++) expect((await st.read(h, i * 500_000, 256 * 1024)).equals(bytes.subarray(i * 500_000, i * 500_000 + 256 * 1024))).toBe(true);
      // HEADs too, each waited out so that the next request finds its connection free.
      for (let i = 0; i < 3; i++) expect((await st.stat(h)).size).toBe(bytes.length);
      const parts: Buffer[] = [];
      for await (const p of st.stream(h, 100, 1_000_099)) parts.push(p);
      expect(Buffer.concat(parts).equals(bytes.subarray(100, 1_000_100))).toBe(true);
      expect(proxy.connections).toBe(4 + 3 + 2 + 1);
    } finally {
      await st.close();
      await owned.close();
      proxy.close();
    }
  });
});

/** A TCP proxy in front of the gateway that counts the connections made to it. */
async function connectionCounter(): Promise<{ url: string; connections: number; close(): void }> {
  const target = new URL(OPTIONS.endpoint!);
  const state = { connections: 0 };
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    state.connections++;
    const up = net.connect(Number(target.port), target.hostname);
    for (const s of [client, up]) {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
      s.on('error', () => {
        client.destroy();
        up.destroy();
      });
    }
    client.pipe(up).pipe(client);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`,
    get connections() {
      return state.connections;
    },
    close: () => {
      for (const s of sockets) s.destroy();
      server.close();
    },
  };
}

suite('S3 faults: clear errors with the exit codes of the error table', () => {
  it('wrong credentials (12), a missing bucket (10), another user\'s bucket (access denied, 1)', async () => {
    const owned = await freshStore('faults');
    const config = { kind: 'config' as const, name: 'config' };
    await owned.put(config, Buffer.from('{}'));
    const wrong = new S3Storage(owned.where, { ...OPTIONS, credentials: { accessKeyId: 'STRATAKEY', secretAccessKey: 'not the secret' } });
    await expect(wrong.get(config)).rejects.toMatchObject({ code: 'unauthorized', exitCode: 12, message: expect.stringMatching(/refused the S3 credentials.*SignatureDoesNotMatch/) });
    const unknown = new S3Storage(owned.where, { ...OPTIONS, credentials: { accessKeyId: 'NOSUCHKEY', secretAccessKey: 'x' } });
    await expect(unknown.get(config)).rejects.toMatchObject({ code: 'unauthorized', exitCode: 12, message: expect.stringMatching(/InvalidAccessKeyId/) });
    const missing = new S3Storage({ bucket: bucketName('missing'), prefix: '' }, OPTIONS);
    await expect(missing.get(config)).rejects.toMatchObject({ code: 'no_repository', exitCode: 10, message: expect.stringMatching(/no bucket strata-missing-.* \(strata init creates it\)/) });
    expect(await missing.bucketExists()).toBe(false);
    const other = new S3Storage(owned.where, { ...OPTIONS, credentials: { accessKeyId: 'STRATAOTHER', secretAccessKey: 'STRATAOTHERSECRET' } });
    await expect(other.get(config)).rejects.toMatchObject({ code: 'forbidden', exitCode: 1, message: expect.stringMatching(/does not allow GET .*AccessDenied/) });
    await expect(other.put({ kind: 'pack', name: hex('x') }, Buffer.from('x'))).rejects.toMatchObject({ code: 'forbidden' });
    await expect(other.createBucket()).rejects.toMatchObject({ code: 'forbidden', message: expect.stringMatching(/exists and these credentials may not use it/) });
    for (const s of [owned, wrong, unknown, missing, other]) await s.close();
  });
});

/**
 * A proxy in front of the gateway that answers some requests itself, as an
 * overloaded or failing store does: 503 SlowDown, or silence.
 */
async function faultyProxy(fault: (n: number) => 'slowdown' | 'silence' | 'no-ranges' | undefined): Promise<{ url: string; close(): void; requests: number }> {
  const target = new URL(OPTIONS.endpoint!);
  const state = { requests: 0 };
  const server = http.createServer((req, res) => {
    const n = ++state.requests;
    const f = fault(n);
    if (f === 'slowdown') {
      req.resume();
      res.writeHead(503, { 'Content-Type': 'application/xml' });
      res.end('<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>');
      return;
    }
    if (f === 'silence') {
      req.resume();
      return;
    }
    // A gateway that ignores byte ranges: Range is not signed, so it can be dropped on the way.
    const headers = { ...req.headers };
    if (f === 'no-ranges') delete headers.range;
    const up = http.request({ hostname: target.hostname, port: target.port, method: req.method, path: req.url, headers }, (r) => {
      res.writeHead(r.statusCode ?? 502, r.headers);
      r.pipe(res);
    });
    up.on('error', () => res.destroy());
    req.pipe(up);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  return {
    // The signature names the host it was made for: the proxy passes the Host header on.
    url: `http://127.0.0.1:${port}`,
    close: () => server.close(),
    get requests() {
      return state.requests;
    },
  };
}

suite('S3: retries through RetryingStorage', () => {
  it('503 SlowDown and silent requests are tried again, with backoff, until they pass', async () => {
    const bucket = bucketName('retry');
    await new S3Storage({ bucket, prefix: '' }, OPTIONS).createBucket();
    const proxy = await faultyProxy((n) => (n % 3 === 0 ? 'slowdown' : n % 7 === 0 ? 'silence' : undefined));
    const bare = new S3Storage({ bucket, prefix: '' }, { ...OPTIONS, endpoint: proxy.url, timeoutMs: 500 });
    const st = new RetryingStorage(bare, { attempts: 5, delayMs: 10 });
    try {
      const rng = new Rng(3);
      const objects = Array.from({ length: 12 }, (_, i) => ({ h: { kind: 'pack' as const, name: hex(`retry ${i}`) }, bytes: rng.bytes(10_000) }));
      for (const o of objects) await st.put(o.h, o.bytes);
      for (const o of objects) expect((await st.read(o.h, 100, 1000)).equals(o.bytes.subarray(100, 1100))).toBe(true);
      const names: string[] = [];
      for await (const n of st.list('pack')) names.push(n);
      expect(names.sort()).toEqual(objects.map((o) => o.h.name).sort());
      expect(st.retried).toBeGreaterThan(5);
      // Without the wrapper, the same store fails.
      const failures = await Promise.all(objects.map((o) => bare.get(o.h).then(() => 0, (e: { code?: string }) => (expect(e.code).toBe('io'), 1))));
      expect(failures.reduce((a: number, b: number) => a + b, 0)).toBeGreaterThan(0);
    } finally {
      await st.close();
      proxy.close();
    }
  });
});

/** A repository on a new bucket through the CLI, with a catalog cache of its own (one "client"). */
function cliClient(url: string, cacheDir = tempDir('strata-s3-cache-'), extra: Record<string, string | undefined> = {}) {
  return { env: cliEnv(url, { ...s3Env(), STRATA_CACHE_DIR: cacheDir, ...extra }), cacheDir };
}

const snapshotIds = (env: NodeJS.ProcessEnv) => (JSON.parse(strata(['snapshots', '--json'], env).stdout) as { id: string }[]).map((s) => s.id);

/**
 * The first offset from `from` on at which `length` bytes of `file` lie in
 * one block of its version at `at`: a range across two blocks may take a GET
 * each (blocks sealed side by side need not be packed so), and where the
 * keyed chunker cuts changes with every repository.
 */
function inOneBlock(env: NodeJS.ProcessEnv, file: string, at: string, from: number, length = 4096): number {
  const toc = JSON.parse(strata(['toc', '--json', file, '--at', at], env).stdout) as { start: number; end: number; kind: string }[];
  for (const off of [from, ...toc.map((e) => e.start).filter((o) => o > from)]) {
    if (toc.some((e) => e.kind === 'data' && e.start <= off && e.end >= off + length - 1)) return off;
  }
  throw new Error(`no ${length} bytes of ${file} in one block from ${from}`);
}

/** How many packs the bucket holds (one listing, quick enough to watch a backup with). */
async function packCount(url: string): Promise<number> {
  const st = new S3Storage(locate(url) as { bucket: string; prefix: string }, OPTIONS);
  let n = 0;
  for await (const _ of st.list('pack')) n++;
  await st.close();
  return n;
}

async function packSizes(url: string): Promise<Map<string, number>> {
  const where = locate(url) as { bucket: string; prefix: string };
  const st = new S3Storage(where, OPTIONS);
  const out = new Map<string, number>();
  for await (const name of st.list('pack')) out.set(name, (await st.stat({ kind: 'pack', name })).size);
  await st.close();
  return out;
}

suite('strata on S3, end to end', () => {
  const rng = new Rng(2020);
  const src = tempDir('strata-s3-src-');
  const big = path.join(src, 'big.bin');
  const data = rng.bytes(3 * 1024 * 1024);
  const url = `s3://${bucketName('e2e')}/backups/host1`;
  const a = cliClient(url);

  beforeAll(() => {
    fs.writeFileSync(big, data);
    fs.mkdirSync(path.join(src, 'd'));
    fs.writeFileSync(path.join(src, 'd', 'small.txt'), 'version one\n');
  });

  it('init creates the missing bucket; a second init finds the repository there', () => {
    const r = strata(['init', '--scrypt-n', '1024'], a.env);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(new RegExp(`created strata repository [0-9a-f]{8} at ${url}/`));
    const again = strata(['init', '--scrypt-n', '1024'], a.env);
    expect(again.status).toBe(1);
    expect(again.stderr).toMatch(/a repository already exists at s3:\/\//);
  });

  it('backup, an incremental that uploads only what changed, cat --range, restore --at, check --read-data', async () => {
    expect(strata(['backup', src], a.env).status).toBe(0);
    const first = await packSizes(url);
    const changed = Buffer.from(data);
    rng.bytes(100).copy(changed, 1_000_000);
    fs.writeFileSync(big, changed);
    fs.writeFileSync(path.join(src, 'd', 'small.txt'), 'version two\n');
    const inc = strata(['backup', src, '--json'], a.env);
    expect(inc.status).toBe(0);
    // What went over the wire, as through a server: a block or two, the trees, TOCs and record.
    const sent = (JSON.parse(inc.stdout) as { bytesSent: number; bytesReceived: number }).bytesSent;
    expect(sent).toBeGreaterThan(1000);
    expect(sent).toBeLessThan(400 * 1024);
    const after = await packSizes(url);
    const added = [...after].filter(([n]) => !first.has(n)).reduce((s, [, size]) => s + size, 0);
    // One changed block or two of a 3 MiB file, the changed small file, trees, TOCs and the record.
    expect(added).toBeGreaterThan(0);
    expect(added).toBeLessThan(400 * 1024);
    const [s1, s2] = snapshotIds(a.env);
    expect(strata(['cat', big, '--range', '999990+30', '--at', s1!], a.env).raw.equals(data.subarray(999_990, 1_000_020))).toBe(true);
    expect(strata(['cat', big, '--range', '999990+30'], a.env).raw.equals(changed.subarray(999_990, 1_000_020))).toBe(true);
    expect(strata(['cat', path.join(src, 'd', 'small.txt'), '--at', s1!], a.env).stdout).toBe('version one\n');
    const target = tempDir();
    const r = strata(['restore', '--at', s1!, '--target', target], a.env);
    expect(r.status, r.stderr).toBe(0);
    expect(fs.readFileSync(path.join(target, big)).equals(data)).toBe(true);
    expect(fs.readFileSync(path.join(target, src, 'd', 'small.txt'), 'utf8')).toBe('version one\n');
    const check = strata(['check', '--read-data'], a.env);
    expect(check.status, check.stderr).toBe(0);
    expect(check.stdout).toMatch(/no errors found/);
    expect(s2).toBeDefined();
  });

  it('a long read asks for its blocks in long bursts, merged into few ranged GETs (7 here, where bursts of 32 blocks took 12)', async () => {
    const repo = (await refreshCatalog(await Repository.open(url, { password: async () => 'pw' }, {}, { cacheDir: a.cacheDir, s3: OPTIONS }))).repo;
    try {
      expect(repo.readAhead).toBe(256);
      const storage = repo.storage as CoalescingStorage;
      const [, s2] = snapshotIds(a.env);
      const before = { reads: storage.reads, requests: storage.requests };
      const bytes = await readWhole(repo, s2!, big);
      expect(bytes.equals(fs.readFileSync(big))).toBe(true);
      // About a hundred blocks of a 3 MiB file in two packs, and the trees and TOC its reads are checked against.
      expect(storage.reads - before.reads).toBeGreaterThan(50);
      expect(storage.requests - before.requests).toBeLessThanOrEqual(8);
    } finally {
      repo.close();
    }
  });

  it('the local catalog deleted: rebuilt from the bucket on the next command, which then reads as before', () => {
    const before = snapshotIds(a.env);
    fs.rmSync(path.join(a.cacheDir, 'catalogs'), { recursive: true });
    expect(snapshotIds(a.env)).toEqual(before);
    expect(strata(['cat', big, '--range', '0+16', '--at', before[0]!], a.env).raw.equals(data.subarray(0, 16))).toBe(true);
    expect(strata(['check', '--read-data'], a.env).status).toBe(0);
    // rebuild-catalog keeps the old cache beside the new one.
    const r = strata(['rebuild-catalog'], a.env);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/rebuilt: 2 snapshots/);
    expect(r.stdout).toMatch(/the old catalog is kept as .*catalog\.db\..*\.old/);
  });

  it('another client, with a catalog of its own, sees the first one\'s snapshots, and the first sees its', () => {
    const b = cliClient(url);
    expect(snapshotIds(b.env)).toEqual(snapshotIds(a.env));
    fs.writeFileSync(path.join(src, 'd', 'from-b.txt'), 'b was here\n');
    expect(strata(['backup', src], b.env).status).toBe(0);
    expect(snapshotIds(a.env)).toHaveLength(3);
    expect(strata(['cat', path.join(src, 'd', 'from-b.txt')], a.env).stdout).toBe('b was here\n');
    fs.rmSync(path.join(src, 'd', 'from-b.txt'));
  });

  it('a cache that knows every pack in the bucket is used as it is; new packs are added to it; packs gone make it rebuilt', async () => {
    const creds = { password: async () => 'pw' };
    // As the CLI opens a bucket's repository: its packs listed at once, the catalog opened meanwhile.
    const open = async () => refreshCatalog(await Repository.open(url, creds, { drift: true }, { cacheDir: a.cacheDir, s3: OPTIONS }));
    const first = await open();
    expect(first.rebuilt ?? first.added).toBeUndefined();
    expect(first.repo.cachedCatalog).toMatch(new RegExp(`^${a.cacheDir}/catalogs/[0-9a-f]{32}/catalog\\.db$`));
    first.repo.close();
    // Another client's backup adds packs: they are added to the cache, with its snapshot, and nothing else is read.
    const b = cliClient(url);
    expect(strata(['backup', path.join(src, 'd')], b.env).status).toBe(0);
    const behind = await open();
    expect(behind.rebuilt).toBeUndefined();
    expect(behind.added).toMatchObject({ snapshots: 1, damagedPacks: [], problems: [] });
    expect((await behind.repo.service.snapshots()).map((x) => x.id)).toEqual(snapshotIds(b.env));
    behind.repo.close();
    // Another client's tag: a new record, in force here too.
    const last = snapshotIds(b.env).at(-1)!;
    expect(strata(['tag', last, '--add', 'from-b'], b.env).status).toBe(0);
    const tagged = await open();
    expect(tagged.added).toMatchObject({ snapshots: 0, packs: 1, problems: [] });
    tagged.repo.close();
    const listed = JSON.parse(strata(['snapshots', '--json'], a.env).stdout) as { id: string; tags: string[] }[];
    expect(listed.find((x) => x.id === last)?.tags).toEqual(['from-b']);
    const same = await open();
    expect(same.rebuilt ?? same.added).toBeUndefined();
    // A listing made before the catalog is read misses a pack this machine adds meanwhile (a backup
    // here, into the same cache): that pack is in the bucket, so not taken for one another client removed.
    const early = await listPacks(same.repo.storage);
    same.repo.close();
    expect(strata(['backup', path.join(src, 'd')], a.env).status).toBe(0);
    const later = await Repository.open(url, creds, {}, { cacheDir: a.cacheDir, s3: OPTIONS });
    const drift = await packDrift(later.catalog, later.storage, Promise.resolve(early));
    expect(drift).toEqual({ added: [], removed: [] });
    expect(later.catalog.packNames().length).toBeGreaterThan(early.length);
    later.close();
    // Another client's prune removes packs: the cache is rebuilt from every pack.
    expect(strata(['forget', last, '--prune'], b.env).status).toBe(0);
    const pruned = await open();
    expect(pruned.rebuilt?.snapshots).toBe(snapshotIds(b.env).length);
    pruned.repo.close();
    expect(snapshotIds(a.env)).toEqual(snapshotIds(b.env));
    expect(strata(['check', '--read-data'], a.env).status).toBe(0);
  });

  it('forget and prune: the space goes, what is kept still reads, check is clean, and another client follows', async () => {
    const ids = snapshotIds(a.env);
    const before = await packSizes(url);
    const f = strata(['forget', ids[0]!, '--prune'], a.env);
    expect(f.status, f.stderr).toBe(0);
    expect(snapshotIds(a.env)).toEqual(ids.slice(1));
    const after = await packSizes(url);
    expect([...before.keys()].some((n) => !after.has(n))).toBe(true);
    expect(strata(['cat', big, '--range', '999990+30'], a.env).raw.equals(fs.readFileSync(big).subarray(999_990, 1_000_020))).toBe(true);
    expect(strata(['check', '--read-data'], a.env).status).toBe(0);
    const c = cliClient(url);
    expect(snapshotIds(c.env)).toEqual(ids.slice(1));
  });
});

suite('leases in the bucket: clients with catalogs of their own coordinate through conditional objects', () => {
  let st: S3Storage;
  beforeAll(async () => {
    st = await freshStore('leases');
  });
  afterAll(() => st.close());
  const body = (s: string) => Buffer.from(s);

  it('create only when absent; replace only the version named (Ceph wants If-Match without quotes)', async () => {
    const l = st.leases;
    const first = await l.create('x', body('one'));
    expect(first).toBeTruthy();
    expect(await l.create('x', body('two'))).toBeUndefined();
    const second = await l.replace('x', body('three'), first!);
    expect(second).toBeTruthy();
    expect(await l.replace('x', body('four'), first!)).toBeUndefined();
    expect((await l.read('x'))?.body.toString()).toBe('three');
    // A retried write whose first answer was lost finds its own bytes there.
    expect(await l.create('x', body('three'))).toBe(second);
    const names: string[] = [];
    for await (const n of l.names()) names.push(n);
    expect(names).toEqual(['x']);
    await l.remove('x');
    expect(await l.read('x')).toBeUndefined();
  });

  it('maintenance waits for (or refuses) a live backup anywhere; a backup refuses a live maintenance; expired leases are taken over', async () => {
    const a = new SharedLeases(st.leases, 50);
    const b = new SharedLeases(st.leases, 50);
    const backup = await a.acquireBackup();
    await expect(b.acquireMaintenance()).rejects.toMatchObject({ code: 'locked', exitCode: 11, message: expect.stringMatching(/a backup \(pid \d+ on this host\) started .* is running; use --lock-wait/) });
    const waited: string[] = [];
    setTimeout(() => void backup.release(), 1500);
    const m = await b.acquireMaintenance(10_000, (msg) => waited.push(msg));
    expect(waited).toEqual([expect.stringMatching(/^waiting for a backup/)]);
    await expect(a.acquireBackup()).rejects.toMatchObject({ code: 'locked', message: expect.stringMatching(/a maintenance .* is running; run the backup when it has finished/) });
    await expect(a.acquireMaintenance()).rejects.toMatchObject({ code: 'locked' });
    // Renewed while held: its expiry moves on.
    const before = JSON.parse((await st.leases.read('maintenance'))!.body.toString()).expires as number;
    await new Promise((r) => setTimeout(r, 200));
    expect(JSON.parse((await st.leases.read('maintenance'))!.body.toString()).expires).toBeGreaterThan(before);
    await m.release();
    expect(await st.leases.read('maintenance')).toBeUndefined();
    // A dead client's leases: expired, they block nobody; the maintenance lease is taken over and the backup's removed.
    const dead = { host: 'elsewhere', pid: 1, started: 0, expires: Date.now() - 1 };
    await st.leases.create('maintenance', Buffer.from(JSON.stringify({ kind: 'maintenance', id: 'dead', ...dead })));
    await st.leases.create('backup-dead', Buffer.from(JSON.stringify({ kind: 'backup', id: 'dead', ...dead })));
    const slow = new SharedLeases(st.leases, 60_000);
    const taken = await slow.acquireMaintenance();
    expect(await st.leases.read('backup-dead')).toBeUndefined();
    // A holder whose lease was taken over (it stopped renewing) finds out, and does not remove its successor's.
    const now = (await st.leases.read('maintenance'))!;
    expect(await st.leases.replace('maintenance', Buffer.from(JSON.stringify({ kind: 'maintenance', id: 'successor', ...dead, expires: Date.now() + 30_000 })), now.etag)).toBeTruthy();
    await taken.renew();
    expect(taken.lost).toBe(true);
    await taken.release();
    expect(JSON.parse((await st.leases.read('maintenance'))!.body.toString()).id).toBe('successor');
    await st.leases.remove('maintenance');
  });
});

suite('strata on S3: two clients, each with its own catalog', () => {
  const rng = new Rng(4242);
  const url = `s3://${bucketName('two')}/r`;
  const a = cliClient(url);
  const b = cliClient(url);
  const srcA = tempDir('strata-s3-a-');
  const srcB = tempDir('strata-s3-b-');

  beforeAll(() => {
    // Each has files of its own and a file in common (the same bytes), backed up at once.
    const common = rng.bytes(2 * 1024 * 1024);
    for (const [dir, own] of [[srcA, rng.bytes(3 * 1024 * 1024)], [srcB, rng.bytes(3 * 1024 * 1024)]] as const) {
      fs.writeFileSync(path.join(dir, 'own.bin'), own);
      fs.writeFileSync(path.join(dir, 'common.bin'), common);
    }
    expect(strata(['init', '--scrypt-n', '1024'], a.env).status).toBe(0);
  });

  const run = (args: string[], env: NodeJS.ProcessEnv) =>
    new Promise<{ code: number; stderr: string }>((resolve) => {
      const child = strataAsync(args, env);
      let stderr = '';
      child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
      child.on('exit', (code) => resolve({ code: code ?? -1, stderr }));
    });

  it('back up at once; each then reads both snapshots, and check is clean', async () => {
    const [ra, rb] = await Promise.all([run(['backup', srcA], a.env), run(['backup', srcB], b.env)]);
    expect(ra.code, ra.stderr).toBe(0);
    expect(rb.code, rb.stderr).toBe(0);
    for (const c of [a, b]) {
      expect(snapshotIds(c.env)).toHaveLength(2);
      expect(strata(['cat', path.join(srcB, 'own.bin'), '--range', '0+64'], c.env).raw.equals(fs.readFileSync(path.join(srcB, 'own.bin')).subarray(0, 64))).toBe(true);
      expect(strata(['cat', path.join(srcA, 'common.bin'), '--range', '1M+64'], c.env).raw.equals(fs.readFileSync(path.join(srcA, 'common.bin')).subarray(1 << 20, (1 << 20) + 64))).toBe(true);
    }
    const check = strata(['check', '--read-data'], b.env);
    expect(check.status, check.stdout + check.stderr).toBe(0);
  });

  it("prune waits for another client's backup (its lease in the bucket), or is refused with exit 11", async () => {
    const s3 = new S3Storage(locate(url) as { bucket: string; prefix: string }, OPTIONS);
    const lease = await new SharedLeases(s3.leases).acquireBackup();
    const refused = strata(['prune'], a.env);
    expect(refused.status).toBe(11);
    expect(refused.stderr).toMatch(/repository is locked: a backup \(pid \d+ on this host\) started .* is running; use --lock-wait to wait for it/);
    setTimeout(() => void lease.release(), 1500);
    const waited = await run(['prune', '--lock-wait', '20s'], a.env);
    expect(waited.code, waited.stderr).toBe(0);
    expect(waited.stderr).toMatch(/waiting for a backup/);
    await s3.close();
  });

  it('a command that read the bucket before another client changed it does not act on what it read: run again, it does', async () => {
    const creds = { password: async () => 'pw' };
    const open = async () => (await refreshCatalog(await Repository.open(url, creds, {}, { cacheDir: a.cacheDir, s3: OPTIONS }))).repo;
    // Another client backs up after this one read the bucket: maintenance now would take its packs for leftovers.
    const early = await open();
    fs.writeFileSync(path.join(srcB, 'new.bin'), rng.bytes(100_000));
    expect(strata(['backup', srcB], b.env).status).toBe(0);
    await expect(early.service.startMaintenance()).rejects.toMatchObject({ code: 'locked', message: expect.stringMatching(/another client backed up since this command read the repository/) });
    early.close();
    // Another client prunes after this one read the bucket: a backup now would reuse blocks that are gone.
    const before = await open();
    const ids = snapshotIds(b.env);
    const forgot = strata(['forget', ids[0]!, '--prune'], b.env);
    expect(forgot.status, forgot.stderr).toBe(0);
    await expect(before.service.startBackup(Buffer.alloc(32), Date.now(), 'auto')).rejects.toMatchObject({ code: 'locked', message: expect.stringMatching(/another client pruned the repository since this command read it/) });
    before.close();
    const again = await open();
    const { lease } = await again.service.startBackup(Buffer.alloc(32), Date.now(), 'auto');
    await again.service.endLease(lease);
    again.close();
    expect(strata(['check', '--read-data'], a.env).status).toBe(0);
  });

  it('a cache another process here is working on (a lease in it) is not swapped under it; once it is done, the next command brings it up to date', async () => {
    const creds = { password: async () => 'pw' };
    const open = async () => refreshCatalog(await Repository.open(url, creds, {}, { cacheDir: a.cacheDir, s3: OPTIONS }));
    const working = (await open()).repo;
    const { lease } = await working.service.startBackup(Buffer.alloc(32), Date.now(), 'auto');
    fs.writeFileSync(path.join(srcB, 'newer.bin'), rng.bytes(100_000));
    expect(strata(['backup', srcB], b.env).status).toBe(0);
    const beside = await open();
    expect(beside.added ?? beside.rebuilt).toBeUndefined();
    beside.repo.close();
    await working.service.endLease(lease);
    working.close();
    const after = await open();
    expect(after.added?.snapshots).toBe(1);
    after.repo.close();
  });
});

suite('strata on S3: faults on the command line', () => {
  it('wrong credentials exit 12, no bucket exits 10, a bucket of another user exits 1, each saying why', async () => {
    const url = `s3://${bucketName('clifaults')}/r`;
    const a = cliClient(url);
    expect(strata(['init', '--scrypt-n', '1024'], a.env).status).toBe(0);
    const wrong = strata(['snapshots'], cliClient(url, undefined, { AWS_SECRET_ACCESS_KEY: 'wrong' }).env);
    expect(wrong.status).toBe(12);
    expect(wrong.stderr).toMatch(/refused the S3 credentials \(403 SignatureDoesNotMatch/);
    const missing = strata(['snapshots'], cliClient(`s3://${bucketName('nobucket')}/r`).env);
    expect(missing.status).toBe(10);
    expect(missing.stderr).toMatch(/no bucket strata-nobucket-\w+ at http:\/\/127\.0\.0\.1:\d+ \(strata init creates it\)/);
    const empty = strata(['snapshots'], cliClient(`s3://${locate(url).kind === 's3' ? (locate(url) as { bucket: string }).bucket : ''}/elsewhere`).env);
    expect(empty.status).toBe(10);
    expect(empty.stderr).toMatch(/no repository at s3:\/\/.*\/elsewhere\/ \(create one with "strata init"\)/);
    const other = cliClient(url, undefined, { AWS_ACCESS_KEY_ID: 'STRATAOTHER', AWS_SECRET_ACCESS_KEY: 'STRATAOTHERSECRET' });
    const denied = strata(['snapshots'], other.env);
    expect(denied.status).toBe(1);
    expect(denied.stderr).toMatch(/does not allow GET of s3:\/\/.*config with these credentials \(403 AccessDenied/);
    const init = strata(['init', '--scrypt-n', '1024'], other.env);
    expect(init.status).toBe(1);
    expect(init.stderr).toMatch(/exists and these credentials may not use it/);
    // --s3-endpoint wins over the environment's endpoint.
    const elsewhere = cliClient(url, a.cacheDir, { AWS_ENDPOINT_URL_S3: 'http://127.0.0.1:9' }).env;
    const refused = strata(['snapshots'], elsewhere);
    expect(refused.status).toBe(1);
    expect(refused.stderr).toMatch(/at http:\/\/127\.0\.0\.1:9: connection refused/);
    expect(strata(['snapshots', '--s3-endpoint', ENDPOINT], elsewhere).status).toBe(0);
    const none = strata(['snapshots'], cliClient(url, undefined, { AWS_ACCESS_KEY_ID: undefined, AWS_SECRET_ACCESS_KEY: undefined }).env);
    expect(none.status).toBe(12);
    expect(none.stderr).toMatch(/no S3 credentials: set AWS_ACCESS_KEY_ID/);
  });
});

/** The gateway's process, from the pid file ceph-rgw-up.sh's cluster writes; undefined when this suite did not start it. */
function gatewayPid(): number | undefined {
  try {
    return Number(fs.readFileSync(path.join(CEPH_DIR, 'run', 'client.rgw.pid'), 'utf8'));
  } catch {
    return undefined;
  }
}

const canRestart = !problem && gatewayPid() !== undefined && fs.existsSync(path.join(CEPH_DIR, 'ceph.conf'));
if (!problem && !canRestart) console.warn(`S3 gateway-restart test skipped: no cluster of scripts/ceph-rgw-up.sh in ${CEPH_DIR} (set STRATA_TEST_CEPH_DIR)`);

suite('strata on S3: a restore of large and small files, and of a damaged pack', () => {
  const rng = new Rng(4242);
  const src = tempDir('strata-s3-restore-');
  const url = `s3://${bucketName('restore')}/r`;
  const a = cliClient(url);
  const big = rng.bytes(24 * 1024 * 1024);
  const smalls = Array.from({ length: 40 }, (_, i) => rng.bytes(1000 + i * 3000));

  beforeAll(() => {
    fs.writeFileSync(path.join(src, 'big.bin'), big);
    fs.mkdirSync(path.join(src, 'small'));
    smalls.forEach((b, i) => fs.writeFileSync(path.join(src, 'small', `f${i}`), b));
    expect(strata(['init', '--scrypt-n', '1024'], a.env).status).toBe(0);
    const r = strata(['backup', src], a.env);
    expect(r.status, r.stderr).toBe(0);
  });

  it('byte-exact; a damaged pack fails the restore as an integrity error, naming the block', async () => {
    const target = tempDir();
    const r = strata(['restore', '--target', target], a.env);
    expect(r.status, r.stderr).toBe(0);
    expect(fs.readFileSync(path.join(target, src, 'big.bin')).equals(big)).toBe(true);
    smalls.forEach((b, i) => expect(fs.readFileSync(path.join(target, src, 'small', `f${i}`)).equals(b)).toBe(true));
    // One byte of the largest pack changed (the big file's blocks are there).
    const st = new S3Storage(locate(url) as { bucket: string; prefix: string }, OPTIONS);
    try {
      const [name] = [...(await packSizes(url))].sort((x, y) => y[1] - x[1])[0]!;
      const h = { kind: 'pack' as const, name };
      const bytes = await st.get(h);
      bytes[Math.floor(bytes.length / 2)]! ^= 0xff;
      await st.delete(h);
      await st.put(h, bytes);
    } finally {
      await st.close();
    }
    const damaged = strata(['restore', '--target', tempDir(), path.join(src, 'big.bin')], a.env);
    expect(damaged.status).toBe(1);
    expect(damaged.stderr).toMatch(/^strata: .*block [0-9a-f]{16}/m);
    expect(damaged.stderr).not.toMatch(/\n\s+at /);
  });
});

(canRestart ? describe : describe.skip)('strata on S3: the gateway killed mid-backup', () => {
  it('the backup retries through a short outage, fails cleanly in a long one; nothing half-written is taken for data; check is clean; the next backup completes', async () => {
    const rng = new Rng(77);
    const src = tempDir('strata-s3-kill-');
    const files = Array.from({ length: 8 }, (_, i) => ({ file: path.join(src, `f${i}.bin`), bytes: rng.bytes(5 * 1024 * 1024) }));
    for (const f of files) fs.writeFileSync(f.file, f.bytes);
    const url = `s3://${bucketName('kill')}/r`;
    const a = cliClient(url);
    expect(strata(['init', '--scrypt-n', '1024'], a.env).status).toBe(0);
    const startGateway = async () => {
      const restart = spawnSync('radosgw', ['-c', path.join(CEPH_DIR, 'ceph.conf'), '-n', 'client.rgw']);
      expect(restart.status, restart.stderr.toString()).toBe(0);
      for (let i = 0; i < 100 && (await gatewayProblem()); i++) await new Promise((r) => setTimeout(r, 100));
    };
    /** A backup during which the gateway dies once its first new pack is in the bucket; `downMs` later it starts again (undefined: once the backup ended). */
    const backupThroughOutage = async (downMs: number | undefined) => {
      // New bytes in every file, so the backup has several packs to upload after its first.
      for (const f of files) fs.writeFileSync(f.file, (f.bytes = rng.bytes(f.bytes.length)));
      const before = await packCount(url);
      const child = strataAsync(['backup', src], a.env);
      let stderr = '';
      child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
      const exited = new Promise<number>((resolve) => child.on('exit', (code) => resolve(code ?? -1)));
      for (let i = 0; i < 2000 && (await packCount(url)) === before; i++) await new Promise((r) => setTimeout(r, 5));
      process.kill(gatewayPid()!, 'SIGKILL');
      // The outage must come in the middle of the backup, or this test says nothing.
      expect(child.exitCode, 'the backup ended before the gateway was stopped').toBeNull();
      if (downMs !== undefined) {
        await new Promise((r) => setTimeout(r, downMs));
        await startGateway();
      }
      const code = await exited;
      if (downMs === undefined) await startGateway();
      return { code, stderr };
    };
    // A short outage: the backup gets through on its retries.
    const short = await backupThroughOutage(1500);
    expect(short.code, short.stderr).toBe(0);
    // One longer than the retries: the backup fails with a clear error, and leaves nothing taken for data.
    const long = await backupThroughOutage(undefined);
    expect(long.code).toBe(1);
    expect(long.stderr).toMatch(/^strata: .*at http:\/\/127\.0\.0\.1:7480: connection refused \(is the S3 endpoint running\?\)$/m);
    const check = strata(['check', '--read-data'], a.env);
    expect(check.status, check.stdout + check.stderr).toBe(0);
    const again = strata(['backup', src], a.env);
    expect(again.status, again.stderr).toBe(0);
    const target = tempDir();
    expect(strata(['restore', '--target', target], a.env).status).toBe(0);
    for (const f of files) expect(fs.readFileSync(path.join(target, f.file)).equals(f.bytes)).toBe(true);
    expect(strata(['check', '--read-data'], a.env).status).toBe(0);
  }, 120_000);
});

suite('two strata serve over one bucket', () => {
  const rng = new Rng(2021);
  const src = tempDir('strata-s3-serve-src-');
  const big = path.join(src, 'big.bin');
  const data = rng.bytes(2 * 1024 * 1024 + 12345);
  const url = `s3://${bucketName('serve')}/repo`;
  const direct = cliClient(url);
  // The servers' tokens: under one cache directory, which both are given (each keeps a catalog file of its own there).
  const serverCache = tempDir('strata-s3-servers-');
  const serverEnv = { ...s3Env(), STRATA_CACHE_DIR: serverCache };
  let A: Server;
  let B: Server;
  let tok: string;
  let admin: string;
  const via = (s: Server) => client(s.url, tok);
  const ids = (env: NodeJS.ProcessEnv) => (JSON.parse(strata(['snapshots', '--json'], env).stdout) as { id: string }[]).map((s) => s.id);

  beforeAll(async () => {
    fs.writeFileSync(big, data);
    fs.mkdirSync(path.join(src, 'd'));
    fs.writeFileSync(path.join(src, 'd', 'small.txt'), 'one\n');
    const init = strata(['init', '--scrypt-n', '1024'], direct.env);
    expect(init.status, init.stderr).toBe(0);
    const r = strata(['token', 'add', 'ci', '--role', 'append', '--json'], cliEnv(url, { ...serverEnv, STRATA_PASSWORD: undefined }));
    expect(r.status, r.stderr).toBe(0);
    tok = (JSON.parse(r.stdout) as { token: string }).token;
    const r2 = strata(['token', 'add', 'ops', '--role', 'admin', '--json'], cliEnv(url, { ...serverEnv, STRATA_PASSWORD: undefined }));
    admin = (JSON.parse(r2.stdout) as { token: string }).token;
    [A, B] = await Promise.all([serve(url, 0, serverEnv), serve(url, 0, serverEnv)]);
  });

  it('a backup through one server reads through the other at once, byte-exact; an incremental through the other reads through the first', () => {
    const first = strata(['backup', src], via(A));
    expect(first.status, first.stderr).toBe(0);
    const [s1] = ids(via(A));
    expect(ids(via(B))).toEqual([s1]);
    expect(strata(['cat', big], via(B)).raw.equals(data)).toBe(true);
    const target = tempDir();
    const restored = strata(['restore', '--at', s1!, '--target', target], via(B));
    expect(restored.status, restored.stderr).toBe(0);
    expect(fs.readFileSync(path.join(target, big)).equals(data)).toBe(true);
    expect(fs.readFileSync(path.join(target, src, 'd', 'small.txt'), 'utf8')).toBe('one\n');

    // Through B: an incremental on A's snapshot (its parent), sending only what changed.
    const changed = Buffer.from(data);
    rng.bytes(100).copy(changed, 1_000_000);
    fs.writeFileSync(big, changed);
    fs.writeFileSync(path.join(src, 'd', 'small.txt'), 'two\n');
    const inc = strata(['backup', src, '--json'], via(B));
    expect(inc.status, inc.stderr).toBe(0);
    expect((JSON.parse(inc.stdout) as { bytesSent: number }).bytesSent).toBeLessThan(400 * 1024);
    const both = ids(via(A));
    expect(both).toHaveLength(2);
    expect(ids(via(B))).toEqual(both);
    expect(strata(['cat', big], via(A)).raw.equals(changed)).toBe(true);
    expect(strata(['cat', big, '--at', s1!], via(A)).raw.equals(data)).toBe(true);
    expect(strata(['cat', path.join(src, 'd', 'small.txt')], via(A)).stdout).toBe('two\n');
    // A client of the bucket itself reads both (from the sealed packs, as ever).
    expect(ids(direct.env)).toEqual(both);
  });

  it('a client backing up to the bucket directly while both serve: its snapshot reads through each server, a restore through one goes on meanwhile, check is clean', async () => {
    fs.writeFileSync(path.join(src, 'd', 'direct.txt'), 'straight to the bucket\n');
    const target = tempDir();
    const [backup, restore] = await Promise.all([runAsync(['backup', src], direct.env), runAsync(['restore', '--target', target], via(A))]);
    expect(backup.code, backup.stderr).toBe(0);
    expect(restore.code, restore.stderr).toBe(0);
    expect(fs.readFileSync(path.join(target, big)).equals(fs.readFileSync(big))).toBe(true);
    const all = ids(direct.env);
    expect(all).toHaveLength(3);
    for (const s of [A, B]) {
      expect(ids(via(s))).toEqual(all);
      expect(strata(['cat', path.join(src, 'd', 'direct.txt')], via(s)).stdout).toBe('straight to the bucket\n');
    }
    const check = strata(['check', '--read-data'], direct.env);
    expect(check.status, check.stdout + check.stderr).toBe(0);
  });

  it('two backups at once, one through each server: each server then lists and reads both', async () => {
    const other = tempDir('strata-s3-serve-other-');
    const otherBytes = rng.bytes(700_000);
    fs.writeFileSync(path.join(other, 'other.bin'), otherBytes);
    fs.writeFileSync(path.join(src, 'd', 'small.txt'), 'three\n');
    const before = ids(direct.env).length;
    const [ra, rb] = await Promise.all([runAsync(['backup', src], via(A)), runAsync(['backup', other], via(B))]);
    expect(ra.code, ra.stderr).toBe(0);
    expect(rb.code, rb.stderr).toBe(0);
    const all = ids(via(A));
    expect(all).toHaveLength(before + 2);
    expect(ids(via(B))).toEqual(all);
    for (const s of [A, B]) {
      expect(strata(['cat', path.join(other, 'other.bin')], via(s)).raw.equals(otherBytes)).toBe(true);
      expect(strata(['cat', path.join(src, 'd', 'small.txt')], via(s)).stdout).toBe('three\n');
    }
  });

  it("a server's leases are the bucket's: a maintenance held there refuses a backup through a server, and a backup held there a prune through one (exit 11)", async () => {
    const s3 = new S3Storage(locate(url) as { bucket: string; prefix: string }, OPTIONS);
    const leases = new SharedLeases(s3.leases);
    const maintenance = await leases.acquireMaintenance();
    const refused = strata(['backup', src], via(B));
    expect(refused.status, refused.stderr).toBe(11);
    expect(refused.stderr).toMatch(/a maintenance .* is running/);
    await maintenance.release();
    const backup = await leases.acquireBackup();
    const pruned = strata(['prune'], client(A.url, admin));
    expect(pruned.status, pruned.stderr).toBe(11);
    expect(pruned.stderr).toMatch(/a backup \(pid \d+ on this host\) started .* is running/);
    await backup.release();
    await s3.close();
  });

  it('a damaged journal entry is left out, said in the log, and the rest still served', async () => {
    const s3 = new S3Storage(locate(url) as { bucket: string; prefix: string }, OPTIONS);
    // A record that is not JSON, and a commit that is not one, at the end of the log.
    const newest = await new CatalogJournal(s3.journal).newest();
    await s3.journal.create(logName(newest + 1), Buffer.from('{"kind": "pack", "entries": [ broken'));
    await s3.journal.create(logName(newest + 2), Buffer.from(JSON.stringify({ kind: 'commit', id: hex('no-such-snapshot'), begin: {} })));
    await s3.close();
    const all = ids(direct.env);
    expect(ids(via(A))).toEqual(all);
    expect(strata(['cat', big, '--range', '0+64'], via(A)).raw.equals(fs.readFileSync(big).subarray(0, 64))).toBe(true);
    expect(ids(via(A))).toEqual(all);
    // The server's log comes in while this process waits on the commands above: read once it has.
    await vi.waitFor(() => {
      // Said once, not at every request.
      expect(A.log().split(`journal: record ${newest + 1}: `)).toHaveLength(2);
      expect(A.log()).toMatch(new RegExp(`journal: record ${newest + 2}: id must be 64 hex digits`));
    });
  });

  it('a server started later fills its catalog from the bucket before it answers; stopped, it leaves no catalog behind', async () => {
    const C = await serve(url, 0, serverEnv);
    expect(ids(via(C))).toEqual(ids(direct.env));
    expect(strata(['cat', big, '--range', '1000000+100'], via(C)).raw.equals(fs.readFileSync(big).subarray(1_000_000, 1_000_100))).toBe(true);
    const [dir] = fs.readdirSync(path.join(serverCache, 'servers'));
    const catalogs = () => fs.readdirSync(path.join(serverCache, 'servers', dir!)).filter((f) => /^catalog-.*\.db$/.test(f));
    expect(catalogs()).toHaveLength(3);
    C.proc.kill('SIGTERM');
    expect(await C.exited).toBe(0);
    expect(catalogs()).toHaveLength(2);
  });

  it('a bucket without a repository: serve says so and exits', async () => {
    await expect(serve(`s3://${bucketName('none')}/x`, 0, serverEnv)).rejects.toThrow(/no repository in s3:\/\/.*strata init --repo/);
  });
});

suite('two strata serve over one bucket: checkpoints of the catalog journal, and its compaction', () => {
  const rng = new Rng(2026);
  const src = tempDir('strata-s3-compact-src-');
  const url = `s3://${bucketName('compact')}/repo`;
  const direct = cliClient(url);
  const serverCache = tempDir('strata-s3-compact-servers-');
  const serverEnv = { ...s3Env(), STRATA_CACHE_DIR: serverCache };
  let tok: string;
  const via = (s: Server) => client(s.url, tok);
  const ids = (env: NodeJS.ProcessEnv) => (JSON.parse(strata(['snapshots', '--json'], env).stdout) as { id: string }[]).map((s) => s.id);
  /** The file's content in each snapshot, by snapshot id. */
  const contents = new Map<string, Buffer>();
  const file = path.join(src, 'f.bin');
  const backup = (env: NodeJS.ProcessEnv) => {
    const bytes = rng.bytes(200_000);
    fs.writeFileSync(file, bytes);
    const r = strata(['backup', src, '--json'], env);
    expect(r.status, r.stderr).toBe(0);
    contents.set((JSON.parse(r.stdout) as { snapshot: string }).snapshot, bytes);
  };
  const journalNames = async () => {
    const s3 = new S3Storage(locate(url) as { bucket: string; prefix: string }, OPTIONS);
    const names: string[] = [];
    for await (const n of s3.journal.names()) names.push(n);
    await s3.close();
    return names;
  };
  /** Every snapshot lists through `s`, and reads byte-exact (all of them, or the first and the last two). */
  const servesAll = (s: Server, all = false) => {
    expect(new Set(ids(via(s)))).toEqual(new Set(contents.keys()));
    const list = [...contents];
    for (const [id, bytes] of all ? list : [list[0]!, ...list.slice(-2)]) expect(strata(['cat', file, '--at', id], via(s)).raw.equals(bytes)).toBe(true);
  };

  beforeAll(() => {
    expect(strata(['init', '--scrypt-n', '1024'], direct.env).status).toBe(0);
    const r = strata(['token', 'add', 'ci', '--role', 'append', '--json'], cliEnv(url, { ...serverEnv, STRATA_PASSWORD: undefined }));
    expect(r.status, r.stderr).toBe(0);
    tok = (JSON.parse(r.stdout) as { token: string }).token;
  });

  it('A writes checkpoints and compacts; B, idle meanwhile, finds its next records gone and reloads from the checkpoint; C starts from it', async () => {
    const [A, B] = await Promise.all([serve(url, 0, serverEnv, ['--checkpoint-every', '4']), serve(url, 0, serverEnv, ['--checkpoint-every', '0'])]);
    backup(via(A));
    // B has applied the first backup's records, then hears nothing while A goes on.
    servesAll(B);
    for (let i = 0; i < 6; i++) backup(via(A));
    expect(ids(via(A))).toHaveLength(7);
    // Two checkpoints at least, and the records the older one covers gone (with their batches).
    let names: string[] = [];
    for (let i = 0; i < 300; i++) {
      names = await journalNames();
      if (names.filter((n) => n.startsWith('k.')).length >= 2 && !names.includes(logName(1))) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    const checkpoints = names.filter((n) => n.startsWith('k.'));
    expect(checkpoints.length, names.join(' ')).toBeGreaterThanOrEqual(2);
    expect(names).not.toContain(logName(1));
    const [first] = [...contents.keys()];
    expect(names.filter((n) => n.startsWith(`v.${first}.`))).toEqual([]);
    expect(A.log()).toMatch(/journal: checkpoint of record \d+ written; \d+ records it makes needless removed/);
    // B's next records are gone: it starts again from the newest checkpoint, and misses nothing.
    servesAll(B, true);
    // (Its log comes in through a pipe this process reads between the synchronous runs of the CLI.)
    await new Promise((r) => setTimeout(r, 300));
    expect(B.log()).toMatch(/catalog was loaded again from the checkpoint of record \d+/);
    // A server started now cannot replay the journal from its first record: it starts from the checkpoint.
    const C = await serve(url, 0, serverEnv, ['--checkpoint-every', '0']);
    servesAll(C);
    // Written after the compaction, by a direct client and through B and C: numbered on, and seen by all.
    backup(direct.env);
    backup(via(B));
    backup(via(C));
    for (const s of [A, B, C]) servesAll(s);
    const incremental = strata(['backup', src, '--json'], via(C));
    expect(incremental.status, incremental.stderr).toBe(0);
    expect((JSON.parse(incremental.stdout) as { bytesSent: number }).bytesSent).toBeLessThan(100_000);
    contents.set((JSON.parse(incremental.stdout) as { snapshot: string }).snapshot, fs.readFileSync(file));
    servesAll(A);
    const check = strata(['check', '--read-data'], direct.env);
    expect(check.status, check.stdout + check.stderr).toBe(0);
    for (const s of [A, B, C]) {
      s.proc.kill('SIGTERM');
      expect(await s.exited).toBe(0);
    }
    // Nothing of the servers' catalogs is left behind (reloaded ones included).
    const [dir] = fs.readdirSync(path.join(serverCache, 'servers'));
    expect(fs.readdirSync(path.join(serverCache, 'servers', dir!)).filter((f) => f.startsWith('catalog-'))).toEqual([]);
  }, 300_000);

  it("a backup through B while A compacts the records B has not applied: B keeps its catalog until the backup commits, then loads the checkpoint and misses nothing (its own commit included)", async () => {
    const [A, B] = await Promise.all([serve(url, 0, serverEnv, ['--checkpoint-every', '2']), serve(url, 0, serverEnv, ['--checkpoint-every', '0'])]);
    const bigSrc = tempDir('strata-s3-compact-big-');
    const big = rng.bytes(48 * 1024 * 1024);
    fs.writeFileSync(path.join(bigSrc, 'big.bin'), big);
    const newest = async () => Math.max(0, ...(await journalNames()).map((n) => logSeq(n) ?? 0));
    const before = await newest();
    // The backup through B, stopped once its snapshot is pending in B's catalog (the only catalog with one).
    const [dir] = fs.readdirSync(path.join(serverCache, 'servers'));
    const pendingInB = () =>
      fs
        .readdirSync(path.join(serverCache, 'servers', dir!))
        .filter((f) => /^catalog-.*\.db(\.\d+)?$/.test(f))
        .some((f) => {
          const db = new Catalog(path.join(serverCache, 'servers', dir!, f), { readonly: true });
          try {
            return db.pendingSnapshots().length > 0;
          } finally {
            db.close();
          }
        });
    const child = strataAsync(['backup', bigSrc, '--json'], via(B));
    let out = '';
    let err = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString()));
    child.stderr.on('data', (c: Buffer) => (err += c.toString()));
    const exited = new Promise<number | string | null>((r) => child.on('exit', (code, signal) => r(code ?? signal)));
    let caught = false;
    for (let i = 0; i < 1500 && !caught && child.exitCode === null; i++) {
      if (pendingInB()) caught = child.kill('SIGSTOP');
      else await new Promise((r) => setTimeout(r, 10));
    }
    expect(caught, `the backup through B ended before it was seen pending: ${err}`).toBe(true);
    // Meanwhile A writes checkpoints and compacts past the records B applied last.
    const compacted = async () => (await newest()) >= before + 4 && !(await journalNames()).includes(logName(before + 1));
    for (let i = 0; i < 12 && !(await compacted()); i++) {
      backup(via(A));
      await new Promise((r) => setTimeout(r, 300));
    }
    expect(await compacted()).toBe(true);
    // A listing through B follows the journal and finds the gap: B keeps its catalog meanwhile (behind, but whole).
    ids(via(B));
    await new Promise((r) => setTimeout(r, 300));
    expect(B.log()).toMatch(/loaded again from the checkpoint of record \d+ once the backups under way through it are done/);
    child.kill('SIGCONT');
    // (Once, in a clean run of the whole suite, the resumed backup ended by a signal with nothing on
    // stderr, not seen again in runs here: the signal is in the message, and the test is tried twice.)
    expect(await exited, `ended by ${String(await exited)}: ${err}`).toBe(0);
    const snapshot = (JSON.parse(out) as { snapshot: string }).snapshot;
    // Every server sees every snapshot, B's own backup included, and reads it byte-exact.
    // B first: before A has seen the commit (and made it part of a newer checkpoint), B reloads and must replay it.
    const throughB = ids(via(B));
    const all = ids(direct.env);
    expect(all).toContain(snapshot);
    expect(throughB).toEqual(all);
    for (const s of [A, B]) {
      expect(ids(via(s))).toEqual(all);
      expect(strata(['cat', path.join(bigSrc, 'big.bin'), '--at', snapshot, '--range', '30000000+100000'], via(s)).raw.equals(big.subarray(30_000_000, 30_100_000))).toBe(true);
    }
    await new Promise((r) => setTimeout(r, 300));
    expect(B.log()).toMatch(/its catalog was loaded again from the checkpoint of record \d+\n/);
    for (const s of [A, B]) {
      s.proc.kill('SIGTERM');
      expect(await s.exited).toBe(0);
    }
  }, { timeout: 300_000, retry: 1 });
});

suite('two strata serve over one bucket: check --repair through one, seen by the other', () => {
  it('the blocks it drops are dropped by the other server too: a backup through it stores them again, and reads byte-exact', async () => {
    const rng = new Rng(2027);
    const src = tempDir('strata-s3-repair-src-');
    const file = path.join(src, 'f.bin');
    const bytes = rng.bytes(300_000);
    fs.writeFileSync(file, bytes);
    const url = `s3://${bucketName('repair')}/repo`;
    const direct = cliClient(url);
    const serverEnv = { ...s3Env(), STRATA_CACHE_DIR: tempDir('strata-s3-repair-servers-') };
    expect(strata(['init', '--scrypt-n', '1024'], direct.env).status).toBe(0);
    const r = strata(['token', 'add', 'ops', '--role', 'admin', '--json'], cliEnv(url, { ...serverEnv, STRATA_PASSWORD: undefined }));
    expect(r.status, r.stderr).toBe(0);
    const admin = (JSON.parse(r.stdout) as { token: string }).token;
    const [A, B] = await Promise.all([serve(url, 0, serverEnv), serve(url, 0, serverEnv)]);
    expect(strata(['backup', src], client(A.url, admin)).status).toBe(0);
    // B knows the snapshot (and its blocks) before the damage.
    expect(strata(['cat', file], client(B.url, admin)).raw.equals(bytes)).toBe(true);
    const st = new S3Storage(locate(url) as { bucket: string; prefix: string }, OPTIONS);
    try {
      const [name] = [...(await packSizes(url))].sort((x, y) => y[1] - x[1])[0]!;
      const h = { kind: 'pack' as const, name };
      const damaged = await st.get(h);
      damaged[Math.floor(damaged.length / 2)]! ^= 0xff;
      await st.delete(h);
      await st.put(h, damaged);
    } finally {
      await st.close();
    }
    const check = strata(['check', '--read-data', '--repair', '--json'], client(A.url, admin));
    expect(check.status).toBe(1);
    expect((JSON.parse(check.stdout) as { repaired: number }).repaired).toBeGreaterThan(0);
    // Through B, a backup of the file (read again: its time changed) stores the dropped blocks again, rather than name the damaged copies.
    fs.utimesSync(file, new Date(), new Date(Date.now() + 5000));
    const again = strata(['backup', src, '--json'], client(B.url, admin));
    expect(again.status, again.stderr).toBe(0);
    for (const s of [B, A]) {
      const cat = strata(['cat', file], client(s.url, admin));
      expect(cat.status, cat.stderr).toBe(0);
      expect(cat.raw.equals(bytes)).toBe(true);
    }
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(B.log()).toMatch(/forgets, tags, resealed TOCs, prunes or repairs applied/);
  }, 180_000);
});

suite('the catalog journal on Ceph RGW', () => {
  /** A pack record of one block (a pack the follower indexes; its file need not exist). */
  const recordPack = (j: CatalogJournal, label: string) =>
    j.recordPack(hex(`pack ${label}`), PACK_MAGIC.length + 100, [{ id: Buffer.from(hex(`block ${label}`), 'hex'), kind: 'data', offset: PACK_MAGIC.length, length: 100, size: 90 }], false);
  /** What `run` asked of the store: requests by kind, and bytes received. */
  const cost = async (s3: S3Storage, run: () => Promise<unknown>) => {
    const before = { ...s3.counters.requests };
    const bytes = s3.counters.bytesReceived;
    await run();
    const requests: Record<string, number> = {};
    for (const [k, n] of Object.entries(s3.counters.requests)) if (n !== (before[k] ?? 0)) requests[k] = n - (before[k] ?? 0);
    return { requests, bytes: s3.counters.bytesReceived - bytes };
  };

  it('numbers have no gaps when two writers append at once; a follow of 300 records then finds nothing new in one listing of a few names', async () => {
    const s3 = await freshStore('journal');
    const [w1, w2] = [new CatalogJournal(s3.journal), new CatalogJournal(s3.journal)];
    await Promise.all([w1, w2].map(async (w, k) => {
      for (let i = 0; i < 150; i++) await recordPack(w, `${k}.${i}`);
    }));
    const names: string[] = [];
    for await (const n of s3.journal.names({ prefix: 'l.' })) names.push(n);
    expect(names.map((n) => logSeq(n))).toEqual(Array.from({ length: 300 }, (_, i) => 300 - i));

    const follower = new LocalService(new Catalog(path.join(tempDir(), 'catalog.db')), s3, true, undefined, new CatalogJournal(s3.journal));
    const cold = await cost(s3, async () => expect((await follower.followJournal()).packs).toBe(300));
    // A first page of a few names, then the rest in one.
    expect(cold.requests).toEqual({ LIST: 2, 'GET journal entry': 300 });
    // Idle: one listing, answered with a few names.
    for (let i = 0; i < 3; i++) {
      const idle = await cost(s3, async () => expect(await follower.followJournal()).toMatchObject({ records: 0, packs: 0 }));
      expect(idle.requests).toEqual({ LIST: 1 });
      expect(idle.bytes).toBeLessThan(2000);
    }
    // One record more: the same listing finds it, and it is read.
    await recordPack(w1, 'one more');
    const one = await cost(s3, async () => expect(await follower.followJournal()).toMatchObject({ records: 1, packs: 1 }));
    expect(one.requests).toEqual({ LIST: 1, 'GET journal entry': 1 });
    await follower.close();
  }, 120_000);
});

suite('forget, tag and prune through one server, seen at once through another', () => {
  const rng = new Rng(2022);
  const src = tempDir('strata-s3-maint-src-');
  const big = path.join(src, 'big.bin');
  const note = path.join(src, 'note.txt');
  const url = `s3://${bucketName('maint')}/repo`;
  const direct = cliClient(url);
  const serverCache = tempDir('strata-s3-maint-servers-');
  const serverEnv = { ...s3Env(), STRATA_CACHE_DIR: serverCache };
  let A: Server;
  let B: Server;
  let tok: string;
  let admin: string;
  const via = (s: Server) => client(s.url, tok);
  const ops = (s: Server) => client(s.url, admin);
  const list = (env: NodeJS.ProcessEnv) => JSON.parse(strata(['snapshots', '--json'], env).stdout) as { id: string; tags: string[] }[];
  /** big.bin and note.txt of each snapshot, as written. */
  const versions: { big: Buffer; note: string }[] = [];
  let ids: string[] = [];
  /** Each snapshot's root tree (hex), as B has it. */
  let roots: string[] = [];

  beforeAll(async () => {
    expect(strata(['init', '--scrypt-n', '1024'], direct.env).status).toBe(0);
    const add = (name: string, role: string) => {
      const r = strata(['token', 'add', name, '--role', role, '--json'], cliEnv(url, { ...serverEnv, STRATA_PASSWORD: undefined }));
      expect(r.status, r.stderr).toBe(0);
      return (JSON.parse(r.stdout) as { token: string }).token;
    };
    tok = add('ci', 'append');
    admin = add('ops', 'admin');
    [A, B] = await Promise.all([serve(url, 0, serverEnv), serve(url, 0, serverEnv)]);
    // Three snapshots: the first's big.bin is its own (a whole new file after it), the later two share most of theirs.
    for (const [i, s] of [A, A, B].entries()) {
      const bytes = i === 2 ? Buffer.concat([versions[1]!.big.subarray(0, 1_500_000), rng.bytes(4000), versions[1]!.big.subarray(1_500_000)]) : rng.bytes(1_800_000 + i * 1000);
      fs.writeFileSync(big, bytes);
      fs.writeFileSync(note, `version ${i}\n`);
      versions.push({ big: bytes, note: `version ${i}\n` });
      const r = strata(['backup', src], via(s));
      expect(r.status, r.stderr).toBe(0);
    }
    ids = list(direct.env).map((x) => x.id);
    expect(ids).toHaveLength(3);
  });

  it('a tag and a forget through A are seen through B at once; what B reads of the others is byte-exact', async () => {
    expect(list(via(B)).map((x) => x.id)).toEqual(ids);
    const rows = (await (await fetch(`${B.url}/v1/snapshots`, { headers: { Authorization: `Bearer ${tok}` } })).json()) as { snapshots: { id: string; root: string }[] };
    roots = ids.map((id) => rows.snapshots.find((x) => x.id === id)!.root);
    const tagged = strata(['tag', ids[1]!, '--add', 'keep'], ops(A));
    expect(tagged.status, tagged.stderr).toBe(0);
    expect(list(via(B)).find((x) => x.id === ids[1])!.tags).toEqual(['keep']);
    const forgot = strata(['forget', ids[0]!], ops(A));
    expect(forgot.status, forgot.stderr).toBe(0);
    expect(list(via(B)).map((x) => x.id)).toEqual(ids.slice(1));
    for (const [i, id] of ids.entries()) {
      if (i === 0) continue;
      expect(strata(['cat', big, '--at', id], via(B)).raw.equals(versions[i]!.big)).toBe(true);
      expect(strata(['cat', note, '--at', id], via(B)).stdout).toBe(versions[i]!.note);
    }
    // Tagged again through B, seen through A; and by a client of the bucket itself, seen through both.
    expect(strata(['tag', ids[2]!, '--add', 'last'], ops(B)).status).toBe(0);
    expect(list(via(A)).find((x) => x.id === ids[2])!.tags).toEqual(['last']);
    expect(strata(['tag', ids[2]!, '--add', 'direct'], direct.env).status).toBe(0);
    for (const s of [A, B]) expect(list(via(s)).find((x) => x.id === ids[2])!.tags).toEqual(['last', 'direct']);
  });

  it('a prune through A: a restore through B of a kept snapshot is byte-exact, of the forgotten one a clean not-found; a backup through B goes on', async () => {
    // B's catalog as it stands: the root tree of a kept snapshot, and of the forgotten one (its blocks still stored until the prune).
    const get = (p: string) => fetch(`${B.url}${p}`, { headers: { Authorization: `Bearer ${tok}` } });
    const rows = (await (await get('/v1/snapshots')).json()) as { snapshots: { id: string; root: string }[] };
    const kept = rows.snapshots.find((x) => x.id === ids[1])!.root;
    const keptBytes = Buffer.from(await (await get(`/v1/blocks/${kept}`)).arrayBuffer());
    expect(keptBytes.length).toBeGreaterThan(0);
    expect((await get(`/v1/blocks/${roots[0]}`)).status).toBe(200);
    const pruned = strata(['prune', '--json'], ops(A));
    expect(pruned.status, pruned.stderr).toBe(0);
    const r = JSON.parse(pruned.stdout) as { deletedPacks: number; deletedBlocks: number };
    expect(r.deletedBlocks).toBeGreaterThan(0);
    expect(r.deletedPacks).toBeGreaterThan(0);
    // Asked of B before anything makes it follow the journal: the kept one reads as before, byte for byte (wherever the prune put it).
    const moved = await get(`/v1/blocks/${kept}`);
    expect(moved.status).toBe(200);
    expect(Buffer.from(await moved.arrayBuffer()).equals(keptBytes)).toBe(true);
    // The forgotten snapshot's root tree is gone with its pack: not found, not other bytes.
    const dropped = await get(`/v1/blocks/${roots[0]}`);
    expect(dropped.status).toBe(404);
    expect(((await dropped.json()) as { error: string }).error).toBe('not_found');
    for (const i of [1, 2]) {
      const target = tempDir();
      const restored = strata(['restore', '--at', ids[i]!, '--target', target], via(B));
      expect(restored.status, restored.stderr).toBe(0);
      expect(fs.readFileSync(path.join(target, big)).equals(versions[i]!.big)).toBe(true);
      expect(fs.readFileSync(path.join(target, note), 'utf8')).toBe(versions[i]!.note);
    }
    const gone = strata(['restore', '--at', ids[0]!, '--target', tempDir()], via(B));
    expect(gone.status).toBe(1);
    expect(gone.stderr).toMatch(/no snapshot with id /);
    expect(gone.stderr).not.toMatch(/ at |integrity/i);
    fs.writeFileSync(note, 'after the prune\n');
    const after = strata(['backup', src], via(B));
    expect(after.status, after.stderr).toBe(0);
    expect(strata(['cat', note], via(A)).stdout).toBe('after the prune\n');
    const check = strata(['check', '--read-data'], direct.env);
    expect(check.status, check.stdout + check.stderr).toBe(0);
  });

  it('a server started after all this replays it to the same snapshots, tags and bytes', async () => {
    const C = await serve(url, 0, serverEnv);
    expect(list(via(C))).toEqual(list(via(A)));
    const latest = list(via(C)).at(-1)!.id;
    expect(strata(['cat', big, '--at', latest], via(C)).raw.equals(versions[2]!.big)).toBe(true);
    expect(strata(['cat', big, '--at', ids[1]!], via(C)).raw.equals(versions[1]!.big)).toBe(true);
    C.proc.kill('SIGTERM');
    expect(await C.exited).toBe(0);
  });
});

suite('a bucket written before the catalog journal', () => {
  it('a server refuses it, saying what to run; rebuild-catalog with the key writes the journal, and servers then serve it byte-exact', async () => {
    const rng = new Rng(2023);
    const src = tempDir('strata-s3-prejournal-src-');
    const file = path.join(src, 'f.bin');
    const url = `s3://${bucketName('prejournal')}/repo`;
    const direct = cliClient(url);
    expect(strata(['init', '--scrypt-n', '1024'], direct.env).status).toBe(0);
    const contents = [rng.bytes(900_000)];
    contents.push(Buffer.concat([contents[0]!.subarray(0, 400_000), rng.bytes(3000), contents[0]!.subarray(400_000)]));
    for (const c of contents) {
      fs.writeFileSync(file, c);
      expect(strata(['backup', src], direct.env).status).toBe(0);
    }
    const ids = snapshotIds(direct.env);
    // What such a bucket holds: everything but the journal.
    const s3 = new S3Storage(locate(url) as { bucket: string; prefix: string }, OPTIONS);
    for await (const name of s3.journal.names()) await s3.journal.remove(name);
    await s3.close();

    const serverEnv = { ...s3Env(), STRATA_CACHE_DIR: tempDir('strata-s3-prejournal-servers-') };
    const r = strata(['token', 'add', 'ci', '--role', 'append', '--json'], cliEnv(url, { ...serverEnv, STRATA_PASSWORD: undefined }));
    const tok = (JSON.parse(r.stdout) as { token: string }).token;
    await expect(serve(url, 0, serverEnv)).rejects.toThrow(/holds \d+ packs and no catalog journal .*run "strata rebuild-catalog --repo s3:\/\/strata-prejournal-/);

    const rebuilt = strata(['rebuild-catalog', '--json'], direct.env);
    expect(rebuilt.status, rebuilt.stderr).toBe(0);
    const wrote = (JSON.parse(rebuilt.stdout) as { journal: { packs: number; snapshots: number } }).journal;
    expect(wrote.snapshots).toBe(2);
    expect(wrote.packs).toBeGreaterThan(0);

    const A = await serve(url, 0, serverEnv);
    const env = client(A.url, tok);
    expect(snapshotIds(env)).toEqual(ids);
    for (const [i, id] of ids.entries()) expect(strata(['cat', file, '--at', id], env).raw.equals(contents[i]!)).toBe(true);
    // An incremental through the server, on a parent that came from the packs: it sends what changed.
    const third = Buffer.from(contents[1]!);
    rng.bytes(50).copy(third, 10_000);
    fs.writeFileSync(file, third);
    const inc = strata(['backup', src, '--json'], env);
    expect(inc.status, inc.stderr).toBe(0);
    expect((JSON.parse(inc.stdout) as { bytesSent: number }).bytesSent).toBeLessThan(300_000);
    expect(strata(['cat', file], env).raw.equals(third)).toBe(true);
    // Once written, nothing more to write.
    const again = strata(['rebuild-catalog', '--json'], direct.env);
    expect((JSON.parse(again.stdout) as { journal: unknown }).journal).toEqual({ packs: 0, snapshots: 0 });
  }, 120_000);

  it('a journal of the first servers over buckets (p. and c. entries, no numbered records): refused alike; rebuild-catalog writes the numbered journal (the old batches stay) and servers serve it', async () => {
    const src = tempDir('strata-s3-oldjournal-src-');
    const file = path.join(src, 'f.bin');
    const url = `s3://${bucketName('oldjournal')}/repo`;
    const direct = cliClient(url);
    expect(strata(['init', '--scrypt-n', '1024'], direct.env).status).toBe(0);
    const contents = [new Rng(2024).bytes(500_000), new Rng(2025).bytes(600_000)];
    for (const c of contents) {
      fs.writeFileSync(file, c);
      expect(strata(['backup', src], direct.env).status).toBe(0);
    }
    const ids = snapshotIds(direct.env);
    // The journal as those servers wrote it: each commit as c.ID (its batches stay v.ID.N), each pack as p.PACK.
    const s3 = new S3Storage(locate(url) as { bucket: string; prefix: string }, OPTIONS);
    for await (const name of s3.journal.names({ prefix: 'l.' })) {
      const r = JSON.parse((await s3.journal.read(name))!.body.toString('utf8')) as Record<string, unknown>;
      if (r.kind === 'commit') await s3.journal.create(`c.${r.id as string}`, Buffer.from(JSON.stringify({ begin: r.begin, batches: r.batches, commit: r.commit })));
      if (r.kind === 'pack') await s3.journal.create(`p.${r.name as string}`, Buffer.from(JSON.stringify({ entries: r.entries })));
      await s3.journal.remove(name);
    }
    await s3.close();
    const serverEnv = { ...s3Env(), STRATA_CACHE_DIR: tempDir('strata-s3-oldjournal-servers-') };
    const r = strata(['token', 'add', 'ci', '--role', 'read', '--json'], cliEnv(url, { ...serverEnv, STRATA_PASSWORD: undefined }));
    const tok = (JSON.parse(r.stdout) as { token: string }).token;
    await expect(serve(url, 0, serverEnv)).rejects.toThrow(/no catalog journal .*rebuild-catalog/);
    const rebuilt = strata(['rebuild-catalog', '--json'], direct.env);
    expect(rebuilt.status, rebuilt.stderr).toBe(0);
    expect((JSON.parse(rebuilt.stdout) as { journal: { snapshots: number } }).journal.snapshots).toBe(2);
    const A = await serve(url, 0, serverEnv);
    const env = client(A.url, tok);
    expect(snapshotIds(env)).toEqual(ids);
    for (const [i, id] of ids.entries()) expect(strata(['cat', file, '--at', id], env).raw.equals(contents[i]!)).toBe(true);
  }, 120_000);
});

/** Runs the CLI without blocking the test's process (so servers it started answer). */
function runAsync(args: string[], env: NodeJS.ProcessEnv): Promise<{ code: number; stderr: string }> {
  return new Promise((resolve) => {
    const child = strataAsync(args, env);
    let stderr = '';
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    child.on('exit', (code) => resolve({ code: code ?? -1, stderr }));
  });
}

/**
 * A proxy in front of the gateway that names each request: "LIST packs",
 * "GET config", "GET packs range". In a process of its own: the CLI runs
 * synchronously, and would wait forever on a proxy in this one.
 */
async function countingProxy(prefix: string): Promise<{ url: string; close(): void; take(): string[] }> {
  const log = path.join(tempDir('strata-s3-proxy-'), 'requests');
  fs.writeFileSync(log, '');
  const code = `
    const http = require('node:http'), fs = require('node:fs');
    const [endpoint, prefix, log] = process.argv.slice(1);
    const target = new URL(endpoint);
    const server = http.createServer((req, res) => {
      const u = new URL(req.url || '/', 'http://x');
      const list = u.searchParams.get('list-type') !== null;
      const under = (list ? (u.searchParams.get('prefix') || '') : decodeURIComponent(u.pathname).split('/').slice(2).join('/')).slice(prefix.length);
      fs.appendFileSync(log, (list ? 'LIST' : req.method) + ' ' + under.split('/')[0] + (req.headers.range ? ' range' : '') + '\\n');
      // A connection of its own for each request: one kept by the proxy and closed by the gateway meanwhile would
      // fail the request, and the client's retry would count twice.
      const up = http.request({ hostname: target.hostname, port: target.port, method: req.method, path: req.url, headers: req.headers, agent: false }, (r) => {
        res.writeHead(r.statusCode || 502, r.headers);
        r.pipe(res);
      });
      up.on('error', () => res.destroy());
      req.pipe(up);
    });
    server.listen(0, '127.0.0.1', () => console.log(server.address().port));`;
  const child = spawn(process.execPath, ['-e', code, OPTIONS.endpoint!, prefix, log], { stdio: ['ignore', 'pipe', 'inherit'] });
  const port = await new Promise<string>((resolve, reject) => {
    child.stdout.once('data', (c: Buffer) => resolve(c.toString().trim()));
    child.once('exit', (c) => reject(new Error(`the counting proxy exited with ${c}`)));
  });
  return {
    url: `http://127.0.0.1:${port}`,
    close: () => child.kill(),
    take: () => {
      const out = fs.readFileSync(log, 'utf8').split('\n').filter((l) => l !== '');
      fs.writeFileSync(log, '');
      return out;
    },
  };
}

suite("a bucket's client keeps the trees, TOCs and records it writes and reads: a small read is one GET of data", () => {
  const rng = new Rng(2077);
  const src = tempDir('strata-s3-meta-src-');
  const file = path.join(src, 'a', 'b', 'c', 'big.bin');
  const v1 = rng.bytes(2 * 1024 * 1024);
  const v2 = Buffer.from(v1);
  rng.bytes(5000).copy(v2, 1_500_000);
  const url = `s3://${bucketName('meta')}/r`;
  /** The cached sealed blocks under a client's cache directory. */
  const cacheFiles = (dir: string): string[] =>
    (fs.readdirSync(dir, { recursive: true }) as string[]).filter((f) => /^[0-9a-f]{64}$/.test(path.basename(f))).map((f) => path.join(dir, f));

  it('after its backups, a client reads 4 KiB of any snapshot with the freshness listing and one ranged GET; damaged cached copies are fetched again; another client caches on its first read', async () => {
    const proxy = await countingProxy('r/');
    try {
      const a = cliClient(url, undefined, { AWS_ENDPOINT_URL_S3: proxy.url });
      fs.mkdirSync(path.dirname(file), { recursive: true });
      fs.writeFileSync(file, v1);
      for (let i = 0; i < 20; i++) fs.writeFileSync(path.join(src, 'a', `s${i}.txt`), `small ${i}\n`);
      expect(strata(['init', '--scrypt-n', '1024'], a.env).status).toBe(0);
      expect(strata(['backup', src], a.env).status).toBe(0);
      fs.writeFileSync(file, v2);
      expect(strata(['backup', src], a.env).status).toBe(0);
      const [s1, s2] = snapshotIds(a.env);
      // With the key in a file, as the benchmark reads (a password costs a listing and a GET of the keys).
      const keyFile = path.join(tempDir('strata-s3-meta-key-'), 'key');
      expect(strata(['key', 'export', keyFile], a.env).status).toBe(0);
      // 4 KiB in one block of each version, the second's within the bytes it changed (asked by a client of its own: a's cache stays as its backups left it).
      const asker = cliClient(url).env;
      const offsets = { [s1!]: inOneBlock(asker, file, s1!, 1_400_000), [s2!]: inOneBlock(asker, file, s2!, 1_500_000) };
      expect(offsets[s2!]).toBeLessThan(1_505_000);
      const read = (env: NodeJS.ProcessEnv, at: string) => {
        proxy.take();
        const off = offsets[at]!;
        const r = strata(['cat', file, '--at', at, '--range', `${off}+4096`], { ...env, STRATA_KEY_FILE: keyFile });
        expect(r.status, r.stderr).toBe(0);
        expect(r.raw.equals((at === s1 ? v1 : v2).subarray(off, off + 4096))).toBe(true);
        // The listing and the block's GET go out together: in either order.
        return proxy.take().sort();
      };
      const oneGet = ['GET packs range', 'LIST packs'];
      expect(read(a.env, s1!)).toEqual(oneGet);
      expect(read(a.env, s2!)).toEqual(oneGet);

      // Damaged copies in the cache fail to open: each is dropped and fetched again, and kept again.
      const cached = cacheFiles(a.cacheDir);
      expect(cached.length).toBeGreaterThanOrEqual(6);
      for (const f of cached) {
        const b = fs.readFileSync(f);
        b[b.length >> 1]! ^= 1;
        fs.writeFileSync(f, b);
      }
      expect(read(a.env, s1!).filter((r) => r === 'GET packs range').length).toBeGreaterThan(1);
      expect(read(a.env, s1!)).toEqual(oneGet);

      // Another client: its first read fetches the trees and TOC it needs, its next one the data alone.
      const b = cliClient(url, undefined, { AWS_ENDPOINT_URL_S3: proxy.url });
      expect(snapshotIds(b.env)).toEqual([s1, s2]);
      expect(read(b.env, s1!).length).toBeGreaterThan(2);
      expect(read(b.env, s1!)).toEqual(oneGet);

      // --no-cache: nothing kept (the next read fetches the trees and TOC), the bytes as right.
      const c = cliClient(url, undefined, { AWS_ENDPOINT_URL_S3: proxy.url });
      expect(snapshotIds(c.env)).toEqual([s1, s2]);
      const kept = cacheFiles(c.cacheDir).length;
      const r = strata(['cat', file, '--at', s2!, '--range', '1500000+4096', '--no-cache'], c.env);
      expect(r.status, r.stderr).toBe(0);
      expect(r.raw.equals(v2.subarray(1_500_000, 1_504_096))).toBe(true);
      expect(cacheFiles(c.cacheDir)).toHaveLength(kept);
      expect(read(c.env, s2!).length).toBeGreaterThan(2);
    } finally {
      proxy.close();
    }
  }, 120_000);

  it("a block compressed with the repository's dictionary: a client fetches the dictionary once and keeps it (a damaged copy is fetched again)", async () => {
    const proxy = await countingProxy('d/');
    try {
      const where = `s3://${bucketName('dict')}/d`;
      const a = cliClient(where, undefined, { AWS_ENDPOINT_URL_S3: proxy.url });
      const dir = tempDir('strata-s3-dict-');
      const log = path.join(dir, 'app.log');
      // Text enough for a dictionary (made from fragments of the first text blocks); the read is near the end, in a block sealed after it.
      const words = Array.from({ length: 300 }, (_, i) => Array.from({ length: 3 + (i % 7) }, () => String.fromCharCode(97 + rng.int(26))).join(''));
      const lines: string[] = [];
      for (let i = 0, n = 0; n < 6_000_000; i++) {
        const line = `2026-01-01T00:${String(i % 60).padStart(2, '0')}:00Z host${rng.int(16)} app: ${Array.from({ length: 4 + rng.int(8) }, () => words[rng.int(words.length)]).join(' ')} id=${rng.int(1_000_000)}\n`;
        lines.push(line);
        n += line.length;
      }
      const text = Buffer.from(lines.join(''));
      fs.writeFileSync(log, text);
      expect(strata(['init', '--scrypt-n', '1024'], a.env).status).toBe(0);
      expect(strata(['backup', dir], a.env).status).toBe(0);
      const [s1] = snapshotIds(a.env);
      const keyFile = path.join(tempDir('strata-s3-dict-key-'), 'key');
      expect(strata(['key', 'export', keyFile], a.env).status).toBe(0);
      // Asked by a client of its own: a TOC may be compressed with the dictionary, and a's cache must not hold it yet.
      const off = inOneBlock(cliClient(where).env, log, s1!, 5_800_000);
      const read = (env: NodeJS.ProcessEnv) => {
        proxy.take();
        const r = strata(['cat', log, '--at', s1!, '--range', `${off}+4096`], { ...env, STRATA_KEY_FILE: keyFile });
        expect(r.status, r.stderr).toBe(0);
        expect(r.raw.equals(text.subarray(off, off + 4096))).toBe(true);
        return proxy.take().sort();
      };
      const oneGet = ['GET packs range', 'LIST packs'];
      // The writer's first read fetches the dictionary the block names (the writer made it, and sent it) ...
      expect(read(a.env)).toContain('GET dicts');
      // ... and keeps it, with the trees and the TOC it wrote.
      expect(read(a.env)).toEqual(oneGet);
      // A damaged cached copy fails to open: it is fetched again from the bucket, then kept again.
      const cached = (fs.readdirSync(a.cacheDir, { recursive: true }) as string[]).filter((f) => /^[0-9a-f]{64}$/.test(path.basename(f)));
      for (const f of cached) {
        const bytes = fs.readFileSync(path.join(a.cacheDir, f));
        bytes[bytes.length >> 1]! ^= 1;
        fs.writeFileSync(path.join(a.cacheDir, f), bytes);
      }
      expect(read(a.env)).toContain('GET dicts');
      expect(read(a.env)).toEqual(oneGet);
      // Another client fills its catalog from the bucket, the dictionary with it: its reads never ask for it.
      const b = cliClient(where, undefined, { AWS_ENDPOINT_URL_S3: proxy.url });
      expect(snapshotIds(b.env)).toEqual([s1]);
      expect(read(b.env).filter((r) => r.includes('dicts'))).toEqual([]);
      expect(read(b.env)).toEqual(oneGet);
    } finally {
      proxy.close();
    }
  }, 120_000);

  it("a range of a named snapshot is read while the packs are listed: right after another client's backup, and refused once another client forgot and pruned it", () => {
    const where = `s3://${bucketName('warm')}/r`;
    const a = cliClient(where);
    const b = cliClient(where);
    const src = tempDir('strata-s3-warm-');
    const f = path.join(src, 'f.bin');
    const one = new Rng(31).bytes(600_000);
    fs.writeFileSync(f, one);
    expect(strata(['init', '--scrypt-n', '1024'], a.env).status).toBe(0);
    expect(strata(['backup', src], a.env).status).toBe(0);
    const [s1] = snapshotIds(a.env);
    const cat = (env: NodeJS.ProcessEnv) => strata(['cat', f, '--at', s1!, '--range', '300000+5000'], env);
    expect(cat(a.env).raw.equals(one.subarray(300_000, 305_000))).toBe(true);
    // Another client's backup: a's cache lacks its packs; the read is right, and a then lists both.
    fs.writeFileSync(f, new Rng(32).bytes(600_000));
    expect(strata(['backup', src], b.env).status).toBe(0);
    expect(cat(a.env).raw.equals(one.subarray(300_000, 305_000))).toBe(true);
    expect(snapshotIds(a.env)).toHaveLength(2);
    // Forgotten and pruned by the other: its blocks are gone from the bucket, and a says the snapshot is.
    expect(strata(['forget', s1!, '--prune'], b.env).status).toBe(0);
    const gone = cat(a.env);
    expect(gone.status).not.toBe(0);
    expect(gone.stdout).toBe('');
    expect(gone.stderr).toMatch(/no snapshot|not found/i);
  }, 120_000);

  it('the config is kept by each client; a repository made again at the same place (another id) is found, with the key or a password', async () => {
    const again = `s3://${bucketName('remade')}/r`;
    const d = cliClient(again);
    const one = tempDir('strata-s3-remade-');
    fs.writeFileSync(path.join(one, 'f'), 'first repository\n');
    expect(strata(['init', '--scrypt-n', '1024'], d.env).status).toBe(0);
    expect(strata(['backup', one], d.env).status).toBe(0);
    expect(snapshotIds(d.env)).toHaveLength(1);
    expect(fs.readdirSync(path.join(d.cacheDir, 'servers')).filter((f) => f.endsWith('.config'))).toHaveLength(1);
    // Everything under the prefix deleted, and a new repository made there.
    const st = new S3Storage(locate(again) as { bucket: string; prefix: string }, OPTIONS);
    for (const kind of ['pack', 'key', 'config'] as const) for await (const name of st.list(kind)) await st.delete({ kind, name });
    await st.close();
    const fresh = cliClient(again);
    expect(strata(['init', '--scrypt-n', '1024'], { ...fresh.env, STRATA_PASSWORD: 'other' }).status).toBe(0);
    fs.writeFileSync(path.join(one, 'f'), 'second repository\n');
    expect(strata(['backup', one], { ...fresh.env, STRATA_PASSWORD: 'other' }).status).toBe(0);
    // d's kept config is the old repository's: its password opens no key of the new one (exit 12, said so) ...
    const old = strata(['snapshots'], d.env);
    expect(old.status).toBe(12);
    expect(old.stderr).toMatch(/wrong password/);
    // ... and the new one's password opens it, through its config fetched again.
    const now = strata(['cat', path.join(one, 'f')], { ...d.env, STRATA_PASSWORD: 'other' });
    expect(now.status, now.stderr).toBe(0);
    expect(now.stdout).toBe('second repository\n');
    const keyFile = path.join(one, 'key');
    expect(strata(['key', 'export', keyFile], { ...fresh.env, STRATA_PASSWORD: 'other' }).status).toBe(0);
    expect(snapshotIds({ ...d.env, STRATA_PASSWORD: undefined, STRATA_KEY_FILE: keyFile })).toHaveLength(1);
  }, 120_000);
});
