/**
 * A catalog changed behind strata's back, locally or by a hostile server,
 * gives an integrity error, never other bytes: reads are checked against the
 * sealed TOCs (engine/verify.ts), and check names what disagrees. Key files
 * someone else added cannot lock password clients out, and errors keep their
 * exit codes over a server.
 */
import * as fs from 'node:fs';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import * as path from 'node:path';
import Database from 'better-sqlite3';
import { describe, expect, it } from 'vitest';
import { cliEnv, initCliRepo, Rng, strata, strataAsync, swapSmallBlocks, tempDir } from './helpers.js';
import { serve, token, type Server } from './server-helpers.js';

const rng = new Rng(16);

/** A repository with two single-block files of the same size, and a larger file backed up twice (the second time with 4 bytes inserted). */
function setup() {
  const { repo, env } = initCliRepo(['--pack-size', '256K']);
  const src = tempDir();
  const a = path.join(src, 'a');
  const b = path.join(src, 'b');
  const big = path.join(src, 'big');
  fs.writeFileSync(a, rng.bytes(4000));
  fs.writeFileSync(b, rng.bytes(4000));
  const first = rng.bytes(600_000);
  fs.writeFileSync(big, first);
  ok(['backup', src], env);
  const second = Buffer.concat([first.subarray(0, 300_000), Buffer.from('NEW '), first.subarray(300_000)]);
  fs.writeFileSync(big, second);
  ok(['backup', src], env);
  return { repo, env, a, b, big, second };
}

function ok(args: string[], env: NodeJS.ProcessEnv): string {
  const r = strata(args, env);
  expect(r.status, `${args.join(' ')}: ${r.stderr}`).toBe(0);
  return r.stdout;
}

function sql(repo: string, statement: string, ...params: unknown[]): number {
  const db = new Database(path.join(repo, 'catalog.db'));
  try {
    return db.prepare(statement).run(...params).changes;
  } finally {
    db.close();
  }
}

function versionOf(repo: string, env: NodeJS.ProcessEnv, file: string): number {
  const db = new Database(path.join(repo, 'catalog.db'), { readonly: true });
  try {
    const ids = db.prepare('SELECT id, size FROM versions ORDER BY id').all() as { id: number; size: number }[];
    const size = fs.statSync(file).size;
    void env;
    return ids.find((v) => v.size === size)!.id;
  } finally {
    db.close();
  }
}

/** cat and restore fail with an integrity error (exit 1) and give no bytes of the wrong file; check names the file. */
function expectCaught(repo: string, env: NodeJS.ProcessEnv, file: string, want: Buffer) {
  const cat = strata(['cat', file], env);
  expect(cat.status, cat.stderr).toBe(1);
  expect(cat.stderr).toMatch(/sealed|integrity|disagree/);
  expect(cat.raw.equals(want)).toBe(false);
  const target = tempDir();
  const restored = strata(['restore', file, '--target', target], env);
  expect(restored.status, restored.stderr).toBe(1);
  expect(fs.existsSync(path.join(target, file))).toBe(false);
  const check = strata(['check', '--read-data'], env);
  expect(check.status).toBe(1);
  expect(check.stderr).toContain(file);
  expect(check.stdout).not.toMatch(/no errors found/);
  // The sealed TOCs still hold the truth: a rebuilt catalog reads right.
  ok(['rebuild-catalog'], env);
  expect(strata(['cat', file], env).raw.equals(want)).toBe(true);
}

/**
 * A file of one block is read by its tree entry alone (format 3): cat and
 * restore give its own bytes whatever the catalog says of it; check names it.
 */
function expectReadByEntry(env: NodeJS.ProcessEnv, file: string, want: Buffer) {
  const cat = strata(['cat', file], env);
  expect(cat.status, cat.stderr).toBe(0);
  expect(cat.raw.equals(want)).toBe(true);
  const target = tempDir();
  const restored = strata(['restore', file, '--target', target], env);
  expect(restored.status, restored.stderr).toBe(0);
  expect(fs.readFileSync(path.join(target, file)).equals(want)).toBe(true);
  const check = strata(['check', '--read-data'], env);
  expect(check.status).toBe(1);
  expect(check.stderr).toContain(file);
}

/** toc shows no rows that disagree with the sealed TOCs: an integrity error naming the file. */
function expectTocCaught(env: NodeJS.ProcessEnv, file: string) {
  const r = strata(['toc', file], env);
  expect(r.status, r.stdout).toBe(1);
  expect(r.stderr).toContain(file);
  expect(r.stderr).toMatch(/sealed TOC/);
  expect(r.stdout).toBe('');
}

/** Cuts the latest version of `size` bytes to 400,000 in the catalog, its last row with it. */
function cutTo400000(repo: string, size: number): void {
  const db = new Database(path.join(repo, 'catalog.db'), { readonly: true });
  const latest = db.prepare('SELECT MAX(id) FROM versions WHERE size = ?').pluck().get(size) as number;
  db.close();
  sql(repo, 'UPDATE versions SET size = 400000 WHERE id = ?', latest);
  sql(repo, 'DELETE FROM toc WHERE version = ? AND start >= 400000', latest);
  sql(repo, 'UPDATE toc SET end = 399999 WHERE version = ? AND end >= 400000', latest);
}

/** Swaps the baseline's first two data rows of `big` in the catalog, ranges adjusted so its TOC still adds up. */
function swapBaselineRows(repo: string): void {
  const db = new Database(path.join(repo, 'catalog.db'));
  try {
    const baseline = db.prepare('SELECT MIN(id) FROM versions WHERE size = 600000').pluck().get() as number;
    const [r0, r1] = db.prepare('SELECT start, end, block FROM toc WHERE version = ? ORDER BY start LIMIT 2').all(baseline) as { start: number; end: number; block: Buffer }[];
    const len0 = r0!.end - r0!.start + 1;
    const len1 = r1!.end - r1!.start + 1;
    db.transaction(() => {
      db.prepare('DELETE FROM toc WHERE version = ? AND start IN (?, ?)').run(baseline, r0!.start, r1!.start);
      const insert = db.prepare('INSERT INTO toc(version, start, end, block, depth) VALUES (?, ?, ?, ?, 0)');
      insert.run(baseline, 0, len1 - 1, r1!.block);
      insert.run(baseline, len1, len1 + len0 - 1, r0!.block);
    })();
  } finally {
    db.close();
  }
}

describe('a tampered local catalog', () => {
  it('a data row naming another file\'s block', () => {
    const { repo, env, a } = setup();
    const bytes = fs.readFileSync(a);
    // Both files are 4000 bytes, one block each: the other file's block fits exactly.
    swapSmallBlocks(repo);
    expectTocCaught(env, a);
    expectReadByEntry(env, a, bytes);
  });

  it('two data rows swapped, ranges adjusted so the TOC still adds up', () => {
    const { repo, env, big, second } = setup();
    swapBaselineRows(repo);
    // Read through the second version, whose refs lead into the baseline.
    expectCaught(repo, env, big, second);
  });

  it('a backup makes its references against the parent as sealed, not as the tampered catalog lists its blocks', () => {
    const { repo, env, big, second } = setup();
    swapBaselineRows(repo);
    // Changed again: its unchanged blocks would become refs to wherever the catalog says the parent has them.
    const third = Buffer.concat([second, rng.bytes(1000)]);
    fs.writeFileSync(big, third);
    ok(['backup', path.dirname(big)], env);
    // What was sealed is right: a catalog rebuilt from the sealed TOCs reads the new version byte-exact.
    ok(['rebuild-catalog'], env);
    const cat = strata(['cat', big], env);
    expect(cat.status, cat.stderr).toBe(0);
    expect(cat.raw.equals(third)).toBe(true);
  });

  it('a reference block moved by -4', () => {
    const { repo, env, big, second } = setup();
    const v = versionOf(repo, env, big) + 0;
    const db = new Database(path.join(repo, 'catalog.db'), { readonly: true });
    const latest = db.prepare('SELECT MAX(id) FROM versions WHERE size = ?').pluck().get(second.length) as number;
    db.close();
    void v;
    expect(sql(repo, 'UPDATE toc SET root_start = root_start - 4, target_start = target_start - 4 WHERE version = ? AND block IS NULL AND target_start >= 4', latest)).toBeGreaterThan(0);
    expectTocCaught(env, big);
    expectCaught(repo, env, big, second);
  });

  it('a version\'s size, with its last row cut to match, and the tree\'s size checked too', () => {
    const { repo, env, big, second } = setup();
    cutTo400000(repo, second.length);
    const cat = strata(['cat', big], env);
    expect(cat.status).toBe(1);
    expect(cat.raw.length).toBe(0);
  });

  it('a snapshot row given another snapshot\'s root tree', () => {
    const { repo, env, big } = setup();
    sql(repo, 'UPDATE snapshots SET root = (SELECT root FROM snapshots ORDER BY seq LIMIT 1) WHERE seq = (SELECT MAX(seq) FROM snapshots)');
    const cat = strata(['cat', big], env);
    expect(cat.status).toBe(1);
    expect(cat.stderr).toMatch(/root tree/);
  });
});

describe('check', () => {
  it('names every disagreement, a bad snapshot root among them, and points at rebuild-catalog, which restores the rows', () => {
    const { repo, env, a, big } = setup();
    swapSmallBlocks(repo);
    sql(repo, 'UPDATE snapshots SET root = (SELECT root FROM snapshots ORDER BY seq LIMIT 1) WHERE seq = (SELECT MAX(seq) FROM snapshots)');
    const r = strata(['check'], env);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/root tree/);
    // The first snapshot is still walked: both small files' versions there disagree.
    expect(r.stderr).toContain(a);
    expect(r.stdout).toMatch(/the catalog disagrees with the sealed records in [3-9] places: run "strata rebuild-catalog"/);
    const j = JSON.parse(strata(['check', '--json'], env).stdout) as { catalogDisagreements: number };
    expect(j.catalogDisagreements).toBeGreaterThanOrEqual(3);
    ok(['rebuild-catalog'], env);
    expect(ok(['check'], env)).toMatch(/no errors found/);
    expect(strata(['cat', big], env).status).toBe(0);
  });
});

describe('a keyed forget', () => {
  it('checks the rows it reseals: a tampered row never becomes sealed truth', () => {
    const { repo, env, big, second } = setup();
    // The baseline's first two data rows swapped; the second version's refs read through them.
    swapBaselineRows(repo);
    const db = new Database(path.join(repo, 'catalog.db'));
    const first = db.prepare('SELECT id FROM snapshots ORDER BY seq LIMIT 1').pluck().get() as string;
    db.close();
    // Forgetting the first snapshot splices its rows into the second version, which is resealed.
    const forget = strata(['forget', first], env);
    expect(forget.status, forget.stderr).toBe(1);
    expect(forget.stderr).toContain(big);
    expect(forget.stderr).toMatch(/sealed TOC/);
    // The sealed truth is as it was: a catalog rebuilt from it reads the right bytes.
    ok(['rebuild-catalog'], env);
    const cat = strata(['cat', big], env);
    expect(cat.status, cat.stderr).toBe(0);
    expect(cat.raw.equals(second)).toBe(true);
  });
});

describe('key files', () => {
  it('a key file with absurd scrypt parameters is skipped, not derived: the password still opens the repository', () => {
    const { repo, env } = initCliRepo();
    const keys = path.join(repo, 'keys');
    const good = JSON.parse(fs.readFileSync(path.join(keys, fs.readdirSync(keys)[0]!), 'utf8')) as Record<string, unknown>;
    fs.writeFileSync(path.join(keys, '00000000000000aa'), JSON.stringify({ ...good, N: 3 }));
    fs.writeFileSync(path.join(keys, '00000000000000bb'), JSON.stringify({ ...good, N: 16384, p: 8192 }));
    fs.writeFileSync(path.join(keys, '00000000000000cc'), 'not json');
    const r = strata(['snapshots'], env);
    expect(r.status, r.stderr).toBe(0);
    const wrong = strata(['snapshots'], { ...env, STRATA_PASSWORD: 'nope' });
    expect(wrong.status).toBe(12);
    expect(wrong.stderr).toMatch(/out of bounds/);
  });

  it('init refuses scrypt parameters out of bounds', () => {
    const r = strata(['init', '--scrypt-n', '4'], cliEnv(path.join(tempDir(), 'repo')));
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/power of two from 1024/);
  });
});

describe('a hostile server', () => {
  it('its catalog changed while it runs: clients get integrity errors, check names the file', async () => {
    const { repo, env, a, big, second } = setup();
    void env;
    const s = await serve(repo);
    const reader = cliEnv(s.url, { STRATA_TOKEN: token(repo, 'reader', 'read'), STRATA_CACHE_DIR: path.join(tempDir(), 'cache') });
    const admin = cliEnv(s.url, { STRATA_TOKEN: token(repo, 'ops', 'admin'), STRATA_CACHE_DIR: path.join(tempDir(), 'cache') });
    const bytes = fs.readFileSync(a);
    expect(strata(['cat', a], reader).raw.equals(bytes)).toBe(true);
    swapSmallBlocks(repo);
    const cat = strata(['cat', a], reader);
    expect(cat.status, cat.stderr).toBe(1);
    expect(cat.raw.equals(bytes)).toBe(false);
    expect(cat.stderr).toMatch(/sealed/);
    expectTocCaught(reader, a);
    const check = strata(['check', '--read-data'], admin);
    expect(check.status).toBe(1);
    expect(check.stderr).toContain(a);

    // The version's size cut to 400,000 bytes, with its last row: remote cat reads nothing.
    cutTo400000(repo, second.length);
    const cut = strata(['cat', big], reader);
    expect(cut.status).toBe(1);
    expect(cut.raw.length).toBe(0);
    expect(cut.stderr).toMatch(/sealed/);
  });

  it('errors keep their exit codes: a lock conflict is 11, as locally', async () => {
    const { repo } = initCliRepo();
    const s = await serve(repo);
    const admin = cliEnv(s.url, { STRATA_TOKEN: token(repo, 'ops', 'admin'), STRATA_CACHE_DIR: path.join(tempDir(), 'cache') });
    // A live maintenance lease held by another process on this host.
    const db = new Database(path.join(repo, 'catalog.db'));
    const now = Date.now();
    db.prepare("INSERT INTO leases(id, kind, host, pid, started, heartbeat, parent) VALUES ('0123456789abcdef0123456789abcdef', 'maintenance', 'elsewhere', 1, ?, ?, NULL)").run(now, now + 3_600_000);
    db.close();
    const r = strata(['prune'], admin);
    expect(r.stderr).toMatch(/lock|running/);
    expect(r.status).toBe(11);
  });
});

/** An `append` token's request, as a client without the key could make it. */
async function call(s: Server, tok: string, method: string, route: string, body?: Buffer | object): Promise<Response> {
  const isJson = body !== undefined && !Buffer.isBuffer(body);
  const payload = body === undefined ? undefined : isJson ? Buffer.from(JSON.stringify(body)) : (body as Buffer);
  return fetch(s.url + route, {
    method,
    headers: { Authorization: `Bearer ${tok}`, ...(isJson ? { 'Content-Type': 'application/json' } : {}), ...(payload ? { 'Content-Length': String(payload.length) } : {}) },
    ...(payload ? { body: new Uint8Array(payload) } : {}),
  });
}

/** Registers a pack of random bytes whose index claims the given blocks (no key: nothing in it is sealed). */
async function forgePack(s: Server, tok: string, blocks: { id: Buffer; kind: number; length: number; size: number }[], extra: object = {}): Promise<string> {
  const kinds = ['data', 'tree', 'toc', 'snapshot'];
  const total = blocks.reduce((n, b) => n + b.length, 8);
  const bytes = Buffer.concat([Buffer.from('STRATAPK'), rng.bytes(total - 8 + 64)]);
  const name = rng.bytes(32).toString('hex');
  expect((await call(s, tok, 'PUT', `/v1/objects/pack/${name}`, bytes)).status).toBe(201);
  let at = 8;
  const entries = blocks.map((b) => {
    const e = [b.id.toString('hex'), kinds[b.kind], at, b.length, b.size];
    at += b.length;
    return e;
  });
  const r = await call(s, tok, 'POST', `/v1/packs/${name}`, { entries, ...extra });
  expect(r.status, await r.clone().text()).toBe(201);
  return name;
}

function blockRows(repo: string, where = ''): { id: Buffer; kind: number; length: number; size: number }[] {
  const db = new Database(path.join(repo, 'catalog.db'), { readonly: true });
  try {
    return db.prepare(`SELECT id, kind, length, size FROM blocks ${where}`).all() as { id: Buffer; kind: number; length: number; size: number }[];
  } finally {
    db.close();
  }
}

/**
 * A stub server on 127.0.0.1 in front of a real one: requests go through as
 * they are, and `rewrite` may change a successful answer's body.
 */
async function hostileProxy(target: string, rewrite: (route: string, body: Buffer) => Buffer): Promise<{ url: string; close: () => Promise<void> }> {
  const server = http.createServer((req, res) => {
    void (async () => {
      const chunks: Buffer[] = [];
      for await (const c of req as AsyncIterable<Buffer>) chunks.push(c);
      const body = Buffer.concat(chunks);
      const headers: Record<string, string> = {};
      for (const k of ['authorization', 'range', 'content-type']) if (typeof req.headers[k] === 'string') headers[k] = req.headers[k];
      const r = await fetch(target + req.url!, { method: req.method, headers, ...(body.length > 0 ? { body: new Uint8Array(body) } : {}) });
      let out: Buffer = Buffer.from(await r.arrayBuffer());
      if (r.status >= 200 && r.status < 300) out = rewrite(req.url!, out);
      const h: Record<string, string> = {};
      r.headers.forEach((v, k) => {
        if (!['content-length', 'transfer-encoding', 'connection', 'keep-alive', 'content-encoding'].includes(k)) h[k] = v;
      });
      res.writeHead(r.status, { ...h, 'Content-Length': String(out.length) });
      res.end(out);
    })().catch(() => res.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return { url: `http://127.0.0.1:${port}`, close: () => new Promise((resolve) => server.close(() => resolve())) };
}

/** The CLI run without blocking this process (which serves the stub server). */
async function run(args: string[], env: NodeJS.ProcessEnv): Promise<{ status: number | null; stderr: string; raw: Buffer }> {
  const p = strataAsync(args, env);
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  p.stdout.on('data', (c: Buffer) => out.push(c));
  p.stderr.on('data', (c: Buffer) => err.push(c));
  const status = await new Promise<number | null>((resolve) => p.on('close', resolve));
  return { status, stderr: Buffer.concat(err).toString('utf8'), raw: Buffer.concat(out) };
}

type PlanJson = { version: { id: number; size: number }; start: number; end: number; pieces: [string, number, number, number, number][]; next: number | null; toc: string | null };

describe('a hostile server answering crafted read plans', () => {
  it('a shifted piece, a wrong size, a swapped block id, another file\'s version record: each an integrity error, never wrong bytes', async () => {
    const { repo, a, b, big, second } = setup();
    const s = await serve(repo);
    const tok = token(repo, 'reader', 'read');
    const rightA = fs.readFileSync(a);
    // Facts a hostile server has: another file's sealed TOC and version, and a block of another file.
    const db = new Database(path.join(repo, 'catalog.db'), { readonly: true });
    // Files of one block have no sealed TOC (format 3: their tree entries name their blocks).
    const small = db.prepare('SELECT v.id, v.toc, t.block FROM versions v JOIN toc t ON t.version = v.id WHERE v.size = 4000 ORDER BY v.id').all() as { id: number; toc: Buffer | null; block: Buffer }[];
    db.close();
    expect(small).toHaveLength(2);
    const isPlan = (route: string) => /^\/v1\/paths\/[0-9a-f]{64}\/plan/.test(route);
    const plan = (rewrite: (p: PlanJson) => void) => (route: string, body: Buffer) => {
      if (!isPlan(route)) return body;
      const p = JSON.parse(body.toString('utf8')) as PlanJson;
      rewrite(p);
      return Buffer.from(JSON.stringify(p));
    };
    const cases: { name: string; file: string; right: Buffer; range?: string; rewrite: (route: string, body: Buffer) => Buffer }[] = [
      {
        name: 'a piece shifted by 4 bytes within its block',
        file: big,
        right: second,
        range: '100000-199999',
        rewrite: plan((p) => {
          const first = p.pieces[0]!;
          first[2] = first[2] >= 4 ? first[2] - 4 : first[2] + 4;
        }),
      },
      {
        name: 'a wrong size (the range cut to match)',
        file: big,
        right: second,
        rewrite: plan((p) => {
          p.version.size = 400_000;
          p.end = Math.min(p.end, 399_999);
          let at = p.start;
          p.pieces = p.pieces.filter((x) => x[4] <= p.end);
          const last = p.pieces[p.pieces.length - 1]!;
          last[3] = p.end - last[4] + 1;
          at = p.end + 1;
          p.next = null;
          void at;
        }),
      },
      {
        name: "another file's block, of the same size",
        file: a,
        right: rightA,
        rewrite: plan((p) => {
          const mine = p.pieces[0]![0];
          p.pieces[0]![0] = small.find((x) => x.block.toString('hex') !== mine)!.block.toString('hex');
        }),
      },
      {
        name: "another file's version and sealed TOC",
        file: a,
        right: rightA,
        rewrite: (route, body) => {
          if (/^\/v1\/versions\/\d+\/record/.test(route)) {
            const r = JSON.parse(body.toString('utf8')) as { toc: string | null };
            const other = small.find((x) => (x.toc?.toString('hex') ?? null) !== r.toc);
            return other ? Buffer.from(JSON.stringify({ ...r, toc: other.toc!.toString('hex') })) : body;
          }
          return plan((p) => {
            const other = small.find((x) => x.id !== p.version.id)!;
            p.version.id = other.id;
            p.toc = other.toc?.toString('hex') ?? null;
            p.pieces = [[other.block.toString('hex'), 4000, 0, 4000, 0]];
          })(route, body);
        },
      },
    ];
    void b;
    for (const c of cases) {
      const proxy = await hostileProxy(s.url, c.rewrite);
      try {
        const env = cliEnv(proxy.url, { STRATA_TOKEN: tok, STRATA_CACHE_DIR: path.join(tempDir(), 'cache') });
        const r = await run(['cat', c.file, ...(c.range ? ['--range', c.range] : [])], env);
        const start = c.range ? Number(c.range.split('-')[0]) : 0;
        expect(r.status, `${c.name}: ${r.stderr}`).toBe(1);
        expect(r.stderr, c.name).toMatch(/sealed|integrity|not this file's|belongs to another|does not end at its size/);
        // Whatever went out before the error is the file's own bytes.
        expect(r.raw.equals(c.right.subarray(start, start + r.raw.length)), c.name).toBe(true);
        expect(r.raw.length, c.name).toBeLessThan(c.range ? 100_000 : c.right.length);
      } finally {
        await proxy.close();
      }
    }
    // Through the same proxy, unchanged, every file reads right.
    const honest = await hostileProxy(s.url, (_r, body) => body);
    try {
      const env = cliEnv(honest.url, { STRATA_TOKEN: tok, STRATA_CACHE_DIR: path.join(tempDir(), 'cache') });
      expect((await run(['cat', a], env)).raw.equals(rightA)).toBe(true);
      expect((await run(['cat', big, '--range', '100000-199999'], env)).raw.equals(second.subarray(100_000, 200_000))).toBe(true);
    } finally {
      await honest.close();
    }
  });
});

describe('deduplication and an append token without the key', () => {
  it('blocks claimed by a forged pack index after prune removed them: the next backup stores them again, and they read back', async () => {
    const { repo, env } = initCliRepo();
    const src = tempDir();
    const file = path.join(src, 'f');
    const bytes = rng.bytes(700_000);
    fs.writeFileSync(file, bytes);
    ok(['backup', src], env);
    // What the attacker learned while the blocks were stored (a TOC read shows their ids and sizes).
    const learned = blockRows(repo, 'WHERE kind = 0');
    expect(learned.length).toBeGreaterThan(0);
    const db = new Database(path.join(repo, 'catalog.db'), { readonly: true });
    const snap = db.prepare('SELECT id FROM snapshots').pluck().get() as string;
    db.close();
    ok(['forget', snap, '--prune'], env);
    expect(blockRows(repo, 'WHERE kind = 0')).toHaveLength(0);

    const s = await serve(repo);
    const appendToken = token(repo, 'mallory', 'append');
    await forgePack(s, appendToken, learned);

    const client = cliEnv(s.url, { STRATA_TOKEN: token(repo, 'laptop', 'append'), STRATA_CACHE_DIR: path.join(tempDir(), 'cache') });
    ok(['backup', src], client);
    const cat = strata(['cat', file], client);
    expect(cat.status, cat.stderr).toBe(0);
    expect(cat.raw.equals(bytes)).toBe(true);
    // A second client (another cache) reads it too, and so does a local read on the server's directory.
    const other = cliEnv(s.url, { STRATA_TOKEN: token(repo, 'reader', 'read'), STRATA_CACHE_DIR: path.join(tempDir(), 'cache') });
    expect(strata(['cat', file], other).raw.equals(bytes)).toBe(true);
    expect(strata(['cat', file], env).raw.equals(bytes)).toBe(true);
    // check finds the forged copies; --repair puts the good copies in their place.
    expect(strata(['check', '--read-data', '--repair'], env).status).toBe(1);
    ok(['check', '--read-data'], env);
    expect(strata(['cat', file], client).raw.equals(bytes)).toBe(true);
  });

  it('an append token cannot move a stored block to bytes of its own: reads stay right', async () => {
    const { repo, env } = initCliRepo();
    const src = tempDir();
    const file = path.join(src, 'f');
    const bytes = rng.bytes(300_000);
    fs.writeFileSync(file, bytes);
    ok(['backup', src], env);
    const s = await serve(repo);
    const appendToken = token(repo, 'mallory', 'append');
    const live = blockRows(repo, 'WHERE kind = 0');
    await forgePack(s, appendToken, live, { replaces: live.map((b) => b.id.toString('hex')) });
    const reader = cliEnv(s.url, { STRATA_TOKEN: token(repo, 'reader', 'read'), STRATA_CACHE_DIR: path.join(tempDir(), 'cache') });
    const cat = strata(['cat', file], reader);
    expect(cat.status, cat.stderr).toBe(0);
    expect(cat.raw.equals(bytes)).toBe(true);
    expect(strata(['cat', file], env).raw.equals(bytes)).toBe(true);
  });
});
