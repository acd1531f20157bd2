/**
 * S3 repositories against a real Ceph RGW (scripts/ceph-rgw-up.sh; .ci/run
 * starts it): the Storage contract, what the S3 driver adds (create-only
 * puts, multipart, paging, retries), its faults, and strata end to end on a
 * bucket. Run with `npm run test:s3`; skipped, saying why, when no gateway
 * answers.
 */
import * as http from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RetryingStorage } from '../src/storage/retry.js';
import { S3Storage } from '../src/storage/s3.js';
import { Rng } from './helpers.js';
import { bucketName, freshStore, gatewayProblem, OPTIONS } from './s3-helpers.js';
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
async function faultyProxy(fault: (n: number) => 'slowdown' | 'silence' | undefined): Promise<{ url: string; close(): void; requests: number }> {
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
    const up = http.request({ hostname: target.hostname, port: target.port, method: req.method, path: req.url, headers: req.headers }, (r) => {
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
