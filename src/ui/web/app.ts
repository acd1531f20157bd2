/**
 * The web app of `strata ui` (preact with htm, bundled by esbuild into
 * dist/ui/app.js). Pages, each at a hash route so the server has one page to
 * give: the timeline of snapshots, a file browser at a point in time, and
 * for a file its history, change map, comparison of two versions, byte-range
 * blame, hex and text preview, download, and restore. Everything is reachable
 * by keyboard: lists move with the arrow keys and open with Enter.
 */
import { render, type ComponentChildren } from 'preact';
import { useCallback, useEffect, useMemo, useRef, useState } from 'preact/hooks';
import { html } from 'htm/preact';
import { downloadUrl, get, itemUrl, post, query, type Blame, type Cell, type DatasetInfo, type Item, type ItemPreview, type Items, type SqlPage, type ChangeMap, type Comparison, type Entry, type Listing, type Preview, type RestoreJob, type Snapshot, type Span, type Version } from './api.js';

// ---------------------------------------------------------------- routing

interface Route {
  page: string;
  params: URLSearchParams;
}

function currentRoute(): Route {
  const hash = location.hash.replace(/^#/, '') || '/';
  const [p, q] = hash.split('?', 2) as [string, string | undefined];
  return { page: p.replace(/^\//, '') || 'timeline', params: new URLSearchParams(q ?? '') };
}

type Params = Record<string, string | number | string[] | undefined>;

export function href(page: string, params: Params = {}): string {
  const q = query(params);
  return `#/${page}${q ? '?' + q : ''}`;
}

function go(page: string, params: Params = {}): void {
  location.hash = href(page, params);
}

// ---------------------------------------------------------------- formatting

const short = (id: string) => id.slice(0, 8);
const time = (ms: number | null | undefined) => (ms === null || ms === undefined ? '(forgotten)' : new Date(ms).toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z'));
const hex = (n: number) => '0x' + n.toString(16).toUpperCase();

function bytes(n: number | null | undefined): string {
  if (n === null || n === undefined) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${n} B` : `${v.toFixed(1)} ${units[i]}`;
}

/** A colour per snapshot, the same on every page (golden-angle hues by its place in the list, which the server gives with each answer). */
function colour(id: string, order: Record<string, number>): string {
  const k = order[id] ?? 0;
  return `hsl(${Math.round((k * 137.508) % 360)} 65% 52%)`;
}

// ---------------------------------------------------------------- shared state

function useAsync<T>(load: () => Promise<T>, deps: unknown[]): { value?: T; error?: string; loading: boolean } {
  const [state, setState] = useState<{ value?: T; error?: string; loading: boolean }>({ loading: true });
  useEffect(() => {
    let live = true;
    setState((s) => ({ ...s, loading: true, error: undefined }));
    load().then(
      (value) => live && setState({ value, loading: false }),
      (e: Error) => live && setState({ error: e.message, loading: false }),
    );
    return () => void (live = false);
    // Run again when `deps` change, as the caller says.
  }, deps);
  return state;
}

function Status(props: { error?: string; loading?: boolean }) {
  if (props.error) return html`<p class="error" role="alert">${props.error}</p>`;
  if (props.loading) return html`<p class="loading" role="status">Loading…</p>`;
  return null;
}

/** Arrow keys move through `count` items, Home/End jump, Enter opens. */
function listKeys(e: KeyboardEvent, index: number, count: number, move: (i: number) => void, open: (i: number) => void, page = 10): void {
  const to = { ArrowDown: index + 1, ArrowUp: index - 1, PageDown: index + page, PageUp: index - page, Home: 0, End: count - 1 }[e.key];
  if (to !== undefined) {
    e.preventDefault();
    move(Math.max(0, Math.min(count - 1, to)));
  } else if (e.key === 'Enter' && index >= 0 && index < count) {
    e.preventDefault();
    open(index);
  }
}

// ---------------------------------------------------------------- timeline

/** The virtualised lists' row height (px) and rows in view. */
const ROW = 28;
const VIEW_ROWS = 18;
const TIMELINE_PAGE = 200;

/**
 * A long list shown a window at a time: pages of `pageSize` rows asked of
 * the server as they scroll into view, only the rows in view in the
 * document. A new `load` (another sort, search or directory) starts it
 * afresh; answers to an earlier one are dropped.
 */
function usePagedRows<T>(load: (offset: number, limit: number) => Promise<{ total: number; rows: T[] }>, pageSize: number) {
  const [total, setTotal] = useState<number | null>(null);
  const [pages, setPages] = useState<Map<number, T[]>>(new Map());
  const [error, setError] = useState<string | undefined>();
  const [scroll, setScroll] = useState(0);
  const [active, setActiveState] = useState(0);
  // Keys may come faster than renders: handlers read the latest selection from here.
  const activeRef = useRef(0);
  const setActive = (i: number) => {
    activeRef.current = i;
    setActiveState(i);
  };
  const pending = useRef(new Set<number>());
  const generation = useRef(0);
  const viewport = useRef<HTMLDivElement>(null);
  const fetchPage = useCallback(
    (n: number) => {
      if (pending.current.has(n)) return;
      pending.current.add(n);
      const gen = generation.current;
      load(n * pageSize, pageSize).then(
        (r) => {
          if (gen !== generation.current) return;
          setTotal(r.total);
          setPages((m) => new Map(m).set(n, r.rows));
        },
        (e: Error) => {
          if (gen !== generation.current) return;
          pending.current.delete(n);
          setError(e.message);
        },
      );
    },
    [load, pageSize],
  );
  useEffect(() => {
    generation.current++;
    pending.current = new Set();
    setPages(new Map());
    setTotal(null);
    setError(undefined);
    setActive(0);
    setScroll(0);
    if (viewport.current) viewport.current.scrollTop = 0;
    fetchPage(0);
  }, [fetchPage]);
  const first = Math.floor(scroll / ROW);
  const last = Math.min((total ?? 0) - 1, first + VIEW_ROWS + 4);
  useEffect(() => {
    if (total === null) return;
    for (let n = Math.floor(first / pageSize); n <= Math.floor(Math.max(first, last) / pageSize); n++) if (!pages.has(n)) fetchPage(n);
  }, [first, last, total, pages, fetchPage, pageSize]);
  const at = (i: number): T | undefined => pages.get(Math.floor(i / pageSize))?.[i % pageSize];
  /** Makes row `i` the active one, scrolled into view. */
  const move = (i: number) => {
    setActive(i);
    const v = viewport.current;
    if (!v) return;
    if (i * ROW < v.scrollTop) v.scrollTop = i * ROW;
    else if ((i + 1) * ROW > v.scrollTop + v.clientHeight) v.scrollTop = (i + 1) * ROW - v.clientHeight;
  };
  const onScroll = (e: Event) => setScroll((e.target as HTMLElement).scrollTop);
  return { total, error, first, last, at, active, activeRef, setActive, move, viewport, onScroll };
}

/**
 * The snapshots, newest first, in a virtualised list as the file browser's:
 * pages of TIMELINE_PAGE asked of the server as they scroll into view, only
 * the rows in view in the document, so tens of thousands stay fast.
 */
function Timeline() {
  const load = useCallback((offset: number, limit: number) => get<{ total: number; snapshots: Snapshot[] }>('snapshots', { offset, limit }).then((r) => ({ total: r.total, rows: r.snapshots })), []);
  const { total, error, first, last, at, active, activeRef, setActive, move, viewport, onScroll } = usePagedRows(load, TIMELINE_PAGE);
  const open = (i: number) => {
    const x = at(i);
    if (x) go('browse', { at: x.id, path: '/' });
  };
  const rows = [];
  for (let i = first; i <= last; i++) {
    const x = at(i);
    rows.push(html`<div role="row" id=${'snap-' + i} key=${i} class=${'row' + (i === active ? ' active' : '')} aria-current=${i === active ? 'true' : undefined} aria-rowindex=${i + 2} style=${{ top: `${i * ROW}px` }} data-snapshot=${x?.id} onClick=${() => (setActive(i), open(i))}>
      ${x
        ? html`<span role="gridcell" class="col-time"><a href=${href('browse', { at: x.id, path: '/' })} tabindex="-1">${time(x.time)}</a></span>
            <span role="gridcell" class="col-id mono">${short(x.id)}</span>
            <span role="gridcell" class="col-host">${x.host}</span>
            <span role="gridcell" class="col-tags">${x.tags.join(', ')}</span>
            <span role="gridcell" class="col-files num">${x.files ?? '–'}</span>
            <span role="gridcell" class="col-bytes num">${bytes(x.bytes)}</span>
            <span role="gridcell" class="col-bytes num">${bytes(x.added)}</span>`
        : html`<span role="gridcell" class="col-time loading">…</span>`}
    </div>`);
  }
  const head = (cls: string, label: string) => html`<span role="columnheader" class=${cls}>${label}</span>`;
  return html`
    <h1>Timeline</h1>
    <${Status} error=${error} loading=${total === null && !error} />
    ${total !== null &&
    html`<p>${total} snapshot${total === 1 ? '' : 's'}, newest first. Arrow keys, Page Up/Down, Home and End move; Enter opens a snapshot's files.</p>
      <div role="grid" aria-label="Snapshots" aria-rowcount=${total + 1} aria-activedescendant=${total ? 'snap-' + active : undefined} tabindex="0" class="grid timeline" onKeyDown=${(e: KeyboardEvent) => listKeys(e, activeRef.current, total, move, open, VIEW_ROWS)}>
        <div role="row" class="row head" aria-rowindex="1">${head('col-time', 'Time')}${head('col-id', 'Snapshot')}${head('col-host', 'Host')}${head('col-tags', 'Tags')}${head('col-files num', 'Files')}${head('col-bytes num', 'Size')}${head('col-bytes num', 'Added')}</div>
        <div class="viewport" ref=${viewport} style=${{ height: `${Math.min(total, VIEW_ROWS) * ROW}px` }} onScroll=${onScroll}>
          <div class="spacer" style=${{ height: `${total * ROW}px` }}>${rows}</div>
        </div>
      </div>`}
  `;
}

// ---------------------------------------------------------------- file browser

const PAGE = 200;

function Browser(props: { at: string; path: string }) {
  const { at, path } = props;
  const [sort, setSort] = useState<'name' | 'size' | 'mtime' | 'type'>('name');
  const [order, setOrder] = useState<'asc' | 'desc'>('asc');
  const [search, setSearch] = useState('');
  const [q, setQ] = useState('');
  const [chosen, setChosen] = useState<Map<string, string>>(new Map());
  // Typing settles for a moment before the server is asked.
  useEffect(() => {
    const t = setTimeout(() => setQ(search), 200);
    return () => clearTimeout(t);
  }, [search]);

  const load = useCallback(
    (offset: number, limit: number) => get<Listing>('list', { at, path, sort, order, q: q || undefined, offset, limit }).then((r) => ({ total: r.total, rows: r.entries })),
    [at, path, sort, order, q],
  );
  const { total, error, first, last, at: entryAt, active, activeRef, setActive, move, viewport, onScroll } = usePagedRows(load, PAGE);

  const open = (e: Entry | undefined) => {
    if (!e) return;
    if (e.type === 'dir') go('browse', { at, path: e.path });
    else if (e.type === 'file') go('history', { at, path: e.path });
  };
  const toggle = (e: Entry | undefined) => {
    if (!e) return;
    setChosen((m) => {
      const n = new Map(m);
      if (n.has(e.path)) n.delete(e.path);
      else n.set(e.path, e.name);
      return n;
    });
  };
  const onKey = (e: KeyboardEvent) => {
    if (e.key === ' ') {
      e.preventDefault();
      toggle(entryAt(activeRef.current));
      return;
    }
    if ((e.key === 'Backspace' || (e.altKey && e.key === 'ArrowUp')) && path !== '/') {
      e.preventDefault();
      go('browse', { at, path: parent(path) });
      return;
    }
    listKeys(e, activeRef.current, total ?? 0, move, (i) => open(entryAt(i)), VIEW_ROWS);
  };
  const sortBy = (key: typeof sort) => {
    if (key === sort) setOrder(order === 'asc' ? 'desc' : 'asc');
    else {
      setSort(key);
      setOrder('asc');
    }
  };
  const header = (key: typeof sort, label: string) =>
    html`<span role="columnheader" class=${'col-' + key} aria-sort=${sort === key ? (order === 'asc' ? 'ascending' : 'descending') : 'none'}>
      <button type="button" onClick=${() => sortBy(key)} aria-label=${`Sort by ${label}`}>${label}${sort === key ? (order === 'asc' ? ' ▲' : ' ▼') : ''}</button>
    </span>`;

  const rows = [];
  for (let i = first; i <= last; i++) {
    const e = entryAt(i);
    const on = e !== undefined && chosen.has(e.path);
    rows.push(html`<div role="row" id=${'row-' + i} key=${i} class=${'row' + (i === active ? ' active' : '') + (on ? ' chosen' : '')} aria-selected=${on} aria-current=${i === active ? 'true' : undefined} aria-rowindex=${i + 2} style=${{ top: `${i * ROW}px` }} onClick=${() => (setActive(i), open(e))} data-path=${e?.path}>
      ${e
        ? html`<span role="gridcell" class="col-pick"><input type="checkbox" tabindex="-1" aria-label=${`Select ${e.name}`} checked=${on} onClick=${(ev: Event) => (ev.stopPropagation(), setActive(i), toggle(e))} /></span>
            <span role="gridcell" class="col-name">${e.type === 'dir' ? '📁 ' : e.type === 'symlink' ? '↪ ' : ''}${e.name}${e.type === 'symlink' ? ` → ${e.target}` : ''}</span>
            <span role="gridcell" class="col-size num">${e.type === 'file' ? bytes(e.size) : ''}</span>
            <span role="gridcell" class="col-mtime">${time(e.mtime)}</span>
            <span role="gridcell" class="col-type">${TYPE_LABELS[e.type] ?? e.type}</span>`
        : html`<span role="gridcell" class="col-name loading">…</span>`}
    </div>`);
  }
  const selected = entryAt(active);
  return html`
    <h1>Files at ${short(at)}</h1>
    <${Crumbs} at=${at} path=${path} />
    <div class="toolbar">
      <label>Search names <input type="search" value=${search} onInput=${(e: Event) => setSearch((e.target as HTMLInputElement).value)} placeholder="part of a name" /></label>
      <span role="status" aria-live="polite">${total === null ? 'Loading…' : `${total} entr${total === 1 ? 'y' : 'ies'}`}</span>
      ${chosen.size > 0
        ? html`<a class="button" id="restore-selection" href=${href('restore', { at, path, p: [...chosen.keys()] })}>Restore ${chosen.size} selected…</a>`
        : selected && html`<a class="button" href=${href('restore', { at, path: selected.path })}>Restore ${selected.name}…</a>`}
      <a class="button" href=${href('restore', { at, path })}>Restore this directory…</a>
      <a href=${href('datasets', { at })}>Datasets in this snapshot</a>
    </div>
    <${Status} error=${error} />
    <div role="grid" aria-label=${`Entries of ${path}`} aria-rowcount=${(total ?? 0) + 1} aria-activedescendant=${total ? 'row-' + active : undefined} tabindex="0" class="grid" onKeyDown=${onKey}>
      <div role="row" class="row head" aria-rowindex="1"><span role="columnheader" class="col-pick"><span class="sr-only">Selected</span></span>${header('name', 'Name')}${header('size', 'Size')}${header('mtime', 'Modified')}${header('type', 'Type')}</div>
      <div class="viewport" ref=${viewport} style=${{ height: `${VIEW_ROWS * ROW}px` }} onScroll=${onScroll}>
        <div class="spacer" style=${{ height: `${(total ?? 0) * ROW}px` }}>${rows}</div>
      </div>
    </div>
    <p class="hint">Arrow keys, Page Up/Down, Home and End move; Enter opens; Space selects for a restore; Backspace goes up.</p>
  `;
}

const parent = (p: string) => p.slice(0, p.lastIndexOf('/')) || '/';

function Crumbs(props: { at: string; path: string }) {
  const parts = props.path.split('/').filter((x) => x);
  return html`<nav aria-label="Path" class="crumbs">
    <a href=${href('browse', { at: props.at, path: '/' })}>/</a>
    ${parts.map((name, i) => html`<a href=${href('browse', { at: props.at, path: '/' + parts.slice(0, i + 1).join('/') })}>${name}</a>${i < parts.length - 1 ? ' / ' : ''}`)}
  </nav>`;
}

// ---------------------------------------------------------------- a file's pages

const FILE_PAGES: [string, string][] = [
  ['history', 'History'],
  ['map', 'Change map'],
  ['compare', 'Compare'],
  ['blame', 'Blame'],
  ['preview', 'Preview'],
  ['download', 'Download'],
  ['restore', 'Restore'],
];

function FileNav(props: { page: string; at: string; path: string }) {
  return html`<nav aria-label="File" class="tabs">
    ${FILE_PAGES.map(([p, label]) => html`<a href=${href(p, { at: props.at, path: props.path })} aria-current=${p === props.page ? 'page' : undefined}>${label}</a>`)}
  </nav>`;
}

function FileFrame(props: { page: string; at: string; path: string; children: ComponentChildren }) {
  return html`<h1>${props.path}</h1>
    <${Crumbs} at=${props.at} path=${parent(props.path)} />
    <p>In snapshot <span class="mono">${short(props.at)}</span></p>
    <${FileNav} ...${props} />
    <section aria-label=${FILE_PAGES.find(([p]) => p === props.page)?.[1]}>${props.children}</section>`;
}

function History(props: { at: string; path: string }) {
  const r = useAsync(() => get<{ versions: Version[]; order: Record<string, number> }>('history', props), [props.at, props.path]);
  const order = r.value?.order ?? {};
  return html`<${FileFrame} page="history" ...${props}>
    <${Status} ...${r} />
    ${r.value &&
    html`<table aria-label="Versions">
      <thead><tr><th scope="col">Time</th><th scope="col">Snapshot</th><th scope="col">Size</th><th scope="col">Bytes changed</th><th scope="col">Data bytes</th><th scope="col">Reference bytes</th><th scope="col">Views</th></tr></thead>
      <tbody>
        ${r.value.versions.map(
          (v) => html`<tr key=${v.snapshot} class=${v.changed ? 'changed' : 'same'} data-snapshot=${v.snapshot}>
            <td>${time(v.time)}</td>
            <td class="mono"><span class="swatch" style=${{ background: colour(v.snapshot, order) }}></span>${short(v.snapshot)}</td>
            <td class="num">${bytes(v.size)}</td>
            <td class="num">${v.changed ? bytes(v.bytesChanged) : 'unchanged'}</td>
            <td class="num">${bytes(v.dataBytes)}</td>
            <td class="num">${bytes(v.refBytes)}</td>
            <td>${v.type === 'file' && html`<a href=${href('map', { at: v.snapshot, path: props.path })}>map</a> <a href=${href('preview', { at: v.snapshot, path: props.path })}>preview</a>`}</td>
          </tr>`,
        )}
      </tbody>
    </table>`}
  </${FileFrame}>`;
}

/** A bar along the file: one segment per span, coloured, its offsets in its title (shown on hover) and label. */
function Bar(props: { size: number; label: string; spans: { start: number; end: number; colour: string; title: string; kind?: string }[] }) {
  const size = Math.max(1, props.size);
  return html`<div class="bar" role="img" aria-label=${props.label}>
    ${props.spans.map(
      (s) => html`<div class=${'seg ' + (s.kind ?? '')} title=${s.title} style=${{ left: `${(s.start / size) * 100}%`, width: `max(1px, ${((s.end - s.start + 1) / size) * 100}%)`, background: s.colour }}></div>`,
    )}
  </div>`;
}

function Legend(props: { ids: string[]; order: Record<string, number>; times: Record<string, number | null> }) {
  return html`<ul class="legend" aria-label="Snapshots in this map">
    ${props.ids.map((id) => html`<li key=${id}><span class="swatch" style=${{ background: colour(id, props.order) }}></span><span class="mono">${short(id)}</span> ${time(props.times[id])}</li>`)}
  </ul>`;
}

function ChangeMapPage(props: { at: string; path: string }) {
  const r = useAsync(() => get<ChangeMap>('toc', props), [props.at, props.path]);
  const m = r.value;
  const order = m?.order ?? {};
  const ids = m ? [...new Set(m.sources.map((s) => s.snapshot))] : [];
  return html`<${FileFrame} page="map" ...${props}>
    <${Status} ...${r} />
    ${m &&
    html`<p>${bytes(m.size)}, ${m.entries.length} TOC entries${m.since ? html`, unchanged since <span class="mono">${short(m.since)}</span>` : ''}. Hover a segment for its offsets.</p>
      <h2>Table of contents</h2>
      <${Bar}
        size=${m.size}
        label="Data entries and reference blocks along the file"
        spans=${m.entries.map((e) => ({
          start: e.start,
          end: e.end,
          kind: e.kind,
          colour: e.kind === 'data' ? colour(m.since ?? m.snapshot, order) : '#c8ccd2',
          title: e.kind === 'data' ? `data ${hex(e.start)}–${hex(e.end)} (${e.size} B), block ${e.block.slice(0, 16)}` : `reference ${hex(e.start)}–${hex(e.end)} → snapshot ${short(e.target.snapshot)} ${hex(e.target.start)}–${hex(e.target.end)} (offset ${e.offset >= 0 ? '+' : '-'}${hex(Math.abs(e.offset))})`,
        }))}
      />
      <h2>Where each byte comes from</h2>
      <${Bar} size=${m.size} label="The snapshot that wrote each part of the file" spans=${m.sources.map((s) => ({ start: s.start, end: s.end, colour: colour(s.snapshot, order), title: `${hex(s.start)}–${hex(s.end)} (${s.end - s.start + 1} B) from snapshot ${short(s.snapshot)}` }))} />
      <${Legend} ids=${ids} order=${order} times=${m.times} />
      <details>
        <summary>Entries</summary>
        <table aria-label="TOC entries">
          <thead><tr><th scope="col">Start</th><th scope="col">End</th><th scope="col">Kind</th><th scope="col">Points at</th></tr></thead>
          <tbody>
            ${m.entries.slice(0, 2000).map(
              (e) => html`<tr><td class="mono">${hex(e.start)}</td><td class="mono">${hex(e.end)}</td><td>${e.kind === 'data' ? 'data' : 'reference'}</td>
                <td class="mono">${e.kind === 'data' ? `block ${e.block.slice(0, 16)} (${e.size} B)` : `${short(e.target.snapshot)} ${hex(e.target.start)}–${hex(e.target.end)} (offset ${e.offset})`}</td></tr>`,
            )}
          </tbody>
        </table>
      </details>`}
  </${FileFrame}>`;
}

function ComparePage(props: { at: string; path: string; a?: string; b?: string }) {
  const h_ = useAsync(() => get<{ versions: Version[] }>('history', { at: props.at, path: props.path }), [props.at, props.path]);
  const files = (h_.value?.versions ?? []).filter((v) => v.type === 'file');
  const changed = files.filter((v) => v.changed);
  const b = props.b ?? props.at;
  const a = props.a ?? [...changed].reverse().find((v) => v.time < (files.find((x) => x.snapshot === b)?.time ?? Infinity))?.snapshot ?? files[0]?.snapshot;
  const r = useAsync(() => (a && b ? get<Comparison>('compare', { path: props.path, a, b }) : Promise.resolve(undefined)), [props.path, a, b]);
  const pick = (which: 'a' | 'b', id: string) => go('compare', { at: props.at, path: props.path, a: which === 'a' ? id : a, b: which === 'b' ? id : b });
  const select = (which: 'a' | 'b', value: string | undefined, label: string) =>
    html`<label>${label} <select value=${value} onChange=${(e: Event) => pick(which, (e.target as HTMLSelectElement).value)}>
      ${files.map((v) => html`<option value=${v.snapshot}>${time(v.time)} ${short(v.snapshot)}${v.changed ? '' : ' (unchanged)'}</option>`)}
    </select></label>`;
  const c = r.value;
  return html`<${FileFrame} page="compare" ...${props}>
    <${Status} ...${h_} />
    <div class="toolbar">${select('a', a, 'Older version')} ${select('b', b, 'Newer version')}</div>
    <${Status} error=${r.error} />
    ${c &&
    html`<p>${bytes(c.bytesAdded)} of the newer version (${bytes(c.b.size)}) are not in the older; ${bytes(c.bytesRemoved)} of the older (${bytes(c.a.size)}) are gone.</p>
      <h2>Changed in the newer version</h2>
      <${Bar} size=${c.b.size} label="Changed ranges of the newer version" spans=${c.added.map(([s, e]) => ({ start: s, end: e, colour: '#d9534f', title: `${hex(s)}–${hex(e)} (${e - s + 1} B)` }))} />
      <${Ranges} list=${c.added} label="Changed ranges of the newer version" />
      <h2>Gone from the older version</h2>
      <${Bar} size=${c.a.size} label="Ranges of the older version that are gone" spans=${c.removed.map(([s, e]) => ({ start: s, end: e, colour: '#777', title: `${hex(s)}–${hex(e)} (${e - s + 1} B)` }))} />
      <${Ranges} list=${c.removed} label="Ranges of the older version that are gone" />`}
  </${FileFrame}>`;
}

function Ranges(props: { list: [number, number][]; label: string }) {
  if (props.list.length === 0) return html`<p>None.</p>`;
  return html`<ul class="ranges" aria-label=${props.label}>
    ${props.list.slice(0, 500).map(([s, e]) => html`<li class="mono">${s}–${e} (${e - s + 1} B)</li>`)}
    ${props.list.length > 500 ? html`<li>… ${props.list.length - 500} more</li>` : ''}
  </ul>`;
}

function RangeForm(props: { start: string; end: string; onSubmit: (start: string, end: string) => void; label: string; endLabel?: string }) {
  const [start, setStart] = useState(props.start);
  const [end, setEnd] = useState(props.end);
  useEffect(() => (setStart(props.start), setEnd(props.end)), [props.start, props.end]);
  return html`<form class="toolbar" onSubmit=${(e: Event) => (e.preventDefault(), props.onSubmit(start.trim(), end.trim()))}>
    <label>Start byte <input name="start" inputmode="numeric" value=${start} onInput=${(e: Event) => setStart((e.target as HTMLInputElement).value)} /></label>
    <label>${props.endLabel ?? 'End byte (inclusive)'} <input name="end" inputmode="numeric" value=${end} onInput=${(e: Event) => setEnd((e.target as HTMLInputElement).value)} /></label>
    <button type="submit">${props.label}</button>
  </form>`;
}

function BlamePage(props: { at: string; path: string; start?: string; end?: string }) {
  const r = useAsync(() => get<Blame>('blame', props), [props.at, props.path, props.start, props.end]);
  const b = r.value;
  const order = b?.order ?? {};
  return html`<${FileFrame} page="blame" ...${props}>
    <${RangeForm} start=${props.start ?? '0'} end=${props.end ?? ''} label="Blame" onSubmit=${(start: string, end: string) => go('blame', { at: props.at, path: props.path, start, end: end || undefined })} />
    <${Status} ...${r} />
    ${b &&
    html`<p>Bytes ${b.start}–${b.end} of ${b.size}: which snapshot last changed each part, following reference blocks back.</p>
      <${Bar} size=${b.end - b.start + 1} label="The snapshot that last changed each part of the range" spans=${b.spans.map((s: Span) => ({ start: s.start - b.start, end: s.end - b.start, colour: colour(s.snapshot, order), title: `${hex(s.start)}–${hex(s.end)} from snapshot ${short(s.snapshot)}` }))} />
      <table aria-label="Blame">
        <thead><tr><th scope="col">Start</th><th scope="col">End</th><th scope="col">Length</th><th scope="col">Snapshot</th><th scope="col">Time</th></tr></thead>
        <tbody>
          ${b.spans.map(
            (s) => html`<tr data-snapshot=${s.snapshot}><td class="mono">${s.start}</td><td class="mono">${s.end}</td><td class="num">${s.end - s.start + 1}</td>
              <td class="mono"><span class="swatch" style=${{ background: colour(s.snapshot, order) }}></span><a href=${href('map', { at: s.snapshot, path: props.path })}>${short(s.snapshot)}</a></td><td>${time(b.times[s.snapshot])}</td></tr>`,
          )}
        </tbody>
      </table>`}
  </${FileFrame}>`;
}

function PreviewPage(props: { at: string; path: string; start?: string; length?: string }) {
  const r = useAsync(() => get<Preview>('preview', props), [props.at, props.path, props.start, props.length]);
  const p = r.value;
  const lines = useMemo(() => (p ? hexLines(p.data, p.start) : []), [p]);
  return html`<${FileFrame} page="preview" ...${props}>
    <${RangeForm} start=${props.start ?? '0'} end=${props.length ?? '4096'} endLabel="Length (up to 65536)" label="Show" onSubmit=${(start: string, length: string) => go('preview', { at: props.at, path: props.path, start, length })} />
    <${Status} ...${r} />
    ${p && html`<p>Bytes ${p.start}–${p.start + p.length - 1} of ${p.size}, as hex and text.</p><pre class="hex" tabindex="0" aria-label="Hex and text">${lines.join('\n')}</pre>`}
  </${FileFrame}>`;
}

/** Base64 bytes as hex dump lines: offset, 16 bytes in hex, the same as text. */
function hexLines(base64: string, start: number): string[] {
  const data = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
  const out: string[] = [];
  for (let i = 0; i < data.length; i += 16) {
    const row = data.subarray(i, i + 16);
    const hexes = [...row].map((x) => x.toString(16).padStart(2, '0')).join(' ');
    const text = [...row].map((x) => (x >= 0x20 && x < 0x7f ? String.fromCharCode(x) : '.')).join('');
    out.push(`${(start + i).toString(16).padStart(10, '0')}  ${hexes.padEnd(47)}  ${text}`);
  }
  return out;
}

function DownloadPage(props: { at: string; path: string; start?: string; end?: string }) {
  const link = props.start !== undefined ? downloadUrl({ at: props.at, path: props.path, start: props.start, end: props.end || undefined }) : undefined;
  return html`<${FileFrame} page="download" ...${props}>
    <p><a class="button" id="download-file" href=${downloadUrl({ at: props.at, path: props.path })} download>Download the whole file</a></p>
    <h2>A range</h2>
    <${RangeForm} start=${props.start ?? '0'} end=${props.end ?? ''} label="Make link" onSubmit=${(start: string, end: string) => go('download', { at: props.at, path: props.path, start, end: end || undefined })} />
    ${link && html`<p><a class="button" id="download-range" href=${link} download>Download bytes ${props.start}–${props.end || 'end'}</a></p>`}
  </${FileFrame}>`;
}

function RestorePage(props: { at: string; path: string; paths: string[] }) {
  const paths = props.paths.length > 0 ? props.paths : [props.path];
  const [target, setTarget] = useState('');
  const [overwrite, setOverwrite] = useState('never');
  const [job, setJob] = useState<RestoreJob | undefined>();
  const [error, setError] = useState<string | undefined>();
  useEffect(() => {
    if (!job || job.state !== 'running') return;
    const t = setTimeout(() => get<RestoreJob>('restore', { job: job.id }).then(setJob, (e: Error) => setError(e.message)), 250);
    return () => clearTimeout(t);
  }, [job]);
  const start = (e: Event) => {
    e.preventDefault();
    setError(undefined);
    post<RestoreJob>('restore', { at: props.at, paths, target, overwrite }).then(setJob, (err: Error) => setError(err.message));
  };
  return html`<${FileFrame} page="restore" ...${props}>
    <p>Restores, as they were in snapshot <span class="mono">${short(props.at)}</span>, below a directory of this machine (their stored paths are recreated there):</p>
    <ul class="mono" aria-label="Paths to restore">${paths.slice(0, 100).map((p) => html`<li>${p}</li>`)}${paths.length > 100 ? html`<li>… ${paths.length - 100} more</li>` : ''}</ul>
    <form class="toolbar" onSubmit=${start}>
      <label>Target directory <input name="target" required value=${target} onInput=${(e: Event) => setTarget((e.target as HTMLInputElement).value)} placeholder="/tmp/restored" /></label>
      <label>Existing files <select value=${overwrite} onChange=${(e: Event) => setOverwrite((e.target as HTMLSelectElement).value)}>
        <option value="never">keep them</option><option value="if-changed">replace unless size and time match</option><option value="always">replace them</option>
      </select></label>
      <button type="submit" disabled=${job?.state === 'running'}>Restore</button>
    </form>
    <${Status} error=${error ?? job?.error?.message} />
    ${job &&
    html`<div role="status" aria-live="polite" class="progress">
      <progress max=${job.total ?? 1} value=${job.total ? job.bytes : job.state === 'done' ? 1 : undefined} aria-label="Restore progress"></progress>
      <span>${job.state === 'done' ? `Done: ${job.result?.files ?? job.files} files, ${bytes(job.result?.bytes ?? job.bytes)} into ${job.target}` : job.state === 'failed' ? 'Failed' : `${job.files} files, ${bytes(job.bytes)}${job.total ? ` of ${bytes(job.total)}` : ''}`}</span>
    </div>`}
  </${FileFrame}>`;
}

// ---------------------------------------------------------------- datasets and their items

/** A table whose rows move with the arrow keys and open with Enter or a click, as the timeline's. */
function useRowKeys(count: number, open: (i: number) => void) {
  const [active, setActive] = useState(-1);
  const body = useRef<HTMLTableSectionElement>(null);
  const move = (i: number) => {
    setActive(i);
    (body.current?.children[i] as HTMLElement | undefined)?.focus();
  };
  const rowOf = (e: KeyboardEvent) => [...(body.current?.children ?? [])].indexOf((e.target as HTMLElement).closest('tr')!);
  return {
    body,
    onKeyDown: (e: KeyboardEvent) => listKeys(e, rowOf(e), count, move, open),
    row: (i: number) => ({ tabindex: i === Math.max(0, active) ? 0 : -1, 'aria-selected': i === active, onFocus: () => setActive(i), onClick: () => open(i) }),
  };
}

function DatasetsPage(props: { at: string }) {
  const r = useAsync(() => get<{ snapshot: string; datasets: DatasetInfo[] }>('datasets', { at: props.at }), [props.at]);
  const list = r.value?.datasets ?? [];
  const rows = useRowKeys(list.length, (i) => go('items', { at: r.value!.snapshot, path: list[i]!.path }));
  return html`<h1>Datasets at ${short(r.value?.snapshot ?? props.at)}</h1>
    <p>Mailboxes, archives, databases and disk images this snapshot holds, told by their content when they were backed up. Arrow keys move, Enter opens one's items.</p>
    <${Status} ...${r} />
    ${r.value &&
    (list.length === 0
      ? html`<p>This snapshot holds no datasets.</p>`
      : html`<table aria-label="Datasets">
          <thead><tr><th scope="col">Path</th><th scope="col">Type</th><th scope="col">Size</th></tr></thead>
          <tbody ref=${rows.body} onKeyDown=${rows.onKeyDown}>
            ${list.map(
              (d, i) => html`<tr key=${d.path} data-path=${d.path} ...${rows.row(i)}>
                <td class="mono"><a href=${href('items', { at: r.value!.snapshot, path: d.path })} tabindex="-1">${d.path}</a></td>
                <td>${d.what}</td>
                <td class="num">${bytes(d.size)}</td>
              </tr>`,
            )}
          </tbody>
        </table>`)}`;
}

function DatasetFrame(props: { page: string; at: string; path: string; type?: string | null; children: ComponentChildren }) {
  return html`<h1>${props.path}</h1>
    <p>In snapshot <span class="mono">${short(props.at)}</span> · <a href=${href('datasets', { at: props.at })}>all datasets</a> · <a href=${href('history', { at: props.at, path: props.path })}>the file</a></p>
    <nav aria-label="Dataset" class="tabs">
      <a href=${href('items', { at: props.at, path: props.path })} aria-current=${props.page === 'items' ? 'page' : undefined}>Items</a>
      ${props.type === 'sqlite' && html`<a href=${href('sql', { at: props.at, path: props.path })} aria-current=${props.page === 'sql' ? 'page' : undefined}>SQL console</a>`}
    </nav>
    <section aria-label=${props.page === 'sql' ? 'SQL console' : props.page === 'item' ? 'Item' : 'Items'}>${props.children}</section>`;
}

const ITEMS_PAGE = 100;
const text = (v: unknown) => (v === undefined || v === null ? '' : String(v));

/** The columns of a dataset's items, by its type (and, in a disk image, whether partitions or files are shown). */
function itemColumns(type: string | null, inner: string | null): [string, (x: Item) => unknown, string?][] {
  switch (type) {
    case 'mbox':
      return [['#', (m) => m.number, 'num'], ['Date', (m) => m.date], ['From', (m) => m.from], ['Subject', (m) => m.subject], ['Size', (m) => bytes(m.size as number), 'num']];
    case 'zip':
      return [['Name', (e) => e.name, 'mono'], ['Size', (e) => bytes(e.size as number), 'num'], ['Compressed', (e) => bytes(e.compressedSize as number), 'num'], ['Modified', (e) => e.mtime]];
    case 'tar':
      return [['Name', (e) => (e.linkname ? `${e.name} → ${text(e.linkname)}` : e.name), 'mono'], ['Type', (e) => e.type], ['Size', (e) => bytes(e.size as number), 'num'], ['Modified', (e) => e.mtime]];
    case 'sqlite':
      return [['Table', (t) => t.name, 'mono'], ['Type', (t) => t.type], ['Columns', (t) => (t.columns as string[]).join(', ')]];
    default:
      if (inner === null) return [['Partition', (p) => p.name, 'mono'], ['Offset', (p) => p.offset, 'num'], ['Size', (p) => bytes(p.size as number), 'num'], ['Type', (p) => p.type], ['File system', (p) => p.filesystem ?? 'none known'], ['Name', (p) => p.label ?? '']];
      return [['Name', (e) => (e.kind === 'dir' ? `📁 ${e.name}` : e.name), 'mono'], ['Type', (e) => e.kind], ['Size', (e) => (e.kind === 'file' ? bytes(e.size as number) : ''), 'num'], ['Modified', (e) => e.mtime]];
  }
}

/** The directory above `inner` in a disk image ("p1:/etc" → "p1:/"), or undefined above a partition's root: the partitions. */
function innerParent(inner: string): string | undefined {
  if (/^p\d+:\/*$/.test(inner) || /^\/*$/.test(inner)) return undefined;
  const up = inner.replace(/\/+$/, '').replace(/\/[^/]*$/, '');
  return up.endsWith(':') || up === '' ? up + '/' : up;
}

function ItemsPage(props: { at: string; path: string; inner?: string; q?: string; offset?: string }) {
  const offset = Number(props.offset ?? 0) || 0;
  const r = useAsync(() => get<Items>('items', { at: props.at, path: props.path, inner: props.inner, q: props.q, offset, limit: ITEMS_PAGE }), [props.at, props.path, props.inner, props.q, offset]);
  const [search, setSearch] = useState(props.q ?? '');
  const v = r.value;
  const list = v?.items ?? [];
  const at = v?.snapshot ?? props.at;
  const to = (o: Record<string, string | number | undefined>) => go('items', { at, path: props.path, inner: props.inner, q: props.q || undefined, ...o });
  const open = (i: number) => {
    const x = list[i]!;
    if (x.kind === 'message' || (x.kind === 'file' && v?.type !== 'sqlite')) go('item', { at, path: props.path, item: x.id });
    else if (x.kind === 'table' || x.kind === 'view') go('sql', { at, path: props.path, sql: `SELECT * FROM "${x.id.replace(/"/g, '""')}"` });
    else if ((x.kind === 'partition' && x.filesystem) || (x.kind === 'dir' && props.inner !== undefined)) go('items', { at, path: props.path, inner: x.id });
  };
  const rows = useRowKeys(list.length, open);
  const columns = itemColumns(v?.type ?? null, v?.inner ?? null);
  return html`<${DatasetFrame} page="items" at=${at} path=${props.path} type=${v?.type}>
    ${props.inner && html`<p>In <span class="mono">${props.inner}</span> · <a href=${href('items', { at, path: props.path, inner: innerParent(props.inner) })}>up</a></p>`}
    <form class="toolbar" role="search" onSubmit=${(e: Event) => (e.preventDefault(), to({ q: search || undefined, offset: undefined }))}>
      <label>Search items <input type="search" name="q" value=${search} onInput=${(e: Event) => setSearch((e.target as HTMLInputElement).value)} placeholder=${v?.type === 'mbox' ? 'subject, sender or Message-ID' : 'part of a name'} /></label>
      <button type="submit">Search</button>
      <span role="status" aria-live="polite">${v ? (v.total === 0 ? 'No items' : `Items ${offset + 1}–${offset + list.length}${v.total !== null ? ` of ${v.total}` : v.more ? ', more follow' : ''}`) : ''}</span>
      <button type="button" disabled=${offset === 0} onClick=${() => to({ offset: Math.max(0, offset - ITEMS_PAGE) || undefined })}>Previous page</button>
      <button type="button" disabled=${!v || !v.more} onClick=${() => to({ offset: offset + ITEMS_PAGE })}>Next page</button>
    </form>
    <${Status} ...${r} />
    ${v &&
    html`<p>${v.what}, ${bytes(v.size)}. Arrow keys move; Enter opens ${v.type === 'sqlite' ? 'a table in the SQL console' : 'an item'}.</p>
      <table aria-label="Items">
        <thead><tr>${columns.map(([label]) => html`<th scope="col">${label}</th>`)}</tr></thead>
        <tbody ref=${rows.body} onKeyDown=${rows.onKeyDown}>
          ${list.map((x, i) => html`<tr key=${x.id} data-item=${x.id} ...${rows.row(i)}>${columns.map(([, f, cls]) => html`<td class=${cls}>${text(f(x))}</td>`)}</tr>`)}
        </tbody>
      </table>`}
  </${DatasetFrame}>`;
}

const ITEM_PREVIEW = 4096;

function ItemPage(props: { at: string; path: string; item: string; start?: string }) {
  const start = Number(props.start ?? 0) || 0;
  const r = useAsync(() => get<ItemPreview>('item-preview', { at: props.at, path: props.path, item: props.item, start, length: ITEM_PREVIEW }), [props.at, props.path, props.item, start]);
  const p = r.value;
  const lines = useMemo(() => (p ? hexLines(p.data, p.start) : []), [p]);
  const page = (s: number) => go('item', { at: props.at, path: props.path, item: props.item, start: s || undefined });
  return html`<${DatasetFrame} page="item" at=${props.at} path=${props.path}>
    <h2>${p?.item ?? props.item}</h2>
    <p><a class="button" id="download-item" href=${itemUrl({ at: props.at, path: props.path, item: props.item })} download>Download this item</a></p>
    <${Status} ...${r} />
    ${p &&
    html`<p>Bytes ${p.start}–${p.start + p.length - 1}${p.size !== null ? ` of ${p.size}` : ''}, as hex and text.</p>
      <div class="toolbar">
        <button type="button" disabled=${start === 0} onClick=${() => page(Math.max(0, start - ITEM_PREVIEW))}>Previous ${ITEM_PREVIEW} bytes</button>
        <button type="button" disabled=${!p.more} onClick=${() => page(start + ITEM_PREVIEW)}>Next ${ITEM_PREVIEW} bytes</button>
      </div>
      <pre class="hex" tabindex="0" aria-label="Hex and text">${lines.join('\n')}</pre>`}
  </${DatasetFrame}>`;
}

const SQL_PAGE = 100;

function cellText(c: Cell): string {
  if (c === null) return 'NULL';
  if (typeof c !== 'object') return String(c);
  if ('base64' in c) {
    const b = Uint8Array.from(atob(c.base64), (x) => x.charCodeAt(0));
    return `x'${[...b].map((x) => x.toString(16).padStart(2, '0')).join('')}${c.cut ? '…' : ''}' (${c.bytes} B)`;
  }
  return `${c.text}… (${c.length} characters)`;
}

function SqlConsole(props: { at: string; path: string; sql?: string; offset?: string }) {
  const offset = Number(props.offset ?? 0) || 0;
  const [sql, setSql] = useState(props.sql ?? '');
  useEffect(() => setSql(props.sql ?? ''), [props.sql]);
  const r = useAsync(
    () => (props.sql ? get<SqlPage>('sql', { at: props.at, path: props.path, sql: props.sql, offset, limit: SQL_PAGE }) : Promise.resolve(undefined)),
    [props.at, props.path, props.sql, offset],
  );
  const run = (o: number) => go('sql', { at: props.at, path: props.path, sql: sql.trim() || undefined, offset: o || undefined });
  const v = r.value;
  return html`<${DatasetFrame} page="sql" at=${props.at} path=${props.path} type="sqlite">
    <form class="sql" onSubmit=${(e: Event) => (e.preventDefault(), run(0))}>
      <label for="sql-text">SQL query (read-only; Ctrl+Enter runs it)</label>
      <textarea id="sql-text" name="sql" rows="4" spellcheck="false" value=${sql} onInput=${(e: Event) => setSql((e.target as HTMLTextAreaElement).value)}
        onKeyDown=${(e: KeyboardEvent) => e.key === 'Enter' && (e.ctrlKey || e.metaKey) && (e.preventDefault(), run(0))}></textarea>
      <div class="toolbar"><button type="submit">Run</button></div>
    </form>
    <${Status} ...${r} />
    ${v &&
    html`<div class="toolbar">
        <span role="status" aria-live="polite">${v.rows.length === 0 ? (v.offset === 0 ? 'No rows' : 'No more rows') : `Rows ${v.offset + 1}–${v.offset + v.rows.length}${v.more ? ', more follow' : ''}`} (${v.ms} ms, ${bytes(v.fetched)} fetched)</span>
        <button type="button" disabled=${offset === 0} onClick=${() => run(Math.max(0, offset - SQL_PAGE))}>Previous rows</button>
        <button type="button" disabled=${!v.more} onClick=${() => run(offset + SQL_PAGE)}>Next rows</button>
      </div>
      <div class="results" tabindex="0" aria-label="Query results, scrollable">
        <table aria-label="Query results">
          <thead><tr>${v.columns.map((c) => html`<th scope="col">${c}</th>`)}</tr></thead>
          <tbody>${v.rows.map((row) => html`<tr>${row.map((c) => html`<td class=${c === null ? 'null' : typeof c === 'number' ? 'num' : typeof c === 'object' ? 'mono' : ''}>${cellText(c)}</td>`)}</tr>`)}</tbody>
        </table>
      </div>`}
  </${DatasetFrame}>`;
}

// ---------------------------------------------------------------- the app

function App() {
  const [route, setRoute] = useState(currentRoute());
  useEffect(() => {
    const on = () => setRoute(currentRoute());
    addEventListener('hashchange', on);
    return () => removeEventListener('hashchange', on);
  }, []);
  const main = useRef<HTMLElement>(null);
  useEffect(() => {
    document.title = `strata – ${route.page}`;
    // A new page: focus goes to its heading, so a keyboard or screen reader starts there.
    main.current?.querySelector<HTMLElement>('h1')?.focus();
  }, [route]);
  const p = Object.fromEntries(route.params) as Record<string, string>;
  const at = p.at ?? 'latest';
  const path = p.path ?? '/';
  let page;
  switch (route.page) {
    case 'browse':
      // A new directory starts afresh: no search, no selection, at the top.
      page = html`<${Browser} key=${at + '\0' + path} at=${at} path=${path} />`;
      break;
    case 'history':
      page = html`<${History} at=${at} path=${path} />`;
      break;
    case 'map':
      page = html`<${ChangeMapPage} at=${at} path=${path} />`;
      break;
    case 'compare':
      page = html`<${ComparePage} at=${at} path=${path} a=${p.a} b=${p.b} />`;
      break;
    case 'blame':
      page = html`<${BlamePage} at=${at} path=${path} start=${p.start} end=${p.end} />`;
      break;
    case 'preview':
      page = html`<${PreviewPage} at=${at} path=${path} start=${p.start} length=${p.length} />`;
      break;
    case 'download':
      page = html`<${DownloadPage} at=${at} path=${path} start=${p.start} end=${p.end} />`;
      break;
    case 'datasets':
      page = html`<${DatasetsPage} at=${at} />`;
      break;
    case 'items':
      page = html`<${ItemsPage} key=${at + '\0' + path + '\0' + (p.inner ?? '')} at=${at} path=${path} inner=${p.inner} q=${p.q} offset=${p.offset} />`;
      break;
    case 'item':
      page = html`<${ItemPage} at=${at} path=${path} item=${p.item ?? ''} start=${p.start} />`;
      break;
    case 'sql':
      page = html`<${SqlConsole} at=${at} path=${path} sql=${p.sql} offset=${p.offset} />`;
      break;
    case 'restore':
      page = html`<${RestorePage} at=${at} path=${path} paths=${route.params.getAll('p')} />`;
      break;
    default:
      page = html`<${Timeline} />`;
  }
  return html`<header><a href="#/" class="brand">strata</a><nav aria-label="Main"><a href="#/">Timeline</a> <a href=${href('browse', { at: 'latest', path: '/' })}>Latest files</a> <a href=${href('datasets', { at: 'latest' })}>Latest datasets</a></nav></header>
    <main ref=${main} key=${route.page}>${page}</main>`;
}

// The one-time token has done its work: it leaves the address bar and the history.
if (location.search) history.replaceState(null, '', '/' + location.hash);
render(html`<${App} />`, document.getElementById('app')!);

/** The type column's words: a FIFO or a device is said, not shown as a file. */
const TYPE_LABELS: Record<string, string> = { fifo: 'FIFO', chardev: 'char device', blockdev: 'block device' };
