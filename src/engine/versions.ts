/**
 * Storing a file version: its TOC rows in the catalog (with the shortcut that
 * keeps reads flat as chains grow) and the same TOC sealed into a pack (so the
 * catalog can be rebuilt from packs alone).
 */
import type { Keyring } from '../crypto/keyring.js';
import { encodeBlock } from '../repo/blockcodec.js';
import { GONE, retryStale, type Catalog } from '../catalog/catalog.js';
import { MAX_DEPTH, tocRows, type TargetVersion } from '../catalog/toc-rows.js';
import type { CatalogService } from '../catalog/service.js';
import type { BlockList } from '../catalog/blocklist.js';
import type { Packer } from '../repo/packer.js';
import { integrity, StrataError } from '../errors.js';
import { minorGc } from '../util/gc.js';
import type { Repository } from '../repo/repository.js';
import type { TocEntry } from '../catalog/toc.js';

/**
 * A sealed TOC entry: data [start, end, block], or a ref [start, end,
 * targetSnapshot, targetStart, depth?, rootSnapshot?, rootStart?]. A ref
 * names the same path in its target snapshot (the chain of the seed's FIG. 7);
 * `depth` is how many hops a read of it takes to reach data, and the root,
 * where given, is a version further down the chain that holds the same bytes:
 * the sealed twin of the catalog's shortcut, so a checked read also stays
 * within MAX_DEPTH hops. Refs sealed before depths were recorded have four
 * fields (their depth is taken as MAX_DEPTH).
 */
export type SealedData = [number, number, string];
export type SealedRef = [number, number, string, number] | [number, number, string, number, number] | [number, number, string, number, number, string, number];
export type SealedEntry = SealedData | SealedRef;

/** Hops a read of a sealed entry takes to reach data. */
export function sealedDepth(e: SealedEntry): number {
  return e.length === 3 ? 0 : e.length === 4 ? MAX_DEPTH : e[4];
}

/** Where a read of a sealed ref goes: its root if it has one, else its target (snapshot and offset of its first byte). */
export function sealedRoot(e: SealedRef): [string, number] {
  return e.length === 7 ? [e[5], e[6]] : [e[2], e[3]];
}

/** The index of the entry containing `offset` (entries cover their version in order). */
export function entryAt(entries: readonly SealedEntry[], offset: number): number {
  let lo = 0;
  let hi = entries.length - 1;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (entries[mid]![0] <= offset) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

/**
 * The sealed entries of a ref of [start, end] to [ts, …] of a target whose
 * own sealed entries are `under` (as its verified sealed TOC says, never the
 * catalog: what is sealed here is believed by every later read). The rule
 * is the catalog's (see tocRows): a range inside one ref of the target takes
 * that ref's root; a range over several goes to the target itself, unless
 * that would be deeper than MAX_DEPTH, and then it is split where the
 * target's entries begin, each piece taking its entry's way.
 */
export function* sealedRef(start: number, end: number, target: string, ts: number, under: readonly SealedEntry[], where: string, owner?: string | null): Generator<SealedRef> {
  const te = ts + (end - start);
  const i = entryAt(under, ts);
  const first = under[i];
  const last = under[under.length - 1];
  if (!first || first[0] > ts || first[1] < ts || !last || last[1] < te) throw integrity(`${where}: a reference to its previous version lies outside that version's sealed TOC`);
  const one = (s: number, e: number, u: SealedEntry): SealedRef => {
    const uts = ts + (s - start);
    // In a data entry of a version the target inherited, the snapshot that stored it is the root: a reader checks it there, without the target's trees.
    if (u.length === 3) return owner && owner !== target ? [s, e, target, uts, 1, owner, uts] : [s, e, target, uts, 1];
    const [rs, ro] = sealedRoot(u);
    return [s, e, target, uts, sealedDepth(u), rs, ro + (uts - u[0])];
  };
  if (first[1] >= te) {
    yield one(start, end, first);
    return;
  }
  let depth = 0;
  for (let j = i; j < under.length && under[j]![0] <= te; j++) depth = Math.max(depth, sealedDepth(under[j]!));
  if (depth + 1 <= MAX_DEPTH) {
    yield [start, end, target, ts, depth + 1];
    return;
  }
  for (let j = i; j < under.length && under[j]![0] <= te; j++) {
    const u = under[j]!;
    const a = Math.max(u[0], ts);
    const b = Math.min(u[1], te);
    yield one(start + (a - ts), start + (b - ts), u);
  }
}

export interface SealedToc {
  snapshot: string;
  path: string;
  size: number;
  /** Rewritten by forget at this time (ms); the newest generation of a version wins on rebuild. */
  generation?: number;
  entries: SealedEntry[];
  /** A long TOC's entries live in these blobs (hex ids, in order); `entries` is then empty. */
  segments?: string[];
  /**
   * The offset of each segment's first byte (absent in TOCs sealed before
   * it was kept): a read opens the one segment that holds it, where a
   * search by interpolation may open several.
   */
  starts?: number[];
}

/** One piece of a long TOC; it names its version so that no two versions share one. */
export interface SealedTocSegment {
  snapshot: string;
  path: string;
  generation?: number;
  segment: number;
  entries: SealedEntry[];
}

/**
 * Entries per sealed blob: a long TOC is sealed piece by piece, never
 * whole. A read of a few bytes opens the TOC (which lists every segment)
 * and the one segment that holds them: at 128 entries a segment is about
 * 6 KiB sealed, a fifth of an average block, and the list grows by about
 * 40 bytes a segment (a 1 GiB file's, some 10 KiB). At 1,024 entries, a
 * query touching a few places of a large database cost more in segments
 * than in blocks over a network. Readers find segments by the starts the
 * TOC lists, not by this count (TOCs sealed with 1,024 or 4,096 read the same).
 */
export const SEGMENT_ENTRIES = 128;

/** Something to iterate once that knows its length (an array or a TocList). */
export type Entries = Iterable<TocEntry> & { readonly length: number };

export interface NewVersion {
  snapshotSeq: number;
  snapshotId: string;
  pathId: Buffer;
  size: number;
  entries: Entries;
  target?: TargetVersion;
  /** The target's entries as its verified sealed TOC has them: the refs sealed here then carry their depth and root (see SealedEntry). */
  targetEntries?: readonly SealedEntry[];
  /** The snapshot whose sealed TOC those entries are (the target's, or one it inherited the version from). */
  targetOwner?: string | null;
  /** The file, for errors. */
  where?: string;
  /** The version's blocks (what the catalog's keeper diffs against the parent); a backup's VersionBatch needs them. */
  blocks?: BlockList;
  /** One data block, named by the file's tree entry (TreeEntry.block): nothing is sealed for it. */
  inEntry?: boolean;
}

export interface SealedTocIds {
  id: Buffer;
  segments: Buffer[];
}

/**
 * Somewhere else to compress and seal TOC blobs up to `maxBlock` bytes (a
 * backup's worker threads): `seal` packs the blob unless it is stored, and
 * resolves once it is on its way. A tree of small files has one TOC per
 * file, and sealing them here took a quarter of this thread's time.
 */
export interface TocSealer {
  maxBlock: number;
  seal(id: Buffer, plain: Buffer): Promise<void>;
}

/**
 * Seals a version's TOC into packs (for rebuilds): one blob, or for more than
 * SEGMENT_ENTRIES entries a blob per segment and one listing them.
 */
export async function sealToc(
  keyring: Keyring,
  packer: Packer,
  level: number,
  head: Omit<SealedToc, 'entries' | 'segments'>,
  entries: Iterable<SealedEntry>,
  count: number,
  sealer?: TocSealer,
): Promise<SealedTocIds> {
  const seal = async (value: object): Promise<Buffer> => {
    const plain = Buffer.from(JSON.stringify(value), 'utf8');
    const id = keyring.blockId(plain);
    if (sealer && plain.length <= sealer.maxBlock) await sealer.seal(id, plain);
    else if (!packer.has(id)) await packer.add(id, 'toc', encodeBlock(keyring.encKey, id, plain, level), plain.length);
    return id;
  };
  if (count <= SEGMENT_ENTRIES) return { id: await seal({ ...head, entries: [...entries] }), segments: [] };
  const segments: Buffer[] = [];
  const starts: number[] = [];
  let batch: SealedEntry[] = [];
  const sealBatch = async () => {
    starts.push(batch[0]![0]);
    const segment: SealedTocSegment = { snapshot: head.snapshot, path: head.path, ...(head.generation ? { generation: head.generation } : {}), segment: segments.length, entries: batch };
    segments.push(await seal(segment));
    batch = [];
  };
  for (const e of entries) {
    batch.push(e);
    if (batch.length === SEGMENT_ENTRIES) {
      await sealBatch();
      // Each segment leaves a few MiB of garbage: collect it before the young generation grows.
      minorGc();
    }
  }
  if (batch.length > 0) await sealBatch();
  return { id: await seal({ ...head, entries: [], segments: segments.map((b) => b.toString('hex')), starts }), segments };
}

/** All entries of a sealed TOC, reading its segments if it has them. */
export async function sealedTocEntries(repo: Repository, t: SealedToc): Promise<SealedEntry[]> {
  if (!t.segments) return t.entries;
  const all: SealedEntry[] = [];
  for (let k = 0; k < t.segments.length; k++) all.push(...(await sealedTocSegment(repo, t, k)));
  return all;
}

/** Segment k of a long sealed TOC, checked to be that TOC's. */
export async function sealedTocSegment(repo: Repository, t: SealedToc, k: number): Promise<SealedEntry[]> {
  const hex = t.segments![k]!;
  let seg: SealedTocSegment;
  try {
    seg = JSON.parse((await repo.readBlob(Buffer.from(hex, 'hex'), 'toc')).toString('utf8')) as SealedTocSegment;
  } catch (e) {
    if (e instanceof StrataError) throw e;
    throw integrity(`TOC segment ${hex.slice(0, 16)} is not valid`);
  }
  if (seg?.segment !== k || seg.snapshot !== t.snapshot || seg.path !== t.path || !Array.isArray(seg.entries)) throw integrity(`TOC segment ${hex.slice(0, 16)} belongs elsewhere`);
  return seg.entries;
}

function* sealedEntries(v: NewVersion): Generator<SealedEntry> {
  for (const e of v.entries) {
    if (e.kind === 'data') yield [e.start, e.end, e.block.toString('hex')];
    else if (v.targetEntries) yield* sealedRef(e.start, e.end, v.target!.snapshotId, e.targetStart, v.targetEntries, v.where ?? 'a file', v.targetOwner);
    else yield [e.start, e.end, v.target!.snapshotId, e.targetStart];
  }
}

function sealVersion(keyring: Keyring, packer: Packer, level: number, v: NewVersion, sealer?: TocSealer): Promise<SealedTocIds> {
  const head = { snapshot: v.snapshotId, path: v.pathId.toString('hex'), size: v.size };
  // Refs split past MAX_DEPTH make more entries than the TOC has: a short TOC's are counted first.
  if (v.targetEntries && v.entries.length <= SEGMENT_ENTRIES) {
    const entries = [...sealedEntries(v)];
    return sealToc(keyring, packer, level, head, entries, entries.length, sealer);
  }
  return sealToc(keyring, packer, level, head, sealedEntries(v), v.entries.length, sealer);
}


/**
 * Versions waiting to be inserted together: one catalog transaction per many
 * files instead of one per file (a tree of small files is otherwise bound by
 * commits). Batches are large: path ids are keyed hashes, so each batch's
 * rows land all over the version index, and every commit writes each page it
 * touched again (100k files when each unchanged one still had a row: 1,000
 * a batch 12.9 s, 10,000 a batch 10 s). Tombstones go in the same batches.
 */
/** Where a backup puts its versions and tombstones. */
export type VersionWriter = Pick<VersionBatch, 'add' | 'tombstone' | 'flush'>;

/** A dry run's: versions are made (and counted by the backup), none is stored. */
export const NO_VERSIONS: VersionWriter = {
  add: async () => undefined,
  tombstone: async () => {},
  flush: async () => {},
};

export class VersionBatch {
  private pending: { v: NewVersion; toc: SealedTocIds | undefined }[] = [];
  private entries = 0;

  constructor(
    private readonly service: CatalogService,
    private readonly keyring: Keyring,
    private readonly packer: Packer,
    private readonly level: number,
    private readonly sealer?: TocSealer,
    private readonly maxVersions = 10_000,
    private readonly maxEntries = 50_000,
  ) {}

  /** Records that `path`, a file of the parent snapshot, is not in this one (see catalog.ts, GONE). */
  async tombstone(snapshotSeq: number, path: Buffer): Promise<void> {
    this.gone.push({ snapshotSeq, path });
    if (this.gone.length >= this.maxVersions) await this.flush();
  }

  private gone: { snapshotSeq: number; path: Buffer }[] = [];

  /** Adds a version; returns the id of its sealed TOC (none for one named by its tree entry). */
  async add(v: NewVersion): Promise<Buffer | undefined> {
    const toc = v.inEntry ? undefined : await sealVersion(this.keyring, this.packer, this.level, v, this.sealer);
    this.pending.push({ v, toc });
    this.entries += v.entries.length;
    if (this.pending.length >= this.maxVersions || this.entries >= this.maxEntries) await this.flush();
    return toc?.id;
  }

  /** Hands the waiting versions to the catalog's keeper, which builds their TOCs from the blocks. */
  async flush(): Promise<void> {
    if (this.pending.length === 0 && this.gone.length === 0) return;
    const pending = this.pending;
    const gone = this.gone;
    this.pending = [];
    this.gone = [];
    this.entries = 0;
    const snapshot = pending[0]?.v.snapshotSeq ?? gone[0]!.snapshotSeq;
    await this.service.storeVersions(snapshot, [
      ...pending.map(({ v, toc }) => ({ path: v.pathId, size: v.size, toc: toc?.id ?? null, segments: toc?.segments ?? [], blocks: changedBlocks(v) })),
      ...gone.map(({ path }) => ({ path, size: GONE, toc: null, segments: [] })),
    ]);
  }
}

function changedBlocks(v: NewVersion): BlockList {
  if (!v.blocks) throw new Error('a changed version needs its blocks');
  return v.blocks;
}

/** Stores one version at once, from TOC entries made by hand (its id returned). */
export async function storeVersion(catalog: Catalog, keyring: Keyring, packer: Packer, level: number, v: NewVersion): Promise<number> {
  const toc = await sealVersion(keyring, packer, level, v);
  return retryStale(() => catalog.insertVersion(v.snapshotSeq, v.pathId, v.size, toc.id, tocRows(catalog, v.entries, v.target), toc.segments));
}
