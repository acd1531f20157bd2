/**
 * A version's TOC rows in the catalog: its entries, with the shortcut that
 * keeps reads flat as chains grow (FORMAT.md §10). Keyless: the server and
 * a rebuild make the same rows.
 */
import type { Catalog, TocRow } from './catalog.js';
import type { TocEntry } from './toc.js';
import { minorGc } from '../util/gc.js';

/** Rows between collections of the young generation while a long TOC's rows are made. */
const ROWS_PER_GC = 4096;

export interface TargetVersion {
  id: number;
  snapshotId: string;
  /** The target version's largest row depth (see VersionRow). */
  depth: number;
}

/**
 * How many hops a read may take before it reaches data. A ref whose range
 * would exceed it is split where the target's rows begin, each piece taking
 * its row's shortcut; so reads stay within MAX_DEPTH hops however long the
 * history, and most versions keep one row per maximal run.
 */
export const MAX_DEPTH = 8;

/**
 * Catalog rows for a TOC whose refs point into `target`. `target` keeps the
 * chain of the seed's FIG. 7; `root` is where a read goes: a ref whose target
 * range lies inside a single ref of the target version takes that ref's root.
 */
/**
 * Where a read of [ts, te] of `target` goes, given the target's row `under`
 * that holds ts: through that row's own shortcut when the range lies inside
 * a single ref, else to the target itself; with the hops it may take.
 */
export function shortcut(target: { id: number; depth: number }, ts: number, te: number, under: TocRow | undefined): { root: number; root_start: number; depth: number } {
  const inside = under !== undefined && under.start <= ts && under.end >= te;
  if (inside && under.block === null) {
    return { root: under.root ?? under.target!, root_start: (under.root_start ?? under.target_start!) + (ts - under.start), depth: under.depth };
  }
  return { root: target.id, root_start: ts, depth: inside ? under.depth + 1 : target.depth + 1 };
}

export function* tocRows(catalog: Catalog, entries: Iterable<TocEntry>, target: TargetVersion | undefined): Generator<TocRow> {
  let n = 0;
  for (const e of entries) {
    if (++n % ROWS_PER_GC === 0) minorGc();
    if (e.kind === 'data') {
      yield { start: e.start, end: e.end, block: e.block, target: null, target_start: null, root: null, root_start: null, depth: 0 };
      continue;
    }
    if (!target) throw new Error('a ref entry needs a target version');
    const ref = (start: number, end: number, under: TocRow | undefined): TocRow => {
      const ts = e.targetStart + (start - e.start);
      return { start, end, block: null, target: target.id, target_start: ts, ...shortcut(target, ts, ts + (end - start), under) };
    };
    const whole = ref(e.start, e.end, catalog.tocAt(target.id, e.targetStart));
    if (whole.depth <= MAX_DEPTH) {
      yield whole;
      continue;
    }
    const under = catalog.tocRange(target.id, e.targetStart, e.targetEnd);
    const depth = 1 + under.reduce((d, u) => Math.max(d, u.depth), 0);
    if (depth <= MAX_DEPTH) {
      yield { ...whole, depth };
      continue;
    }
    for (const u of under) {
      const ts = Math.max(u.start, e.targetStart);
      const te = Math.min(u.end, e.targetEnd);
      yield ref(e.start + (ts - e.targetStart), e.start + (te - e.targetStart), u);
    }
  }
}

