/**
 * The JSON API of `strata ui`: what the pages ask, answered from the point
 * in time file tree (engine/snapshot-tree.ts) alone. Listings are paged,
 * sorted and searched here, so a directory of 100,000 entries costs the
 * browser one page; file bytes only ever leave as a stream.
 */
import type { ServerResponse } from 'node:http';
import { StrataError, usageError } from '../errors.js';
import type { Repository } from '../repo/repository.js';
import { SnapshotTree, type Entry, type TocView } from '../engine/snapshot-tree.js';
import { parseRange } from '../server/range.js';
import { drained } from '../util/drained.js';

/** The most entries one page of a listing holds. */
export const MAX_PAGE = 1000;
/** The most bytes one preview shows. */
export const MAX_PREVIEW = 64 * 1024;
/** Directory listings kept sorted in memory, most recent last. */
const KEPT_LISTINGS = 8;
/** Snapshot trees kept open. */
const KEPT_TREES = 32;

export const SORT_KEYS = ['name', 'size', 'mtime', 'type'] as const;
type SortKey = (typeof SORT_KEYS)[number];

export interface Query {
  get(name: string): string | null;
}

export interface SnapshotJson {
  id: string;
  time: number;
  host: string;
  tags: readonly string[];
  paths: readonly string[];
  files: number | null;
  bytes: number | null;
  added: number | null;
}

export interface EntryJson {
  name: string;
  path: string;
  type: string;
  size: number;
  mtime: number;
  mode: number;
  target?: string;
}

export class UiApi {
  private readonly trees = new Map<string, SnapshotTree>();
  private readonly listings = new Map<string, Entry[]>();

  constructor(readonly repo: Repository) {}

  /** Every snapshot, oldest first (for scripts: the pages ask for a page, or for the snapshots they show). */
  async snapshots(): Promise<SnapshotJson[]> {
    return (await SnapshotTree.all(this.repo)).map(snapshotJson);
  }

  /** One page of the timeline, newest first: `offset` and `limit` (up to MAX_PAGE), and how many there are; only the page's snapshots are read. */
  async snapshotPage(q: Query): Promise<{ total: number; offset: number; snapshots: SnapshotJson[] }> {
    const offset = count(q.get('offset') ?? '0', 'offset');
    const limit = Math.min(MAX_PAGE, Math.max(1, count(q.get('limit') ?? '200', 'limit')));
    const { total, trees } = await SnapshotTree.page(this.repo, offset, limit);
    return { total, offset, snapshots: trees.map(snapshotJson) };
  }

  /** The tree of `at` (a snapshot id, a prefix, latest or a time). */
  async tree(at: string | null): Promise<SnapshotTree> {
    const key = at ?? 'latest';
    const kept = this.trees.get(key);
    if (kept && key !== 'latest') return kept;
    const t = await SnapshotTree.open(this.repo, { at: key });
    // Kept by full id only: latest moves, a prefix or a date is looked up again.
    if (key === t.id) remember(this.trees, key, t, KEPT_TREES);
    return t;
  }

  /** One page of a directory: sorted, searched by name (case-insensitive substring), from `offset`. */
  async list(q: Query): Promise<{ snapshot: string; path: string; total: number; offset: number; entries: EntryJson[] }> {
    const tree = await this.tree(q.get('at'));
    const dir = absolute(q.get('path') ?? '/');
    const sort = (q.get('sort') ?? 'name') as SortKey;
    if (!SORT_KEYS.includes(sort)) throw usageError(`sort by one of ${SORT_KEYS.join(', ')}`);
    const desc = q.get('order') === 'desc';
    const offset = count(q.get('offset') ?? '0', 'offset');
    const limit = Math.min(MAX_PAGE, Math.max(1, count(q.get('limit') ?? '200', 'limit')));
    const search = (q.get('q') ?? '').toLowerCase();
    let entries = await this.sorted(tree, dir, sort);
    if (search) entries = entries.filter((e) => e.name.toLowerCase().includes(search));
    const total = entries.length;
    const page: Entry[] = [];
    for (let i = offset; i < Math.min(total, offset + limit); i++) page.push(entries[desc ? total - 1 - i : i]!);
    return { snapshot: tree.id, path: dir, total, offset, entries: page.map(entryJson) };
  }

  private async sorted(tree: SnapshotTree, dir: string, sort: SortKey): Promise<Entry[]> {
    const key = `${tree.id}\0${dir}\0${sort}`;
    const kept = this.listings.get(key);
    if (kept) {
      remember(this.listings, key, kept, KEPT_LISTINGS);
      return kept;
    }
    const byName = sort === 'name' ? undefined : this.listings.get(`${tree.id}\0${dir}\0name`);
    const list = byName ? [...byName] : await tree.list(dir);
    const name = (a: Entry, b: Entry) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0);
    if (sort === 'size') list.sort((a, b) => a.size - b.size || name(a, b));
    else if (sort === 'mtime') list.sort((a, b) => (a.mtimeNs < b.mtimeNs ? -1 : a.mtimeNs > b.mtimeNs ? 1 : name(a, b)));
    else if (sort === 'type') list.sort((a, b) => (a.type < b.type ? -1 : a.type > b.type ? 1 : name(a, b)));
    remember(this.listings, key, list, KEPT_LISTINGS);
    return list;
  }

  async stat(q: Query): Promise<{ snapshot: string; entry: EntryJson }> {
    const tree = await this.tree(q.get('at'));
    return { snapshot: tree.id, entry: entryJson(await tree.stat(absolute(q.get('path')))) };
  }

  /** Every version of a file: its snapshot, size, whether it changed, and its data and reference bytes. */
  async history(q: Query) {
    const tree = await this.tree(q.get('at'));
    const p = absolute(q.get('path'));
    const items = await tree.history(p);
    const out = [];
    let last: { dataBytes: number; refBytes: number } | undefined;
    for (const h of items) {
      let bytes = { dataBytes: 0, refBytes: 0 };
      if (h.type === 'file') {
        // An unchanged version is its predecessor's: its TOC is the same one.
        if (h.changed || !last) bytes = tocBytes(await (await (await this.tree(h.snapshot)).open(h.entry)).toc());
        else bytes = last;
        last = bytes;
      } else last = undefined;
      out.push({ snapshot: h.snapshot, time: h.time, type: h.type, size: h.size, changed: h.changed, bytesChanged: h.changed ? bytes.dataBytes : 0, ...bytes });
    }
    return { path: p, versions: out, order: (await this.known(out.map((v) => v.snapshot))).order };
  }

  /** A version's TOC and, along the file, the snapshot each byte comes from (its blame). */
  async changeMap(q: Query) {
    const tree = await this.tree(q.get('at'));
    const file = await tree.open(absolute(q.get('path')));
    const toc = await file.toc();
    const sources = await file.blame();
    // The data entries are drawn in the colour of the snapshot that wrote them: its order is given too.
    const ids = sources.map((s) => s.snapshot);
    const { times, order } = await this.known([...ids, toc.since ?? toc.snapshot]);
    return { ...toc, sources, times: Object.fromEntries(ids.map((id) => [id, times[id] ?? null])), order };
  }

  /** Two versions of a file compared: the bytes each holds that the other lacks. */
  async compare(q: Query) {
    const p = absolute(q.get('path'));
    const [a, b] = await Promise.all([this.tree(q.get('a')), this.tree(q.get('b'))]);
    const [fa, fb] = await Promise.all([a.open(p), b.open(p)]);
    const c = await fb.compare(fa);
    const sum = (rs: [number, number][]) => rs.reduce((s, [x, y]) => s + y - x + 1, 0);
    return { path: p, a: { snapshot: a.id, size: fa.size }, b: { snapshot: b.id, size: fb.size }, added: c.added, removed: c.removed, bytesAdded: sum(c.added), bytesRemoved: sum(c.removed) };
  }

  /** Which snapshot last changed each part of [start, end]. */
  async blame(q: Query) {
    const tree = await this.tree(q.get('at'));
    const file = await tree.open(absolute(q.get('path')));
    const { start, end } = rangeOf(q, file.size);
    const spans = await file.blame(start, end);
    return { snapshot: tree.id, size: file.size, start, end, spans, ...(await this.known(spans.map((s) => s.snapshot))) };
  }

  /** Up to MAX_PREVIEW bytes of a range, base64: the page shows them as hex and text. */
  async preview(q: Query) {
    const tree = await this.tree(q.get('at'));
    const file = await tree.open(absolute(q.get('path')));
    const start = count(q.get('start') ?? '0', 'start');
    if (start > file.size) throw new StrataError('range_not_satisfiable', `byte ${start} is past the end of the file (${file.size} bytes)`);
    const length = Math.min(MAX_PREVIEW, count(q.get('length') ?? '4096', 'length'), file.size - start);
    return { snapshot: tree.id, size: file.size, start, length, data: (await file.readAt(start, length)).toString('base64') };
  }

  /**
   * A file, or the range `start`-`end` of it, streamed; an HTTP Range
   * header picks a part of that. Never more than a block's piece in memory.
   */
  async download(q: Query, rangeHeader: string | undefined, res: ServerResponse): Promise<void> {
    const tree = await this.tree(q.get('at'));
    const p = absolute(q.get('path'));
    const file = await tree.open(p);
    const whole = q.get('start') !== null || q.get('end') !== null ? rangeOf(q, file.size) : { start: 0, end: file.size - 1 };
    const size = whole.end - whole.start + 1;
    const r = parseRange(rangeHeader, size);
    if (r.kind === 'unsatisfiable') {
      res.writeHead(416, { 'content-range': `bytes */${size}`, 'content-type': 'application/json' });
      res.end(JSON.stringify({ error: { code: 'range_not_satisfiable', message: r.reason } }));
      return;
    }
    const [from, to] = r.kind === 'range' ? [whole.start + r.start, whole.start + r.end] : [whole.start, whole.end];
    const base = p.slice(p.lastIndexOf('/') + 1) || 'file';
    const name = q.get('start') !== null || q.get('end') !== null ? `${base}.${whole.start}-${whole.end}` : base;
    res.writeHead(r.kind === 'range' ? 206 : 200, {
      'content-type': 'application/octet-stream',
      'content-length': String(to - from + 1),
      'accept-ranges': 'bytes',
      'content-disposition': `attachment; filename="${name.replace(/[^\w.-]/g, '_')}"; filename*=UTF-8''${encodeURIComponent(name)}`,
      ...(r.kind === 'range' ? { 'content-range': `bytes ${r.start}-${r.end}/${size}` } : {}),
    });
    if (to < from) return void res.end();
    // Pieces only go out: views of cached blocks will do. The next piece is asked for before the
    // socket has taken this one, so reading and decoding go on while the bytes go out.
    const pieces = file.stream(from, to, { shared: true });
    let next = pieces.next();
    try {
      for (let r = await next; !r.done; r = await next) {
        next = pieces.next();
        if (res.destroyed) break;
        if (!res.write(r.value)) await drained(res);
      }
    } finally {
      // A client gone mid-stream: the piece asked for ahead is let go, and the stream closed.
      next.catch(() => undefined);
      await pieces.return(undefined).catch(() => undefined);
    }
    if (!res.destroyed) res.end();
  }

  /**
   * Of the snapshots a page colours: each one's time, and its place in the
   * list oldest first (`order`, what the colour is made from, the same on
   * every page). A snapshot no longer there has time null and no order.
   */
  private async known(ids: readonly string[]): Promise<{ times: Record<string, number | null>; order: Record<string, number> }> {
    const found = new Map((await SnapshotTree.numbered(this.repo, ids)).map((n) => [n.tree.id, n]));
    const times: Record<string, number | null> = {};
    const order: Record<string, number> = {};
    for (const id of new Set(ids)) {
      const n = found.get(id);
      times[id] = n ? n.tree.time : null;
      if (n) order[id] = n.position;
    }
    return { times, order };
  }

}


function snapshotJson(t: SnapshotTree): SnapshotJson {
  return { id: t.id, time: t.time, host: t.host, tags: t.tags, paths: t.paths, files: t.stats?.files ?? null, bytes: t.stats?.bytes ?? null, added: t.stats?.bytesAdded ?? null };
}

function entryJson(e: Entry): EntryJson {
  return { name: e.name, path: e.path, type: e.type, size: e.size, mtime: e.mtime.getTime(), mode: e.mode & 0o7777, ...(e.type === 'symlink' ? { target: e.target } : {}) };
}

function tocBytes(t: TocView): { dataBytes: number; refBytes: number } {
  let dataBytes = 0;
  let refBytes = 0;
  for (const e of t.entries) {
    if (e.kind === 'data') dataBytes += e.end - e.start + 1;
    else refBytes += e.end - e.start + 1;
  }
  return { dataBytes, refBytes };
}

/** A path parameter: absolute, as the snapshot stores it. */
function absolute(p: string | null): string {
  if (!p || !p.startsWith('/') || p.includes('\0')) throw usageError('a path in the snapshot is absolute');
  return p;
}

function count(s: string, what: string): number {
  if (!/^\d{1,15}$/.test(s)) throw usageError(`${what} is a whole number of bytes, not ${JSON.stringify(s)}`);
  return Number(s);
}

/** `start` and `end` (inclusive) of a file of `size` bytes; `end` defaults to the last byte. */
function rangeOf(q: Query, size: number): { start: number; end: number } {
  const start = count(q.get('start') ?? '0', 'start');
  const end = q.get('end') === null ? size - 1 : count(q.get('end')!, 'end');
  if (end < start - 1 || end >= size || start > size) throw new StrataError('range_not_satisfiable', `bytes ${start}-${end} are not in the file (${size} bytes)`);
  return { start, end };
}

/** Sets `key` in a map kept to `limit` entries, dropping the oldest. */
function remember<V>(map: Map<string, V>, key: string, value: V, limit: number): void {
  map.delete(key);
  map.set(key, value);
  if (map.size > limit) map.delete(map.keys().next().value as string);
}
