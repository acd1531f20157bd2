/** A real `strata serve` in a child process for tests (127.0.0.1, ephemeral port), its tokens and clients. */
import { spawn, type ChildProcessByStdio } from 'node:child_process';
import * as path from 'node:path';
import type { Readable } from 'node:stream';
import { afterAll, expect } from 'vitest';
import { BIN, cliEnv, strata, tempDir } from './helpers.js';

export interface Server {
  url: string;
  dir: string;
  proc: ChildProcessByStdio<null, Readable, Readable>;
  log: () => string;
  exited: Promise<number | null>;
}

const running: Server[] = [];

/** `extra`: more of the server's environment (an S3 endpoint and credentials, its cache directory). */
export async function serve(dir: string, port = 0, extra: Record<string, string | undefined> = {}, args: string[] = []): Promise<Server> {
  const env = cliEnv(dir, { STRATA_PASSWORD: undefined, ...extra });
  const proc = spawn(process.execPath, [BIN, 'serve', '--listen', `127.0.0.1:${port}`, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
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
  const s = { url, dir, proc, log: () => err, exited };
  running.push(s);
  return s;
}

afterAll(async () => {
  for (const s of running) if (s.proc.exitCode === null) s.proc.kill('SIGKILL');
  await Promise.all(running.map((s) => s.exited));
});

export function token(dir: string, name: string, role: string): string {
  const r = strata(['token', 'add', name, '--role', role, '--json'], cliEnv(dir, { STRATA_PASSWORD: undefined }));
  expect(r.status, r.stderr).toBe(0);
  return (JSON.parse(r.stdout) as { token: string }).token;
}

/** A client's environment: the server's URL, a token, its own cache. */
export function client(url: string, tok: string, extra: Record<string, string | undefined> = {}): NodeJS.ProcessEnv {
  return cliEnv(url, { STRATA_TOKEN: tok, STRATA_CACHE_DIR: path.join(tempDir(), 'cache'), ...extra });
}

