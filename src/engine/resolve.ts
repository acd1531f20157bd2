/**
 * Reading a range of a version: find the TOC entries that cover it, follow
 * ref entries down their chains to data entries, and yield the pieces of
 * blocks that make up the range, in order. Only the blocks that cover the
 * range are ever named. Chains are followed in a loop with a depth bound, so
 * a damaged or hostile catalog (cycles, gaps, refs past their target) ends
 * in an integrity error rather than a hang.
 */
import { integrity } from '../errors.js';
import type { Catalog, TocRow } from '../repo/catalog.js';
import type { BlockSpan } from './toc.js';

export interface Piece {
  block: Buffer;
  /** Size of the whole block (its data entry's length). */
  blockSize: number;
  /** Where the piece starts inside the block. */
  from: number;
  length: number;
  /** Where the piece sits in the version being read. */
  at: number;
}

export const MAX_CHAIN_DEPTH = 10_000;
const BATCH = 512;

interface Frame {
  version: number;
  start: number;
  end: number;
  /** Position in the requested version that `start` maps to. */
  at: number;
  depth: number;
}

/** Counts of the work a resolve did (how many TOC ranges it visited). */
export interface ResolveStats {
  frames: number;
}

/** The pieces of [start, end] (inclusive) of `version`, in order. */
export function* resolveRange(catalog: Catalog, version: number, start: number, end: number, stats?: ResolveStats): Generator<Piece> {
  if (end < start) return;
  const stack: Frame[] = [{ version, start, end, at: start, depth: 0 }];
  while (stack.length > 0) {
    const f = stack.pop()!;
    if (stats) stats.frames++;
    if (f.depth > MAX_CHAIN_DEPTH) throw integrity(`reference chain deeper than ${MAX_CHAIN_DEPTH} (a cycle?) at version ${version}`);
    let cursor = f.start;
    let row: TocRow | undefined = catalog.tocAt(f.version, cursor);
    let batch: TocRow[] = [];
    while (cursor <= f.end) {
      if (!row || row.start > cursor || row.end < cursor) {
        throw integrity(`TOC of version ${f.version} does not cover offset ${cursor}`, { version: f.version, offset: cursor });
      }
      const pieceEnd = Math.min(row.end, f.end);
      const at = f.at + (cursor - f.start);
      if (row.block) {
        yield { block: row.block, blockSize: row.end - row.start + 1, from: cursor - row.start, length: pieceEnd - cursor + 1, at };
      } else {
        const target = row.root ?? row.target;
        const targetStart = row.root_start ?? row.target_start;
        if (target === null || targetStart === null) throw integrity(`TOC entry of version ${f.version} at ${row.start} is neither data nor ref`);
        // Continue this frame after the child; the child goes on top.
        if (pieceEnd < f.end) stack.push({ ...f, start: pieceEnd + 1, at: at + (pieceEnd - cursor + 1) });
        stack.push({ version: target, start: targetStart + (cursor - row.start), end: targetStart + (pieceEnd - row.start), at, depth: f.depth + 1 });
        break;
      }
      cursor = pieceEnd + 1;
      if (cursor > f.end) break;
      if (batch.length === 0) batch = catalog.tocAfter(f.version, row.start, f.end, BATCH).reverse();
      row = batch.pop();
    }
  }
}

/** A version as the sequence of its blocks (for aligning the next version). */
export function blocksOf(catalog: Catalog, version: number, size: number): BlockSpan[] {
  const spans: BlockSpan[] = [];
  for (const p of resolveRange(catalog, version, 0, size - 1)) {
    const whole = p.from === 0 && p.length === p.blockSize;
    spans.push({ id: whole ? p.block : null, start: p.at, end: p.at + p.length - 1 });
  }
  return spans;
}
