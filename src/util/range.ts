/**
 * Byte ranges as HTTP writes them: "START-END" (inclusive), "START-", "-SUFFIX",
 * and "START+LENGTH". Numbers are decimal or 0x hex; a decimal number may end
 * in a binary unit: K or KiB (1024), M or MiB, G or GiB, T or TiB. END past EOF
 * is clamped; START past EOF is "range not satisfiable".
 */
import { rangeNotSatisfiable, usageError } from '../errors.js';

const UNITS: Record<string, number> = { '': 1, k: 1024, kib: 1024, m: 1024 ** 2, mib: 1024 ** 2, g: 1024 ** 3, gib: 1024 ** 3, t: 1024 ** 4, tib: 1024 ** 4 };
const FORMS = 'use START-END, START-, -SUFFIX or START+LENGTH; decimal, 0x hex, or a size like 4K or 1MiB';

export interface RangeSpec {
  start?: number;
  end?: number;
  suffix?: number;
}

/** An inclusive byte range resolved against a file size. Empty when `end < start`. */
export interface ByteRange {
  start: number;
  end: number;
}

function parseNumber(text: string, whole: string): number {
  const t = text.trim();
  let n = Number.NaN;
  if (/^0x[0-9a-f]+$/i.test(t)) n = Number.parseInt(t.slice(2), 16);
  else {
    const m = /^(\d+)\s*([a-z]*)$/i.exec(t);
    const unit = m ? UNITS[m[2]!.toLowerCase()] : undefined;
    if (m && unit !== undefined) n = Number(m[1]) * unit;
  }
  if (!Number.isSafeInteger(n)) throw usageError(`malformed range "${whole}" (${FORMS})`);
  return n;
}

export function parseRange(text: string): RangeSpec {
  const plus = text.indexOf('+');
  if (plus >= 0) {
    const start = parseNumber(text.slice(0, plus), text);
    const length = parseNumber(text.slice(plus + 1), text);
    if (length === 0) throw usageError(`malformed range "${text}": the length is 0`);
    if (!Number.isSafeInteger(start + length)) throw usageError(`malformed range "${text}" (${FORMS})`);
    return { start, end: start + length - 1 };
  }
  const dash = text.indexOf('-');
  if (dash < 0) throw usageError(`malformed range "${text}" (${FORMS})`);
  const left = text.slice(0, dash);
  const right = text.slice(dash + 1);
  if (left.trim() === '') {
    if (right.trim() === '') throw usageError(`malformed range "${text}" (${FORMS})`);
    return { suffix: parseNumber(right, text) };
  }
  const start = parseNumber(left, text);
  if (right.trim() === '') return { start };
  const end = parseNumber(right, text);
  if (end < start) throw usageError(`malformed range "${text}": end is before start`);
  return { start, end };
}

export function resolveRange(spec: RangeSpec | undefined, size: number): ByteRange {
  if (!spec) return { start: 0, end: size - 1 };
  if (spec.suffix !== undefined) {
    return { start: Math.max(0, size - spec.suffix), end: size - 1 };
  }
  const start = spec.start ?? 0;
  if (start >= size) throw rangeNotSatisfiable(`range not satisfiable: start ${start} is past the end of the file (size ${size})`);
  return { start, end: Math.min(spec.end ?? size - 1, size - 1) };
}
