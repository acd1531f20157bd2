/**
 * strata serve and strata token end to end: real servers (the built CLI in
 * child processes) on 127.0.0.1 with ephemeral ports, raw sockets for what a
 * well-behaved client would never send, and HttpStorage held to the same
 * contract as LocalStorage.
 */
import { spawn, spawnSync, type ChildProcessByStdio } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import * as path from 'node:path';
import type { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseRange } from '../src/server/range.js';
import { routeTable } from '../src/server/routes.js';
import { CATALOG_PROTOCOL, requestOf, type ProtocolMethod } from '../src/catalog/protocol.js';
import { HttpStorage } from '../src/storage/http.js';
import { BIN, cliEnv, ROOT, Rng, strata, tempDir } from './helpers.js';

/** Token commands and the server need no password: none is in their environment. */
const envFor = (dir: string) => cliEnv(dir, { STRATA_PASSWORD: undefined });
const issued: string[] = [];
const running: Server[] = [];

interface Server {
  url: string;
  port: number;
  proc: ChildProcessByStdio<null, Readable, Readable>;
  log: () => string;
  exited: Promise<number | null>;
}

async function serve(dir: string, args: string[] = []): Promise<Server> {
  const proc = spawn(process.execPath, [BIN, 'serve', '--listen', '127.0.0.1:0', ...args], { env: envFor(dir), stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  proc.stderr.on('data', (c: Buffer) => (err += c.toString()));
  const exited = new Promise<number | null>((r) => proc.on('exit', (code) => r(code)));
  const url = await new Promise<string>((resolve, reject) => {
    let out = '';
    proc.stdout.on('data', (c: Buffer) => {
      out += c.toString();
      const m = /listening on (\S+)\n/.exec(out);
      if (m) resolve(m[1]!);
    });
    void exited.then((code) => reject(new Error(`serve exited with ${code}: ${err}`)));
  });
  const s: Server = { url, port: Number(new URL(url).port), proc, log: () => err, exited };
  running.push(s);
  return s;
}

afterAll(async () => {
  for (const s of running) if (s.proc.exitCode === null) s.proc.kill('SIGTERM');
  await Promise.all(running.map((s) => s.exited));
  // No server log ever shows a token.
  for (const s of running) for (const t of issued) expect(s.log()).not.toContain(t);
});

function addToken(dir: string, name: string, role: string): string {
  const r = strata(['token', 'add', name, '--role', role, '--json'], envFor(dir));
  expect(r.status, r.stderr).toBe(0);
  const token = (JSON.parse(r.stdout) as { token: string }).token;
  issued.push(token);
  return token;
}

interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
  json: () => { error?: string; message?: string; [k: string]: unknown };
}

function call(url: string, method: string, p: string, opts: { token?: string; headers?: Record<string, string>; body?: Buffer } = {}): Promise<Reply> {
  const headers: Record<string, string> = { ...opts.headers };
  if (opts.token) headers.Authorization = `Bearer ${opts.token}`;
  return new Promise((resolve, reject) => {
    const req = http.request(`${url}${p}`, { method, headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const body = Buffer.concat(chunks);
        resolve({ status: res.statusCode!, headers: res.headers, body, json: () => JSON.parse(body.toString()) });
      });
    });
    req.on('error', reject);
    req.end(opts.body);
  });
}

/**
 * Writes `data` on a raw connection and collects what comes back until the
 * server closes it (or `waitMs`). Requests that should be answered say
 * "Connection: close"; `end` half-closes the connection, which node:http
 * takes as the client leaving (an aborted upload).
 */
function raw(port: number, data: string | Buffer, opts: { end?: boolean; waitMs?: number } = {}): Promise<string> {
  return new Promise((resolve) => {
    const sock = net.connect(port, '127.0.0.1');
    let got = '';
    const timer = setTimeout(() => sock.destroy(), opts.waitMs ?? 3000);
    sock.on('data', (c) => (got += c.toString('latin1')));
    sock.on('error', () => {});
    sock.on('close', () => {
      clearTimeout(timer);
      resolve(got);
    });
    sock.write(data);
    if (opts.end) sock.end();
  });
}

const hex = (s: string) => createHash('sha256').update(s).digest('hex');

/** Every file under `dir`, relative. */
function files(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else out.push(path.relative(dir, p));
    }
  };
  walk(dir);
  return out.sort();
}

async function until(check: () => boolean, ms = 3000): Promise<void> {
  const end = Date.now() + ms;
  while (!check() && Date.now() < end) await new Promise((r) => setTimeout(r, 25));
}

describe('strata token', () => {
  const dir = path.join(tempDir(), 'srv');

  it('add prints a token once, list shows names and roles, revoke removes; no password needed', () => {
    const env = envFor(dir);
    const a = strata(['token', 'add', 'backup-host', '--role', 'append'], env);
    expect(a.status, a.stderr).toBe(0);
    const token = a.stdout.trim();
    issued.push(token);
    expect(token).toMatch(/^strata_[A-Za-z0-9_-]{43}$/);
    const b = addToken(dir, 'ops@site', 'admin');
    expect(b).not.toBe(token);

    const list = strata(['token', 'list', '--json'], env);
    expect(list.status).toBe(0);
    const rows = JSON.parse(list.stdout) as { name: string; role: string; created: string }[];
    expect(rows.map((r) => [r.name, r.role])).toEqual([
      ['backup-host', 'append'],
      ['ops@site', 'admin'],
    ]);
    expect(Object.keys(rows[0]!).sort()).toEqual(['created', 'name', 'role']);
    expect(strata(['token', 'list'], env).stdout).toMatch(/backup-host\s+append/);

    // Hashed at rest, in a file only its owner reads.
    const file = path.join(dir, 'server', 'tokens.json');
    const text = fs.readFileSync(file, 'utf8');
    expect(text).not.toContain(token);
    expect(text).not.toContain(b);
    expect(text).not.toContain(token.slice(7));
    expect(text).toContain(createHash('sha256').update(token).digest('hex'));
    expect(fs.statSync(file).mode & 0o777).toBe(0o600);

    expect(strata(['token', 'revoke', 'backup-host'], env).status).toBe(0);
    expect((JSON.parse(strata(['token', 'list', '--json'], env).stdout) as unknown[]).length).toBe(1);
  });

  it('refuses duplicates, unknown names, bad names and roles with one clear line', () => {
    const env = envFor(dir);
    addToken(dir, 'dup', 'read');
    const dup = strata(['token', 'add', 'dup', '--role', 'read'], env);
    expect(dup.status).toBe(1);
    expect(dup.stderr).toMatch(/already exists/);
    const unknown = strata(['token', 'revoke', 'nobody', '--json'], env);
    expect(unknown.status).toBe(1);
    expect(JSON.parse(unknown.stdout)).toMatchObject({ error: 'not_found' });
    for (const name of ['../x', 'a/b', '', '.hidden', 'x'.repeat(65), 'sp ace']) {
      const r = strata(['token', 'add', name, '--role', 'read'], env);
      expect(r.status, name).toBe(2);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
    }
    expect(strata(['token', 'add', 'x', '--role', 'root'], env).status).toBe(2);
    expect(strata(['token', 'add', 'x'], env).status).toBe(2);
  });
});

describe('strata serve', () => {
  const dir = path.join(tempDir(), 'srv');
  let s: Server;
  let read: string;
  let append: string;
  let admin: string;
  const pack = hex('pack one');
  const body = new Rng(1).bytes(1000);

  beforeAll(async () => {
    read = addToken(dir, 'reader', 'read');
    append = addToken(dir, 'writer', 'append');
    admin = addToken(dir, 'boss', 'admin');
    s = await serve(dir);
    expect((await call(s.url, 'PUT', `/v1/objects/pack/${pack}`, { token: append, body })).status).toBe(201);
  });

  it('health needs no token', async () => {
    const r = await call(s.url, 'GET', '/v1/health');
    expect(r.status).toBe(200);
    expect(r.json()).toEqual({ ok: true, version: expect.any(String) });
  });

  it('401 without a valid token, 403 below the route role, revocation applies at once', async () => {
    for (const token of [undefined, 'strata_nope', `${read}x`, read.slice(0, -1)]) {
      const r = await call(s.url, 'GET', '/v1/objects/pack', { token });
      expect(r.status).toBe(401);
      expect(r.headers['www-authenticate']).toMatch(/^Bearer/);
      expect(r.json().error).toBe('unauthorized');
    }
    expect((await call(s.url, 'GET', '/v1/objects/pack', { headers: { Authorization: `Basic ${read}` } })).status).toBe(401);
    // Even unknown routes ask for a token first: nothing is revealed to strangers.
    expect((await call(s.url, 'GET', '/v1/secret')).status).toBe(401);

    expect((await call(s.url, 'GET', '/v1/objects/pack', { token: read })).json().names).toEqual([pack]);
    const other = hex('role test');
    const put = await call(s.url, 'PUT', `/v1/objects/pack/${other}`, { token: read, body: Buffer.from('x') });
    expect(put.status).toBe(403);
    expect(put.json().message).toMatch(/append/);
    expect((await call(s.url, 'PUT', `/v1/objects/pack/${other}`, { token: append, body: Buffer.from('x') })).status).toBe(201);
    expect((await call(s.url, 'DELETE', `/v1/objects/pack/${other}`, { token: append })).status).toBe(403);
    expect((await call(s.url, 'DELETE', `/v1/objects/pack/${other}`, { token: admin })).status).toBe(204);
    expect((await call(s.url, 'DELETE', `/v1/objects/pack/${other}`, { token: admin })).status).toBe(404);

    const temp = addToken(dir, 'temp', 'read');
    expect((await call(s.url, 'GET', '/v1/objects/pack', { token: temp })).status).toBe(200);
    expect(strata(['token', 'revoke', 'temp'], envFor(dir)).status).toBe(0);
    expect((await call(s.url, 'GET', '/v1/objects/pack', { token: temp })).status).toBe(401);
  });

  it('byte ranges: 206 with Content-Range, clamped ends, suffixes; 416 with bytes */size', async () => {
    const get = (range?: string) => call(s.url, 'GET', `/v1/objects/pack/${pack}`, { token: read, headers: range ? { Range: range } : {} });
    const full = await get();
    expect(full.status).toBe(200);
    expect(full.body.equals(body)).toBe(true);
    expect(full.headers['accept-ranges']).toBe('bytes');
    const cases: [string, number, number][] = [
      ['bytes=0-9', 0, 9],
      ['bytes=990-', 990, 999],
      ['bytes=-10', 990, 999],
      ['bytes=995-5000', 995, 999],
      ['bytes=-5000', 0, 999],
      ['bytes=999-999', 999, 999],
    ];
    for (const [range, a, b] of cases) {
      const r = await get(range);
      expect(r.status, range).toBe(206);
      expect(r.headers['content-range']).toBe(`bytes ${a}-${b}/1000`);
      expect(r.body.equals(body.subarray(a, b + 1)), range).toBe(true);
    }
    for (const range of ['bytes=1000-', 'bytes=5000-6000', 'bytes=5-2', 'bytes=-0', 'bytes=0-1,5-6', 'items=0-1', 'bytes=abc', 'bytes=-', 'bytes=1-2-3']) {
      const r = await get(range);
      expect(r.status, range).toBe(416);
      expect(r.headers['content-range']).toBe('bytes */1000');
      expect(r.json().error).toBe('range_not_satisfiable');
    }
    const head = await call(s.url, 'HEAD', `/v1/objects/pack/${pack}`, { token: read });
    expect(head.status).toBe(200);
    expect(head.headers['content-length']).toBe('1000');
    expect(head.body.length).toBe(0);
    expect((await call(s.url, 'HEAD', `/v1/objects/pack/${hex('missing')}`, { token: read })).status).toBe(404);
    expect((await call(s.url, 'GET', `/v1/objects/pack/${hex('missing')}`, { token: read })).json().error).toBe('not_found');
  });

  it('objects are write-once: the same bytes again are fine, other bytes are 409; config and keys too', async () => {
    const again = await call(s.url, 'PUT', `/v1/objects/pack/${pack}`, { token: append, body });
    expect(again.status).toBe(200);
    const other = Buffer.from(body);
    other[500] = other[500]! ^ 1;
    const conflict = await call(s.url, 'PUT', `/v1/objects/pack/${pack}`, { token: append, body: other });
    expect(conflict.status).toBe(409);
    expect(conflict.json().error).toBe('conflict');
    expect((await call(s.url, 'PUT', `/v1/objects/pack/${pack}`, { token: admin, body: body.subarray(1) })).status).toBe(409);
    expect(fs.readFileSync(path.join(dir, 'packs', pack.slice(0, 2), pack)).equals(body)).toBe(true);

    const config = Buffer.from('{"strata":"repository"}\n');
    expect((await call(s.url, 'PUT', '/v1/objects/config/config', { token: append, body: config })).status).toBe(201);
    expect((await call(s.url, 'PUT', '/v1/objects/config/config', { token: append, body: config })).status).toBe(200);
    expect((await call(s.url, 'PUT', '/v1/objects/config/config', { token: admin, body: Buffer.from('{}') })).status).toBe(409);
    expect(fs.readFileSync(path.join(dir, 'config')).equals(config)).toBe(true);
    expect((await call(s.url, 'GET', '/v1/objects/config', { token: read })).json().names).toEqual(['config']);
    const key = '0123456789abcdef';
    expect((await call(s.url, 'PUT', `/v1/objects/key/${key}`, { token: append, body: Buffer.from('{}') })).status).toBe(201);
    expect((await call(s.url, 'PUT', `/v1/objects/key/${key}`, { token: append, body: Buffer.from('{}') })).status).toBe(200);
    expect((await call(s.url, 'PUT', `/v1/objects/key/${key}`, { token: append, body: Buffer.from('{"x":1}') })).status).toBe(409);
    // A second key file needs admin: the append role only creates a repository's first.
    expect((await call(s.url, 'PUT', '/v1/objects/key/0123456789abcdee', { token: append, body: Buffer.from('{}') })).status).toBe(403);
    expect((await call(s.url, 'PUT', '/v1/objects/key/0123456789abcdee', { token: admin, body: Buffer.from('{}') })).status).toBe(201);
  });

  it('body limits: 413 for oversized small objects and bodies where none belongs, 411 without a length', async () => {
    const big = await call(s.url, 'PUT', '/v1/objects/key/fedcba9876543210', { token: append, body: Buffer.alloc(100_000) });
    expect(big.status).toBe(413);
    expect(big.json().error).toBe('body_too_large');
    const withBody = await call(s.url, 'GET', '/v1/objects/pack', { token: read, body: Buffer.from('hello'), headers: { 'Content-Length': '5' } });
    expect(withBody.status).toBe(413);
    // A 3 GiB announcement is refused before a byte of it is read.
    const huge = await raw(s.port, `PUT /v1/objects/pack/${hex('huge')} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer ${append}\r\nContent-Length: 3221225472\r\n\r\nabc`);
    expect(huge).toMatch(/^HTTP\/1\.1 413 /);
    const chunked = await raw(
      s.port,
      `PUT /v1/objects/pack/${hex('chunked')} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer ${append}\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n`,
    );
    expect(chunked).toMatch(/^HTTP\/1\.1 411 /);
    expect(fs.existsSync(path.join(dir, 'packs', hex('chunked').slice(0, 2)))).toBe(false);
  });

  it('Expect: 100-continue: the body is invited only after authentication and limits pass', async () => {
    const name = hex('continue');
    const head = (token: string, length: number) =>
      `PUT /v1/objects/pack/${name} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer ${token}\r\nExpect: 100-continue\r\nContent-Length: ${length}\r\n\r\n`;
    expect(await raw(s.port, head(read, 4))).toMatch(/^HTTP\/1\.1 403 /);
    expect(await raw(s.port, head('strata_bad', 4))).toMatch(/^HTTP\/1\.1 401 /);
    const ok = await new Promise<string>((resolve) => {
      const sock = net.connect(s.port, '127.0.0.1');
      let got = '';
      sock.on('data', (c) => {
        got += c.toString();
        if (got.startsWith('HTTP/1.1 100 Continue\r\n\r\n') && !got.includes('201')) sock.write('data');
      });
      sock.on('close', () => resolve(got));
      sock.write(head(append, 4));
    });
    expect(ok).toMatch(/^HTTP\/1\.1 100 Continue\r\n\r\nHTTP\/1\.1 201 /);
  });

  it('a truncated upload leaves nothing, visible or temporary', async () => {
    const name = hex('truncated');
    await raw(s.port, `PUT /v1/objects/pack/${name} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer ${append}\r\nContent-Length: 100000\r\n\r\n${'z'.repeat(50_000)}`, {
      end: true,
    });
    const sub = path.join(dir, 'packs', name.slice(0, 2));
    await until(() => !fs.existsSync(sub) || fs.readdirSync(sub).length === 0);
    expect(fs.existsSync(sub) ? fs.readdirSync(sub) : []).toEqual([]);
    expect((await call(s.url, 'HEAD', `/v1/objects/pack/${name}`, { token: read })).status).toBe(404);
    expect((await call(s.url, 'GET', '/v1/objects/pack', { token: read })).json().names).not.toContain(name);
  });

  it('404 for unknown routes and kinds, 405 with Allow for wrong methods, JSON errors throughout', async () => {
    for (const p of ['/v1/nothing', '/v1/objects', '/v1/objects/', '/v1/objects/blob', '/v1/objects/pack/', '/', '/v2/health', '//v1/health']) {
      const r = await call(s.url, 'GET', p, { token: read });
      expect(r.status, p).toBe(404);
      expect(r.headers['content-type']).toBe('application/json');
      expect(Object.keys(r.json()).sort()).toEqual(['error', 'message']);
    }
    const r = await call(s.url, 'POST', `/v1/objects/pack/${pack}`, { token: admin, body: Buffer.from('{"bad json') });
    expect(r.status).toBe(405);
    expect(r.headers.allow).toBe('GET, HEAD, PUT, DELETE');
    expect((await call(s.url, 'DELETE', '/v1/health', { token: admin })).status).toBe(405);
  });

  it('path tricks are refused and nothing is written outside the directory', async () => {
    const parent = path.dirname(dir);
    const before = files(parent);
    const tricks = [
      '/v1/objects/pack/..',
      '/v1/objects/pack/%2e%2e',
      '/v1/objects/key/..%2f..%2fconfig',
      '/v1/objects/key/..%2F..%2F..%2Fescape',
      '/v1/objects/key/%2e%2e%2fserver%2ftokens.json',
      '/v1/objects/config/..%2fconfig',
      '/v1/objects/config/other',
      '/v1/objects/key/.tmp-0123456789abcdef',
      '/v1/objects/key/0123456789ABCDEF',
      '/v1/objects/key/0123456789abcdef%00',
      `/v1/objects/pack/${'a'.repeat(4000)}`,
      `/v1/objects/pack/${pack}%2f..`,
      `/v1/objects/pack/${pack.slice(0, 63)}`,
      '/v1/objects/../server/tokens.json',
      '/v1/objects/pack/../../server/tokens.json',
      '/v1/objects/%2e%2e/server',
      '/v1/objects/key/~root',
    ];
    for (const p of tricks) {
      for (const method of ['GET', 'PUT', 'DELETE']) {
        const r = await call(s.url, method, p, { token: admin, body: method === 'PUT' ? Buffer.from('evil') : undefined });
        expect([400, 404], `${method} ${p}`).toContain(r.status);
        expect(r.body.toString()).not.toContain('sha256');
      }
    }
    // Raw targets that an HTTP library would normalise.
    for (const target of ['/v1/objects/pack/../../../etc/passwd', 'http://evil/v1/objects/pack', '*', '/v1/objects/key/a\\b']) {
      const reply = await raw(s.port, `GET ${target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer ${admin}\r\n\r\n`);
      expect(reply, target).toMatch(/^HTTP\/1\.1 40[04] /);
    }
    expect(files(parent)).toEqual(before);
    expect(fs.existsSync(path.join(dir, 'escape'))).toBe(false);
  });

  it('logs one line per request, without tokens', async () => {
    await until(() => s.log().includes('DELETE /v1/objects/pack/'));
    const log = s.log();
    expect(log).toMatch(/GET \/v1\/health 200 in=0 out=\d+ \d+ms/);
    expect(log).toMatch(/PUT \/v1\/objects\/pack\/[0-9a-f]{64} 201 in=1000 out=\d+ \d+ms token=writer/);
    expect(log).not.toMatch(/Bearer|Authorization|strata_/i);
  });
});

describe('a malformed-request barrage', () => {
  const dir = path.join(tempDir(), 'srv');
  let s: Server;
  let token: string;
  const seed = hex('seed');

  beforeAll(async () => {
    token = addToken(dir, 'w', 'admin');
    s = await serve(dir, ['--headers-timeout', '0.5', '--idle-timeout', '1', '--quiet']);
    expect((await call(s.url, 'PUT', `/v1/objects/pack/${seed}`, { token, body: Buffer.alloc(100) })).status).toBe(201);
  });

  it('thousands of bad requests, then the server still answers normally', async () => {
    const rng = new Rng(42);
    const name = hex('barrage');
    const auth = `Authorization: Bearer ${token}\r\n`;
    const payloads: (() => string | Buffer)[] = [
      () => 'GARBAGE\r\n\r\n',
      () => 'GET / HTTP/1.1\r\n\r\n',
      () => 'BREW /v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n',
      () => 'GET /v1/health HTTP/9.9\r\nHost: x\r\nConnection: close\r\n\r\n',
      () => 'GET /v1/health\r\n\r\n',
      () => `GET /v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`,
      () => `GET /${'a'.repeat(20_000)} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`,
      () => `GET /v1/objects/pack HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer ${'x'.repeat(10_000)}\r\n\r\n`,
      () => `PUT /v1/objects/pack/${name} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n${auth}Content-Length: 100\r\n\r\nshort`,
      () => `PUT /v1/objects/pack/${name} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n${auth}Content-Length: abc\r\n\r\n`,
      () => `PUT /v1/objects/pack/${name} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n${auth}Content-Length: -1\r\n\r\n`,
      () => `PUT /v1/objects/pack/${name} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n${auth}Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\nabc`,
      () => `PUT /v1/objects/pack/${name} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n${auth}Transfer-Encoding: chunked\r\n\r\nzz\r\nnot hex\r\n`,
      () => `POST /v1/objects/pack HTTP/1.1\r\nHost: x\r\nConnection: close\r\n${auth}Content-Type: application/json\r\nContent-Length: 9\r\n\r\n{"a":[1,}`,
      () => `PUT /v1/objects/key/0123456789abcdef HTTP/1.1\r\nHost: x\r\nConnection: close\r\n${auth}Content-Type: application/json\r\nContent-Length: 4\r\n\r\n[1,2`,
      () => `GET /v1/objects/pack/${seed} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n${auth}Range: bytes=${'9'.repeat(40)}-\r\n\r\n`,
      () => `GET /v1/objects/pack/${seed} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n${auth}Range: bytes=0-1,3-4\r\n\r\n`,
      () => `GET /v1/objects/pack HTTP/1.1\r\nHost: x\r\nConnection: close\r\n${auth}Content-Length: 5\r\n\r\nhello`,
      () => `GET /v1/objects/${rng.pick(['pack', 'key', 'config', 'x', '..', '%00'])}/${rng.bytes(8).toString('hex')} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n${auth}\r\n`,
      () => `GET /v1/objects/pack/\0 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`,
      () => `GET /v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\nBad Header\r\n\r\n`,
      () => `GET /v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\nGET /v1/nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\nJUNK\r\n\r\n`,
      () => `DELETE /v1/objects/pack/${name} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Basic Zm9vOmJhcg==\r\n\r\n`,
      () => rng.bytes(1 + rng.int(2000)),
      () => Buffer.concat([Buffer.from('GET /v1/health HTTP/1.1\r\n'), rng.bytes(200), Buffer.from('\r\n\r\n')]),
    ];
    const total = 2400;
    const replies: string[] = [];
    let next = 0;
    const worker = async () => {
      while (next < total) {
        const i = next++;
        replies.push(await raw(s.port, payloads[i % payloads.length]!(), { waitMs: 3000 }));
      }
    };
    await Promise.all(Array.from({ length: 48 }, worker));
    expect(replies).toHaveLength(total);
    const statuses = replies.map((r) => /^HTTP\/1\.1 (\d{3})/.exec(r)?.[1] ?? 'none');
    expect(statuses.filter((c) => c.startsWith('5'))).toEqual([]);
    const seen = new Set(statuses);
    for (const code of ['400', '401', '404', '405', '413', '416', '431']) expect(seen, code).toContain(code);

    expect((await call(s.url, 'GET', '/v1/health')).status).toBe(200);
    const ok = await call(s.url, 'PUT', `/v1/objects/pack/${name}`, { token, body: Buffer.from('fine') });
    expect(ok.status).toBe(201);
    expect((await call(s.url, 'GET', `/v1/objects/pack/${name}`, { token })).body.toString()).toBe('fine');
    // No partial upload stayed behind.
    await until(() => !files(dir).some((f) => f.includes('.tmp-')));
    expect(files(dir).filter((f) => !f.startsWith('server/'))).toEqual(
      [`packs/${name.slice(0, 2)}/${name}`, `packs/${seed.slice(0, 2)}/${seed}`, 'keys/0123456789abcdef'].sort(),
    );
  });

  it('slow headers and stalled bodies are cut off by the timeouts', async () => {
    const t0 = Date.now();
    const slow = Array.from({ length: 20 }, () => {
      return new Promise<string>((resolve) => {
        const sock = net.connect(s.port, '127.0.0.1');
        let got = '';
        sock.on('data', (c) => (got += c.toString()));
        sock.on('error', () => {});
        sock.write('GET /v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n');
        const drip = setInterval(() => sock.write(`X-Drip: ${Date.now()}\r\n`), 100);
        sock.on('close', () => {
          clearInterval(drip);
          resolve(got);
        });
      });
    });
    const stalled = raw(s.port, `PUT /v1/objects/pack/${hex('stalled')} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer ${token}\r\nContent-Length: 1000\r\n\r\nabc`, {
      end: false,
      waitMs: 10_000,
    });
    const replies = await Promise.all(slow);
    for (const r of replies) expect(r === '' || /^HTTP\/1\.1 408 /.test(r)).toBe(true);
    await stalled;
    expect(Date.now() - t0).toBeLessThan(6000);
    await until(() => !files(dir).some((f) => f.includes('.tmp-')));
    expect(files(dir).some((f) => f.includes(hex('stalled')) || f.includes('.tmp-'))).toBe(false);
    expect((await call(s.url, 'GET', '/v1/health')).status).toBe(200);
    // --quiet: no request log.
    expect(s.log()).not.toMatch(/GET \/v1\/health/);
  });
});

describe('serve: options and shutdown', () => {
  it('usage errors: TLS halves, plain HTTP off loopback, bad addresses, a file as the directory', () => {
    const dir = path.join(tempDir(), 'srv');
    const env = envFor(dir);
    const cases: string[][] = [
      ['serve', '--tls-cert', 'x.pem'],
      ['serve', '--tls-key', 'x.pem'],
      ['serve', '--listen', '0.0.0.0:0'],
      ['serve', '--listen', 'nonsense'],
      ['serve', '--listen', '127.0.0.1:70000'],
      ['serve', '--headers-timeout', '-1'],
      ['serve', '--tls-cert', 'missing.pem', '--tls-key', 'missing.pem'],
    ];
    for (const args of cases) {
      const r = strata(args, env);
      expect(r.status, args.join(' ')).toBe(2);
      expect(r.stderr.trim().split('\n'), args.join(' ')).toHaveLength(1);
    }
    const file = path.join(tempDir(), 'file');
    fs.writeFileSync(file, 'x');
    expect(strata(['serve', '--listen', '127.0.0.1:0'], envFor(file)).status).toBe(2);
    expect(strata(['serve'], cliEnv('', { STRATA_REPO: undefined })).status).toBe(2);
  });

  it('creates a missing directory; --json prints the address as one JSON line', async () => {
    const dir = path.join(tempDir(), 'new', 'srv');
    const proc = spawn(process.execPath, [BIN, 'serve', '--listen', '127.0.0.1:0', '--json'], { env: envFor(dir), stdio: ['ignore', 'pipe', 'pipe'] });
    const first = await new Promise<string>((resolve) => {
      let out = '';
      proc.stdout.on('data', (c: Buffer) => {
        out += c.toString();
        if (out.includes('\n')) resolve(out.split('\n')[0]!);
      });
    });
    expect(JSON.parse(first)).toEqual({ listening: expect.stringMatching(/^http:\/\/127\.0\.0\.1:\d+$/) });
    expect(fs.statSync(path.join(dir, 'server')).isDirectory()).toBe(true);
    proc.kill('SIGINT');
    expect(await new Promise((r) => proc.on('exit', (code, signal) => r(code ?? signal)))).toBe(0);
  });

  it('SIGTERM: refuses new connections, lets an upload in flight finish, exits 0', async () => {
    const dir = path.join(tempDir(), 'srv');
    const token = addToken(dir, 'w', 'append');
    const s = await serve(dir, ['--drain-timeout', '10']);
    const name = hex('in flight');
    const data = new Rng(3).bytes(200_000);
    const sock = net.connect(s.port, '127.0.0.1');
    let reply = '';
    sock.on('data', (c) => (reply += c.toString()));
    const closed = new Promise((r) => sock.on('close', r));
    await new Promise((r) => sock.on('connect', r));
    sock.write(`PUT /v1/objects/pack/${name} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer ${token}\r\nContent-Length: ${data.length}\r\n\r\n`);
    sock.write(data.subarray(0, 100_000));
    await new Promise((r) => setTimeout(r, 200));
    s.proc.kill('SIGTERM');
    await until(() => s.log().includes('SIGTERM'));
    const refused = await new Promise<string>((resolve) => {
      const c = net.connect(s.port, '127.0.0.1');
      c.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? 'error'));
      c.on('connect', () => {
        c.destroy();
        resolve('connected');
      });
    });
    expect(refused).toBe('ECONNREFUSED');
    sock.write(data.subarray(100_000));
    await closed;
    expect(reply).toMatch(/^HTTP\/1\.1 201 /);
    expect(reply).toMatch(/Connection: close/i);
    expect(await s.exited).toBe(0);
    expect(fs.readFileSync(path.join(dir, 'packs', name.slice(0, 2), name)).equals(data)).toBe(true);
  });

  const hasOpenssl = spawnSync('openssl', ['version']).status === 0;
  it.skipIf(!hasOpenssl)('HTTPS with --tls-cert/--tls-key; the client needs to trust the certificate', async () => {
    const dir = path.join(tempDir(), 'srv');
    const tls = tempDir();
    const cert = path.join(tls, 'cert.pem');
    const key = path.join(tls, 'key.pem');
    const gen = spawnSync('openssl', [
      'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', key, '-out', cert,
      '-days', '1', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1',
    ]);
    expect(gen.status, gen.stderr.toString()).toBe(0);
    const token = addToken(dir, 'w', 'admin');
    const s = await serve(dir, ['--tls-cert', cert, '--tls-key', key]);
    expect(s.url).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
    const store = new HttpStorage(s.url, { token, ca: fs.readFileSync(cert) });
    await store.put({ kind: 'pack', name: hex('tls') }, Buffer.from('over tls'));
    expect((await store.get({ kind: 'pack', name: hex('tls') })).toString()).toBe('over tls');
    await store.close();
    const untrusting = new HttpStorage(s.url, { token, retries: 0 });
    await expect(untrusting.get({ kind: 'pack', name: hex('tls') })).rejects.toThrow(/certificate/);
    await untrusting.close();
    // A key that does not match its certificate is a usage error, not a crash.
    const wrong = spawnSync('openssl', ['genpkey', '-algorithm', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-out', path.join(tls, 'other.pem')]);
    expect(wrong.status).toBe(0);
    const bad = strata(['serve', '--listen', '127.0.0.1:0', '--tls-cert', cert, '--tls-key', path.join(tls, 'other.pem')], envFor(dir));
    expect(bad.status).toBe(2);
  });
});

let contractServer: { url: string; token: string } | undefined;
beforeAll(async () => {
  const dir = path.join(tempDir(), 'srv');
  const token = addToken(dir, 'c', 'admin');
  const s = await serve(dir, ['--quiet']);
  contractServer = { url: s.url, token };
});

describe('HttpStorage specifics', () => {
  it('counts bytes, reports token problems clearly, retries then gives up on a dead server', async () => {
    const { url, token } = contractServer!;
    const st = new HttpStorage(`${url}/`, { token });
    const name = hex('counted');
    await st.put({ kind: 'pack', name }, [Buffer.alloc(1000), Buffer.alloc(24)]);
    expect(st.bytesSent).toBe(1024);
    const before = st.bytesReceived;
    await st.read({ kind: 'pack', name }, 10, 100);
    expect(st.bytesReceived - before).toBe(100);
    await st.close();

    const bad = new HttpStorage(url, { token: 'strata_wrong' });
    const e = await bad.get({ kind: 'pack', name }).catch((x: unknown) => x);
    expect(e).toMatchObject({ code: 'unauthorized', exitCode: 12 });
    expect((e as Error).message).toMatch(/refused the token/);
    await bad.close();

    const dir = path.join(tempDir(), 'srv');
    const readOnly = addToken(dir, 'r', 'read');
    const s = await serve(dir, ['--quiet']);
    const ro = new HttpStorage(s.url, { token: readOnly });
    await expect(ro.put({ kind: 'pack', name }, Buffer.from('x'))).rejects.toMatchObject({ code: 'forbidden' });
    await ro.close();
    s.proc.kill('SIGTERM');
    await s.exited;

    const t0 = Date.now();
    const dead = new HttpStorage(s.url, { token: readOnly, retries: 2, retryDelayMs: 20 });
    const gone = await dead.get({ kind: 'pack', name }).catch((x: unknown) => x);
    expect(gone).toMatchObject({ code: 'io' });
    expect((gone as Error).message).toMatch(/connection refused/);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(20);
    await dead.close();

    expect(() => new HttpStorage('ftp://x', { token })).toThrow(/http/);
    expect(() => new HttpStorage('http://user:pw@x', { token })).toThrow(/token/);
  });

  it('a 409 on a conflicting put is an error, not a silent overwrite', async () => {
    const { url, token } = contractServer!;
    const st = new HttpStorage(url, { token });
    const name = hex('conflict');
    await st.put({ kind: 'pack', name }, Buffer.from('one'));
    await expect(st.put({ kind: 'pack', name }, Buffer.from('two'))).rejects.toMatchObject({ code: 'conflict' });
    expect((await st.get({ kind: 'pack', name })).toString()).toBe('one');
    await st.close();
  });
});

describe('parseRange', () => {
  it('single ranges only; end inclusive and clamped', () => {
    expect(parseRange(undefined, 10)).toEqual({ kind: 'none' });
    expect(parseRange('bytes=0-0', 10)).toEqual({ kind: 'range', start: 0, end: 0 });
    expect(parseRange('bytes=3-', 10)).toEqual({ kind: 'range', start: 3, end: 9 });
    expect(parseRange('bytes=-3', 10)).toEqual({ kind: 'range', start: 7, end: 9 });
    expect(parseRange('bytes=-3', 0).kind).toBe('unsatisfiable');
    expect(parseRange('bytes=0-', 0).kind).toBe('unsatisfiable');
    expect(parseRange('bytes= 1 - 2 ', 10)).toEqual({ kind: 'range', start: 1, end: 2 });
    expect(parseRange('bytes=1e3-', 10000).kind).toBe('unsatisfiable');
  });
});

describe('the catalog protocol as data (catalog/protocol.ts)', () => {
  it('the server serves exactly its methods, with their roles and body limits; a client fills in their paths', () => {
    const served = routeTable().filter((r) => !r.path.startsWith('/v1/objects') && r.path !== '/v1/health');
    const table = Object.values(CATALOG_PROTOCOL).map((m) => ({ method: m.method, path: m.path, role: m.role }));
    const key = (r: { method: string; path: string }) => `${r.method} ${r.path}`;
    expect(served.map(key).sort()).toEqual(table.map(key).sort());
    for (const r of served) expect(r.role, key(r)).toBe(table.find((t) => key(t) === key(r))!.role);
    expect(requestOf('version', { seq: 7, path: 'ab' })).toEqual(['GET', '/v1/snapshots/7/versions/ab']);
    expect(requestOf('pieces', { version: 3 }, 'start=0&end=9')).toEqual(['GET', '/v1/versions/3/pieces?start=0&end=9']);
    expect(requestOf('endLease', { lease: 'a/b' })).toEqual(['DELETE', '/v1/leases/a%2Fb']);
    expect(() => requestOf('toc')).toThrow(/no value for \{version\}/);
  });
});

describe('docs/openapi.yaml', () => {
  /** The paths and methods of the spec: a line-based reading of the `paths:` block. */
  function specRoutes(): { method: string; path: string; secured: boolean }[] {
    const lines = fs.readFileSync(path.join(ROOT, 'docs', 'openapi.yaml'), 'utf8').split('\n');
    const out: { method: string; path: string; secured: boolean }[] = [];
    let inPaths = false;
    let current: string | undefined;
    let last: { method: string; path: string; secured: boolean } | undefined;
    for (const line of lines) {
      if (/^\S/.test(line)) inPaths = line.startsWith('paths:');
      if (!inPaths) continue;
      const p = /^ {2}(\/\S*):\s*$/.exec(line);
      if (p) current = p[1];
      const m = /^ {4}(get|put|post|delete|head|patch|options):\s*$/.exec(line);
      if (m && current) out.push((last = { method: m[1]!.toUpperCase(), path: current, secured: true }));
      if (last && /^ {6}security: \[\]\s*$/.test(line)) last.secured = false;
    }
    return out;
  }

  it('describes exactly the routes the server has, with the same authentication', () => {
    const key = (r: { method: string; path: string }) => `${r.method} ${r.path}`;
    const spec = specRoutes();
    const code = routeTable();
    expect(spec.map(key).sort()).toEqual(code.map(key).sort());
    for (const r of code) expect(spec.find((x) => key(x) === key(r))!.secured, key(r)).toBe(r.role !== null);
    const text = fs.readFileSync(path.join(ROOT, 'docs', 'openapi.yaml'), 'utf8');
    expect(text).toMatch(/^openapi: 3\.1\.\d+$/m);
    expect(text).toMatch(/bearerAuth:\s*\n\s+type: http\s*\n\s+scheme: bearer/);
  });

  it("gives each catalog method the bodies its protocol row's codecs make: content types, 201 for what is made, 204 for no answer", () => {
    const lines = fs.readFileSync(path.join(ROOT, 'docs', 'openapi.yaml'), 'utf8').split('\n');
    /** Per method of the spec: its request body's content types, and its 2xx answers with theirs. */
    const spec = new Map<string, { request: string[]; answers: Map<string, string[]> }>();
    let current: string | undefined;
    let op: { request: string[]; answers: Map<string, string[]> } | undefined;
    let into: string[] | undefined;
    for (const line of lines) {
      if (/^\S/.test(line)) op = undefined;
      const p = /^ {2}(\/\S*):\s*$/.exec(line);
      if (p) current = p[1];
      const m = /^ {4}(get|post|delete):\s*$/.exec(line);
      if (m && current) spec.set(`${m[1]!.toUpperCase()} ${current}`, (op = { request: [], answers: new Map() }));
      if (!op) continue;
      if (/^ {6}requestBody:/.test(line)) into = op.request;
      const status = /^ {8}'(\d{3})':/.exec(line);
      if (status) into = status[1]!.startsWith('2') ? op.answers.set(status[1]!, []).get(status[1]!) : undefined;
      if (/^ {6}responses:/.test(line)) into = undefined;
      const type = /^ {10,12}(application\/[\w-]+):/.exec(line);
      if (type && into) into.push(type[1]!);
    }
    const contentType = { json: ['application/json'], binary: ['application/octet-stream'], none: [] } as const;
    for (const [name, m] of Object.entries(CATALOG_PROTOCOL) as [string, ProtocolMethod][]) {
      const op = spec.get(`${m.method} ${m.path}`);
      expect(op, name).toBeDefined();
      expect(op!.request, `${name}: request`).toEqual(contentType[m.request.type]);
      const answer = m.answer.type === 'none' ? '204' : m.created ? '201' : '200';
      expect(op!.answers.get(answer), `${name}: ${answer}`).toEqual(contentType[m.answer.type]);
    }
  });
});
