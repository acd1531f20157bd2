/**
 * `strata ui`'s server without a browser: the real command on 127.0.0.1,
 * asked over real HTTP. Who may ask (the one-time token, the session cookie,
 * Host and Origin), and what each API answers, against the bytes and the
 * history the test wrote and against the engine's own answers.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { backup } from '../src/engine/backup.js';
import { SnapshotTree } from '../src/engine/snapshot-tree.js';
import { Repository } from '../src/repo/repository.js';
import { cliEnv, makeRepo, Rng, strata, tempDir } from './helpers.js';
import { client, serve, token } from './server-helpers.js';
import { login, request, startUi, type RunningUi } from './ui-helpers.js';

const PASSWORD = { password: async () => 'test-password' };

describe('strata ui: the API', () => {
  let root: string;
  let env: NodeJS.ProcessEnv;
  let dir: string;
  let file: string;
  let ui: RunningUi;
  let cookie: string;
  const ids: string[] = [];
  const versions: Buffer[] = [];
  const names: string[] = [];

  beforeAll(async () => {
    const rng = new Rng(5);
    const repo = await makeRepo({ chunkAvg: 1024 });
    root = repo.root;
    dir = path.join(tempDir(), 'src');
    const many = path.join(dir, 'many');
    fs.mkdirSync(many, { recursive: true });
    for (let i = 0; i < 2500; i++) {
      const name = `n${String((i * 7919) % 2500).padStart(4, '0')}${i % 3 === 0 ? '.txt' : '.bin'}`;
      fs.writeFileSync(path.join(many, name), Buffer.alloc(i % 50, 1));
      names.push(name);
    }
    file = path.join(dir, 'f.bin');
    // A FIFO: listed as one, never read.
    execFileSync('mkfifo', [path.join(dir, 'pipe')]);
    let data = rng.bytes(200_000);
    const steps = [
      () => data,
      () => Buffer.concat([data.subarray(0, 50_000), rng.bytes(10_000), data.subarray(60_000)]),
      () => (fs.writeFileSync(path.join(dir, 'other'), 'x'), data),
      () => Buffer.concat([data, rng.bytes(20_000)]),
    ];
    for (let k = 0; k < steps.length; k++) {
      data = steps[k]!();
      fs.writeFileSync(file, data);
      ids.push((await backup(repo, { paths: [dir], time: Date.UTC(2026, 1, 1 + k) })).snapshot);
      versions.push(data);
    }
    repo.close();
    env = cliEnv(root, { STRATA_PASSWORD: 'test-password' });
    ui = await startUi(env);
    cookie = await login(ui);
  });

  const api = async (p: string, headers: Record<string, string> = {}) => {
    const r = await request(ui, p, { headers: { cookie, ...headers } });
    if (r.status !== 200) throw new Error(`${p}: ${r.status} ${r.body.toString()}`);
    return r.json() as Record<string, unknown> & { [k: string]: never };
  };
  const q = (o: Record<string, string | number>) => new URLSearchParams(Object.entries(o).map(([k, v]) => [k, String(v)])).toString();

  it('the one-time token becomes an HttpOnly, SameSite=Strict cookie once; the page carries a Content-Security-Policy', async () => {
    const other = await startUi(env);
    expect((await request(other, '/?token=wrong')).status).toBe(403);
    expect((await request(other, '/')).status).toBe(403);
    const first = await request(other, `/?token=${other.token}`);
    expect(first.status).toBe(200);
    const set = String(first.headers['set-cookie']);
    expect(set).toMatch(/HttpOnly/);
    expect(set).toMatch(/SameSite=Strict/);
    expect(first.headers['content-security-policy']).toMatch(/default-src 'none'; script-src 'self'/);
    expect(first.headers['referrer-policy']).toBe('no-referrer');
    // Used once: the same link again, without the cookie, is refused.
    const again = await request(other, `/?token=${other.token}`);
    expect(again.status).toBe(403);
    expect(again.json()).toMatchObject({ error: { code: 'forbidden' } });
    const c = set.split(';')[0]!;
    expect((await request(other, '/', { headers: { cookie: c } })).status).toBe(200);
    expect((await request(other, '/api/snapshots', { headers: { cookie: c } })).status).toBe(200);
    // Neither the token nor the cookie appears in what the command prints to its log.
    expect(other.stderr()).not.toContain(other.token);
    expect(other.stderr()).not.toContain(c.split('=')[1]);
    expect(other.stdout()).not.toContain(c.split('=')[1]);
  });

  it('refuses a missing or wrong cookie, a foreign Origin, another site, and a Host that is not its own', async () => {
    expect((await request(ui, '/api/snapshots')).status).toBe(403);
    expect((await request(ui, '/api/snapshots', { headers: { cookie: 'strata_ui=forged' } })).status).toBe(403);
    expect((await request(ui, `/api/download?${q({ path: file })}`)).status).toBe(403);
    const foreign = await request(ui, '/api/snapshots', { headers: { cookie, origin: 'http://evil.example' } });
    expect(foreign.status).toBe(403);
    expect(foreign.json()).toMatchObject({ error: { message: expect.stringMatching(/other sites/) } });
    expect((await request(ui, '/api/snapshots', { headers: { cookie, origin: `http://${ui.host}` } })).status).toBe(200);
    expect((await request(ui, '/api/snapshots', { headers: { cookie, 'sec-fetch-site': 'cross-site' } })).status).toBe(403);
    // DNS rebinding: a name of the attacker's that resolves to 127.0.0.1 arrives in Host.
    const port = new URL(ui.origin).port;
    expect((await request(ui, '/api/snapshots', { headers: { cookie, host: `evil.example:${port}` } })).status).toBe(421);
    expect((await request(ui, '/api/snapshots', { headers: { cookie, host: '127.0.0.1:1' } })).status).toBe(421);
    expect((await request(ui, '/api/snapshots', { headers: { cookie, host: `localhost:${port}` } })).status).toBe(200);
    // A restore posted from another site writes nothing.
    const target = path.join(tempDir(), 'evil');
    const post = await request(ui, '/api/restore', { method: 'POST', headers: { cookie, origin: 'http://evil.example', 'content-type': 'application/json' }, body: JSON.stringify({ at: ids[0], paths: [file], target }) });
    expect(post.status).toBe(403);
    expect(fs.existsSync(target)).toBe(false);
  });

  it('snapshots: the timeline', async () => {
    const r = (await api('/api/snapshots')) as unknown as { snapshots: { id: string; time: number; files: number; paths: string[] }[] };
    expect(r.snapshots.map((s) => s.id)).toEqual(ids);
    expect(r.snapshots.map((s) => s.time)).toEqual(ids.map((_, k) => Date.UTC(2026, 1, 1 + k)));
    expect(r.snapshots[0]!.paths).toEqual([dir]);
    expect(r.snapshots[0]!.files).toBeGreaterThan(2500);
  });

  it('snapshots: the timeline a page at a time, newest first', async () => {
    const first = (await api(`/api/snapshots?${q({ offset: 0, limit: 3 })}`)) as unknown as { total: number; offset: number; snapshots: { id: string }[] };
    expect(first.total).toBe(ids.length);
    expect(first.snapshots.map((s) => s.id)).toEqual([...ids].reverse().slice(0, 3));
    const rest = (await api(`/api/snapshots?${q({ offset: 3, limit: 3 })}`)) as unknown as { snapshots: { id: string }[] };
    expect(rest.snapshots.map((s) => s.id)).toEqual([ids[0]]);
    expect((await request(ui, `/api/snapshots?${q({ limit: 'many' })}`, { headers: { cookie } })).status).toBe(400);
    expect((await request(ui, `/api/snapshots?${q({ limit: 3 })}`)).status).toBe(403);
  });

  it('the timeline opens only the snapshots of its page: one whose sealed metadata is damaged spoils its own page alone', async () => {
    const repo = await makeRepo();
    const src = path.join(tempDir(), 'src');
    fs.mkdirSync(src);
    const made: string[] = [];
    for (let k = 0; k < 5; k++) {
      fs.writeFileSync(path.join(src, 'a'), `v${k}`);
      made.push((await backup(repo, { paths: [src], time: Date.UTC(2026, 2, 1 + k) })).snapshot);
    }
    // The oldest snapshot's sealed metadata, one byte changed in the catalog.
    const meta = repo.catalog.db.prepare('SELECT meta FROM snapshots WHERE id = ?').pluck().get(made[0]) as Buffer;
    meta[meta.length - 1]! ^= 1;
    repo.catalog.db.prepare('UPDATE snapshots SET meta = ? WHERE id = ?').run(meta, made[0]);
    const ownRoot = repo.root;
    repo.close();
    const other = await startUi(cliEnv(ownRoot, { STRATA_PASSWORD: 'test-password' }));
    const c = await login(other);
    const page = (offset: number, limit: number) => request(other, `/api/snapshots?${q({ offset, limit })}`, { headers: { cookie: c } });
    const newest = await page(0, 4);
    expect(newest.status).toBe(200);
    expect(newest.json()).toMatchObject({ total: 5, offset: 0, snapshots: [...made].reverse().slice(0, 4).map((id) => ({ id })) });
    const oldest = await page(4, 1);
    expect(oldest.status).toBe(409);
    expect(oldest.json()).toMatchObject({ error: { code: 'integrity' } });
    // The newest snapshot's files open without the damaged one's metadata.
    expect((await request(other, `/api/list?${q({ at: 'latest', path: src })}`, { headers: { cookie: c } })).json()).toMatchObject({ snapshot: made[4], total: 1 });
  });

  it('list: pages, sorting and search of a 2,500-entry directory, done by the server', async () => {
    const many = path.join(dir, 'many');
    const sorted = [...names].sort();
    const pages: string[] = [];
    for (let offset = 0; ; offset += 700) {
      const r = (await api(`/api/list?${q({ at: ids[3]!, path: many, offset, limit: 700 })}`)) as unknown as { total: number; entries: { name: string }[] };
      expect(r.total).toBe(2500);
      pages.push(...r.entries.map((e) => e.name));
      if (r.entries.length < 700) break;
    }
    expect(pages).toEqual(sorted);
    const bySize = (await api(`/api/list?${q({ at: ids[3]!, path: many, sort: 'size', order: 'desc', limit: 5 })}`)) as unknown as { entries: { size: number }[] };
    expect(bySize.entries.map((e) => e.size)).toEqual([49, 49, 49, 49, 49]);
    const found = (await api(`/api/list?${q({ at: ids[3]!, path: many, q: 'N001', limit: 1000 })}`)) as unknown as { total: number; entries: { name: string }[] };
    expect(found.entries.map((e) => e.name)).toEqual(sorted.filter((n) => n.toLowerCase().includes('n001')));
    expect(found.total).toBe(found.entries.length);
    const big = (await api(`/api/list?${q({ at: ids[3]!, path: many, limit: 100000 })}`)) as unknown as { entries: unknown[] };
    expect(big.entries.length).toBe(1000);
    expect((await request(ui, `/api/list?${q({ at: ids[3]!, path: file })}`, { headers: { cookie } })).json()).toMatchObject({ error: { code: 'not_directory' } });
    expect((await request(ui, `/api/list?${q({ at: ids[3]!, path: dir, sort: 'evil' })}`, { headers: { cookie } })).status).toBe(400);
  });

  it('a FIFO is listed, stat\'ed and has a history; its preview and download are refused (not a file), never a crash', async () => {
    const pipe = path.join(dir, 'pipe');
    const listed = (await api(`/api/list?${q({ at: ids[3]!, path: dir })}`)) as unknown as { entries: { name: string; type: string }[] };
    expect(listed.entries.find((e) => e.name === 'pipe')).toMatchObject({ type: 'fifo' });
    expect(await api(`/api/stat?${q({ at: ids[3]!, path: pipe })}`)).toMatchObject({ entry: { name: 'pipe', type: 'fifo', size: 0 } });
    const h = (await api(`/api/history?${q({ at: ids[3]!, path: pipe })}`)) as unknown as { versions: { type: string; changed: boolean }[] };
    expect(h.versions.map((v) => v.type)).toEqual(['fifo', 'fifo', 'fifo', 'fifo']);
    expect(h.versions.map((v) => v.changed)).toEqual([true, false, false, false]);
    for (const route of ['/api/preview', '/api/download']) {
      const r = await request(ui, `${route}?${q({ at: ids[3]!, path: pipe })}`, { headers: { cookie } });
      expect(r.status, route).toBeGreaterThanOrEqual(400);
      expect(r.status, route).toBeLessThan(500);
      expect(r.json(), route).toMatchObject({ error: { code: 'not_file', message: expect.stringMatching(/is a FIFO, not a file/) } });
    }
  });

  it("history: every version with its size, bytes changed, data and reference bytes", async () => {
    const r = (await api(`/api/history?${q({ at: ids[3]!, path: file })}`)) as unknown as { versions: { snapshot: string; size: number; changed: boolean; bytesChanged: number; dataBytes: number; refBytes: number }[] };
    expect(r.versions.map((v) => v.snapshot)).toEqual(ids);
    expect(r.versions.map((v) => v.size)).toEqual(versions.map((v) => v.length));
    expect(r.versions.map((v) => v.changed)).toEqual([true, true, false, true]);
    for (const v of r.versions) expect(v.dataBytes + v.refBytes).toBe(v.size);
    expect(r.versions[0]).toMatchObject({ dataBytes: 200_000, refBytes: 0, bytesChanged: 200_000 });
    // The 10 KB overwrite and the 20 KB append: their blocks are new, most of the file is referenced.
    expect(r.versions[1]!.bytesChanged).toBeGreaterThanOrEqual(10_000);
    expect(r.versions[1]!.refBytes).toBeGreaterThan(100_000);
    expect(r.versions[2]).toMatchObject({ bytesChanged: 0, dataBytes: r.versions[1]!.dataBytes });
    expect(r.versions[3]!.bytesChanged).toBeGreaterThanOrEqual(20_000);
  });

  it('toc, blame and compare agree with the engine and with strata diff', async () => {
    const repo = await Repository.open(root, PASSWORD, { readonly: true });
    try {
      const f = await (await SnapshotTree.open(repo, { at: ids[3] })).open(file);
      const map = (await api(`/api/toc?${q({ at: ids[3]!, path: file })}`)) as unknown as { entries: unknown[]; sources: unknown[]; size: number; times: Record<string, number> };
      expect(map.entries).toEqual((await f.toc()).entries);
      expect(map.sources).toEqual(await f.blame());
      expect(new Set(Object.keys(map.times))).toEqual(new Set((await f.blame()).map((s) => s.snapshot)));
      const b = (await api(`/api/blame?${q({ at: ids[3]!, path: file, start: 40_000, end: 70_000 })}`)) as unknown as { spans: { snapshot: string }[]; order: Record<string, number> };
      expect(b.spans).toEqual(await f.blame(40_000, 70_000));
      // Each coloured snapshot's place in the whole list, oldest first: the colour is the same on every page.
      const place = (list: string[]) => Object.fromEntries([...new Set(list)].map((id) => [id, ids.indexOf(id)]));
      expect(b.order).toEqual(place(b.spans.map((s) => s.snapshot)));
      expect((map as unknown as { order: Record<string, number> }).order).toEqual(place([...(await f.blame()).map((s) => s.snapshot), ids[3]!]));
      const h = (await api(`/api/history?${q({ at: ids[3]!, path: file })}`)) as unknown as { order: Record<string, number> };
      expect(h.order).toEqual(place(ids));
    } finally {
      repo.close();
    }
    const c = (await api(`/api/compare?${q({ path: file, a: ids[0]!, b: ids[1]! })}`)) as unknown as { added: [number, number][]; removed: [number, number][] };
    const d = JSON.parse(strata(['diff', ids[0]!, ids[1]!, '--json'], env).stdout) as { changed: { path: string; ranges: [number, number][]; replaced: [number, number][] }[] };
    const mine = d.changed.find((x) => x.path === file)!;
    expect(c.added).toEqual(mine.ranges);
    expect(c.removed).toEqual(mine.replaced);
    // The changed ranges hold the overwritten bytes.
    expect(c.added.some(([s, e]) => s <= 50_000 && e >= 59_999)).toBe(true);
  });

  it('preview: the bytes of a range, at most 64 KiB', async () => {
    const p = (await api(`/api/preview?${q({ at: ids[1]!, path: file, start: 49_990, length: 40 })}`)) as unknown as { data: string; length: number };
    expect(Buffer.from(p.data, 'base64').equals(versions[1]!.subarray(49_990, 50_030))).toBe(true);
    const big = (await api(`/api/preview?${q({ at: ids[1]!, path: file, start: 0, length: 1_000_000 })}`)) as unknown as { length: number };
    expect(big.length).toBe(64 * 1024);
    const end = (await api(`/api/preview?${q({ at: ids[1]!, path: file, start: 199_990, length: 100 })}`)) as unknown as { data: string };
    expect(Buffer.from(end.data, 'base64').equals(versions[1]!.subarray(199_990))).toBe(true);
    expect((await request(ui, `/api/preview?${q({ at: ids[1]!, path: file, start: 300_000 })}`, { headers: { cookie } })).status).toBe(416);
  });

  it('download: the whole file, a range, and HTTP Range within either', async () => {
    const truth = versions[3]!;
    const whole = await request(ui, `/api/download?${q({ at: ids[3]!, path: file })}`, { headers: { cookie } });
    expect(whole.status).toBe(200);
    expect(whole.headers['accept-ranges']).toBe('bytes');
    expect(whole.headers['content-disposition']).toMatch(/attachment; filename="f.bin"/);
    expect(whole.body.equals(truth)).toBe(true);
    const ranged = await request(ui, `/api/download?${q({ at: ids[3]!, path: file })}`, { headers: { cookie, range: 'bytes=12345-67890' } });
    expect(ranged.status).toBe(206);
    expect(ranged.headers['content-range']).toBe(`bytes 12345-67890/${truth.length}`);
    expect(ranged.body.equals(truth.subarray(12345, 67891))).toBe(true);
    const suffix = await request(ui, `/api/download?${q({ at: ids[3]!, path: file })}`, { headers: { cookie, range: 'bytes=-100' } });
    expect(suffix.body.equals(truth.subarray(truth.length - 100))).toBe(true);
    const part = await request(ui, `/api/download?${q({ at: ids[0]!, path: file, start: 1000, end: 1999 })}`, { headers: { cookie } });
    expect(part.status).toBe(200);
    expect(part.body.equals(versions[0]!.subarray(1000, 2000))).toBe(true);
    const inPart = await request(ui, `/api/download?${q({ at: ids[0]!, path: file, start: 1000, end: 1999 })}`, { headers: { cookie, range: 'bytes=10-19' } });
    expect(inPart.headers['content-range']).toBe('bytes 10-19/1000');
    expect(inPart.body.equals(versions[0]!.subarray(1010, 1020))).toBe(true);
    const bad = await request(ui, `/api/download?${q({ at: ids[3]!, path: file })}`, { headers: { cookie, range: `bytes=${truth.length}-` } });
    expect(bad.status).toBe(416);
    expect(bad.headers['content-range']).toBe(`bytes */${truth.length}`);
    expect((await request(ui, `/api/download?${q({ at: ids[3]!, path: dir })}`, { headers: { cookie } })).status).toBe(400);
    expect((await request(ui, `/api/download?${q({ at: ids[3]!, path: path.join(dir, 'nope') })}`, { headers: { cookie } })).status).toBe(404);
  });

  it('restore: a selection into a directory, with progress; nothing written outside the target', async () => {
    const base = tempDir();
    const target = path.join(base, 'out');
    const post = (body: unknown) => request(ui, '/api/restore', { method: 'POST', headers: { cookie, origin: ui.origin, 'content-type': 'application/json' }, body: JSON.stringify(body) });
    const started = await post({ at: ids[1], paths: [file], target });
    expect(started.status).toBe(202);
    let job = started.json() as { id: string; state: string; bytes: number; total: number | null; files: number; error?: unknown };
    for (let i = 0; i < 200 && job.state === 'running'; i++) {
      await new Promise((r) => setTimeout(r, 50));
      job = (await api(`/api/restore?${q({ job: job.id })}`)) as unknown as typeof job;
    }
    expect(job).toMatchObject({ state: 'done', files: 1, total: versions[1]!.length, bytes: versions[1]!.length });
    expect(fs.readFileSync(path.join(target, file)).equals(versions[1]!)).toBe(true);
    expect(fs.readdirSync(base)).toEqual(['out']);
    // Refused before anything is written: a relative target, a file as target, the root, paths that are not plain.
    fs.writeFileSync(path.join(base, 'afile'), '');
    const refusals = [
      { at: ids[1], paths: [file], target: 'relative/dir' },
      { at: ids[1], paths: [file], target: path.join(base, 'afile') },
      { at: ids[1], paths: [file], target: '/' },
      { at: ids[1], paths: [file], target: path.join(base, 'no', 'such', 'parent') },
      { at: ids[1], paths: [`${dir}/../../../etc/passwd`], target: path.join(base, 'x') },
      { at: ids[1], paths: ['relative'], target: path.join(base, 'x') },
      { at: ids[1], paths: [], target: path.join(base, 'x') },
      { at: ids[1], paths: [file], target: path.join(base, 'x'), overwrite: 'sometimes' },
    ];
    for (const body of refusals) {
      const r = await post(body);
      expect(r.status, JSON.stringify(body)).toBeGreaterThanOrEqual(400);
      expect(r.status).toBeLessThan(500);
    }
    expect(fs.readdirSync(base).sort()).toEqual(['afile', 'out']);
    expect((await request(ui, '/api/restore', { method: 'POST', headers: { cookie, 'content-type': 'text/plain' }, body: '{}' })).status).toBe(400);
  });

  it('--open hands the link to xdg-open', async () => {
    const bin = tempDir();
    const said = path.join(bin, 'opened');
    fs.writeFileSync(path.join(bin, 'xdg-open'), `#!/bin/sh\nprintf '%s' "$1" > ${said}\n`, { mode: 0o755 });
    const other = await startUi({ ...env, PATH: `${bin}:${process.env.PATH}` }, ['--open']);
    for (let i = 0; i < 100 && !fs.existsSync(said); i++) await new Promise((r) => setTimeout(r, 50));
    expect(fs.readFileSync(said, 'utf8')).toBe(other.url);
    // Ctrl-C: it stops at once, and says it stopped well.
    const exited = new Promise<number | null>((r) => other.proc.once('exit', (code) => r(code)));
    other.proc.kill('SIGINT');
    expect(await exited).toBe(0);
  });

  it('a served repository answers the same', async () => {
    const srv = await serve(root);
    const remote = await startUi(client(srv.url, token(root, 'ui-reader', 'read'), { STRATA_PASSWORD: 'test-password' }));
    const c = await login(remote);
    const get = async (p: string, headers: Record<string, string> = {}) => request(remote, p, { headers: { cookie: c, ...headers } });
    expect((await get('/api/snapshots')).json()).toEqual(await api('/api/snapshots'));
    for (const page of [`/api/snapshots?${q({ offset: 1, limit: 2 })}`, `/api/history?${q({ at: ids[3]!, path: file })}`, `/api/toc?${q({ at: ids[3]!, path: file })}`]) {
      expect((await get(page)).json()).toEqual(await api(page));
    }
    const list = `/api/list?${q({ at: ids[3]!, path: path.join(dir, 'many'), sort: 'size', offset: 100, limit: 50 })}`;
    expect((await get(list)).json()).toEqual(await api(list));
    const blame = `/api/blame?${q({ at: ids[3]!, path: file, start: 1000, end: 150_000 })}`;
    expect((await get(blame)).json()).toEqual(await api(blame));
    const part = await get(`/api/download?${q({ at: ids[2]!, path: file })}`, { range: 'bytes=45000-70000' });
    expect(part.status).toBe(206);
    expect(part.body.equals(versions[2]!.subarray(45_000, 70_001))).toBe(true);
  });

  it('listens on loopback only, unless told otherwise', () => {
    const r = strata(['ui', '--listen', '0.0.0.0:0'], env);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/refusing to listen on 0\.0\.0\.0.*--insecure-listen/);
  });
});
