/**
 * One error table (src/errors.ts): each code has one exit code and one HTTP
 * status. A server answers with the table's status, a client turns the code
 * back into the same error, so a command ends alike on a directory and over
 * `strata serve`: same exit code, same `error` in --json.
 */
import * as fs from 'node:fs';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import * as path from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RemoteService } from '../src/catalog/remote.js';
import { ERROR_CODES, ERRORS, EXIT_MEANINGS, httpStatus, StrataError, type ErrorCode } from '../src/errors.js';
import { handler, HttpError } from '../src/server/http.js';
import type { TokenStore } from '../src/server/tokens.js';
import { HttpStorage, type Reply } from '../src/storage/http.js';
import { cliEnv, initCliRepo, ROOT, Rng, strata, tempDir } from './helpers.js';
import { client, serve, token } from './server-helpers.js';

describe('the table', () => {
  it('every code has an exit code help explains and an HTTP error status', () => {
    expect(ERROR_CODES.length).toBeGreaterThan(30);
    for (const code of ERROR_CODES) {
      const { exit, http: status } = ERRORS[code];
      expect(Object.keys(EXIT_MEANINGS).map(Number), code).toContain(exit);
      expect(exit, code).not.toBe(0);
      expect(status >= 400 && status <= 599, `${code}: ${status}`).toBe(true);
      expect(http.STATUS_CODES[status], `${code}: ${status}`).toBeDefined();
      expect(new StrataError(code, 'x').exitCode, code).toBe(exit);
    }
  });

  it('the codes a user meets keep their documented exit codes and statuses', () => {
    const row = (code: ErrorCode) => [ERRORS[code].exit, ERRORS[code].http];
    expect(row('usage')).toEqual([2, 400]);
    expect(row('not_found')).toEqual([1, 404]);
    expect(row('no_repository')).toEqual([10, 404]);
    expect(row('locked')).toEqual([11, 409]);
    expect(row('wrong_key')[0]).toBe(12);
    expect(row('unauthorized')).toEqual([12, 401]);
    expect(row('forbidden')).toEqual([1, 403]);
    expect(row('integrity')).toEqual([1, 409]);
    expect(row('range_not_satisfiable')).toEqual([1, 416]);
    expect(row('local_only')[0]).toBe(2);
    expect(row('interrupted')[0]).toBe(130);
    expect(row('internal')).toEqual([1, 500]);
  });

  it('every code in the table is one the code uses, and every code the code throws is in the table', () => {
    const sources: string[] = [];
    const walk = (dir: string) => {
      for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
        const p = path.join(dir, e.name);
        if (e.isDirectory()) walk(p);
        else if (p.endsWith('.ts')) sources.push(fs.readFileSync(p, 'utf8'));
      }
    };
    walk(path.join(ROOT, 'src'));
    const text = sources.join('\n');
    for (const code of ERROR_CODES) expect(text.includes(`'${code}'`), `${code} is never used`).toBe(true);
    const thrown = [...text.matchAll(/new (?:StrataError|HttpError|StorageError)\(\s*'(\w+)'|super\('(\w+)'/g)].map((m) => m[1] ?? m[2]!);
    expect(thrown.length).toBeGreaterThan(50);
    for (const code of thrown) expect(ERROR_CODES, code).toContain(code);
  });
});

describe('docs/openapi.yaml', () => {
  it('its list of error codes names only codes of the table', () => {
    const text = fs.readFileSync(path.join(ROOT, 'docs', 'openapi.yaml'), 'utf8');
    const listed = [...text.split('A stable code from')[1]!.split('message:')[0]!.matchAll(/\b([a-z]+(?:_[a-z]+)+)\b/g)].map((m) => m[1]!);
    expect(listed.length).toBeGreaterThan(20);
    for (const code of listed) expect(ERROR_CODES, code).toContain(code);
  });
});

describe('over the wire, every code of the table', () => {
  let url = '';
  let server: http.Server;
  beforeAll(async () => {
    // Routes that throw each code, answered by the server's own error handling.
    const routes = ERROR_CODES.map((code) => ({
      method: 'GET' as const,
      path: `/v1/e/${code}`,
      role: null,
      maxBody: 0,
      handle: async () => {
        throw code === 'range_not_satisfiable' ? new HttpError(code, `secret ${code}`, { 'Content-Range': 'bytes */1' }) : new StrataError(code, `secret ${code}`);
      },
    }));
    server = http.createServer(handler(routes, {} as TokenStore, { quiet: true }));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(() => new Promise<void>((r) => server.close(() => r())));

  it('is answered with its status, and a client turns it back into the same code and exit code', async () => {
    const st = new HttpStorage(url, { token: 't', retries: 0 });
    try {
      for (const code of ERROR_CODES) {
        const r = await st.call('GET', `/v1/e/${code}`);
        expect(r.status, code).toBe(httpStatus(code));
        const body = JSON.parse(r.body.toString()) as { error: string; message: string };
        expect(body.error, code).toBe(code);
        // A 5xx is the server's own failure: its message stays in its log.
        expect(body.message.includes('secret'), code).toBe(r.status < 500);
        const e = st.refusal(r, 'GET', 'x');
        expect(e, code).toBeInstanceOf(StrataError);
        expect([e.code, e.exitCode], code).toEqual([code, ERRORS[code].exit]);
        const remote = await new RemoteService(answering(st, r)).snapshots().catch((x: unknown) => x);
        expect([(remote as StrataError).code, (remote as StrataError).exitCode], `catalog: ${code}`).toEqual([code, ERRORS[code].exit]);
      }
    } finally {
      await st.close();
    }
  });
});

describe('an answer a client does not know', () => {
  const reply = (status: number, body: string): Reply => ({ status, headers: {}, body: Buffer.from(body) });
  const st = new HttpStorage('http://127.0.0.1:9', { token: 't' });
  afterAll(() => st.close());

  it('an unknown code is a generic error (exit 1), never a crash, on the object and the catalog routes', async () => {
    for (const status of [400, 404, 409, 423, 500, 503]) {
      for (const error of ['from_a_newer_server', '__proto__', 'toString', 'constructor']) {
        const r = reply(status, JSON.stringify({ error, message: 'hm' }));
        expect(st.refusal(r, 'GET', 'x'), `${status} ${error}`).toMatchObject({ code: 'remote', exitCode: 1 });
        await expect(new RemoteService(answering(st, r)).snapshots()).rejects.toMatchObject({ code: 'remote', exitCode: 1 });
      }
    }
  });

  it('a body that is not ours: the status says what it can, else a generic error', async () => {
    for (const body of ['<html>502</html>', '', 'null', '[]', '"x"', '42', '{"error": 7}', '{"message": 9}']) {
      expect(st.refusal(reply(502, body), 'GET', 'x'), body).toMatchObject({ code: 'remote', exitCode: 1 });
      expect(st.refusal(reply(404, body), 'GET', 'x'), body).toMatchObject({ code: 'not_found', exitCode: 1 });
      expect(st.refusal(reply(401, body), 'GET', 'x'), body).toMatchObject({ code: 'unauthorized', exitCode: 12 });
      await expect(new RemoteService(answering(st, reply(409, body))).snapshots(), body).rejects.toMatchObject({ code: 'remote', exitCode: 1 });
    }
  });
});

/** An HttpStorage whose every call gets `r`. */
function answering(st: HttpStorage, r: Reply): HttpStorage {
  return Object.assign(Object.create(st) as HttpStorage, { call: async () => r });
}

// --- real processes: the same command on a directory and through `strata serve`

interface Setup {
  repo: string;
  src: string;
  file: string;
  url: string;
  admin: string;
}

/** A repository with one backup (a 100 KB file and a directory), served; nothing opens its catalog on the server yet. */
async function setup(): Promise<Setup> {
  const { repo, env } = initCliRepo();
  const src = tempDir();
  const file = path.join(src, 'a.bin');
  fs.writeFileSync(file, new Rng(7).bytes(100_000));
  fs.mkdirSync(path.join(src, 'sub'));
  fs.writeFileSync(path.join(src, 'sub', 'b.txt'), 'b');
  const b = strata(['backup', src, '-q'], env);
  expect(b.status, b.stderr).toBe(0);
  const s = await serve(repo);
  return { repo, src, file, url: s.url, admin: token(repo, 'ops', 'admin') };
}

/**
 * Runs `args --json` on the directory and through the server: both must end
 * with `exit` and print `{"error": code}`.
 */
function sameError(s: Setup, args: string[], code: ErrorCode, exit: number, env: Record<string, string | undefined> = {}): void {
  const places: [string, NodeJS.ProcessEnv][] = [
    ['directory', cliEnv(s.repo, env)],
    ['server', client(s.url, s.admin, env)],
  ];
  for (const [where, e] of places) {
    const r = strata([...args, '--json'], e);
    expect(r.status, `${where}: ${r.stderr}`).toBe(exit);
    expect(JSON.parse(r.stdout), `${where}: ${r.stdout}`).toMatchObject({ error: code });
  }
}

async function raw(s: Setup, method: string, route: string, body?: object): Promise<{ status: number; json: { error?: string; message?: string } }> {
  const payload = body ? JSON.stringify(body) : undefined;
  const r = await fetch(s.url + route, {
    method,
    headers: { Authorization: `Bearer ${s.admin}`, ...(payload ? { 'Content-Type': 'application/json', 'Content-Length': String(payload.length) } : {}) },
    ...(payload ? { body: payload } : {}),
  });
  return { status: r.status, json: (await r.json()) as { error?: string; message?: string } };
}

describe('the same exit code and --json error on a directory and through a server', () => {
  let s: Setup;
  beforeAll(async () => {
    s = await setup();
  });

  it('usage (2): a bad option, and a command the repository cannot run as given', () => {
    sameError(s, ['snapshots', '--no-such-option'], 'usage', 2);
    sameError(s, ['forget'], 'usage', 2);
  });

  it('wrong_key (12): a wrong password', () => {
    sameError(s, ['snapshots'], 'wrong_key', 12, { STRATA_PASSWORD: 'not the password' });
  });

  it('not_found (1): a path no snapshot has, a snapshot id no snapshot has', () => {
    sameError(s, ['cat', path.join(s.src, 'missing')], 'not_found', 1);
    sameError(s, ['ls', '--at', 'ffffffff'], 'not_found', 1);
  });

  it('range_not_satisfiable (1): a range past the end of the file', () => {
    sameError(s, ['cat', s.file, '--range', '200000-300000'], 'range_not_satisfiable', 1);
  });

  it('is_directory (1): cat of a directory', () => {
    sameError(s, ['cat', path.join(s.src, 'sub')], 'is_directory', 1);
  });

  it('no_sources (1): a backup of nothing that exists', () => {
    sameError(s, ['backup', path.join(s.src, 'nowhere')], 'no_sources', 1);
  });

  it('exists (1): init where a repository is', () => {
    sameError(s, ['init', '--scrypt-n', '1024'], 'exists', 1);
  });

  it('locked (11): a maintenance lease held by another process; the server answers 409 locked', async () => {
    const db = new Database(path.join(s.repo, 'catalog.db'));
    const now = Date.now();
    const lease = 'fedcba9876543210fedcba9876543210';
    db.prepare("INSERT INTO leases(id, kind, host, pid, started, heartbeat, parent) VALUES (?, 'maintenance', 'elsewhere', 1, ?, ?, NULL)").run(lease, now, now + 3_600_000);
    try {
      sameError(s, ['prune'], 'locked', 11);
      const r = await raw(s, 'POST', '/v1/maintenance', { waitMs: 0 });
      expect([r.status, r.json.error]).toEqual([409, 'locked']);
    } finally {
      db.prepare('DELETE FROM leases WHERE id = ?').run(lease);
      db.close();
    }
  });

  it('codes only a server gives: unauthorized (12), forbidden (1), local_only (2)', () => {
    const cases: [string[], NodeJS.ProcessEnv, ErrorCode, number][] = [
      [['snapshots'], client(s.url, 'strata_not-a-token'), 'unauthorized', 12],
      [['backup', s.src], client(s.url, token(s.repo, 'reader', 'read')), 'forbidden', 1],
      [['unlock'], client(s.url, s.admin), 'local_only', 2],
    ];
    for (const [args, env, code, exit] of cases) {
      const r = strata([...args, '--json'], env);
      expect(r.status, `${code}: ${r.stderr}`).toBe(exit);
      expect(JSON.parse(r.stdout)).toMatchObject({ error: code });
    }
  });
});

describe('failures the server meets itself keep their code', () => {
  it('integrity (1): a flipped byte in a block of the file', async () => {
    const s = await setup();
    const db = new Database(path.join(s.repo, 'catalog.db'), { readonly: true });
    const blk = db
      .prepare('SELECT p.name AS pack, b.offset, b.length FROM blocks b JOIN packs p ON p.id = b.pack WHERE b.kind = 0 ORDER BY b.length DESC LIMIT 1')
      .get() as { pack: string; offset: number; length: number };
    db.close();
    expect(blk.length).toBeGreaterThan(1000);
    const fd = fs.openSync(path.join(s.repo, 'packs', blk.pack.slice(0, 2), blk.pack), 'r+');
    fs.writeSync(fd, Buffer.from([0xff, 0x00, 0xff]), 0, 3, blk.offset + 40);
    fs.closeSync(fd);
    sameError(s, ['cat', s.file], 'integrity', 1);
  });

  it('format (1): a catalog newer than this strata; the server says which code, not its log message', async () => {
    const s = await setup();
    const db = new Database(path.join(s.repo, 'catalog.db'));
    db.prepare("UPDATE info SET value = '999' WHERE key = 'schema'").run();
    db.close();
    const r = await raw(s, 'GET', '/v1/snapshots');
    expect(r.status).toBe(500);
    expect(r.json.error).toBe('format');
    expect(r.json.message).not.toMatch(/schema|999/);
    sameError(s, ['snapshots'], 'format', 1);
  });

  it('no_repository (10): a directory, or a server, with no repository; the server answers 404 no_repository', async () => {
    const dir = tempDir();
    const admin = token(dir, 'ops', 'admin');
    const srv = await serve(dir);
    const s: Setup = { repo: dir, src: dir, file: dir, url: srv.url, admin };
    sameError(s, ['snapshots'], 'no_repository', 10);
    const r = await raw(s, 'GET', '/v1/snapshots');
    expect([r.status, r.json.error]).toEqual([404, 'no_repository']);
  });
});
