/**
 * Several processes on one repository: backups side by side, reads during
 * backups, forget/prune racing backups, and the maintenance lease with
 * --lock-wait.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { Lease } from '../src/catalog/lease.js';
import { Repository } from '../src/repo/repository.js';
import { initCliRepo, Rng, strata, strataAsync, tempDir } from './helpers.js';

/** Runs the CLI; `onStderr` sees its stderr so far each time more arrives. */
function run(args: string[], env: NodeJS.ProcessEnv, onStderr?: (stderr: string) => void): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = strataAsync(args, env);
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => {
    stderr += d.toString();
    onStderr?.(stderr);
  });
  return new Promise((r) => child.on('exit', (code) => r({ code, stdout, stderr })));
}

describe('concurrent use', () => {
  it('backups of different trees run at once and all succeed; cat works meanwhile', async () => {
    const { env } = initCliRepo(['--pack-size', '256K']);
    const rng = new Rng(3);
    const trees = [0, 1, 2].map((i) => {
      const d = tempDir();
      fs.writeFileSync(path.join(d, `f${i}`), rng.bytes(3 * 1024 * 1024));
      fs.writeFileSync(path.join(d, 'shared'), Buffer.alloc(500_000, 7));
      return d;
    });
    fs.writeFileSync(path.join(trees[0]!, 'early'), 'early');
    expect(strata(['backup', trees[0]!, '-q'], env).status).toBe(0);
    const backups = trees.map((t) => run(['backup', t, '--json', '--host', `host-${path.basename(t)}`], env));
    const reads: Promise<{ code: number | null; stdout: string }>[] = [];
    for (let i = 0; i < 4; i++) reads.push(run(['cat', path.join(trees[0]!, 'early'), '--at', 'latest'], env));
    const results = await Promise.all(backups);
    for (const r of results) expect(r.code, r.stderr).toBe(0);
    for (const r of await Promise.all(reads)) {
      expect(r.code).toBe(0);
      expect(r.stdout).toBe('early');
    }
    for (const [i, t] of trees.entries()) {
      const id = JSON.parse(results[i]!.stdout).snapshot as string;
      expect(strata(['cat', path.join(t, `f${i}`), '--at', id], env).raw.equals(fs.readFileSync(path.join(t, `f${i}`)))).toBe(true);
    }
    expect(strata(['check', '--read-data'], env).status).toBe(0);
  }, 60_000);

  it('forget --prune racing backups loses nothing', async () => {
    const { env } = initCliRepo(['--chunk-avg', '4K', '--pack-size', '64K']);
    const rng = new Rng(8);
    const dirs = [tempDir(), tempDir()];
    const expected = new Map<string, Buffer>();
    for (let round = 0; round < 4; round++) {
      for (const d of dirs) fs.writeFileSync(path.join(d, 'f'), Buffer.concat([rng.bytes(150_000), Buffer.alloc(100_000, round)]));
      const [b1, b2, m] = await Promise.all([
        run(['backup', dirs[0]!, '--json'], env),
        run(['backup', dirs[1]!, '--json'], env),
        run(['forget', '--keep-last', '1', '--prune', '--lock-wait', '60s'], env),
      ]);
      expect(b1.code, b1.stderr).toBe(0);
      expect(b2.code, b2.stderr).toBe(0);
      expect(m.code, m.stderr).toBe(0);
      for (const [r, d] of [
        [b1, dirs[0]!],
        [b2, dirs[1]!],
      ] as const) expected.set(JSON.parse(r.stdout).snapshot, fs.readFileSync(path.join(d, 'f')));
    }
    const c = strata(['check', '--read-data', '--json'], env);
    expect(JSON.parse(c.stdout).errors).toEqual([]);
    expect(c.status).toBe(0);
    const left = JSON.parse(strata(['snapshots', '--json'], env).stdout) as { id: string; paths: string[] }[];
    expect(left.length).toBeGreaterThan(0);
    for (const s of left) expect(strata(['cat', path.join(s.paths[0]!, 'f'), '--at', s.id], env).raw.equals(expected.get(s.id)!)).toBe(true);
  }, 120_000);

  it('a second prune waits for the first (--lock-wait) or says what holds it (exit 11)', async () => {
    const { repo, env } = initCliRepo();
    const r = await Repository.open(repo, { password: async () => 'pw' });
    const { lease } = await Lease.acquire(r.catalog, 'maintenance');
    const busy = strata(['prune'], env);
    expect(busy.status).toBe(11);
    expect(busy.stderr).toMatch(/locked: a maintenance \(pid \d+ on this host\)/);
    // Released once the second prune says it waits (a fixed delay raced a slow start under load).
    const waited = await run(['prune', '--lock-wait', '20s'], env, (stderr) => {
      if (/waiting for a maintenance/.test(stderr)) lease.release();
    });
    expect(waited.code).toBe(0);
    expect(waited.stderr).toMatch(/waiting for a maintenance/);
    r.close();
  });

  it('a crashed holder blocks nobody: its lease is stale at once on this host', async () => {
    const { repo, env } = initCliRepo();
    const r = await Repository.open(repo, { password: async () => 'pw' });
    r.catalog.db
      .prepare('INSERT INTO leases(id, kind, host, pid, started, heartbeat, parent) VALUES (?, ?, ?, ?, ?, ?, NULL)')
      .run('dead', 'maintenance', (await import('../src/catalog/lease.js')).HOST_ID, 2 ** 22 + 12345, Date.now(), Date.now());
    r.close();
    expect(strata(['prune'], env).status).toBe(0);
  });

  it('two first backups of text at once may each make a dictionary: every block reads back, and later backups use one', async () => {
    const { repo, env } = initCliRepo();
    const rng = new Rng(17);
    const words = 'request served login failed retry cache miss backend timeout connection worker queue latency error warn'.split(' ');
    const text = (bytes: number) => {
      const lines: string[] = [];
      for (let n = 0; n < bytes; ) {
        const line = `host${rng.int(16)} ${Array.from({ length: 8 + rng.int(8) }, () => rng.pick(words)).join(' ')} id=${rng.int(1_000_000)}\n`;
        lines.push(line);
        n += line.length;
      }
      return Buffer.from(lines.join(''));
    };
    const trees = [0, 1].map((i) => {
      const d = tempDir();
      fs.writeFileSync(path.join(d, `log${i}`), text(3_000_000));
      return d;
    });
    const results = await Promise.all(trees.map((t) => run(['backup', t, '-q'], env)));
    for (const r of results) expect(r.code, r.stderr).toBe(0);
    const dicts = () => fs.readdirSync(path.join(repo, 'dicts')).sort();
    const made = dicts();
    expect(made.length).toBeGreaterThanOrEqual(1);
    expect(made.length).toBeLessThanOrEqual(2);
    for (const [i, t] of trees.entries()) expect(strata(['cat', path.join(t, `log${i}`)], env).raw.equals(fs.readFileSync(path.join(t, `log${i}`)))).toBe(true);
    const later = tempDir();
    fs.writeFileSync(path.join(later, 'log'), text(2_000_000));
    expect(strata(['backup', later, '-q'], env).status).toBe(0);
    expect(dicts()).toEqual(made);
    expect(strata(['cat', path.join(later, 'log')], env).raw.equals(fs.readFileSync(path.join(later, 'log')))).toBe(true);
    expect(strata(['check', '--read-data'], env).status).toBe(0);
  });
});
