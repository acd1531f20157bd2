/** The browser's side of the JSON API (src/ui/api.ts): fetches that carry the session cookie, errors as exceptions. */

export interface Snapshot {
  id: string;
  time: number;
  host: string;
  tags: string[];
  paths: string[];
  files: number | null;
  bytes: number | null;
  added: number | null;
}

export interface Entry {
  name: string;
  path: string;
  /** fifo, chardev, blockdev: nodes that hold no data (shown, never opened). */
  type: 'file' | 'dir' | 'symlink' | 'fifo' | 'chardev' | 'blockdev';
  size: number;
  mtime: number;
  mode: number;
  target?: string;
}

export interface Listing {
  snapshot: string;
  path: string;
  total: number;
  offset: number;
  entries: Entry[];
}

export interface Version {
  snapshot: string;
  time: number;
  type: string;
  size: number;
  changed: boolean;
  bytesChanged: number;
  dataBytes: number;
  refBytes: number;
}

export type TocLine =
  | { start: number; end: number; kind: 'data'; block: string; size: number }
  | { start: number; end: number; kind: 'ref'; target: { snapshot: string; start: number; end: number }; offset: number };

export interface Span {
  start: number;
  end: number;
  snapshot: string;
}

export interface ChangeMap {
  path: string;
  snapshot: string;
  size: number;
  since?: string;
  entries: TocLine[];
  sources: Span[];
  times: Record<string, number | null>;
  /** Each coloured snapshot's place in the repository's list, oldest first: what its colour is made from. */
  order: Record<string, number>;
}

export interface Comparison {
  path: string;
  a: { snapshot: string; size: number };
  b: { snapshot: string; size: number };
  added: [number, number][];
  removed: [number, number][];
  bytesAdded: number;
  bytesRemoved: number;
}

export interface Blame {
  snapshot: string;
  size: number;
  start: number;
  end: number;
  spans: Span[];
  times: Record<string, number | null>;
  /** Each coloured snapshot's place in the repository's list, oldest first: what its colour is made from. */
  order: Record<string, number>;
}

export interface Preview {
  snapshot: string;
  size: number;
  start: number;
  length: number;
  data: string;
}

export interface RestoreJob {
  id: string;
  state: 'running' | 'done' | 'failed';
  snapshot: string;
  target: string;
  files: number;
  bytes: number;
  total: number | null;
  result?: { files: number; dirs: number; bytes: number; skipped: number };
  error?: { code: string; message: string };
}

type Params = Record<string, string | number | string[] | undefined>;

/** A query string; a list is the parameter repeated. */
export function query(params: Params): string {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (Array.isArray(v)) for (const x of v) q.append(k, x);
    else if (v !== undefined) q.set(k, String(v));
  }
  return q.toString();
}

async function answer<T>(r: Response): Promise<T> {
  const body = (await r.json().catch(() => ({}))) as { error?: { message?: string } };
  if (!r.ok) throw new Error(body.error?.message ?? `the server answered ${r.status}`);
  return body as T;
}

export async function get<T>(what: string, params: Params = {}): Promise<T> {
  return answer<T>(await fetch(`/api/${what}?${query(params)}`, { headers: { accept: 'application/json' } }));
}

export async function post<T>(what: string, body: unknown): Promise<T> {
  return answer<T>(await fetch(`/api/${what}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) }));
}

export function downloadUrl(params: Params): string {
  return `/api/download?${query(params)}`;
}

export interface DatasetInfo {
  path: string;
  type: string;
  what: string;
  size: number;
}

export interface Item {
  id: string;
  kind: string;
  name: string;
  [field: string]: unknown;
}

export interface Items {
  snapshot: string;
  path: string;
  type: string | null;
  what: string;
  size: number;
  inner: string | null;
  /** Known once the server's reading reached the end of the listing. */
  total: number | null;
  offset: number;
  /** Another item follows this page. */
  more: boolean;
  items: Item[];
}

export interface ItemPreview {
  item: string;
  size: number | null;
  start: number;
  length: number;
  more: boolean;
  data: string;
}

export type Cell = number | string | null | { base64: string; bytes: number; cut?: boolean } | { text: string; length: number; cut: true };

export interface SqlPage {
  columns: string[];
  offset: number;
  rows: Cell[][];
  more: boolean;
  ms: number;
  fetched: number;
}

export function itemUrl(params: Params): string {
  return `/api/item?${query(params)}`;
}
