/**
 * Item indexes: for the formats that carry none of their own (mbox
 * mailboxes, tar archives), where each item of a file's version begins and
 * what it is, made at backup and sealed in the repository beside the
 * version, so that a reader finds one message or entry by fetching the
 * index and the blocks that hold it, never the whole file. docs/FORMAT.md
 * ("Item indexes") describes the blobs.
 *
 * An index is a root (the file's path, size and content mark, and its
 * segments), segments of up to SEGMENT_ITEMS items in file order, and one
 * blob of Bloom filters, one per segment, over what an item is looked up
 * by (a Message-ID, an entry's name). Each is sealed as a tree is (kind
 * `tree`, its id keyed), and the snapshot's manifest names the root, so an
 * index is authenticated and bound to the version it was made from: a
 * damaged one is an integrity error, and its root's path and size must be
 * the file's. Readers check each item's first bytes too (dataset.ts).
 *
 * A later version reuses the segments of its parent's index that end
 * before its first changed block (a mailbox grows at its end), when the
 * parent's index was made from exactly the parent's blocks (its content
 * mark says so); only the rest is scanned.
 */
import { createHash } from 'node:crypto';
import { integrity } from '../errors.js';
import { MboxScanner, plainTarName, TarScanner, type MboxMessage, type TarEntry } from './item-scan.js';

export type IndexedType = 'mbox' | 'tar';
export const INDEXED_TYPES: readonly IndexedType[] = ['mbox', 'tar'];

/** Items a segment holds at most, and its JSON bytes at most (a message's headers can be long). */
export const SEGMENT_ITEMS = 1024;
const SEGMENT_BYTES = 256 * 1024;
/** Bloom filters: bits per item and probes (under 1% false positives). */
const FILTER_BITS = 10;
const FILTER_PROBES = 7;
/** What the backup reads of a file at once to scan it. */
const SCAN_PIECE = 1024 * 1024;

/** Where blobs of an index go and come from: sealed and opened with the repository's key. */
export interface IndexStore {
  read(id: Buffer): Promise<Buffer>;
  write(plain: Buffer): Promise<Buffer>;
}

interface Root {
  strata: 'item-index';
  v: 1;
  type: IndexedType;
  path: string;
  size: number;
  /** contentMark of the version's blocks (catalog/blocklist.ts). */
  mark: string;
  count: number;
  /** False when a later version may not resume a scan at a segment's end (a tar with a pax global header). */
  resume: boolean;
  /** Hex id of the filters blob (absent when there are no items). */
  filters?: string;
  /** [id, first item number, items, start offset, end offset]; a segment's items lie in [start, end). */
  segments: [string, number, number, number, number][];
}

interface Filters {
  strata: 'item-index-filters';
  /** Base64, one per segment. */
  filters: string[];
}

type Row = MboxMessage | TarEntry;

export interface BuiltIndex {
  /** The root's id, which the manifest names. */
  root: Buffer;
  count: number;
  /** Every blob of the index (root, filters, segments), for the snapshot's list of what it uses. */
  blobs: Buffer[];
  /** Bytes scanned (the rest was the parent index's). */
  scanned: number;
}

/**
 * Scans a stored file's version (`read`: its bytes, as stored) and seals
 * its index. With `parent` (the parent version's index, its content mark
 * as the catalog's block list gives it, and the first byte of this version
 * that differs), the parent's segments before that byte are reused.
 */
export async function buildItemIndex(o: {
  type: IndexedType;
  path: string;
  size: number;
  mark: string;
  read: (position: number, length: number) => Buffer;
  store: IndexStore;
  parent?: { root: Buffer; mark: string; firstChange: number };
}): Promise<BuiltIndex> {
  const segments: Root['segments'] = [];
  const filters: string[] = [];
  const blobs: Buffer[] = [];
  let at = 0;
  let number = 0;
  const reused = o.parent ? await reusable(o, o.parent) : undefined;
  if (reused) {
    segments.push(...reused.segments);
    filters.push(...reused.filters);
    blobs.push(...reused.segments.map((s) => Buffer.from(s[0], 'hex')));
    const last = reused.segments[reused.segments.length - 1];
    if (last) {
      at = last[4];
      number = last[1] + last[2] - 1;
    }
  }
  let pending: Row[] = [];
  let pendingBytes = 0;
  let resume = true;
  const flush = async (end: number) => {
    if (pending.length === 0) return;
    const first = number - pending.length + 1;
    const plain = Buffer.from(JSON.stringify({ strata: 'item-index-segment', type: o.type, first, items: pending.map((r) => encodeRow(o.type, r)) }));
    const id = await o.store.write(plain);
    blobs.push(id);
    segments.push([id.toString('hex'), first, pending.length, pending[0]!.offset, end]);
    filters.push(bloom(pending.map((r) => keyOf(o.type, r))).toString('base64'));
    pending = [];
    pendingBytes = 0;
  };
  const add = async (r: Row, end: number) => {
    number++;
    pending.push(r);
    pendingBytes += 64 + JSON.stringify(encodeRow(o.type, r)).length;
    if (pending.length >= SEGMENT_ITEMS || pendingBytes >= SEGMENT_BYTES) await flush(end);
  };
  const scanFrom = at;
  if (o.type === 'mbox') {
    const scan = new MboxScanner(at, number);
    for (let pos = at; pos < o.size; pos += SCAN_PIECE) for (const m of scan.push(o.read(pos, Math.min(SCAN_PIECE, o.size - pos)))) await add(m, m.offset + m.size);
    const last = scan.end();
    if (last) await add(last, last.offset + last.size);
    await flush(o.size);
  } else {
    const scan = new TarScanner(o.path, at);
    for (let pos = at; pos < o.size && !scan.ended; pos += SCAN_PIECE) {
      for (const e of scan.push(o.read(pos, Math.min(SCAN_PIECE, o.size - pos)))) await add(e, e.dataOffset + Math.ceil(e.size / 512) * 512);
    }
    // Entries are whole at their header; the last segment ends where the next header would begin.
    await flush(pending.length > 0 ? lastEnd(pending) : at);
    resume = !scan.walk.sawGlobal;
  }
  const count = segments.reduce((n, s) => n + s[2], 0);
  let filtersId: string | undefined;
  if (segments.length > 0) {
    const f = await o.store.write(Buffer.from(JSON.stringify({ strata: 'item-index-filters', filters } satisfies Filters)));
    blobs.push(f);
    filtersId = f.toString('hex');
  }
  const root: Root = { strata: 'item-index', v: 1, type: o.type, path: o.path, size: o.size, mark: o.mark, count, resume: resume && (reused?.resume ?? true), ...(filtersId ? { filters: filtersId } : {}), segments };
  const rootId = await o.store.write(Buffer.from(JSON.stringify(root)));
  return { root: rootId, count, blobs: [rootId, ...blobs], scanned: o.size - scanFrom };
}

/**
 * An index sealed in another repository, sealed again through `store` for a
 * copy of its version (strata copy): the items and their offsets are the
 * file's, not the repository's, so only the blobs' ids and the content mark
 * (`mark`, of this repository's blocks of the file) change. Each blob is
 * decoded on the way: a damaged one is an integrity error, never copied.
 */
export async function resealItemIndex(read: (id: Buffer) => Promise<Buffer>, rootId: string, file: { path: string; size: number; mark: string }, store: IndexStore): Promise<BuiltIndex> {
  const root = decodeRoot(await read(Buffer.from(rootId, 'hex')), rootId);
  if (root.path !== file.path || root.size !== file.size) throw integrity(`${file.path}: its item index is of another version (${root.path}, ${root.size} bytes)`, { path: file.path });
  const blobs: Buffer[] = [];
  const segments: Root['segments'] = [];
  for (const [id, first, count, start, end] of root.segments) {
    const plain = await read(Buffer.from(id, 'hex'));
    decodeSegment(plain, id, root.type, first, count, start, end);
    const copied = await store.write(plain);
    blobs.push(copied);
    segments.push([copied.toString('hex'), first, count, start, end]);
  }
  let filters: string | undefined;
  if (root.filters) {
    const plain = await read(Buffer.from(root.filters, 'hex'));
    decodeFilters(plain, root.segments.length);
    const copied = await store.write(plain);
    blobs.push(copied);
    filters = copied.toString('hex');
  }
  const { filters: _f, ...rest } = root;
  const rootCopy = await store.write(Buffer.from(JSON.stringify({ ...rest, mark: file.mark, ...(filters ? { filters } : {}), segments } satisfies Root)));
  return { root: rootCopy, count: root.count, blobs: [rootCopy, ...blobs], scanned: 0 };
}

function lastEnd(rows: Row[]): number {
  const e = rows[rows.length - 1] as TarEntry;
  return e.dataOffset + Math.ceil(e.size / 512) * 512;
}

/** The parent's segments that end before the first change (and the bytes a scan resumes on with them), when its index is of exactly the parent's blocks. */
async function reusable(o: { type: IndexedType; path: string; store: IndexStore }, parent: { root: Buffer; mark: string; firstChange: number }) {
  const root = decodeRoot(await o.store.read(parent.root), parent.root.toString('hex'));
  if (root.type !== o.type || root.path !== o.path || root.mark !== parent.mark || !root.resume) return undefined;
  // An mbox message ends where the next "From " begins; a tar entry where the next header does: those bytes must be unchanged too.
  const guard = o.type === 'mbox' ? 5 : 512;
  let keep = 0;
  while (keep < root.segments.length && root.segments[keep]![4] + guard <= parent.firstChange) keep++;
  if (keep === 0) return { segments: [], filters: [], resume: root.resume };
  const f = decodeFilters(await o.store.read(Buffer.from(root.filters!, 'hex')), root.segments.length);
  return { segments: root.segments.slice(0, keep), filters: f.filters.slice(0, keep), resume: root.resume };
}

/** Every blob of the index whose root is `root` (hex). */
export async function itemIndexBlobs(read: (id: Buffer) => Promise<Buffer>, root: string): Promise<Buffer[]> {
  const r = decodeRoot(await read(Buffer.from(root, 'hex')), root);
  return [Buffer.from(root, 'hex'), ...(r.filters ? [Buffer.from(r.filters, 'hex')] : []), ...r.segments.map((s) => Buffer.from(s[0], 'hex'))];
}

/**
 * A sealed item index, read: its root at once, its segments and filters
 * when asked for. `fetched` counts the bytes of the blobs it read.
 */
export class ItemIndex {
  fetched = 0;
  private filters?: Buffer[];
  private readonly rows = new Map<number, Row[]>();

  private constructor(
    private readonly read: (id: Buffer) => Promise<Buffer>,
    private readonly root: Root,
    /** What the file is, for a person, as the manifest says ("mbox mailbox"). */
    readonly what: string,
  ) {}

  /** The index whose root is `rootId` (hex), checked against the file it is said to be of. */
  static async open(read: (id: Buffer) => Promise<Buffer>, rootId: string, file: { path: string; size: number; type: IndexedType; what: string }): Promise<ItemIndex> {
    const plain = await read(Buffer.from(rootId, 'hex'));
    const root = decodeRoot(plain, rootId);
    if (root.path !== file.path || root.size !== file.size || root.type !== file.type) {
      throw integrity(`${file.path}: its item index is of another version (${root.path}, ${root.size} bytes, ${root.type})`, { path: file.path });
    }
    const ix = new ItemIndex(read, root, file.what);
    ix.fetched += plain.length;
    return ix;
  }

  get type(): IndexedType {
    return this.root.type;
  }

  get count(): number {
    return this.root.count;
  }

  /** Every item, in file order. */
  async *all(): AsyncGenerator<Row> {
    for (let i = 0; i < this.root.segments.length; i++) yield* await this.segment(i);
  }

  /** Message `n` (1 for the first), or undefined. */
  async message(n: number): Promise<MboxMessage | undefined> {
    const segs = this.root.segments;
    let lo = 0;
    let hi = segs.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const s = segs[mid]!;
      if (n < s[1]) hi = mid - 1;
      else if (n >= s[1] + s[2]) lo = mid + 1;
      else return (await this.segment(mid))[n - s[1]] as MboxMessage;
    }
    return undefined;
  }

  /** The first message with this Message-ID. */
  async messageById(id: string): Promise<MboxMessage | undefined> {
    for (const i of await this.candidates(id)) {
      const m = (await this.segment(i)).find((r) => (r as MboxMessage).messageId === id);
      if (m) return m as MboxMessage;
    }
    return undefined;
  }

  /** The last entry with this name (a leading "./" or "/" aside), as tar extracts. */
  async tarEntry(name: string): Promise<TarEntry | undefined> {
    const want = plainTarName(name);
    for (const i of (await this.candidates(want)).reverse()) {
      const rows = (await this.segment(i)) as TarEntry[];
      for (let j = rows.length - 1; j >= 0; j--) if (plainTarName(rows[j]!.name) === want) return rows[j];
    }
    return undefined;
  }

  /** Segments whose filter may hold `key`, in order. */
  private async candidates(key: string): Promise<number[]> {
    if (!this.filters) {
      if (!this.root.filters) return [];
      const plain = await this.read(Buffer.from(this.root.filters, 'hex'));
      this.fetched += plain.length;
      this.filters = decodeFilters(plain, this.root.segments.length).filters.map((f) => Buffer.from(f, 'base64'));
    }
    const probe = probes(key);
    const out: number[] = [];
    this.filters.forEach((f, i) => {
      if (mayHold(f, probe)) out.push(i);
    });
    return out;
  }

  private async segment(i: number): Promise<Row[]> {
    const have = this.rows.get(i);
    if (have) return have;
    const [id, first, count, start, end] = this.root.segments[i]!;
    const plain = await this.read(Buffer.from(id, 'hex'));
    this.fetched += plain.length;
    const rows = decodeSegment(plain, id, this.root.type, first, count, start, end);
    this.rows.set(i, rows);
    return rows;
  }
}

function encodeRow(type: IndexedType, r: Row): unknown[] {
  if (type === 'mbox') {
    const m = r as MboxMessage;
    return [m.offset, m.size, m.date ?? null, m.from ?? null, m.subject ?? null, m.messageId ?? null];
  }
  const e = r as TarEntry;
  return [e.name, e.type, e.size, e.mtime, e.offset, e.dataOffset, e.linkname ?? null];
}

function keyOf(type: IndexedType, r: Row): string | undefined {
  return type === 'mbox' ? (r as MboxMessage).messageId : plainTarName((r as TarEntry).name);
}

const bad = (what: string, id: string) => integrity(`item index ${what} ${id.slice(0, 16)} is not one strata wrote`);
const isCount = (n: unknown): n is number => Number.isSafeInteger(n) && (n as number) >= 0;
const opt = (v: unknown): v is string | null => v === null || typeof v === 'string';
const TAR_TYPES = new Set(['file', 'dir', 'symlink', 'hardlink', 'other']);

function parse(plain: Buffer, what: string, id: string): Record<string, unknown> {
  try {
    const v = JSON.parse(plain.toString('utf8')) as unknown;
    if (typeof v === 'object' && v !== null && !Array.isArray(v)) return v as Record<string, unknown>;
  } catch {
    // below
  }
  throw bad(what, id);
}

function decodeRoot(plain: Buffer, id: string): Root {
  const r = parse(plain, 'root', id);
  const segs = r.segments;
  const ok =
    r.strata === 'item-index' &&
    r.v === 1 &&
    (r.type === 'mbox' || r.type === 'tar') &&
    typeof r.path === 'string' &&
    isCount(r.size) &&
    typeof r.mark === 'string' &&
    isCount(r.count) &&
    typeof r.resume === 'boolean' &&
    (r.filters === undefined || (typeof r.filters === 'string' && /^[0-9a-f]{64}$/.test(r.filters))) &&
    Array.isArray(segs) &&
    (segs.length === 0 || r.filters !== undefined);
  if (!ok) throw bad('root', id);
  let next = 1;
  let end = 0;
  for (const s of segs as unknown[]) {
    if (!Array.isArray(s) || s.length !== 5 || typeof s[0] !== 'string' || !/^[0-9a-f]{64}$/.test(s[0])) throw bad('root', id);
    const [, first, count, start, stop] = s as unknown[];
    if (first !== next || !isCount(count) || count === 0 || !isCount(start) || !isCount(stop) || start < end || stop < start || stop > (r.size as number)) throw bad('root', id);
    next += count;
    end = stop;
  }
  if (next - 1 !== r.count) throw bad('root', id);
  return r as unknown as Root;
}

function decodeFilters(plain: Buffer, segments: number): Filters {
  const f = parse(plain, 'filters', '');
  if (f.strata !== 'item-index-filters' || !Array.isArray(f.filters) || f.filters.length !== segments || !f.filters.every((x) => typeof x === 'string')) throw bad('filters', '');
  return f as unknown as Filters;
}

function decodeSegment(plain: Buffer, id: string, type: IndexedType, first: number, count: number, start: number, end: number): Row[] {
  const s = parse(plain, 'segment', id);
  if (s.strata !== 'item-index-segment' || s.type !== type || s.first !== first || !Array.isArray(s.items) || s.items.length !== count) throw bad('segment', id);
  return (s.items as unknown[]).map((row, i) => {
    if (!Array.isArray(row)) throw bad('segment', id);
    if (type === 'mbox') {
      const [offset, size, date, from, subject, messageId] = row as unknown[];
      if (!isCount(offset) || !isCount(size) || offset < start || offset + size > end || !opt(date) || !opt(from) || !opt(subject) || !opt(messageId)) throw bad('segment', id);
      const m: MboxMessage = { number: first + i, offset, size };
      if (date !== null) m.date = date;
      if (from !== null) m.from = from;
      if (subject !== null) m.subject = subject;
      if (messageId !== null) m.messageId = messageId;
      return m;
    }
    const [name, t, size, mtime, offset, dataOffset, linkname] = row as unknown[];
    if (typeof name !== 'string' || typeof t !== 'string' || !TAR_TYPES.has(t) || !isCount(size) || typeof mtime !== 'number' || !isCount(offset) || dataOffset !== (offset as number) + 512 || offset < start || !opt(linkname)) throw bad('segment', id);
    const e: TarEntry = { name, type: t as TarEntry['type'], size, mtime, offset, dataOffset: dataOffset as number };
    if (linkname !== null) e.linkname = linkname;
    return e;
  });
}

/** Bloom filter probes of a key: double hashing of its SHA-256. */
function probes(key: string): [number, number] {
  const h = createHash('sha256').update(key, 'utf8').digest();
  return [h.readUInt32BE(0), (h.readUInt32BE(4) | 1) >>> 0];
}

function bloom(keys: (string | undefined)[]): Buffer {
  const bits = Math.max(64, keys.length * FILTER_BITS);
  const f = Buffer.alloc(Math.ceil(bits / 8));
  for (const k of keys) {
    if (k === undefined) continue;
    const [a, b] = probes(k);
    for (let i = 0; i < FILTER_PROBES; i++) {
      const bit = (a + i * b) % (f.length * 8);
      f[bit >> 3]! |= 1 << (bit & 7);
    }
  }
  return f;
}

function mayHold(f: Buffer, [a, b]: [number, number]): boolean {
  if (f.length === 0) return false;
  for (let i = 0; i < FILTER_PROBES; i++) {
    const bit = (a + i * b) % (f.length * 8);
    if (!(f[bit >> 3]! & (1 << (bit & 7)))) return false;
  }
  return true;
}
