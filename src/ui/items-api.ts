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
import { Dataset } from '../items/dataset.js';
import type { SqlValue } from '../items/sqlite.js';
import { parseRange } from '../server/range.js';
import { drained } from '../util/drained.js';
import type { Query } from './api.js';

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
/** Item listings kept in memory, most recent last: a mailbox's is one pass over it. */
const KEPT_LISTINGS = 8;

/** An item as the pages show it: `id` names it to /api/item (or, for a directory, to /api/items as `inner`). */
export type ItemJson = Record<string, unknown> & { id: string; kind: string; name: string };

type Trees = (at: string | null) => Promise<SnapshotTree>;

export class ItemsApi {
  private readonly listings = new Map<string, Promise<ItemJson[]>>();

  constructor(private readonly tree: Trees) {}

  /** The snapshot's manifest: path, type and size of each dataset. */
  async datasets(q: Query) {
    const tree = await this.tree(q.get('at'));
    return { snapshot: tree.id, datasets: await tree.datasets() };
  }

  /** A page of a dataset's items (or of a directory `inner` of an image), searched by `q`. */
  async items(q: Query) {
    const { tree, ds } = await this.open(q);
    const inner = q.get('inner') ?? undefined;
    const match = q.get('q') || undefined;
    const offset = count(q.get('offset') ?? '0', 'offset');
    const limit = Math.min(MAX_ITEMS_PAGE, Math.max(1, count(q.get('limit') ?? '200', 'limit')));
    const key = `${tree.id}\0${ds.path}\0${inner ?? ''}\0${match ?? ''}`;
    let list = this.listings.get(key);
    if (!list) {
      list = ds.items({ inner, match }).then((rows) => rows.map((r) => itemJson(ds.type!, inner, r)));
      // A failure is not kept: the next request tries again.
      list.catch(() => this.listings.delete(key));
    }
    remember(this.listings, key, list, KEPT_LISTINGS);
    const all = await list;
    return { snapshot: tree.id, path: ds.path, type: ds.type ?? null, what: ds.what, size: ds.size, inner: inner ?? null, total: all.length, offset, items: all.slice(offset, offset + limit) };
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
    return { snapshot: tree.id, path: ds.path, item: it.name, size: it.size ?? null, start, length: shown.length, more: data.length > length, data: shown.toString('base64') };
  }

  /**
   * An item's bytes, streamed as the item readers give them; an HTTP Range
   * picks a part. An item whose size its dataset does not record (a message,
   * a file in a disk image) is counted by a first pass when a range is asked.
   */
  async download(q: Query, rangeHeader: string | undefined, res: ServerResponse): Promise<void> {
    const { ds } = await this.open(q);
    const id = need(q, 'item');
    let it = await ds.item(id);
    let size = it.size;
    if (size === undefined && rangeHeader !== undefined) {
      size = 0;
      for await (const piece of it.bytes) size += piece.length;
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
   * kept, and `more` when another row follows. Each page runs the query
   * again and stops it once the page is full, so no page costs more than
   * its rows; every run is stopped after SQL_TIMEOUT_MS (or `timeout` ms).
   */
  async sql(q: Query) {
    const { tree, ds } = await this.open(q);
    const text = need(q, 'sql');
    if (text.trim() === '') throw usageError('the query is empty');
    const offset = count(q.get('offset') ?? '0', 'offset');
    const limit = Math.min(MAX_SQL_PAGE, Math.max(1, count(q.get('limit') ?? '100', 'limit')));
    const timeoutMs = Math.min(SQL_TIMEOUT_MS, Math.max(1, count(q.get('timeout') ?? String(SQL_TIMEOUT_MS), 'timeout')));
    const rows: unknown[][] = [];
    let seen = 0;
    let more = false;
    const started = Date.now();
    const r = await ds.sql(
      text,
      (row) => {
        if (seen++ < offset) return true;
        if (rows.length === limit) {
          more = true;
          return false;
        }
        rows.push(row.map(cell));
        return true;
      },
      { timeoutMs },
    );
    return { snapshot: tree.id, path: ds.path, columns: r.columns, offset, rows, more, ms: Date.now() - started, fetched: ds.fetched };
  }

  private async open(q: Query): Promise<{ tree: SnapshotTree; ds: Dataset }> {
    const tree = await this.tree(q.get('at'));
    const p = q.get('path');
    if (!p || !p.startsWith('/') || p.includes('\0')) throw usageError('a path in the snapshot is absolute');
    return { tree, ds: await Dataset.of(tree, p) };
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
