/**
 * Extended attributes of an entry, as a backup keeps them: user.*, trusted.*
 * and security.* (file capabilities, SELinux labels), and POSIX ACLs
 * (system.posix_acl_access, and system.posix_acl_default on directories).
 * Other system.* names are views the kernel makes of something else, and are
 * left out.
 *
 * Read and written through @napi-rs/xattr (a binary for the platform, from
 * the npm registry), whose calls never follow a symlink (llistxattr,
 * lgetxattr, lsetxattr): what is read or written is the entry at the path,
 * never what a link points at. It takes paths as text. A path that is not
 * UTF-8 (util/names.ts) is reached through a descriptor: its directory's
 * (/proc/self/fd/N/NAME), or for a directory whose own name is not UTF-8,
 * its own (/proc/self/fd/N/.).
 *
 * Any other entry whose own name is not UTF-8 cannot be named to the
 * binding, whose l* calls on /proc/self/fd/N would act on that magic link,
 * not on the file. Such an entry is opened with O_PATH | O_NOFOLLOW (a
 * descriptor of the entry itself, never of what a link points at); when it
 * is no symlink, attr's getfattr and setfattr are given that descriptor as
 * their fd 3 and name it /proc/self/fd/3 with their following calls
 * (getxattr, setxattr): the kernel resolves that magic link to the inode the
 * descriptor holds, so they reach the entry and follow no link. A symlink of
 * such a name, or a system without getfattr, stays unread (`unnamed`) and
 * unset. Names of this kind are rare: a process per entry costs nothing
 * that matters.
 */
import { spawnSync } from 'node:child_process';
import { closeSync, constants, fstatSync, openSync } from 'node:fs';
import { createRequire } from 'node:module';
import * as path from 'node:path';
import { hasEscapedBytes, osPath } from './names.js';

/** All of an entry's attributes, names and values, at most this many bytes (more are left out, with a warning). */
export const XATTR_ENTRY_BYTES = 64 * 1024;

/** [name, value] pairs in name order. */
export type XattrList = [name: string, value: Buffer][];

const KEPT = /^(user|trusted|security)\.[^\0]{1,250}$/;

/** Whether a backup keeps an attribute of this name. */
export function isKeptXattr(name: string): boolean {
  return KEPT.test(name) || name === 'system.posix_acl_access' || name === 'system.posix_acl_default';
}

interface Binding {
  listAttributesSync(path: string): string[];
  getAttributeSync(path: string, name: string): Buffer | null;
  setAttributeSync(path: string, name: string, value: Uint8Array): void;
  removeAttributeSync(path: string, name: string): void;
}

let binding: Binding | Error | undefined;

/** The binding, loaded when first needed: a platform without its binary still backs up and restores everything else. */
function load(): Binding {
  if (binding === undefined) {
    try {
      binding = createRequire(import.meta.url)('@napi-rs/xattr') as Binding;
    } catch (e) {
      binding = new Error(`extended attributes are not supported here (${(e as Error).message.split('\n')[0]})`);
    }
  }
  if (binding instanceof Error) throw binding;
  return binding;
}

/** An error of the binding, in a person's words: "Operation not permitted (os error 1)" loses its number. */
function reason(e: unknown): string {
  return (e as Error).message.replace(/ \(os error \d+\)$/, '').replace(/^./, (c) => c.toLowerCase());
}

/** O_PATH (Linux): a descriptor that only names a place, which needs no read permission. Node does not export it. */
const O_PATH = 0o10000000;

/**
 * `fn` given a path of text for the entry at `p` (a directory when `dir`),
 * through a descriptor held while it runs when `p` is not UTF-8; undefined
 * when the entry's own name is not UTF-8 and it is not a directory.
 */
function asText<T>(p: string, dir: boolean, fn: (text: string) => T): T | undefined {
  if (!hasEscapedBytes(p)) return fn(p);
  const name = path.posix.basename(p);
  if (hasEscapedBytes(name) && !dir) return undefined;
  const [opened, rest] = hasEscapedBytes(name) ? [p, '.'] : [path.posix.dirname(p), name];
  const fd = openSync(osPath(opened), O_PATH | constants.O_DIRECTORY | (rest === '.' ? constants.O_NOFOLLOW : 0));
  try {
    return fn(`/proc/self/fd/${fd}/${rest}`);
  } finally {
    closeSync(fd);
  }
}

export interface ReadXattrs {
  /** What was read (empty when none). */
  attrs: XattrList;
  /** Attributes, or the whole list, that could not be read or were over the bound: why, for a warning. */
  problems: string[];
  /** The entry's own name is not UTF-8 (and it is no directory): the binding cannot be told where it is. Nothing was read. */
  unnamed?: true;
}

/** The kept attributes of the entry at `p` (a directory when `dir`), never through a symlink. */
export function readXattrs(p: string, dir: boolean): ReadXattrs {
  try {
    return asText(p, dir, readAt) ?? throughDescriptor(p, readByTool) ?? { attrs: [], problems: [], unnamed: true };
  } catch (e) {
    return { attrs: [], problems: [`cannot list extended attributes: ${reason(e)}`] };
  }
}

function readAt(p: string): ReadXattrs {
  let names: string[];
  try {
    names = load().listAttributesSync(p);
  } catch (e) {
    const why = reason(e);
    // A file system without attributes has none to keep.
    if (/not supported/i.test(why)) return { attrs: [], problems: [] };
    return { attrs: [], problems: [`cannot list extended attributes: ${why}`] };
  }
  return kept(names, (name) => load().getAttributeSync(p, name));
}

/** The kept ones of `names` in name order, each read by `get` (null: it could not be), within the bound of one entry. */
function kept(names: readonly string[], get: (name: string) => Buffer | null): ReadXattrs {
  const problems: string[] = [];
  const attrs: XattrList = [];
  let bytes = 0;
  for (const name of names.filter(isKeptXattr).sort()) {
    const value = get(name);
    // The binding says null for a read that failed as for one that vanished since the list.
    if (value === null) {
      problems.push(`cannot read extended attribute ${name}`);
      continue;
    }
    bytes += name.length + value.length;
    if (bytes > XATTR_ENTRY_BYTES) {
      problems.push(`extended attribute ${name} left out: the attributes of one entry are kept up to ${XATTR_ENTRY_BYTES / 1024} KiB`);
      bytes -= name.length + value.length;
      continue;
    }
    attrs.push([name, value]);
  }
  return { attrs, problems };
}

export const ACCESS_ACL = 'system.posix_acl_access';
export const DEFAULT_ACL = 'system.posix_acl_default';

/** Whether the entry at `p` (a directory when `dir`) has the attribute (false when that cannot be told). */
export function hasXattr(p: string, dir: boolean, name: string): boolean {
  try {
    return asText(p, dir, (t) => load().getAttributeSync(t, name) !== null) ?? throughDescriptor(p, (fd) => readByTool(fd)?.attrs.some(([n]) => n === name)) ?? false;
  } catch {
    return false;
  }
}

/** Removes the attribute from the entry at `p` (a directory when `dir`) if it has it, never through a symlink; what cannot be removed stays. */
export function dropXattr(p: string, dir: boolean, name: string): void {
  try {
    const done = asText(p, dir, (t) => {
      if (load().getAttributeSync(t, name) !== null) load().removeAttributeSync(t, name);
      return true;
    });
    if (!done) throughDescriptor(p, (fd) => readByTool(fd)?.attrs.some(([n]) => n === name) && attrTool('setfattr', ['-x', name], fd));
  } catch {
    // Nothing to do about it: the entry keeps it.
  }
}

/** Sets each attribute on the entry at `p` (a directory when `dir`), never through a symlink; returns why each that could not be set failed. */
export function writeXattrs(p: string, dir: boolean, attrs: XattrList): { name: string; reason: string }[] {
  if (attrs.length === 0) return [];
  const all = (why: string) => attrs.map(([name]) => ({ name, reason: why }));
  let b: Binding;
  try {
    b = load();
  } catch (e) {
    return all((e as Error).message);
  }
  try {
    const failed = asText(p, dir, (t) => {
      const out: { name: string; reason: string }[] = [];
      for (const [name, value] of attrs) {
        try {
          b.setAttributeSync(t, name, value);
        } catch (e) {
          out.push({ name, reason: reason(e) });
        }
      }
      return out;
    });
    return failed ?? throughDescriptor(p, (fd) => writeByTool(fd, attrs)) ?? all("its name is not UTF-8: a symlink of such a name has none set, and anything else needs attr's setfattr");
  } catch (e) {
    return all(reason(e));
  }
}

/**
 * `fn` given an O_PATH | O_NOFOLLOW descriptor of the entry at `p` itself;
 * undefined when the entry is a symlink (it is left alone), or `fn` says
 * undefined (no tool).
 */
function throughDescriptor<T>(p: string, fn: (fd: number) => T | undefined): T | undefined {
  const fd = openSync(osPath(p), O_PATH | constants.O_NOFOLLOW);
  try {
    if (fstatSync(fd).isSymbolicLink()) return undefined;
    return fn(fd);
  } finally {
    closeSync(fd);
  }
}

/** What getfattr or setfattr said when run on the entry the descriptor holds; undefined when the tool is not installed. */
function attrTool(tool: 'getfattr' | 'setfattr', args: readonly string[], fd: number): { ok: boolean; out: string; why: string } | undefined {
  // The descriptor is the child's fd 3: /proc/self/fd/3 there is this entry, reached without a name.
  const r = spawnSync(tool, [...args, '/proc/self/fd/3'], { stdio: ['ignore', 'pipe', 'pipe', fd], encoding: 'latin1', maxBuffer: 16 * XATTR_ENTRY_BYTES });
  if (r.error) {
    if ((r.error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    return { ok: false, out: '', why: r.error.message };
  }
  const why = r.stderr.split('\n').find((l) => l.trim() !== '') ?? `${tool} exited with ${r.status}`;
  return { ok: r.status === 0, out: r.stdout, why: why.replace(/^\w+: \/proc\/self\/fd\/3: /, '').replace(/^./, (c) => c.toLowerCase()) };
}

/** getfattr's escapes in a name (\ooo, octal) undone. */
function unescapeName(name: string): string {
  return name.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}

/** The kept attributes of the entry the descriptor holds, read by getfattr (undefined: getfattr is not installed). */
function readByTool(fd: number): ReadXattrs | undefined {
  const r = attrTool('getfattr', ['--absolute-names', '--dump', '--match=-', '--encoding=hex'], fd);
  if (!r) return undefined;
  if (!r.ok) {
    if (/not supported/i.test(r.why)) return { attrs: [], problems: [] };
    return { attrs: [], problems: [`cannot list extended attributes: ${r.why}`] };
  }
  // "NAME=0xHEX" lines ("=" in a name is escaped), after "# file: ...".
  const values = new Map<string, Buffer>();
  for (const line of r.out.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const eq = line.indexOf('=');
    const name = Buffer.from(unescapeName(eq < 0 ? line : line.slice(0, eq)), 'latin1').toString('utf8');
    const hex = eq < 0 ? '0x' : line.slice(eq + 1);
    if (!/^0x([0-9a-f]{2})*$/i.test(hex)) continue;
    values.set(name, Buffer.from(hex.slice(2), 'hex'));
  }
  return kept([...values.keys()], (name) => values.get(name) ?? null);
}

/** Sets each attribute on the entry the descriptor holds with setfattr; why each that could not be set failed (undefined: setfattr is not installed). */
function writeByTool(fd: number, attrs: XattrList): { name: string; reason: string }[] | undefined {
  const out: { name: string; reason: string }[] = [];
  for (const [name, value] of attrs) {
    const r = attrTool('setfattr', ['-n', name, ...(value.length > 0 ? ['-v', `0x${value.toString('hex')}`] : [])], fd);
    if (!r) return undefined;
    if (!r.ok) out.push({ name, reason: r.why });
  }
  return out;
}
