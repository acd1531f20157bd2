/**
 * Storing a file version: its TOC rows in the catalog (with the shortcut that
 * keeps reads flat as chains grow) and the same TOC sealed into a pack (so the
 * catalog can be rebuilt from packs alone).
 */
import type { Keyring } from '../crypto/keyring.js';
import { encodeBlock } from '../repo/blockcodec.js';
import type { Catalog, TocRow } from '../repo/catalog.js';
import type { Packer } from '../repo/packer.js';
import type { TocEntry } from './toc.js';

export interface TargetVersion {
  id: number;
  snapshotId: string;
}

/**
 * Catalog rows for a TOC whose refs point into `target`. A ref whose target
 * range lies inside a single ref of the target version gets that ref's root
 * as its own: the chain is kept (target) and a read takes one hop (root).
 */
export function tocRows(catalog: Catalog, entries: readonly TocEntry[], target: TargetVersion | undefined): TocRow[] {
  return entries.map((e) => {
    if (e.kind === 'data') {
      return { start: e.start, end: e.end, block: e.block, target: null, target_start: null, root: null, root_start: null };
    }
    if (!target) throw new Error('a ref entry needs a target version');
    let root = target.id;
    let rootStart = e.targetStart;
    const under = catalog.tocAt(target.id, e.targetStart);
    if (under && under.block === null && under.end >= e.targetEnd) {
      root = under.root ?? under.target!;
      rootStart = (under.root_start ?? under.target_start!) + (e.targetStart - under.start);
    }
    return { start: e.start, end: e.end, block: null, target: target.id, target_start: e.targetStart, root, root_start: rootStart };
  });
}

export interface SealedToc {
  snapshot: string;
  path: string;
  size: number;
  /** [start, end, block] or [start, end, targetSnapshot, targetStart]. */
  entries: ([number, number, string] | [number, number, string, number])[];
}

export async function storeVersion(
  catalog: Catalog,
  keyring: Keyring,
  packer: Packer,
  level: number,
  v: { snapshotSeq: number; snapshotId: string; pathId: Buffer; size: number; entries: TocEntry[]; target?: TargetVersion },
): Promise<number> {
  const rows = tocRows(catalog, v.entries, v.target);
  const sealed: SealedToc = {
    snapshot: v.snapshotId,
    path: v.pathId.toString('hex'),
    size: v.size,
    entries: v.entries.map((e) =>
      e.kind === 'data' ? [e.start, e.end, e.block.toString('hex')] : [e.start, e.end, v.target!.snapshotId, e.targetStart],
    ),
  };
  const plain = Buffer.from(JSON.stringify(sealed), 'utf8');
  const id = keyring.blockId(plain);
  if (!packer.has(id)) await packer.add(id, 'toc', encodeBlock(keyring.encKey, id, plain, level), plain.length);
  return catalog.insertVersion(v.snapshotSeq, v.pathId, v.size, id, rows);
}
