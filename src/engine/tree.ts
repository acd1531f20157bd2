/**
 * Trees: one sealed directory listing per directory, stored as a blob like
 * any block (so an unchanged directory is stored once). Names, modes, times,
 * owners and link targets live only here, sealed. A file's content is found
 * through the catalog by (snapshot, keyed id of its absolute path).
 */
import type { EntryStat } from '../util/stat.js';
import { integrity } from '../errors.js';
import { isKeptXattr, XATTR_ENTRY_BYTES } from '../util/xattrs.js';

/** FIFOs and character and block devices: nodes that hold no data, only their stats (and a device's number). */
export type SpecialType = 'fifo' | 'chardev' | 'blockdev';
export type EntryType = 'file' | 'dir' | 'symlink' | SpecialType;

export const SPECIAL_TYPES: readonly SpecialType[] = ['fifo', 'chardev', 'blockdev'];

export function isSpecial(type: EntryType): type is SpecialType {
  return type === 'fifo' || type === 'chardev' || type === 'blockdev';
}

/** What a person calls each type, in messages. */
export const TYPE_NAMES: Record<EntryType, string> = { file: 'file', dir: 'directory', symlink: 'symlink', fifo: 'FIFO', chardev: 'character device', blockdev: 'block device' };

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
  /**
   * A file with other names (hard links): how many it had, and its device
   * (decimal), so that restore makes one file of the names with this device
   * and inode. Absent for a file of one name.
   */
  links?: number;
  dev?: string;
  /** Subtree id (hex) of a directory. */
  tree?: string;
  /**
   * A directory of files only, some of which carry `block`, `toc`,
   * `parentContent` or `xattrs`: the id its tree would have without those fields (keyed,
   * as a tree id is). The next backup makes that id from the stats alone and,
   * when it matches, reuses the tree without reading it. Absent when it
   * would equal `tree`.
   */
  leaf?: string;
  /** Target of a symlink. */
  target?: string;
  /** A character or block device's number (st_rdev, decimal). */
  rdev?: string;
  /**
   * A file whose stats changed but whose content, read again, is its version
   * in the parent snapshot: it has no version of its own. The mark
   * (contentMark, keyed) lets rebuild-catalog tell that version from a lost
   * TOC, and find it again when the parent has been forgotten.
   */
  parentContent?: string;
  /**
   * A file whose content is one block (format 3): that block's id (hex). The
   * entry is then the file's truth, as a sealed TOC would be, and none is
   * sealed for it (a tree of small files otherwise seals one per file).
   */
  block?: string;
  /**
   * A file of more blocks (format 3): the id (hex) of the sealed TOC of its
   * version when this entry was written. A reader whose sealed TOC has this
   * id knows the version is this file's without the tree of the snapshot
   * that stored it. Only a hint: a forget may reseal the TOC under a new id.
   */
  toc?: string;
  /**
   * Extended attributes (util/xattrs.ts says which): [name, value in
   * base64] pairs in name order, at most XATTR_ENTRY_BYTES in all. Absent
   * when there are none (or the backup was told not to read them).
   */
  xattrs?: Xattrs;
}

export type Xattrs = [name: string, base64: string][];

export interface Tree {
  entries: TreeEntry[];
}

/**
 * The leaf id of a directory's entries (see TreeEntry.leaf): the id of
 * their tree with only what stats say, or undefined when that is the tree
 * itself (no entry carries more) or it holds something other than files.
 */
export function leafId(entries: readonly TreeEntry[], hash: { update(piece: string): void; digest(): Buffer }): string | undefined {
  if (!entries.some((e) => e.block !== undefined || e.toc !== undefined || e.parentContent !== undefined || e.xattrs !== undefined) || entries.some((e) => e.type !== 'file')) return undefined;
  hash.update('{"entries":[');
  entries.forEach((e, i) => {
    // Attributes too: a file whose stats (its ctime among them) are unchanged has its attributes unchanged.
    const { block: _b, toc: _t, parentContent: _p, xattrs: _x, ...stats } = e;
    hash.update((i > 0 ? ',' : '') + JSON.stringify(stats));
  });
  hash.update(']}');
  return hash.digest().toString('hex');
}

/** Deeper than any real tree: a bound against a crafted one that contains itself. */
export const MAX_TREE_DEPTH = 4096;

/**
 * Every file of a parent directory's tree that a new one no longer holds as
 * a file (removed, excluded, unreadable or now of another type), and every
 * file under a directory that went the same way: each is handed to `gone`.
 * `kept` is what the new directory holds, by name. Without its tombstone
 * such a path would be inherited from the parent.
 */
export async function goneFiles(at: string, prevTree: Tree, kept: ReadonlyMap<string, EntryType>, tree: (id: string) => Promise<Tree>, gone: (path: string) => Promise<void>): Promise<void> {
  const under = async (dir: string, t: Tree, depth: number): Promise<void> => {
    if (depth > MAX_TREE_DEPTH) throw integrity(`the parent snapshot's tree under ${dir} is deeper than any real one`);
    for (const e of t.entries) {
      const p = `${dir}/${e.name}`;
      if (e.type === 'file') await gone(p);
      else if (e.type === 'dir' && e.tree) await under(p, await tree(e.tree), depth + 1);
    }
  };
  for (const e of prevTree.entries) {
    if (kept.get(e.name) === e.type) continue;
    const p = at === '/' ? `/${e.name}` : `${at}/${e.name}`;
    if (e.type === 'file') await gone(p);
    else if (e.type === 'dir' && e.tree) await under(p, await tree(e.tree), 1);
  }
}

export function encodeTree(tree: Tree): Buffer {
  return Buffer.from(JSON.stringify(tree), 'utf8');
}

/** Parses and validates a tree: hostile names and fields never leave this function. */
export function decodeTree(bytes: Buffer, id: string): Tree {
  let tree: Tree;
  try {
    tree = JSON.parse(bytes.toString('utf8')) as Tree;
  } catch {
    throw integrity(`tree ${id.slice(0, 16)} is not valid`);
  }
  if (!tree || !Array.isArray(tree.entries)) throw integrity(`tree ${id.slice(0, 16)} is not valid`);
  // Trees are written in name order, where a name above the one before cannot repeat an
  // earlier one: only a tree out of order (hostile) needs a set to find repeats.
  let seen: Set<string> | undefined;
  const entries = tree.entries;
  for (let i = 0; i < entries.length; i++) {
    const e = entries[i]!;
    const name: unknown = e?.name;
    if (isSafeName(name) && !seen && i > 0 && !(entries[i - 1]!.name < name)) seen = new Set(entries.slice(0, i).map((x) => x.name));
    if (!isSafeName(name) || seen?.has(name)) throw integrity(`tree ${id.slice(0, 16)} has an invalid entry name ${JSON.stringify(name)}`);
    seen?.add(name);
    const problem = entryProblem(e);
    if (problem) throw integrity(`tree ${id.slice(0, 16)}: entry ${e.name} ${problem}`);
  }
  if (!seen) ordered.add(tree);
  return tree;
}

/** Nanoseconds and inode numbers: decimal, at most 19 digits like the 64-bit stat values they come from. */
const DECIMAL = /^-?[0-9]{1,19}$/;
const TREE_ID = /^[0-9a-f]{64}$/;
const CONTENT_MARK = /^[0-9a-f]{32}$/;

const isCount = (n: unknown) => Number.isSafeInteger(n) && (n as number) >= 0;
const isDecimal = (s: unknown) => typeof s === 'string' && DECIMAL.test(s);

/** What makes an entry unusable, if anything: restore and ls trust every field below. */
function entryProblem(e: TreeEntry): string | undefined {
  if (e.type !== 'file' && e.type !== 'dir' && e.type !== 'symlink' && !isSpecial(e.type)) return `has an unknown type ${JSON.stringify(e.type)} (written by a newer strata?)`;
  if (!isCount(e.size)) return 'has an invalid size';
  if (!isCount(e.mode) || !isCount(e.uid) || !isCount(e.gid)) return 'has an invalid mode or owner';
  if (!isDecimal(e.mtimeNs) || !isDecimal(e.ctimeNs) || !isDecimal(e.ino)) return 'has an invalid time or inode';
  if (e.type === 'dir' && !(typeof e.tree === 'string' && TREE_ID.test(e.tree))) return 'has an invalid subtree id';
  if (e.leaf !== undefined && !(e.type === 'dir' && typeof e.leaf === 'string' && TREE_ID.test(e.leaf))) return 'has an invalid leaf id';
  if (e.type === 'symlink' && !(typeof e.target === 'string' && e.target.length > 0 && !e.target.includes('\0'))) return 'has an invalid link target';
  if ((e.rdev !== undefined || e.type === 'chardev' || e.type === 'blockdev') && !((e.type === 'chardev' || e.type === 'blockdev') && isDecimal(e.rdev) && !e.rdev!.startsWith('-'))) return 'has an invalid device number';
  if (e.xattrs !== undefined && !validXattrs(e.xattrs, e.type)) return 'has invalid extended attributes';
  if ((e.links !== undefined || e.dev !== undefined) && !(e.type === 'file' && Number.isSafeInteger(e.links) && e.links! >= 2 && isDecimal(e.dev))) return 'has an invalid hard link count or device';
  if (e.parentContent !== undefined && !(typeof e.parentContent === 'string' && CONTENT_MARK.test(e.parentContent) && e.type === 'file')) return 'has an invalid parentContent mark';
  if (e.block !== undefined && !(typeof e.block === 'string' && TREE_ID.test(e.block) && e.type === 'file' && e.size > 0 && e.parentContent === undefined)) return 'has an invalid block id';
  if (e.toc !== undefined && !(typeof e.toc === 'string' && TREE_ID.test(e.toc) && e.type === 'file' && e.block === undefined)) return 'has an invalid TOC id';
  return undefined;
}

const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

/** Pairs of a kept name and canonical base64, names strictly ascending (hence unique), within the bound. */
function validXattrs(x: unknown, type: EntryType): boolean {
  if (!Array.isArray(x) || x.length === 0) return false;
  let bytes = 0;
  let before = '';
  for (const pair of x as unknown[]) {
    if (!Array.isArray(pair) || pair.length !== 2) return false;
    const [name, value] = pair as unknown[];
    if (typeof name !== 'string' || typeof value !== 'string' || !isKeptXattr(name) || !(name > before)) return false;
    if (name === 'system.posix_acl_default' && type !== 'dir') return false;
    if (value.length % 4 !== 0 || !BASE64.test(value)) return false;
    bytes += name.length + (value.length / 4) * 3 - (value.endsWith('==') ? 2 : value.endsWith('=') ? 1 : 0);
    if (bytes > XATTR_ENTRY_BYTES) return false;
    before = name;
  }
  return true;
}

/**
 * Every tree id under (and including) `root`. With `strict`, a tree that
 * cannot be read is an error; otherwise it is listed and its subtrees skipped.
 */
export async function treeIds(repo: { readBlob(id: Buffer, kind: 'tree'): Promise<Buffer> }, root: string, strict: boolean): Promise<Buffer[]> {
  const out: Buffer[] = [];
  const stack = [root];
  const seen = new Set<string>();
  while (stack.length > 0) {
    const id = stack.pop()!;
    if (seen.has(id)) continue;
    seen.add(id);
    out.push(Buffer.from(id, 'hex'));
    try {
      const tree = decodeTree(await repo.readBlob(Buffer.from(id, 'hex'), 'tree'), id);
      for (const e of tree.entries) if (e.type === 'dir' && e.tree) stack.push(e.tree);
    } catch (e) {
      if (strict) throw e;
    }
  }
  return out;
}

export function isSafeName(name: unknown): name is string {
  return typeof name === 'string' && name.length > 0 && name !== '.' && name !== '..' && !name.includes('/') && !name.includes('\0');
}

/** Decoded trees known to be in name order: a name the binary search misses is not there. */
const ordered = new WeakSet<Tree>();

/** True when `tree` was decoded and found in name order (any tree strata wrote). */
export function isOrdered(tree: Tree): boolean {
  return ordered.has(tree);
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
  // Out of order (not written by strata): look at every entry.
  return ordered.has(tree) ? undefined : tree.entries.find((e) => e.name === name);
}


/** The entry of a path as lstat saw it (a file's size; a directory's tree and a link's target come after). */
export function entryOfStat(name: string, type: TreeEntry['type'], st: EntryStat): TreeEntry {
  const entry: TreeEntry = {
    name,
    type,
    mode: Number(st.mode),
    uid: Number(st.uid),
    gid: Number(st.gid),
    mtimeNs: st.mtimeNs.toString(),
    ctimeNs: st.ctimeNs.toString(),
    ino: st.ino.toString(),
    size: type === 'file' ? Number(st.size) : 0,
  };
  // In this order (the backup's LeafTree writes the same JSON from stats alone).
  if (type === 'file' && st.nlink > 1n) {
    entry.links = Number(st.nlink);
    entry.dev = st.dev.toString();
  }
  return entry;
}
