/**
 * Trees: one sealed directory listing per directory, stored as a blob like
 * any block (so an unchanged directory is stored once). Names, modes, times,
 * owners and link targets live only here, sealed. A file's content is found
 * through the catalog by (snapshot, keyed id of its absolute path).
 */
import { integrity } from '../errors.js';

export type EntryType = 'file' | 'dir' | 'symlink';

export interface TreeEntry {
  name: string;
  type: EntryType;
  mode: number;
  uid: number;
  gid: number;
  /** Nanoseconds since the epoch, as decimal strings (beyond double precision). */
  mtimeNs: string;
  ctimeNs: string;
  ino: string;
  size: number;
  /** Subtree id (hex) of a directory. */
  tree?: string;
  /** Target of a symlink. */
  target?: string;
}

export interface Tree {
  entries: TreeEntry[];
}

export function encodeTree(tree: Tree): Buffer {
  return Buffer.from(JSON.stringify(tree), 'utf8');
}

/** Parses and validates a tree: hostile names never leave this function. */
export function decodeTree(bytes: Buffer, id: string): Tree {
  let tree: Tree;
  try {
    tree = JSON.parse(bytes.toString('utf8')) as Tree;
  } catch {
    throw integrity(`tree ${id.slice(0, 16)} is not valid`);
  }
  if (!tree || !Array.isArray(tree.entries)) throw integrity(`tree ${id.slice(0, 16)} is not valid`);
  const seen = new Set<string>();
  for (const e of tree.entries) {
    if (!isSafeName(e?.name) || seen.has(e.name)) throw integrity(`tree ${id.slice(0, 16)} has an invalid entry name ${JSON.stringify(e?.name)}`);
    seen.add(e.name);
    if (!['file', 'dir', 'symlink'].includes(e.type)) throw integrity(`tree ${id.slice(0, 16)}: entry ${e.name} has unknown type`);
    if (!Number.isSafeInteger(e.size) || e.size < 0) throw integrity(`tree ${id.slice(0, 16)}: entry ${e.name} has an invalid size`);
  }
  return tree;
}

export function isSafeName(name: unknown): name is string {
  return typeof name === 'string' && name.length > 0 && name !== '.' && name !== '..' && !name.includes('/') && !name.includes('\0');
}

export function findEntry(tree: Tree, name: string): TreeEntry | undefined {
  let lo = 0;
  let hi = tree.entries.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    const e = tree.entries[mid]!;
    if (e.name === name) return e;
    if (e.name < name) lo = mid + 1;
    else hi = mid - 1;
  }
  return tree.entries.find((e) => e.name === name);
}
