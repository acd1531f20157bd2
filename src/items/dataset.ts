/**
 * One dataset of a snapshot (a mailbox, an archive, a database) opened by
 * what its content says it is, and its items: what `strata items`, `item`
 * and `sql` show. Everything is read through one RangeReader, whose
 * `fetched` is what the command cost.
 */
import { describeContent, detectDataset, HEAD_BYTES, openFileAt, TarWalk, type DatasetType, type Detected, type ItemIndex, type MboxMessage, type SnapshotTree, type TarEntry, type VersionFile, type When } from '../engine/snapshot-tree.js';
import { integrity, notFound, StrataError, usageError } from '../errors.js';
import type { Repository } from '../repo/repository.js';
import { fileBytes, fileSize, listDirectory, partitions } from './disk.js';
import { findMessage, mboxMessages, messageBytes } from './mbox.js';
import { Qcow2Image, type ByteSource } from './qcow2.js';
import { RangeReader } from './reader.js';
import { queryRows, runQuery, sqlTables, type QueryControl, type QueryLimits, type SqlResult, type SqlValue } from './sqlite.js';
import { findTarEntry, tarEntries } from './tar.js';
import { findZipEntry, zipEntryBytes, zipEntryStream } from './zip.js';

/** The types `items` and `item` read. */
export const ITEM_TYPES: readonly DatasetType[] = ['mbox', 'zip', 'tar', 'sqlite', 'disk', 'qcow2'];

export class Dataset {
  private constructor(
    readonly tree: SnapshotTree,
    readonly reader: RangeReader,
    readonly detected: Detected | undefined,
    /** What the file is, for a person (a dataset's `what`, or "gzip data", "text"...). */
    readonly what: string,
    private readonly extra: RangeReader[] = [],
  ) {}

  /** The file at `path` (absolute, in the snapshot) as it was at `at`, its type told from its first bytes. */
  static async open(repo: Repository, path: string, at: When): Promise<Dataset> {
    // The read plan a server sends with the file is for its last byte only: an item reader reads what its format says, not the file from its start.
    const { tree, file } = await openFileAt(repo, path, { at }, { suffix: 1 });
    return Dataset.of(tree, file);
  }

  /**
   * A file of a tree (a path, or a file already open) as a dataset: its
   * type told by the manifest (nothing of the file is read yet), or, for a
   * file it does not name, by its first bytes.
   */
  static async of(tree: SnapshotTree, file: string | VersionFile): Promise<Dataset> {
    const reader = new RangeReader(typeof file === 'string' ? await tree.open(file) : file);
    const ix = await tree.itemIndex(reader.file).catch((e: unknown) => {
      if (indexGone(e)) return undefined;
      throw e;
    });
    // The index, or else the manifest, says what it is: nothing of the file is read before its format's own reads (a zip's end).
    const known = ix ?? tree.datasetOf(reader.file);
    if (known) {
      const ds = new Dataset(tree, reader, { type: known.type, what: known.what }, `a ${known.what}`);
      ds.ix = ix ?? null;
      return ds;
    }
    const head = await reader.read(0, Math.min(HEAD_BYTES, reader.size));
    const ds = new Dataset(tree, reader, detectDataset(head), describeContent(head, reader.size));
    ds.ix = null;
    return ds;
  }

  get path(): string {
    return this.reader.path;
  }

  get size(): number {
    return this.reader.size;
  }

  get type(): DatasetType | undefined {
    return this.detected?.type;
  }

  /** Bytes of blocks read from the repository and the cache, for this dataset, its item index and any file read beside it (a WAL). */
  get fetched(): number {
    return this.reader.fetched + this.indexFetched + this.extra.reduce((n, r) => n + r.fetched, 0);
  }

  /** Bytes of the sealed item index read (part of `fetched`). */
  get indexFetched(): number {
    return (this.ix?.fetched ?? 0) + this.indexLeft;
  }

  /** Bytes of an index read before it was found incomplete and left for a scan. */
  private indexLeft = 0;

  /**
   * `use` on the item index, or `scan` when there is none, or when a blob
   * of it is not in the repository (a snapshot made by a strata that did
   * not list an inherited index's blobs as its own, whose parent was then
   * forgotten and pruned): the file holds the items all the same. A blob
   * that is there but damaged stays an integrity error.
   */
  private async viaIndex<T>(use: (ix: ItemIndex) => Promise<T>, scan: () => Promise<T>): Promise<T> {
    const ix = this.index();
    if (ix) {
      try {
        return await use(ix);
      } catch (e) {
        if (!indexGone(e)) throw e;
        this.leaveIndex(ix);
      }
    }
    return scan();
  }

  /** Whether items were found through a sealed item index rather than a scan. */
  get indexed(): boolean {
    return this.ix !== undefined && this.ix !== null;
  }

  private ix?: ItemIndex | null;

  /** The sealed item index of a mailbox or tar archive, when the backup made one. */
  /**
   * viaIndex for a listing: the index's items, or, once its blobs turn out
   * gone, the scan's from where the index's ended (both give a file's items
   * in the order they lie in it).
   */
  private async *streamViaIndex<T>(use: (ix: ItemIndex) => AsyncGenerator<T>, scan: () => AsyncGenerator<T>): AsyncGenerator<T> {
    const ix = this.index();
    let given = 0;
    if (ix) {
      try {
        for await (const item of use(ix)) {
          given++;
          yield item;
        }
        return;
      } catch (e) {
        if (!indexGone(e)) throw e;
        this.leaveIndex(ix);
      }
    }
    let n = 0;
    for await (const item of scan()) if (n++ >= given) yield item;
  }

  /** An index whose blobs are gone: what it fetched is counted, and reads go back to scanning. */
  private leaveIndex(ix: ItemIndex): void {
    this.indexLeft += ix.fetched;
    this.ix = null;
    this.reader.exact = false;
  }

  private index(): ItemIndex | undefined {
    return this.ix ?? undefined;
  }

  /** Bytes the format's reads asked for (rounded out to read blocks), here and beside it. */
  get requested(): number {
    return this.reader.requested + this.extra.reduce((n, r) => n + r.requested, 0);
  }

  /** `f` is told after each read of the repository, with what has been asked for so far. */
  onProgress(f: (requested: number) => void): void {
    this.reader.onRead = () => f(this.requested);
    this.progress = f;
  }

  private progress?: (requested: number) => void;

  /** The type this is, if it is one of `types`; else an error (wrong_format) that says what it is. */
  expect(types: readonly DatasetType[]): DatasetType {
    const t = this.type;
    if (t && types.includes(t)) return t;
    throw new StrataError('wrong_format', `${this.path} is ${this.what}, not ${list(types)}`);
  }

  /** Its items, as rows for a table or JSON; `match` keeps those with TEXT in a name, subject, sender or id. */
  async items(opts: { match?: string; inner?: string; count?: boolean } = {}): Promise<Record<string, unknown>[]> {
    const out: Record<string, unknown>[] = [];
    for await (const r of this.itemStream(opts)) out.push(r);
    return out;
  }

  /**
   * items() one at a time, as the format gives them: a mailbox's messages as
   * the pass over it (or its index) finds them, a zip's entries as its
   * central directory is read a window at a time, a tar's as its headers
   * are walked. A reader that stops early reads no further.
   */
  async *itemStream(opts: { match?: string; inner?: string; count?: boolean } = {}): AsyncGenerator<Record<string, unknown>> {
    const type = this.expect(ITEM_TYPES);
    if (opts.inner !== undefined && type !== 'zip' && type !== 'tar' && type !== 'disk' && type !== 'qcow2') throw usageError(`--path names a directory inside an archive or a disk image; ${this.path} is ${this.what}`);
    if (type === 'disk' || type === 'qcow2') {
      yield* await this.diskItems(opts.inner, opts.match);
      return;
    }
    const under = opts.inner?.replace(/^\/+/, '').replace(/\/*$/, '/');
    const inside = (name: string) => under === undefined || under === '/' || name.replace(/^\.\//, '').startsWith(under);
    const text = opts.match?.toLowerCase();
    const has = (...fields: (string | undefined)[]) => text === undefined || fields.some((f) => f?.toLowerCase().includes(text));
    if (type === 'mbox') {
      for await (const m of this.streamViaIndex((ix) => ix.all() as AsyncGenerator<MboxMessage>, () => mboxMessages(this.reader))) if (has(m.subject, m.from, m.messageId)) yield { ...m };
    } else if (type === 'zip') {
      for await (const e of zipEntryStream(this.reader)) if (inside(e.name) && has(e.name)) yield { name: e.name, size: e.size, compressedSize: e.compressedSize, mtime: e.mtime };
    } else if (type === 'tar') {
      for await (const e of this.streamViaIndex((ix) => ix.all() as AsyncGenerator<TarEntry>, () => tarEntries(this.reader))) {
        if (inside(e.name) && has(e.name)) yield { name: e.name, type: e.type, size: e.size, mtime: new Date(e.mtime * 1000).toISOString(), ...(e.linkname ? { linkname: e.linkname } : {}) };
      }
    } else {
      for (const t of await sqlTables(this.reader, await this.wal(), { count: opts.count })) if (has(t.name)) yield { ...t };
    }
  }

  /** One item's bytes (a message, an archive entry), a piece at a time, with its name and size where known. */
  async item(item: string): Promise<{ name: string; size?: number; bytes: AsyncGenerator<Buffer> }> {
    const type = this.expect(['mbox', 'zip', 'tar', 'disk', 'qcow2']);
    if (type === 'disk' || type === 'qcow2') {
      // The file system's stat gives the size: a range of the file is served without counting it first.
      const image = await this.image();
      return { name: item, size: await fileSize(image, item), bytes: fileBytes(image, item) };
    }
    if (type === 'mbox') {
      const m = await this.message(item);
      return { name: m.messageId ? `<${m.messageId}>` : `message ${m.number}`, bytes: messageBytes(this.reader, m) };
    }
    if (type === 'zip') {
      // The end record, the directory and the entry, each read as it is: rounded out, a read takes in the blocks of its neighbours.
      this.reader.exact = true;
      const e = await findZipEntry(this.reader, item);
      if (e.name.endsWith('/')) throw new StrataError('is_directory', `${e.name} is a directory in ${this.path}`);
      return { name: e.name, size: e.size, bytes: zipEntryBytes(this.reader, e) };
    }
    const e = await this.tarEntry(item);
    if (e.type === 'dir') throw new StrataError('is_directory', `${e.name} is a directory in ${this.path}`);
    if (e.type !== 'file') throw new StrataError('not_file', `${e.name} is a ${e.type === 'other' ? 'special file' : e.type} in ${this.path}${e.linkname ? ` (to ${e.linkname})` : ''}`);
    return { name: e.name, size: e.size, bytes: this.reader.stream(e.dataOffset, e.dataOffset + e.size) };
  }

  /** The message an ITEM names (a number, or a Message-ID), from the item index when there is one. */
  private message(item: string): Promise<MboxMessage> {
    return this.viaIndex((ix) => this.indexedMessage(ix, item), () => findMessage(this.reader, item));
  }

  private async indexedMessage(ix: ItemIndex, item: string): Promise<MboxMessage> {
    this.reader.exact = true;
    const id = item.replace(/^<|>$/g, '');
    const m = /^[0-9]+$/.test(item) ? await ix.message(Number(item)) : await ix.messageById(id);
    if (!m) throw notFound(/^[0-9]+$/.test(item) ? `${this.path} has no message ${item}` : `${this.path} has no message with Message-ID <${id}>`);
    // The index is this version's (its root says so); a message must still begin and end where it says.
    const bad = () => integrity(`${this.path}: its item index puts message ${m.number} at ${m.offset} (${m.size} bytes), where the file holds none`, { path: this.path });
    if (m.size < 5 || m.offset + m.size > this.size) throw bad();
    if ((await this.reader.read(m.offset, 5)).toString('latin1') !== 'From ') throw bad();
    if (m.offset + m.size < this.size && (await this.reader.read(m.offset + m.size - 1, 1))[0] !== 10) throw bad();
    return m;
  }

  /** The tar entry named ITEM, from the item index when there is one (its header read again and checked). */
  private tarEntry(item: string): Promise<TarEntry> {
    return this.viaIndex((ix) => this.indexedTarEntry(ix, item), () => findTarEntry(this.reader, item));
  }

  private async indexedTarEntry(ix: ItemIndex, item: string): Promise<TarEntry> {
    this.reader.exact = true;
    const e = await ix.tarEntry(item);
    if (!e) throw notFound(`${this.path} has no entry ${item}`);
    const bad = () => integrity(`${this.path}: its item index puts ${e.name} at ${e.offset}, where the archive holds another header`, { path: this.path });
    if (e.dataOffset + e.size > this.size) throw bad();
    const step = new TarWalk(this.path).header(await this.reader.read(e.offset, 512), e.offset);
    // A pax header may give a size beyond what the header's own field holds (8 GiB).
    if (step.end || !('entry' in step) || step.entry.type !== e.type || (step.entry.size !== e.size && e.size < 8 ** 11)) throw bad();
    return e;
  }

  /** The disk a raw image or a qcow2 image holds. */
  private async image(): Promise<ByteSource> {
    // File system metadata is read a few KiB at a time: no need to round reads out further.
    this.reader.align(4096);
    return this.type === 'qcow2' ? Qcow2Image.open(this.reader) : this.reader;
  }

  /** A disk image's partitions, or with `inner` ("p1:/etc"), a directory of a file system in one. */
  private async diskItems(inner: string | undefined, match: string | undefined): Promise<Record<string, unknown>[]> {
    const text = match?.toLowerCase();
    const image = await this.image();
    if (inner === undefined) {
      const { table, partitions: all } = await partitions(image);
      return all.filter((p) => text === undefined || (p.name ?? '').toLowerCase().includes(text)).map((p) => ({ ...p, table }));
    }
    const entries = await listDirectory(image, inner);
    return entries.filter((e) => text === undefined || e.name.toLowerCase().includes(text)).map((e) => ({ ...e }));
  }

  /** A read-only query, on the database as its last commit left it (its WAL applied when it was backed up beside it). */
  async sql(query: string, onRow?: (row: SqlValue[], columns: string[]) => void | boolean, limits?: QueryLimits): Promise<SqlResult> {
    this.expect(['sqlite']);
    return runQuery(this.reader, await this.wal(), query, onRow, limits);
  }

  /** A read-only query's rows as a cursor kept open between pages (see queryRows in sqlite.ts). */
  async *queryRows(query: string, control?: QueryControl): AsyncGenerator<{ columns: string[]; row: SqlValue[] }> {
    this.expect(['sqlite']);
    yield* queryRows(this.reader, await this.wal(), query, control);
  }

  /** The database's -wal file in the same snapshot, when there is one with content. */
  private async wal(): Promise<RangeReader | undefined> {
    const e = await this.tree.lookup(`${this.path}-wal`);
    if (!e || e.type !== 'file' || e.size === 0) return undefined;
    const r = new RangeReader(await this.tree.open(e));
    const f = this.progress;
    if (f) r.onRead = () => f(this.requested);
    this.extra.push(r);
    return r;
  }
}

/** A blob not in the repository at all (see viaIndex). */
function indexGone(e: unknown): boolean {
  return e instanceof StrataError && e.code === 'integrity' && e.data.missing === true;
}

const NAMES: Record<DatasetType, string> = { mbox: 'an mbox mailbox', zip: 'a zip archive', tar: 'a tar archive', sqlite: 'a SQLite database', disk: 'a disk image', qcow2: 'a qcow2 image' };

function list(types: readonly DatasetType[]): string {
  const names = types.map((t) => NAMES[t]);
  return names.length === 1 ? names[0]! : `${names.slice(0, -1).join(', ')} or ${names[names.length - 1]}`;
}
