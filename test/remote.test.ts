/**
 * Repositories behind `strata serve`: every client command run against a real
 * server (the built CLI in child processes, 127.0.0.1, ephemeral port), read
 * back byte-exact against the files as they were, and the server's directory
 * searched for anything a client should never have told it.
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import * as http from 'node:http';
import { routeTable } from '../src/server/routes.js';
import { cliEnv, Rng, strata, strataAsync, tempDir } from './helpers.js';
import { client, serve, token, type Server } from './server-helpers.js';

function ok(args: string[], env: NodeJS.ProcessEnv): string {
  const r = strata(args, env);
  expect(r.status, `${args.join(' ')}: ${r.stderr}`).toBe(0);
  return r.stdout;
}

function json<T = Record<string, unknown>>(args: string[], env: NodeJS.ProcessEnv): T {
  return JSON.parse(ok([...args, '--json'], env)) as T;
}

/** Every byte of every file under `dir` (the server's whole repository). */
function allBytes(dir: string): Buffer {
  const parts: Buffer[] = [];
  const walk = (d: string) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      parts.push(Buffer.from(e.name));
      if (e.isDirectory()) walk(p);
      else if (e.isFile()) parts.push(fs.readFileSync(p));
    }
  };
  walk(dir);
  return Buffer.concat(parts);
}

describe('a repository behind strata serve', () => {
  let srv: Server;
  let admin: string;
  let env: NodeJS.ProcessEnv;
  const data = tempDir('strata-remote-data-');
  const MARK = 'zq-marker-PLAINTEXT-7731';
  const rng = new Rng(42);
  const big = path.join(data, `image-${MARK}.bin`);
  const mail = path.join(data, 'mailbox');
  /** The files as each snapshot saw them. */
  const states: { id: string; image: Buffer; mail: Buffer }[] = [];

  beforeAll(async () => {
    const dir = path.join(tempDir(), 'served');
    srv = await serve(dir);
    admin = token(dir, 'admin', 'admin');
    env = client(srv.url, admin);
  });

  it('init on the server, then backup, snapshots, ls, cat, toc and restore behave as on a directory', () => {
    const init = json(['init', '--scrypt-n', '1024', '--pack-size', '1M'], env);
    expect(init.repository).toBe(srv.url);
    const again = strata(['init', '--scrypt-n', '1024'], env);
    expect(again.status).not.toBe(0);
    expect(again.stderr).toMatch(/already exists/);

    const image = Buffer.concat([rng.bytes(1_500_000), Buffer.from(`${MARK} `.repeat(2000)), rng.bytes(500_000)]);
    const box = Buffer.from(Array.from({ length: 4000 }, (_, i) => `From a@b ${i}\nSubject: ${MARK} ${i}\n\nbody ${i} ${'x'.repeat(i % 97)}\n`).join(''));
    fs.writeFileSync(big, image);
    fs.writeFileSync(mail, box);
    const first = json<{ snapshot: string; bytesSent: number; bytesAdded: number }>(['backup', data], env);
    states.push({ id: first.snapshot, image, mail: box });
    // Uploads are the new sealed bytes plus a little metadata.
    expect(first.bytesSent).toBeLessThanOrEqual(first.bytesAdded * 1.05 + 64 * 1024);

    // A message inserted in the middle: every later offset moves.
    const at = box.indexOf('From a@b 2000\n');
    const box2 = Buffer.concat([box.subarray(0, at), Buffer.from(`From x@y\nSubject: inserted\n\n${'y'.repeat(3000)}\n`), box.subarray(at)]);
    const image2 = Buffer.from(image);
    image2.write('OVERWRITTEN', 1_000_000);
    fs.writeFileSync(mail, box2);
    fs.writeFileSync(big, image2);
    const second = json<{ snapshot: string; filesChanged: number; refEntries: number; bytesSent: number }>(['backup', data], env);
    expect(second.filesChanged).toBe(2);
    expect(second.refEntries).toBeGreaterThan(0);
    expect(second.bytesSent).toBeLessThan(image.length / 4);
    states.push({ id: second.snapshot, image: image2, mail: box2 });

    const snaps = json<unknown[]>(['snapshots'], env);
    expect(snaps.map((s) => (s as { id: string }).id)).toEqual(states.map((s) => s.id));
    const listed = json<{ entries: { path: string }[] }>(['ls', data], env).entries.map((e) => e.path);
    expect(listed).toEqual([big, mail].sort());

    // The TOC the server built: refs with the shift the insert caused, data for the new block.
    const toc = json<{ kind: string; offset?: number }[]>(['toc', mail], env);
    expect(toc.some((e) => e.kind === 'data')).toBe(true);
    expect(toc.some((e) => e.kind === 'ref' && e.offset! > 0)).toBe(true);
    expect(toc.some((e) => e.kind === 'ref' && e.offset === 0)).toBe(true);

    // Ranges of either version, byte-exact.
    for (const s of states) {
      for (const [file, bytes] of [
        [big, s.image],
        [mail, s.mail],
      ] as const) {
        for (let k = 0; k < 4; k++) {
          const start = rng.int(bytes.length - 5000);
          const end = start + rng.int(5000);
          const got = json<{ data: string }>(['cat', file, '--at', s.id, '--range', `${start}-${end}`], env);
          expect(Buffer.from(got.data, 'base64').equals(bytes.subarray(start, end + 1))).toBe(true);
        }
      }
      const target = path.join(tempDir(), 'out');
      ok(['restore', data, '--at', s.id, '--target', target], env);
      expect(fs.readFileSync(path.join(target, big)).equals(s.image)).toBe(true);
      expect(fs.readFileSync(path.join(target, mail)).equals(s.mail)).toBe(true);
    }
  });

  it('the server holds no plaintext: no marker, no file name, anywhere in its directory', () => {
    const everything = allBytes(srv.dir);
    expect(everything.length).toBeGreaterThan(1_000_000);
    expect(everything.includes(MARK)).toBe(false);
    expect(everything.includes('mailbox')).toBe(false);
    expect(everything.includes(path.basename(data))).toBe(false);
    expect(everything.includes('OVERWRITTEN')).toBe(false);
  });

  it('a cat reads only the blocks of its range in two round trips, and a second one comes from the block cache', async () => {
    const cache = path.join(tempDir(), 'cache');
    // With an exported key: no key files to fetch, no key derivation.
    const keyFile = path.join(tempDir(), 'key.json');
    ok(['key', 'export', keyFile], env);
    const e = { ...env, STRATA_CACHE_DIR: cache, STRATA_KEY_FILE: keyFile };
    const requests = async (run: () => void): Promise<string[]> => (await requestsDuring(srv, run)).map((l) => / (GET|POST|PUT|HEAD|DELETE) (\S+) /.exec(l)!.slice(1, 3).join(' '));
    let one!: { blocksRead: number; bytesReceived: number; data: string };
    const cold = await requests(() => (one = json(['cat', big, '--range', '1000000-1004095'], e)));
    expect(one.blocksRead).toBeLessThanOrEqual(2);
    expect(Buffer.from(one.data, 'base64').equals(states[1]!.image.subarray(1_000_000, 1_004_096))).toBe(true);
    // Cold: the config (kept from then on), one read plan, then the covering blocks; no tree walk. The plan
    // is checked against the sealed TOCs: the version's (its id comes with the plan) and, for each ref, the
    // version of the file in the snapshot it names (looked up, then its sealed TOC fetched).
    // Blocks asked for in the same turn of the event loop share one POST, others go one GET each.
    const blockRequest = (r: string) => r.startsWith('GET /v1/blocks/') || r === 'POST /v1/blocks/read';
    // The repository's compression dictionary too, when a block or sealed TOC read was compressed with it (it depends on where the keyed chunker cut).
    const lookup = (r: string) => /^GET \/v1\/(snapshots|snapshots\/\d+\/versions\/[0-9a-f]{64}|versions\/\d+\/record)$/.test(r) || /^(HEAD|GET) \/v1\/objects\/dict\/[0-9a-f]+$/.test(r);
    expect(cold.slice(0, 2)).toEqual(['GET /v1/objects/config/config', expect.stringMatching(/^GET \/v1\/paths\/[0-9a-f]{64}\/plan$/)]);
    expect(cold.slice(2).filter((r) => !blockRequest(r) && !lookup(r))).toEqual([]);
    const sealedTocs = 2; // the version's and its target's
    expect(cold.filter(blockRequest).length).toBeGreaterThanOrEqual(1);
    expect(cold.filter(blockRequest).length).toBeLessThanOrEqual(one.blocksRead + sealedTocs);
    let two!: { bytesReceived: number; data: string };
    const warm = await requests(() => (two = json(['cat', big, '--range', '1000000-1004095'], e)));
    expect(two.data).toBe(one.data);
    // Warm: blocks and sealed TOCs come from the cache; only the plan goes out.
    const plan = expect.stringMatching(/^GET \/v1\/paths\/[0-9a-f]{64}\/plan$/);
    expect(warm).toEqual([plan]);
    // Through a ref into the first snapshot: the cold read looks up the file's version there; a warm one
    // has it from the cache (a fact verified with the key, kept beside the blocks): only the plan goes out.
    // (A cache of its own: the first read's range may have reached a ref too.)
    const unchanged = ['cat', big, '--range', '200000-204095'];
    const e2 = { ...e, STRATA_CACHE_DIR: path.join(tempDir(), 'cache') };
    const coldRef = await requests(() => expect(Buffer.from(json<{ data: string }>(unchanged, e2).data, 'base64').equals(states[1]!.image.subarray(200_000, 204_096))).toBe(true));
    expect(coldRef.filter(lookup).length).toBeGreaterThan(0);
    const warmRef = await requests(() => expect(Buffer.from(json<{ data: string }>(unchanged, e2).data, 'base64').equals(states[1]!.image.subarray(200_000, 204_096))).toBe(true));
    expect(warmRef).toEqual([plan]);
    expect(two.bytesReceived).toBeLessThan(one.bytesReceived / 4);
    // The plan agrees with the walk: an older snapshot by id, and a path that is a directory.
    const old = json<{ data: string }>(['cat', big, '--at', states[0]!.id.slice(0, 8), '--range', '1000000-1004095'], e);
    expect(Buffer.from(old.data, 'base64').equals(states[0]!.image.subarray(1_000_000, 1_004_096))).toBe(true);
    expect(strata(['cat', data], e).stderr).toMatch(/is a directory/);
    // A damaged cache entry is fetched again, not trusted.
    for (const f of fs.readdirSync(cache, { recursive: true }) as string[]) {
      const p = path.join(cache, f);
      if (fs.statSync(p).isFile() && /^[0-9a-f]{64}$/.test(path.basename(f))) {
        const b = fs.readFileSync(p);
        b[b.length - 1] = b[b.length - 1]! ^ 1;
        fs.writeFileSync(p, b);
      }
    }
    const three = json<{ data: string }>(['cat', big, '--range', '1000000-1004095'], e);
    expect(three.data).toBe(one.data);
    const none = json<{ bytesReceived: number }>(['cat', big, '--range', '1000000-1004095', '--no-cache'], e);
    expect(none.bytesReceived).toBeGreaterThan(two.bytesReceived);
    // A restore takes cached blocks but does not fill the cache with the whole snapshot.
    const cached = () => (fs.readdirSync(cache, { recursive: true }) as string[]).filter((f) => /^[0-9a-f]{64}$/.test(path.basename(f))).length;
    const before = cached();
    const out = path.join(tempDir(), 'out');
    ok(['restore', big, '--target', out], e);
    expect(fs.readFileSync(path.join(out, big)).equals(states[1]!.image)).toBe(true);
    expect(cached() - before).toBeLessThan(states[1]!.image.length / 32768 / 4);
  });

  it('block bodies serve one HTTP byte range, as objects do', async () => {
    const id = /GET \/v1\/blocks\/([0-9a-f]{64}) 200 /.exec(srv.log())![1]!;
    const get = async (range?: string) => {
      const r = await fetch(`${srv.url}/v1/blocks/${id}`, { headers: { Authorization: `Bearer ${admin}`, ...(range ? { Range: range } : {}) } });
      return { status: r.status, headers: r.headers, body: Buffer.from(await r.arrayBuffer()) };
    };
    const whole = await get();
    expect(whole.status).toBe(200);
    expect(whole.headers.get('accept-ranges')).toBe('bytes');
    const part = await get('bytes=10-19');
    expect(part.status).toBe(206);
    expect(part.headers.get('content-range')).toBe(`bytes 10-19/${whole.body.length}`);
    expect(part.body.equals(whole.body.subarray(10, 20))).toBe(true);
    expect((await get('bytes=-5')).body.equals(whole.body.subarray(-5))).toBe(true);
    const past = await get(`bytes=${whole.body.length}-`);
    expect(past.status).toBe(416);
    expect(past.headers.get('content-range')).toBe(`bytes */${whole.body.length}`);
    expect((await get('bytes=0-1,4-5')).status).toBe(416);
  });

  it('several blocks in one request: a frame each, in order, an empty one for a block not there', async () => {
    const ids = [...srv.log().matchAll(/GET \/v1\/blocks\/([0-9a-f]{64}) 200 /g)].map((m) => m[1]!);
    const known = [...new Set(ids)].slice(0, 2);
    expect(known).toHaveLength(2);
    const ask = [known[0]!, 'ab'.repeat(32), known[1]!, known[0]!];
    const r = await fetch(`${srv.url}/v1/blocks/read`, { method: 'POST', headers: { Authorization: `Bearer ${admin}` }, body: Buffer.concat(ask.map((h) => Buffer.from(h, 'hex'))) });
    expect(r.status).toBe(200);
    const body = Buffer.from(await r.arrayBuffer());
    const frames: Buffer[] = [];
    for (let at = 0; at < body.length; at += 4 + body.readUInt32LE(at)) frames.push(body.subarray(at + 4, at + 4 + body.readUInt32LE(at)));
    const one = async (h: string) => Buffer.from(await (await fetch(`${srv.url}/v1/blocks/${h}`, { headers: { Authorization: `Bearer ${admin}` } })).arrayBuffer());
    expect(frames).toHaveLength(4);
    expect(frames[0]!.equals(await one(known[0]!))).toBe(true);
    expect(frames[1]!.length).toBe(0);
    expect(frames[2]!.equals(await one(known[1]!))).toBe(true);
    expect(frames[3]!.equals(frames[0]!)).toBe(true);
    const bad = await fetch(`${srv.url}/v1/blocks/read`, { method: 'POST', headers: { Authorization: `Bearer ${admin}` }, body: Buffer.alloc(33) });
    expect(bad.status).toBe(400);
    // A read of many blocks asks for them together.
    const [, from] = await logMark(srv);
    const out = path.join(tempDir(), 'out');
    ok(['restore', big, '--target', out, '--no-cache'], env);
    const [to] = await logMark(srv);
    const reqs = srv.log().slice(from, to);
    const batches = (reqs.match(/POST \/v1\/blocks\/read 200 /g) ?? []).length;
    const singles = (reqs.match(/GET \/v1\/blocks\/[0-9a-f]{64} 200 /g) ?? []).length;
    expect(batches).toBeGreaterThan(0);
    // Beside the blocks' requests, the sealed TOCs of the file's versions, fetched one by one as the check reaches them.
    const sealedTocs = states.length;
    expect(batches + singles).toBeLessThan(states.at(-1)!.image.length / 32768 / 8 + sealedTocs);
  });

  it('roles: read tokens read and cannot back up; a bad token or no token is a clear error', () => {
    const reader = client(srv.url, token(srv.dir, 'reader', 'read'));
    expect(json<unknown[]>(['snapshots'], reader)).toHaveLength(states.length);
    const denied = strata(['backup', data], reader);
    expect(denied.status).not.toBe(0);
    expect(denied.stderr).toMatch(/does not allow|append role/);
    const bad = strata(['snapshots'], client(srv.url, 'strata_not-a-token'));
    expect(bad.status).not.toBe(0);
    expect(bad.stderr).toMatch(/refused the token/);
    const none = strata(['snapshots'], cliEnv(srv.url, { STRATA_TOKEN: undefined }));
    expect(none.status).toBe(2);
    expect(none.stderr).toMatch(/needs a token/);
  });

  it('what runs where the repository is says so, instead of failing halfway', () => {
    for (const args of [['rebuild-catalog'], ['unlock']]) {
      const r = strata(args, env);
      expect(r.status, args.join(' ')).toBe(2);
      expect(r.stderr).toMatch(/runs (where the repository is|on the server)/);
    }
  });

  it('the same data under another path is not uploaded again', () => {
    const copy = tempDir('strata-remote-copy-');
    fs.copyFileSync(big, path.join(copy, 'same.bin'));
    const r = json<{ bytesSent: number }>(['backup', copy], env);
    expect(r.bytesSent).toBeLessThan(200_000);
  });

  it('forget and prune over the server: refs into the forgotten snapshot are rewritten, space comes back, the rest reads byte-exact', () => {
    const appender = client(srv.url, token(srv.dir, 'appender', 'append'));
    const denied = strata(['forget', states[0]!.id], appender);
    expect(denied.status).not.toBe(0);
    expect(denied.stderr).toMatch(/admin/);
    const packBytes = () => (fs.readdirSync(path.join(srv.dir, 'packs'), { recursive: true }) as string[]).reduce((n, f) => n + fs.statSync(path.join(srv.dir, 'packs', f)).size * (fs.statSync(path.join(srv.dir, 'packs', f)).isFile() ? 1 : 0), 0);
    const before = packBytes();
    const f = json<{ removed: string[]; rewrittenVersions: number }>(['forget', states[0]!.id], env);
    expect(f.removed).toEqual([states[0]!.id]);
    expect(f.rewrittenVersions).toBeGreaterThan(0);
    const p = json<{ deletedBlocks: number; bytesFreed: number }>(['prune'], env);
    expect(p.deletedBlocks).toBeGreaterThan(0);
    expect(p.bytesFreed).toBeGreaterThan(0);
    expect(packBytes()).toBeLessThan(before - p.bytesFreed / 2);
    const s = states[1]!;
    const target = path.join(tempDir(), 'out');
    ok(['restore', data, '--at', s.id, '--target', target], env);
    expect(fs.readFileSync(path.join(target, big)).equals(s.image)).toBe(true);
    expect(fs.readFileSync(path.join(target, mail)).equals(s.mail)).toBe(true);
    // The TOCs forget rewrote were resealed too: the catalog rebuilt from the packs on the server reads the same.
    const local = cliEnv(srv.dir);
    ok(['rebuild-catalog'], local);
    const again = path.join(tempDir(), 'out');
    ok(['restore', data, '--at', s.id, '--target', again], local);
    expect(fs.readFileSync(path.join(again, mail)).equals(s.mail)).toBe(true);
    states.shift();
  });
});

describe('remote backups under faults and load', () => {
  it('check over the server: clean, then a damaged pack is found, named by file and range, repaired and healed', async () => {
    const dir = path.join(tempDir(), 'served');
    const srv = await serve(dir);
    const env = client(srv.url, token(dir, 'ops', 'admin'));
    ok(['init', '--scrypt-n', '1024', '--pack-size', '256K'], env);
    const data = tempDir('strata-remote-check-');
    const bytes = new Rng(11).bytes(3_000_000);
    fs.writeFileSync(path.join(data, 'f.bin'), bytes);
    ok(['backup', data], env);
    const clean = json<{ ok: boolean; packsRead: number }>(['check', '--read-data'], env);
    expect(clean.ok).toBe(true);
    expect(clean.packsRead).toBeGreaterThan(3);
    // The largest pack holds file data: damage one byte in its middle.
    const packs = (fs.readdirSync(path.join(dir, 'packs'), { recursive: true }) as string[]).map((f) => path.join(dir, 'packs', f)).filter((f) => fs.statSync(f).isFile());
    const victim = packs.sort((a, b) => fs.statSync(b).size - fs.statSync(a).size)[0]!;
    const b = fs.readFileSync(victim);
    b[b.length >> 1] = b[b.length >> 1]! ^ 0xff;
    fs.writeFileSync(victim, b);
    const r = strata(['check', '--read-data', '--reset', '--json'], env);
    expect(r.status).toBe(1);
    const report = JSON.parse(r.stdout) as { ok: boolean; damagedBlocks: string[]; damagedFiles: { path: string; ranges: [number, number][] }[] };
    expect(report.damagedBlocks).toHaveLength(1);
    expect(report.damagedFiles.map((f) => f.path)).toEqual([path.join(data, 'f.bin')]);
    const repaired = JSON.parse(strata(['check', '--read-data', '--reset', '--repair', '--json'], env).stdout) as { repaired: number };
    expect(repaired.repaired).toBe(1);
    ok(['backup', '--force', data], env);
    const healed = strata(['check', '--read-data', '--reset', '--json'], env);
    expect(healed.status, healed.stdout).toBe(0);
    const out = path.join(tempDir(), 'out');
    ok(['restore', data, '--target', out], env);
    expect(fs.readFileSync(path.join(out, data, 'f.bin')).equals(bytes)).toBe(true);
  });

  it('forget and prune by an admin without the key: packs with nothing in use go, a rebuild still reads every survivor, a prune with the key finishes the job', async () => {
    const dir = path.join(tempDir(), 'served');
    const s = await serve(dir);
    const tok = token(dir, 'ops', 'admin');
    const env = client(s.url, tok);
    const keyless = client(s.url, tok, { STRATA_PASSWORD: undefined });
    ok(['init', '--scrypt-n', '1024', '--pack-size', '1M'], env);
    const data = tempDir('strata-remote-keyless-');
    const rng = new Rng(11);
    const gone = path.join(data, 'gone.bin');
    const kept = path.join(data, 'kept.bin');
    fs.writeFileSync(gone, rng.bytes(3_000_000));
    fs.writeFileSync(kept, rng.bytes(2_000_000));
    const first = json<{ snapshot: string }>(['backup', data], env).snapshot;
    fs.rmSync(gone);
    const fd = fs.openSync(kept, 'r+');
    fs.writeSync(fd, Buffer.from('edited in the middle'), 0, 20, 1_000_000);
    fs.closeSync(fd);
    ok(['backup', data], env);
    fs.appendFileSync(kept, rng.bytes(300_000));
    ok(['backup', data], env);
    const latest = fs.readFileSync(kept);

    // No password, no key file: the admin token alone.
    const tagged = strata(['forget', '--no-key', '--keep-tag', 'x'], keyless);
    expect(tagged.status).toBe(2);
    expect(tagged.stderr).toMatch(/tags are sealed/);
    const reader = strata(['forget', '--no-key', first], client(s.url, token(dir, 'reader', 'read'), { STRATA_PASSWORD: undefined }));
    expect(reader.status).not.toBe(0);
    expect(reader.stderr).toMatch(/admin/);
    const f = json<{ removed: string[]; staleTocs: number; groups: { lineage: string }[] }>(['forget', '--no-key', '--keep-last', '2'], keyless);
    expect(f.removed).toEqual([first]);
    expect(f.groups[0]!.lineage).toMatch(/^[0-9a-f]{64}$/);
    expect(f.staleTocs).toBeGreaterThan(0);
    const p = json<{ deletedPacks: number; packsNeedingKey: number; bytesFreed: number; repackedPacks: number }>(['prune', '--no-key'], keyless);
    expect(p.deletedPacks).toBeGreaterThan(0); // gone.bin filled packs of its own
    expect(p.bytesFreed).toBeGreaterThan(1_000_000);
    expect(p.repackedPacks).toBe(0);
    expect(p.packsNeedingKey).toBeGreaterThan(0);
    expect(json<{ id: string }[]>(['snapshots'], env).map((x) => x.id)).not.toContain(first);
    expect(strata(['cat', kept], env).raw.equals(latest)).toBe(true);
    expect(json<{ ok: boolean }>(['check'], env).ok).toBe(true);

    // The survivors' sealed TOCs still point into the forgotten snapshot, whose sealed metadata prune kept:
    // a catalog rebuilt from a copy of the packs reads every survivor byte-exact.
    s.proc.kill('SIGTERM');
    await s.exited;
    const copy = path.join(tempDir(), 'copy');
    fs.cpSync(dir, copy, { recursive: true });
    ok(['rebuild-catalog'], cliEnv(copy));
    expect(strata(['cat', kept], cliEnv(copy)).raw.equals(latest)).toBe(true);

    // A prune with the key reseals those TOCs and repacks what the keyless one left.
    const s2 = await serve(dir);
    const env2 = client(s2.url, tok);
    const q = json<{ resealedTocs: number; repackedPacks: number; packsNeedingKey: number }>(['prune'], env2);
    expect(q.resealedTocs).toBe(f.staleTocs);
    expect(q.repackedPacks).toBeGreaterThan(0);
    expect(q.packsNeedingKey).toBe(0);
    s2.proc.kill('SIGTERM');
    await s2.exited;
    // Now the forget is final: a rebuilt catalog has no trace of the snapshot, and reads the rest.
    const local = cliEnv(dir);
    ok(['rebuild-catalog'], local);
    expect(json<{ id: string }[]>(['snapshots'], local).map((x) => x.id)).not.toContain(first);
    expect(strata(['cat', kept], local).raw.equals(latest)).toBe(true);
    expect(json<{ ok: boolean }>(['check', '--read-data'], local).ok).toBe(true);
  });

  it('malformed catalog requests by the thousand: each gets a 4xx JSON error, then a normal backup and restore work', async () => {
    const dir = path.join(tempDir(), 'served');
    const srv = await serve(dir);
    const tok = token(dir, 'ops', 'admin');
    const env = client(srv.url, tok);
    ok(['init', '--scrypt-n', '1024'], env);
    const data = tempDir('strata-remote-bad-');
    fs.writeFileSync(path.join(data, 'f.bin'), new Rng(3).bytes(500_000));
    ok(['backup', data], env);
    const rng = new Rng(77);
    const hex = (n: number) => rng.bytes(n).toString('hex');
    const params = () => rng.pick(['1', '0', '-1', 'abc', '..', '%2e%2e', '%00', '9'.repeat(30), hex(32), hex(31) + 'g', hex(16), '']);
    const queries = () => rng.pick(['', '?start=0&end=10', '?start=10&end=0', '?start=-1&end=x', `?prefix=${hex(2)}`, '?prefix=ZZ', '?until=abc', `?start=0&end=${'9'.repeat(20)}`, '?suffix=5', '?start=0&end=1&start=3']);
    const bodies = (): Buffer | undefined =>
      rng.pick([
        undefined,
        Buffer.alloc(0),
        rng.bytes(1 + rng.int(300)),
        Buffer.from('{"a":[1,'),
        Buffer.from('[]'),
        Buffer.from('null'),
        Buffer.from(JSON.stringify({ snapshots: 'x', entries: [[1, 2]], lineage: 5, time: -1, parent: 'p', blocks: [1], packs: [hex(32)], started: 'x', which: 'old', tocs: [{}], dryRun: 'yes', waitMs: 'soon' })),
        Buffer.from(JSON.stringify({ entries: [[hex(32), 'data', 0, 10, 10]], id: hex(32), lease: 'x', time: 1, lineage: '', meta: '', parent: null, root: hex(32), record: hex(32), blobs: [hex(32)] })),
        Buffer.from(JSON.stringify({ tocs: [null], snapshots: [null], packs: [null], blocks: [null], entries: null, blobs: [null], which: null })),
        Buffer.concat([Buffer.from([5, 0, 0, 0, 3]), rng.bytes(40)]),
      ]);
    const catalogRoutes = routeTable().filter((r) => !r.path.startsWith('/v1/objects') && r.path !== '/v1/health');
    const statuses: number[] = [];
    let n = 0;
    const worker = async () => {
      while (n < 1500) {
        n++;
        const r = rng.pick(catalogRoutes);
        const p = r.path.replace(/\{[a-z]+\}/g, params) + queries();
        const body = r.method === 'GET' || r.method === 'DELETE' ? undefined : bodies();
        const reply = await send(srv.url, r.method, p, tok, body);
        statuses.push(reply.status);
        if (reply.status >= 400) expect(reply.json, `${r.method} ${p}`).toMatchObject({ error: expect.any(String), message: expect.any(String) });
      }
    };
    await Promise.all(Array.from({ length: 16 }, worker));
    expect(statuses.filter((c) => c >= 500)).toEqual([]);
    expect(new Set(statuses)).toContain(400);
    expect(new Set(statuses)).toContain(404);
    fs.writeFileSync(path.join(data, 'g.bin'), new Rng(4).bytes(300_000));
    ok(['backup', data], env);
    const out = path.join(tempDir(), 'out');
    ok(['restore', data, '--target', out], env);
    for (const f of ['f.bin', 'g.bin']) expect(fs.readFileSync(path.join(out, data, f)).equals(fs.readFileSync(path.join(data, f)))).toBe(true);
    expect(json<{ ok: boolean }>(['check'], env).ok).toBe(true);
  });

  it('a client killed mid-upload: nothing half-committed shows, and the retry sends only what is missing', async () => {
    const dir = path.join(tempDir(), 'served');
    const srv = await serve(dir);
    const env = client(srv.url, token(dir, 'app', 'append'));
    ok(['init', '--scrypt-n', '1024', '--pack-size', '256K'], env);
    const data = tempDir('strata-remote-kill-');
    const bytes = new Rng(7).bytes(12_000_000);
    fs.writeFileSync(path.join(data, 'f.bin'), bytes);
    const child = strataAsync(['backup', data], env);
    // Kill once a third of the packs are indexed.
    await until(() => (srv.log().match(/POST \/v1\/packs\/\S+ 201/g) ?? []).length >= 15, 30_000);
    child.kill('SIGKILL');
    await new Promise((r) => child.on('exit', r));
    expect(json<unknown[]>(['snapshots'], env)).toHaveLength(0);
    const retry = json<{ bytesSent: number }>(['backup', data], env);
    expect(retry.bytesSent).toBeLessThan(bytes.length * 0.8);
    const out = path.join(tempDir(), 'out');
    ok(['restore', data, '--target', out], env);
    expect(fs.readFileSync(path.join(out, data, 'f.bin')).equals(bytes)).toBe(true);
  });

  it('a server killed mid-backup and restarted: what was committed is there, the retried backup completes', async () => {
    const dir = path.join(tempDir(), 'served');
    let srv = await serve(dir);
    const port = Number(new URL(srv.url).port);
    const env = client(srv.url, token(dir, 'app', 'append'), { STRATA_REPO: srv.url });
    ok(['init', '--scrypt-n', '1024', '--pack-size', '256K'], env);
    const data = tempDir('strata-remote-srvkill-');
    const first = new Rng(8).bytes(2_000_000);
    fs.writeFileSync(path.join(data, 'a.bin'), first);
    const committed = json<{ snapshot: string }>(['backup', data], env).snapshot;
    fs.writeFileSync(path.join(data, 'b.bin'), new Rng(9).bytes(12_000_000));
    const child = strataAsync(['backup', data], env);
    const childExit = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
    await until(() => (srv.log().match(/POST \/v1\/packs\/\S+ 201/g) ?? []).length >= 10, 30_000);
    srv.proc.kill('SIGKILL');
    await srv.exited;
    srv = await serve(dir, port);
    // The client retries with backoff; it may finish against the new server or fail clearly.
    const code = await childExit;
    const snaps = json<{ id: string }[]>(['snapshots'], env);
    expect(snaps[0]!.id).toBe(committed);
    expect(snaps.length).toBe(code === 0 ? 2 : 1);
    ok(['backup', data], env);
    const out = path.join(tempDir(), 'out');
    ok(['restore', data, '--target', out], env);
    expect(fs.readFileSync(path.join(out, data, 'a.bin')).equals(first)).toBe(true);
    expect(fs.readFileSync(path.join(out, data, 'b.bin')).equals(fs.readFileSync(path.join(data, 'b.bin')))).toBe(true);
  });

  it('8 clients backing up different trees and 8 reading ranges at once: all succeed, byte-exact; server memory stays bounded', async () => {
    const dir = path.join(tempDir(), 'served');
    const srv = await serve(dir);
    const env = client(srv.url, token(dir, 'app', 'append'));
    ok(['init', '--scrypt-n', '1024'], env);
    const seed = tempDir('strata-remote-seed-');
    const seedBytes = new Rng(99).bytes(3_000_000);
    fs.writeFileSync(path.join(seed, 's.bin'), seedBytes);
    ok(['backup', seed], env);
    const trees = Array.from({ length: 8 }, (_, i) => {
      const d = tempDir(`strata-remote-load-${i}-`);
      const bytes = new Rng(100 + i).bytes(1_500_000);
      fs.writeFileSync(path.join(d, 'f.bin'), bytes);
      return { d, bytes };
    });
    const run = (args: string[]) =>
      new Promise<{ code: number | null; out: string; err: string }>((resolve) => {
        const c = strataAsync(args, { ...env, STRATA_CACHE_DIR: path.join(tempDir(), 'cache') });
        let out = '';
        let err = '';
        c.stdout.on('data', (b: Buffer) => (out += b.toString()));
        c.stderr.on('data', (b: Buffer) => (err += b.toString()));
        c.on('exit', (code) => resolve({ code, out, err }));
      });
    const rng = new Rng(5);
    const reads = Array.from({ length: 8 }, () => {
      const start = rng.int(seedBytes.length - 70_000);
      return { start, end: start + 65_535 };
    });
    const results = await Promise.all([
      ...trees.map((t) => run(['backup', t.d, '--json'])),
      ...reads.map((r) => run(['cat', path.join(seed, 's.bin'), '--range', `${r.start}-${r.end}`, '--json'])),
    ]);
    for (const r of results) expect(r.code, r.err).toBe(0);
    results.slice(8).forEach((r, i) => {
      const got = Buffer.from((JSON.parse(r.out) as { data: string }).data, 'base64');
      expect(got.equals(seedBytes.subarray(reads[i]!.start, reads[i]!.end + 1))).toBe(true);
    });
    for (const t of trees) {
      const out = path.join(tempDir(), 'out');
      ok(['restore', t.d, '--target', out], env);
      expect(fs.readFileSync(path.join(out, t.d, 'f.bin')).equals(t.bytes)).toBe(true);
    }
    const hwm = Number(/VmHWM:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${srv.proc.pid}/status`, 'utf8'))![1]) * 1024;
    expect(hwm).toBeLessThan(400 * 1024 * 1024);
  });
});

function send(url: string, method: string, p: string, tok: string, body?: Buffer): Promise<{ status: number; json: unknown }> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = { Authorization: `Bearer ${tok}` };
    if (body) headers['Content-Length'] = String(body.length);
    const req = http.request(`${url}${p}`, { method, headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let json: unknown;
        try {
          json = JSON.parse(text);
        } catch {
          json = undefined;
        }
        resolve({ status: res.statusCode ?? 0, json });
      });
    });
    req.on('error', reject);
    req.end(body);
  });
}

/**
 * Where the server's log stands: a request of its own, waited for in the log.
 * The log reaches us through a pipe and is written as each response closes, so
 * a pause is no fence; a marker is. Lines of requests that ended earlier come
 * before it. Gives where the marker's line starts and where the next begins.
 */
/** The request lines the server logged while `run` ran. */
async function requestsDuring(srv: Server, run: () => void): Promise<string[]> {
  const [, from] = await logMark(srv);
  run();
  const [to] = await logMark(srv);
  return srv
    .log()
    .slice(from, to)
    .split('\n')
    .filter((l) => / (GET|POST|PUT|HEAD|DELETE) /.test(l));
}

async function logMark(srv: { url: string; log: () => string }): Promise<[number, number]> {
  const tag = `/v1/mark-${crypto.randomBytes(8).toString('hex')}`;
  await (await fetch(srv.url + tag)).arrayBuffer();
  await until(() => srv.log().includes(` ${tag} `), 30_000);
  const log = srv.log();
  const at = log.lastIndexOf('\n', log.indexOf(` ${tag} `)) + 1;
  const next = log.indexOf('\n', at);
  return [at, next < 0 ? log.length : next + 1];
}

async function until(check: () => boolean, ms: number): Promise<void> {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('inherited versions through a server', () => {
  it('an unchanged file has no row, a removed one a tombstone; a forget through the server hands rows down; all reads stay exact', async () => {
    const dir = path.join(tempDir(), 'served');
    const srv = await serve(dir);
    const env = client(srv.url, token(dir, 'admin', 'admin'));
    ok(['init', '--scrypt-n', '1024'], env);
    const data = tempDir('strata-remote-inherit-');
    const rng = new Rng(12);
    const keep = rng.bytes(50_000);
    fs.writeFileSync(path.join(data, 'keep'), keep);
    fs.writeFileSync(path.join(data, 'gone'), 'soon gone');
    fs.mkdirSync(path.join(data, 'sub'));
    fs.writeFileSync(path.join(data, 'sub', 'x'), 'x');
    const one = json<{ snapshot: string }>(['backup', data], env);
    fs.rmSync(path.join(data, 'gone'));
    fs.rmSync(path.join(data, 'sub'), { recursive: true });
    fs.writeFileSync(path.join(data, 'new'), 'new');
    const two = json<{ snapshot: string; filesUnchanged: number; filesNew: number }>(['backup', data], env);
    expect(two).toMatchObject({ filesUnchanged: 1, filesNew: 1 });
    // The server's catalog: the second snapshot owns the new file's row and two tombstones, nothing for the unchanged one.
    const Database = (await import('better-sqlite3')).default;
    const db = new Database(path.join(dir, 'catalog.db'), { readonly: true });
    const sizes = db.prepare('SELECT v.size FROM versions v JOIN snapshots s ON s.seq = v.snapshot WHERE s.id = ? ORDER BY v.size').pluck().all(two.snapshot);
    db.close();
    expect(sizes).toEqual([-1, -1, 3]);
    expect(strata(['cat', path.join(data, 'keep'), '--at', two.snapshot], env).raw.equals(keep)).toBe(true);
    expect(strata(['cat', path.join(data, 'gone'), '--at', two.snapshot], env).status).not.toBe(0);
    expect(ok(['cat', path.join(data, 'gone'), '--at', one.snapshot], env)).toBe('soon gone');
    ok(['forget', one.snapshot], env);
    ok(['prune'], env);
    expect(strata(['cat', path.join(data, 'keep'), '--at', two.snapshot], env).raw.equals(keep)).toBe(true);
    expect(strata(['cat', path.join(data, 'new'), '--at', two.snapshot], env).stdout).toBe('new');
    ok(['check', '--read-data'], env);
  });
});

describe('compression dictionaries through a server', () => {
  it('a backup stores its dictionary on the server, sealed; other clients fetch it to read, restore and check', async () => {
    const dir = path.join(tempDir(), 'served');
    const srv = await serve(dir);
    const env = client(srv.url, token(dir, 'admin', 'admin'));
    ok(['init', '--scrypt-n', '1024'], env);
    const data = tempDir('strata-remote-dict-');
    const MARK = 'zq-dict-PLAINTEXT-5531';
    const rng = new Rng(31);
    const words = 'request served login failed retry cache miss backend timeout connection worker queue latency error warn session token upload'.split(' ');
    const lines: string[] = [];
    for (let n = 0, i = 0; n < 4_000_000; i++) {
      const line = `${i} host${rng.int(16)} ${MARK}: ${Array.from({ length: 8 + rng.int(8) }, () => rng.pick(words)).join(' ')} id=${rng.int(1_000_000)}\n`;
      lines.push(line);
      n += line.length;
    }
    const text = Buffer.from(lines.join(''));
    fs.writeFileSync(path.join(data, 'app.log'), text);
    ok(['backup', data], env);
    expect(fs.readdirSync(path.join(dir, 'dicts'))).toHaveLength(1);
    expect(allBytes(dir).includes(Buffer.from(MARK))).toBe(false);
    // A reader with its own, empty cache fetches the dictionary as it needs it.
    const readToken = token(dir, 'reader', 'read');
    const reader = client(srv.url, readToken);
    expect(strata(['cat', path.join(data, 'app.log')], reader).raw.equals(text)).toBe(true);
    // A reader keeps the dictionary in its block cache: the next process asks only for the read plan.
    // Near the end: the first blocks went out before the dictionary was made.
    const mid = Math.floor(text.length * 0.9);
    const range = ['cat', path.join(data, 'app.log'), '--range', `${mid}-${mid + 4095}`];
    const ranger = client(srv.url, readToken);
    const cold = await requestsDuring(srv, () => expect(strata(range, ranger).raw.equals(text.subarray(mid, mid + 4096))).toBe(true));
    expect(cold.filter((l) => l.includes('/v1/objects/dict/')).length, cold.join('\n')).toBeGreaterThan(0);
    const warm = await requestsDuring(srv, () => expect(strata(range, ranger).raw.equals(text.subarray(mid, mid + 4096))).toBe(true));
    expect(warm.filter((l) => l.includes('/v1/objects/dict/'))).toEqual([]);
    // A damaged cached copy is fetched again, not trusted.
    const cacheDir = ranger.STRATA_CACHE_DIR!;
    for (const f of fs.readdirSync(cacheDir, { recursive: true }) as string[]) {
      const p = path.join(cacheDir, f);
      if (fs.statSync(p).isFile() && /^[0-9a-f]{64}$/.test(path.basename(f))) {
        const b = fs.readFileSync(p);
        b[b.length - 1] = b[b.length - 1]! ^ 1;
        fs.writeFileSync(p, b);
      }
    }
    expect(strata(range, ranger).raw.equals(text.subarray(mid, mid + 4096))).toBe(true);
    const target = tempDir('strata-remote-dict-out-');
    ok(['restore', '--target', target], reader);
    expect(fs.readFileSync(path.join(target, data, 'app.log')).equals(text)).toBe(true);
    ok(['check', '--read-data'], env);
  });
});
