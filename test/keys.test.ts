/** key list, add, remove and passwd, on a local repository and over a server. */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { cliEnv, initCliRepo, strata, tempDir } from './helpers.js';
import { client, serve, token } from './server-helpers.js';

interface Key {
  id: string;
  created: string;
  host: string | null;
  user: string | null;
  current: boolean;
  problem: string | null;
}

const pwFile = (pw: string) => {
  const f = path.join(tempDir(), 'pw');
  fs.writeFileSync(f, pw + '\n');
  return f;
};

describe('keys', () => {
  it('add gives a second password; list shows which key is in use; remove never takes the last one, nor the one in use without --force', () => {
    const { repo, env } = initCliRepo();
    const list = (e = env) => {
      const r = strata(['key', 'list', '--json'], e);
      expect(r.status, r.stderr).toBe(0);
      return JSON.parse(r.stdout) as Key[];
    };
    const [first] = list();
    expect(first).toMatchObject({ current: true, problem: null });
    expect(first!.host).toBeTruthy();
    const added = strata(['key', 'add', '--new-password-file', pwFile('second'), '--json'], env);
    expect(added.status, added.stderr).toBe(0);
    const id = (JSON.parse(added.stdout) as Key).id;
    const env2 = cliEnv(repo, { STRATA_PASSWORD: 'second' });
    expect(list(env2).map((k) => [k.id, k.current])).toEqual([
      [first!.id, false],
      [id, true],
    ]);
    expect(strata(['key', 'list'], env2).stdout).toMatch(new RegExp(`^\\*\\s+${id}`, 'm'));
    // The key in use needs --force; the other one goes.
    const inUse = strata(['key', 'remove', id.slice(0, 6)], env2);
    expect(inUse.status).toBe(1);
    expect(inUse.stderr).toMatch(/--force/);
    expect(strata(['key', 'remove', first!.id], env2).status).toBe(0);
    expect(strata(['snapshots'], env).status).toBe(12);
    // The last one stays, even with --force.
    const last = strata(['key', 'remove', id, '--force'], env2);
    expect(last.status).toBe(1);
    expect(last.stderr).toMatch(/only usable key/);
    expect(strata(['key', 'remove', 'ffff'], env2).status).toBe(1);
    expect(strata(['key', 'add'], env2).status).toBe(2);
  });

  it('passwd replaces the key in use: the new password opens, the old does not, other keys stay', () => {
    const { repo, env } = initCliRepo();
    expect(strata(['key', 'add', '--new-password-file', pwFile('other')], env).status).toBe(0);
    const r = strata(['key', 'passwd', '--new-password-file', pwFile('new'), '--json'], env);
    expect(r.status, r.stderr).toBe(0);
    const { added, removed } = JSON.parse(r.stdout) as { added: string; removed: string };
    expect(strata(['snapshots'], env).status).toBe(12);
    const keys = JSON.parse(strata(['key', 'list', '--json'], cliEnv(repo, { STRATA_PASSWORD: 'new' })).stdout) as Key[];
    expect(keys.map((k) => k.id)).toContain(added);
    expect(keys.map((k) => k.id)).not.toContain(removed);
    expect(keys).toHaveLength(2);
    expect(strata(['snapshots'], cliEnv(repo, { STRATA_PASSWORD: 'other' })).status).toBe(0);
    // Opened with an exported key, there is no key in use to change.
    const kf = path.join(tempDir(), 'key');
    expect(strata(['key', 'export', kf], cliEnv(repo, { STRATA_PASSWORD: 'new' })).status).toBe(0);
    expect(strata(['key', 'passwd', '--new-password-file', pwFile('x'), '--key-file', kf], env).status).toBe(2);
  });

  it('over a server: an admin token may add and remove keys, a backup token may not', async () => {
    const dir = path.join(tempDir(), 'repo');
    const admin = token(dir, 'ops', 'admin');
    const laptop = token(dir, 'laptop', 'append');
    const s = await serve(dir);
    const envA = client(s.url, admin);
    expect(strata(['init', '--scrypt-n', '1024'], client(s.url, laptop)).status).toBe(0);
    const refused = strata(['key', 'add', '--new-password-file', pwFile('two')], client(s.url, laptop));
    expect(refused.status).toBe(1);
    expect(refused.stderr).toMatch(/admin/);
    const r = strata(['key', 'add', '--new-password-file', pwFile('two'), '--json'], envA);
    expect(r.status, r.stderr).toBe(0);
    const id = (JSON.parse(r.stdout) as Key).id;
    expect(strata(['snapshots'], client(s.url, laptop, { STRATA_PASSWORD: 'two' })).status).toBe(0);
    expect(strata(['key', 'remove', id], client(s.url, laptop)).status).toBe(1);
    expect(strata(['key', 'remove', id], envA).status).toBe(0);
    expect(strata(['snapshots'], client(s.url, laptop, { STRATA_PASSWORD: 'two' })).status).toBe(12);
  });
});
