/**
 * The HTTP Range header, as far as strata uses it: one byte range per request
 * (`bytes=a-b`, `bytes=a-`, `bytes=-n`). A client that asks for several
 * ranges, another unit, or something unparsable gets 416 rather than the whole
 * object: a pack can be large, and a client that sent a Range wants a part.
 */

export type RangeResult =
  | { kind: 'none' }
  | { kind: 'range'; start: number; end: number }
  | { kind: 'unsatisfiable'; reason: string };

const DIGITS = /^\d{1,15}$/;

/** `end` is inclusive, as in the header. */
export function parseRange(header: string | undefined, size: number): RangeResult {
  if (header === undefined) return { kind: 'none' };
  const m = /^bytes=(.*)$/i.exec(header.trim());
  if (!m) return { kind: 'unsatisfiable', reason: 'only byte ranges are supported (bytes=a-b)' };
  const spec = m[1]!.trim();
  if (spec.includes(',')) return { kind: 'unsatisfiable', reason: 'only one range per request is supported' };
  const dash = spec.indexOf('-');
  if (dash < 0) return { kind: 'unsatisfiable', reason: 'malformed range' };
  const first = spec.slice(0, dash).trim();
  const last = spec.slice(dash + 1).trim();
  if (first === '') {
    // A suffix: the last n bytes.
    if (!DIGITS.test(last)) return { kind: 'unsatisfiable', reason: 'malformed range' };
    const n = Number(last);
    if (n === 0 || size === 0) return { kind: 'unsatisfiable', reason: 'empty range' };
    return { kind: 'range', start: Math.max(0, size - n), end: size - 1 };
  }
  if (!DIGITS.test(first) || (last !== '' && !DIGITS.test(last))) return { kind: 'unsatisfiable', reason: 'malformed range' };
  const start = Number(first);
  if (last !== '' && Number(last) < start) return { kind: 'unsatisfiable', reason: 'range ends before it starts' };
  const end = last === '' ? size - 1 : Number(last);
  if (start >= size) return { kind: 'unsatisfiable', reason: `range starts at or past the end (${size} bytes)` };
  return { kind: 'range', start, end: Math.min(end, size - 1) };
}
