/**
 * Sealed item indexes of mailboxes and tar archives: made at backup, reused
 * where the file did not change, read by `items` and `item` instead of a
 * scan. Checked against oracles made here (the mailbox as it was written,
 * the archive as `tar` wrote it) after random appends and edits over
 * several incrementals; a damaged index is an integrity error; a late
 * message costs the index and the blocks that hold it.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import Database from 'better-sqlite3';
import { beforeAll, describe, expect, it } from 'vitest';
import { itemIndexBlobs } from '../src/engine/item-index.js';
import { Repository } from '../src/repo/repository.js';
import { initCliRepo, Rng, strata, tempDir } from './helpers.js';
import { client, serve, token } from './server-helpers.js';

interface Msg {
  id: string;
  subject: string;
  text: string;
}

interface Listed {
  number: number;
  offset: number;
  size: number;
  messageId?: string;
  subject?: string;
}

interface Out {
  snapshot: string;
  size: number;
  fetched: number;
  indexFetched?: number;
}

/** The default chunker's largest block (avg 32 KiB): a range's blocks are at most its length and two of these. */
const MAX_BLOCK = 128 * 1024;
const FROM_LINE = 'From s@example.org Mon Jan  1 00:00:00 2024\n';

function makeMessage(rng: Rng, n: number): Msg {
  const id = `x${n}.${rng.int(1e9)}@example.org`;
  const subject = `subject ${n}`;
  const body: string[] = [];
  for (let i = rng.int(12) + 1; i > 0; i--) {
    const r = rng.int(10);
    body.push(r === 0 ? 'From here on' : r === 1 ? '>From quoted' : 'line ' + 'z'.repeat(rng.int(90)));
  }
  return { id, subject, text: [`From: a${n}@example.org`, `Subject: ${subject}`, `Message-ID: <${id}>`, '', ...body, ''].join('\n') };
}

/** The mailbox (mboxrd) and, as the oracle, where each message lies in it. */
function mailbox(msgs: Msg[]): { bytes: Buffer; at: { offset: number; size: number }[] } {
  const parts: string[] = [];
  const at: { offset: number; size: number }[] = [];
  let offset = 0;
  for (const m of msgs) {
    const s = `${FROM_LINE}${m.text.replace(/^(>*From )/gm, '>$1')}\n`;
    const size = Buffer.byteLength(s);
    at.push({ offset, size });
    offset += size;
    parts.push(s);
  }
  return { bytes: Buffer.from(parts.join('')), at };
}

describe('sealed item indexes', () => {
  let repo: string;
  let env: NodeJS.ProcessEnv;
  let data: string;
  const mboxAt: { snapshot: string; msgs: Msg[] }[] = [];
  const tarAt: { snapshot: string; names: string[]; contents: Map<string, Buffer> }[] = [];
  const backups: { itemIndexes?: { made: number; bytesScanned: number } }[] = [];
  const run = (args: string[], e = env) => strata(args, e);
  const json = <T>(args: string[], e = env): T & Out => {
    const r = run([...args, '--json'], e);
    expect(r.status, r.stderr).toBe(0);
    return JSON.parse(r.stdout) as T & Out;
  };
  const mbox = () => path.join(data, 'mail.mbox');
  const tar = () => path.join(data, 'files.tar');

  beforeAll(() => {
    ({ repo, env } = initCliRepo());
    data = path.join(tempDir(), 'data');
    const src = path.join(tempDir(), 'src');
    fs.mkdirSync(data);
    fs.mkdirSync(src);
    const rng = new Rng(1919);
    let n = 0;
    let msgs = Array.from({ length: 6000 }, () => makeMessage(rng, n++));
    const contents = new Map<string, Buffer>();
    let names: string[] = [];
    const addFile = (name: string, size: number) => {
      const b = rng.bytes(size);
      fs.writeFileSync(path.join(src, name), b);
      contents.set(name, b);
    };
    for (let i = 0; i < 40; i++) addFile(`f${i}.bin`, rng.int(40_000));
    names = [...contents.keys()];
    execFileSync('tar', ['--format=gnu', '-cf', tar(), ...names], { cwd: src });
    const steps: (() => void)[] = [
      () => {},
      // Appended to, as a mailbox grows.
      () => (msgs = [...msgs, ...Array.from({ length: 50 }, () => makeMessage(rng, n++))]),
      // A message near the end rewritten longer, and a few more at the end.
      () => {
        const i = msgs.length - 1 - rng.int(msgs.length / 5);
        msgs = msgs.map((m, j) => (j === i ? { ...m, text: m.text + 'an added line\n'.repeat(30) } : m));
        msgs.push(...Array.from({ length: 10 }, () => makeMessage(rng, n++)));
      },
      // One put in the first third, one taken out of the middle.
      () => {
        const k = rng.int(msgs.length / 3);
        msgs = [...msgs.slice(0, k), makeMessage(rng, n++), ...msgs.slice(k)];
        msgs.splice(Math.floor(msgs.length / 2) + rng.int(100), 1);
      },
      // Appended to again.
      () => msgs.push(...Array.from({ length: 200 }, () => makeMessage(rng, n++))),
    ];
    steps.forEach((step, s) => {
      step();
      fs.writeFileSync(mbox(), mailbox(msgs).bytes);
      if (s === 1 || s === 4) {
        // tar -r: entries appended (one a name seen before, which then wins).
        const more = [`g${s}.bin`, 'f3.bin'];
        for (const m of more) addFile(m, rng.int(30_000) + 1);
        execFileSync('tar', ['--format=gnu', '-rf', tar(), ...more], { cwd: src });
        names = [...names, ...more];
      } else if (s === 3) {
        // Rewritten whole with a file in the middle changed.
        addFile('f20.bin', 50_000);
        execFileSync('tar', ['--format=gnu', '-cf', tar(), ...new Set(names)], { cwd: src });
        names = [...new Set(names)];
      }
      const b = json<{ snapshot: string; itemIndexes?: { made: number; bytesScanned: number } }>(['backup', data]);
      backups.push(b);
      mboxAt.push({ snapshot: b.snapshot, msgs: [...msgs] });
      tarAt.push({ snapshot: b.snapshot, names: [...names], contents: new Map(contents) });
    });
  }, 300_000);

  it('lists and gives every snapshot’s messages byte for byte from its index, after appends and edits', () => {
    const rng = new Rng(7);
    for (const { snapshot, msgs } of mboxAt) {
      const { at } = mailbox(msgs);
      const l = json<{ items: Listed[] }>(['items', mbox(), '--at', snapshot]);
      expect(l.indexFetched).toBeGreaterThan(0);
      expect(l.items.map((m) => [m.number, m.offset, m.size, m.messageId, m.subject])).toEqual(msgs.map((m, i) => [i + 1, at[i]!.offset, at[i]!.size, m.id, m.subject]));
      for (let k = 0; k < 3; k++) {
        const i = rng.int(msgs.length);
        const byNumber = run(['item', mbox(), String(i + 1), '--at', snapshot]);
        expect(byNumber.status, byNumber.stderr).toBe(0);
        expect(byNumber.stdout).toBe(msgs[i]!.text);
        const j = rng.int(msgs.length);
        expect(run(['item', mbox(), `<${msgs[j]!.id}>`, '--at', snapshot]).stdout).toBe(msgs[j]!.text);
      }
      expect(run(['item', mbox(), String(msgs.length), '--at', snapshot]).stdout).toBe(msgs[msgs.length - 1]!.text);
      const missing = run(['item', mbox(), String(msgs.length + 1), '--at', snapshot]);
      expect(missing.status).toBe(1);
      expect(missing.stderr).toMatch(/has no message/);
      expect(run(['item', mbox(), '<none@example.org>', '--at', snapshot]).status).toBe(1);
    }
    // Fifty commands, each a process: well over a minute on a busy machine.
  }, 180_000);

  it('scans only what changed: a mailbox appended to reuses its parent index', () => {
    const sizes = mboxAt.map(({ msgs }) => mailbox(msgs).bytes.length);
    expect(backups[0]!.itemIndexes!.made).toBe(2);
    // The first backup scans both files whole.
    expect(backups[0]!.itemIndexes!.bytesScanned).toBeGreaterThanOrEqual(sizes[0]!);
    for (const s of [1, 4]) {
      const scanned = backups[s]!.itemIndexes!.bytesScanned;
      const tarSize = fs.statSync(tar()).size;
      expect(scanned).toBeGreaterThan(0);
      expect(scanned).toBeLessThan(sizes[s]! / 4 + tarSize);
    }
    const m = json<{ datasets: { path: string; type: string; items?: number; index?: string }[] }>(['manifest']);
    expect(m.datasets.find((d) => d.path === mbox())).toMatchObject({ type: 'mbox', items: mboxAt[mboxAt.length - 1]!.msgs.length });
    expect(m.datasets.find((d) => d.path === tar())?.index).toMatch(/^[0-9a-f]{64}$/);
  });

  it('lists and gives tar entries byte for byte from the index, the last of a name winning', () => {
    for (const { snapshot, names, contents } of tarAt) {
      const l = json<{ items: { name: string; size: number }[] }>(['items', tar(), '--at', snapshot]);
      expect(l.indexFetched).toBeGreaterThan(0);
      expect(l.items.map((e) => e.name)).toEqual(names);
      expect(l.items.map((e) => e.name)).toEqual(execFileSync('tar', ['-tf', '-'], { input: run(['cat', tar(), '--at', snapshot]).raw }).toString().trim().split('\n'));
      for (const name of ['f3.bin', 'f20.bin', names[names.length - 1]!]) {
        const r = run(['item', tar(), name, '--at', snapshot]);
        expect(r.status, r.stderr).toBe(0);
        expect(r.raw.equals(contents.get(name)!)).toBe(true);
      }
      expect(run(['item', tar(), 'nope.bin', '--at', snapshot]).status).toBe(1);
    }
  });

  it('fetches the index and the blocks of a late message or entry, not the file', () => {
    const { msgs } = mboxAt[mboxAt.length - 1]!;
    const { at } = mailbox(msgs);
    for (const i of [msgs.length - 3, msgs.length - 1]) {
      const j = json<{ data: string }>(['item', mbox(), `<${msgs[i]!.id}>`]);
      expect(Buffer.from(j.data, 'base64').toString()).toBe(msgs[i]!.text);
      expect(j.indexFetched).toBeGreaterThan(0);
      expect(j.fetched - j.indexFetched!).toBeLessThanOrEqual(at[i]!.size + 2 * MAX_BLOCK);
      expect(j.fetched).toBeLessThan(j.size / 4);
    }
    const { contents, names } = tarAt[tarAt.length - 1]!;
    const last = names[names.length - 1]!;
    const t = json<{ data: string }>(['item', tar(), last]);
    expect(Buffer.from(t.data, 'base64').equals(contents.get(last)!)).toBe(true);
    expect(t.fetched - t.indexFetched!).toBeLessThanOrEqual(512 + contents.get(last)!.length + 2 * MAX_BLOCK);
  });

  it('does the same through strata serve', async () => {
    const srv = await serve(repo);
    const c = client(srv.url, token(repo, 'index-reader', 'read'));
    const { snapshot, msgs } = mboxAt[2]!;
    const j = json<{ data: string }>(['item', mbox(), String(msgs.length - 5), '--at', snapshot], c);
    expect(Buffer.from(j.data, 'base64').toString()).toBe(msgs[msgs.length - 6]!.text);
    expect(j.indexFetched).toBeGreaterThan(0);
    const l = json<{ items: Listed[] }>(['items', mbox(), '--match', msgs[10]!.id], c);
    expect(l.items.map((m) => m.number)).toEqual([11]);
  });

  it('scans a mailbox or archive that has no index (stored from standard input), with the same answers', () => {
    const { snapshot, msgs } = mboxAt[2]!;
    const bytes = run(['cat', mbox(), '--at', snapshot]).raw;
    const e = { ...env, STRATA_REPO: initCliRepo().repo };
    expect(strata(['backup', '--stdin', '--stdin-filename', 'in.mbox', '-q'], e, { input: bytes }).status).toBe(0);
    const indexed = json<{ items: Listed[] }>(['items', mbox(), '--at', snapshot]);
    const scanned = json<{ items: Listed[] }>(['items', '/in.mbox'], e);
    expect(scanned.indexFetched).toBeUndefined();
    expect(scanned.items).toEqual(indexed.items);
    const i = msgs.length - 7;
    const m = json<{ data: string }>(['item', '/in.mbox', `<${msgs[i]!.id}>`], e);
    expect(Buffer.from(m.data, 'base64').toString()).toBe(msgs[i]!.text);
    expect(m.indexFetched).toBeUndefined();
    const t = tarAt[tarAt.length - 1]!;
    const tarBytes = run(['cat', tar(), '--at', t.snapshot]).raw;
    expect(strata(['backup', '--stdin', '--stdin-filename', 'in.tar', '-q'], e, { input: tarBytes }).status).toBe(0);
    expect(json<{ items: { name: string }[] }>(['items', '/in.tar'], e).items.map((x) => x.name)).toEqual(t.names);
    expect(strata(['item', '/in.tar', 'f3.bin'], e).raw.equals(t.contents.get('f3.bin')!)).toBe(true);
  });

  it('keeps an inherited index through forget, prune and a rebuilt catalog', () => {
    // Nothing changed: the mailbox and the archive are inherited, and so are their indexes.
    const again = json<{ snapshot: string; itemIndexes?: unknown }>(['backup', data]);
    expect(again.itemIndexes).toBeUndefined();
    const before = json<{ datasets: { path: string; index?: string }[] }>(['manifest']).datasets;
    expect(before.find((d) => d.path === mbox())?.index).toMatch(/^[0-9a-f]{64}$/);
    const r = run(['forget', '--keep-last', '1', '--prune']);
    expect(r.status, r.stderr).toBe(0);
    const { msgs } = mboxAt[mboxAt.length - 1]!;
    const check = () => {
      const j = json<{ data: string }>(['item', mbox(), `<${msgs[msgs.length - 2]!.id}>`]);
      expect(Buffer.from(j.data, 'base64').toString()).toBe(msgs[msgs.length - 2]!.text);
      expect(j.indexFetched).toBeGreaterThan(0);
      expect(json<{ items: Listed[] }>(['items', tar()]).items.map((e) => (e as unknown as { name: string }).name)).toEqual(tarAt[tarAt.length - 1]!.names);
    };
    check();
    fs.rmSync(path.join(repo, 'catalog.db'));
    for (const ext of ['-wal', '-shm']) fs.rmSync(path.join(repo, `catalog.db${ext}`), { force: true });
    expect(run(['rebuild-catalog']).status).toBe(0);
    expect(run(['prune']).status).toBe(0);
    expect(json<{ datasets: unknown[] }>(['manifest']).datasets).toEqual(before);
    check();
    expect(json<{ errors: unknown[] }>(['check', '--read-data']).errors).toEqual([]);
  });

  it('finds a damaged index an integrity error, never wrong items', () => {
    const m = json<{ datasets: { path: string; index?: string }[] }>(['manifest']);
    const root = m.datasets.find((d) => d.path === mbox())!.index!;
    const db = new Database(path.join(repo, 'catalog.db'), { readonly: true });
    const at = db.prepare('SELECT p.name AS name, b.offset AS offset, b.length AS length FROM blocks b JOIN packs p ON p.id = b.pack WHERE b.id = ?').get(Buffer.from(root, 'hex')) as { name: string; offset: number; length: number };
    db.close();
    const pack = path.join(repo, 'packs', at.name.slice(0, 2), at.name);
    const bytes = fs.readFileSync(pack);
    const i = at.offset + Math.floor(at.length / 2);
    bytes[i] = bytes[i]! ^ 0x20;
    fs.writeFileSync(pack, bytes);
    for (const args of [
      ['items', mbox()],
      ['item', mbox(), '7'],
    ]) {
      const r = run([...args, '--json']);
      expect(r.status).not.toBe(0);
      expect(JSON.parse(r.stdout)).toMatchObject({ error: 'integrity' });
    }
    // Put right again for the next test.
    bytes[i] = bytes[i]! ^ 0x20;
    fs.writeFileSync(pack, bytes);
  });

  it('scans instead when an inherited index was pruned under a snapshot that did not list its blobs (made by an older strata)', async () => {
    const parent = (JSON.parse(run(['snapshots', '--json']).stdout) as { id: string }[]).at(-1)!.id;
    const child = json<{ snapshot: string }>(['backup', data]).snapshot;
    const entries = json<{ datasets: { path: string; index?: string }[] }>(['manifest']).datasets;
    const roots = [mbox(), tar()].map((p) => entries.find((d) => d.path === p)!.index!);
    // What a strata before the listing of inherited indexes left: the child's manifest names them, its blob list does not.
    const r = await Repository.open(repo, { password: async () => env.STRATA_PASSWORD! });
    const blobs = (await Promise.all(roots.map((root) => itemIndexBlobs((id) => r.readBlob(id, 'tree'), root)))).flat();
    r.close();
    const db = new Database(path.join(repo, 'catalog.db'));
    const seq = db.prepare('SELECT seq FROM snapshots WHERE id = ?').pluck().get(child);
    expect(seq).toBeDefined();
    for (const b of blobs) db.prepare('DELETE FROM snapshot_blobs WHERE snapshot = ? AND block = ?').run(seq, b);
    db.close();
    expect(run(['forget', parent, '--prune']).status).toBe(0);
    expect(json<{ datasets: { path: string; index?: string }[] }>(['manifest']).datasets.find((d) => d.path === mbox())!.index).toBe(roots[0]);
    const { msgs } = mboxAt[mboxAt.length - 1]!;
    const last = msgs[msgs.length - 2]!;
    for (const item of [`<${last.id}>`, String(msgs.length - 1)]) {
      const j = json<{ data: string }>(['item', mbox(), item]);
      expect(Buffer.from(j.data, 'base64').toString()).toBe(last.text);
      expect(j.indexFetched).toBeUndefined();
    }
    const listed = json<{ items: Listed[] }>(['items', mbox()]).items;
    expect(listed.map((m) => m.messageId)).toEqual(msgs.map((m) => m.id));
    expect(json<{ items: { name: string }[] }>(['items', tar()]).items.map((e) => e.name)).toEqual(tarAt[tarAt.length - 1]!.names);
    const t = tarAt[tarAt.length - 1]!;
    expect(run(['item', tar(), 'f3.bin']).raw.equals(t.contents.get('f3.bin')!)).toBe(true);
  });
});
