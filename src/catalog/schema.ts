/**
 * The catalog's database: the SQLite file (WAL), its schema and the
 * migrations from every older one, the pragmas a catalog is opened with, and
 * how statements are prepared (once, on first use), run in transactions and
 * turned into typed errors. The tables are read and written by the modules
 * above it: blocks.ts, snapshots.ts, version-rows.ts.
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

const SCHEMA_VERSION = 8;

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

/**
 * Schema 8: leaner version indexes. Versions were indexed twice by path id
 * (a 32-byte key in each of UNIQUE(snapshot, path) and versions_path) and
 * once by sealed TOC id, which no query asks for (prune's list of TOCs in use
 * is one pass). Now (path, snapshot) is the unique index and versions are
 * found by snapshot through a small index of integers: a third less catalog
 * per file version, and one random-order index fewer to write per backup.
 */
const SCHEMA_8 = `
DROP INDEX IF EXISTS versions_toc;
DROP INDEX IF EXISTS versions_path;
CREATE TABLE versions_8(
  id INTEGER PRIMARY KEY, snapshot INTEGER NOT NULL, path BLOB NOT NULL,
  size INTEGER NOT NULL, toc BLOB, depth INTEGER NOT NULL DEFAULT 0
);
INSERT INTO versions_8(id, snapshot, path, size, toc, depth) SELECT id, snapshot, path, size, toc, depth FROM versions;
DROP TABLE versions;
ALTER TABLE versions_8 RENAME TO versions;
CREATE UNIQUE INDEX versions_path ON versions(path, snapshot);
CREATE INDEX versions_snapshot ON versions(snapshot);
`;

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

export interface CatalogOptions {
  readonly?: boolean;
  busyTimeoutMs?: number;
  /** For a command that only reads: statements share short read transactions (see windowed). Always so on a read-only file. */
  readWindows?: boolean;
}

/** The catalog's database, opened (and on a writable one, migrated): the base the tables' modules build on. */
export class CatalogDb {
  readonly db: Database.Database;
  private readonly dbSt = this.statements({ begin: 'BEGIN', commit: 'COMMIT' });

  private readonly readWindows: boolean;

  constructor(file: string, opts: CatalogOptions = {}) {
    this.readWindows = opts.readonly === true || opts.readWindows === true;
    const nativeBinding = sqliteAddon();
    this.db = new Database(file, { readonly: opts.readonly ?? false, fileMustExist: opts.readonly ?? false, ...(nativeBinding ? { nativeBinding } : {}) });
    this.writesEndWindows();
    const busyTimeoutMs = opts.busyTimeoutMs ?? 30_000;
    this.db.pragma(`busy_timeout = ${busyTimeoutMs}`);
    if (!opts.readonly) {
      this.guard(() => retryBusy(() => this.db.pragma('journal_mode = WAL'), busyTimeoutMs));
      this.db.pragma('synchronous = NORMAL');
      // 4 MiB of page cache, not the default 16: a backup's lookups are random anyway, and memory is bounded.
      this.db.pragma('cache_size = -4000');
      this.migrate();
    }
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
      if (version < 8) this.db.exec(SCHEMA_8);
      // Prune lists the trees of these first, or their subtrees would look unused.
      if (version < 2) this.db.exec('UPDATE snapshots SET blobs_known = 0');
      this.db.prepare("INSERT OR REPLACE INTO info(key, value) VALUES ('schema', ?)").run(String(SCHEMA_VERSION));
    });
  }

  /**
   * Statements of `sql`, each prepared on first use and kept: a short command
   * (cat of one range) needs only a few.
   */
  protected statements<K extends string>(sql: Record<K, string>): Record<K, Database.Statement> {
    const cache = new Map<string, Database.Statement>();
    return new Proxy({} as Record<K, Database.Statement>, {
      get: (_, name: string) => {
        let st = cache.get(name);
        if (!st) {
          st = this.db.prepare(sql[name as K]);
          if (this.readWindows) this.windowed(st);
          cache.set(name, st);
        }
        return st;
      },
    });
  }

  /** Whether statements share short read transactions (CatalogOptions.readWindows). */
  get windowedReads(): boolean {
    return this.readWindows;
  }

  /** A read window is open (see windowed). */
  private window = false;

  /**
   * For a command that only reads, the statements run until the event loop
   * next turns share one read transaction. On its own, each takes and drops
   * the file's shared lock and looks for a hot journal: some 12 µs and six
   * system calls a statement, half a second of a restore of 9,000 files. A
   * window lasts one turn at most, and ends before anything is written
   * (see writesEndWindows). (Not iterate(): an iteration may outlive the turn.)
   */
  private windowed(st: Database.Statement): void {
    const target = st as unknown as Record<string, (...args: unknown[]) => unknown>;
    for (const method of ['get', 'all'] as const) {
      const call = target[method]!;
      target[method] = (...args: unknown[]) => this.windowRead(() => call.apply(st, args));
    }
  }

  /**
   * Runs `fn` in the read window, opening one if no transaction is open. A
   * writer's point lookups made many times a turn (a backup asks for every
   * new block whether the repository has it) go through here too: some 9 µs
   * each on their own, 1 µs in a window.
   */
  protected windowRead<T>(fn: () => T): T {
    if (!this.db.inTransaction) {
      this.dbSt.begin.run();
      this.window = true;
      setImmediate(() => this.closeWindow());
    }
    return fn();
  }

  /**
   * Every statement that writes ends a read window before it runs: it must
   * not run in the window's snapshot (another process may have written
   * since, and the write would fail), nor be committed only with the window.
   * Transactions end it too (see transaction).
   */
  private writesEndWindows(): void {
    const prepare = this.db.prepare.bind(this.db);
    this.db.prepare = ((sql: string) => {
      const st = prepare(sql);
      if (st.reader || /^\s*(BEGIN|COMMIT)\s*$/i.test(sql)) return st;
      const run = st.run.bind(st);
      (st as { run: typeof run }).run = (...args: unknown[]) => {
        this.closeWindow();
        return run(...args);
      };
      return st;
    }) as typeof this.db.prepare;
  }

  private closeWindow(): void {
    if (!this.window) return;
    this.window = false;
    if (!this.db.open || !this.db.inTransaction) return;
    try {
      this.dbSt.commit.run();
    } catch {
      // A statement still running (none does here today): the window ends a turn later.
      this.window = true;
      setImmediate(() => this.closeWindow());
    }
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
    this.closeWindow();
    return this.guard(() => this.db.transaction(fn).immediate());
  }

  /** Runs read-only statements in one read transaction (or the one already open). */
  protected reading<T>(fn: () => T): T {
    if (this.db.inTransaction) return fn();
    this.dbSt.begin.run();
    try {
      return fn();
    } finally {
      this.dbSt.commit.run();
    }
  }

  /** A consistent copy of the whole catalog in a new file (to change a cache's copy and swap it in whole). */
  copyTo(file: string): void {
    this.db.prepare('VACUUM INTO ?').run(file);
  }

  /**
   * Closes the catalog. The last writer to leave turns WAL off, so a
   * repository at rest can be read where its directory cannot be written.
   */
  close(): void {
    this.closeWindow();
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
}
