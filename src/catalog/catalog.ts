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
import { createRequire } from 'node:module';
import { locked, StrataError } from '../errors.js';

/**
 * SQLite's addon, named outright: left to find it, better-sqlite3 tries a
 * dozen paths, some 2.5 ms of every command. Undefined (its own search) if
 * the package keeps it elsewhere.
 */
let addon: string | null | undefined = null;
export function sqliteAddon(): string | undefined {
  if (addon === null) {
    try {
      addon = createRequire(import.meta.url).resolve('better-sqlite3/build/Release/better_sqlite3.node');
    } catch {
      addon = undefined;
    }
  }
  return addon;
}

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

const SCHEMA_VERSION = 7;

/** Ancestors looked up one by one; past this, by the path's rows (see version()). */
const SHORT_CHAIN = 4;

interface Chain {
  /** The snapshot, then each parent it inherits from. */
  order: number[];
  /** Position in `order` of each (made when first needed). */
  at?: Map<number, number>;
}

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

/** Schema 2: maintenance (condemned blocks, leases, per-snapshot blobs, check progress). */
const SCHEMA_2 = `
ALTER TABLE blocks ADD COLUMN condemned INTEGER;
ALTER TABLE packs ADD COLUMN checked INTEGER;
ALTER TABLE snapshots ADD COLUMN lease TEXT;
CREATE TABLE IF NOT EXISTS snapshot_blobs(snapshot INTEGER NOT NULL, block BLOB NOT NULL, PRIMARY KEY(snapshot, block)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS leases(
  id TEXT PRIMARY KEY, kind TEXT NOT NULL, host TEXT NOT NULL, pid INTEGER NOT NULL,
  started INTEGER NOT NULL, heartbeat INTEGER NOT NULL, parent INTEGER
);
CREATE INDEX IF NOT EXISTS toc_target ON toc(target) WHERE target IS NOT NULL;
CREATE INDEX IF NOT EXISTS toc_root ON toc(root) WHERE root IS NOT NULL;
CREATE INDEX IF NOT EXISTS versions_toc ON versions(toc);
`;

/** Schema 3: whether snapshot_blobs lists a snapshot's trees (schema 1 did not record them). */
const SCHEMA_3 = `ALTER TABLE snapshots ADD COLUMN blobs_known INTEGER NOT NULL DEFAULT 1;`;

/**
 * Schema 4: forgets whose TOCs are not resealed yet. A forget rewrites rows
 * in the catalog at once, but only a client with the key can reseal the
 * rewritten versions' TOCs; until then their sealed TOCs still point into the
 * forgotten snapshots, whose sealed records, trees and TOCs stay (retained)
 * so a rebuilt catalog can still follow them.
 */
const SCHEMA_4 = `
CREATE TABLE IF NOT EXISTS stale_tocs(version INTEGER PRIMARY KEY);
CREATE TABLE IF NOT EXISTS retained(block BLOB PRIMARY KEY) WITHOUT ROWID;
`;

/**
 * Schema 5: inherited versions. A snapshot that `inherits` holds rows only
 * for the files that changed since its parent (and a tombstone, size GONE,
 * for each file of the parent it no longer has); any other path is looked up
 * in its parent, and so on up the chain. An unchanged tree of 100k files then
 * costs no catalog rows at all. Older snapshots (and rebuilt ones) hold a row
 * for every file and end the chain.
 */
const SCHEMA_5 = `
ALTER TABLE snapshots ADD COLUMN inherits INTEGER NOT NULL DEFAULT 0;
CREATE INDEX IF NOT EXISTS versions_path ON versions(path, snapshot);
`;

/**
 * Schema 6: no index of TOC rows by block. Only prune and check asked which
 * rows name a block, and each asks it of many blocks at once (one pass over
 * `toc`); the index cost a 32-byte key and a random insert per row, about a
 * quarter of the catalog.
 */
const SCHEMA_6 = `DROP INDEX IF EXISTS toc_block;`;

/**
 * Schema 7: spare copies. A client with the key that finds a block's stored
 * copy forged (its pack's sealed index does not vouch for it) stores the
 * block again; the catalog, which cannot tell which copy is good, keeps the
 * new one here beside the first, and readers with the key try the spares when
 * the first copy fails to authenticate (FORMAT.md §19). Only a repair with
 * the key promotes a spare.
 */
const SCHEMA_7 = `
CREATE TABLE IF NOT EXISTS spares(
  id BLOB NOT NULL, pack INTEGER NOT NULL, offset INTEGER NOT NULL,
  length INTEGER NOT NULL, size INTEGER NOT NULL, kind INTEGER NOT NULL, PRIMARY KEY(id, pack)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS spares_pack ON spares(pack);
`;

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

/**
 * Runs `fn` until SQLite stops answering "busy", for up to `ms`. Two
 * processes opening a catalog at rest at once both switch it to WAL, and
 * SQLite refuses one of them at once instead of calling the busy handler.
 */
function retryBusy<T>(fn: () => T, ms: number): T {
  const until = Date.now() + ms;
  const pause = new Int32Array(new SharedArrayBuffer(4));
  for (let wait = 1; ; wait = Math.min(wait * 2, 50)) {
    try {
      return fn();
    } catch (e) {
      if ((e as { code?: string }).code !== 'SQLITE_BUSY' || Date.now() >= until) throw e;
      Atomics.wait(pause, 0, 0, wait);
    }
  }
}

export class Catalog {
  readonly db: Database.Database;
  private readonly st: ReturnType<Catalog['prepare']>;

  constructor(file: string, opts: { readonly?: boolean; busyTimeoutMs?: number } = {}) {
    const nativeBinding = sqliteAddon();
    this.db = new Database(file, { readonly: opts.readonly ?? false, fileMustExist: opts.readonly ?? false, ...(nativeBinding ? { nativeBinding } : {}) });
    const busyTimeoutMs = opts.busyTimeoutMs ?? 30_000;
    this.db.pragma(`busy_timeout = ${busyTimeoutMs}`);
    if (!opts.readonly) {
      this.guard(() => retryBusy(() => this.db.pragma('journal_mode = WAL'), busyTimeoutMs));
      this.db.pragma('synchronous = NORMAL');
      // 4 MiB of page cache, not the default 16: a backup's lookups are random anyway, and memory is bounded.
      this.db.pragma('cache_size = -4000');
      this.migrate();
    }
    this.st = this.prepare();
  }

  /** Creates or upgrades the schema, in one transaction. */
  private migrate(): void {
    try {
      const current = this.db.prepare("SELECT value FROM info WHERE key = 'schema'").pluck().get();
      if (Number(current) === SCHEMA_VERSION) return;
    } catch {
      // No info table yet: a new catalog.
    }
    this.transaction(() => {
      this.db.exec(SCHEMA);
      const row = this.db.prepare("SELECT value FROM info WHERE key = 'schema'").pluck().get() as string | undefined;
      const version = row === undefined ? 1 : Number(row);
      if (version > SCHEMA_VERSION) throw new StrataError('format', `catalog schema ${version} is newer than this strata supports (${SCHEMA_VERSION}); upgrade strata`);
      if (version < 2) this.db.exec(SCHEMA_2);
      if (version < 3) this.db.exec(SCHEMA_3);
      if (version < 4) this.db.exec(SCHEMA_4);
      if (version < 5) this.db.exec(SCHEMA_5);
      if (version < 6) this.db.exec(SCHEMA_6);
      if (version < 7) this.db.exec(SCHEMA_7);
      // Prune lists the trees of these first, or their subtrees would look unused.
      if (version < 2) this.db.exec('UPDATE snapshots SET blobs_known = 0');
      this.db.prepare("INSERT OR REPLACE INTO info(key, value) VALUES ('schema', ?)").run(String(SCHEMA_VERSION));
    });
  }

  private prepare() {
    const sql = {
      blockState: 'SELECT condemned FROM blocks WHERE id = ?',
      begin: 'BEGIN',
      commit: 'COMMIT',
      rescueBlock: 'UPDATE blocks SET condemned = NULL WHERE id = ?',
      relocateBlock: 'INSERT INTO blocks(id, pack, offset, length, size, kind) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET pack = excluded.pack, offset = excluded.offset, length = excluded.length, condemned = NULL',
      insertSnapshotBlob: 'INSERT OR IGNORE INTO snapshot_blobs(snapshot, block) VALUES (?, ?)',
      blockLocation: 'SELECT p.name AS pack, b.offset, b.length, b.size FROM blocks b JOIN packs p ON p.id = b.pack WHERE b.id = ?',
      blockWhere: 'SELECT p.name AS pack, p.size AS packSize, b.offset, b.length, b.condemned FROM blocks b JOIN packs p ON p.id = b.pack WHERE b.id = ?',
      insertSpare: 'INSERT OR IGNORE INTO spares(id, pack, offset, length, size, kind) SELECT ?, ?, ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM blocks WHERE id = ? AND pack <> ?)',
      spares: 'SELECT p.name AS pack, s.offset, s.length, s.size FROM spares s JOIN packs p ON p.id = s.pack WHERE s.id = ? ORDER BY s.pack DESC',
      insertPack: 'INSERT INTO packs(name, size) VALUES (?, ?)',
      insertBlock: 'INSERT OR IGNORE INTO blocks(id, pack, offset, length, size, kind) VALUES (?, ?, ?, ?, ?, ?)',
      insertSnapshot: 'INSERT INTO snapshots(id, time, lineage, meta, parent, committed, pid, lease) VALUES (?, ?, ?, ?, ?, 0, ?, ?)',
      inherit: 'UPDATE snapshots SET inherits = 1 WHERE seq = ?',
      inheritance: 'SELECT parent, inherits FROM snapshots WHERE seq = ?',
      dataVersion: 'PRAGMA data_version',
      versionsOfPath: 'SELECT id, snapshot, size, depth FROM versions WHERE path = ?',
      commitSnapshot: 'UPDATE snapshots SET committed = 1, root = ?, record = ?, meta = ? WHERE seq = ?',
      snapshots: 'SELECT seq, id, time, lineage, meta, root, parent FROM snapshots WHERE committed = 1 ORDER BY time, seq',
      snapshotBySeq: 'SELECT seq, id, time, lineage, meta, root, parent FROM snapshots WHERE seq = ?',
      snapshotsByPrefix: "SELECT seq, id, time, lineage, meta, root, parent FROM snapshots WHERE committed = 1 AND id >= ? AND id < ? || 'g' ORDER BY time",
      parentCandidate: 'SELECT seq, id, time, lineage, meta, root, parent FROM snapshots WHERE committed = 1 AND lineage = ? AND time <= ? ORDER BY time DESC, seq DESC LIMIT 1',
      insertVersion: 'INSERT INTO versions(snapshot, path, size, toc, depth) VALUES (?, ?, ?, ?, ?)',
      version: 'SELECT id, snapshot, size, depth FROM versions WHERE snapshot = ? AND path = ?',
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
    // Prepared on first use: a short command (cat of one range) needs only a few.
    const cache = new Map<string, Database.Statement>();
    return new Proxy({} as Record<keyof typeof sql, Database.Statement>, {
      get: (_, name: string) => {
        let st = cache.get(name);
        if (!st) cache.set(name, (st = this.db.prepare(sql[name as keyof typeof sql])));
        return st;
      },
    });
  }

  /** Runs `fn`, turning SQLite's "busy" into a typed "locked" error. */
  guard<T>(fn: () => T): T {
    try {
      return fn();
    } catch (e) {
      const code = (e as { code?: string }).code;
      if (code === 'SQLITE_BUSY' || code === 'SQLITE_LOCKED') throw locked('repository catalog is locked by another process');
      if (code?.startsWith('SQLITE_READONLY')) throw new StrataError('read_only', 'the repository is read-only here (catalog.db cannot be written)');
      if (code === 'SQLITE_CORRUPT' || code === 'SQLITE_NOTADB') throw new StrataError('catalog_damaged', 'catalog.db is damaged; run "strata rebuild-catalog" to rebuild it from the packs');
      throw e;
    }
  }

  transaction<T>(fn: () => T): T {
    return this.guard(() => this.db.transaction(fn).immediate());
  }

  /**
   * Closes the catalog. The last writer to leave turns WAL off, so a
   * repository at rest can be read where its directory cannot be written.
   */
  close(): void {
    if (!this.db.readonly) {
      try {
        this.db.pragma('busy_timeout = 0');
        this.db.pragma('journal_mode = DELETE');
      } catch {
        // Others still have it open: they will do it.
      }
    }
    this.db.close();
  }

  // --- blocks and packs

  /**
   * True when the block is stored. A block that prune has condemned is
   * rescued here (its mark cleared), so prune will not delete a block that a
   * running backup has just decided to reuse.
   */
  hasBlock(id: Uint8Array): boolean {
    const row = this.st.blockState.get(id) as { condemned: number | null } | undefined;
    if (!row) return false;
    if (row.condemned === null) return true;
    return this.guard(() => this.st.rescueBlock.run(id).changes > 0);
  }

  /**
   * hasBlock for many blocks at once. The lookups share one read
   * transaction: each statement on its own begins and ends one, which costs
   * more than the lookup. Condemned blocks are rescued after it.
   */
  hasBlocks(ids: readonly Uint8Array[]): boolean[] {
    const states = this.reading(() => ids.map((id) => this.st.blockState.get(id) as { condemned: number | null } | undefined));
    return states.map((row, i) => (row === undefined ? false : row.condemned === null ? true : this.hasBlock(ids[i]!)));
  }

  /** blockLocation for many blocks, in one read transaction. */
  blockLocations(ids: readonly Uint8Array[]): (BlockLocation | undefined)[] {
    return this.reading(() => ids.map((id) => this.st.blockLocation.get(id) as BlockLocation | undefined));
  }

  /** Runs read-only statements in one read transaction (or the one already open). */
  private reading<T>(fn: () => T): T {
    if (this.db.inTransaction) return fn();
    this.st.begin.run();
    try {
      return fn();
    } finally {
      this.st.commit.run();
    }
  }

  /** A consistent copy of the whole catalog in a new file (to change a cache's copy and swap it in whole). */
  copyTo(file: string): void {
    this.db.prepare('VACUUM INTO ?').run(file);
  }

  /** The names of every pack the catalog knows (for a cache held against a store's listing). */
  packNames(): string[] {
    return this.db.prepare('SELECT name FROM packs').pluck().all() as string[];
  }

  packIndexed(name: string): boolean {
    return this.db.prepare('SELECT 1 FROM packs WHERE name = ?').get(name) !== undefined;
  }

  blockLocation(id: Uint8Array): BlockLocation | undefined {
    return this.st.blockLocation.get(id) as BlockLocation | undefined;
  }

  /**
   * Indexes a stored pack. With `relocate`, blocks already indexed elsewhere
   * move to this pack (prune's repacking); otherwise the first copy stays.
   */
  addPack(name: string, size: number, blobs: readonly { id: Buffer; kind: BlobKind; offset: number; length: number; size: number }[], relocate = false, spares?: ReadonlySet<string>): void {
    const insert = relocate ? this.st.relocateBlock : this.st.insertBlock;
    this.transaction(() => {
      const pack = Number(this.st.insertPack.run(name, size).lastInsertRowid);
      for (const b of blobs) {
        const kind = BLOB_KINDS.indexOf(b.kind);
        // Already indexed elsewhere, and the client says that copy fails for it: kept as a spare.
        if (insert.run(b.id, pack, b.offset, b.length, b.size, kind).changes === 0 && spares?.has(b.id.toString('hex'))) this.st.insertSpare.run(b.id, pack, b.offset, b.length, b.size, kind, b.id, pack);
      }
    });
  }

  /**
   * Where each block is, for a client that checks the claim before it leaves
   * the block out of a backup (condemned ones are rescued, as by hasBlock).
   */
  blockClaims(ids: readonly Uint8Array[]): ({ pack: string; packSize: number; offset: number; length: number } | undefined)[] {
    const rows = this.reading(() => ids.map((id) => this.st.blockWhere.get(id) as { pack: string; packSize: number; offset: number; length: number; condemned: number | null } | undefined));
    return rows.map((r, i) => {
      if (!r) return undefined;
      if (r.condemned !== null && !this.hasBlock(ids[i]!)) return undefined;
      return { pack: r.pack, packSize: r.packSize, offset: r.offset, length: r.length };
    });
  }

  /** The spare copies of a block (see SCHEMA_7), newest first. */
  spareLocations(id: Uint8Array): BlockLocation[] {
    return this.st.spares.all(id) as BlockLocation[];
  }



  // --- snapshots

  /** A pending snapshot, invisible to readers until committed; `lease` is its backup's. */
  /** With `inherits`, the snapshot will hold rows only for what changed since `parent` (see SCHEMA_5). */
  beginSnapshot(id: string, time: number, lineage: Buffer, meta: Buffer, parent: number | null, lease: string | null = null, inherits = false): number {
    return this.transaction(() => {
      const seq = Number(this.st.insertSnapshot.run(id, time, lineage, meta, parent, process.pid, lease).lastInsertRowid);
      if (inherits && parent !== null) this.st.inherit.run(seq);
      this.forgetChains();
      return seq;
    });
  }

  /** Makes a snapshot visible, with the blobs (trees, record) it uses. */
  commitSnapshot(seq: number, root: Buffer, record: Buffer, meta: Buffer, blobs: readonly Buffer[] = []): void {
    this.transaction(() => {
      for (const id of blobs) this.st.insertSnapshotBlob.run(seq, id);
      this.st.commitSnapshot.run(root, record, meta, seq);
    });
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

  /** Committed snapshots at or before `time`, newest first, at most `limit`. */
  snapshotsBefore(time: number, limit: number): SnapshotRow[] {
    return this.db
      .prepare('SELECT seq, id, time, lineage, meta, root, parent FROM snapshots WHERE committed = 1 AND time <= ? ORDER BY time DESC, seq DESC LIMIT ?')
      .all(time, limit) as SnapshotRow[];
  }

  parentCandidate(lineage: Buffer, time: number): SnapshotRow | undefined {
    return this.st.parentCandidate.get(lineage, time) as SnapshotRow | undefined;
  }

  // --- versions and TOCs

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
      for (const r of this.st.versionsOfPath.all(path) as VersionRow[]) {
        const at = chain.at.get(r.snapshot);
        if (at !== undefined && at < best) [best, row] = [at, r];
      }
    }
    return row && row.size !== GONE ? row : undefined;
  }

  /** Committed snapshots whose blobs (trees, record) were never listed: made before schema 3 recorded them. */
  snapshotsWithoutBlobList(): { seq: number; id: string; root: Buffer | null; record: Buffer | null }[] {
    return this.db.prepare('SELECT seq, id, root, record FROM snapshots WHERE blobs_known = 0 AND committed = 1').all() as { seq: number; id: string; root: Buffer | null; record: Buffer | null }[];
  }

  /** Records a snapshot's blobs, found by walking its trees (see snapshotsWithoutBlobList). */
  setBlobList(seq: number, ids: readonly Buffer[]): void {
    this.transaction(() => {
      const insert = this.db.prepare('INSERT OR IGNORE INTO snapshot_blobs(snapshot, block) VALUES (?, ?)');
      for (const id of ids) insert.run(seq, id);
      this.db.prepare('UPDATE snapshots SET blobs_known = 1 WHERE seq = ?').run(seq);
    });
  }

  /** The id of a snapshot's sealed record (null before it is committed). */
  snapshotRecord(seq: number): Buffer | null {
    return (this.db.prepare('SELECT record FROM snapshots WHERE seq = ?').pluck().get(seq) as Buffer | null | undefined) ?? null;
  }

  /** Points a snapshot at a new revision of its record, with its sealed metadata; the old record is left to prune. */
  setSnapshotRecord(seq: number, record: Buffer, meta: Buffer): void {
    this.transaction(() => {
      const old = this.snapshotRecord(seq);
      this.db.prepare('UPDATE snapshots SET record = ?, meta = ? WHERE seq = ?').run(record, meta, seq);
      this.db.prepare('INSERT OR IGNORE INTO snapshot_blobs(snapshot, block) VALUES (?, ?)').run(seq, record);
      if (old && !old.equals(record)) this.db.prepare('DELETE FROM snapshot_blobs WHERE snapshot = ? AND block = ?').run(seq, old);
    });
  }

  /** A version's row as it is stored: its snapshot, path id, size and sealed TOC. */
  versionRecord(version: number): { snapshot: number; path: Buffer; size: number; toc: Buffer | null } | undefined {
    return this.st.versionRecord.get(version) as { snapshot: number; path: Buffer; size: number; toc: Buffer | null } | undefined;
  }

  /** The snapshot's own row for `path` (a tombstone included), not looking at its parents. */
  ownVersion(snapshot: number, path: Buffer): VersionRow | undefined {
    return this.st.version.get(snapshot, path) as VersionRow | undefined;
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

  /** Where versions of a snapshot are looked for: itself, then its parents while each inherits. */
  private chain(snapshot: number): Chain {
    // Another process may have forgotten snapshots (and a seq can be reused): its commits change data_version.
    const version = this.st.dataVersion.pluck().get() as number;
    if (version !== this.chainsVersion) {
      this.forgetChains();
      this.chainsVersion = version;
    }
    let chain = this.chains.get(snapshot);
    if (chain) return chain;
    chain = { order: [] };
    for (let seq: number | null = snapshot, seen = new Set<number>(); seq !== null && !seen.has(seq); ) {
      seen.add(seq);
      chain.order.push(seq);
      const row = this.inheritance(seq);
      seq = row?.inherits ? row.parent : null;
    }
    if (this.chains.size >= 64) this.chains.clear();
    this.chains.set(snapshot, chain);
    return chain;
  }

  private readonly chains = new Map<number, Chain>();
  /** Each snapshot's link to its parent, as chains were built (a chain of N shares N-1 links with its parent's). */
  private readonly links = new Map<number, { parent: number | null; inherits: number } | undefined>();
  private chainsVersion = -1;

  private forgetChains(): void {
    this.chains.clear();
    this.links.clear();
  }

  /** A snapshot's parent and whether it inherits from it (a catalog older than schema 5, read-only here, has no inheritance). */
  private inheritance(seq: number): { parent: number | null; inherits: number } | undefined {
    if (this.links.has(seq)) return this.links.get(seq);
    let link: { parent: number | null; inherits: number } | undefined;
    try {
      link = this.st.inheritance.get(seq) as { parent: number | null; inherits: number } | undefined;
    } catch {
      link = undefined;
    }
    if (this.links.size >= 100_000) this.links.clear();
    this.links.set(seq, link);
    return link;
  }

  /**
   * Committed snapshots whose parent is `seq`, and whether each inherits. (A
   * pending one is either running, and then its parent is not forgotten, or
   * abandoned, and then prune removes it.)
   */
  children(seq: number): { seq: number; inherits: number }[] {
    return this.db.prepare('SELECT seq, inherits FROM snapshots WHERE parent = ? AND committed = 1').all(seq) as { seq: number; inherits: number }[];
  }

  /**
   * A snapshot is going: its children now descend from its parent, and one
   * inherits only if it did too (a child of a snapshot with every row got
   * every row it lacked handed down, see forget's passOn).
   */
  relink(seq: number): void {
    const row = this.inheritance(seq);
    const parent = row?.parent ?? null;
    this.db.prepare('UPDATE snapshots SET parent = ?, inherits = inherits * ? WHERE parent = ?').run(parent, parent !== null && row?.inherits ? 1 : 0, seq);
    this.forgetChains();
  }

  /** A snapshot's own rows, tombstones included, with their paths. */
  ownRows(seq: number): (VersionRow & { path: Buffer })[] {
    return this.db.prepare('SELECT id, snapshot, path, size, depth FROM versions WHERE snapshot = ?').all(seq) as (VersionRow & { path: Buffer })[];
  }

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

  /** Records that `path`, a file of their parents, is not in these snapshots (inside a transaction). */
  insertTombstones(snapshots: readonly number[], path: Buffer): void {
    for (const s of snapshots) if (!this.ownVersion(s, path)) this.st.insertVersion.run(s, path, GONE, null, 0);
  }

  versionById(id: number): VersionRow | undefined {
    return this.st.versionById.get(id) as VersionRow | undefined;
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
    const id = Number(this.st.insertVersion.run(v.snapshot, v.path, v.size, v.toc, 0).lastInsertRowid);
    const seen = new Set<number>();
    let depth = 0;
    for (const e of v.rows()) {
      for (const t of [e.target, e.root]) {
        if (t === null || seen.has(t)) continue;
        if (!this.st.versionById.get(t)) throw new StrataError('stale_target', `version ${t} is gone`);
        seen.add(t);
      }
      depth = Math.max(depth, e.depth);
      this.st.insertToc.run(id, e.start, e.end, e.block, e.target, e.target_start, e.root, e.root_start, e.depth);
    }
    if (depth > 0) this.st.setVersionDepth.run(depth, id);
    for (const b of v.segments ?? []) this.st.insertSnapshotBlob.run(v.snapshot, b);
    return id;
  }

  /** The entry of `version` that contains `offset`, if any. */
  tocAt(version: number, offset: number): TocRow | undefined {
    return this.st.tocAt.get(version, offset) as TocRow | undefined;
  }

  /**
   * A page of a version's rows from `from` on, as plain arrays: the fast way
   * through long runs of rows (a Buffer per block id costs more than the row).
   * See TocSpan.
   */
  tocSpans(version: number, from: number, limit: number): TocSpan[] {
    return this.st.tocSpans.raw(true).all(version, from, limit) as TocSpan[];
  }

  /** Every row of each of `versions`, in one read (a backup's parent versions of a directory's files). */
  tocSpansOfMany(versions: readonly number[]): Map<number, TocSpan[]> {
    const out = new Map<number, TocSpan[]>();
    for (const [version, ...span] of this.st.tocSpansOfMany.raw(true).all(JSON.stringify(versions)) as [number, ...TocSpan][]) {
      let rows = out.get(version);
      if (!rows) out.set(version, (rows = []));
      rows.push(span);
    }
    return out;
  }

  /** tocAt() as a TocSpan. */
  tocSpanAt(version: number, offset: number): TocSpan | undefined {
    return this.st.tocSpanAt.raw(true).get(version, offset) as TocSpan | undefined;
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

  /** Rows of other versions whose ref targets `version` or whose shortcut lands in it. */
  rowsPointingAt(version: number): (TocRow & { version: number })[] {
    return this.db
      .prepare('SELECT version, start, end, block, target, target_start, root, root_start, depth FROM toc WHERE (target = ? OR root = ?) AND version != ?')
      .all(version, version, version) as (TocRow & { version: number })[];
  }

  replaceRows(version: number, remove: readonly number[], add: readonly TocRow[]): void {
    const del = this.db.prepare('DELETE FROM toc WHERE version = ? AND start = ?');
    for (const start of remove) del.run(version, start);
    for (const e of add) this.st.insertToc.run(version, e.start, e.end, e.block, e.target, e.target_start, e.root, e.root_start, e.depth);
  }

  updateVersionDepth(version: number): void {
    this.db.prepare('UPDATE versions SET depth = (SELECT COALESCE(MAX(depth), 0) FROM toc WHERE version = ?) WHERE id = ?').run(version, version);
  }

  /** Points a version at a new sealed TOC; the old one's segments (if any) are let go. */
  setVersionToc(version: number, toc: Buffer, segments: readonly Buffer[] = [], oldSegments: readonly Buffer[] = []): void {
    this.guard(() => {
      this.db.prepare('UPDATE versions SET toc = ? WHERE id = ?').run(toc, version);
      const snapshot = (this.st.versionById.get(version) as { snapshot: number }).snapshot;
      const drop = this.db.prepare('DELETE FROM snapshot_blobs WHERE snapshot = ? AND block = ?');
      for (const b of oldSegments) drop.run(snapshot, b);
      for (const b of segments) this.st.insertSnapshotBlob.run(snapshot, b);
    });
  }

  deleteVersion(version: number): void {
    this.db.prepare('DELETE FROM toc WHERE version = ?').run(version);
    this.db.prepare('DELETE FROM stale_tocs WHERE version = ?').run(version);
    this.db.prepare('DELETE FROM versions WHERE id = ?').run(version);
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

  /** Removes a snapshot row and what hangs off it (its versions must be gone or going). */
  deleteSnapshot(seq: number): void {
    this.forgetChains();
    for (const v of this.db.prepare('SELECT id FROM versions WHERE snapshot = ?').pluck().all(seq) as number[]) this.deleteVersion(v);
    this.db.prepare('DELETE FROM snapshot_blobs WHERE snapshot = ?').run(seq);
    this.db.prepare('DELETE FROM snapshots WHERE seq = ?').run(seq);
  }

  /** Pending snapshots (not committed), with the lease of the backup writing each. */
  pendingSnapshots(): { seq: number; id: string; lease: string | null; pid: number | null }[] {
    return this.db.prepare('SELECT seq, id, lease, pid FROM snapshots WHERE committed = 0').all() as { seq: number; id: string; lease: string | null; pid: number | null }[];
  }

  toc(version: number): TocRow[] {
    return this.st.tocAll.all(version) as TocRow[];
  }

  /** A version's rows, read a page at a time (for TOCs too long to hold). */
  *tocPages(version: number, page = 4096): Generator<TocRow> {
    let after = -1;
    while (true) {
      const rows = this.st.tocAfter.all(version, after, Number.MAX_SAFE_INTEGER, page) as TocRow[];
      yield* rows;
      if (rows.length < page) return;
      after = rows[rows.length - 1]!.start;
    }
  }
}
