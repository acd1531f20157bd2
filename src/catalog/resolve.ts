/**
 * Reading a range of a version: find the TOC entries that cover it, follow
 * ref entries down their chains to data entries, and yield the pieces of
 * blocks that make up the range, in order. Only the blocks that cover the
 * range are ever named. Chains are followed in a loop with a depth bound, so
 * a damaged or hostile catalog (cycles, gaps, overlaps, refs past their
 * target) ends in an integrity error rather than a hang or wrong bytes.
 */
import { integrity } from '../errors.js';
import type { Catalog, TocRow, TocSpan } from './catalog.js';
import { BlockList } from './blocklist.js';

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

/**
 * Backups keep chains within MAX_DEPTH hops, but forget splices refs through
 * the versions it removes, so a chain can grow as long as the file's history.
 * This bound only stops cycles: 10,000 hops take a few milliseconds.
 */
export const MAX_CHAIN_DEPTH = 10_000;
const BATCH = 512;

interface Frame {
  version: number;
  start: number;
  end: number;
  /** Position in the requested version that `start` maps to. */
  at: number;
  depth: number;
  /** The frame picks up after a row of the same version, so its first row must start at `start`. */
  continues: boolean;
}

/** Counts of the work a resolve did (how many TOC ranges it visited). */
export interface ResolveStats {
  frames: number;
}

/** The pieces of [start, end] (inclusive) of `version`, in order. */
export function* resolveRange(catalog: Catalog, version: number, start: number, end: number, stats?: ResolveStats): Generator<Piece> {
  if (end < start) return;
  const stack: Frame[] = [{ version, start, end, at: start, depth: 0, continues: false }];
  while (stack.length > 0) {
    const f = stack.pop()!;
    if (stats) stats.frames++;
    if (f.depth > MAX_CHAIN_DEPTH) throw integrity(`reference chain deeper than ${MAX_CHAIN_DEPTH} (a cycle?) at version ${version}`);
    let cursor = f.start;
    let row: TocRow | undefined = catalog.tocAt(f.version, cursor);
    let batch: TocRow[] = [];
    // A frame's first row may start before the cursor (a read or ref into its middle), unless the
    // frame continues after a row; any other row that does overlaps its predecessor.
    let first = !f.continues;
    while (cursor <= f.end) {
      checkRow(row, f.version, cursor, first);
      first = false;
      const pieceEnd = Math.min(row.end, f.end);
      const at = f.at + (cursor - f.start);
      if (row.block) {
        yield { block: row.block, blockSize: row.end - row.start + 1, from: cursor - row.start, length: pieceEnd - cursor + 1, at };
      } else {
        // Follow the shortcut if the row has one, never its version with the target's start.
        const [target, targetStart] = row.root !== null ? [row.root, row.root_start] : [row.target, row.target_start];
        if (target === null || !Number.isSafeInteger(target) || !isOffset(targetStart)) throw integrity(`TOC entry of version ${f.version} at ${row.start} is neither data nor ref`);
        // Continue this frame after the child; the child goes on top.
        if (pieceEnd < f.end) stack.push({ ...f, start: pieceEnd + 1, at: at + (pieceEnd - cursor + 1), continues: true });
        stack.push({ version: target, start: targetStart + (cursor - row.start), end: targetStart + (pieceEnd - row.start), at, depth: f.depth + 1, continues: false });
        break;
      }
      cursor = pieceEnd + 1;
      if (cursor > f.end) break;
      if (batch.length === 0) batch = catalog.tocAfter(f.version, row.start, f.end, BATCH).reverse();
      row = batch.pop();
    }
  }
}

const isOffset = (n: unknown): n is number => Number.isSafeInteger(n) && (n as number) >= 0;

/** Throws unless `row` covers `cursor` with whole offsets and, unless it is the first, starts there. */
function checkRow(row: TocRow | undefined, version: number, cursor: number, first: boolean): asserts row is TocRow {
  if (!row || row.start > cursor || row.end < cursor) {
    throw integrity(`TOC of version ${version} does not cover offset ${cursor}`, { version, offset: cursor });
  }
  if (!isOffset(row.start) || !isOffset(row.end)) throw integrity(`TOC entry of version ${version} at ${row.start} has a malformed range`);
  if (!first && row.start < cursor) throw integrity(`TOC entries of version ${version} overlap at offset ${row.start}`, { version, offset: row.start });
}

/**
 * A version as the sequence of its blocks (for aligning the next version).
 * Rows are read a page at a time as plain arrays, and refs are followed by
 * their shortcuts the same way. The result is what resolveRange over the
 * whole version gives; at anything out of step (a gap, an overlap, a
 * malformed row, a long chain) that walk is made instead, with its checks
 * and its words for the error.
 */
export function blocksOf(catalog: Catalog, version: number, size: number): BlockList {
  const list = new BlockList();
  if (size > 0 && !appendSpans(new SpanPages(catalog), list, version, 0, size - 1, 0)) {
    const whole = new BlockList();
    pushPieces(whole, resolveRange(catalog, version, 0, size - 1));
    return whole;
  }
  return list;
}

/**
 * blocksOf() for many versions, with one catalog read for all: a version of
 * data entries only (most small files) is made from its rows; any other goes
 * through blocksOf.
 */
export function blocksOfMany(catalog: Catalog, versions: readonly { id: number; size: number }[]): BlockList[] {
  const rows = catalog.tocSpansOfMany(versions.filter((v) => v.size > 0).map((v) => v.id));
  return versions.map(({ id, size }) => {
    if (size === 0) return new BlockList(1);
    const spans = rows.get(id) ?? [];
    const list = new BlockList(Math.max(1, spans.length));
    for (const [start, end, block] of spans) {
      if (block === '' || start !== list.size || end < start || !list.pushHex(block, end - start + 1)) return blocksOf(catalog, id, size);
    }
    return list.size === size ? list : blocksOf(catalog, id, size);
  });
}

/** Hops the page-at-a-time walk follows; deeper chains (left by forgets) take resolveRange's loop. */
const SPAN_DEPTH = 64;

/**
 * The rows of TOCs one blocksOf walk has read, in pages (BATCH rows in
 * order). The refs of a chain of incrementals point into the same few older
 * versions again and again, and not in order where blocks repeat (a disk
 * image's zeros and patterns match their first copy): with a query per ref,
 * each incremental backup of a large file took longer than the one before it
 * (1.5 s to 2.4 s over 12 versions of a 400 MiB image), and one page per
 * version was read again hundreds of times. At most MAX_PAGES pages are
 * held, the first read going first.
 */
class SpanPages {
  /** Per version, its pages in order of their first row's start. */
  private readonly pages = new Map<number, TocSpan[][]>();
  private readonly held: [number, TocSpan[]][] = [];
  constructor(private readonly catalog: Catalog) {}

  /** Rows of `version` from the first starting at `from` or after, in order (`rows` from `index`): a prefix of what tocSpans gives. */
  after(version: number, from: number): { rows: TocSpan[]; index: number } {
    const page = this.pageAt(version, from);
    if (page) {
      const index = firstAtOrAfter(page, from);
      if (index < page.length) return { rows: page, index };
    }
    const rows = this.catalog.tocSpans(version, from, BATCH);
    this.keep(version, rows);
    return { rows, index: 0 };
  }

  /** The last row of `version` starting at or before `offset` (tocSpanAt). */
  at(version: number, offset: number): TocSpan | undefined {
    const page = this.pageAt(version, offset);
    if (page) {
      // The row after it in the page shows no other row starts between it and `offset`.
      const next = firstAtOrAfter(page, offset + 1);
      if (next < page.length) return page[next - 1];
    }
    return this.catalog.tocSpanAt(version, offset);
  }

  /** The page of `version` held whose first row starts last at or before `offset`. */
  private pageAt(version: number, offset: number): TocSpan[] | undefined {
    const list = this.pages.get(version);
    if (!list) return undefined;
    let lo = 0;
    let hi = list.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (list[mid]![0]![0] <= offset) lo = mid + 1;
      else hi = mid;
    }
    return lo > 0 ? list[lo - 1] : undefined;
  }

  private keep(version: number, rows: TocSpan[]): void {
    if (rows.length === 0) return;
    let list = this.pages.get(version);
    if (!list) this.pages.set(version, (list = []));
    const first = rows[0]![0];
    let i = 0;
    while (i < list.length && list[i]![0]![0] < first) i++;
    list.splice(i, 0, rows);
    this.held.push([version, rows]);
    if (this.held.length > MAX_PAGES) {
      const [v, old] = this.held.shift()!;
      const of = this.pages.get(v)!;
      of.splice(of.indexOf(old), 1);
    }
  }
}

/** Pages SpanPages holds at most (of BATCH rows: about 10 MB). */
const MAX_PAGES = 128;

/** The index of the first of `rows` (in order of start) starting at `offset` or after; rows.length if none. */
function firstAtOrAfter(rows: readonly TocSpan[], offset: number): number {
  let lo = 0;
  let hi = rows.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (rows[mid]![0] < offset) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** Appends the blocks of [start, end] of `version` to `list`; false if anything is out of step. */
function appendSpans(pages: SpanPages, list: BlockList, version: number, start: number, end: number, depth: number): boolean {
  if (depth > SPAN_DEPTH) return false;
  let cursor = start;
  while (cursor <= end) {
    const { rows, index } = pages.after(version, cursor);
    if (index >= rows.length || rows[index]![0] !== cursor) {
      // Only a ref's range may begin inside a row.
      if (cursor !== start) return false;
      const row = pages.at(version, cursor);
      if (!row || row[1] < cursor || !appendRow(pages, list, row, cursor, end, depth)) return false;
      cursor = Math.min(row[1], end) + 1;
      continue;
    }
    for (let i = index; i < rows.length; i++) {
      const row = rows[i]!;
      if (row[0] !== cursor || cursor > end) break;
      if (!appendRow(pages, list, row, cursor, end, depth)) return false;
      cursor = Math.min(row[1], end) + 1;
    }
  }
  return true;
}

/** Appends the part of `row` from `cursor` to at most `end`. */
function appendRow(pages: SpanPages, list: BlockList, [start, rowEnd, block, to, toStart]: TocSpan, cursor: number, end: number, depth: number): boolean {
  if (!isOffset(start) || !isOffset(rowEnd) || rowEnd < start) return false;
  const pieceEnd = Math.min(rowEnd, end);
  if (block !== '') {
    // A piece of a block cannot be matched: it has no id of its own.
    if (cursor === start && pieceEnd === rowEnd) return list.pushHex(block, pieceEnd - cursor + 1);
    list.push(null, pieceEnd - cursor + 1);
    return true;
  }
  if (to === null || !Number.isSafeInteger(to) || !isOffset(toStart)) return false;
  const from = toStart + (cursor - start);
  return appendSpans(pages, list, to, from, from + (pieceEnd - cursor), depth + 1);
}

function pushPieces(list: BlockList, pieces: Iterable<Piece>): void {
  for (const p of pieces) {
    const whole = p.from === 0 && p.length === p.blockSize;
    list.push(whole ? p.block : null, p.length);
  }
}
