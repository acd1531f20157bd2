/**
 * A command that only reads opens the catalog with read windows: statements
 * run within one turn of the event loop share one read transaction, which
 * ends when the loop turns, before anything is written, and never keeps a
 * writer in another process out.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { setImmediate as turn } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { Catalog } from '../src/catalog/catalog.js';
import { backup } from '../src/engine/backup.js';
import { Repository } from '../src/repo/repository.js';
import { makeRepo, readWhole, tempDir } from './helpers.js';

describe('read windows', () => {
  it('statements of one turn share a read transaction that ends when the loop turns; a writer elsewhere is never kept out', async () => {
    const repo = await makeRepo();
    const src = tempDir();
    fs.writeFileSync(path.join(src, 'f'), 'one');
    const first = await backup(repo, { paths: [src] });
    const file = path.join(repo.root, 'catalog.db');
    const reader = new Catalog(file, { readWindows: true });
    try {
      expect(reader.db.inTransaction).toBe(false);
      expect(reader.snapshotsByPrefix('')).toHaveLength(1);
      expect(reader.db.inTransaction).toBe(true);
      expect(reader.snapshotsByPrefix(first.snapshot.slice(0, 8))).toHaveLength(1);
      await turn();
      expect(reader.db.inTransaction).toBe(false);
      // A backup commits between the reader's turns (busy for no longer than one), and the next window sees it.
      fs.writeFileSync(path.join(src, 'f'), 'two');
      for (let i = 0; i < 5; i++) {
        reader.snapshotsByPrefix('');
        await turn();
      }
      await backup(repo, { paths: [src] });
      expect(reader.snapshotsByPrefix('')).toHaveLength(2);
      await turn();
    } finally {
      reader.close();
    }
    repo.close();
  });

  it('a write on a catalog with read windows ends the window first, and a transaction can be taken', async () => {
    const repo = await makeRepo();
    const file = path.join(repo.root, 'catalog.db');
    repo.close();
    const c = new Catalog(file, { readWindows: true });
    try {
      c.snapshotsByPrefix('');
      expect(c.db.inTransaction).toBe(true);
      // A lease is taken in an immediate transaction: inside a read transaction it could not be.
      const seq = c.transaction(() => c.snapshotsByPrefix('').length);
      expect(seq).toBe(0);
      expect(c.db.inTransaction).toBe(false);
    } finally {
      c.close();
    }
  });

  it('a read-only open of a repository reads byte-exact through its windows', async () => {
    const repo = await makeRepo();
    const src = tempDir();
    const data = Buffer.alloc(300_000, 'x');
    fs.writeFileSync(path.join(src, 'f'), data);
    const r = await backup(repo, { paths: [src] });
    repo.close();
    const again = await Repository.open(repo.root, { password: async () => 'test-password' }, { readonly: true });
    try {
      expect((await readWhole(again, r.snapshot, path.join(src, 'f'))).equals(data)).toBe(true);
    } finally {
      again.close();
    }
  });

  it("a writer's block lookups share a window; any write, even a bare statement, ends it first, so another process's commit never fails it", async () => {
    const repo = await makeRepo();
    const file = path.join(repo.root, 'catalog.db');
    repo.close();
    const writer = new Catalog(file);
    const other = new Catalog(file);
    const id = (n: number) => Buffer.alloc(32, n);
    try {
      expect(writer.hasBlock(id(1))).toBe(false);
      expect(writer.db.inTransaction).toBe(true);
      // Another process indexes a pack while the window holds its snapshot...
      other.addPack('p1', 100, [{ id: id(1), kind: 'data', offset: 8, length: 50, size: 40 }]);
      // ... and a statement that writes, run on its own, still goes through: it ends the window first
      // (run in the old snapshot, SQLite would refuse it as busy).
      writer.db.prepare("INSERT OR REPLACE INTO info(key, value) VALUES ('probe', '1')").run();
      expect(writer.db.inTransaction).toBe(false);
      // The next lookup opens a window that sees the other's pack; it ends when the loop turns.
      expect(writer.hasBlock(id(1))).toBe(true);
      expect(writer.db.inTransaction).toBe(true);
      await turn();
      expect(writer.db.inTransaction).toBe(false);
      // Its own writes are seen at once: a transaction ends the window too.
      expect(writer.hasBlock(id(2))).toBe(false);
      writer.addPack('p2', 100, [{ id: id(2), kind: 'data', offset: 8, length: 50, size: 40 }]);
      expect(writer.hasBlock(id(2))).toBe(true);
    } finally {
      other.close();
      writer.close();
    }
  });
});
