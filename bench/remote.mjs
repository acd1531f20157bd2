// A `strata serve` on loopback for the benchmark's remote run: its tokens,
// starting and stopping it, and the requests it logs (one line per request
// on stderr: TIME METHOD PATH STATUS in=N out=N Xms token=NAME).
import { execFileSync, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import { STRATA } from './args.mjs';

const sleep = (ms) => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);

/** Creates an admin token of the server directory `dir` (created if missing) and returns it. */
export function addToken(dir, name) {
  const out = execFileSync('node', [STRATA, 'token', 'add', name, '--role', 'admin', '--json'], { env: { ...process.env, STRATA_REPO: dir } });
  return JSON.parse(out.toString()).token;
}

const running = new Set();
process.on('exit', () => {
  for (const child of running) child.kill('SIGKILL');
});

/**
 * Starts `strata serve --repo dir` on a free loopback port, its log going to
 * `logFile`, and waits for its "listening on URL" line. The benchmark runs
 * its commands synchronously, so everything here is synchronous too.
 */
export function startServer(dir, logFile) {
  const outFile = `${logFile}.out`;
  const out = fs.openSync(outFile, 'w');
  const err = fs.openSync(logFile, 'w');
  const child = spawn('node', [STRATA, 'serve', '--repo', dir, '--listen', '127.0.0.1:0'], { stdio: ['ignore', out, err] });
  fs.closeSync(out);
  fs.closeSync(err);
  running.add(child);
  let url;
  for (let waited = 0; !url; waited += 20) {
    url = /^listening on (\S+)$/m.exec(fs.readFileSync(outFile, 'utf8'))?.[1];
    if (!url && (waited > 30_000 || !alive(child.pid))) {
      child.kill('SIGKILL');
      running.delete(child);
      throw new Error(`strata serve did not start:\n${fs.readFileSync(logFile, 'utf8').slice(-2000)}`);
    }
    if (!url) sleep(20);
  }
  return {
    url,
    /** A position in the log: requests() returns the lines logged after it. */
    mark: () => fs.statSync(logFile).size,
    /** The requests logged since `mark` (by `token` if given), once the log has settled. */
    requests(mark, token) {
      // The server logs a request when its response is done, which may be a moment after the client has it.
      let size = -1;
      while (size !== fs.statSync(logFile).size) {
        size = fs.statSync(logFile).size;
        sleep(100);
      }
      const text = fs.readFileSync(logFile).subarray(mark).toString('utf8');
      return text
        .split('\n')
        .map(parseLine)
        .filter((r) => r && (token === undefined || r.token === token));
    },
    /** SIGTERM, and waits until the process is gone (it holds the repository's catalog open). */
    stop() {
      child.kill('SIGTERM');
      for (let waited = 0; alive(child.pid); waited += 20) {
        if (waited === 10_000) child.kill('SIGKILL');
        sleep(20);
      }
      running.delete(child);
    },
  };
}

/** Running, as opposed to exited (a zombie until this process reaps it) or gone. */
function alive(pid) {
  try {
    return !/^\d+ \(.*\) Z/.test(fs.readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

const LINE = /^\S+ (\S+) (\S+) (\S+) in=(\d+) out=(\d+) (\d+)ms(?: token=(\S+))?$/;

function parseLine(line) {
  const m = LINE.exec(line);
  if (!m) return undefined;
  return { method: m[1], path: m[2], status: m[3], in: Number(m[4]), out: Number(m[5]), ms: Number(m[6]), token: m[7], kind: kind(m[1], m[2]) };
}

/** "GET /v1/blocks/ab12…" → "GET /v1/blocks/*": ids, numbers and paths become "*", route words stay. */
function kind(method, p) {
  const parts = p.split('/').map((s, i) => (i <= 1 || /^[a-z]{1,12}$/.test(s) ? s : '*'));
  return `${method} ${parts.join('/')}`;
}

/** A request for block bodies: one block, or several at once. */
export const isBlockGet = (r) => r.kind === 'GET /v1/blocks/*' || r.kind === 'POST /v1/blocks/read';
export const isPackPut = (r) => r.kind === 'PUT /v1/objects/pack/*';

/** Round trips of a read: each request but the block GETs waits for the one before; the block GETs go out together. */
export const roundTrips = (reqs) => reqs.filter((r) => !isBlockGet(r)).length + (reqs.some(isBlockGet) ? 1 : 0);

/** "GET /v1/objects/config/config, GET /v1/blocks/* ×2": the kinds in the order logged, repeats counted. */
export function kinds(reqs) {
  const counts = new Map();
  for (const r of reqs) counts.set(r.kind, (counts.get(r.kind) ?? 0) + 1);
  return [...counts].map(([k, n]) => (n > 1 ? `${k} ×${n}` : k)).join(', ');
}
