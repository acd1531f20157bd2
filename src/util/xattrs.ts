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
 * never what a link points at. It takes paths as text, so a path that is not
 * UTF-8 (util/names.ts) has its attributes neither read nor written: that is
 * said, and counted, as any attribute that could not be.
 */
import { createRequire } from 'node:module';
import { osPath } from './names.js';

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

export interface ReadXattrs {
  /** What was read (empty when none). */
  attrs: XattrList;
  /** Attributes, or the whole list, that could not be read or were over the bound: why, for a warning. */
  problems: string[];
}

/** The kept attributes of the entry at `p` (never through a symlink). */
export function readXattrs(p: string): ReadXattrs {
  const problems: string[] = [];
  if (typeof osPath(p) !== 'string') return { attrs: [], problems: ['its path is not UTF-8, which extended attributes are read by'] };
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

/** Whether the entry at `p` has the attribute (false when that cannot be told). */
export function hasXattr(p: string, name: string): boolean {
  if (typeof osPath(p) !== 'string') return false;
  try {
    return load().getAttributeSync(p, name) !== null;
  } catch {
    return false;
  }
}

/** Removes the attribute from the entry at `p` if it has it (never through a symlink); what cannot be removed stays. */
export function dropXattr(p: string, name: string): void {
  if (!hasXattr(p, name)) return;
  try {
    load().removeAttributeSync(p, name);
  } catch {
    // Nothing to do about it: the entry keeps it.
  }
}

/** Sets each attribute on the entry at `p` (never through a symlink); returns why each that could not be set failed. */
export function writeXattrs(p: string, attrs: XattrList): { name: string; reason: string }[] {
  if (attrs.length === 0) return [];
  if (typeof osPath(p) !== 'string') return attrs.map(([name]) => ({ name, reason: 'its path is not UTF-8, which extended attributes are written by' }));
  let b: Binding;
  try {
    b = load();
  } catch (e) {
    return attrs.map(([name]) => ({ name, reason: (e as Error).message }));
  }
  const failed: { name: string; reason: string }[] = [];
  for (const [name, value] of attrs) {
    try {
      b.setAttributeSync(p, name, value);
    } catch (e) {
      failed.push({ name, reason: reason(e) });
    }
  }
  return failed;
}
