/**
 * The catalog: a SQLite database (WAL) that answers every question about
 * structure — which packs hold which blocks, which snapshots exist, and each
 * file version's table of contents (TOC). It holds no plaintext: paths and
 * lineages are keyed ids, snapshot metadata is sealed. Everything in it is
 * also sealed into the packs, so it can be rebuilt from the block store.
 *
 * TOC rows: one per entry, ordered and non-overlapping, covering the version.
 * A data entry names a block; a ref entry names a target version and where
 * its range starts there (offset = start - target_start). `root`/`root_start`
 * is the same ref followed as far down its chain as it stays one range — a
 * shortcut so reads do not slow down as chains grow — and `depth` is how many
 * hops a read of the row may take at most (0 for data).
 */
import Database from 'better-sqlite3';
import { locked } from '../errors.js';

export type BlobKind = 'data' | 'tree' | 'toc' | 'snapshot';
export const BLOB_KINDS: readonly BlobKind[] = ['data', 'tree', 'toc', 'snapshot'];

export interface BlockLocation {
  pack: string;
  offset: number;
  length: number;
  size: number;
}

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

export interface SnapshotRow {
  seq: number;
  id: string;
  time: number;
  lineage: Buffer;
  meta: Buffer;
  root: Buffer | null;
  parent: number | null;
}

export interface VersionRow {
  id: number;
  snapshot: number;
  size: number;
  /** The largest depth of its TOC rows. */
  depth: number;
}

const SCHEMA_VERSION = 1;

const SCHEMA = `
CREATE TABLE IF NOT EXISTS info(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS packs(id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, size INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS blocks(
  id BLOB PRIMARY KEY, pack INTEGER NOT NULL, offset INTEGER NOT NULL,
  length INTEGER NOT NULL, size INTEGER NOT NULL, kind INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS blocks_pack ON blocks(pack);
CREATE TABLE IF NOT EXISTS snapshots(
  seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, time INTEGER NOT NULL,
  lineage BLOB NOT NULL, meta BLOB NOT NULL, root BLOB, record BLOB,
  parent INTEGER, committed INTEGER NOT NULL DEFAULT 0, pid INTEGER
);
CREATE INDEX IF NOT EXISTS snapshots_time ON snapshots(committed, time);
CREATE TABLE IF NOT EXISTS versions(
  id INTEGER PRIMARY KEY, snapshot INTEGER NOT NULL, path BLOB NOT NULL,
  size INTEGER NOT NULL, toc BLOB, depth INTEGER NOT NULL DEFAULT 0, UNIQUE(snapshot, path)
);
CREATE TABLE IF NOT EXISTS toc(
  version INTEGER NOT NULL, start INTEGER NOT NULL, end INTEGER NOT NULL,
  block BLOB, target INTEGER, target_start INTEGER, root INTEGER, root_start INTEGER,
  depth INTEGER NOT NULL DEFAULT 0, PRIMARY KEY(version, start)
) WITHOUT ROWID;
`;

export class Catalog {
  readonly db: Database.Database;
  private readonly st: ReturnType<Catalog['prepare']>;

  constructor(file: string, opts: { readonly?: boolean; busyTimeoutMs?: number } = {}) {
    this.db = new Database(file, { readonly: opts.readonly ?? false, fileMustExist: opts.readonly ?? false });
    this.db.pragma(`busy_timeout = ${opts.busyTimeoutMs ?? 30_000}`);
    if (!opts.readonly) {
      this.db.pragma('journal_mode = WAL');
      this.db.pragma('synchronous = NORMAL');
      this.guard(() => this.db.exec(SCHEMA));
      this.guard(() =>
        this.db.prepare("INSERT OR IGNORE INTO info(key, value) VALUES ('schema', ?)").run(String(SCHEMA_VERSION)),
      );
    }
    this.st = this.prepare();
  }

  private prepare() {
    const db = this.db;
    return {
      blockExists: db.prepare('SELECT 1 FROM blocks WHERE id = ?').pluck(),
      blockLocation: db.prepare(
        'SELECT p.name AS pack, b.offset, b.length, b.size FROM blocks b JOIN packs p ON p.id = b.pack WHERE b.id = ?',
      ),
      insertPack: db.prepare('INSERT INTO packs(name, size) VALUES (?, ?)'),
      insertBlock: db.prepare('INSERT OR IGNORE INTO blocks(id, pack, offset, length, size, kind) VALUES (?, ?, ?, ?, ?, ?)'),
      insertSnapshot: db.prepare(
        'INSERT INTO snapshots(id, time, lineage, meta, parent, committed, pid) VALUES (?, ?, ?, ?, ?, 0, ?)',
      ),
      commitSnapshot: db.prepare('UPDATE snapshots SET committed = 1, root = ?, record = ?, meta = ? WHERE seq = ?'),
      snapshots: db.prepare('SELECT seq, id, time, lineage, meta, root, parent FROM snapshots WHERE committed = 1 ORDER BY time, seq'),
      snapshotBySeq: db.prepare('SELECT seq, id, time, lineage, meta, root, parent FROM snapshots WHERE seq = ?'),
      snapshotsByPrefix: db.prepare(
        "SELECT seq, id, time, lineage, meta, root, parent FROM snapshots WHERE committed = 1 AND id >= ? AND id < ? || 'g' ORDER BY time",
      ),
      parentCandidate: db.prepare(
        'SELECT seq, id, time, lineage, meta, root, parent FROM snapshots WHERE committed = 1 AND lineage = ? AND time <= ? ORDER BY time DESC, seq DESC LIMIT 1',
      ),
      insertVersion: db.prepare('INSERT INTO versions(snapshot, path, size, toc, depth) VALUES (?, ?, ?, ?, ?)'),
      version: db.prepare('SELECT id, snapshot, size, depth FROM versions WHERE snapshot = ? AND path = ?'),
      versionById: db.prepare('SELECT id, snapshot, size, depth FROM versions WHERE id = ?'),
      insertToc: db.prepare(
        'INSERT INTO toc(version, start, end, block, target, target_start, root, root_start, depth) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)',
      ),
      tocAt: db.prepare(
        'SELECT start, end, block, target, target_start, root, root_start, depth FROM toc WHERE version = ? AND start <= ? ORDER BY start DESC LIMIT 1',
      ),
      tocAfter: db.prepare(
        'SELECT start, end, block, target, target_start, root, root_start, depth FROM toc WHERE version = ? AND start > ? AND start <= ? ORDER BY start LIMIT ?',
      ),
      tocAll: db.prepare(
        'SELECT start, end, block, target, target_start, root, root_start, depth FROM toc WHERE version = ? ORDER BY start',
      ),
    };
  }

  /** Runs `fn`, turning SQLite's "busy" into a typed "locked" error. */
  guard<T>(fn: () => T): T {
    try {
      return fn();
    } catch (e) {
      const code = (e as { code?: string }).code;
      if (code === 'SQLITE_BUSY' || code === 'SQLITE_LOCKED') throw locked('repository catalog is locked by another process');
      throw e;
    }
  }

  transaction<T>(fn: () => T): T {
    return this.guard(() => this.db.transaction(fn).immediate());
  }

  close(): void {
    this.db.close();
  }

  // --- blocks and packs

  hasBlock(id: Uint8Array): boolean {
    return this.st.blockExists.get(id) !== undefined;
  }

  blockLocation(id: Uint8Array): BlockLocation | undefined {
    return this.st.blockLocation.get(id) as BlockLocation | undefined;
  }

  addPack(name: string, size: number, blobs: readonly { id: Buffer; kind: BlobKind; offset: number; length: number; size: number }[]): void {
    this.transaction(() => {
      const pack = Number(this.st.insertPack.run(name, size).lastInsertRowid);
      for (const b of blobs) this.st.insertBlock.run(b.id, pack, b.offset, b.length, b.size, BLOB_KINDS.indexOf(b.kind));
    });
  }

  // --- snapshots

  beginSnapshot(id: string, time: number, lineage: Buffer, meta: Buffer, parent: number | null): number {
    return this.guard(() => Number(this.st.insertSnapshot.run(id, time, lineage, meta, parent, process.pid).lastInsertRowid));
  }

  commitSnapshot(seq: number, root: Buffer, record: Buffer, meta: Buffer): void {
    this.guard(() => this.st.commitSnapshot.run(root, record, meta, seq));
  }

  snapshots(): SnapshotRow[] {
    return this.st.snapshots.all() as SnapshotRow[];
  }

  snapshotBySeq(seq: number): SnapshotRow | undefined {
    return this.st.snapshotBySeq.get(seq) as SnapshotRow | undefined;
  }

  snapshotsByPrefix(prefix: string): SnapshotRow[] {
    return this.st.snapshotsByPrefix.all(prefix, prefix) as SnapshotRow[];
  }

  parentCandidate(lineage: Buffer, time: number): SnapshotRow | undefined {
    return this.st.parentCandidate.get(lineage, time) as SnapshotRow | undefined;
  }

  // --- versions and TOCs

  version(snapshot: number, path: Buffer): VersionRow | undefined {
    return this.st.version.get(snapshot, path) as VersionRow | undefined;
  }

  versionById(id: number): VersionRow | undefined {
    return this.st.versionById.get(id) as VersionRow | undefined;
  }

  insertVersion(snapshot: number, path: Buffer, size: number, toc: Buffer, entries: readonly TocRow[]): number {
    return this.transaction(() => {
      const depth = entries.reduce((d, e) => Math.max(d, e.depth), 0);
      const v = Number(this.st.insertVersion.run(snapshot, path, size, toc, depth).lastInsertRowid);
      for (const e of entries) this.st.insertToc.run(v, e.start, e.end, e.block, e.target, e.target_start, e.root, e.root_start, e.depth);
      return v;
    });
  }

  /** The entry of `version` that contains `offset`, if any. */
  tocAt(version: number, offset: number): TocRow | undefined {
    return this.st.tocAt.get(version, offset) as TocRow | undefined;
  }

  /** Entries starting in (after, upTo], in order, at most `limit`. */
  tocAfter(version: number, after: number, upTo: number, limit: number): TocRow[] {
    return this.st.tocAfter.all(version, after, upTo, limit) as TocRow[];
  }

  /** Entries overlapping [start, end], in order. */
  tocRange(version: number, start: number, end: number): TocRow[] {
    const first = this.tocAt(version, start);
    const rows = first && first.end >= start ? [first] : [];
    return rows.concat(this.st.tocAfter.all(version, start, end, Number.MAX_SAFE_INTEGER) as TocRow[]);
  }

  toc(version: number): TocRow[] {
    return this.st.tocAll.all(version) as TocRow[];
  }
}
