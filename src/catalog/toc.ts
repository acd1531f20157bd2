/**
 * Tables of contents: how a version of a file is described in terms of blocks
 * and of earlier versions (the seed's FIGS. 6 and 7).
 *
 * A baseline's TOC lists data entries only. An incremental is aligned with the
 * previous version of the same path: blocks that are new or modified become
 * data entries; every maximal run of unchanged blocks becomes one ref entry
 * mapping its range [start, end] in this version to [targetStart, targetEnd]
 * in the previous one. The ref's offset is how far the range moved:
 * start - targetStart. The previous version may itself hold refs, so refs
 * chain across incrementals. Ranges are inclusive, as in the seed.
 */
import { BlockList } from './blocklist.js';

/** A block of a version, at its place in that version. */
export interface BlockSpan {
  /** The block id, or null for a span that cannot be matched (part of a block). */
  id: Buffer | null;
  start: number;
  end: number;
}

export interface DataEntry {
  kind: 'data';
  start: number;
  end: number;
  block: Buffer;
}

export interface RefEntry {
  kind: 'ref';
  start: number;
  end: number;
  targetStart: number;
  targetEnd: number;
}

export type TocEntry = DataEntry | RefEntry;

export const offsetOf = (e: RefEntry): number => e.start - e.targetStart;

/** A version's entries once built: iterated once, and counted. */
export interface TocEntries extends Iterable<TocEntry> {
  readonly length: number;
  readonly dataEntries: number;
  readonly refEntries: number;
}

/**
 * The TOC of a file unchanged since its target version: one ref over all of
 * it (none when empty). A TocList's typed arrays cost microseconds to make,
 * which a tree of 100k unchanged files pays twice per file.
 */
export function wholeRef(size: number): TocEntries {
  const entries: TocEntry[] = size > 0 ? [{ kind: 'ref', start: 0, end: size - 1, targetStart: 0, targetEnd: size - 1 }] : [];
  return { length: entries.length, dataEntries: 0, refEntries: entries.length, [Symbol.iterator]: () => entries[Symbol.iterator]() };
}

/**
 * A TOC under construction, held compactly (a version of a 4 GiB file can
 * have 130,000 entries): a kind, a range and one number per entry, in typed
 * arrays. A data entry's number is its block's index in `blocks`; a ref's is
 * its target start. Iterating yields ordinary TocEntry objects one by one.
 */
export class TocList implements TocEntries {
  // Room for 4 entries to start with: arrays of up to 64 bytes live in V8's heap, cheap to make.
  private kinds = new Uint8Array(4);
  private ranges = new Float64Array(8);
  private extra = new Float64Array(4);
  private count = 0;
  dataEntries = 0;
  refEntries = 0;

  /** Blocks of entries added as objects (their ids need a home). */
  private own?: BlockList;

  constructor(private readonly blocks?: BlockList) {}

  static of(entries: Iterable<TocEntry>): TocList {
    const list = new TocList();
    for (const e of entries) list.add(e);
    return list;
  }

  get length(): number {
    return this.count;
  }

  /** Appends an entry; a data entry's block is copied (see pushData for the compact form). */
  add(e: TocEntry): void {
    if (e.kind === 'ref') {
      this.pushRef(e.start, e.end, e.targetStart);
      return;
    }
    this.own ??= new BlockList();
    const i = this.own.push(e.block, 0);
    this.push(0, e.start, e.end, -1 - i);
  }

  /** A data entry for block `index` of the list this TOC was made with. */
  pushData(start: number, end: number, index: number): void {
    this.push(0, start, end, index);
  }

  pushRef(start: number, end: number, targetStart: number): void {
    this.push(1, start, end, targetStart);
  }

  get(i: number): TocEntry {
    const start = this.ranges[2 * i]!;
    const end = this.ranges[2 * i + 1]!;
    const x = this.extra[i]!;
    if (this.kinds[i] === 1) return { kind: 'ref', start, end, targetStart: x, targetEnd: x + (end - start) };
    const block = x >= 0 ? this.blocks!.id(x) : this.own!.id(-1 - x);
    return { kind: 'data', start, end, block: Buffer.from(block!) };
  }

  *[Symbol.iterator](): Iterator<TocEntry> {
    for (let i = 0; i < this.count; i++) yield this.get(i);
  }

  private push(kind: number, start: number, end: number, x: number): void {
    if (this.count === this.kinds.length) {
      const grow = <T extends Uint8Array | Float64Array>(a: T, n: number): T => {
        const b = new (a.constructor as new (n: number) => T)(n);
        b.set(a);
        return b;
      };
      this.kinds = grow(this.kinds, this.count * 2);
      this.ranges = grow(this.ranges, this.count * 4);
      this.extra = grow(this.extra, this.count * 2);
    }
    const i = this.count++;
    this.kinds[i] = kind;
    this.ranges[2 * i] = start;
    this.ranges[2 * i + 1] = end;
    this.extra[i] = x;
    if (kind === 0) this.dataEntries++;
    else this.refEntries++;
  }
}

/**
 * Where each block id occurs in a version: an open-addressed table from id
 * to its first occurrence, and a chain from each occurrence to the next.
 * Typed arrays again: a Map keyed by hex ids cost some 200 bytes per block.
 */
export class BlockIndex {
  private readonly table: Int32Array;
  private readonly next: Int32Array;
  private readonly mask: number;
  private readonly lists = new Map<number, Int32Array>();

  constructor(private readonly blocks: BlockList) {
    let size = 16;
    while (size < blocks.length * 2) size *= 2;
    this.table = new Int32Array(size).fill(-1);
    this.next = new Int32Array(Math.max(1, blocks.length)).fill(-1);
    this.mask = size - 1;
    // Backwards, so each chain runs in ascending order.
    for (let i = blocks.length - 1; i >= 0; i--) {
      if (!blocks.hasId(i)) continue;
      const slot = this.slotOf(blocks, i);
      this.next[i] = this.table[slot]!;
      this.table[slot] = i;
    }
  }

  /** The occurrences of block `i` of `list` here, ascending; undefined if none. */
  find(list: BlockList, i: number): Int32Array | number | undefined {
    return this.occurrences(this.table[this.slotOf(list, i)]!);
  }

  /** The same for a bare id. */
  findId(id: Uint8Array): Int32Array | number | undefined {
    const hash = Buffer.from(id.buffer, id.byteOffset, 4).readUInt32LE(0);
    for (let slot = hash & this.mask; ; slot = (slot + 1) & this.mask) {
      const at = this.table[slot]!;
      if (at < 0) return undefined;
      if (this.blocks.idEquals(at, id)) return this.occurrences(at);
    }
  }

  private occurrences(first: number): Int32Array | number | undefined {
    if (first < 0) return undefined;
    if (this.next[first]! < 0) return first;
    let all = this.lists.get(first);
    if (!all) {
      const found: number[] = [];
      for (let k = first; k >= 0; k = this.next[k]!) found.push(k);
      this.lists.set(first, (all = Int32Array.from(found)));
    }
    return all;
  }

  /** The slot holding block `i` of `list`'s id, or the empty slot where it would go. */
  private slotOf(list: BlockList, i: number): number {
    for (let slot = list.idHash(i) & this.mask; ; slot = (slot + 1) & this.mask) {
      const at = this.table[slot]!;
      if (at < 0 || this.blocks.sameId(at, list, i)) return slot;
    }
  }
}

/**
 * Aligns `current` (a version's blocks, in order) with `previous` and returns
 * the version's TOC. A block matches when the same block id sits in the
 * previous version; a run continues while the next block matches the next
 * previous block. Where a block occurs several times in the previous version
 * (zeros, repeated records), the occurrence that starts the longest run wins,
 * and among equals the one nearest to where the last run's offset predicts.
 */
export function diffBlocks(previousBlocks: BlockList | readonly BlockSpan[], currentBlocks: BlockList | readonly BlockSpan[]): TocList {
  const previous = previousBlocks instanceof BlockList ? previousBlocks : BlockList.from(previousBlocks);
  const current = currentBlocks instanceof BlockList ? currentBlocks : BlockList.from(currentBlocks);
  const index = new BlockIndex(previous);
  const out = new TocList(current);
  // The open run: its range here and its first and last block in `previous`.
  let runStart = -1;
  let runEnd = -1;
  let first = -1;
  let last = -1;
  let delta = 0;
  const flush = () => {
    if (first < 0) return;
    out.pushRef(runStart, runEnd, previous.start(first));
    first = -1;
  };

  for (let i = 0; i < current.length; i++) {
    if (!current.hasId(i)) throw new Error('current blocks always have ids');
    if (first >= 0 && last + 1 < previous.length && previous.sameId(last + 1, current, i)) {
      runEnd = current.end(i);
      last++;
      continue;
    }
    flush();
    const found = index.find(current, i);
    const match = found === undefined ? undefined : typeof found === 'number' ? found : bestCandidate(previous, found, current, i, current.start(i) - delta);
    if (match === undefined) {
      out.pushData(current.start(i), current.end(i), i);
      continue;
    }
    runStart = current.start(i);
    runEnd = current.end(i);
    first = last = match;
    delta = current.start(i) - previous.start(match);
  }
  flush();
  return out;
}

const CANDIDATES = 16;
const LOOKAHEAD = 256;

/** Among the occurrences nearest `pos`, the one whose run with `current[i..]` is longest. */
function bestCandidate(previous: BlockList, candidates: Int32Array, current: BlockList, i: number, pos: number): number {
  let lo = 0;
  let hi = candidates.length - 1;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (previous.start(candidates[mid]!) < pos) lo = mid + 1;
    else hi = mid;
  }
  let best = candidates[lo]!;
  let bestLen = -1;
  let bestDist = Number.POSITIVE_INFINITY;
  const from = Math.max(0, lo - CANDIDATES / 2);
  const to = Math.min(candidates.length, from + CANDIDATES);
  for (let k = from; k < to; k++) {
    const c = candidates[k]!;
    let len = 1;
    while (len < LOOKAHEAD && c + len < previous.length && i + len < current.length && previous.sameId(c + len, current, i + len)) len++;
    const dist = Math.abs(previous.start(c) - pos);
    if (len > bestLen || (len === bestLen && dist < bestDist)) {
      best = c;
      bestLen = len;
      bestDist = dist;
    }
  }
  return best;
}

/**
 * The seed's view of a TOC: one reference block per unchanged block of the
 * target. Each ref entry is split where the target's blocks begin, so FIG. 6's
 * REF 2 and REF 3 appear as two reference blocks although strata stores them
 * as one ref entry (one maximal run, same offset).
 */
export function referenceBlocks(entries: Iterable<TocEntry>, target: BlockList): TocEntry[] {
  const out: TocEntry[] = [];
  for (const e of entries) {
    if (e.kind === 'data') {
      out.push(e);
      continue;
    }
    const shift = offsetOf(e);
    let i = target.indexAt(e.targetStart);
    let pos = e.targetStart;
    while (pos <= e.targetEnd) {
      const end = i < target.length && target.start(i) <= pos ? Math.min(target.end(i), e.targetEnd) : e.targetEnd;
      out.push({ kind: 'ref', start: pos + shift, end: end + shift, targetStart: pos, targetEnd: end });
      pos = end + 1;
      i++;
    }
  }
  return out;
}
