/**
 * Entries of a zip archive (and of formats that are zips: Office Open XML,
 * OpenDocument, EPUB, Java archives) from its central directory at the end:
 * the end record, then the directory, then one entry's local header and
 * its compressed bytes, inflated as they stream (node:zlib). Each entry's
 * CRC-32 and size are checked: a damaged entry is an integrity error.
 */
import * as zlib from 'node:zlib';
import { integrity, notFound, StrataError } from '../errors.js';
import type { RangeReader } from './reader.js';

export interface ZipEntry {
  name: string;
  /** Uncompressed size. */
  size: number;
  compressedSize: number;
  /** 0 stored, 8 deflated. */
  method: number;
  crc32: number;
  /** The entry's time as the archive has it (local time, no zone), as an ISO string without one. */
  mtime: string;
  /** Where its local header starts. */
  offset: number;
  encrypted: boolean;
}

const EOCD = 0x06054b50;
const EOCD64 = 0x06064b50;
const EOCD64_LOCATOR = 0x07064b50;
const CENTRAL = 0x02014b50;
const LOCAL = 0x04034b50;
/** The end record and the longest comment after it. */
const TAIL = 22 + 0xffff;

/** The central directory is read this much at a time: a listing of a million entries holds one window, not the whole directory. */
const DIR_WINDOW = 256 * 1024;

/** Every entry, as the central directory lists them. */
export async function zipEntries(reader: RangeReader): Promise<ZipEntry[]> {
  const out: ZipEntry[] = [];
  for await (const e of zipEntryStream(reader)) out.push(e);
  return out;
}

/** The entries in the central directory's order, read a window at a time: a reader that stops early reads no further. */
export async function* zipEntryStream(reader: RangeReader): AsyncGenerator<ZipEntry> {
  const { at, size, count } = await directory(reader);
  const end = at + size;
  let dir: Buffer = Buffer.alloc(0);
  let dirAt = at;
  let i = 0;
  /** Whether `n` bytes from the current entry are in `dir` (read in from the directory when not). */
  const have = async (n: number) => {
    if (i + n <= dir.length) return true;
    const from = dirAt + i;
    if (from + n > end) return false;
    dir = await reader.read(from, Math.min(end - from, Math.max(n, DIR_WINDOW)));
    dirAt = from;
    i = 0;
    return true;
  };
  for (let n = 0; n < count; n++) {
    if (!(await have(46)) || dir.readUInt32LE(i) !== CENTRAL) throw damaged(reader, `its central directory is damaged at entry ${n + 1}`);
    const nameLen = dir.readUInt16LE(i + 28);
    const extraLen = dir.readUInt16LE(i + 30);
    const commentLen = dir.readUInt16LE(i + 32);
    if (!(await have(46 + nameLen + extraLen + commentLen))) throw damaged(reader, `its central directory is damaged at entry ${n + 1}`);
    const flags = dir.readUInt16LE(i + 8);
    const nameBytes = dir.subarray(i + 46, i + 46 + nameLen);
    let size = dir.readUInt32LE(i + 24);
    let compressedSize = dir.readUInt32LE(i + 20);
    let offset = dir.readUInt32LE(i + 42);
    // Zip64: the fields that did not fit are in the extra field 0x0001, in this order.
    const extra = dir.subarray(i + 46 + nameLen, i + 46 + nameLen + extraLen);
    for (let e = 0; e + 4 <= extra.length; ) {
      const id = extra.readUInt16LE(e);
      const len = extra.readUInt16LE(e + 2);
      if (id === 0x0001) {
        let f = e + 4;
        const next = () => {
          if (f + 8 > e + 4 + len) throw damaged(reader, 'a zip64 field is short');
          const v = Number(extra.readBigUInt64LE(f));
          f += 8;
          return v;
        };
        if (size === 0xffffffff) size = next();
        if (compressedSize === 0xffffffff) compressedSize = next();
        if (offset === 0xffffffff) offset = next();
      }
      e += 4 + len;
    }
    const entry: ZipEntry = {
      // Bit 11: the name is UTF-8; otherwise it is IBM 437, which is ASCII for the names one meets.
      name: flags & 0x800 ? nameBytes.toString('utf8') : nameBytes.toString('latin1'),
      size,
      compressedSize,
      method: dir.readUInt16LE(i + 10),
      crc32: dir.readUInt32LE(i + 16),
      mtime: dosTime(dir.readUInt16LE(i + 14), dir.readUInt16LE(i + 12)),
      offset,
      encrypted: (flags & 1) !== 0,
    };
    i += 46 + nameLen + extraLen + commentLen;
    yield entry;
  }
}

export async function findZipEntry(reader: RangeReader, name: string): Promise<ZipEntry> {
  const want = name.replace(/^\/+/, '');
  // The first entry of that name, else the first directory of it: the directory is read until the name is met.
  let dir: ZipEntry | undefined;
  for await (const x of zipEntryStream(reader)) {
    if (x.name === want) return x;
    if (x.name === `${want}/`) dir ??= x;
  }
  if (!dir) throw notFound(`${reader.path} has no entry ${name}`);
  return dir;
}

/** An entry's bytes, decompressed a piece at a time; its CRC-32 and size checked at the end. */
export async function* zipEntryBytes(reader: RangeReader, e: ZipEntry): AsyncGenerator<Buffer> {
  if (e.encrypted) throw new StrataError('wrong_format', `${reader.path}: ${e.name} is encrypted`);
  if (e.method !== 0 && e.method !== 8) throw new StrataError('wrong_format', `${reader.path}: ${e.name} is compressed with method ${e.method}, which strata does not read (only stored and deflated)`);
  const local = await reader.read(e.offset, 30);
  if (local.readUInt32LE(0) !== LOCAL) throw damaged(reader, `the local header of ${e.name} is not where its directory says`);
  const start = e.offset + 30 + local.readUInt16LE(26) + local.readUInt16LE(28);
  if (start + e.compressedSize > reader.size) throw damaged(reader, `${e.name} runs past the end of the archive`);
  let crc = 0;
  let length = 0;
  const source = reader.stream(start, start + e.compressedSize);
  if (e.method === 0) {
    for await (const piece of source) {
      crc = zlib.crc32(piece, crc);
      length += piece.length;
      yield Buffer.from(piece);
    }
  } else {
    const inflate = zlib.createInflateRaw();
    // Waits for room in the inflater, or for it to be let go (a reader that stopped early).
    const room = () =>
      new Promise<void>((r) => {
        const done = () => {
          inflate.off('drain', done);
          inflate.off('close', done);
          r();
        };
        inflate.on('drain', done);
        inflate.on('close', done);
      });
    const feed = (async () => {
      try {
        for await (const piece of source) {
          if (inflate.destroyed) break;
          if (!inflate.write(piece)) await room();
        }
        if (!inflate.destroyed) inflate.end();
      } catch (err) {
        inflate.destroy(err as Error);
      }
    })();
    try {
      for await (const piece of inflate as AsyncIterable<Buffer>) {
        crc = zlib.crc32(piece, crc);
        length += piece.length;
        if (length > e.size) throw damaged(reader, `${e.name} inflates to more than its ${e.size} bytes`);
        yield piece;
      }
    } catch (err) {
      if (err instanceof StrataError) throw err;
      throw damaged(reader, `${e.name} does not inflate (${(err as Error).message})`);
    } finally {
      // Stopped before the end (a range, a client gone): nothing more is fed or inflated.
      if (!inflate.readableEnded) inflate.destroy();
      await feed;
    }
  }
  if (length !== e.size || crc >>> 0 !== e.crc32) throw damaged(reader, `${e.name} is damaged: ${length} bytes with CRC-32 ${(crc >>> 0).toString(16)}, its directory says ${e.size} bytes with ${e.crc32.toString(16)}`);
}

/** Where the central directory is, from the end record (and the zip64 one when the first overflows). */
async function directory(reader: RangeReader): Promise<{ at: number; size: number; count: number }> {
  if (reader.size < 22) throw damaged(reader, 'it is too short for a zip archive');
  const tailStart = Math.max(0, reader.size - TAIL);
  // The end record is nearly always the last 22 bytes: look there first, then through a comment.
  let tail = await reader.read(reader.size - 22, 22);
  let base = reader.size - 22;
  let e = tail.readUInt32LE(0) === EOCD ? 0 : -1;
  if (e < 0) {
    tail = await reader.read(tailStart, reader.size - tailStart);
    base = tailStart;
    for (e = tail.length - 22; e >= 0 && tail.readUInt32LE(e) !== EOCD; e--);
    if (e < 0) throw damaged(reader, 'it has no end of central directory record');
  }
  let count = tail.readUInt16LE(e + 10);
  let size = tail.readUInt32LE(e + 12);
  let at = tail.readUInt32LE(e + 16);
  const endAt = base + e;
  if ((count === 0xffff || size === 0xffffffff || at === 0xffffffff) && endAt >= 20) {
    const loc = await reader.read(endAt - 20, 20);
    if (loc.readUInt32LE(0) === EOCD64_LOCATOR) {
      const rec = await reader.read(Number(loc.readBigUInt64LE(8)), 56);
      if (rec.readUInt32LE(0) !== EOCD64) throw damaged(reader, 'its zip64 end record is not where its locator says');
      count = Number(rec.readBigUInt64LE(32));
      size = Number(rec.readBigUInt64LE(40));
      at = Number(rec.readBigUInt64LE(48));
    }
  }
  if (at + size > reader.size) throw damaged(reader, 'its central directory runs past its end');
  return { at, size, count };
}

function dosTime(date: number, time: number): string {
  const pad = (n: number) => String(n).padStart(2, '0');
  return `${1980 + (date >> 9)}-${pad((date >> 5) & 15)}-${pad(date & 31)}T${pad(time >> 11)}:${pad((time >> 5) & 63)}:${pad((time & 31) * 2)}`;
}

const damaged = (reader: RangeReader, why: string) => integrity(`${reader.path}: ${why}`);
