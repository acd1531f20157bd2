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

/**
 * Aligns `current` (a version's blocks, in order) with `previous` and returns
 * the version's TOC. A block matches when the same block id sits in the
 * previous version; a run continues while the next block matches the next
 * previous block. Where a block occurs several times in the previous version
 * (zeros, repeated records), the occurrence that starts the longest run wins,
 * and among equals the one nearest to where the last run's offset predicts.
 */
export function diffBlocks(previous: readonly BlockSpan[], current: readonly BlockSpan[]): TocEntry[] {
  const where = new Map<string, number[]>();
  previous.forEach((b, i) => {
    if (!b.id) return;
    const key = b.id.toString('hex');
    const list = where.get(key);
    if (list) list.push(i);
    else where.set(key, [i]);
  });

  const out: TocEntry[] = [];
  let run: { start: number; end: number; first: number; last: number } | undefined;
  let delta = 0;
  const flush = () => {
    if (!run) return;
    const first = previous[run.first]!;
    const last = previous[run.last]!;
    out.push({ kind: 'ref', start: run.start, end: run.end, targetStart: first.start, targetEnd: last.end });
    run = undefined;
  };

  for (let i = 0; i < current.length; i++) {
    const b = current[i]!;
    if (!b.id) throw new Error('current blocks always have ids');
    const next = run ? previous[run.last + 1] : undefined;
    if (run && next?.id?.equals(b.id)) {
      run.end = b.end;
      run.last++;
      continue;
    }
    flush();
    const candidates = where.get(b.id.toString('hex'));
    const match = candidates && bestCandidate(previous, candidates, current, i, b.start - delta);
    if (match === undefined) {
      out.push({ kind: 'data', start: b.start, end: b.end, block: b.id });
      continue;
    }
    run = { start: b.start, end: b.end, first: match, last: match };
    delta = b.start - previous[match]!.start;
  }
  flush();
  return out;
}

const CANDIDATES = 16;
const LOOKAHEAD = 256;

/** Among the occurrences nearest `pos`, the one whose run with `current[i..]` is longest. */
function bestCandidate(previous: readonly BlockSpan[], candidates: readonly number[], current: readonly BlockSpan[], i: number, pos: number): number {
  if (candidates.length === 1) return candidates[0]!;
  let lo = 0;
  let hi = candidates.length - 1;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (previous[candidates[mid]!]!.start < pos) lo = mid + 1;
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
    while (len < LOOKAHEAD && c + len < previous.length && i + len < current.length && previous[c + len]!.id?.equals(current[i + len]!.id!)) len++;
    const dist = Math.abs(previous[c]!.start - pos);
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
export function referenceBlocks(entries: readonly TocEntry[], target: readonly BlockSpan[]): TocEntry[] {
  const out: TocEntry[] = [];
  for (const e of entries) {
    if (e.kind === 'data') {
      out.push(e);
      continue;
    }
    const shift = offsetOf(e);
    let i = firstSpanAtOrAfter(target, e.targetStart);
    let pos = e.targetStart;
    while (pos <= e.targetEnd) {
      const span = target[i];
      const end = span && span.start <= pos ? Math.min(span.end, e.targetEnd) : e.targetEnd;
      out.push({ kind: 'ref', start: pos + shift, end: end + shift, targetStart: pos, targetEnd: end });
      pos = end + 1;
      i++;
    }
  }
  return out;
}

function firstSpanAtOrAfter(spans: readonly BlockSpan[], pos: number): number {
  let lo = 0;
  let hi = spans.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (spans[mid]!.end < pos) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}
