/**
 * File names are bytes on Linux, and not every byte string is UTF-8. Inside
 * strata a name is a JavaScript string; a byte that is not part of valid
 * UTF-8 is kept as the lone surrogate U+DC00 + byte (the "surrogateescape"
 * of Python), which no valid UTF-8 decodes to. So every name round-trips:
 * `nameBytes(decodeName(b))` equals `b`, and names that are valid UTF-8 (all
 * but a few) are the plain strings they always were.
 */
import { promises as fs, readdirSync } from 'node:fs';

/** A lone low surrogate standing for one raw byte (the `u` flag keeps surrogate pairs whole). */
const ESCAPED = /[\uDC80-\uDCFF]/u;
const ESCAPED_ALL = /[\uDC80-\uDCFF]/gu;

/** Decodes a name's bytes: valid UTF-8 as text, any other byte escaped. */
export function decodeName(bytes: Uint8Array): string {
  let out = '';
  let i = 0;
  while (i < bytes.length) {
    const n = sequenceLength(bytes, i);
    if (n > 0) {
      // Runs of valid sequences are decoded together.
      let j = i + n;
      for (let m = sequenceLength(bytes, j); m > 0; m = sequenceLength(bytes, j)) j += m;
      out += Buffer.from(bytes.buffer, bytes.byteOffset + i, j - i).toString('utf8');
      i = j;
    } else {
      out += String.fromCharCode(0xdc00 + bytes[i]!);
      i++;
    }
  }
  return out;
}

/** The length of the valid UTF-8 sequence at `i`, or 0 when the byte there starts none. */
function sequenceLength(b: Uint8Array, i: number): number {
  if (i >= b.length) return 0;
  const c = b[i]!;
  if (c < 0x80) return 1;
  const cont = (k: number, lo = 0x80, hi = 0xbf) => i + k < b.length && b[i + k]! >= lo && b[i + k]! <= hi;
  if (c >= 0xc2 && c <= 0xdf) return cont(1) ? 2 : 0;
  if (c === 0xe0) return cont(1, 0xa0) && cont(2) ? 3 : 0;
  // 0xED 0xA0..0xBF would encode a surrogate: not valid UTF-8.
  if (c === 0xed) return cont(1, 0x80, 0x9f) && cont(2) ? 3 : 0;
  if (c >= 0xe1 && c <= 0xef) return cont(1) && cont(2) ? 3 : 0;
  if (c === 0xf0) return cont(1, 0x90) && cont(2) && cont(3) ? 4 : 0;
  if (c >= 0xf1 && c <= 0xf3) return cont(1) && cont(2) && cont(3) ? 4 : 0;
  if (c === 0xf4) return cont(1, 0x80, 0x8f) && cont(2) && cont(3) ? 4 : 0;
  return 0;
}

export function hasEscapedBytes(name: string): boolean {
  return ESCAPED.test(name);
}

/** The bytes a name (or path) stands for. */
export function nameBytes(name: string): Buffer {
  if (!hasEscapedBytes(name)) return Buffer.from(name, 'utf8');
  const parts: Buffer[] = [];
  let from = 0;
  for (const m of name.matchAll(ESCAPED_ALL)) {
    parts.push(Buffer.from(name.slice(from, m.index), 'utf8'), Buffer.of(m[0].charCodeAt(0) - 0xdc00));
    from = m.index + m[0].length;
  }
  parts.push(Buffer.from(name.slice(from), 'utf8'));
  return Buffer.concat(parts);
}

/** What to hand the file system for a path: the string itself, or its bytes when it holds escaped ones. */
export function osPath(p: string): string | Buffer {
  return hasEscapedBytes(p) ? nameBytes(p) : p;
}

/**
 * A directory's entry names. Read as UTF-8 first (the fast, common case);
 * only a directory with a name that did not decode (U+FFFD) is read again as
 * bytes.
 */
export async function readNames(dir: string): Promise<string[]> {
  const p = osPath(dir);
  if (typeof p === 'string') {
    const names = await fs.readdir(p);
    if (!names.some((n) => n.includes('\uFFFD'))) return names;
  }
  return (await fs.readdir(p, { encoding: 'buffer' })).map(decodeName);
}

/** readNames, synchronously (a thread that does nothing else meanwhile). */
export function readNamesSync(dir: string): string[] {
  const p = osPath(dir);
  if (typeof p === 'string') {
    const names = readdirSync(p);
    if (!names.some((n) => n.includes('\uFFFD'))) return names;
  }
  return readdirSync(p, { encoding: 'buffer' }).map(decodeName);
}

/** The order a walk takes a directory's names in (UTF-16 code units, as the trees store them). */
export function compareNames(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** A name or path for a person to read: escaped bytes as \xNN, control characters and backslashes escaped too. */
export function displayName(name: string): string {
  // eslint-disable-next-line no-control-regex
  if (!/[\\\u0000-\u001f\u007f]|[\uDC80-\uDCFF]/u.test(name)) return name;
  let out = '';
  for (const ch of name) {
    const c = ch.codePointAt(0)!;
    if (c >= 0xdc80 && c <= 0xdcff) out += `\\x${(c - 0xdc00).toString(16).padStart(2, '0')}`;
    else if (ch === '\\') out += '\\\\';
    else if (ch === '\n') out += '\\n';
    else if (ch === '\t') out += '\\t';
    else if (c < 0x20 || c === 0x7f) out += `\\x${c.toString(16).padStart(2, '0')}`;
    else out += ch;
  }
  return out;
}
