/**
 * What a mount shows, above the snapshots' own trees. Without `--at`:
 *
 *   latest/                        the newest snapshot
 *   ids/<first 8 hex of the id>/   every snapshot
 *   snapshots/<UTC time>/          every snapshot, by time (2026-03-01T09:00:00Z)
 *   tags/<tag>/<UTC time>/         every tagged snapshot, under each of its tags
 *
 * Each of those is a snapshot's tree under its absolute source paths, as
 * restore lays them out under --target. With `--at` the mount is that one
 * snapshot's tree. The layout is made once, from the snapshots there when the
 * mount starts: snapshots never change, so neither does what it shows.
 */
import type { SnapshotTree } from '../engine/snapshot-tree.js';

/** A directory of the layout: its entries are directories of the layout or snapshot trees. */
export class LayoutDir {
  readonly entries = new Map<string, LayoutDir | SnapshotTree>();

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

/** Where a path of the mount leads: a directory of the layout, or a path inside a snapshot's tree. */
export type Place = { kind: 'layout'; dir: LayoutDir } | { kind: 'tree'; tree: SnapshotTree; path: string };

/** A snapshot's time as the layout names it: UTC, to the second. */
export function timeName(ms: number): string {
  return new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');
}

/** Names by time; snapshots made in the same second are told apart by their ids. */
function timeNames(trees: readonly SnapshotTree[]): Map<SnapshotTree, string> {
  const count = new Map<string, number>();
  for (const t of trees) count.set(timeName(t.time), (count.get(timeName(t.time)) ?? 0) + 1);
  return new Map(trees.map((t) => [t, count.get(timeName(t.time))! > 1 ? `${timeName(t.time)}-${t.id.slice(0, 8)}` : timeName(t.time)]));
}

/** Tags are names of the layout: a slash or a name of dots cannot be one. */
function tagName(tag: string): string | undefined {
  return tag.length === 0 || tag === '.' || tag === '..' || tag.includes('/') || tag.includes('\0') ? undefined : tag;
}

export class Layout {
  private constructor(private readonly root: LayoutDir | SnapshotTree) {}

  /** The layout of every snapshot (oldest first). */
  static of(trees: readonly SnapshotTree[]): Layout {
    const root = new LayoutDir(trees.length > 0 ? trees[trees.length - 1]!.time : Date.now());
    const ids = root.dir('ids');
    const snapshots = root.dir('snapshots');
    const tags = root.dir('tags');
    const byTime = timeNames(trees);
    const short = new Map<string, number>();
    for (const t of trees) short.set(t.id.slice(0, 8), (short.get(t.id.slice(0, 8)) ?? 0) + 1);
    for (const t of trees) {
      ids.entries.set(short.get(t.id.slice(0, 8))! > 1 ? t.id : t.id.slice(0, 8), t);
      snapshots.entries.set(byTime.get(t)!, t);
      for (const tag of new Set(t.tags)) {
        const name = tagName(tag);
        if (name === undefined) continue;
        const dir = tags.dir(name);
        dir.entries.set(byTime.get(t)!, t);
        dir.time = Math.max(dir.time, t.time);
      }
      for (const d of [ids, snapshots, tags]) d.time = Math.max(d.time, t.time);
    }
    if (trees.length > 0) root.entries.set('latest', trees[trees.length - 1]!);
    return new Layout(root);
  }

  /** One snapshot's tree as the whole mount (`--at`). */
  static single(tree: SnapshotTree): Layout {
    return new Layout(tree);
  }

  /** Where a path of the mount ("/", "/latest/home/me") leads, or undefined when nowhere. */
  resolve(p: string): Place | undefined {
    let at: LayoutDir | SnapshotTree = this.root;
    const names = p.split('/').filter((n) => n.length > 0);
    for (let i = 0; i < names.length; i++) {
      if (!(at instanceof LayoutDir)) return { kind: 'tree', tree: at, path: `/${names.slice(i).join('/')}` };
      const next = at.entries.get(names[i]!);
      if (!next) return undefined;
      at = next;
    }
    return at instanceof LayoutDir ? { kind: 'layout', dir: at } : { kind: 'tree', tree: at, path: '/' };
  }
}
