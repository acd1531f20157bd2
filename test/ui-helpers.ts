/** `strata ui` for tests: the real command in a child process on 127.0.0.1, and plain HTTP requests with any headers. */
import { spawn, type ChildProcessByStdio } from 'node:child_process';
import * as http from 'node:http';
import type { Readable } from 'node:stream';
import { afterAll } from 'vitest';
import { BIN } from './helpers.js';

export interface RunningUi {
  url: string;
  origin: string;
  host: string;
  token: string;
  proc: ChildProcessByStdio<null, Readable, Readable>;
  stderr: () => string;
  stdout: () => string;
}

const running: RunningUi[] = [];

export async function startUi(env: NodeJS.ProcessEnv, args: string[] = []): Promise<RunningUi> {
  const proc = spawn(process.execPath, [BIN, 'ui', '--listen', '127.0.0.1:0', ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  let out = '';
  proc.stderr.on('data', (c: Buffer) => (err += c.toString()));
  const url = await new Promise<string>((resolve, reject) => {
    proc.stdout.on('data', (c: Buffer) => {
      out += c.toString();
      const m = /open (http:\/\/\S+)\n/.exec(out);
      if (m) resolve(m[1]!);
    });
    proc.on('exit', (code) => reject(new Error(`strata ui exited with ${code}: ${err}`)));
  });
  const u = new URL(url);
  const ui = { url, origin: u.origin, host: u.host, token: u.searchParams.get('token')!, proc, stderr: () => err, stdout: () => out };
  running.push(ui);
  return ui;
}

afterAll(async () => {
  await Promise.all(
    running.map(
      (u) =>
        new Promise<void>((resolve) => {
          if (u.proc.exitCode !== null) return resolve();
          u.proc.once('exit', () => resolve());
          u.proc.kill('SIGTERM');
        }),
    ),
  );
});

export interface Answer {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
  json: () => unknown;
}

/** One request, with exactly the headers given (Host defaults to the server's own). */
export function request(ui: RunningUi, path: string, opts: { method?: string; headers?: Record<string, string>; body?: string } = {}): Promise<Answer> {
  const u = new URL(ui.origin);
  return new Promise((resolve, reject) => {
    const req = http.request({ host: u.hostname, port: u.port, path, method: opts.method ?? 'GET', headers: { host: ui.host, ...opts.headers }, agent: false }, (res) => {
      const parts: Buffer[] = [];
      res.on('data', (c: Buffer) => parts.push(c));
      res.on('end', () => {
        const body = Buffer.concat(parts);
        resolve({ status: res.statusCode!, headers: res.headers, body, json: () => JSON.parse(body.toString('utf8')) });
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(opts.body);
  });
}

/** Spends the one-time token: the session cookie, as a Cookie header value. */
export async function login(ui: RunningUi): Promise<string> {
  const r = await request(ui, `/?token=${ui.token}`);
  if (r.status !== 200) throw new Error(`login: ${r.status} ${r.body.toString()}`);
  return String(r.headers['set-cookie']![0]!.split(';')[0]);
}
