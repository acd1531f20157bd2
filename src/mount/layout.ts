/**
 * What a mount shows, above the snapshots' own trees. Without `--at`:
 *
 *   latest -> ids/<id>             a symlink to the newest snapshot
 *   ids/<first 8 hex of the id>/   every snapshot
 *   snapshots/<UTC time>/          every snapshot, by time (2026-03-01T09:00:00Z)
 *   tags/<tag>/<UTC time>/         every tagged snapshot, under each of its tags
 *
 * Each of those is a snapshot's tree under its absolute source paths, as
 * restore lays them out under --target. With `--at` the mount is that one
 * snapshot's tree.
 *
 * The layout follows the repository (`update`): snapshots made after the
 * mount started are added, forgotten ones taken out. A name, once given to a
 * snapshot, means that snapshot for the life of the mount and is never given
 * to another (the kernel may keep what it learnt under a name): a snapshot
 * that arrives with the same second or id prefix as one shown before gets
 * its id added instead. `latest` is a symlink, so that moving it changes no
 * directory the kernel may hold.
 */
import type { SnapshotTree } from '../engine/snapshot-tree.js';

/** A directory of the layout: its entries are directories of the layout, snapshot trees or links. */
export class LayoutDir {
  readonly entries = new Map<string, LayoutDir | SnapshotTree | LayoutLink>();

  constructor(
    /** Its modification time, ms since the epoch: that of the newest snapshot below it. */
    public time: number,
  ) {}

  /** The directory named `name` here, made when missing. */
  dir(name: string): LayoutDir {
    let d = this.entries.get(name);
    if (!(d instanceof LayoutDir)) this.entries.set(name, (d = new LayoutDir(0)));
    return d;
  }

  /** Names in order, as a listing shows them. */
  names(): string[] {
    return [...this.entries.keys()].sort();
  }
}

/** A symlink of the layout (`latest`). */
export class LayoutLink {
  constructor(
    /** Where it points, relative to the directory holding it. */
    readonly target: string,
    /** Its modification time: the snapshot's it points at. */
    readonly time: number,
  ) {}
}

/** Where a path of the mount leads: a directory or link of the layout, or a path inside a snapshot's tree. */
export type Place = { kind: 'layout'; dir: LayoutDir } | { kind: 'link'; link: LayoutLink } | { kind: 'tree'; tree: SnapshotTree; path: string };

/** A snapshot's time as the layout names it: UTC, to the second. */
export function timeName(ms: number): string {
  return new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');
}

/** Tags are names of the layout: a slash or a name of dots cannot be one. */
function tagName(tag: string): string | undefined {
  return tag.length === 0 || tag === '.' || tag === '..' || tag.includes('/') || tag.includes('\0') ? undefined : tag;
}

function count<T>(items: readonly T[], key: (t: T) => string): Map<string, number> {
  const out = new Map<string, number>();
  for (const t of items) out.set(key(t), (out.get(key(t)) ?? 0) + 1);
  return out;
}

export class Layout {
  /** The names each snapshot was given (by id): kept for the life of the mount. */
  private readonly names = new Map<string, { id: string; time: string }>();
  /** Names given once, under ids/ and under snapshots/ (and each tag): never given to another snapshot. */
  private readonly takenIds = new Set<string>();
  private readonly takenTimes = new Set<string>();
  /** The snapshots shown now, by the paths that lead to them (/ids/..., /snapshots/..., /tags/T/...). */
  private shown = new Map<string, string>();

  private constructor(private readonly root: LayoutDir | SnapshotTree) {}

  /** The layout of every snapshot (oldest first). */
  static of(trees: readonly SnapshotTree[]): Layout {
    const layout = new Layout(new LayoutDir(trees.length > 0 ? 0 : Date.now()));
    layout.update(trees);
    return layout;
  }

  /** Whether the layout follows the repository (not a single snapshot's tree). */
  get followsRepository(): boolean {
    return this.root instanceof LayoutDir;
  }

  /** The snapshots shown now, oldest first. */
  trees(): SnapshotTree[] {
    if (!(this.root instanceof LayoutDir)) return [this.root];
    const ids = this.root.entries.get('ids');
    return ids instanceof LayoutDir ? [...ids.entries.values()].filter((t): t is SnapshotTree => !(t instanceof LayoutDir) && !(t instanceof LayoutLink)).sort((a, b) => a.time - b.time) : [];
  }

  /**
   * Shows `trees` (every snapshot now, oldest first) in place of what was
   * shown. Returns the paths of the mount that led somewhere and no longer
   * do, or lead elsewhere: names the kernel may have kept, to be dropped.
   */
  update(trees: readonly SnapshotTree[]): string[] {
    const root = this.root;
    if (!(root instanceof LayoutDir)) return [];
    const fresh = trees.filter((t) => !this.names.has(t.id));
    const byPrefix = count(fresh, (t) => t.id.slice(0, 8));
    const bySecond = count(fresh, (t) => timeName(t.time));
    for (const t of fresh) {
      const prefix = t.id.slice(0, 8);
      const id = byPrefix.get(prefix)! > 1 || this.takenIds.has(prefix) ? t.id : prefix;
      this.takenIds.add(prefix).add(id);
      const second = timeName(t.time);
      let time = bySecond.get(second)! > 1 || this.takenTimes.has(second) ? `${second}-${prefix}` : second;
      if (time !== second && this.takenTimes.has(time)) time = `${second}-${t.id}`;
      this.takenTimes.add(second).add(time);
      this.names.set(t.id, { id, time });
    }
    const ids = root.dir('ids');
    const snapshots = root.dir('snapshots');
    const tags = root.dir('tags');
    ids.entries.clear();
    snapshots.entries.clear();
    tags.entries.clear();
    root.entries.delete('latest');
    const shown = new Map<string, string>();
    for (const t of trees) {
      const name = this.names.get(t.id)!;
      ids.entries.set(name.id, t);
      shown.set(`/ids/${name.id}`, t.id);
      snapshots.entries.set(name.time, t);
      shown.set(`/snapshots/${name.time}`, t.id);
      for (const tag of new Set(t.tags)) {
        const n = tagName(tag);
        if (n === undefined) continue;
        const dir = tags.dir(n);
        dir.entries.set(name.time, t);
        dir.time = Math.max(dir.time, t.time);
        shown.set(`/tags/${n}`, '');
        shown.set(`/tags/${n}/${name.time}`, t.id);
      }
      for (const d of [ids, snapshots, tags]) d.time = Math.max(d.time, t.time);
    }
    const newest = trees[trees.length - 1];
    if (newest) {
      root.entries.set('latest', new LayoutLink(`ids/${this.names.get(newest.id)!.id}`, newest.time));
      root.time = Math.max(root.time, newest.time);
    }
    const gone = [...this.shown].filter(([p, id]) => shown.get(p) !== id).map(([p]) => p);
    if (!newest && this.shown.size > 0) gone.push('/latest');
    this.shown = shown;
    return gone;
  }

  /** One snapshot's tree as the whole mount (`--at`). */
  static single(tree: SnapshotTree): Layout {
    return new Layout(tree);
  }

  /** Where a path of the mount ("/", "/ids/4f1c2a9e/home/me") leads, or undefined when nowhere. */
  resolve(p: string): Place | undefined {
    let at: LayoutDir | SnapshotTree | LayoutLink = this.root;
    const names = p.split('/').filter((n) => n.length > 0);
    for (let i = 0; i < names.length; i++) {
      if (at instanceof LayoutLink) return undefined;
      if (!(at instanceof LayoutDir)) return { kind: 'tree', tree: at, path: `/${names.slice(i).join('/')}` };
      const next = at.entries.get(names[i]!);
      if (!next) return undefined;
      at = next;
    }
    return at instanceof LayoutDir ? { kind: 'layout', dir: at } : at instanceof LayoutLink ? { kind: 'link', link: at } : { kind: 'tree', tree: at, path: '/' };
  }
}
