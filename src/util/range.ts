/**
 * Byte ranges as HTTP writes them: "START-END" (inclusive), "START-", "-SUFFIX";
 * numbers in decimal or 0x hex. END past EOF is clamped; START past EOF is
 * "range not satisfiable".
 */
import { rangeNotSatisfiable, usageError } from '../errors.js';

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
  const n = /^0x[0-9a-f]+$/i.test(t) ? Number.parseInt(t.slice(2), 16) : /^\d+$/.test(t) ? Number(t) : Number.NaN;
  if (!Number.isSafeInteger(n)) throw usageError(`malformed range "${whole}" (use START-END, START-, or -SUFFIX; decimal or 0x hex)`);
  return n;
}

export function parseRange(text: string): RangeSpec {
  const dash = text.indexOf('-');
  if (dash < 0) throw usageError(`malformed range "${text}" (use START-END, START-, or -SUFFIX; decimal or 0x hex)`);
  const left = text.slice(0, dash);
  const right = text.slice(dash + 1);
  if (left.trim() === '') {
    if (right.trim() === '') throw usageError(`malformed range "${text}"`);
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
