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
