/**
 * FIFOs and device nodes made on disk. Node has no mkfifo or mknod, so they
 * are made by coreutils' `mkfifo` and `mknod`, run without a shell. Why not
 * an addon: a FIFO or a device is rare in a restore (a spawn of a few
 * milliseconds each is nothing beside it), the tools are on every Linux
 * system strata runs on, and an addon of our own would need a compiler and
 * Node's headers at install (node-gyp fetches them from the network) for a
 * call made this seldom.
 *
 * The tools take paths as text: the node is made under a temporary name of
 * ASCII in its directory (a directory whose path is not UTF-8 is named to
 * the child through this process's descriptor of it, /proc/PID/fd/N), then
 * linked into place by its bytes and the temporary name removed. So a name
 * that is not UTF-8 is made as any other, and nothing in the way is ever
 * replaced (link fails with EEXIST): that is the caller's to handle.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, constants, openSync } from 'node:fs';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { osPath } from './names.js';

export type NodeKind = 'fifo' | 'chardev' | 'blockdev';

/** A device number's major and minor parts (Linux's dev_t, as glibc's major() and minor() split it). */
export function deviceParts(rdev: bigint): { major: bigint; minor: bigint } {
  return {
    major: ((rdev >> 8n) & 0xfffn) | ((rdev >> 32n) & ~0xfffn),
    minor: (rdev & 0xffn) | ((rdev >> 12n) & ~0xffn),
  };
}

function run(cmd: string, args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { timeout: 30_000 }, (err, _stdout, stderr) => {
      if (!err) return resolve();
      const said = String(stderr).trim().split('\n').pop()?.replace(/^[^:]*: /, '');
      const code = (err as NodeJS.ErrnoException).code;
      reject(Object.assign(new Error(code === 'ENOENT' ? `${cmd} was not found (coreutils)` : said || err.message), { code: /Operation not permitted/.test(said ?? '') ? 'EPERM' : /File exists/.test(said ?? '') ? 'EEXIST' : undefined }));
    });
  });
}

/**
 * Makes a FIFO or a device node at `dest` with permission bits `mode`
 * (the umask applies; the caller sets the mode after). Throws with code
 * EEXIST when something is already there.
 */
export async function makeNode(dest: string, kind: NodeKind, mode: number, rdev?: bigint): Promise<void> {
  const dir = osPath(path.dirname(dest));
  const tmp = `.strata-node-${randomBytes(6).toString('hex')}`;
  const tmpPath = Buffer.concat([Buffer.from(dir), Buffer.from(`/${tmp}`)]);
  // A directory whose path is not text is named to the child through our descriptor of it.
  const fd = typeof dir === 'string' ? undefined : openSync(dir, constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    const via = fd === undefined ? `${dir as string}/${tmp}` : `/proc/${process.pid}/fd/${fd}/${tmp}`;
    const m = (mode & 0o7777).toString(8);
    if (kind === 'fifo') await run('mkfifo', ['-m', m, '--', via]);
    else {
      const { major, minor } = deviceParts(rdev ?? 0n);
      await run('mknod', ['-m', m, '--', via, kind === 'chardev' ? 'c' : 'b', String(major), String(minor)]);
    }
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
  try {
    await fs.link(tmpPath, osPath(dest));
  } finally {
    await fs.unlink(tmpPath);
  }
}
