/** Repositories written by earlier versions of the format still open and read byte-exact. */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import Database from 'better-sqlite3';
import { cliEnv, initCliRepo, ROOT, strata, tempDir } from './helpers.js';

describe('format version 1 fixture', () => {
  const fixture = path.join(ROOT, 'fixtures', 'repo-v1');
  const expected = JSON.parse(fs.readFileSync(path.join(ROOT, 'fixtures', 'repo-v1.expected.json'), 'utf8')) as {
    password: string;
    files: Record<string, Record<string, string>>;
  };

  it('opens with its password and its key file, and every file of every snapshot reads back', () => {
    const repo = path.join(tempDir(), 'repo');
    fs.cpSync(fixture, repo, { recursive: true });
    const env = cliEnv(repo, { STRATA_PASSWORD: expected.password });
    const snaps = JSON.parse(strata(['snapshots', '--json'], env).stdout) as { id: string }[];
    expect(snaps.map((s) => s.id)).toEqual(Object.keys(expected.files));
    const keyEnv = cliEnv(repo, { STRATA_PASSWORD: undefined, STRATA_KEY_FILE: path.join(ROOT, 'fixtures', 'repo-v1.key.json') });
    for (const [snap, files] of Object.entries(expected.files)) {
      for (const [file, sha] of Object.entries(files)) {
        const r = strata(['cat', file, '--at', snap], keyEnv);
        expect(r.status, r.stderr).toBe(0);
        expect(createHash('sha256').update(r.raw).digest('hex')).toBe(sha);
      }
    }
    const [, second] = Object.keys(expected.files);
    const toc = JSON.parse(strata(['toc', '/tmp/strata-fixture-v1/data.bin', '--at', second!, '--json'], keyEnv).stdout) as { kind: string; offset?: number }[];
    expect(toc.some((e) => e.kind === 'ref' && e.offset === 4)).toBe(true);
  });

  it('prune on the upgraded catalog keeps every directory of the old snapshots', () => {
    const repo = path.join(tempDir(), 'repo');
    fs.cpSync(fixture, repo, { recursive: true });
    const env = cliEnv(repo, { STRATA_PASSWORD: undefined, STRATA_KEY_FILE: path.join(ROOT, 'fixtures', 'repo-v1.key.json') });
    const pruned = strata(['prune'], env);
    expect(pruned.status, pruned.stderr).toBe(0);
    const c = strata(['check', '--read-data', '--json'], env);
    expect(JSON.parse(c.stdout).errors).toEqual([]);
    for (const [snap, files] of Object.entries(expected.files)) {
      for (const [file, sha] of Object.entries(files)) {
        expect(createHash('sha256').update(strata(['cat', file, '--at', snap], env).raw).digest('hex')).toBe(sha);
      }
    }
  });
});

describe('schema 2 catalogs', () => {
  it('gain the later columns on open, and prune works', async () => {
    const { repo, env } = initCliRepo();
    const src = tempDir();
    fs.writeFileSync(path.join(src, 'f'), 'data');
    expect(strata(['backup', src, '-q'], env).status).toBe(0);
    const db = new Database(path.join(repo, 'catalog.db'));
    db.exec("ALTER TABLE snapshots DROP COLUMN blobs_known; ALTER TABLE snapshots DROP COLUMN inherits; DROP INDEX versions_path; UPDATE info SET value = '2' WHERE key = 'schema'");
    db.close();
    const pruned = strata(['prune'], env);
    expect(pruned.status, pruned.stderr).toBe(0);
    expect(strata(['check', '--read-data'], env).status).toBe(0);
    expect(strata(['cat', path.join(src, 'f')], env).stdout).toBe('data');
  });
});

describe('schema 5 catalogs', () => {
  it('lose the index of TOC rows by block on open; prune and damage reports work without it', () => {
    const { repo, env } = initCliRepo();
    const src = tempDir();
    const file = path.join(src, 'f');
    fs.writeFileSync(file, Buffer.alloc(200_000, 7));
    expect(strata(['backup', src, '-q'], env).status).toBe(0);
    fs.writeFileSync(file, 'short now');
    expect(strata(['backup', src, '-q'], env).status).toBe(0);
    const catalog = path.join(repo, 'catalog.db');
    let db = new Database(catalog);
    db.exec("CREATE INDEX toc_block ON toc(block) WHERE block IS NOT NULL; UPDATE info SET value = '5' WHERE key = 'schema'");
    db.close();
    const first = (JSON.parse(strata(['snapshots', '--json'], env).stdout) as { id: string }[])[0]!.id;
    expect(strata(['forget', first], env).status).toBe(0);
    const pruned = JSON.parse(strata(['prune', '--json'], env).stdout) as { deletedBlocks: number };
    expect(pruned.deletedBlocks).toBeGreaterThan(0);
    db = new Database(catalog, { readonly: true });
    expect(db.prepare("SELECT value FROM info WHERE key = 'schema'").pluck().get()).toBe('8');
    expect(db.prepare("SELECT name FROM sqlite_master WHERE name = 'toc_block'").get()).toBeUndefined();
    // Schema 8: versions indexed once by path (unique with the snapshot), by snapshot, and not by TOC.
    expect(db.prepare("SELECT name FROM sqlite_master WHERE tbl_name = 'versions' AND type = 'index' ORDER BY name").pluck().all()).toEqual(['versions_path', 'versions_snapshot']);
    const block = db.prepare('SELECT block FROM toc WHERE block IS NOT NULL').pluck().get() as Buffer;
    const { pack, offset } = db.prepare('SELECT p.name AS pack, b.offset FROM blocks b JOIN packs p ON p.id = b.pack WHERE b.id = ?').get(block) as { pack: string; offset: number };
    db.close();
    expect(strata(['cat', file], env).stdout).toBe('short now');
    // The file's one block damaged: check names the file and its bytes.
    const packFile = path.join(repo, 'packs', pack.slice(0, 2), pack);
    const bytes = fs.readFileSync(packFile);
    bytes[offset + 20] = bytes[offset + 20]! ^ 1;
    fs.writeFileSync(packFile, bytes);
    const report = JSON.parse(strata(['check', '--read-data', '--json'], env).stdout) as { damagedFiles: { path: string; ranges: [number, number][] }[] };
    expect(report.damagedFiles).toEqual([expect.objectContaining({ path: file, ranges: [[0, 8]] })]);
  });
});
