/**
 * Diff: what changed between two snapshots. Files, symlinks, FIFOs and
 * device nodes added, removed, changed, or changed only in their metadata
 * (extended attributes included); and for a changed
 * file, which bytes are new, worked out from the two versions' TOCs alone.
 *
 * Each version resolves to pieces of stored blocks (block id, place in the
 * block, place in the file). A byte of the newer version is unchanged when
 * the older version holds the same byte of the same block, wherever in the
 * file: blocks are content-defined and named by their content, so an insertion
 * changes only the blocks around it, and the bytes after it count as moved,
 * not changed. The ranges are as fine as the blocks: a block that differs in
 * one byte is a changed range of its whole length. No block is read.
 */
import * as path from 'node:path';
import type { Repository } from '../repo/repository.js';
import { storedVersion } from './read.js';
import type { Piece } from '../catalog/resolve.js';
import type { Snapshot } from './snapshot.js';
import { isSpecial, type EntryType, type TreeEntry } from './tree.js';

/** An inclusive byte range. */
export type Range = [start: number, end: number];

export interface DiffEntry {
  path: string;
  type: EntryType;
}

export interface ChangedFile extends DiffEntry {
  size1: number;
  size2: number;
  /** Bytes of the second snapshot's version that the first one's lacks (its coordinates). */
  ranges: Range[];
  /** Bytes of the first snapshot's version that the second one's lacks (its coordinates). */
  replaced: Range[];
  /** A symlink's targets. */
  target1?: string;
  target2?: string;
  /** A device's numbers (st_rdev, decimal). */
  rdev1?: string;
  rdev2?: string;
}

export interface DiffResult {
  snapshot1: string;
  snapshot2: string;
  added: DiffEntry[];
  removed: DiffEntry[];
  changed: ChangedFile[];
  /** Same content, other mode, owner, modification time or extended attributes. */
  metadata: DiffEntry[];
  /** The total length of the changed files' `ranges`. */
  bytesChanged: number;
}

export async function diffSnapshots(repo: Repository, a: Snapshot, b: Snapshot): Promise<DiffResult> {
  const r: DiffResult = { snapshot1: a.id, snapshot2: b.id, added: [], removed: [], changed: [], metadata: [], bytesChanged: 0 };
  await diffDir(repo, a, b, '/', a.root, b.root, r);
  r.bytesChanged = r.changed.reduce((sum, c) => sum + c.ranges.reduce((s, [x, y]) => s + y - x + 1, 0), 0);
  return r;
}

async function diffDir(repo: Repository, a: Snapshot, b: Snapshot, dir: string, ea: TreeEntry, eb: TreeEntry, r: DiffResult): Promise<void> {
  // A tree's id is a hash of its entries: an equal id is an equal subtree.
  if (ea.tree === eb.tree) return;
  const left = ea.tree ? (await a.tree(ea.tree)).entries : [];
  const right = eb.tree ? (await b.tree(eb.tree)).entries : [];
  const byName = new Map(left.map((e) => [e.name, e]));
  const names = [...new Set([...left.map((e) => e.name), ...right.map((e) => e.name)])].sort();
  const inRight = new Map(right.map((e) => [e.name, e]));
  for (const name of names) {
    const p = path.posix.join(dir, name);
    const x = byName.get(name);
    const y = inRight.get(name);
    if (x && y && x.type === y.type) {
      if (x.type === 'dir') await diffDir(repo, a, b, p, x, y, r);
      else await diffLeaf(repo, a, b, p, x, y, r);
      continue;
    }
    if (x) await listAll(a, p, x, r.removed);
    if (y) await listAll(b, p, y, r.added);
  }
}

/** An entry and, for a directory, everything below it. */
async function listAll(snap: Snapshot, p: string, e: TreeEntry, into: DiffEntry[]): Promise<void> {
  into.push({ path: p, type: e.type });
  if (e.type === 'dir') for await (const below of snap.walk(p, e)) into.push({ path: below.path, type: below.entry.type });
}

function sameMetadata(x: TreeEntry, y: TreeEntry): boolean {
  return x.mode === y.mode && x.uid === y.uid && x.gid === y.gid && x.mtimeNs === y.mtimeNs && JSON.stringify(x.xattrs ?? []) === JSON.stringify(y.xattrs ?? []);
}

async function diffLeaf(repo: Repository, a: Snapshot, b: Snapshot, p: string, x: TreeEntry, y: TreeEntry, r: DiffResult): Promise<void> {
  if (x.type === 'symlink') {
    if (x.target !== y.target) r.changed.push({ path: p, type: 'symlink', size1: x.size, size2: y.size, ranges: [], replaced: [], target1: x.target!, target2: y.target! });
    else if (!sameMetadata(x, y)) r.metadata.push({ path: p, type: 'symlink' });
    return;
  }
  if (isSpecial(x.type)) {
    // A FIFO or device holds no data: a device whose number changed is another device.
    if (x.rdev !== y.rdev) r.changed.push({ path: p, type: x.type, size1: 0, size2: 0, ranges: [], replaced: [], rdev1: x.rdev!, rdev2: y.rdev! });
    else if (!sameMetadata(x, y)) r.metadata.push({ path: p, type: x.type });
    return;
  }
  const [va, vb] = await Promise.all([storedVersion(a, p, x), storedVersion(b, p, y)]);
  if (va.id !== vb.id) {
    const [pa, pb] = await Promise.all([piecesOf(repo, va.id, va.size), piecesOf(repo, vb.id, vb.size)]);
    const ranges = missingFrom(pb, pa);
    const replaced = missingFrom(pa, pb);
    if (ranges.length > 0 || replaced.length > 0) {
      r.changed.push({ path: p, type: 'file', size1: va.size, size2: vb.size, ranges, replaced });
      return;
    }
  }
  if (!sameMetadata(x, y)) r.metadata.push({ path: p, type: 'file' });
}

async function piecesOf(repo: Repository, version: number, size: number): Promise<Piece[]> {
  const out: Piece[] = [];
  if (size > 0) for await (const piece of repo.service.pieces(version, 0, size - 1)) out.push(piece);
  return out;
}

/** The ranges of `mine` (in its file's coordinates) whose block bytes `other` does not hold. */
export function missingFrom(mine: readonly Piece[], other: readonly Piece[]): Range[] {
  // Per block, the parts of it `other` holds, sorted and merged.
  const held = new Map<string, Range[]>();
  for (const p of other) {
    const key = p.block.toString('hex');
    let list = held.get(key);
    if (!list) held.set(key, (list = []));
    list.push([p.from, p.from + p.length - 1]);
  }
  for (const [key, list] of held) held.set(key, merge(list));
  const out: Range[] = [];
  const add = (start: number, end: number) => {
    const last = out[out.length - 1];
    if (last && last[1] + 1 === start) last[1] = end;
    else out.push([start, end]);
  };
  for (const p of mine) {
    const list = held.get(p.block.toString('hex')) ?? [];
    // Walk the piece's span of the block, adding the parts no held range covers.
    let at = p.from;
    const end = p.from + p.length - 1;
    for (const [s, e] of list) {
      if (e < at) continue;
      if (s > end) break;
      if (s > at) add(p.at + (at - p.from), p.at + (s - 1 - p.from));
      at = Math.max(at, e + 1);
      if (at > end) break;
    }
    if (at <= end) add(p.at + (at - p.from), p.at + (end - p.from));
  }
  return out;
}

function merge(list: Range[]): Range[] {
  list.sort((x, y) => x[0] - y[0]);
  const out: Range[] = [];
  for (const [s, e] of list) {
    const last = out[out.length - 1];
    if (last && s <= last[1] + 1) last[1] = Math.max(last[1], e);
    else out.push([s, e]);
  }
  return out;
}
