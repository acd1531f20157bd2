/**
 * Checks before mounting, each with a message that says what to do: the FUSE
 * device, the mountpoint (there, a directory, empty), and a mount already
 * there, live or stale (its process ended without unmounting). Only
 * asynchronous fs calls: a stale or hung mount makes a synchronous one hang
 * the whole process.
 */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { StrataError } from '../errors.js';

const DEVICE = '/dev/fuse';

/** The FUSE device: there and openable, else a StrataError (code no_fuse). */
export async function checkDevice(device = DEVICE): Promise<void> {
  try {
    const st = await fs.stat(device);
    if (!st.isCharacterDevice()) throw new StrataError('no_fuse', `${device} is not the FUSE device (a character device)`);
    await fs.access(device, fs.constants.R_OK | fs.constants.W_OK);
  } catch (e) {
    if (e instanceof StrataError) throw e;
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') {
      throw new StrataError(
        'no_fuse',
        `strata mount needs FUSE, and this system has no ${device}: load the kernel module (modprobe fuse), or in a container give it the device (docker run --device /dev/fuse --cap-add SYS_ADMIN)`,
      );
    }
    throw new StrataError('no_fuse', `strata mount cannot use ${device} (${code ?? (e as Error).message}): it must be readable and writable by this user`);
  }
}

/** Mounts on this path, from /proc/self/mountinfo (absent elsewhere: none known). */
async function mountsAt(abs: string): Promise<string[]> {
  let text: string;
  try {
    text = await fs.readFile('/proc/self/mountinfo', 'utf8');
  } catch {
    return [];
  }
  const unescape = (s: string) => s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
  const out: string[] = [];
  for (const line of text.split('\n')) {
    const f = line.split(' ');
    if (f.length < 10 || unescape(f[4]!) !== abs) continue;
    const sep = f.indexOf('-');
    out.push(sep > 0 ? (f[sep + 1] ?? '?') : '?');
  }
  return out;
}

/** The mountpoint as an absolute path, checked: a directory, empty, with nothing mounted on it. */
export async function checkMountpoint(mountpoint: string): Promise<string> {
  const abs = path.resolve(mountpoint);
  const clear = `fusermount3 -u ${abs}`;
  const stale = () =>
    new StrataError('mountpoint', `a stale mount is at ${abs} (the process that served it ended without unmounting): clear it with "${clear}" (as root, "umount -l ${abs}" does too), then mount again`);
  let st;
  try {
    st = await fs.stat(abs);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new StrataError('mountpoint', `mountpoint ${abs} does not exist: create an empty directory there first (mkdir -p ${abs})`);
    if (code === 'ENOTCONN' || code === 'ECONNABORTED') throw stale();
    throw new StrataError('mountpoint', `cannot use mountpoint ${abs} (${code ?? (e as Error).message})`);
  }
  if (!st.isDirectory()) throw new StrataError('mountpoint', `mountpoint ${abs} is not a directory`);
  const there = await mountsAt(abs);
  let names: string[];
  try {
    names = await fs.readdir(abs);
  } catch (e) {
    // A mount whose process is gone may still answer stat from the kernel's cache, never a listing.
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOTCONN' || code === 'ECONNABORTED') throw stale();
    throw new StrataError('mountpoint', `cannot list mountpoint ${abs} (${code ?? (e as Error).message})`);
  }
  if (there.length > 0) {
    throw new StrataError('mountpoint', `${abs} is already a mountpoint (${there[there.length - 1]}): unmount it first ("${there.some((t) => t.startsWith('fuse')) ? clear : `umount ${abs}`}")`);
  }
  if (names.length > 0) throw new StrataError('mountpoint', `mountpoint ${abs} is not empty (${names.length} entr${names.length === 1 ? 'y' : 'ies'}): mount on an empty directory`);
  return abs;
}
