/**
 * How catalog answers and uploads travel between a client and `strata serve`.
 * Small things go as JSON (binary fields in hex or base64); block lists and
 * versions, which can hold a hundred thousand blocks, go as flat binary. Every
 * decoder checks lengths and ranges: a hostile peer gets an error, never a
 * misread.
 */
import { BlockList, ID_BYTES } from './blocklist.js';
import type { Piece } from './resolve.js';
import { StrataError } from '../errors.js';
import { BLOB_KINDS, GONE, type BlobKind, type SnapshotRow, type TocRow } from './catalog.js';
import type { PackEntry } from './packs.js';
import type { VersionUpload } from './service.js';

export class WireError extends StrataError {
  constructor(message: string) {
    super('bad_request', message);
  }
}

export const isCount = (n: unknown): n is number => Number.isSafeInteger(n) && (n as number) >= 0;
const HEX_ID = /^[0-9a-f]{64}$/;

export function hexId(s: unknown, what: string): Buffer {
  if (typeof s !== 'string' || !HEX_ID.test(s)) throw new WireError(`${what} must be 64 hex digits`);
  return Buffer.from(s, 'hex');
}

export function base64(s: unknown, what: string, max = 1 << 20): Buffer {
  if (typeof s !== 'string' || s.length > max || !/^[A-Za-z0-9+/]*={0,2}$/.test(s)) throw new WireError(`${what} must be base64`);
  return Buffer.from(s, 'base64');
}

export function count(n: unknown, what: string): number {
  if (!isCount(n)) throw new WireError(`${what} must be a whole number`);
  return n;
}

// --- codecs

/**
 * How one body of the protocol travels, written once for both ends: the
 * sending end encodes a `Sent`, the receiving end decodes a `T` (checking
 * everything; `where` names the peer in the errors of what it sent). A JSON
 * body is encoded to a value for JSON.stringify and decoded from the parsed
 * value; a binary body to and from bytes; `none` is no body at all.
 */
export interface Codec<T, Sent = T> {
  readonly type: 'json' | 'binary' | 'none';
  encode(value: Sent): unknown;
  decode(body: unknown, where: string): T;
}

export function jsonCodec<T, Sent = T>(encode: (value: Sent) => unknown, decode: (json: unknown, where: string) => T): Codec<T, Sent> {
  return { type: 'json', encode, decode };
}

export function binaryCodec<T, Sent = T>(encode: (value: Sent) => Buffer, decode: (body: Buffer, where: string) => T): Codec<T, Sent> {
  return { type: 'binary', encode, decode: (body, where) => decode(body as Buffer, where) };
}

/** No body: a request that says all in its path, an answer that is its status (204). */
export const NO_BODY: Codec<void> = {
  type: 'none',
  encode: () => undefined,
  decode: () => undefined,
};

// --- snapshots

export interface SnapshotJson {
  seq: number;
  id: string;
  time: number;
  lineage: string;
  meta: string;
  root: string | null;
  parent: number | null;
}

export function snapshotToJson(r: SnapshotRow): SnapshotJson {
  return { seq: r.seq, id: r.id, time: r.time, lineage: r.lineage.toString('base64'), meta: r.meta.toString('base64'), root: r.root ? r.root.toString('hex') : null, parent: r.parent };
}

export function snapshotFromJson(j: unknown): SnapshotRow {
  const o = j as Partial<SnapshotJson>;
  if (typeof o !== 'object' || o === null || typeof o.id !== 'string' || !HEX_ID.test(o.id)) throw new WireError('malformed snapshot');
  return {
    seq: count(o.seq, 'seq'),
    id: o.id,
    time: count(o.time, 'time'),
    lineage: base64(o.lineage, 'lineage'),
    meta: base64(o.meta, 'meta'),
    root: o.root === null || o.root === undefined ? null : hexId(o.root, 'root'),
    parent: o.parent === null || o.parent === undefined ? null : count(o.parent, 'parent'),
  };
}

// --- TOC rows and pieces

export type TocRowJson = Omit<TocRow, 'block'> & { block: string | null };

export function rowToJson(r: TocRow): TocRowJson {
  return { ...r, block: r.block ? r.block.toString('hex') : null };
}

export function rowFromJson(j: unknown): TocRow {
  const o = j as Partial<TocRowJson>;
  if (typeof o !== 'object' || o === null) throw new WireError('malformed TOC row');
  const opt = (n: unknown, what: string) => (n === null ? null : count(n, what));
  return {
    start: count(o.start, 'start'),
    end: count(o.end, 'end'),
    block: o.block === null ? null : hexId(o.block, 'block'),
    target: opt(o.target, 'target'),
    target_start: opt(o.target_start, 'target_start'),
    root: opt(o.root, 'root'),
    root_start: opt(o.root_start, 'root_start'),
    depth: count(o.depth, 'depth'),
  };
}

/** Pieces as rows of numbers: [blockHex, blockSize, from, length, at]. */
export type PieceJson = [string, number, number, number, number];

export function pieceToJson(p: Piece): PieceJson {
  return [p.block.toString('hex'), p.blockSize, p.from, p.length, p.at];
}

export function pieceFromJson(j: unknown): Piece {
  if (!Array.isArray(j) || j.length !== 5) throw new WireError('malformed piece');
  const [block, blockSize, from, length, at] = j as unknown[];
  const p = { block: hexId(block, 'block'), blockSize: count(blockSize, 'blockSize'), from: count(from, 'from'), length: count(length, 'length'), at: count(at, 'at') };
  if (p.length === 0 || p.from + p.length > p.blockSize) throw new WireError('a piece reaches past its block');
  return p;
}

// --- pack indexes

export type PackEntryJson = [string, BlobKind, number, number, number];

export function packEntriesToJson(entries: readonly PackEntry[]): PackEntryJson[] {
  return entries.map((e) => [e.id.toString('hex'), e.kind, e.offset, e.length, e.size]);
}

/** A pack index's entries as sent: ids, known kinds, whole numbers (where they lie is checkPackLayout's). */
export function packEntriesFromJson(j: unknown): PackEntry[] {
  if (!Array.isArray(j) || j.length === 0) throw new WireError('a pack index lists its blobs');
  return j.map((x: unknown) => {
    if (!Array.isArray(x) || x.length !== 5) throw new WireError('malformed pack entry');
    const [id, kind, offset, length, size] = x as unknown[];
    if (typeof kind !== 'string' || !BLOB_KINDS.includes(kind as BlobKind)) throw new WireError('unknown blob kind');
    return { id: hexId(id, 'blob id'), kind: kind as BlobKind, offset: count(offset, 'offset'), length: count(length, 'length'), size: count(size, 'size') };
  });
}

/** Entries of a pack of `packSize` bytes: inside it, after its magic, not overlapping. */
export function checkPackLayout(entries: readonly PackEntry[], packSize: number, magic: number): void {
  const sorted = [...entries].sort((a, b) => a.offset - b.offset);
  let end = magic;
  for (const e of sorted) {
    if (e.offset < end || e.length === 0 || e.offset + e.length > packSize) throw new WireError('pack entries overlap or lie outside the pack');
    end = e.offset + e.length;
  }
}

// --- binary: ids, block lists and versions

/** How long one POST /v1/maintenance may wait for another maintenance to end; a client waiting longer asks again. */
export const MAX_LOCK_WAIT_MS = 10_000;

/** Blocks one POST /v1/blocks/read may ask for. */
export const BLOCKS_PER_READ = 64;

/** One answer of POST /v1/blocks/where: pack name (32 bytes), offset, length, pack size (f64le each). */
export const CLAIM_BYTES = 56;

/** Concatenated 32-byte ids. */
export function encodeIds(ids: readonly Uint8Array[]): Buffer {
  const out = Buffer.allocUnsafe(ids.length * ID_BYTES);
  ids.forEach((id, i) => out.set(id.subarray(0, ID_BYTES), i * ID_BYTES));
  return out;
}

export function decodeIds(buf: Buffer): Buffer[] {
  if (buf.length % ID_BYTES !== 0) throw new WireError('ids must be 32 bytes each');
  const ids: Buffer[] = [];
  for (let at = 0; at < buf.length; at += ID_BYTES) ids.push(Buffer.from(buf.subarray(at, at + ID_BYTES)));
  return ids;
}

class Writer {
  private parts: Buffer[] = [];
  private cur = Buffer.allocUnsafe(64 * 1024);
  private at = 0;

  private room(n: number): void {
    if (this.at + n <= this.cur.length) return;
    this.parts.push(this.cur.subarray(0, this.at));
    this.cur = Buffer.allocUnsafe(Math.max(64 * 1024, n));
    this.at = 0;
  }
  u8(n: number): void {
    this.room(1);
    this.cur[this.at++] = n;
  }
  u32(n: number): void {
    this.room(4);
    this.cur.writeUInt32LE(n, this.at);
    this.at += 4;
  }
  f64(n: number): void {
    this.room(8);
    this.cur.writeDoubleLE(n, this.at);
    this.at += 8;
  }
  bytes(b: Uint8Array): void {
    this.room(b.length);
    this.cur.set(b, this.at);
    this.at += b.length;
  }
  done(): Buffer {
    return Buffer.concat([...this.parts, this.cur.subarray(0, this.at)]);
  }
}

class Reader {
  at = 0;
  constructor(private readonly buf: Buffer) {}
  private need(n: number): void {
    if (this.at + n > this.buf.length) throw new WireError('the body ends early');
  }
  u8(): number {
    this.need(1);
    return this.buf[this.at++]!;
  }
  u32(): number {
    this.need(4);
    const n = this.buf.readUInt32LE(this.at);
    this.at += 4;
    return n;
  }
  f64(): number {
    this.need(8);
    const n = this.buf.readDoubleLE(this.at);
    this.at += 8;
    if (!isCount(n)) throw new WireError('a size is not a whole number');
    return n;
  }
  bytes(n: number): Buffer {
    this.need(n);
    const b = this.buf.subarray(this.at, this.at + n);
    this.at += n;
    return b;
  }
  get done(): boolean {
    return this.at === this.buf.length;
  }
}

function writeBlocks(w: Writer, list: BlockList): void {
  w.u32(list.length);
  for (let i = 0; i < list.length; i++) {
    const id = list.id(i);
    w.u8(id ? 1 : 0);
    w.u32(list.end(i) - list.start(i) + 1);
    if (id) w.bytes(id);
  }
}

function readBlocks(r: Reader): BlockList {
  const n = r.u32();
  const list = new BlockList(Math.max(1, Math.min(n, 1 << 20)));
  for (let i = 0; i < n; i++) {
    const known = r.u8();
    const length = r.u32();
    if (length === 0 || known > 1) throw new WireError('malformed block');
    list.push(known ? r.bytes(ID_BYTES) : null, length);
  }
  return list;
}

/** [count][known u8, length u32, id?]... */
export function encodeBlockList(list: BlockList): Buffer {
  const w = new Writer();
  writeBlocks(w, list);
  return w.done();
}

export function decodeBlockList(buf: Buffer): BlockList {
  const r = new Reader(buf);
  const list = readBlocks(r);
  if (!r.done) throw new WireError('bytes after the block list');
  return list;
}

const HAS_TOC = 1;
const HAS_BLOCKS = 2;
/** A tombstone (size GONE, sent as 0): the path is not in the snapshot. */
const IS_GONE = 4;

/** Per version: flags u8, path 32, size f64, toc 32?, segments u32 + 32 each, blocks? */
export function encodeVersions(list: readonly VersionUpload[]): Buffer {
  const w = new Writer();
  w.u32(list.length);
  for (const v of list) {
    w.u8((v.toc ? HAS_TOC : 0) | (v.blocks ? HAS_BLOCKS : 0) | (v.size === GONE ? IS_GONE : 0));
    w.bytes(v.path);
    w.f64(v.size === GONE ? 0 : v.size);
    if (v.toc) w.bytes(v.toc);
    w.u32(v.segments.length);
    for (const s of v.segments) w.bytes(s);
    if (v.blocks) writeBlocks(w, v.blocks);
  }
  return w.done();
}

export function decodeVersions(buf: Buffer): VersionUpload[] {
  const r = new Reader(buf);
  const n = r.u32();
  const out: VersionUpload[] = [];
  for (let i = 0; i < n; i++) {
    const flags = r.u8();
    if (flags > (HAS_TOC | HAS_BLOCKS | IS_GONE) || (flags & IS_GONE && flags !== IS_GONE)) throw new WireError('malformed version');
    const path = Buffer.from(r.bytes(ID_BYTES));
    const size = flags & IS_GONE ? (r.f64(), GONE) : r.f64();
    const toc = flags & HAS_TOC ? Buffer.from(r.bytes(ID_BYTES)) : null;
    const segments: Buffer[] = [];
    const ns = r.u32();
    for (let s = 0; s < ns; s++) segments.push(Buffer.from(r.bytes(ID_BYTES)));
    const blocks = flags & HAS_BLOCKS ? readBlocks(r) : undefined;
    for (let k = 0; blocks && k < blocks.length; k++) if (!blocks.hasId(k)) throw new WireError('every block of an uploaded version needs its id');
    out.push({ path, size, toc, segments, ...(blocks ? { blocks } : {}) });
  }
  if (!r.done) throw new WireError('bytes after the versions');
  return out;
}
