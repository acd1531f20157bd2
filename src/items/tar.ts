/**
 * Entries of a tar archive, found by walking its headers: each 512-byte
 * header gives the size of the data after it, so the next header's offset
 * is known without reading the data. ustar (the name's prefix field), GNU
 * long names and links ('L', 'K') and pax extended headers ('x'; 'g' for all
 * that follow) are read; a header whose checksum is wrong is an integrity
 * error, not an entry.
 */
import { integrity, notFound } from '../errors.js';
import type { RangeReader } from './reader.js';

export interface TarEntry {
  name: string;
  type: 'file' | 'dir' | 'symlink' | 'hardlink' | 'other';
  size: number;
  /** Seconds since the epoch. */
  mtime: number;
  /** Where its header starts, and where its data does. */
  offset: number;
  dataOffset: number;
  linkname?: string;
}

const BLOCK = 512;
/** The longest GNU long name or pax header read (a larger one is no tar this reads). */
const META_LIMIT = 1024 * 1024;

export async function* tarEntries(reader: RangeReader): AsyncGenerator<TarEntry> {
  let at = 0;
  let longName: string | undefined;
  let longLink: string | undefined;
  let pax: Record<string, string> = {};
  let global: Record<string, string> = {};
  while (at + BLOCK <= reader.size) {
    const h = await reader.read(at, BLOCK);
    if (h.every((c) => c === 0)) return;
    checkHeader(h, at, reader.path);
    const size = numberField(h, 124, 12);
    const flag = String.fromCharCode(h[156]!);
    const dataOffset = at + BLOCK;
    const next = dataOffset + Math.ceil(size / BLOCK) * BLOCK;
    if (flag === 'L' || flag === 'K' || flag === 'x' || flag === 'g') {
      if (size > META_LIMIT) throw integrity(`${reader.path}: a tar header at ${at} says ${size} bytes of metadata follow`);
      const meta = await reader.read(dataOffset, size);
      if (flag === 'L') longName = cString(meta);
      else if (flag === 'K') longLink = cString(meta);
      else if (flag === 'x') pax = paxRecords(meta, at, reader.path);
      else global = { ...global, ...paxRecords(meta, at, reader.path) };
      at = next;
      continue;
    }
    const p = { ...global, ...pax };
    const prefix = h.toString('latin1', 257, 262) === 'ustar' ? cString(h.subarray(345, 500)) : '';
    const base = cString(h.subarray(0, 100));
    const name = p.path ?? longName ?? (prefix ? `${prefix}/${base}` : base);
    const realSize = p.size !== undefined ? Number(p.size) : size;
    const linkname = p.linkpath ?? longLink ?? cString(h.subarray(157, 257));
    const entry: TarEntry = {
      name,
      type: flag === '5' ? 'dir' : flag === '2' ? 'symlink' : flag === '1' ? 'hardlink' : flag === '0' || flag === '\0' || flag === '7' ? 'file' : 'other',
      size: realSize,
      mtime: p.mtime !== undefined ? Number(p.mtime) : numberField(h, 136, 12),
      offset: at,
      dataOffset,
      ...(linkname && (flag === '1' || flag === '2') ? { linkname } : {}),
    };
    yield entry;
    longName = longLink = undefined;
    pax = {};
    at = dataOffset + Math.ceil(realSize / BLOCK) * BLOCK;
  }
}

/** The entry named `name` (a leading "./" or "/" aside); the last one wins, as tar extracts. */
export async function findTarEntry(reader: RangeReader, name: string): Promise<TarEntry> {
  const want = plain(name);
  let found: TarEntry | undefined;
  for await (const e of tarEntries(reader)) if (plain(e.name) === want) found = e;
  if (!found) throw notFound(`${reader.path} has no entry ${name}`);
  return found;
}

const plain = (n: string) => n.replace(/^(\.\/|\/)+/, '').replace(/\/+$/, '');

function checkHeader(h: Buffer, at: number, path: string): void {
  const stored = numberField(h, 148, 8);
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 32 : h[i]!;
  if (sum !== stored) throw integrity(`${path}: the tar header at ${at} is damaged (checksum ${stored}, its bytes sum to ${sum})`);
}

/** An octal field, or a GNU base-256 one (high bit set). */
function numberField(h: Buffer, at: number, len: number): number {
  if (h[at]! & 0x80) {
    let n = 0;
    for (let i = 1; i < len; i++) n = n * 256 + h[at + i]!;
    return n;
  }
  const s = h.toString('latin1', at, at + len).replace(/\0.*$/s, '').trim();
  return s === '' ? 0 : parseInt(s, 8);
}

function cString(b: Buffer): string {
  const z = b.indexOf(0);
  // Names in archives are UTF-8 nearly always now.
  return b.subarray(0, z < 0 ? b.length : z).toString('utf8');
}

/** Records "LEN key=value\n" (POSIX pax). */
function paxRecords(b: Buffer, at: number, path: string): Record<string, string> {
  const out: Record<string, string> = {};
  let i = 0;
  while (i < b.length) {
    const sp = b.indexOf(0x20, i);
    const len = sp < 0 ? NaN : Number(b.toString('latin1', i, sp));
    if (!Number.isSafeInteger(len) || len <= 0 || i + len > b.length) throw integrity(`${path}: the pax header at ${at} is damaged`);
    const rec = b.toString('utf8', sp + 1, i + len - 1);
    const eq = rec.indexOf('=');
    if (eq > 0) out[rec.slice(0, eq)] = rec.slice(eq + 1);
    i += len;
  }
  return out;
}
