/**
 * `strata ui`'s datasets and items without a browser: the real command on
 * 127.0.0.1 over a repository holding an mbox, zip and tar archives made by
 * zip and tar, a bare ext4 image made by mkfs.ext4,
 * and a SQLite database made by better-sqlite3. The manifest,
 * item listings and their paging, item bytes byte for byte against
 * `strata item` and the originals, Range downloads, previews, SQL pages
 * against better-sqlite3, SQL errors and a query stopped for its time, and
 * the session checks on every new route.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import Database from 'better-sqlite3';
import { beforeAll, describe, expect, it } from 'vitest';
import { initCliRepo, Rng, strata, tempDir } from './helpers.js';
import { login, request, startUi, type RunningUi } from './ui-helpers.js';

const MESSAGES = 250;
const ROWS = 5000;

function message(i: number): string {
  return [
    `From: Sender ${i} <s${i}@example.org>`,
    `Subject: note ${i}`,
    `Date: Mon, 1 Jan 2024 00:${String(i % 60).padStart(2, '0')}:00 +0000`,
    `Message-ID: <m${i}@example.org>`,
    '',
    `Body of ${i}.`,
    ...(i % 3 === 0 ? ['From the start of a line', '>From quoted'] : ['plain']),
    '',
  ].join('\n');
}

describe('strata ui: datasets and items', () => {
  let env: NodeJS.ProcessEnv;
  let data: string;
  let snap: string;
  let ui: RunningUi;
  let cookie: string;
  const file = (name: string) => path.join(data, name);
  const q = (o: Record<string, string | number>) => new URLSearchParams(Object.entries(o).map(([k, v]) => [k, String(v)])).toString();
  const api = async <T>(p: string): Promise<T> => {
    const r = await request(ui, p, { headers: { cookie } });
    if (r.status !== 200) throw new Error(`${p}: ${r.status} ${r.body.toString()}`);
    return r.json() as T;
  };
  const cli = (args: string[]) => {
    const r = strata(args, env);
    expect(r.status, r.stderr).toBe(0);
    return r;
  };

  beforeAll(async () => {
    ({ env } = initCliRepo());
    data = path.join(tempDir(), 'data');
    fs.mkdirSync(path.join(data, 'tree/sub'), { recursive: true });
    fs.writeFileSync(file('mail.mbox'), Array.from({ length: MESSAGES }, (_, i) => `From s@example.org Mon Jan  1 00:00:00 2024\n${message(i).replace(/^(>*From )/gm, '>$1')}\n`).join(''));
    fs.writeFileSync(file('tree/a.txt'), 'alpha\n'.repeat(5000));
    fs.writeFileSync(file('tree/sub/random.bin'), new Rng(7).bytes(300_000));
    execFileSync('zip', ['-qr', file('tree.zip'), 'tree'], { cwd: data });
    execFileSync('tar', ['--format=gnu', '-cf', file('tree.tar'), 'tree'], { cwd: data });
    const db = new Database(file('app.db'));
    db.exec('CREATE TABLE people (id INTEGER PRIMARY KEY, name TEXT, photo BLOB)');
    const add = db.prepare('INSERT INTO people VALUES (?, ?, ?)');
    db.transaction(() => {
      for (let i = 0; i < ROWS; i++) add.run(i, `person ${i}`, i % 10 === 0 ? Buffer.from([i & 255, 0, 1]) : null);
    })();
    db.close();
    // A bare ext4 image made by mkfs.ext4 from a directory.
    const root = path.join(tempDir(), 'root');
    fs.mkdirSync(path.join(root, 'docs'), { recursive: true });
    fs.writeFileSync(path.join(root, 'docs', 'note.txt'), 'a note inside an image\n'.repeat(300));
    execFileSync('mkfs.ext4', ['-q', '-F', '-d', root, file('fs.img'), '4M']);
    snap = (JSON.parse(cli(['backup', data, '--json']).stdout) as { snapshot: string }).snapshot;
    ui = await startUi(env);
    cookie = await login(ui);
  });

  it('lists the manifest: the datasets of a snapshot, as strata manifest does', async () => {
    const r = await api<{ snapshot: string; datasets: { path: string; type: string; size: number }[] }>(`/api/datasets?${q({ at: snap })}`);
    expect(r.snapshot).toBe(snap);
    const truth = JSON.parse(cli(['manifest', '--at', snap, '--json']).stdout) as { datasets: unknown[] };
    expect(r.datasets).toEqual(truth.datasets);
    expect(r.datasets.map((d) => [path.basename(d.path), d.type])).toEqual([
      ['app.db', 'sqlite'],
      ['fs.img', 'disk'],
      ['mail.mbox', 'mbox'],
      ['tree.tar', 'tar'],
      ['tree.zip', 'zip'],
    ]);
    expect(r.datasets.find((d) => d.type === 'zip')!.size).toBe(fs.statSync(file('tree.zip')).size);
  });

  it("pages through a mailbox's messages on the server, with their sender, subject and date", async () => {
    const truth = (JSON.parse(cli(['items', file('mail.mbox'), '--json']).stdout) as { items: Record<string, unknown>[] }).items;
    const all: Record<string, unknown>[] = [];
    for (let offset = 0; ; offset += 100) {
      const r = await api<{ type: string; total: number | null; offset: number; more: boolean; items: Record<string, unknown>[] }>(`/api/items?${q({ at: snap, path: file('mail.mbox'), offset, limit: 100 })}`);
      expect(r.type).toBe('mbox');
      // The count is known once the listing has been read to its end.
      expect(r.total).toBe(r.more ? null : MESSAGES);
      expect(r.offset).toBe(offset);
      all.push(...r.items);
      if (!r.more) break;
    }
    // A page read again after the end was reached says the count.
    expect((await api<{ total: number; more: boolean }>(`/api/items?${q({ at: snap, path: file('mail.mbox'), offset: 0, limit: 100 })}`)).total).toBe(MESSAGES);
    expect(all).toHaveLength(MESSAGES);
    expect(all.map(({ id: _id, kind: _kind, name: _name, ...rest }) => rest)).toEqual(truth);
    expect(all[17]).toMatchObject({ id: '18', kind: 'message', from: 'Sender 17 <s17@example.org>', subject: 'note 17', date: 'Mon, 1 Jan 2024 00:17:00 +0000' });
    const found = await api<{ total: number; items: { id: string }[] }>(`/api/items?${q({ at: snap, path: file('mail.mbox'), q: 'NOTE 24' })}`);
    expect(found.items.map((m) => m.id)).toEqual(['25', ...Array.from({ length: 10 }, (_, k) => String(241 + k))]);
    const capped = await api<{ items: unknown[] }>(`/api/items?${q({ at: snap, path: file('mail.mbox'), limit: 100000 })}`);
    expect(capped.items).toHaveLength(MESSAGES);
  });

  it('lists a zip of 20,000 entries a page at a time: its central directory is read as far as the page goes, and the next page goes on from there', async () => {
    const src = path.join(tempDir(), 'big');
    fs.mkdirSync(path.join(src, 'entries'), { recursive: true });
    for (let i = 0; i < 20_000; i++) fs.writeFileSync(path.join(src, 'entries', `entry-with-a-longish-name-${String(i).padStart(5, '0')}.txt`), '');
    execFileSync('zip', ['-qr', path.join(src, 'many.zip'), 'entries'], { cwd: src });
    const zip = fs.readFileSync(path.join(src, 'many.zip'));
    // The central directory's size, from the end record.
    const dirSize = zip.readUInt32LE(zip.length - 22 + 12);
    expect(dirSize).toBeGreaterThan(1_500_000);
    const at = (JSON.parse(cli(['backup', path.join(src, 'many.zip'), '--json']).stdout) as { snapshot: string }).snapshot;
    const zipPath = path.join(src, 'many.zip');
    type Page = { total: number | null; more: boolean; fetched: number; items: { id: string; size: number; mtime: string }[] };
    const page = (offset: number) => api<Page>(`/api/items?${q({ at, path: zipPath, offset, limit: 1000 })}`);
    const first = await page(0);
    expect(first.items).toHaveLength(1000);
    expect(first).toMatchObject({ total: null, more: true });
    expect(first.fetched).toBeLessThan(dirSize / 3);
    const all = [...first.items];
    let fetched = first.fetched;
    for (let offset = 1000; ; offset += 1000) {
      const r = await page(offset);
      all.push(...r.items);
      fetched += r.fetched;
      if (!r.more) {
        expect(r.total).toBe(20_001);
        break;
      }
    }
    // Each page went on from the last one's end: the directory was read about once in all.
    expect(fetched).toBeLessThan(dirSize * 1.5 + 512 * 1024);
    const truth = (JSON.parse(cli(['items', zipPath, '--at', at, '--json']).stdout) as { items: { name: string }[] }).items;
    expect(all.map((e) => e.id)).toEqual(truth.map((e) => e.name));
    // Back to an earlier page: read again from the start, the same entries.
    expect((await page(3000)).items).toEqual(all.slice(3000, 4000));
  });

  it('lists zip and tar entries and SQLite tables, and refuses a file that is no dataset', async () => {
    for (const name of ['tree.zip', 'tree.tar']) {
      const r = await api<{ items: { id: string; kind: string; size: number }[] }>(`/api/items?${q({ at: snap, path: file(name) })}`);
      const files = r.items.filter((e) => e.kind === 'file');
      expect(files.map((e) => e.id).sort()).toEqual(['tree/a.txt', 'tree/sub/random.bin']);
      expect(files.find((e) => e.id === 'tree/sub/random.bin')!.size).toBe(300_000);
    }
    const t = await api<{ items: { id: string; kind: string; columns: string[] }[] }>(`/api/items?${q({ at: snap, path: file('app.db') })}`);
    expect(t.items).toEqual([{ id: 'people', kind: 'table', name: 'people', type: 'table', columns: ['id', 'name', 'photo'] }]);
    const wrong = await request(ui, `/api/items?${q({ at: snap, path: file('tree/a.txt') })}`, { headers: { cookie } });
    expect(wrong.status).toBe(415);
    expect(wrong.json()).toMatchObject({ error: { code: 'wrong_format', message: expect.stringMatching(/is text, not/) } });
    const missing = await request(ui, `/api/item?${q({ at: snap, path: file('tree.zip'), item: 'nope' })}`, { headers: { cookie } });
    expect(missing.status).toBe(404);
  });

  it("gives each item's bytes exactly as strata item does, and honours Range", async () => {
    const cases: [string, string, Buffer][] = [
      ['tree.zip', 'tree/sub/random.bin', fs.readFileSync(file('tree/sub/random.bin'))],
      ['tree.zip', 'tree/a.txt', fs.readFileSync(file('tree/a.txt'))],
      ['tree.tar', 'tree/sub/random.bin', fs.readFileSync(file('tree/sub/random.bin'))],
      ['mail.mbox', '4', Buffer.from(message(3))],
      ['mail.mbox', '<m200@example.org>', Buffer.from(message(200))],
    ];
    for (const [ds, item, original] of cases) {
      const engine = cli(['item', file(ds), item, '--at', snap]).raw;
      expect(engine.equals(original)).toBe(true);
      const whole = await request(ui, `/api/item?${q({ at: snap, path: file(ds), item })}`, { headers: { cookie } });
      expect(whole.status).toBe(200);
      expect(whole.body.equals(engine), `${ds} ${item}`).toBe(true);
      expect(whole.headers['content-disposition']).toMatch(/^attachment/);
      const size = engine.length;
      const part = await request(ui, `/api/item?${q({ at: snap, path: file(ds), item })}`, { headers: { cookie, range: `bytes=10-${size - 20}` } });
      expect(part.status).toBe(206);
      expect(part.headers['content-range']).toBe(`bytes 10-${size - 20}/${size}`);
      expect(part.body.equals(engine.subarray(10, size - 19))).toBe(true);
      // A range that ends early: the reader is let go there (a deflated entry's inflater too).
      const head = await request(ui, `/api/item?${q({ at: snap, path: file(ds), item })}`, { headers: { cookie, range: 'bytes=0-99' } });
      expect(head.body.equals(engine.subarray(0, 100))).toBe(true);
      const tail = await request(ui, `/api/item?${q({ at: snap, path: file(ds), item })}`, { headers: { cookie, range: 'bytes=-7' } });
      expect(tail.body.equals(engine.subarray(size - 7))).toBe(true);
      const past = await request(ui, `/api/item?${q({ at: snap, path: file(ds), item })}`, { headers: { cookie, range: `bytes=${size}-` } });
      expect(past.status).toBe(416);
      expect(past.headers['content-range']).toBe(`bytes */${size}`);
    }
    // A zip entry's size is known before it is read: its length is said up front.
    const known = await request(ui, `/api/item?${q({ at: snap, path: file('tree.zip'), item: 'tree/a.txt' })}`, { headers: { cookie } });
    expect(known.headers['content-length']).toBe(String(30_000));
    expect(known.headers['accept-ranges']).toBe('bytes');
  });

  it("walks a disk image's partitions and directories, and gives a file's bytes as strata item does", async () => {
    const img = file('fs.img');
    const parts = await api<{ inner: string | null; items: { id: string; kind: string; filesystem: string }[] }>(`/api/items?${q({ at: snap, path: img })}`);
    expect(parts.inner).toBeNull();
    expect(parts.items).toMatchObject([{ id: 'p1:/', kind: 'partition', name: 'p1', filesystem: 'ext' }]);
    const top = await api<{ items: { id: string; kind: string }[] }>(`/api/items?${q({ at: snap, path: img, inner: 'p1:/' })}`);
    expect(top.items.find((e) => e.id === 'p1:/docs')).toMatchObject({ kind: 'dir', name: 'docs' });
    const docs = await api<{ items: { id: string; kind: string }[] }>(`/api/items?${q({ at: snap, path: img, inner: 'p1:/docs' })}`);
    expect(docs.items.map((e) => [e.id, e.kind])).toEqual([['p1:/docs/note.txt', 'file']]);
    const engine = cli(['item', img, 'p1:/docs/note.txt', '--at', snap]).raw;
    expect(engine.toString()).toBe('a note inside an image\n'.repeat(300));
    const whole = await request(ui, `/api/item?${q({ at: snap, path: img, item: 'p1:/docs/note.txt' })}`, { headers: { cookie } });
    expect(whole.body.equals(engine)).toBe(true);
    // The file system's stat gives the length up front: the file is never counted by reading it.
    expect(whole.headers['content-length']).toBe(String(engine.length));
    expect(whole.headers['accept-ranges']).toBe('bytes');
    const head = await api<{ size: number; more: boolean }>(`/api/item-preview?${q({ at: snap, path: img, item: 'p1:/docs/note.txt', length: 100 })}`);
    expect(head).toMatchObject({ size: engine.length, more: true });
    const part = await request(ui, `/api/item?${q({ at: snap, path: img, item: 'p1:/docs/note.txt' })}`, { headers: { cookie, range: 'bytes=100-4999' } });
    expect(part.status).toBe(206);
    expect(part.headers['content-range']).toBe(`bytes 100-4999/${engine.length}`);
    expect(part.body.equals(engine.subarray(100, 5000))).toBe(true);
  });

  it("previews a part of an item as bytes, and says whether more follows", async () => {
    const original = fs.readFileSync(file('tree/sub/random.bin'));
    const p = await api<{ size: number; start: number; length: number; more: boolean; data: string }>(`/api/item-preview?${q({ at: snap, path: file('tree.zip'), item: 'tree/sub/random.bin', start: 123_456, length: 5000 })}`);
    expect(p).toMatchObject({ size: 300_000, start: 123_456, length: 5000, more: true });
    expect(Buffer.from(p.data, 'base64').equals(original.subarray(123_456, 128_456))).toBe(true);
    const end = await api<{ length: number; more: boolean; data: string }>(`/api/item-preview?${q({ at: snap, path: file('tree.zip'), item: 'tree/sub/random.bin', start: 299_000, length: 65536 })}`);
    expect(end).toMatchObject({ length: 1000, more: false });
    expect(Buffer.from(end.data, 'base64').equals(original.subarray(299_000))).toBe(true);
    // A message's text does not say its length (escaped lines lose a byte each) until it has been read to its end.
    const m = await api<{ size: number | null; data: string; more: boolean }>(`/api/item-preview?${q({ at: snap, path: file('mail.mbox'), item: '1' })}`);
    expect(m.size).toBe(message(0).length);
    expect(Buffer.from(m.data, 'base64').toString()).toBe(message(0));
    expect(m.more).toBe(false);
    const itemQuery = q({ at: snap, path: file('mail.mbox'), item: '31' });
    const part = await api<{ size: number | null; more: boolean }>(`/api/item-preview?${itemQuery}&length=10`);
    expect(part).toMatchObject({ size: null, more: true });
    // A Range request counts it once; the count is remembered, for later ranges and previews.
    const ranged = await request(ui, `/api/item?${itemQuery}`, { headers: { cookie, range: 'bytes=5-9' } });
    expect(ranged.headers['content-range']).toBe(`bytes 5-9/${message(30).length}`);
    expect(ranged.body.toString()).toBe(message(30).slice(5, 10));
    expect((await api<{ size: number | null }>(`/api/item-preview?${itemQuery}&length=10`)).size).toBe(message(30).length);
  });

  it('runs read-only SQL a page at a time, with the rows better-sqlite3 gives', async () => {
    const db = new Database(file('app.db'), { readonly: true });
    const sql = 'SELECT id, name, photo FROM people WHERE id % 2 = 0 ORDER BY id DESC';
    const truth = db.prepare(sql).raw().all() as [number, string, Buffer | null][];
    db.close();
    const got: unknown[][] = [];
    let pages = 0;
    for (let offset = 0; ; offset += 1000) {
      const r = await api<{ columns: string[]; offset: number; rows: unknown[][]; more: boolean }>(`/api/sql?${q({ at: snap, path: file('app.db'), sql, offset, limit: 1000 })}`);
      expect(r.columns).toEqual(['id', 'name', 'photo']);
      got.push(...r.rows);
      pages++;
      expect(r.more).toBe(got.length < truth.length);
      if (!r.more) break;
    }
    expect(pages).toBe(Math.ceil(truth.length / 1000));
    expect(got).toEqual(truth.map(([id, name, photo]) => [id, name, photo === null ? null : { base64: photo.toString('base64'), bytes: photo.length }]));
    const small = await api<{ rows: unknown[][]; more: boolean }>(`/api/sql?${q({ at: snap, path: file('app.db'), sql: 'SELECT count(*) FROM people', limit: 5 })}`);
    expect(small).toMatchObject({ rows: [[ROWS]], more: false });
  });

  it("keeps a session's query open between pages: the next page goes on where the last ended, without running the query again", async () => {
    const truth = new Database(file('app.db'), { readonly: true });
    const sql = 'SELECT id, name FROM people ORDER BY name DESC, id';
    const want = truth.prepare(sql).raw().all();
    truth.close();
    type Page = { rows: unknown[][]; more: boolean; fetched: number; columns: string[] };
    const page = (offset: number, c = cookie) => request(ui, `/api/sql?${q({ at: snap, path: file('app.db'), sql, offset, limit: 1000 })}`, { headers: { cookie: c } }).then((r) => r.json() as Page);
    // The sort reads the whole table for the first page; the second takes the sorted rows SQLite holds.
    const first = await page(0);
    expect(first.columns).toEqual(['id', 'name']);
    expect(first.fetched).toBeGreaterThan(10_000);
    const second = await page(1000);
    expect(second.fetched).toBeLessThan(first.fetched / 4);
    const rest: unknown[][] = [];
    for (let offset = 2000, r = second; r.more; offset += 1000) {
      r = await page(offset);
      rest.push(...r.rows);
    }
    expect([...first.rows, ...second.rows, ...rest]).toEqual(want);
    // A page before the cursor runs the query again: the same rows, the table read again.
    const again = await page(1000);
    expect(again.rows).toEqual(want.slice(1000, 2000));
    expect(again.fetched).toBeGreaterThan(first.fetched / 2);
  });

  it('says clearly why a query failed: a write, a syntax error, a query that ran too long', async () => {
    const sqlAnswer = (sql: string, extra: Record<string, string | number> = {}) => request(ui, `/api/sql?${q({ at: snap, path: file('app.db'), sql, ...extra })}`, { headers: { cookie } });
    const write = await sqlAnswer('DELETE FROM people');
    expect(write.status).toBe(400);
    expect(write.json()).toMatchObject({ error: { code: 'usage', message: expect.stringMatching(/readonly|read-only|query_only/i) } });
    const bad = await sqlAnswer('SELEC nothing');
    expect(bad.status).toBe(400);
    expect(bad.json()).toMatchObject({ error: { message: expect.stringMatching(/syntax error/) } });
    const started = Date.now();
    const forever = await sqlAnswer('WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c', { timeout: 400 });
    expect(forever.status).toBe(408);
    expect(forever.json()).toMatchObject({ error: { code: 'request_timeout', message: expect.stringMatching(/ran longer than 0.4 s and was stopped/) } });
    expect(Date.now() - started).toBeLessThan(5000);
    // The server goes on answering, and the next query runs.
    expect((await api<{ rows: unknown[][] }>(`/api/sql?${q({ at: snap, path: file('app.db'), sql: 'SELECT name FROM people WHERE id = 42' })}`)).rows).toEqual([['person 42']]);
    expect((await sqlAnswer('SELECT 1', { limit: 'x' })).status).toBe(400);
    const notDb = await request(ui, `/api/sql?${q({ at: snap, path: file('tree.zip'), sql: 'SELECT 1' })}`, { headers: { cookie } });
    expect(notDb.status).toBe(415);
  });

  it('answers queries asked at once, one after another', async () => {
    const sqls = Array.from({ length: 6 }, (_, i) => `SELECT name FROM people WHERE id = ${i * 700}`);
    const rs = await Promise.all(sqls.map((sql) => api<{ rows: unknown[][] }>(`/api/sql?${q({ at: snap, path: file('app.db'), sql })}`)));
    expect(rs.map((r) => r.rows)).toEqual(sqls.map((_, i) => [[`person ${i * 700}`]]));
  });

  it('refuses every new route without the session cookie, from another origin, or under another Host', async () => {
    const routes = [
      `/api/datasets?${q({ at: snap })}`,
      `/api/items?${q({ at: snap, path: file('mail.mbox') })}`,
      `/api/item?${q({ at: snap, path: file('mail.mbox'), item: '1' })}`,
      `/api/item-preview?${q({ at: snap, path: file('mail.mbox'), item: '1' })}`,
      `/api/sql?${q({ at: snap, path: file('app.db'), sql: 'SELECT 1' })}`,
    ];
    const port = new URL(ui.origin).port;
    for (const r of routes) {
      const none = await request(ui, r);
      expect(none.status, r).toBe(403);
      expect(none.body.toString()).not.toContain('Body of');
      expect((await request(ui, r, { headers: { cookie: 'strata_ui=forged' } })).status).toBe(403);
      expect((await request(ui, r, { headers: { cookie, origin: 'http://evil.example' } })).status).toBe(403);
      expect((await request(ui, r, { headers: { cookie, 'sec-fetch-site': 'cross-site' } })).status).toBe(403);
      expect((await request(ui, r, { headers: { cookie, host: `evil.example:${port}` } })).status).toBe(421);
      expect((await request(ui, r, { headers: { cookie } })).status, r).toBe(200);
    }
  });
});
