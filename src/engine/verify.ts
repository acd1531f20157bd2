/**
 * Reads checked against the sealed truth. The catalog (a local SQLite file,
 * or a server's answers) is an index nobody authenticates: a changed row
 * would make a read return other bytes. The sealed TOCs in the packs hold
 * what each version is, authenticated with the key (they are blobs: their id
 * is a keyed hash of what they say, and each names its snapshot, path and
 * size). So before a byte goes out, the pieces the catalog gives for a range
 * are compared with the same range resolved through the sealed TOCs alone:
 * data entries name blocks, ref entries name the same path in an older
 * snapshot, followed down their chain. Shortcuts, split rows and rewritten
 * rows all give the same pieces when they are right, and a mismatch of any
 * kind is an integrity error that names the file.
 *
 * The catalog still says where to look: which sealed TOC is a snapshot's
 * version of a path. Every answer is checked: the sealed TOC must name that
 * snapshot and path, or the snapshot must have inherited the file, which its
 * authenticated tree shows (the same size, times and inode as the tree of
 * the snapshot the sealed TOC names: the rule by which a backup did not read
 * it again). Snapshots a forget without the key removed are found through
 * the sealed records and TOCs prune keeps for them until a forget or prune
 * with the key reseals (FORMAT.md §12).
 *
 * Everything verified is kept for the life of the repository object, so a
 * chain is followed once per process however many ranges are read.
 */
import { integrity, StrataError } from '../errors.js';
import { BlockList, contentMark } from '../catalog/blocklist.js';
import type { SnapshotRow, TocRow, VersionRow } from '../catalog/catalog.js';
import type { Repository } from '../repo/repository.js';
import type { VersionRecord } from '../catalog/service.js';
import type { Piece } from '../catalog/resolve.js';
import { Snapshot, type SnapshotRecord, metaAad } from './snapshot.js';
import type { TreeEntry } from './tree.js';
import { entryAt, sealedTocSegment, type SealedEntry, type SealedRef, type SealedToc } from './versions.js';

/** What a version is, as its sealed TOC says. */
export interface Truth {
  /** The sealed TOC's id (none for an empty file stored without one). */
  id?: Buffer;
  /** The snapshot the sealed TOC names; null for an empty file stored without one. */
  owner: string | null;
  size: number;
  /** Ordered entries covering 0 … size-1 exactly. */
  entries: SealedEntries;
}

/** Segments of one sealed TOC kept opened: 64 of 128 entries are about 1.5 MiB of heap. */
const KEPT_SEGMENTS = 64;

/**
 * A sealed TOC's entries. A long TOC is sealed in segments (see
 * SEGMENT_ENTRIES): a read opens only the ones its range falls in, found by
 * the starts the TOC lists (or, in a TOC sealed without them, by a search).
 * Each segment is checked as it is opened: well formed, contiguous,
 * beginning where the TOC says, and continuing where its neighbour ends.
 */
export class SealedEntries {
  /** The segments opened last: a long read goes through them in order, and must not keep every one (a 4 GiB file has a thousand). */
  private readonly opened = new BoundedMap<number, Promise<SealedEntry[]>>(KEPT_SEGMENTS);
  private readonly segments: readonly string[];

  constructor(
    private readonly repo: Repository,
    private readonly head: SealedToc,
    private readonly hex: string,
  ) {
    this.segments = head.segments ?? [];
  }

  /** Segments kept opened now (at most KEPT_SEGMENTS). */
  get kept(): number {
    return this.opened.size;
  }

  /** How many pieces: its segments, or 1 for a TOC sealed whole. */
  get count(): number {
    return Math.max(1, this.segments.length);
  }

  /** Piece k's entries, checked. */
  piece(k: number): Promise<SealedEntry[]> {
    return once(this.opened, k, () => this.open(k));
  }

  private async open(k: number): Promise<SealedEntry[]> {
    const entries = this.segments.length === 0 ? this.head.entries : await sealedTocSegment(this.repo, this.head, k);
    const last = k === this.count - 1;
    if (entries.length === 0 && !(last && this.head.size === 0 && this.segments.length === 0)) throw integrity(`sealed TOC ${this.hex} has an empty piece`);
    let cursor = k === 0 ? 0 : entries[0]?.[0];
    if (this.head.starts && entries[0]?.[0] !== this.head.starts[k]) throw integrity(`sealed TOC ${this.hex}: segment ${k} does not begin where the TOC says`);
    for (const e of entries) {
      const ok = Array.isArray(e) && e[0] === cursor && Number.isSafeInteger(e[1]) && e[1] >= e[0] && typeof e[2] === 'string' && (e.length === 3 || wellFormedRef(e));
      if (!ok) throw integrity(`sealed TOC ${this.hex} has a malformed entry at ${cursor}`);
      cursor = e[1] + 1;
    }
    if (last && cursor !== this.head.size) throw integrity(`sealed TOC ${this.hex} covers ${cursor} bytes of ${this.head.size}`);
    if (!last && cursor! > this.head.size) throw integrity(`sealed TOC ${this.hex} covers more than its ${this.head.size} bytes`);
    return entries;
  }

  /** The piece after `k`, checked to begin where `k` ends. */
  async next(k: number, current: readonly SealedEntry[]): Promise<SealedEntry[] | undefined> {
    if (k + 1 >= this.count) return undefined;
    const next = await this.piece(k + 1);
    if (next[0]![0] !== current[current.length - 1]![1] + 1) throw integrity(`sealed TOC ${this.hex}: segment ${k + 1} does not continue segment ${k}`);
    return next;
  }

  /** The piece and index of the entry holding `offset` (pieces are opened by interpolation, then halving). */
  async locate(offset: number): Promise<{ piece: number; list: SealedEntry[]; i: number }> {
    let lo = 0;
    let hi = this.count - 1;
    const starts = this.head.starts;
    // The segment whose start is the last at or before `offset`, where the TOC gives the starts; else a guess by proportion.
    let k = starts ? Math.max(0, upperBound(starts, offset) - 1) : Math.min(hi, Math.floor((offset / Math.max(1, this.head.size)) * this.count));
    for (;;) {
      const list = await this.piece(k);
      if (list.length > 0 && offset < list[0]![0]) hi = k - 1;
      else if (list.length > 0 && offset > list[list.length - 1]![1]) lo = k + 1;
      else return { piece: k, list, i: entryAt(list, offset) };
      if (lo > hi) throw integrity(`sealed TOC ${this.hex} has no entry at ${offset}`);
      k = (lo + hi) >> 1;
    }
  }

  /** Every entry, in order. */
  async all(): Promise<SealedEntry[]> {
    const out: SealedEntry[] = [];
    for (let k = 0; k < this.count; k++) {
      const list = await this.piece(k);
      if (k > 0 && list[0]![0] !== out[out.length - 1]![1] + 1) throw integrity(`sealed TOC ${this.hex}: segment ${k} does not continue segment ${k - 1}`);
      for (const e of list) out.push(e);
    }
    return out;
  }
}

/** A piece as the sealed TOCs give it, with the snapshot whose data entry it is (null: an empty file's). */
export interface SourcedPiece extends Piece {
  owner: string | null;
}

/** A version bound to a snapshot's file: what a read of it is checked against. */
export interface Binding {
  absPath: string;
  pathId: Buffer;
  truth: Truth;
}

/** A version row a read may use: bound to its file and checked (see storedVersion). */
export interface BoundVersion extends VersionRow {
  bound: Binding;
}

/**
 * The id of a version read from its tree entry alone (see entryVersion): a
 * file of one block, named by its entry, needs no catalog row to be read.
 */
export const IN_ENTRY = 0;

/**
 * A file whose tree entry names its one block (format 3), bound for reading
 * without the catalog: the entry, authenticated with its tree, is the file's
 * whole TOC. Only a read of its bytes may use it (its id is IN_ENTRY).
 */
export function entryVersion(snapshot: { id: string; row: { seq: number } }, absPath: string, entry: TreeEntry & { block: string }, repo: Repository): BoundVersion {
  const head: SealedToc = { snapshot: snapshot.id, path: '', size: entry.size, entries: [[0, entry.size - 1, entry.block]] };
  const truth: Truth = { owner: snapshot.id, size: entry.size, entries: new SealedEntries(repo, head, `in the tree entry of ${absPath}`) };
  // Its path id is made only if asked for: a read of one block follows no reference, and a restore of many small files would spend a keyed hash on each.
  const bound: Binding = {
    absPath,
    get pathId() {
      return repo.keyring.pathId(absPath);
    },
    truth,
  };
  return { id: IN_ENTRY, snapshot: snapshot.row.seq, size: entry.size, depth: 0, bound };
}

/** Hops a sealed chain may take: the same bound as the catalog's reads (a cycle cannot be sealed, but still). */
const MAX_HOPS = 10_000;

const verifiers = new WeakMap<Repository, Verifier>();

/**
 * Verified TOCs and versions kept at most: a restore of a million files
 * must not keep each one's (a chain's versions are reused while it is read).
 */
const CACHED = 4096;

/** The promise kept under `key`, made by `make` if there is none; one that fails is forgotten, so a later ask tries again. */
function once<K, V>(map: Map<K, Promise<V>>, key: K, make: () => Promise<V>): Promise<V> {
  let p = map.get(key);
  if (!p) {
    p = make();
    map.set(key, p);
    p.catch(() => map.delete(key));
  }
  return p;
}

/** A Map that forgets its oldest entries past `limit`. */
class BoundedMap<K, V> extends Map<K, V> {
  constructor(private readonly limit: number) {
    super();
  }

  override set(key: K, value: V): this {
    super.set(key, value);
    if (this.size > this.limit) this.delete(this.keys().next().value as K);
    return this;
  }
}

export function verifier(repo: Repository): Verifier {
  let v = verifiers.get(repo);
  if (!v) verifiers.set(repo, (v = new Verifier(repo)));
  return v;
}

/** The fields by which a backup decides a file is unchanged (see engine/backup.ts). */
export function sameFile(a: TreeEntry | undefined, b: TreeEntry | undefined): boolean {
  return a !== undefined && b !== undefined && a.type === 'file' && b.type === 'file' && a.size === b.size && a.mtimeNs === b.mtimeNs && a.ctimeNs === b.ctimeNs && a.ino === b.ino;
}

export class Verifier {
  private readonly tocs = new BoundedMap<string, Promise<Truth & { path: string }>>(CACHED);
  private readonly snapshots = new Map<string, Promise<Snapshot | undefined>>();
  private readonly versions = new BoundedMap<string, Promise<Truth>>(CACHED);
  private retained?: Promise<{ tocs: Map<string, Buffer>; records: Map<string, SnapshotRecord> }>;

  constructor(private readonly repo: Repository) {}

  /** A sealed TOC, opened, with its segments, checked to cover its size in order. */
  sealed(id: Buffer): Promise<Truth & { path: string }> {
    return once(this.tocs, id.toString('hex'), () => this.loadSealed(id));
  }

  private async loadSealed(id: Buffer): Promise<Truth & { path: string }> {
    const hex = id.toString('hex').slice(0, 16);
    let t: SealedToc;
    try {
      t = JSON.parse((await this.repo.readBlob(id, 'toc')).toString('utf8')) as SealedToc;
    } catch (e) {
      if (e instanceof StrataError) throw e;
      throw integrity(`sealed TOC ${hex} is not valid`);
    }
    if (typeof t?.snapshot !== 'string' || typeof t.path !== 'string' || !Number.isSafeInteger(t.size) || t.size < 0 || !Array.isArray(t.entries)) {
      throw integrity(`sealed TOC ${hex} is not valid`);
    }
    if (t.segments !== undefined && (!Array.isArray(t.segments) || t.segments.some((x) => typeof x !== 'string') || t.entries.length > 0)) throw integrity(`sealed TOC ${hex} is not valid`);
    if (t.starts !== undefined && !validStarts(t.starts, t.segments, t.size)) throw integrity(`sealed TOC ${hex} is not valid`);
    return { id, owner: t.snapshot, path: t.path, size: t.size, entries: new SealedEntries(this.repo, t, hex) };
  }

  /**
   * A snapshot by id, its root checked against its sealed metadata (see
   * Snapshot): from the catalog, else (one a forget without the key
   * removed) from the sealed record prune keeps for it.
   */
  snapshot(id: string): Promise<Snapshot | undefined> {
    let s = this.snapshots.get(id);
    if (!s) {
      s = this.findSnapshot(id);
      this.snapshots.set(id, s);
    }
    return s;
  }

  private async findSnapshot(id: string): Promise<Snapshot | undefined> {
    const row = (await this.repo.reader.snapshotsByPrefix(id)).find((r) => r.id === id);
    if (row) return new Snapshot(this.repo, row);
    const record = (await this.kept()).records.get(id);
    if (!record) return undefined;
    // Its metadata as the record says (sealed here: the record itself is authenticated).
    const { strata: _s, id: _i, ...meta } = record;
    const sealedRow: SnapshotRow = { seq: -1, id, time: Date.parse(record.time), lineage: Buffer.alloc(0), meta: this.repo.keyring.sealJson(meta, metaAad(id)), root: Buffer.from(record.root, 'hex'), parent: null };
    return new Snapshot(this.repo, sealedRow);
  }

  /** The sealed TOCs and records of snapshots a forget without the key removed (kept until resealed). */
  private kept(): Promise<{ tocs: Map<string, Buffer>; records: Map<string, SnapshotRecord> }> {
    this.retained ??= (async () => {
      const tocs = new Map<string, Buffer>();
      const records = new Map<string, SnapshotRecord>();
      const { tocs: tocIds, records: recordIds } = await this.repo.reader.retainedBlobs();
      for (const id of tocIds) {
        const t = await this.sealed(id).catch(() => undefined);
        if (t) tocs.set(`${t.owner}/${t.path}`, id);
      }
      for (const id of recordIds) {
        try {
          const r = JSON.parse((await this.repo.readBlob(id, 'snapshot')).toString('utf8')) as SnapshotRecord;
          if (r?.strata === 'snapshot' && typeof r.id === 'string' && typeof r.root === 'string' && typeof r.time === 'string') records.set(r.id, r);
        } catch {
          // An unreadable record: its snapshot cannot be followed, and a read through it says so.
        }
      }
      return { tocs, records };
    })();
    return this.retained;
  }

  /**
   * The truth of `v`, the catalog's version of `absPath` in `snapshot`:
   * checked to be that file's (see the module comment). `entry` is the
   * file's tree entry in the snapshot, when the caller has it.
   */
  async bind(snapshot: Snapshot, absPath: string, pathId: Buffer, v: VersionRow, entry?: TreeEntry): Promise<Binding> {
    const truth = await this.versionOf(snapshot, absPath, pathId, v, entry);
    if (truth.size !== v.size) throw integrity(`${absPath} in snapshot ${snapshot.id.slice(0, 8)}: the catalog says ${v.size} bytes, its sealed TOC ${truth.size}`, { path: absPath });
    if (entry && entry.size !== truth.size) throw integrity(`${absPath}: its tree entry says ${entry.size} bytes, its sealed TOC ${truth.size}`, { path: absPath });
    return { absPath, pathId, truth };
  }

  private versionOf(snapshot: Snapshot, absPath: string, pathId: Buffer, v: VersionRow, entry?: TreeEntry): Promise<Truth> {
    return once(this.versions, `${snapshot.id}/${pathId.toString('hex')}/${v.id}`, async () => {
      // A file of one block (format 3) has no sealed TOC: its tree entry names the block, and the catalog's record is not needed.
      if (entry?.type === 'file' && entry.block) return blockInEntry(this.repo, snapshot.id, pathId, entry.size, entry.block);
      const where = `${absPath} in snapshot ${snapshot.id.slice(0, 8)}`;
      const rec = await this.repo.reader.versionRecord(v.id);
      if (!rec || !rec.path.equals(pathId)) throw integrity(`${where}: the catalog's version ${v.id} is not this file's`, { path: absPath, version: v.id });
      const mine = entry ?? (rec.toc ? undefined : await snapshot.lookup(absPath));
      if (mine?.type === 'file' && mine.block) return blockInEntry(this.repo, snapshot.id, pathId, mine.size, mine.block);
      const truth = await this.content(rec, v.id, where);
      if (!truth.id || !this.remembered(snapshot.id, pathId)?.equals(truth.id)) {
        await this.owned(truth, snapshot, absPath, entry);
        this.remember(snapshot.id, pathId, truth);
      }
      return truth;
    });
  }

  /** A version record's truth: its sealed TOC, or for a version stored without one, the whole ref it is. */
  private async content(rec: VersionRecord, id: number, where: string): Promise<Truth> {
    const pathHex = rec.path.toString('hex');
    for (let hops = 0; hops < MAX_HOPS; hops++) {
      if (rec.toc) {
        const t = await this.sealed(rec.toc);
        if (t.path !== pathHex) throw integrity(`${where}: its sealed TOC belongs to another file`, { version: id });
        if (t.size !== rec.size) throw integrity(`${where}: the catalog says ${rec.size} bytes, its sealed TOC ${t.size}`, { version: id });
        return t;
      }
      if (rec.size === 0) return { owner: null, size: 0, entries: new SealedEntries(this.repo, { snapshot: '', path: '', size: 0, entries: [] }, 'of an empty file') };
      // Stored without a sealed TOC (unchanged since its parent: older strata, or a rebuilt catalog): one ref to an older version.
      const rows = await this.repo.reader.toc(id);
      const target = rows[0]?.target;
      const whole =
        rows.length > 0 &&
        target !== null &&
        target !== undefined &&
        target < id &&
        rows.every((r, i) => r.block === null && r.target === target && r.target_start === r.start && r.start === (i === 0 ? 0 : rows[i - 1]!.end + 1)) &&
        rows[rows.length - 1]!.end === rec.size - 1;
      if (!whole) throw integrity(`${where}: version ${id} has no sealed TOC and is not one reference to an older version`, { version: id });
      const next = await this.repo.reader.versionRecord(target);
      if (!next || !next.path.equals(rec.path) || next.size !== rec.size) throw integrity(`${where}: version ${id} refers to a version of another file`, { version: id });
      rec = next;
      id = target;
    }
    throw integrity(`${where}: reference chain deeper than ${MAX_HOPS}`);
  }

  /** Throws unless the snapshot holds the version its sealed TOC describes: its own, or inherited unchanged. */
  private async owned(truth: Truth, snapshot: Snapshot, absPath: string, entry?: TreeEntry): Promise<void> {
    if (truth.owner === null || truth.owner === snapshot.id) return;
    const where = `${absPath} in snapshot ${snapshot.id.slice(0, 8)}`;
    const owner = await this.snapshot(truth.owner);
    if (!owner) throw integrity(`${where}: the catalog gives it the version of snapshot ${truth.owner.slice(0, 8)}, which is not in the repository`, { path: absPath });
    const mine = entry ?? (await snapshot.lookup(absPath));
    // Its entry names this sealed TOC (format 3): written by the backup that stored or kept this version.
    if (mine?.toc && truth.id && mine.toc === truth.id.toString('hex') && mine.size === truth.size) return;
    // Read again at backup and found the same bytes (see TreeEntry.parentContent): its mark names the
    // content. Asked first, since it needs no tree of the owner (a tree unpacked anew has a new one each time).
    if (mine?.parentContent && mine.size === truth.size && (await this.contentMarkOf(truth, absPath)) === mine.parentContent) return;
    const theirs = await owner.lookup(absPath);
    if (sameFile(mine, theirs)) return;
    throw integrity(`${where}: the catalog gives it the version of snapshot ${owner.id.slice(0, 8)}, where the file differs`, { path: absPath });
  }

  /** The content mark (see contentMark) of a version as its sealed TOCs say; undefined if a piece is not a whole block. */
  private async contentMarkOf(truth: Truth, absPath: string): Promise<string | undefined> {
    const blocks = new BlockList();
    for await (const p of this.expected({ absPath, pathId: this.repo.keyring.pathId(absPath), truth }, 0, truth.size - 1)) {
      if (p.from !== 0 || p.length !== p.blockSize) return undefined;
      blocks.push(p.block, p.length);
    }
    return contentMark(this.repo.keyring, blocks);
  }

  /** The truth of a sealed ref's target: the version of the same file in snapshot `id`. */
  private versionIn(id: string, absPath: string, pathId: Buffer): Promise<Truth> {
    return once(this.versions, `${id}/${pathId.toString('hex')}`, () => this.findVersionIn(id, absPath, pathId));
  }

  private async findVersionIn(id: string, absPath: string, pathId: Buffer): Promise<Truth> {
    // Verified by an earlier process: the sealed TOC alone (from the block cache) gives the truth.
    const known = this.remembered(id, pathId);
    if (known) {
      const t = await this.sealed(known).catch(() => undefined);
      if (t && t.path === pathId.toString('hex')) return t;
    }
    for (let hops = 0; hops < MAX_HOPS; hops++) {
      const snapshot = await this.snapshot(id);
      if (!snapshot) throw integrity(`${absPath}: its history refers to snapshot ${id.slice(0, 8)}, which is not in the repository`, { path: absPath });
      if (snapshot.row.seq >= 0) {
        const v = await this.repo.reader.version(snapshot.row.seq, pathId);
        if (!v) throw integrity(`${absPath}: its history refers to its version in snapshot ${id.slice(0, 8)}, which has none`, { path: absPath });
        return (await this.bind(snapshot, absPath, pathId, v)).truth;
      }
      // Removed by a forget without the key: its entry's block, its own sealed TOC, or (unchanged there) its parent's version.
      const mine = await snapshot.lookup(absPath);
      if (mine?.type === 'file' && mine.block) return blockInEntry(this.repo, id, pathId, mine.size, mine.block);
      const kept = await this.kept();
      const toc = kept.tocs.get(`${id}/${pathId.toString('hex')}`);
      if (toc) return this.sealed(toc);
      const parent = kept.records.get(id)?.parent;
      if (!parent) throw integrity(`${absPath}: its version in snapshot ${id.slice(0, 8)} cannot be found`, { path: absPath });
      const truth = await this.versionIn(parent, absPath, pathId);
      await this.owned(truth, snapshot, absPath);
      return truth;
    }
    throw integrity(`${absPath}: history deeper than ${MAX_HOPS}`);
  }

  /**
   * Which sealed TOC is snapshot `id`'s version of a path, once verified
   * (its own, or inherited under the tree rule): a fact of sealed objects
   * alone, so it holds for good. Kept by a remote client between processes,
   * with a keyed MAC, so a warm read skips the lookups that proved it.
   */
  private remembered(id: string, pathId: Buffer): Buffer | undefined {
    const v = this.repo.reader.fact?.(`version ${id}/${pathId.toString('hex')}`);
    if (!v || v.length !== 64) return undefined;
    const toc = v.subarray(0, 32);
    return this.factMac(id, pathId, toc).equals(v.subarray(32)) ? Buffer.from(toc) : undefined;
  }

  private remember(id: string, pathId: Buffer, truth: Truth): void {
    if (truth.id && this.repo.reader.putFact) this.repo.reader.putFact(`version ${id}/${pathId.toString('hex')}`, Buffer.concat([truth.id, this.factMac(id, pathId, truth.id)]));
  }

  private factMac(id: string, pathId: Buffer, toc: Buffer): Buffer {
    return this.repo.keyring.blockId(Buffer.concat([Buffer.from(`strata verified version ${id}/${pathId.toString('hex')}/`), toc]));
  }

  /**
   * Where a sealed ref's bytes are: its root, the version down its chain the
   * writer found them in (sealed with the key, so believed), else its target.
   * A root that cannot be followed (its snapshot forgotten since, and the ref
   * resealed without it or not) leaves the target, which a forget keeps
   * right: only slower.
   */
  private async refTarget(e: SealedRef, b: Binding): Promise<[Truth, number]> {
    if (e.length === 7) {
      try {
        return [await this.versionIn(e[5], b.absPath, b.pathId), e[6]];
      } catch (err) {
        if (!(err instanceof StrataError) || err.code !== 'integrity') throw err;
      }
    }
    return [await this.versionIn(e[2], b.absPath, b.pathId), e[3]];
  }

  /**
   * The pieces of [start, end] of a bound version, resolved through the
   * sealed TOCs alone; each names the snapshot whose sealed TOC holds its
   * data entry: the one that wrote those bytes.
   */
  async *expected(b: Binding, start: number, end: number): AsyncGenerator<SourcedPiece> {
    if (end < start) return;
    const stack: { truth: Truth; start: number; end: number; at: number; depth: number }[] = [{ truth: b.truth, start, end, at: start, depth: 0 }];
    while (stack.length > 0) {
      const f = stack.pop()!;
      if (f.depth > MAX_HOPS) throw integrity(`${b.absPath}: reference chain deeper than ${MAX_HOPS}`);
      if (f.start < 0) throw integrity(`${b.absPath}: a sealed reference points before the start of its target`, { path: b.absPath });
      const view = f.truth.entries;
      let { piece, list, i } = await view.locate(f.start);
      let cursor = f.start;
      while (cursor <= f.end) {
        if (i === list.length) {
          const next = await view.next(piece, list);
          if (next) [piece, list, i] = [piece + 1, next, 0];
        }
        const e = list[i++];
        // Past its end: said only once the bytes before it went out (a read of those is fine).
        if (!e || e[0] > cursor || e[1] < cursor) throw integrity(`${b.absPath}: a sealed reference points past the end of its target`, { path: b.absPath });
        const pieceEnd = Math.min(e[1], f.end);
        const at = f.at + (cursor - f.start);
        if (e.length === 3) {
          yield { block: Buffer.from(e[2], 'hex'), blockSize: e[1] - e[0] + 1, from: cursor - e[0], length: pieceEnd - cursor + 1, at, owner: f.truth.owner };
        } else {
          if (pieceEnd < f.end) stack.push({ ...f, start: pieceEnd + 1, at: at + (pieceEnd - cursor + 1) });
          const [truth, base] = await this.refTarget(e, b);
          stack.push({ truth, start: base + (cursor - e[0]), end: base + (pieceEnd - e[0]), at, depth: f.depth + 1 });
          break;
        }
        cursor = pieceEnd + 1;
      }
    }
  }
}

/** The truth of a file whose tree entry names its one block (TreeEntry.block): the entry, authenticated with its tree, says it all. */
function blockInEntry(repo: Repository, snapshotId: string, pathId: Buffer, size: number, block: string): Truth {
  const head: SealedToc = { snapshot: snapshotId, path: pathId.toString('hex'), size, entries: [[0, size - 1, block]] };
  return { owner: snapshotId, size, entries: new SealedEntries(repo, head, `in the tree entry of ${head.path.slice(0, 16)}`) };
}

/** A sealed TOC's segment starts: one per segment, the first 0, rising, each inside the file. */
function validStarts(starts: unknown, segments: unknown[] | undefined, size: number): boolean {
  if (!Array.isArray(starts) || !segments || starts.length !== segments.length || starts.length === 0 || starts[0] !== 0) return false;
  for (let i = 1; i < starts.length; i++) if (!Number.isSafeInteger(starts[i]) || starts[i] <= starts[i - 1] || starts[i] >= size) return false;
  return true;
}

/** The index of the first of `sorted` greater than `x`. */
function upperBound(sorted: readonly number[], x: number): number {
  let lo = 0;
  let hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (sorted[mid]! <= x) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** A ref entry's fields after [start, end, target snapshot] (see SealedEntry). */
function wellFormedRef(e: unknown[]): boolean {
  const offset = (x: unknown) => Number.isSafeInteger(x) && (x as number) >= 0;
  if (!offset(e[3])) return false;
  if (e.length === 4) return true;
  if (!Number.isSafeInteger(e[4]) || (e[4] as number) < 1) return false;
  return e.length === 5 || (e.length === 7 && typeof e[5] === 'string' && offset(e[6]));
}

/**
 * The catalog's pieces of [start, end] of `version`, each yielded only once
 * it agrees with the sealed TOCs: the same block, the same place in it and in
 * the file (pieces may be cut differently), and nothing missing or extra.
 */
export async function* verifiedPieces(repo: Repository, version: BoundVersion, start: number, end: number, pieces: AsyncIterable<Piece>): AsyncGenerator<Piece> {
  const b = version.bound;
  if (end >= b.truth.size) throw integrity(`${b.absPath}: read past the end of its sealed size`, { path: b.absPath });
  // Read from its tree entry: the truth is all there is to read by, and the catalog's pieces are never asked for.
  if (version.id === IN_ENTRY) {
    yield* verifier(repo).expected(b, start, end);
    return;
  }
  const expected = verifier(repo).expected(b, start, end)[Symbol.asyncIterator]();
  const expect = async (): Promise<IteratorResult<Piece>> => {
    try {
      return await expected.next();
    } catch (err) {
      throw err instanceof StrataError && err.code === 'integrity' ? await worse(err) : err;
    }
  };
  let e: Piece | undefined;
  let used = 0;
  let next = start;
  const source = pieces[Symbol.asyncIterator]();
  // When the two disagree, the catalog's rows may be broken in a way its resolver names (a gap, a
  // cycle): that error says more, so the rest of its pieces (up to a bound) are walked for it first.
  const worse = async (mismatch: StrataError): Promise<StrataError> => {
    try {
      for (let n = 0; n < 100_000 && !(await source.next()).done; n++);
    } catch (e) {
      if (e instanceof StrataError && e.code === 'integrity') return e;
    }
    return mismatch;
  };
  const wrong = async (at: number) => worse(integrity(`${b.absPath}: the catalog's TOC of version ${version.id} disagrees with its sealed TOC at byte ${at} (run "strata check")`, { path: b.absPath, version: version.id, offset: at }));
  for (let step = await source.next(); !step.done; step = await source.next()) {
    const p = step.value;
    if (p.at !== next) throw await wrong(next);
    let done = 0;
    while (done < p.length) {
      if (!e || used === e.length) {
        const n = await expect();
        if (n.done) throw await wrong(p.at + done);
        e = n.value;
        used = 0;
      }
      if (!e.block.equals(p.block) || e.blockSize !== p.blockSize || e.from + used !== p.from + done || e.at + used !== p.at + done) throw await wrong(p.at + done);
      const n = Math.min(p.length - done, e.length - used);
      done += n;
      used += n;
    }
    next += p.length;
    yield p;
  }
  if (next !== end + 1 || (e && used !== e.length) || !(await expect()).done) throw await wrong(next);
}

/**
 * Compares a file's version in the catalog with the sealed truth, over the
 * whole file (no block is read): undefined when they agree, else why not.
 */
export async function sealedDisagreement(repo: Repository, snapshot: Snapshot, absPath: string, entry: TreeEntry, v: VersionRow): Promise<string | undefined> {
  try {
    const bound = await verifier(repo).bind(snapshot, absPath, repo.keyring.pathId(absPath), v, entry);
    if (v.size === 0) return undefined;
    const version: BoundVersion = { ...v, bound };
    for await (const _ of verifiedPieces(repo, version, 0, v.size - 1, repo.reader.pieces(v.id, 0, v.size - 1)));
    return undefined;
  } catch (e) {
    if (e instanceof StrataError && e.code === 'integrity') return e.message;
    throw e;
  }
}

/**
 * Checks the catalog's TOC rows of a version, as `strata toc` shows them,
 * against its sealed truth: each data row must be its whole block at that
 * place, and each ref row the same bytes as the range of its target, which
 * must be this file's version in the target's snapshot (checked as any
 * version is, see bind). Rows split to bound read depth may be joined first.
 * Throws an integrity error naming the file at the first disagreement.
 */
export async function checkTocRows(repo: Repository, version: BoundVersion, rows: readonly TocRow[]): Promise<void> {
  const v = verifier(repo);
  const b = version.bound;
  const wrong = (at: number) => integrity(`${b.absPath}: the catalog's TOC of version ${version.id} disagrees with its sealed TOC at byte ${at} (run "strata check")`, { path: b.absPath, version: version.id, offset: at });
  let cursor = 0;
  for (const r of rows) {
    if (r.start !== cursor || r.end < r.start || r.end >= b.truth.size) throw wrong(cursor);
    const length = r.end - r.start + 1;
    let theirs: AsyncIterable<Piece>;
    if (r.block) {
      theirs = (async function* () {
        yield { block: r.block!, blockSize: length, from: 0, length, at: r.start };
      })();
    } else {
      if (r.target === null || r.target_start === null || r.target >= version.id) throw wrong(r.start);
      const t = await repo.reader.versionById(r.target);
      const row = t && (await repo.reader.snapshotBySeq(t.snapshot));
      const snap = row && (await v.snapshot(row.id));
      if (!t || !snap) throw wrong(r.start);
      let target: Binding;
      try {
        target = await v.bind(snap, b.absPath, b.pathId, t);
      } catch (e) {
        if (e instanceof StrataError && e.code === 'integrity') throw wrong(r.start);
        throw e;
      }
      if (r.target_start < 0 || r.target_start + length > target.truth.size) throw wrong(r.start);
      theirs = v.expected(target, r.target_start, r.target_start + length - 1);
    }
    if (!(await samePieces(v.expected(b, r.start, r.end), theirs))) throw wrong(r.start);
    cursor = r.end + 1;
  }
  if (cursor !== b.truth.size) throw wrong(cursor);
}

/** Whether two runs of pieces name the same bytes of the same blocks, however they are cut (positions in the file aside). */
async function samePieces(a: AsyncIterable<Piece>, b: AsyncIterable<Piece>): Promise<boolean> {
  const ia = a[Symbol.asyncIterator]();
  const ib = b[Symbol.asyncIterator]();
  let pa: Piece | undefined;
  let pb: Piece | undefined;
  let ua = 0;
  let ub = 0;
  for (;;) {
    if (!pa || ua === pa.length) {
      const n = await ia.next();
      pa = n.done ? undefined : n.value;
      ua = 0;
    }
    if (!pb || ub === pb.length) {
      const n = await ib.next();
      pb = n.done ? undefined : n.value;
      ub = 0;
    }
    if (!pa || !pb) return !pa && !pb;
    if (!pa.block.equals(pb.block) || pa.blockSize !== pb.blockSize || pa.from + ua !== pb.from + ub) return false;
    const n = Math.min(pa.length - ua, pb.length - ub);
    ua += n;
    ub += n;
  }
}
