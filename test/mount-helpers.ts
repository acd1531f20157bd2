/** What the tests of real mounts share: is a directory a mount point, and waiting for a condition. */
import { spawn, spawnSync, type ChildProcessByStdio } from 'node:child_process';
import * as fsp from 'node:fs/promises';
import type { Readable } from 'node:stream';
import { BIN } from './helpers.js';

/** Whether `dir` is a mount point now (this process's view of the mount table). */
export async function mountedAt(dir: string): Promise<boolean> {
  const text = await fsp.readFile('/proc/self/mountinfo', 'utf8');
  return text.split('\n').some((l) => l.split(' ')[4] === dir);
}

/** Waits until `test` holds, for at most `ms`, then fails naming `what`. */
export async function until(what: string, test: () => Promise<boolean>, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await test())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * Waits for a killed mount's mount point to go. libfuse's auto_unmount
 * (fusermount3 watching the dead process) usually takes it at once, but on a
 * busy machine it has taken over 30 s: after 10 s it is detached here, as a
 * user would with `fusermount3 -uz`. What the tests check is what the next
 * mount finds, not how fast fusermount3 cleans up.
 */
export async function killedMountGone(dir: string): Promise<void> {
  try {
    await until('the killed mount to go', async () => !(await mountedAt(dir)), 10_000);
  } catch {
    spawnSync('fusermount3', ['-u', '-z', dir]);
    await until('the killed mount to go, detached', async () => !(await mountedAt(dir)), 10_000);
  }
}

/** A `strata mount --json` running in a process of its own. */
export interface Mounted {
  dir: string;
  proc: ChildProcessByStdio<null, Readable, Readable>;
  /** Its first line of output (the mount's JSON once it is up). */
  ready: string;
  out: () => string;
  err: () => string;
  exited: Promise<number | null>;
}

const started: Mounted[] = [];

/** Starts `strata mount DIR --json ARGS` and waits until it is up (its first line); failing, says why. */
export async function startMount(dir: string, env: NodeJS.ProcessEnv, args: string[]): Promise<Mounted> {
  const proc = spawn(process.execPath, [BIN, 'mount', dir, '--json', ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  let out = '';
  proc.stderr.on('data', (c: Buffer) => (err += c.toString()));
  const exited = new Promise<number | null>((r) => proc.on('exit', (code) => r(code)));
  const ready = await new Promise<string>((resolve, reject) => {
    proc.stdout.on('data', (c: Buffer) => {
      out += c.toString();
      if (out.includes('\n')) resolve(out.split('\n')[0]!);
    });
    void exited.then((code) => reject(new Error(`mount exited with ${code}: ${err}`)));
  });
  const m = { dir, proc, ready, out: () => out, err: () => err, exited };
  started.push(m);
  return m;
}

/** Ends every mount startMount started that is still running, and detaches any mount point left (for afterAll). */
export async function stopMounts(): Promise<void> {
  for (const m of started) if (m.proc.exitCode === null && m.proc.signalCode === null) m.proc.kill('SIGKILL');
  await Promise.all(started.map((m) => Promise.race([m.exited, new Promise((r) => setTimeout(r, 5000))])));
  for (const m of started) if (await mountedAt(m.dir)) spawnSync('fusermount3', ['-uz', m.dir]);
  started.length = 0;
}
