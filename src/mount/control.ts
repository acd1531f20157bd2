/**
 * How `strata commit MOUNTPOINT` reaches the process serving a writable
 * mount: a unix socket of this user's (in $TMPDIR/strata-<uid>/, mode 0700),
 * named after the mountpoint's absolute path. One JSON line asks, one answers.
 * Asked through the socket, never through the mount: the mounting process
 * must not wait on its own file system.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs/promises';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { StrataError } from '../errors.js';

export interface ControlRequest {
  op: 'commit';
  tags?: string[];
}

type ControlAnswer = { ok: true; result: unknown } | { ok: false; error: { code: string; message: string } };

/** The socket of the writable mount at `mountpoint`. */
export function controlPath(mountpoint: string): string {
  const abs = path.resolve(mountpoint);
  const name = createHash('sha256').update(abs).digest('hex').slice(0, 24);
  return path.join(os.tmpdir(), `strata-${process.getuid?.() ?? 0}`, `${name}.sock`);
}

/** Answers requests to the mount at `mountpoint` with `handle` until closed. */
export async function serveControl(mountpoint: string, handle: (req: ControlRequest) => Promise<unknown>): Promise<{ path: string; close(): Promise<void> }> {
  const where = controlPath(mountpoint);
  await fs.mkdir(path.dirname(where), { recursive: true, mode: 0o700 });
  // One left by a mount that was killed: nothing listens there any more (the mountpoint was checked free).
  await fs.rm(where, { force: true });
  const server = net.createServer((sock) => {
    let text = '';
    sock.setEncoding('utf8');
    sock.on('error', () => {});
    sock.on('data', (chunk: string) => {
      text += chunk;
      const nl = text.indexOf('\n');
      if (nl < 0) {
        if (text.length > 64 * 1024) sock.destroy();
        return;
      }
      let req: ControlRequest;
      try {
        req = JSON.parse(text.slice(0, nl)) as ControlRequest;
      } catch {
        sock.end(`${JSON.stringify({ ok: false, error: { code: 'bad_request', message: 'not a JSON line' } })}\n`);
        return;
      }
      handle(req).then(
        (result) => sock.end(`${JSON.stringify({ ok: true, result } satisfies ControlAnswer)}\n`),
        (e: unknown) => {
          const code = e instanceof StrataError ? e.code : 'internal';
          sock.end(`${JSON.stringify({ ok: false, error: { code, message: (e as Error).message } } satisfies ControlAnswer)}\n`);
        },
      );
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(where, () => resolve());
  });
  await fs.chmod(where, 0o600);
  server.unref();
  return {
    path: where,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        void fs.rm(where, { force: true });
      }),
  };
}

/** Asks the writable mount at `mountpoint`; its error comes back as the same StrataError. */
export async function askMount(mountpoint: string, req: ControlRequest): Promise<unknown> {
  const abs = path.resolve(mountpoint);
  const where = controlPath(abs);
  const text = await new Promise<string>((resolve, reject) => {
    const sock = net.createConnection(where);
    let got = '';
    sock.setEncoding('utf8');
    sock.on('connect', () => sock.write(`${JSON.stringify(req)}\n`));
    sock.on('data', (c: string) => (got += c));
    sock.on('end', () => resolve(got));
    sock.on('error', (e: NodeJS.ErrnoException) => {
      if (e.code === 'ENOENT' || e.code === 'ECONNREFUSED') {
        reject(new StrataError('mountpoint', `no writable strata mount is at ${abs} (mount one with "strata mount ${abs} --writable"; changes left by a mount that ended are committed with "strata commit --at SNAPSHOT")`));
      } else reject(new StrataError('io', `cannot reach the mount at ${abs} (${e.code ?? e.message})`));
    });
  });
  let answer: ControlAnswer;
  try {
    answer = JSON.parse(text) as ControlAnswer;
  } catch {
    throw new StrataError('io', `the mount at ${abs} gave no answer (did it stop?)`);
  }
  if (!answer.ok) throw new StrataError(answer.error.code as never, answer.error.message);
  return answer.result;
}
