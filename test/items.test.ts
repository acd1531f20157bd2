/**
 * strata items, item and sql on real files: an mbox of thousands of
 * messages with escaped "From " lines and a message put in the middle
 * between snapshots; zip and tar archives made by zip and tar; a SQLite
 * database changed between snapshots, and one whose WAL was backed up
 * beside it. Items byte for byte against their sources, bounds on what was
 * fetched, the same through `strata serve`, and the errors: another format,
 * a missing item, a damaged one.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import Database from 'better-sqlite3';
import { beforeAll, describe, expect, it } from 'vitest';
import { initCliRepo, Rng, strata, tempDir } from './helpers.js';
import { client, serve, token } from './server-helpers.js';

interface Summary {
  snapshot: string;
  type: string;
  size: number;
  fetched: number;
}

/** A message whose text has lines that an mbox must escape ("From ", ">From ", ">>From "). */
function message(i: number, extra = ''): string {
  const lines = [
    `From: Sender ${i} <s${i}@example.org>`,
    `To: r@example.org`,
    `Subject: ${i % 7 === 0 ? '=?utf-8?B?' + Buffer.from(`héllo ${i}`).toString('base64') + '?=' : `note ${i}`}`,
    `Date: Mon, 1 Jan 2024 00:${String(i % 60).padStart(2, '0')}:00 +0000`,
    `Message-ID: <m${i}${extra}@example.org>`,
    '',
    `Body of ${i}${extra}.`,
    ...(i % 3 === 0 ? ['From the start of a line', '>From already quoted', '>>From twice', 'From'] : ['plain line']),
    '',
  ];
  return lines.join('\n');
}

/** mboxrd: every line that is ">"s then "From " gets one more ">"; a blank line after each message. */
function mbox(messages: string[]): string {
  return messages.map((m) => `From s@example.org Mon Jan  1 00:00:00 2024\n${m.replace(/^(>*From )/gm, '>$1')}\n`).join('');
}

const N = 3000;

describe('strata items, item, sql', () => {
  let repo: string;
  let env: NodeJS.ProcessEnv;
  let data: string;
  let snap1: string;
  let snap2: string;
  let originals: string[];
  let inserted: string;
  const run = (args: string[], e = env) => strata(args, e);
  const json = <T>(args: string[], e = env): T & Summary => {
    const r = run([...args, '--json'], e);
    expect(r.status, r.stderr).toBe(0);
    return JSON.parse(r.stdout) as T & Summary;
  };
  const file = (name: string) => path.join(data, name);

  beforeAll(() => {
    ({ repo, env } = initCliRepo());
    data = path.join(tempDir(), 'data');
    fs.mkdirSync(path.join(data, 'tree/sub'), { recursive: true });
    originals = Array.from({ length: N }, (_, i) => message(i));
    fs.writeFileSync(file('mail.mbox'), mbox(originals));
    // Archives by the real tools: a tree of text and random bytes.
    fs.writeFileSync(file('tree/a.txt'), 'alpha\n'.repeat(5000));
    // Large enough that reading one entry's blocks, wherever the keyed chunker cuts, is far from reading the archive.
    fs.writeFileSync(file('tree/sub/random.bin'), new Rng(19).bytes(1_500_000));
    fs.writeFileSync(file('tree/sub/' + 'long-name-'.repeat(12) + '.txt'), 'a name over 100 bytes\n');
    execFileSync('zip', ['-qr', file('tree.zip'), 'tree'], { cwd: data });
    execFileSync('zip', ['-q0', file('stored.zip'), 'tree/a.txt'], { cwd: data });
    execFileSync('tar', ['--format=gnu', '-cf', file('tree.tar'), 'tree'], { cwd: data });
    execFileSync('tar', ['--format=pax', '-cf', file('pax.tar'), 'tree'], { cwd: data });
    const db = new Database(file('app.db'));
    db.exec('CREATE TABLE people (id INTEGER PRIMARY KEY, name TEXT, city TEXT); CREATE INDEX people_city ON people (city)');
    const add = db.prepare('INSERT INTO people VALUES (?, ?, ?)');
    db.transaction(() => {
      for (let i = 0; i < 60_000; i++) add.run(i, `person ${i} ${'x'.repeat(40)}`, `city ${i % 500}`);
    })();
    db.close();
    snap1 = json<{ snapshot: string }>(['backup', data]).snapshot;

    // Between snapshots: a message in the middle of the mailbox, rows changed.
    inserted = message(99999, '-inserted');
    fs.writeFileSync(file('mail.mbox'), mbox([...originals.slice(0, N / 2), inserted, ...originals.slice(N / 2)]));
    const db2 = new Database(file('app.db'));
    db2.exec("UPDATE people SET name = 'renamed' WHERE id = 42; DELETE FROM people WHERE id = 43");
    db2.close();
    snap2 = json<{ snapshot: string }>(['backup', data]).snapshot;
  });

  it('lists the messages of an mbox with their headers, at each snapshot', () => {
    const r1 = json<{ items: { number: number; offset: number; size: number; subject: string; from: string; messageId: string; date: string }[] }>(['items', file('mail.mbox'), '--at', snap1]);
    expect(r1.type).toBe('mbox');
    expect(r1.items).toHaveLength(N);
    expect(r1.items[7]).toMatchObject({ number: 8, subject: 'héllo 7', from: 'Sender 7 <s7@example.org>', messageId: 'm7@example.org', date: 'Mon, 1 Jan 2024 00:07:00 +0000' });
    const whole = fs.readFileSync(file('mail.mbox'));
    expect(r1.items.reduce((n, m) => n + m.size, 0)).toBe(r1.size);
    const r2 = json<{ items: { number: number; messageId: string; offset: number }[] }>(['items', file('mail.mbox')]);
    expect(r2.items).toHaveLength(N + 1);
    expect(r2.items[N / 2]!.messageId).toBe('m99999-inserted@example.org');
    expect(whole.toString('latin1', r2.items[N / 2]!.offset, r2.items[N / 2]!.offset + 5)).toBe('From ');
    const matched = json<{ items: { number: number }[] }>(['items', file('mail.mbox'), '--match', 'INSERTED']);
    expect(matched.items.map((m) => m.number)).toEqual([N / 2 + 1]);
  });

  it('gives one message as RFC 822, escaping undone, by number or Message-ID', () => {
    for (const i of [0, 3, 1499, N - 1]) {
      const r = run(['item', file('mail.mbox'), String(i + 1), '--at', snap1]);
      expect(r.status, r.stderr).toBe(0);
      expect(r.stdout).toBe(originals[i]);
    }
    expect(run(['item', file('mail.mbox'), String(N / 2 + 1)]).stdout).toBe(inserted);
    expect(run(['item', file('mail.mbox'), String(N / 2 + 2)]).stdout).toBe(originals[N / 2]);
    expect(run(['item', file('mail.mbox'), '<m2001@example.org>']).stdout).toBe(originals[2001]);
    const out = path.join(tempDir(), 'msg.eml');
    const j = json<{ item: string; length: number }>(['item', file('mail.mbox'), 'm300@example.org', '-o', out, '--at', snap1]);
    expect(fs.readFileSync(out, 'utf8')).toBe(originals[300]);
    expect(j).toMatchObject({ item: '<m300@example.org>', length: Buffer.byteLength(originals[300]!) });
  });

  it('fetches far less than the mailbox for an early message', () => {
    const j = json<{ data: string }>(['item', file('mail.mbox'), '4']);
    expect(Buffer.from(j.data, 'base64').toString()).toBe(originals[3]);
    expect(j.size).toBeGreaterThan(600_000);
    expect(j.fetched).toBeGreaterThan(0);
    expect(j.fetched).toBeLessThan(j.size / 3);
    const r = run(['item', file('mail.mbox'), '4', '--stats']);
    expect(r.stderr).toMatch(/^fetched .* of .*\d+ blocks read/m);
  });

  it('lists and extracts zip entries byte for byte, deflated and stored', () => {
    const l = json<{ items: { name: string; size: number; compressedSize: number }[] }>(['items', file('tree.zip')]);
    expect(l.type).toBe('zip');
    const names = l.items.map((e) => e.name);
    expect(names).toContain('tree/sub/random.bin');
    expect(names).toContain('tree/sub/' + 'long-name-'.repeat(12) + '.txt');
    expect(json<{ items: { name: string }[] }>(['items', file('tree.zip'), '--path', 'tree/sub']).items.every((e) => e.name.startsWith('tree/sub/'))).toBe(true);
    for (const [zip, name] of [
      ['tree.zip', 'tree/sub/random.bin'],
      ['tree.zip', 'tree/a.txt'],
      ['stored.zip', 'tree/a.txt'],
    ] as const) {
      const r = run(['item', file(zip), name]);
      expect(r.status, r.stderr).toBe(0);
      expect(r.raw.equals(fs.readFileSync(file(name)))).toBe(true);
    }
    // One small entry: its compressed bytes, the directory and the end record, not the archive. The
    // reads are the archive's last 64 KiB (where the end record is looked for) and the entry; each
    // read's blocks reach at most one block of 128 KiB past either end.
    const j = json<{ length: number; requested: number }>(['item', file('tree.zip'), 'tree/a.txt']);
    expect(j.length).toBe(30_000);
    const entry = l.items.find((e) => e.name === 'tree/a.txt')!;
    // Each read as it is (the end record, the directory, the entry's header and bytes), not rounded out.
    expect(j.requested).toBeLessThanOrEqual(entry.compressedSize + 4096);
    expect(j.fetched).toBeLessThanOrEqual(64 * 1024 + entry.compressedSize + 1024 + 4 * 128 * 1024);
    expect(j.fetched).toBeLessThan(j.size / 2);
  });

  it('lists and extracts tar entries (GNU long names, pax) byte for byte', () => {
    for (const tar of ['tree.tar', 'pax.tar']) {
      const l = json<{ items: { name: string; type: string; size: number }[] }>(['items', file(tar)]);
      expect(l.type).toBe('tar');
      const long = 'tree/sub/' + 'long-name-'.repeat(12) + '.txt';
      expect(l.items.find((e) => e.name === long)).toMatchObject({ type: 'file', size: 22 });
      expect(l.items.find((e) => e.name === 'tree/sub/')).toMatchObject({ type: 'dir' });
      for (const name of ['tree/sub/random.bin', long, 'tree/a.txt']) {
        const r = run(['item', file(tar), name]);
        expect(r.status, r.stderr).toBe(0);
        expect(r.raw.equals(fs.readFileSync(file(name)))).toBe(true);
      }
    }
    // Headers only: the big entry's data is skipped.
    const j = json<{ items: unknown[] }>(['items', file('tree.tar')]);
    expect(j.fetched).toBeLessThan(j.size);
    expect(run(['item', file('tree.tar'), 'tree/sub']).status).toBe(1);
  });

  it("answers SQL at each snapshot with that time's rows, reading few pages", () => {
    const q = 'SELECT id, name FROM people WHERE id IN (42, 43) ORDER BY id';
    const a = json<{ columns: string[]; rows: unknown[][] }>(['sql', file('app.db'), q, '--at', snap1]);
    expect(a.columns).toEqual(['id', 'name']);
    expect(a.rows).toEqual([
      [42, `person 42 ${'x'.repeat(40)}`],
      [43, `person 43 ${'x'.repeat(40)}`],
    ]);
    const b = json<{ rows: unknown[][] }>(['sql', file('app.db'), q, '--at', snap2]);
    expect(b.rows).toEqual([[42, 'renamed']]);
    // A point query by index: a few pages of a database of some hundreds.
    const p = json<{ rows: unknown[][] }>(['sql', file('app.db'), "SELECT count(*) FROM people WHERE city = 'city 7'"]);
    expect(p.rows).toEqual([[120]]);
    expect(p.size).toBeGreaterThan(4_000_000);
    expect(p.fetched).toBeLessThan(p.size / 10);
    const text = run(['sql', file('app.db'), 'SELECT id, city FROM people WHERE id < 2 ORDER BY id']);
    expect(text.stdout).toBe('id\tcity\n0\tcity 0\n1\tcity 1\n');
    const tables = json<{ items: { name: string; columns: string[]; rows: number }[] }>(['items', file('app.db'), '--count', '--at', snap2]);
    expect(tables.items).toEqual([{ name: 'people', type: 'table', columns: ['id', 'name', 'city'], rows: 59_999 }]);
  });

  it('refuses to write, and says what a file is when it is not the format asked', () => {
    const w = run(['sql', file('app.db'), 'DELETE FROM people']);
    expect(w.status).not.toBe(0);
    expect(w.stderr).toMatch(/readonly|read-only/);
    const zipAsSql = run(['sql', file('tree.zip'), 'SELECT 1']);
    expect(zipAsSql.status).toBe(1);
    expect(zipAsSql.stderr).toMatch(/tree\.zip is a zip archive, not a SQLite database/);
    const text = run(['items', file('tree/a.txt')]);
    expect(text.status).toBe(1);
    expect(text.stderr).toMatch(/a\.txt is text, not an mbox mailbox/);
    const dbItem = run(['item', file('app.db'), 'people']);
    expect(dbItem.stderr).toMatch(/is a SQLite database, not an mbox mailbox, a zip archive, a tar archive, a disk image or a qcow2 image/);
    expect(run(['items', file('mail.mbox'), '--json']).status).toBe(0);
  });

  it('exits 1 naming a missing item or path', () => {
    for (const [args, msg] of [
      [['item', file('mail.mbox'), '99999'], /has no message 99999/],
      [['item', file('mail.mbox'), '<nope@example.org>'], /no message with Message-ID <nope@example.org>/],
      [['item', file('tree.zip'), 'tree/none.txt'], /has no entry tree\/none\.txt/],
      [['item', file('tree.tar'), 'tree/none.txt'], /has no entry tree\/none\.txt/],
      [['items', file('none.mbox')], /none\.mbox is not in snapshot/],
    ] as const) {
      const r = run([...args]);
      expect(r.status, r.stderr).toBe(1);
      expect(r.stderr).toMatch(msg);
    }
    const j = run(['item', file('tree.zip'), 'nope', '--json']);
    expect(JSON.parse(j.stdout)).toMatchObject({ error: 'not_found' });
  });

  it('finds a damaged zip entry or tar header an integrity error, and writes no file', () => {
    const dir = path.join(tempDir(), 'bad');
    fs.mkdirSync(dir);
    const zip = fs.readFileSync(file('stored.zip'));
    // A byte of the stored entry's data changed: its CRC-32 no longer matches.
    const dataAt = 30 + zip.readUInt16LE(26) + zip.readUInt16LE(28);
    zip.writeUInt8(zip.readUInt8(dataAt + 100) ^ 0xff, dataAt + 100);
    fs.writeFileSync(path.join(dir, 'bad.zip'), zip);
    const tar = fs.readFileSync(file('tree.tar'));
    // The second header (the first is the directory tree/, of no data).
    expect(tar.toString('latin1', 0, 5)).toBe('tree/');
    tar.writeUInt8(tar.readUInt8(512 + 10) ^ 0x01, 512 + 10);
    fs.writeFileSync(path.join(dir, 'bad.tar'), tar);
    json(['backup', dir]);
    const out = path.join(tempDir(), 'out.txt');
    const z = run(['item', path.join(dir, 'bad.zip'), 'tree/a.txt', '-o', out]);
    expect(z.status).toBe(1);
    expect(z.stderr).toMatch(/damaged/);
    expect(fs.existsSync(out)).toBe(false);
    expect(fs.readdirSync(path.dirname(out))).toEqual([]);
    const t = run(['items', path.join(dir, 'bad.tar'), '--json']);
    expect(JSON.parse(t.stdout)).toMatchObject({ error: 'integrity' });
  });

  it('applies the WAL backed up beside a database, never answering from the stale main file', () => {
    const dir = path.join(tempDir(), 'wal');
    fs.mkdirSync(dir);
    const db = new Database(path.join(dir, 'w.db'));
    db.pragma('journal_mode = WAL');
    db.pragma('wal_autocheckpoint = 0');
    db.exec('CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)');
    const add = db.prepare('INSERT INTO t VALUES (?, ?)');
    db.transaction(() => {
      for (let i = 0; i < 2000; i++) add.run(i, `v${i}`);
    })();
    db.pragma('wal_checkpoint(TRUNCATE)');
    db.transaction(() => {
      for (let i = 2000; i < 2500; i++) add.run(i, `w${i}`);
    })();
    db.exec("UPDATE t SET v = 'changed' WHERE id = 5");
    // Begun but not committed when the backup ran: never shown.
    expect(fs.statSync(path.join(dir, 'w.db-wal')).size).toBeGreaterThan(0);
    json(['backup', dir]);
    db.close();
    const j = json<{ rows: unknown[][] }>(['sql', path.join(dir, 'w.db'), 'SELECT count(*), (SELECT v FROM t WHERE id = 5) FROM t']);
    expect(j.rows).toEqual([[2500, 'changed']]);
  });

  it('does all of it through strata serve', async () => {
    const srv = await serve(repo);
    const c = client(srv.url, token(repo, 'items-reader', 'read'));
    const m = run(['item', file('mail.mbox'), String(N / 2 + 1)], c);
    expect(m.status, m.stderr).toBe(0);
    expect(m.stdout).toBe(inserted);
    expect(run(['item', file('mail.mbox'), '10', '--at', snap1], c).stdout).toBe(originals[9]);
    expect(run(['item', file('tree.zip'), 'tree/sub/random.bin'], c).raw.equals(fs.readFileSync(file('tree/sub/random.bin')))).toBe(true);
    expect(run(['item', file('tree.tar'), 'tree/a.txt'], c).raw.equals(fs.readFileSync(file('tree/a.txt')))).toBe(true);
    const q = json<{ rows: unknown[][]; bytesReceived: number }>(['sql', file('app.db'), 'SELECT name FROM people WHERE id = 42', '--at', snap1], c);
    expect(q.rows).toEqual([[`person 42 ${'x'.repeat(40)}`]]);
    expect(q.fetched).toBeLessThan(q.size / 10);
    expect(q.bytesReceived).toBeGreaterThan(0);
    expect(json<{ rows: unknown[][] }>(['sql', file('app.db'), 'SELECT name FROM people WHERE id = 42'], c).rows).toEqual([['renamed']]);
    const e = run(['item', file('tree.zip'), 'missing'], c);
    expect(e.status).toBe(1);
    expect(e.stderr).toMatch(/has no entry missing/);
    // Reads of items are placed by the sealed TOCs alone: the server's catalog is never asked for the same pieces.
    await (await fetch(`${srv.url}/v1/mark-end`)).arrayBuffer();
    for (let t = 0; t < 500 && !srv.log().includes('/v1/mark-end'); t++) await new Promise((r) => setTimeout(r, 20));
    expect(srv.log()).toMatch(/ \/v1\/blocks\/(read|[0-9a-f]{64}) 200 /);
    expect(srv.log()).not.toMatch(/\/pieces/);
  });
});

describe('strata manifest', () => {
  it('lists the datasets by content at backup, inherits unchanged ones, drops what changed or went, and survives a rebuilt catalog', async () => {
    const { repo, env } = initCliRepo();
    const dir = path.join(tempDir(), 'm');
    fs.mkdirSync(path.join(dir, 'deep/er'), { recursive: true });
    const f = (n: string) => path.join(dir, n);
    fs.writeFileSync(f('inbox'), mbox([message(1), message(2), message(3)]));
    fs.writeFileSync(f('notes.txt'), 'From the notes, nothing.\n');
    fs.writeFileSync(f('deep/er/x.txt'), 'x\n'.repeat(1000));
    execFileSync('zip', ['-q', f('deep/bundle.bin'), 'deep/er/x.txt'], { cwd: dir });
    execFileSync('tar', ['-cf', f('t.tar'), 'notes.txt'], { cwd: dir });
    new Database(f('deep/er/app.sqlite')).exec('CREATE TABLE a (x); CREATE TABLE b (y)');
    execFileSync('truncate', ['-s', '2M', f('disk.img')]);
    execFileSync('sfdisk', ['-q', f('disk.img')], { input: 'label: gpt\n,1M\n' });
    const json = <T>(args: string[]): T => {
      const r = strata([...args, '--json'], env);
      expect(r.status, r.stderr).toBe(0);
      return JSON.parse(r.stdout) as T;
    };
    type Manifest = { snapshot: string; datasets: { path: string; type: string; size: number; items?: number }[] };
    const first = json<{ snapshot: string }>(['backup', dir]).snapshot;
    const m1 = json<Manifest>(['manifest']);
    expect(m1.datasets.map((d) => [path.relative(dir, d.path), d.type])).toEqual([
      ['deep/bundle.bin', 'zip'],
      ['deep/er/app.sqlite', 'sqlite'],
      ['disk.img', 'disk'],
      ['inbox', 'mbox'],
      ['t.tar', 'tar'],
    ]);
    expect(json<Manifest>(['manifest', '--type', 'sqlite']).datasets.map((d) => d.path)).toEqual([f('deep/er/app.sqlite')]);
    const counted = json<Manifest>(['manifest', '--count']);
    expect(Object.fromEntries(counted.datasets.map((d) => [path.basename(d.path), d.items]))).toEqual({ 'bundle.bin': 1, 'app.sqlite': 2, 'disk.img': 1, inbox: 3, 't.tar': 1 });
    const text = strata(['manifest'], env);
    expect(text.stdout).toMatch(/^disk image \(GPT\)\s+2097152\s+\S*disk\.img$/m);

    // The zip becomes text, the tar goes, the mailbox grows; the rest is not read again.
    fs.writeFileSync(f('deep/bundle.bin'), 'not a zip any more\n');
    fs.rmSync(f('t.tar'));
    fs.appendFileSync(f('inbox'), mbox([message(4)]));
    const second = json<{ snapshot: string; filesUnchanged: number }>(['backup', dir]);
    expect(second.filesUnchanged).toBeGreaterThanOrEqual(3);
    const m2 = json<Manifest>(['manifest']);
    expect(m2.datasets.map((d) => [path.basename(d.path), d.type, d.size])).toEqual([
      ['app.sqlite', 'sqlite', fs.statSync(f('deep/er/app.sqlite')).size],
      ['disk.img', 'disk', 2097152],
      ['inbox', 'mbox', fs.statSync(f('inbox')).size],
    ]);
    // A later snapshot does not change an earlier one's.
    expect(json<Manifest>(['manifest', '--at', first]).datasets).toHaveLength(5);
    // The next backup, with nothing changed, keeps the list as it is.
    json(['backup', dir]);
    expect(json<Manifest>(['manifest']).datasets).toEqual(m2.datasets);

    // Sealed in the snapshot's record: a catalog rebuilt from the packs has it too.
    fs.rmSync(path.join(repo, 'catalog.db'));
    for (const ext of ['-wal', '-shm']) fs.rmSync(path.join(repo, `catalog.db${ext}`), { force: true });
    expect(strata(['rebuild-catalog'], env).status).toBe(0);
    expect(json<Manifest>(['manifest']).datasets).toEqual(m2.datasets);
    expect(json<Manifest>(['manifest', '--at', first]).datasets).toHaveLength(5);

    // Through a server, as on the directory.
    const srv = await serve(repo);
    const c = client(srv.url, token(repo, 'manifest-reader', 'read'));
    const r = strata(['manifest', '--json', '--type', 'mbox'], c);
    expect(r.status, r.stderr).toBe(0);
    expect((JSON.parse(r.stdout) as Manifest).datasets.map((d) => d.path)).toEqual([f('inbox')]);
    expect(strata(['manifest', '--type', 'nope'], env).status).toBe(2);
  });
});

describe('strata items and item on disk images', () => {
  it('lists partitions (GPT, MBR) and reads directories and files of ext4 and FAT inside them, byte for byte, locally and served', async () => {
    const { repo, env } = initCliRepo();
    const dir = path.join(tempDir(), 'img');
    const root = path.join(tempDir(), 'root');
    fs.mkdirSync(path.join(root, 'etc'), { recursive: true });
    fs.mkdirSync(path.join(root, 'big'));
    fs.writeFileSync(path.join(root, 'etc/hostname'), 'imaged\n');
    const one = new Rng(42).bytes(1024 * 1024);
    fs.writeFileSync(path.join(root, 'big/one.bin'), one);
    fs.mkdirSync(dir);
    const gpt = path.join(dir, 'gpt.img');
    const mbr = path.join(dir, 'mbr.img');
    // GPT: an ext4 file system made from a directory (mkfs.ext4 -d) in partition 1, nothing in 2.
    execFileSync('truncate', ['-s', '40M', gpt]);
    execFileSync('sfdisk', ['-q', gpt], { input: 'label: gpt\n,24M\n,\n' });
    execFileSync('mkfs.ext4', ['-q', '-F', '-d', root, '-E', 'offset=1048576', gpt, '24M']);
    // MBR: one FAT16 partition, files put there by mtools.
    execFileSync('truncate', ['-s', '20M', mbr]);
    execFileSync('sfdisk', ['-q', mbr], { input: 'label: dos\n,16M,6\n' });
    execFileSync('mkfs.vfat', ['-F', '16', '--offset', '2048', mbr, '16384']);
    const mt = { env: { ...process.env, MTOOLS_SKIP_CHECK: '1' } };
    execFileSync('mmd', ['-i', `${mbr}@@1M`, '::/DOCS'], mt);
    execFileSync('mcopy', ['-i', `${mbr}@@1M`, path.join(root, 'big/one.bin'), '::/DOCS/ONE.BIN'], mt);
    execFileSync('mcopy', ['-i', `${mbr}@@1M`, path.join(root, 'etc/hostname'), '::/HOSTNAME'], mt);
    // The GPT image as qcow2 (qemu-img), with 64 KiB clusters, and compressed.
    const qcow = path.join(dir, 'vm.qcow2');
    execFileSync('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', gpt, qcow]);
    execFileSync('qemu-img', ['convert', '-c', '-f', 'raw', '-O', 'qcow2', gpt, path.join(dir, 'packed.qcow2')]);
    expect(strata(['backup', dir, '-q'], env).status).toBe(0);
    const json = <T>(args: string[], e = env): T & Summary => {
      const r = strata([...args, '--json'], e);
      expect(r.status, r.stderr).toBe(0);
      return JSON.parse(r.stdout) as T & Summary;
    };

    const parts = json<{ items: { number: number; offset: number; size: number; filesystem?: string; table: string }[] }>(['items', gpt]);
    expect(parts.type).toBe('disk');
    // The oracle: the table as sfdisk reads it back.
    const table = JSON.parse(execFileSync('sfdisk', ['--json', gpt]).toString()) as { partitiontable: { partitions: { start: number; size: number }[] } };
    const fsOf = ['ext', null];
    expect(parts.items.map((p) => [p.number, p.offset, p.size, p.filesystem ?? null, p.table])).toEqual(
      table.partitiontable.partitions.map((p, i) => [i + 1, p.start * 512, p.size * 512, fsOf[i], 'gpt']),
    );
    expect(parts.items[0]!.size).toBe(24 * 1048576);
    const etc = json<{ items: { name: string; type: string; size: number }[] }>(['items', gpt, '--path', 'p1:/etc']);
    expect(etc.items).toMatchObject([{ name: 'hostname', type: 'file', size: 7 }]);
    expect(json<{ items: { name: string; type: string }[] }>(['items', gpt, '--path', 'p1:/']).items.map((e) => [e.name, e.type])).toEqual([
      ['big', 'dir'],
      ['etc', 'dir'],
      ['lost+found', 'dir'],
    ]);
    const file = strata(['item', gpt, 'p1:/big/one.bin'], env);
    expect(file.status, file.stderr).toBe(0);
    expect(file.raw.equals(one)).toBe(true);
    // One file needs its blocks and the file system's metadata, not the image.
    const j = json<{ length: number }>(['item', gpt, '/big/one.bin']);
    expect(j.length).toBe(one.length);
    expect(j.fetched).toBeLessThan(one.length + 1024 * 1024);

    expect(json<{ items: { number: number; type: string; filesystem: string; table: string }[] }>(['items', mbr]).items).toMatchObject([{ number: 1, type: '0x06', filesystem: 'fat', table: 'mbr' }]);
    expect(json<{ items: { name: string; type: string }[] }>(['items', mbr, '--path', '/']).items.map((e) => [e.name, e.type])).toEqual([
      ['DOCS', 'dir'],
      ['HOSTNAME', 'file'],
    ]);
    expect(strata(['item', mbr, 'p1:/DOCS/ONE.BIN'], env).raw.equals(one)).toBe(true);
    expect(strata(['item', mbr, '/HOSTNAME'], env).stdout).toBe('imaged\n');

    // qcow2: the same disk through its cluster tables.
    const q = json<{ items: { number: number; offset: number; size: number; filesystem?: string }[] }>(['items', qcow]);
    expect(q.type).toBe('qcow2');
    expect(q.items.map((p) => [p.number, p.offset, p.size, p.filesystem ?? null])).toEqual(parts.items.map((p) => [p.number, p.offset, p.size, p.filesystem ?? null]));
    expect(strata(['item', qcow, 'p1:/big/one.bin'], env).raw.equals(one)).toBe(true);
    expect(strata(['item', qcow, 'p1:/etc/hostname'], env).stdout).toBe('imaged\n');
    const packed = strata(['item', path.join(dir, 'packed.qcow2'), 'p1:/etc/hostname'], env);
    expect(packed.status).toBe(1);
    expect(packed.stderr).toMatch(/packed\.qcow2 is a qcow2 image with compressed clusters, which strata does not read/);

    for (const [args, code, msg] of [
      [['item', gpt, 'p1:/etc/none'], 1, /has no \/etc\/none in partition 1/],
      [['item', gpt, 'p3:/x'], 1, /has no partition 3 \(it has p1, p2\)/],
      [['item', gpt, 'p2:/x'], 1, /partition 2 of .* holds no file system/],
      [['item', gpt, 'p1:/etc'], 1, /\/etc is a directory/],
    ] as const) {
      const r = strata([...args], env);
      expect(r.status, r.stderr).toBe(code);
      expect(r.stderr).toMatch(msg);
    }

    const srv = await serve(repo);
    const c = client(srv.url, token(repo, 'disk-reader', 'read'));
    const served = strata(['item', gpt, 'p1:/big/one.bin'], c);
    expect(served.status, served.stderr).toBe(0);
    expect(served.raw.equals(one)).toBe(true);
    expect(strata(['item', mbr, '/HOSTNAME'], c).stdout).toBe('imaged\n');
  });
});
