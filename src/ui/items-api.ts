/**
 * The web app's application-level view (src/items/): a snapshot's manifest
 * of datasets, one dataset's items a page at a time, an item's preview and
 * its download, and read-only SQL on a database, a page of rows at a time
 * and stopped when it runs too long. What `strata manifest`, `items`,
 * `item` and `sql` read, through the same Dataset.
 */
import type { ServerResponse } from 'node:http';
import { StrataError, usageError } from '../errors.js';
import type { SnapshotTree } from '../engine/snapshot-tree.js';
import { Dataset, ITEM_TYPES } from '../items/dataset.js';
import type { QueryControl, SqlValue } from '../items/sqlite.js';
import { parseRange } from '../server/range.js';
import { drained } from '../util/drained.js';
import type { Query } from './api.js';
import { CURSOR_LIMITS, Cursors, RowCursor, type CursorLimits } from './cursors.js';

/** The most items one page holds. */
export const MAX_ITEMS_PAGE = 1000;
/** The most bytes of an item one preview shows. */
export const MAX_ITEM_PREVIEW = 64 * 1024;
/** The most rows one page of query results holds. */
export const MAX_SQL_PAGE = 1000;
/** A query is stopped after this long (a request may ask for less). */
export const SQL_TIMEOUT_MS = 10_000;
/** A text or blob value longer than this is cut in query results: a page of rows stays small. */
export const SQL_CELL_LIMIT = 4096;
/** Counted item lengths remembered, most recent last. */
const KEPT_SIZES = 1024;
/** Totals of item listings remembered, most recent last. */
const KEPT_TOTALS = 64;

/** An item as the pages show it: `id` names it to /api/item (or, for a directory, to /api/items as `inner`). */
export type ItemJson = Record<string, unknown> & { id: string; kind: string; name: string };

type Trees = (at: string | null) => Promise<SnapshotTree>;

/** A session's place in a listing of items or in a query's rows, with the dataset it reads. */
interface Cursor {
  kind: 'items' | 'sql';
  ds: Dataset;
  rows: RowCursor<unknown>;
  control?: QueryControl;
  close(): Promise<void>;
}

export class ItemsApi {
  private readonly cursors: Cursors<Cursor>;
  /** Lengths of items their format does not record (a message's text), once counted. */
  private readonly sizes = new Map<string, number>();
  /** How many items listings held, once a cursor reached their end: later pages say it too. */
  private readonly totals = new Map<string, number>();

  constructor(
    private readonly tree: Trees,
    limits: CursorLimits = CURSOR_LIMITS,
  ) {
    this.cursors = new Cursors(limits);
  }

  /** The snapshot's manifest: path, type and size of each dataset. */
  async datasets(q: Query) {
    const tree = await this.tree(q.get('at'));
    return { snapshot: tree.id, datasets: await tree.datasets() };
  }

  /**
   * A page of a dataset's items (or of a directory `inner` of an image),
   * searched by `q`. The items are read as the format gives them, as far as
   * the page goes: the session's cursor is kept where it ended, so the next
   * page goes on from there. `total` is known once the end was reached
   * (null before); `more` says whether another item follows the page.
   */
  async items(q: Query, session: string) {
    const { tree, path } = await this.where(q);
    const inner = q.get('inner') ?? undefined;
    const match = q.get('q') || undefined;
    const offset = count(q.get('offset') ?? '0', 'offset');
    const limit = Math.min(MAX_ITEMS_PAGE, Math.max(1, count(q.get('limit') ?? '200', 'limit')));
    const key = `items\0${tree.id}\0${path}\0${inner ?? ''}\0${match ?? ''}`;
    let c = this.kept(session, key, 'items', offset);
    // A kept cursor's page costs what it reads from here; a new one's, its dataset's opening too.
    const before = c?.ds.fetched ?? 0;
    if (!c) {
      const ds = await Dataset.of(tree, path);
      const type = ds.expect(ITEM_TYPES);
      const rows = (async function* () {
        for await (const r of ds.itemStream({ inner, match })) yield itemJson(type, inner, r);
      })();
      c = { kind: 'items', ds, rows: new RowCursor(rows), close: () => rows.return(undefined).then(() => undefined) };
    }
    const page = await this.page(c, session, key, offset, limit);
    if (page.total !== undefined) remember(this.totals, key, page.total, KEPT_TOTALS);
    const kept = c.ds;
    return {
      snapshot: tree.id,
      path: kept.path,
      type: kept.type ?? null,
      what: kept.what,
      size: kept.size,
      inner: inner ?? null,
      total: page.total ?? this.totals.get(key) ?? null,
      offset,
      more: page.more,
      items: page.rows,
      fetched: kept.fetched - before,
    };
  }

  /** Up to MAX_ITEM_PREVIEW bytes of an item from `start`, base64; `size` is null where the item does not say it. */
  async preview(q: Query) {
    const { tree, ds } = await this.open(q);
    const it = await ds.item(need(q, 'item'));
    const start = count(q.get('start') ?? '0', 'start');
    const length = Math.min(MAX_ITEM_PREVIEW, count(q.get('length') ?? '4096', 'length'));
    const parts: Buffer[] = [];
    let got = 0;
    // One byte past the preview says whether the item goes on.
    for await (const piece of slice(it.bytes, start, start + length + 1)) {
      parts.push(Buffer.from(piece));
      got += piece.length;
    }
    if (got === 0 && start > 0 && start !== it.size) throw new StrataError('range_not_satisfiable', `byte ${start} is past the end of ${it.name}`);
    const data = Buffer.concat(parts);
    const shown = data.subarray(0, Math.min(length, data.length));
    const key = `${tree.id}\0${ds.path}\0${need(q, 'item')}`;
    // A preview that reached the item's end has counted it.
    if (it.size === undefined && data.length <= length && (got > 0 || start === 0)) remember(this.sizes, key, start + data.length, KEPT_SIZES);
    return { snapshot: tree.id, path: ds.path, item: it.name, size: it.size ?? this.sizes.get(key) ?? null, start, length: shown.length, more: data.length > length, data: shown.toString('base64') };
  }

  /**
   * An item's bytes, streamed as the item readers give them; an HTTP Range
   * picks a part. The size is the format's where it records one (an archive
   * entry; a file in a disk image, by its stat). A message's text, whose
   * unescaped length its mailbox does not record, is counted by a first
   * pass when a range is asked, once: the count is remembered.
   */
  async download(q: Query, rangeHeader: string | undefined, res: ServerResponse): Promise<void> {
    const { tree, ds } = await this.open(q);
    const id = need(q, 'item');
    const key = `${tree.id}\0${ds.path}\0${id}`;
    let it = await ds.item(id);
    let size = it.size ?? this.sizes.get(key);
    if (size === undefined && rangeHeader !== undefined) {
      size = 0;
      for await (const piece of it.bytes) size += piece.length;
      remember(this.sizes, key, size, KEPT_SIZES);
      it = await ds.item(id);
    }
    const base = it.name.replace(/^.*\//, '').replace(/^<(.*)>$/, '$1') || 'item';
    const name = ds.type === 'mbox' ? `${base}.eml` : base;
    const headers: Record<string, string> = {
      'content-type': 'application/octet-stream',
      'content-disposition': `attachment; filename="${name.replace(/[^\w.-]/g, '_')}"; filename*=UTF-8''${encodeURIComponent(name)}`,
    };
    let from = 0;
    let to = Infinity;
    let status = 200;
    if (size !== undefined) {
      const r = parseRange(rangeHeader, size);
      if (r.kind === 'unsatisfiable') {
        await it.bytes.return(undefined);
        res.writeHead(416, { 'content-range': `bytes */${size}`, 'content-type': 'application/json' });
        res.end(JSON.stringify({ error: { code: 'range_not_satisfiable', message: r.reason } }));
        return;
      }
      [from, to] = r.kind === 'range' ? [r.start, r.end + 1] : [0, size];
      status = r.kind === 'range' ? 206 : 200;
      headers['accept-ranges'] = 'bytes';
      headers['content-length'] = String(to - from);
      if (r.kind === 'range') headers['content-range'] = `bytes ${r.start}-${r.end}/${size}`;
    }
    res.writeHead(status, headers);
    const pieces = slice(it.bytes, from, to);
    try {
      for await (const piece of pieces) {
        if (res.destroyed) break;
        if (!res.write(piece)) await drained(res);
      }
    } finally {
      await pieces.return(undefined).catch(() => undefined);
    }
    if (!res.destroyed) res.end();
  }

  /**
   * A page of a read-only query's rows: `offset` rows skipped, up to `limit`
   * kept, and `more` when another row follows. The query runs once: the
   * session's cursor (the open connection, SQLite's statement where the
   * page ended) is kept for the next page, for a minute; a page before it,
   * or after it has gone, runs the query again and skips to the page. Each
   * page may run SQL_TIMEOUT_MS (or `timeout` ms) at most.
   */
  async sql(q: Query, session: string) {
    const { tree, path } = await this.where(q);
    const text = need(q, 'sql');
    if (text.trim() === '') throw usageError('the query is empty');
    const offset = count(q.get('offset') ?? '0', 'offset');
    const limit = Math.min(MAX_SQL_PAGE, Math.max(1, count(q.get('limit') ?? '100', 'limit')));
    const timeoutMs = Math.min(SQL_TIMEOUT_MS, Math.max(1, count(q.get('timeout') ?? String(SQL_TIMEOUT_MS), 'timeout')));
    const key = `sql\0${tree.id}\0${path}\0${text}`;
    let c = this.kept(session, key, 'sql', offset);
    const before = c?.ds.fetched ?? 0;
    const started = Date.now();
    if (!c) {
      const ds = await Dataset.of(tree, path);
      ds.expect(['sqlite']);
      const control: QueryControl = {};
      const rows = ds.queryRows(text, control);
      c = { kind: 'sql', ds, control, rows: new RowCursor(rows), close: () => rows.return(undefined).then(() => undefined) };
    }
    c.control!.deadline = started + timeoutMs;
    c.control!.timeoutMs = timeoutMs;
    const page = await this.page(c, session, key, offset, limit);
    const rows = page.rows.map((r) => (r as { row: SqlValue[] }).row.map(cell));
    const last = page.rows[page.rows.length - 1] as { columns: string[] } | undefined;
    return { snapshot: tree.id, path: c.ds.path, columns: last?.columns ?? c.control!.columns ?? [], offset, rows, more: page.more, ms: Date.now() - started, fetched: c.ds.fetched - before };
  }

  /** A page of `c`'s rows; the cursor is kept for the session while more follow, else (or on an error) closed. */
  private async page(c: Cursor, session: string, key: string, offset: number, limit: number): Promise<Awaited<ReturnType<RowCursor<unknown>['page']>>> {
    let page;
    try {
      page = await c.rows.page(offset, limit);
    } catch (e) {
      void c.close();
      throw e;
    }
    if (page.more) this.cursors.keep(session, key, c);
    else void c.close();
    return page;
  }

  /** Closes the cursors the sessions keep (the server is stopping). */
  close(): void {
    this.cursors.closeAll();
  }

  private async open(q: Query): Promise<{ tree: SnapshotTree; ds: Dataset }> {
    const { tree, path } = await this.where(q);
    return { tree, ds: await Dataset.of(tree, path) };
  }

  /** The snapshot and the path a request names. */
  private async where(q: Query): Promise<{ tree: SnapshotTree; path: string }> {
    const tree = await this.tree(q.get('at'));
    const path = q.get('path');
    if (!path || !path.startsWith('/') || path.includes('\0')) throw usageError('a path in the snapshot is absolute');
    return { tree, path };
  }

  /** The session's cursor for `key` if it can give the page at `offset` (it has not gone past it); else none, and a kept one is closed. */
  private kept(session: string, key: string, kind: Cursor['kind'], offset: number): Cursor | undefined {
    const c = this.cursors.take(session, key);
    if (c && (c.kind !== kind || c.rows.position > offset)) {
      void c.close();
      return undefined;
    }
    return c;
  }
}

/** One row of Dataset.items as an item with an id and a kind, whatever the format. */
function itemJson(type: string, inner: string | undefined, r: Record<string, unknown>): ItemJson {
  switch (type) {
    case 'mbox':
      return { ...r, id: String(r.number), kind: 'message', name: String(r.subject ?? '') };
    case 'zip': {
      const name = String(r.name);
      return { ...r, id: name, kind: name.endsWith('/') ? 'dir' : 'file', name };
    }
    case 'tar':
      return { ...r, id: String(r.name), kind: String(r.type), name: String(r.name) };
    case 'sqlite':
      return { ...r, id: String(r.name), kind: String(r.type), name: String(r.name) };
    default:
      // A disk image: its partitions, or the entries of a directory in one of them.
      if (inner === undefined) return { ...r, label: r.name ?? null, id: `p${String(r.number)}:/`, kind: 'partition', name: `p${String(r.number)}` };
      return { ...r, id: `${inner.replace(/\/+$/, '')}/${String(r.name)}`, kind: String(r.type), name: String(r.name) };
  }
}

/** The part [from, to) of a stream of pieces; the stream is let go once `to` is reached. */
async function* slice(pieces: AsyncGenerator<Buffer>, from: number, to: number): AsyncGenerator<Buffer> {
  let at = 0;
  try {
    for await (const p of pieces) {
      const end = at + p.length;
      if (end > from) yield p.subarray(Math.max(0, from - at), Math.min(p.length, to - at));
      at = end;
      if (at >= to) break;
    }
  } finally {
    await pieces.return(undefined);
  }
}

/** A value of a result row as JSON: a blob as base64, a big integer as text, long values cut to SQL_CELL_LIMIT. */
function cell(v: SqlValue): unknown {
  if (v instanceof Uint8Array) {
    const b = Buffer.from(v.buffer, v.byteOffset, v.byteLength);
    return { base64: b.subarray(0, SQL_CELL_LIMIT).toString('base64'), bytes: b.length, ...(b.length > SQL_CELL_LIMIT ? { cut: true } : {}) };
  }
  if (typeof v === 'bigint') return Number.isSafeInteger(Number(v)) ? Number(v) : v.toString();
  if (typeof v === 'string' && v.length > SQL_CELL_LIMIT) return { text: v.slice(0, SQL_CELL_LIMIT), length: v.length, cut: true };
  return v;
}

function need(q: Query, name: string): string {
  const v = q.get(name);
  if (v === null) throw usageError(`${name} is required`);
  return v;
}

function count(s: string, what: string): number {
  if (!/^\d{1,15}$/.test(s)) throw usageError(`${what} is a whole number, not ${JSON.stringify(s)}`);
  return Number(s);
}

/** Sets `key` in a map kept to `limit` entries, dropping the oldest. */
function remember<V>(map: Map<string, V>, key: string, value: V, limit: number): void {
  map.delete(key);
  map.set(key, value);
  if (map.size > limit) map.delete(map.keys().next().value as string);
}
