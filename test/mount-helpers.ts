/** What the tests of real mounts share: is a directory a mount point, and waiting for a condition. */
import { spawnSync } from 'node:child_process';
import * as fsp from 'node:fs/promises';

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
