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
 * its own (/proc/self/fd/N/.). Any other entry whose own name is not UTF-8
 * cannot be named to the binding: `readXattrs` says so (`unnamed`), and
 * `writeXattrs` counts it as not set.
 */
import { closeSync, constants, openSync } from 'node:fs';
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
    return asText(p, dir, readAt) ?? { attrs: [], problems: [], unnamed: true };
  } catch (e) {
    return { attrs: [], problems: [`cannot list extended attributes: ${reason(e)}`] };
  }
}

function readAt(p: string): ReadXattrs {
  const problems: string[] = [];
  let names: string[];
  try {
    names = load().listAttributesSync(p);
  } catch (e) {
    const why = reason(e);
    // A file system without attributes has none to keep.
    if (/not supported/i.test(why)) return { attrs: [], problems: [] };
    return { attrs: [], problems: [`cannot list extended attributes: ${why}`] };
  }
  const attrs: XattrList = [];
  let bytes = 0;
  for (const name of names.filter(isKeptXattr).sort()) {
    const value = load().getAttributeSync(p, name);
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
    return asText(p, dir, (t) => load().getAttributeSync(t, name) !== null) ?? false;
  } catch {
    return false;
  }
}

/** Removes the attribute from the entry at `p` (a directory when `dir`) if it has it, never through a symlink; what cannot be removed stays. */
export function dropXattr(p: string, dir: boolean, name: string): void {
  try {
    asText(p, dir, (t) => {
      if (load().getAttributeSync(t, name) !== null) load().removeAttributeSync(t, name);
    });
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
    return failed ?? all('its name is not UTF-8, which extended attributes are set by');
  } catch (e) {
    return all(reason(e));
  }
}
