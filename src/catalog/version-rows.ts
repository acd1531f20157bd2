/**
 * Versions and their TOC rows: a snapshot's files, each a version of a path
 * (a tombstone, size GONE, for a file its parent had and it has not), looked
 * up through the snapshot's chain of parents; and each version's rows, ordered
 * and non-overlapping, covering it. A data entry names a block; a ref entry
 * names a target version and where its range starts there (offset = start -
 * target_start). `root`/`root_start` is the same ref followed as far down its
 * chain as it stays one range — a shortcut so reads do not slow down as chains
 * grow — and `depth` is how many hops a read of the row may take at most (0
 * for data). The rows are made in toc-rows.ts; forget rewrites them here.
 */
import { StrataError } from '../errors.js';
import { SnapshotTable } from './snapshots.js';

export interface TocRow {
  start: number;
  end: number;
  block: Buffer | null;
  target: number | null;
  target_start: number | null;
  root: number | null;
  root_start: number | null;
  depth: number;
}

/**
 * A TOC row as [start, end, block, to, toStart]: a data row's block id in hex
 * ('' for a ref), a ref's version and offset where a read goes (its shortcut,
 * else its target).
 */
export type TocSpan = [start: number, end: number, block: string, to: number | null, toStart: number | null];
const SPAN = 'start, end, hex(block), coalesce(root, target), CASE WHEN root IS NULL THEN target_start ELSE root_start END';

/** A version to insert; `rows` is called once, inside the transaction. */
export interface NewVersionRows {
  snapshot: number;
  path: Buffer;
  size: number;
  /**
   * The sealed TOC's blob, and the segment blobs of a long one (kept alive
   * with the snapshot); null for a file unchanged since the parent snapshot.
   */
  toc: Buffer | null;
  segments?: readonly Buffer[];
  rows: () => Iterable<TocRow>;
}

export interface VersionRow {
  id: number;
  snapshot: number;
  size: number;
  /** The largest depth of its TOC rows. */
  depth: number;
}

/** Ancestors looked up one by one; past this, by the path's rows (see version()). */
const SHORT_CHAIN = 4;

/** The size of a tombstone: the path is not in this snapshot, whatever its parent holds. */
export const GONE = -1;

/** Runs an insert, again if a forget rewrote the targets' rows while ours were computed. */
export function retryStale<T>(insert: () => T): T {
  for (let attempt = 0; ; attempt++) {
    try {
      return insert();
    } catch (e) {
      if (!(e instanceof StrataError && e.code === 'stale_target') || attempt >= 3) throw e;
    }
  }
}

const VERSION_SQL = {
  insertVersion: 'INSERT INTO versions(snapshot, path, size, toc, depth) VALUES (?, ?, ?, ?, ?)',
  version: 'SELECT id, snapshot, size, depth FROM versions WHERE snapshot = ? AND path = ?',
  versionsOfPath: 'SELECT id, snapshot, size, depth FROM versions WHERE path = ?',
  versionById: 'SELECT id, snapshot, size, depth FROM versions WHERE id = ?',
  versionRecord: 'SELECT snapshot, path, size, toc FROM versions WHERE id = ?',
  setVersionDepth: 'UPDATE versions SET depth = ? WHERE id = ?',
  insertToc: 'INSERT INTO toc(version, start, end, block, target, target_start, root, root_start, depth) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)',
  tocAt: 'SELECT start, end, block, target, target_start, root, root_start, depth FROM toc WHERE version = ? AND start <= ? ORDER BY start DESC LIMIT 1',
  tocAfter: 'SELECT start, end, block, target, target_start, root, root_start, depth FROM toc WHERE version = ? AND start > ? AND start <= ? ORDER BY start LIMIT ?',
  tocSpans: `SELECT ${SPAN} FROM toc WHERE version = ? AND start >= ? ORDER BY start LIMIT ?`,
  tocSpansOfMany: `SELECT version, ${SPAN} FROM toc WHERE version IN (SELECT value FROM json_each(?)) ORDER BY version, start`,
  tocSpanAt: `SELECT ${SPAN} FROM toc WHERE version = ? AND start <= ? ORDER BY start DESC LIMIT 1`,
  tocAll: 'SELECT start, end, block, target, target_start, root, root_start, depth FROM toc WHERE version = ? ORDER BY start',
};

/** The snapshots with their versions and TOC rows (see SnapshotTable): the whole catalog. */
export class VersionTable extends SnapshotTable {
  private readonly versionSt = this.statements(VERSION_SQL);

  /** The version of `path` in `snapshot`, its own or inherited (see SCHEMA_5); undefined if the snapshot has no such file. */
  version(snapshot: number, path: Buffer): VersionRow | undefined {
    const chain = this.chain(snapshot);
    let row: VersionRow | undefined;
    // The nearest few one by one (a file that changes often has a row close by) ...
    for (const seq of chain.order.slice(0, SHORT_CHAIN)) if ((row = this.ownVersion(seq, path))) break;
    if (!row && chain.order.length > SHORT_CHAIN) {
      // ... then, for a long chain, every row of the path at once (one per change), the nearest ancestor's wins.
      let best = Infinity;
      chain.at ??= new Map(chain.order.map((seq, i) => [seq, i]));
      for (const r of this.versionSt.versionsOfPath.all(path) as VersionRow[]) {
        const at = chain.at.get(r.snapshot);
        if (at !== undefined && at < best) [best, row] = [at, r];
      }
    }
    return row && row.size !== GONE ? row : undefined;
  }

  /** A version's row as it is stored: its snapshot, path id, size and sealed TOC. */
  versionRecord(version: number): { snapshot: number; path: Buffer; size: number; toc: Buffer | null } | undefined {
    return this.versionSt.versionRecord.get(version) as { snapshot: number; path: Buffer; size: number; toc: Buffer | null } | undefined;
  }

  /** The snapshot's own row for `path` (a tombstone included), not looking at its parents. */
  ownVersion(snapshot: number, path: Buffer): VersionRow | undefined {
    return this.versionSt.version.get(snapshot, path) as VersionRow | undefined;
  }

  /**
   * version() for many paths of one snapshot, in one read transaction, looked
   * up in index order: path ids are keyed hashes, and lookups in random order
   * each land on another page of a large index.
   */
  versions(snapshot: number, paths: readonly Buffer[]): (VersionRow | undefined)[] {
    const order = paths.map((_, i) => i).sort((a, b) => Buffer.compare(paths[a]!, paths[b]!));
    const rows = new Array<VersionRow | undefined>(paths.length);
    this.reading(() => {
      for (const i of order) rows[i] = this.version(snapshot, paths[i]!);
    });
    return rows;
  }

  versionById(id: number): VersionRow | undefined {
    return this.versionSt.versionById.get(id) as VersionRow | undefined;
  }

  /** A snapshot's own rows, tombstones included, with their paths. */
  ownRows(seq: number): (VersionRow & { path: Buffer })[] {
    return this.db.prepare('SELECT id, snapshot, path, size, depth FROM versions WHERE snapshot = ?').all(seq) as (VersionRow & { path: Buffer })[];
  }

  /** Versions of the given snapshots, newest first (refs only point at older versions). */
  versionsOf(snapshots: readonly number[]): VersionRow[] {
    const q = this.db.prepare('SELECT id, snapshot, size, depth FROM versions WHERE snapshot = ?');
    return snapshots.flatMap((s) => q.all(s) as VersionRow[]).sort((a, b) => b.id - a.id);
  }

  /** Every version of a snapshot, its own and inherited, with its path id (a backup reads its parent's at once). */
  versionPaths(snapshot: number): (VersionRow & { path: Buffer; end: number | null })[] {
    const q = this.db.prepare(
      'SELECT v.id, v.snapshot, v.path, v.size, v.depth, (SELECT t.end FROM toc t WHERE t.version = v.id ORDER BY t.start DESC LIMIT 1) AS end FROM versions v WHERE v.snapshot = ?',
    );
    // Nearest first: a path's first row (maybe a tombstone) is its version here.
    const seen = new Map<string, VersionRow & { path: Buffer; end: number | null }>();
    this.reading(() => {
      for (const seq of this.chain(snapshot).order) {
        for (const r of q.all(seq) as (VersionRow & { path: Buffer; end: number | null })[]) {
          const key = r.path.toString('hex');
          if (!seen.has(key)) seen.set(key, r);
        }
      }
    });
    return [...seen.values()].filter((r) => r.size !== GONE);
  }

  /**
   * Inserts a version and its TOC rows. Fails with code "stale_target" when a
   * version its rows point at is gone (a forget ran meanwhile): recompute.
   */
  insertVersion(snapshot: number, path: Buffer, size: number, toc: Buffer | null, rows: Iterable<TocRow>, segments: readonly Buffer[] = []): number {
    return this.transaction(() => this.insertVersionRows({ snapshot, path, size, toc, rows: () => rows, segments }));
  }

  /** Several versions in one transaction (a backup's many small files); see insertVersion. */
  insertVersions(list: readonly NewVersionRows[]): void {
    this.transaction(() => {
      for (const v of list) this.insertVersionRows(v);
    });
  }

  /** Rows are consumed as they come (a huge file's TOC is never held whole). */
  private insertVersionRows(v: NewVersionRows): number {
    const id = Number(this.versionSt.insertVersion.run(v.snapshot, v.path, v.size, v.toc, 0).lastInsertRowid);
    const seen = new Set<number>();
    let depth = 0;
    for (const e of v.rows()) {
      for (const t of [e.target, e.root]) {
        if (t === null || seen.has(t)) continue;
        if (!this.versionSt.versionById.get(t)) throw new StrataError('stale_target', `version ${t} is gone`);
        seen.add(t);
      }
      depth = Math.max(depth, e.depth);
      this.versionSt.insertToc.run(id, e.start, e.end, e.block, e.target, e.target_start, e.root, e.root_start, e.depth);
    }
    if (depth > 0) this.versionSt.setVersionDepth.run(depth, id);
    for (const b of v.segments ?? []) this.snapshotSt.insertSnapshotBlob.run(v.snapshot, b);
    return id;
  }

  /** Records that `path`, a file of their parents, is not in these snapshots (inside a transaction). */
  insertTombstones(snapshots: readonly number[], path: Buffer): void {
    for (const s of snapshots) if (!this.ownVersion(s, path)) this.versionSt.insertVersion.run(s, path, GONE, null, 0);
  }

  /** The entry of `version` that contains `offset`, if any. */
  tocAt(version: number, offset: number): TocRow | undefined {
    return this.versionSt.tocAt.get(version, offset) as TocRow | undefined;
  }

  /**
   * A page of a version's rows from `from` on, as plain arrays: the fast way
   * through long runs of rows (a Buffer per block id costs more than the row).
   * See TocSpan.
   */
  tocSpans(version: number, from: number, limit: number): TocSpan[] {
    return this.versionSt.tocSpans.raw(true).all(version, from, limit) as TocSpan[];
  }

  /** Every row of each of `versions`, in one read (a backup's parent versions of a directory's files). */
  tocSpansOfMany(versions: readonly number[]): Map<number, TocSpan[]> {
    const out = new Map<number, TocSpan[]>();
    for (const [version, ...span] of this.versionSt.tocSpansOfMany.raw(true).all(JSON.stringify(versions)) as [number, ...TocSpan][]) {
      let rows = out.get(version);
      if (!rows) out.set(version, (rows = []));
      rows.push(span);
    }
    return out;
  }

  /** tocAt() as a TocSpan. */
  tocSpanAt(version: number, offset: number): TocSpan | undefined {
    return this.versionSt.tocSpanAt.raw(true).get(version, offset) as TocSpan | undefined;
  }

  /** Entries starting in (after, upTo], in order, at most `limit`. */
  tocAfter(version: number, after: number, upTo: number, limit: number): TocRow[] {
    return this.versionSt.tocAfter.all(version, after, upTo, limit) as TocRow[];
  }

  /** Entries overlapping [start, end], in order. */
  tocRange(version: number, start: number, end: number): TocRow[] {
    const first = this.tocAt(version, start);
    const rows = first && first.end >= start ? [first] : [];
    return rows.concat(this.versionSt.tocAfter.all(version, start, end, Number.MAX_SAFE_INTEGER) as TocRow[]);
  }

  toc(version: number): TocRow[] {
    return this.versionSt.tocAll.all(version) as TocRow[];
  }

  /** A version's rows, read a page at a time (for TOCs too long to hold). */
  *tocPages(version: number, page = 4096): Generator<TocRow> {
    let after = -1;
    while (true) {
      const rows = this.versionSt.tocAfter.all(version, after, Number.MAX_SAFE_INTEGER, page) as TocRow[];
      yield* rows;
      if (rows.length < page) return;
      after = rows[rows.length - 1]!.start;
    }
  }

  /**
   * Of the blocks a pending snapshot's TOC rows name, plus `blobs`, those not
   * stored (a served repository checks this before a commit); the rest are
   * rescued from prune.
   */
  unstoredBlocks(snapshot: number, blobs: readonly Buffer[]): Buffer[] {
    const named = this.db
      .prepare('SELECT DISTINCT t.block FROM toc t JOIN versions v ON v.id = t.version WHERE v.snapshot = ? AND t.block IS NOT NULL')
      .pluck()
      .all(snapshot) as Buffer[];
    return [...named, ...blobs].filter((id) => !this.hasBlock(id));
  }

  // --- maintenance (forget, prune, check); callers wrap these in transactions

  /** Gives a version to another snapshot (keeping its id, so every ref to it still holds). */
  moveVersion(version: number, snapshot: number): void {
    this.db.prepare('UPDATE versions SET snapshot = ? WHERE id = ?').run(snapshot, version);
  }

  /** Versions of a snapshot with at least one ref row (their sealed TOCs name other snapshots). */
  versionsWithRefs(seq: number): number[] {
    return this.db
      .prepare('SELECT v.id FROM versions v WHERE v.snapshot = ? AND EXISTS (SELECT 1 FROM toc t WHERE t.version = v.id AND t.target IS NOT NULL)')
      .pluck()
      .all(seq) as number[];
  }

  /** Rows of other versions whose ref targets `version` or whose shortcut lands in it. */
  rowsPointingAt(version: number): (TocRow & { version: number })[] {
    return this.db
      .prepare('SELECT version, start, end, block, target, target_start, root, root_start, depth FROM toc WHERE (target = ? OR root = ?) AND version != ?')
      .all(version, version, version) as (TocRow & { version: number })[];
  }

  replaceRows(version: number, remove: readonly number[], add: readonly TocRow[]): void {
    const del = this.db.prepare('DELETE FROM toc WHERE version = ? AND start = ?');
    for (const start of remove) del.run(version, start);
    for (const e of add) this.versionSt.insertToc.run(version, e.start, e.end, e.block, e.target, e.target_start, e.root, e.root_start, e.depth);
  }

  updateVersionDepth(version: number): void {
    this.db.prepare('UPDATE versions SET depth = (SELECT COALESCE(MAX(depth), 0) FROM toc WHERE version = ?) WHERE id = ?').run(version, version);
  }

  /** Points a version at a new sealed TOC; the old one's segments (if any) are let go. */
  setVersionToc(version: number, toc: Buffer, segments: readonly Buffer[] = [], oldSegments: readonly Buffer[] = []): void {
    this.guard(() => {
      this.db.prepare('UPDATE versions SET toc = ? WHERE id = ?').run(toc, version);
      const snapshot = (this.versionSt.versionById.get(version) as { snapshot: number }).snapshot;
      const drop = this.db.prepare('DELETE FROM snapshot_blobs WHERE snapshot = ? AND block = ?');
      for (const b of oldSegments) drop.run(snapshot, b);
      for (const b of segments) this.snapshotSt.insertSnapshotBlob.run(snapshot, b);
    });
  }

  deleteVersion(version: number): void {
    this.db.prepare('DELETE FROM toc WHERE version = ?').run(version);
    this.db.prepare('DELETE FROM stale_tocs WHERE version = ?').run(version);
    this.db.prepare('DELETE FROM versions WHERE id = ?').run(version);
  }

  /** Removes a snapshot row and what hangs off it (its versions must be gone or going). */
  deleteSnapshot(seq: number): void {
    this.forgetChains();
    for (const v of this.db.prepare('SELECT id FROM versions WHERE snapshot = ?').pluck().all(seq) as number[]) this.deleteVersion(v);
    this.db.prepare('DELETE FROM snapshot_blobs WHERE snapshot = ?').run(seq);
    this.db.prepare('DELETE FROM snapshots WHERE seq = ?').run(seq);
  }

  /** The sealed blobs a rebuild reads for these snapshots: records, trees, TOCs and their segments. */
  sealedBlobsOf(snapshots: readonly number[]): Buffer[] {
    const out: Buffer[] = [];
    for (const seq of snapshots) {
      out.push(...(this.db.prepare('SELECT block FROM snapshot_blobs WHERE snapshot = ?').pluck().all(seq) as Buffer[]));
      out.push(...(this.db.prepare('SELECT toc FROM versions WHERE snapshot = ? AND toc IS NOT NULL').pluck().all(seq) as Buffer[]));
      const s = this.db.prepare('SELECT record, root FROM snapshots WHERE seq = ?').get(seq) as { record: Buffer | null; root: Buffer | null } | undefined;
      for (const b of [s?.record, s?.root]) if (b) out.push(b);
    }
    return out;
  }

  /**
   * Records that `versions` were rewritten and their sealed TOCs still point
   * into forgotten snapshots: while any TOC is stale, the forgotten
   * snapshots' sealed blobs (`sealed`) are kept, so a rebuild can follow them.
   */
  markStale(versions: Iterable<number>, sealed: readonly Buffer[]): void {
    const stale = this.db.prepare('INSERT OR IGNORE INTO stale_tocs(version) VALUES (?)');
    for (const v of versions) stale.run(v);
    if (!this.db.prepare('SELECT 1 FROM stale_tocs LIMIT 1').get()) return;
    const keep = this.db.prepare('INSERT OR IGNORE INTO retained(block) VALUES (?)');
    for (const b of sealed) keep.run(b);
  }

  /** Versions whose sealed TOC a forget left pointing at forgotten snapshots. */
  staleTocs(): number[] {
    return this.db.prepare('SELECT version FROM stale_tocs ORDER BY version').pluck().all() as number[];
  }

  /** Resealed: once no TOC is stale, the forgotten snapshots' sealed blobs may go. */
  clearStale(versions: Iterable<number>): void {
    const del = this.db.prepare('DELETE FROM stale_tocs WHERE version = ?');
    for (const v of versions) del.run(v);
    if (!this.db.prepare('SELECT 1 FROM stale_tocs LIMIT 1').get()) this.db.prepare('DELETE FROM retained').run();
  }
}
