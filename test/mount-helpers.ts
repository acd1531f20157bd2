/** What the tests of real mounts share: is a directory a mount point, and waiting for a condition. */
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
