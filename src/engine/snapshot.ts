/**
 * Snapshots: what one backup run stored. Catalog rows carry the time (visible)
 * and sealed metadata (host, tags, paths, totals); the full record is also
 * sealed into a pack. A Snapshot navigates its trees by absolute path.
 */
import * as path from 'node:path';
import { integrity, notFound, StrataError } from '../errors.js';
import type { SnapshotRow } from '../catalog/catalog.js';
import type { Repository } from '../repo/repository.js';
import type { CatalogService } from '../catalog/service.js';
import type { When } from '../util/when.js';
import { decodeTree, findEntry, type Tree, type TreeEntry } from './tree.js';
import type { DatasetEntry } from './manifest.js';

export interface SnapshotMeta {
  host: string;
  tags: string[];
  paths: string[];
  parent?: string;
  /** The backup read extended attributes: an entry without any had none (absent: not read, by --no-xattrs or an older strata). */
  xattrs?: true;
  stats?: { files: number; dirs: number; bytes: number; bytesAdded: number };
  /** How many sources, files and directories the backup could not read (absent: none; the backup exited 3). */
  unreadable?: number;
  /**
   * The root tree (hex) and the time, sealed with the id once committed, so
   * the catalog's `root` and `time` are checked against them. Snapshots
   * committed before these fields existed lack them.
   */
  root?: string;
  time?: string;
  /** The manifest: the datasets the snapshot holds, told by content (engine/manifest.ts). Absent before it was kept. */
  datasets?: DatasetEntry[];
  /** A copy made by `strata copy`: the id of the snapshot it was copied from, in the source repository. */
  copiedFrom?: string;
  /** A copy: the snapshot its chain of copies started from (the source's `original`, or the source itself). */
  original?: string;
}

export interface SnapshotRecord extends SnapshotMeta {
  strata: 'snapshot';
  id: string;
  time: string;
  root: string;
  /** Absent in a backup's record; 1, 2, ... in the records `tag` writes to supersede it (the highest wins). */
  revision?: number;
}

export const metaAad = (id: string) => `strata snapshot meta ${id}`;

/**
 * The last step of making a snapshot (a backup, a copy, a mount's commit):
 * its record stored as a blob and the packs flushed, then the catalog told
 * the pending snapshot `seq` is complete, with its sealed meta (the meta,
 * stats and `extra` fields, with the root and time it is checked against)
 * and every blob the snapshot uses.
 */
export async function commitRecord(
  repo: Repository,
  o: {
    seq: number;
    record: Omit<SnapshotRecord, 'strata'>;
    sink: { storeBlob(kind: 'snapshot', plain: Buffer): Promise<Buffer>; readonly blobs: ReadonlySet<string> };
    packer: { flush(): Promise<void> };
  },
): Promise<void> {
  const record: SnapshotRecord = { strata: 'snapshot', ...o.record };
  const recordId = await o.sink.storeBlob('snapshot', Buffer.from(JSON.stringify(record), 'utf8'));
  await o.packer.flush();
  const blobs = [...o.sink.blobs].map((h) => Buffer.from(h, 'hex'));
  const { strata: _s, id: _i, revision: _r, ...meta } = record;
  await repo.service.commitSnapshot(o.seq, Buffer.from(record.root, 'hex'), recordId, repo.keyring.sealJson(meta, metaAad(record.id)), blobs);
}

/** The root directory of every snapshot: "/" with the stored paths below. */
const ROOT_ENTRY = (tree: string): TreeEntry => ({
  name: '/',
  type: 'dir',
  mode: 0o40755,
  uid: 0,
  gid: 0,
  mtimeNs: '0',
  ctimeNs: '0',
  ino: '0',
  size: 0,
  tree,
});

export class Snapshot {
  readonly meta: SnapshotMeta;
  private get trees(): TreeCache {
    let cache = treeCaches.get(this.repo);
    if (!cache) treeCaches.set(this.repo, (cache = new TreeCache()));
    return cache;
  }

  constructor(
    readonly repo: Repository,
    readonly row: SnapshotRow,
  ) {
    this.meta = repo.keyring.openJson<SnapshotMeta>(row.meta, metaAad(row.id), `snapshot ${row.id.slice(0, 8)}`);
    // The catalog's root and time are checked against the sealed ones: another tree would give other files.
    if (this.meta.root !== undefined && row.root !== null && this.meta.root !== row.root.toString('hex')) {
      throw integrity(`snapshot ${row.id.slice(0, 8)}: the catalog's root tree is not the one sealed with it`, { snapshot: row.id });
    }
    if (this.meta.time !== undefined && Date.parse(this.meta.time) !== row.time) {
      throw integrity(`snapshot ${row.id.slice(0, 8)}: the catalog's time is not the one sealed with it`, { snapshot: row.id });
    }
  }

  get id(): string {
    return this.row.id;
  }

  get time(): number {
    return this.row.time;
  }

  get root(): TreeEntry {
    if (!this.row.root) throw new StrataError('integrity', `snapshot ${this.id.slice(0, 8)} has no root tree`);
    return ROOT_ENTRY(this.row.root.toString('hex'));
  }

  async tree(id: string): Promise<Tree> {
    let t = this.trees.get(id);
    if (!t) {
      t = decodeTree(await this.repo.readBlob(Buffer.from(id, 'hex'), 'tree'), id);
      this.trees.add(id, t);
    }
    return t;
  }

  /** The entry at an absolute path, or undefined if the snapshot lacks it. */
  async lookup(absPath: string): Promise<TreeEntry | undefined> {
    let entry = this.root;
    for (const name of splitPath(absPath)) {
      if (entry.type !== 'dir' || !entry.tree) return undefined;
      const next = findEntry(await this.tree(entry.tree), name);
      if (!next) return undefined;
      entry = next;
    }
    return entry;
  }

  /** True when some stored path is at or below `absPath`, or contains it. */
  covers(absPath: string): boolean {
    return this.meta.paths.some((p) => isWithin(absPath, p) || isWithin(p, absPath));
  }

  /**
   * Depth-first walk below `absPath` (not included), children in name order.
   * `descend`, asked once the consumer has seen all of a directory's
   * children, can keep the walk out of a subdirectory.
   */
  async *walk(absPath: string, entry: TreeEntry, descend?: (path: string, entry: TreeEntry) => boolean): AsyncGenerator<{ path: string; entry: TreeEntry }> {
    if (entry.type !== 'dir' || !entry.tree) return;
    const stack: { path: string; entry: TreeEntry }[] = [{ path: absPath, entry }];
    while (stack.length > 0) {
      const dir = stack.pop()!;
      const tree = await this.tree(dir.entry.tree!);
      const children = tree.entries.map((e) => ({ path: path.posix.join(dir.path, e.name), entry: e }));
      const subdirs: typeof children = [];
      for (const c of children) {
        yield c;
        if (c.entry.type === 'dir' && c.entry.tree) subdirs.push(c);
      }
      for (let i = subdirs.length - 1; i >= 0; i--) if (!descend || descend(subdirs[i]!.path, subdirs[i]!.entry)) stack.push(subdirs[i]!);
    }
  }
}

export function splitPath(absPath: string): string[] {
  return absPath.split('/').filter((s) => s.length > 0);
}

export function isWithin(child: string, parent: string): boolean {
  if (parent === '/') return true;
  return child === parent || child.startsWith(parent.endsWith('/') ? parent : parent + '/');
}

/** All committed snapshots, oldest first. */
export async function listSnapshots(repo: Repository): Promise<Snapshot[]> {
  return (await repo.service.snapshots()).map((row) => new Snapshot(repo, row));
}

/** The one snapshot whose id starts with `prefix`. */
export async function snapshotRowByPrefix(service: CatalogService, prefix: string): Promise<SnapshotRow> {
  const rows = await service.snapshotsByPrefix(prefix);
  if (rows.length === 0) throw notFound(`no snapshot with id ${prefix}`);
  if (rows.length > 1) throw new StrataError('ambiguous', `snapshot id prefix ${prefix} is ambiguous (${rows.length} snapshots match; give more characters)`);
  return rows[0]!;
}

/**
 * The snapshot WHEN names. With a path, "latest" and dates pick the newest
 * snapshot (at or before the date) whose stored paths cover it.
 */
export async function findSnapshot(repo: Repository, when: When, absPath?: string | readonly string[], host?: string): Promise<Snapshot> {
  const paths = absPath === undefined ? [] : typeof absPath === 'string' ? [absPath] : absPath;
  if (when.kind === 'id') {
    // Eight digits are an id prefix, or else a compact date: say both when neither finds a snapshot.
    if (when.time === undefined || (await repo.service.snapshotsByPrefix(when.prefix)).length > 0) {
      return new Snapshot(repo, await snapshotRowByPrefix(repo.service, when.prefix));
    }
    try {
      return await findSnapshot(repo, { kind: 'time', time: when.time }, absPath, host);
    } catch (e) {
      if (e instanceof StrataError && e.code === 'not_found') throw notFound(`no snapshot with an id starting ${when.prefix}, and read as a date: ${e.message}`);
      throw e;
    }
  }
  const rows = await repo.service.snapshots();
  if (rows.length === 0) throw notFound('the repository has no snapshots yet');
  const until = when.kind === 'time' ? when.time : Number.POSITIVE_INFINITY;
  // Newest first, each snapshot's sealed metadata opened only when its time qualifies: "latest" opens one.
  for (let i = rows.length - 1; i >= 0; i--) {
    if (rows[i]!.time > until) continue;
    const s = new Snapshot(repo, rows[i]!);
    if (host && s.meta.host !== host) continue;
    if (!paths.every((p) => s.covers(p))) continue;
    return s;
  }
  const what = paths.length > 0 ? ` holding ${paths.join(', ')}` : '';
  if (when.kind === 'time') throw notFound(`no snapshot${what} at or before ${new Date(until).toISOString()}`);
  throw notFound(`no snapshot${what}${host ? ` from host ${host}` : ''}`);
}

/**
 * Decoded trees, shared by every Snapshot of a repository (snapshots share
 * most of their trees), least recently used dropped first past 100,000
 * entries in all: a restore checks each file against the snapshot that
 * stored its version, so the same trees are looked up again and again. The
 * bound is at least twice the largest tree kept so far, so that a directory
 * of that many entries and the directories above it fit together: otherwise
 * each lookup of a path in it would drop the one to make room for the other,
 * and decode the large tree again (ls -l of 100,000 files, one lookup each).
 */
export class TreeCache {
  private readonly trees = new Map<string, Tree>();
  private entries = 0;
  private largest = 0;

  constructor(private readonly maxEntries = 100_000) {}

  get(id: string): Tree | undefined {
    const t = this.trees.get(id);
    if (t) {
      this.trees.delete(id);
      this.trees.set(id, t);
    }
    return t;
  }

  add(id: string, tree: Tree): void {
    if (this.trees.has(id)) return;
    this.trees.set(id, tree);
    this.entries += tree.entries.length + 1;
    this.largest = Math.max(this.largest, tree.entries.length + 1);
    const limit = Math.max(this.maxEntries, 2 * this.largest);
    for (const [oldest, old] of this.trees) {
      if (this.entries <= limit || oldest === id) break;
      this.trees.delete(oldest);
      this.entries -= old.entries.length + 1;
    }
  }
}

const treeCaches = new WeakMap<Repository, TreeCache>();
