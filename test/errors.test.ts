/**
 * One error table (src/errors.ts): each code has one exit code and one HTTP
 * status, and an error keeps both over a server: the same command against
 * the repository's directory and against `strata serve` on it ends with the
 * same exit code and the same `error` in its --json output.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import Database from 'better-sqlite3';
import { describe, expect, it } from 'vitest';
import { ERRORS, EXIT_MEANINGS, isErrorCode, StrataError } from '../src/errors.js';
import { cliEnv, initCliRepo, strata, tempDir } from './helpers.js';
import { serve, token } from './server-helpers.js';

describe('the error table', () => {
  it('every code has an exit code with a meaning and a valid HTTP status; unknown codes from a server are "remote"', () => {
    for (const [code, row] of Object.entries(ERRORS)) {
      expect(EXIT_MEANINGS[row.exit], code).toBeDefined();
      expect(row.http >= 400 && row.http <= 599, code).toBe(true);
      expect(new StrataError(code as keyof typeof ERRORS, 'x').exitCode, code).toBe(row.exit);
    }
    expect(StrataError.fromWire('locked', 'm').exitCode).toBe(11);
    expect(StrataError.fromWire('no_such_code', 'm')).toMatchObject({ code: 'remote', exitCode: 1 });
    expect(StrataError.fromWire(undefined, 'm').code).toBe('remote');
    expect(isErrorCode('toString')).toBe(false);
  });
});

describe('an error keeps its exit code and its code over a server', () => {
  /** The repository's directory and a client of a server on it (admin token, its own cache). */
  async function both(): Promise<{ repo: string; local: NodeJS.ProcessEnv; remote: NodeJS.ProcessEnv; src: string }> {
    const { repo, env } = initCliRepo();
    const src = tempDir();
    fs.writeFileSync(path.join(src, 'f'), 'hello');
    expect(strata(['backup', src], env).status).toBe(0);
    const s = await serve(repo);
    const remote = cliEnv(s.url, { STRATA_TOKEN: token(repo, 'ops', 'admin'), STRATA_CACHE_DIR: path.join(tempDir(), 'cache'), STRATA_PASSWORD: env.STRATA_PASSWORD });
    return { repo, local: env, remote, src };
  }

  /** Runs a command both ways: the same exit code and `error` each time. */
  function same(args: string[], envs: NodeJS.ProcessEnv[], exit: number, code: string): void {
    for (const env of envs) {
      const r = strata([...args, '--json'], env);
      expect(r.status, `${env.STRATA_REPO} ${args.join(' ')}: ${r.stderr}`).toBe(exit);
      expect((JSON.parse(r.stdout) as { error: string }).error, `${env.STRATA_REPO} ${args.join(' ')}`).toBe(code);
    }
  }

  it('usage 2, not_found 1, range_not_satisfiable 1, wrong_key 12', async () => {
    const { local, remote, src } = await both();
    same(['cat', path.join(src, 'f'), '--range', 'nonsense'], [local, remote], 2, 'usage');
    same(['cat', path.join(src, 'nope')], [local, remote], 1, 'not_found');
    same(['cat', path.join(src, 'f'), '--range', '100-200'], [local, remote], 1, 'range_not_satisfiable');
    same(['cat', path.join(src, 'f')], [{ ...local, STRATA_PASSWORD: 'wrong' }, { ...remote, STRATA_PASSWORD: 'wrong' }], 12, 'wrong_key');
  });

  it('no_repository 10, locked 11', async () => {
    const { repo, local, remote } = await both();
    // A server whose directory holds no repository, and a directory without one.
    const empty = tempDir();
    const bare = await serve(empty);
    const nowhere = cliEnv(bare.url, { STRATA_TOKEN: token(empty, 'ops', 'admin'), STRATA_CACHE_DIR: path.join(tempDir(), 'cache') });
    same(['snapshots'], [cliEnv(path.join(tempDir(), 'none')), nowhere], 10, 'no_repository');
    // A live maintenance lease held by another process: forget and prune wait for none.
    const db = new Database(path.join(repo, 'catalog.db'));
    const now = Date.now();
    db.prepare("INSERT INTO leases(id, kind, host, pid, started, heartbeat, parent) VALUES ('0123456789abcdef0123456789abcdef', 'maintenance', 'elsewhere', 1, ?, ?, NULL)").run(now, now + 3_600_000);
    db.close();
    same(['prune'], [local, remote], 11, 'locked');
  });

  it('integrity 1: a tampered catalog, read locally and through the server', async () => {
    const { repo, local, remote, src } = await both();
    // The file's only data row names a block of another size: the sealed TOC disagrees.
    const db = new Database(path.join(repo, 'catalog.db'));
    db.prepare('UPDATE toc SET end = end - 1').run();
    db.prepare('UPDATE versions SET size = size - 1').run();
    db.close();
    same(['cat', path.join(src, 'f')], [local, remote], 1, 'integrity');
  });
});
