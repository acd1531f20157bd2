/**
 * Read-only SQL on a backed-up SQLite database, reading only the pages a
 * query touches: SQLite compiled to WebAssembly (wa-sqlite's asynchronous
 * build) with a file system of its own (a VFS) whose reads are range reads
 * of the version. The file is told to SQLite as immutable, so it takes no
 * locks and looks for no journal.
 *
 * A database in WAL mode whose -wal file was backed up beside it has its
 * committed frames applied here: page reads are answered from the last
 * committed frame of a page, as SQLite itself would read them, never from a
 * stale page of the main file. The WAL's checksums and salts say which
 * frames are committed; a WAL that is damaged in its committed part cannot
 * be told from one that ends there, so as SQLite does, frames after the
 * first bad one are not applied.
 */
import { createRequire } from 'node:module';
import * as fs from 'node:fs';
import * as v8 from 'node:v8';
import { StrataError } from '../errors.js';
import type { RangeReader } from './reader.js';

export type SqlValue = number | string | null | Uint8Array | bigint;

export interface SqlResult {
  columns: string[];
  rows: SqlValue[][];
}

export interface SqlTable {
  name: string;
  type: 'table' | 'view';
  columns: string[];
  rows?: number;
}

/** The WAL's committed frames: where each page's latest committed image is in the WAL file. */
interface WalView {
  reader: RangeReader;
  pageSize: number;
  frames: Map<number, number>;
  /** The database's size in pages at the last commit. */
  pages: number;
}

// wa-sqlite's result codes and flags (sqlite3.h).
const SQLITE_OK = 0;
const SQLITE_ROW = 100;
const SQLITE_CANTOPEN = 14;
const SQLITE_IOERR = 10;
const SQLITE_IOERR_SHORT_READ = 522;
const SQLITE_READONLY = 8;
const SQLITE_OPEN_READONLY = 0x1;
const SQLITE_OPEN_MAIN_DB = 0x100;
const SQLITE_IOCAP_IMMUTABLE = 0x2000;

interface Api {
  open_v2(name: string, flags?: number, vfs?: string): Promise<number>;
  close(db: number): Promise<number>;
  exec(db: number, sql: string): Promise<number>;
  statements(db: number, sql: string): AsyncIterable<number>;
  step(stmt: number): Promise<number>;
  row(stmt: number): SqlValue[];
  column_names(stmt: number): string[];
  vfs_register(vfs: object, makeDefault?: boolean): number;
  progress_handler(db: number, ops: number, handler: ((userData: unknown) => number) | null, userData: unknown): void;
}

interface Engine {
  api: Api;
  vfs: StrataVfs;
}

let engine: Promise<Engine> | undefined;

/**
 * SQLite in WebAssembly, loaded once per process with its file system
 * registered. Its code runs as V8's baseline compiler makes it (Liftoff):
 * left to tier up, V8 compiles the hot functions of this large module again
 * in the background, and a process cannot exit until that is done, about a
 * second after a point query has answered (measured; a scan of a table ran
 * no slower). Node 20 cannot serialize a compiled module, so there is no
 * compiled code to keep on disk; compiling it afresh takes some 15 ms.
 */
function loadEngine(): Promise<Engine> {
  engine ??= (async () => {
    v8.setFlagsFromString('--liftoff-only');
    const require = createRequire(import.meta.url);
    const wasmBinary = fs.readFileSync(require.resolve('wa-sqlite/dist/wa-sqlite-async.wasm'));
    // Modules of their own (ES modules, a .wasm beside them): loaded at run time, never bundled.
    const factory = (await import('wa-sqlite/dist/wa-sqlite-async.mjs' as string)) as { default: (o: object) => Promise<unknown> };
    const sqlite = (await import('wa-sqlite' as string)) as { Factory: (m: unknown) => Api };
    const vfsBase = (await import('wa-sqlite/src/VFS.js' as string)) as { Base: new () => object };
    const api = sqlite.Factory(await factory.default({ wasmBinary }));
    const vfs = makeVfs(vfsBase.Base);
    api.vfs_register(vfs, false);
    return { api, vfs };
  })();
  return engine;
}

interface OpenFile {
  reader: RangeReader;
  wal?: WalView;
  /** The database's header says WAL mode (bytes 18 and 19 are 2): shown to SQLite as rollback mode. */
  legacyHeader: boolean;
  /** An error a read met: thrown to the caller instead of SQLite's plain I/O error. */
  failure?: unknown;
}

interface StrataVfs {
  name: string;
  files: Map<string, OpenFile>;
}

function makeVfs(Base: new () => object): StrataVfs {
  class Vfs extends (Base as new () => { handleAsync(f: () => Promise<number>): number }) {
    name = 'strata';
    files = new Map<string, OpenFile>();
    private readonly open = new Map<number, OpenFile>();

    xOpen(name: string | null, fileId: number, flags: number, pOutFlags: DataView): number {
      const f = name ? this.files.get(name) : undefined;
      if (!f || !(flags & SQLITE_OPEN_MAIN_DB)) return SQLITE_CANTOPEN;
      this.open.set(fileId, f);
      pOutFlags.setInt32(0, SQLITE_OPEN_READONLY, true);
      return SQLITE_OK;
    }

    xClose(fileId: number): number {
      this.open.delete(fileId);
      return SQLITE_OK;
    }

    xRead(fileId: number, pData: Uint8Array, iOffset: number): number {
      return this.handleAsync(async () => {
        const f = this.open.get(fileId);
        if (!f) return SQLITE_IOERR;
        try {
          const n = await readPage(f, pData, iOffset);
          if (n < pData.length) {
            pData.fill(0, n);
            return SQLITE_IOERR_SHORT_READ;
          }
          return SQLITE_OK;
        } catch (e) {
          f.failure ??= e;
          return SQLITE_IOERR;
        }
      });
    }

    xWrite(): number {
      return SQLITE_READONLY;
    }

    xTruncate(): number {
      return SQLITE_READONLY;
    }

    xSync(): number {
      return SQLITE_OK;
    }

    xFileSize(fileId: number, pSize64: DataView): number {
      const f = this.open.get(fileId);
      if (!f) return SQLITE_IOERR;
      pSize64.setBigInt64(0, BigInt(sizeOf(f)), true);
      return SQLITE_OK;
    }

    xLock(): number {
      return SQLITE_OK;
    }

    xUnlock(): number {
      return SQLITE_OK;
    }

    xCheckReservedLock(_fileId: number, pResOut: DataView): number {
      pResOut.setInt32(0, 0, true);
      return SQLITE_OK;
    }

    xSectorSize(): number {
      return 4096;
    }

    xDeviceCharacteristics(): number {
      return SQLITE_IOCAP_IMMUTABLE;
    }

    xAccess(_name: string, _flags: number, pResOut: DataView): number {
      // No journal, no WAL, no anything beside the database: what it needs came in through OpenFile.
      pResOut.setInt32(0, 0, true);
      return SQLITE_OK;
    }

    xDelete(): number {
      return SQLITE_READONLY;
    }
  }
  return new Vfs() as unknown as StrataVfs;
}

function sizeOf(f: OpenFile): number {
  return f.wal ? f.wal.pages * f.wal.pageSize : f.reader.size;
}

/** Bytes at `offset` of the database as its last commit left it: from the WAL where a committed frame has the page. */
async function readPage(f: OpenFile, out: Uint8Array, offset: number): Promise<number> {
  const size = sizeOf(f);
  const want = Math.max(0, Math.min(out.length, size - offset));
  const wal = f.wal;
  let done = 0;
  while (done < want) {
    const at = offset + done;
    const pageSize = wal?.pageSize ?? want;
    const page = wal ? Math.floor(at / pageSize) + 1 : 0;
    const inPage = wal ? at % pageSize : 0;
    const n = wal ? Math.min(want - done, pageSize - inPage) : want;
    const frame = wal?.frames.get(page);
    let bytes: Buffer;
    if (frame !== undefined) bytes = await wal!.reader.read(frame + 24 + inPage, n);
    else if (at + n <= f.reader.size) bytes = await f.reader.read(at, n);
    else bytes = Buffer.concat([at < f.reader.size ? await f.reader.read(at, f.reader.size - at) : Buffer.alloc(0), Buffer.alloc(Math.min(n, at + n - f.reader.size))]).subarray(0, n);
    out.set(bytes, done);
    done += n;
  }
  // Bytes 18 and 19 (the read and write versions) are 2 in WAL mode: 1 lets SQLite read the file without a WAL of its own.
  if (f.legacyHeader) for (const b of [18, 19]) if (offset <= b && b < offset + want && out[b - offset] === 2) out[b - offset] = 1;
  return want;
}

/** The committed frames of a WAL file (https://sqlite.org/fileformat2.html#walformat), or undefined when it holds none. */
export async function walView(reader: RangeReader, dbPageSize: number): Promise<WalView | undefined> {
  if (reader.size < 32) return undefined;
  const h = await reader.read(0, 32);
  const magic = h.readUInt32BE(0);
  if (magic !== 0x377f0682 && magic !== 0x377f0683) throw new StrataError('wrong_format', `${reader.path} is not a SQLite WAL file`);
  const big = magic === 0x377f0683;
  const pageSize = h.readUInt32BE(8);
  if (pageSize !== dbPageSize) throw new StrataError('integrity', `${reader.path}: its pages are ${pageSize} bytes, the database's ${dbPageSize}`);
  let [s0, s1] = walChecksum(h.subarray(0, 24), big, 0, 0);
  if (s0 !== h.readUInt32BE(24) || s1 !== h.readUInt32BE(28)) return undefined;
  const salt = h.subarray(16, 24);
  const frames = new Map<number, number>();
  let pending = new Map<number, number>();
  let pages = 0;
  const frameSize = 24 + pageSize;
  for (let at = 32; at + frameSize <= reader.size; at += frameSize) {
    const frame = await reader.read(at, frameSize);
    if (!frame.subarray(8, 16).equals(salt)) break;
    [s0, s1] = walChecksum(frame.subarray(0, 8), big, s0, s1);
    [s0, s1] = walChecksum(frame.subarray(24), big, s0, s1);
    if (s0 !== frame.readUInt32BE(16) || s1 !== frame.readUInt32BE(20)) break;
    pending.set(frame.readUInt32BE(0), at);
    const commit = frame.readUInt32BE(4);
    if (commit > 0) {
      for (const [p, o] of pending) frames.set(p, o);
      pending = new Map();
      pages = commit;
    }
  }
  return pages > 0 ? { reader, pageSize, frames, pages } : undefined;
}

/** SQLite's WAL checksum: pairs of 32-bit words in the WAL's byte order. */
function walChecksum(b: Buffer, big: boolean, s0: number, s1: number): [number, number] {
  for (let i = 0; i + 8 <= b.length; i += 8) {
    const x0 = big ? b.readUInt32BE(i) : b.readUInt32LE(i);
    const x1 = big ? b.readUInt32BE(i + 4) : b.readUInt32LE(i + 4);
    s0 = (s0 + x0 + s1) >>> 0;
    s1 = (s1 + x1 + s0) >>> 0;
  }
  return [s0, s1];
}

let opened = 0;
/**
 * SQLite's asynchronous build runs one call at a time: a second connection
 * used while the first waits for a read would corrupt its stack. Callers
 * (the web app's requests) take turns here.
 */
let turn: Promise<unknown> = Promise.resolve();

/** Runs `f` in its turn: no other call into SQLite runs until it is done. */
function inTurn<T>(f: () => Promise<T>): Promise<T> {
  const mine = turn.then(f);
  turn = mine.catch(() => undefined);
  return mine;
}

/** A connection to the database `reader` reads (with its WAL's committed frames, when given), for `use` alone. */
function withDatabase<T>(reader: RangeReader, wal: RangeReader | undefined, use: (api: Api, db: number, file: OpenFile) => Promise<T>): Promise<T> {
  return inTurn(async () => {
    const c = await connect(reader, wal);
    try {
      return await use(c.api, c.db, c.file);
    } catch (e) {
      throw c.file.failure ?? sqlError(reader, e);
    } finally {
      await disconnect(c);
    }
  });
}

interface Connection {
  api: Api;
  db: number;
  file: OpenFile;
  /** The file's name in the VFS. */
  name: string;
}

/** Opens the database read-only (in a turn). */
async function connect(reader: RangeReader, wal: RangeReader | undefined): Promise<Connection> {
  const header = await reader.read(0, Math.min(100, reader.size));
  if (header.length < 100 || header.toString('latin1', 0, 16) !== 'SQLite format 3\0') throw new StrataError('wrong_format', `${reader.path} is not a SQLite database`);
  const rawPageSize = header.readUInt16BE(16);
  const pageSize = rawPageSize === 1 ? 65536 : rawPageSize;
  const walMode = header[18] === 2 || header[19] === 2;
  // SQLite keeps the pages it reads: a read of more than a page would fetch what no query asked for.
  reader.align(Math.max(4096, pageSize));
  const file: OpenFile = { reader, legacyHeader: walMode };
  if (wal && walMode) {
    const view = await walView(wal, pageSize);
    if (view) file.wal = view;
  }
  const { api, vfs } = await loadEngine();
  const name = `/strata-${++opened}.db`;
  vfs.files.set(name, file);
  let db: number | undefined;
  try {
    db = await api.open_v2(name, SQLITE_OPEN_READONLY, vfs.name);
    await api.exec(db, 'PRAGMA query_only = 1');
    return { api, db, file, name };
  } catch (e) {
    if (db !== undefined) await api.close(db).catch(() => undefined);
    vfs.files.delete(name);
    throw file.failure ?? sqlError(reader, e);
  }
}

/** Closes a connection (in a turn). */
async function disconnect(c: Connection): Promise<void> {
  await c.api.close(c.db).catch(() => undefined);
  (await loadEngine()).vfs.files.delete(c.name);
}

function sqlError(reader: RangeReader, e: unknown): unknown {
  if (e instanceof StrataError) return e;
  const message = (e as Error).message ?? String(e);
  // A page that does not parse, in a file whose bytes were checked: the database was damaged when it was backed up.
  if (/malformed|corrupt|not a database/i.test(message)) return new StrataError('integrity', `${reader.path}: ${message}`);
  return new StrataError('usage', `${reader.path}: ${message}`);
}

export interface QueryLimits {
  /** Stop the query once it has run this long (an error, request_timeout): SQLite is interrupted between steps. */
  timeoutMs?: number;
}

/**
 * The rows of a read-only query; `onRow` is given each (default: kept in
 * `rows`). `onRow` returning false ends the query there, as if it had no
 * more rows (a page of results was filled).
 */
export async function runQuery(reader: RangeReader, wal: RangeReader | undefined, sql: string, onRow?: (row: SqlValue[], columns: string[]) => void | boolean, limits: QueryLimits = {}): Promise<SqlResult> {
  return withDatabase(reader, wal, async (api, db, file) => {
    const out: SqlResult = { columns: [], rows: [] };
    let timedOut = false;
    if (limits.timeoutMs !== undefined) {
      // Asked every 1,000 virtual machine steps: a query that scans or loops without returning rows is stopped too.
      const deadline = Date.now() + limits.timeoutMs;
      api.progress_handler(db, 1000, () => (Date.now() > deadline ? ((timedOut = true), 1) : 0), null);
    }
    try {
      statements: for await (const stmt of api.statements(db, sql)) {
        out.columns = api.column_names(stmt);
        out.rows = [];
        for (let rc = await api.step(stmt); rc === SQLITE_ROW; rc = await api.step(stmt)) {
          if (file.failure) throw file.failure;
          const row = api.row(stmt).map((v) => (v instanceof Uint8Array ? Uint8Array.from(v) : v));
          if (onRow) {
            if (onRow(row, out.columns) === false) break statements;
          } else out.rows.push(row);
        }
      }
    } catch (e) {
      if (timedOut) throw new StrataError('request_timeout', `${reader.path}: the query ran longer than ${limits.timeoutMs! / 1000} s and was stopped`);
      throw e;
    } finally {
      if (limits.timeoutMs !== undefined) api.progress_handler(db, 0, null, null);
    }
    return out;
  });
}

/** Tables and views, with their columns and, for tables, the number of rows. */
export async function sqlTables(reader: RangeReader, wal: RangeReader | undefined, opts: { count?: boolean } = {}): Promise<SqlTable[]> {
  return withDatabase(reader, wal, async (api, db) => {
    const all = async (sql: string) => {
      const rows: SqlValue[][] = [];
      for await (const stmt of api.statements(db, sql)) for (let rc = await api.step(stmt); rc === SQLITE_ROW; rc = await api.step(stmt)) rows.push(api.row(stmt));
      return rows;
    };
    const out: SqlTable[] = [];
    for (const [name, type] of await all("SELECT name, type FROM sqlite_schema WHERE type IN ('table', 'view') AND name NOT LIKE 'sqlite_%' ORDER BY name")) {
      const quoted = `"${String(name).replace(/"/g, '""')}"`;
      const columns = (await all(`PRAGMA table_info(${quoted})`)).map((r) => String(r[1]));
      const t: SqlTable = { name: String(name), type: type === 'view' ? 'view' : 'table', columns };
      if (opts.count && type === 'table') t.rows = Number((await all(`SELECT count(*) FROM ${quoted}`))[0]![0]);
      out.push(t);
    }
    return out;
  });
}

/** Rows a cursor steps in one turn: other connections take theirs between. */
const ROWS_PER_TURN = 256;

/** What stops a cursor's query: set before each page, so a cursor's time is counted a page at a time. */
export interface QueryControl {
  /** Stop at this time (ms since the epoch): an error, request_timeout. */
  deadline?: number;
  /** The bound told in that error, in ms. */
  timeoutMs?: number;
  /** Told by the cursor: the columns of the statement it is stepping (known before its first row). */
  columns?: string[];
}

/**
 * A read-only query's rows, one at a time, each with its statement's
 * columns: a cursor a caller may keep open between pages. The connection
 * stays open while it is; SQLite is stepped a batch of rows at a time, each
 * batch in its own turn, so an idle cursor keeps no other query waiting.
 * Returning the generator closes the connection.
 */
export async function* queryRows(reader: RangeReader, wal: RangeReader | undefined, sql: string, control: QueryControl = {}): AsyncGenerator<{ columns: string[]; row: SqlValue[] }> {
  const c = await inTurn(() => connect(reader, wal));
  const { api, db, file } = c;
  let timedOut = false;
  let statements: AsyncIterator<number> | undefined;
  let stmt: number | undefined;
  let columns: string[] = [];
  try {
    while (true) {
      const batch = await inTurn(async () => {
        const out: { columns: string[]; row: SqlValue[] }[] = [];
        // Asked every 1,000 virtual machine steps: a query that scans or loops without returning rows is stopped too.
        api.progress_handler(db, 1000, () => (control.deadline !== undefined && Date.now() > control.deadline ? ((timedOut = true), 1) : 0), null);
        try {
          statements ??= api.statements(db, sql)[Symbol.asyncIterator]();
          while (out.length < ROWS_PER_TURN) {
            if (stmt === undefined) {
              const n = await statements.next();
              if (n.done) return { out, done: true };
              stmt = n.value;
              columns = control.columns = api.column_names(stmt);
            }
            const rc = await api.step(stmt);
            if (file.failure) throw file.failure;
            if (rc !== SQLITE_ROW) stmt = undefined;
            else out.push({ columns, row: api.row(stmt).map((v) => (v instanceof Uint8Array ? Uint8Array.from(v) : v)) });
          }
          return { out, done: false };
        } catch (e) {
          if (timedOut) throw new StrataError('request_timeout', `${reader.path}: the query ran longer than ${(control.timeoutMs ?? 0) / 1000} s and was stopped`);
          throw file.failure ?? sqlError(reader, e);
        } finally {
          api.progress_handler(db, 0, null, null);
        }
      });
      yield* batch.out;
      if (batch.done) return;
    }
  } finally {
    await inTurn(async () => {
      await statements?.return?.(undefined).catch(() => undefined);
      await disconnect(c);
    });
  }
}
