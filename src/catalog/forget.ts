/**
 * The catalog's half of forget: snapshots removed, the rows that pointed into
 * them rewritten (spliced through, shortcuts made again), inherited rows
 * handed to the children, and the versions whose sealed TOCs are now stale
 * listed for a client with the key to reseal. Keyless: a server runs it.
 */
import { integrity } from '../errors.js';
import { GONE, type Catalog, type TocRow } from './catalog.js';
import { HOST_ID, liveLeases } from './lease.js';
import { shortcut, tocRows } from './toc-rows.js';

/** A snapshot kept by forget because a writable mount is based on it (its lease). */
export interface MountPin {
  snapshot: number;
  pid: number;
  /** Whether the mount runs on the host that answers. */
  thisHost: boolean;
  /** When the mount's lease was taken, ms since the epoch. */
  since: number;
}

export interface Forgotten {
  removed: number[];
  /** Kept: a running backup compares against it, or a writable mount is based on it. */
  inUse: number[];
  /** Of `inUse`, those a writable mount is based on (absent: none). */
  mounted?: MountPin[];
  touched: number[];
}

/**
 * The catalog's half of a forget: removes the snapshots (but those a running
 * backup compares against), rewriting every ref into them first. Returns, as
 * `touched`, every version whose sealed TOC is stale: those this forget
 * rewrote, and those earlier forgets left for a client with the key.
 */
export function forgetInCatalog(catalog: Catalog, candidates: readonly number[], opts: { evenInUse?: boolean } = {}): Forgotten {
  return catalog.transaction(() => {
    const known = candidates.filter((seq) => catalog.snapshotBySeq(seq) !== undefined);
    const removed = opts.evenInUse ? known : forgettable(catalog, candidates);
    const inUse = known.filter((seq) => !removed.includes(seq));
    const mounted: MountPin[] = liveLeases(catalog)
      .filter((l) => l.kind === 'mount' && l.parent !== null && inUse.includes(l.parent))
      .map((l) => ({ snapshot: l.parent!, pid: l.pid, thisHost: l.host === HOST_ID, since: l.started }));
    const sealed = catalog.sealedBlobsOf(removed);
    const handed = new Set<number>();
    for (const seq of [...removed].sort((a, b) => a - b)) passOn(catalog, seq, handed);
    const touched = removeVersions(catalog, removed);
    for (const v of handed) if (catalog.versionById(v)) touched.add(v);
    catalog.markStale(touched, sealed);
    for (const seq of removed) catalog.deleteSnapshot(seq);
    return { removed, inUse, ...(mounted.length > 0 ? { mounted } : {}), touched: catalog.staleTocs() };
  });
}

/**
 * Of `candidates`, the snapshots a forget removes now: those in the catalog
 * but the ones a running backup compares against, which stay until it ends.
 * (`evenInUse`: a follower of a bucket's journal, removing what the writer's
 * forget removed.)
 */
export function forgettable(catalog: Catalog, candidates: readonly number[]): number[] {
  const busy = new Set(liveLeases(catalog).map((l) => l.parent).filter((p): p is number => p !== null));
  return candidates.filter((seq) => catalog.snapshotBySeq(seq) !== undefined && !busy.has(seq));
}

/**
 * Before a snapshot goes, the children that inherit from it (see catalog.ts,
 * SCHEMA_5) take over its rows they would have looked up in it: each such
 * version moves to the first child lacking that path (keeping its id, so every
 * ref to it holds) and any other such child gets a one-ref copy. The children
 * then descend from its parent. Adds to `touched` the versions whose sealed
 * TOCs may name the snapshot (moved ones, those with refs in its children,
 * those whose refs reach a moved one): they must be resealed.
 */
function passOn(catalog: Catalog, seq: number, touched: Set<number>): void {
  const heirs = catalog.children(seq).filter((c) => c.inherits);
  for (const c of heirs) for (const v of catalog.versionsWithRefs(c.seq)) touched.add(v);
  if (heirs.length > 0) {
    for (const r of catalog.ownRows(seq)) {
      const lacking = heirs.filter((c) => !catalog.ownVersion(c.seq, r.path));
      if (lacking.length === 0) continue;
      catalog.moveVersion(r.id, lacking[0]!.seq);
      if (r.size === GONE) {
        catalog.insertTombstones(lacking.slice(1).map((c) => c.seq), r.path);
        continue;
      }
      touched.add(r.id);
      for (const p of catalog.rowsPointingAt(r.id)) touched.add(p.version);
      for (const c of lacking.slice(1)) {
        const ref = r.size > 0 ? [{ kind: 'ref' as const, start: 0, end: r.size - 1, targetStart: 0, targetEnd: r.size - 1 }] : [];
        touched.add(catalog.insertVersion(c.seq, r.path, r.size, null, tocRows(catalog, ref, { id: r.id, snapshotId: '', depth: r.depth })));
      }
    }
  }
  catalog.relink(seq);
}

/**
 * Deletes the versions of `snapshots`, first rewriting every row elsewhere
 * that points into them. Returns the surviving versions whose rows changed.
 */
export function removeVersions(catalog: Catalog, snapshots: readonly number[]): Set<number> {
  const doomed = catalog.versionsOf(snapshots);
  const doomedIds = new Set(doomed.map((v) => v.id));
  const touched = new Set<number>();
  for (const t of doomed) {
    const tRows = catalog.toc(t.id);
    const byVersion = new Map<number, (TocRow & { version: number })[]>();
    for (const r of catalog.rowsPointingAt(t.id)) {
      if (doomedIds.has(r.version) && r.version > t.id) continue; // already removed
      byVersion.set(r.version, [...(byVersion.get(r.version) ?? []), r]);
    }
    for (const [version, rows] of byVersion) {
      const add: TocRow[] = [];
      for (const r of rows) add.push(...(r.target === t.id ? splice(r, tRows, t.id) : [unshortcut(catalog, r)]));
      catalog.replaceRows(version, rows.map((r) => r.start), add);
      catalog.updateVersionDepth(version);
      if (!doomedIds.has(version)) touched.add(version);
    }
    catalog.deleteVersion(t.id);
  }
  for (const v of touched) if (doomedIds.has(v)) touched.delete(v);
  reshortcut(catalog, touched);
  return touched;
}

/**
 * Rewritten rows lost their shortcuts; without new ones a read of the newest
 * version would walk the whole remaining history. Oldest first, so each
 * target already has its own.
 */
function reshortcut(catalog: Catalog, versions: ReadonlySet<number>): void {
  const update = catalog.db.prepare('UPDATE toc SET root = ?, root_start = ?, depth = ? WHERE version = ? AND start = ?');
  for (const v of [...versions].sort((a, b) => a - b)) {
    for (const r of catalog.toc(v)) {
      if (r.block || r.target === null || r.target_start === null) continue;
      const target = { id: r.target, depth: catalog.versionById(r.target)?.depth ?? 0 };
      const s = shortcut(target, r.target_start, r.target_start + (r.end - r.start), catalog.tocAt(r.target, r.target_start));
      update.run(s.root, s.root_start, s.depth, v, r.start);
    }
    catalog.updateVersionDepth(v);
  }
}

/** `r`'s range, expressed through the rows of its target (which is going away). */
function splice(r: TocRow, targetRows: readonly TocRow[], targetId: number): TocRow[] {
  const ts = r.target_start!;
  const te = ts + (r.end - r.start);
  const out: TocRow[] = [];
  let covered = ts;
  for (const u of targetRows) {
    if (u.end < ts || u.start > te) continue;
    const x0 = Math.max(u.start, ts);
    const x1 = Math.min(u.end, te);
    if (x0 !== covered) break;
    const start = r.start + (x0 - ts);
    const end = r.start + (x1 - ts);
    if (u.block) {
      if (x0 !== u.start || x1 !== u.end) throw integrity(`cannot forget version ${targetId}: a ref covers part of block ${u.block.toString('hex').slice(0, 16)}`);
      out.push({ start, end, block: u.block, target: null, target_start: null, root: null, root_start: null, depth: 0 });
    } else {
      const shift = x0 - u.start;
      out.push({
        start,
        end,
        block: null,
        target: u.target,
        target_start: u.target_start! + shift,
        root: u.root ?? u.target,
        root_start: (u.root_start ?? u.target_start!) + shift,
        depth: u.depth,
      });
    }
    covered = x1 + 1;
  }
  if (covered !== te + 1) throw integrity(`cannot forget version ${targetId}: its TOC does not cover ${ts}-${te}`);
  return out;
}

/** A row whose shortcut lands in a version going away reads through its target instead. */
function unshortcut(catalog: Catalog, r: TocRow): TocRow {
  const depth = (catalog.versionById(r.target!)?.depth ?? 0) + 1;
  return { ...r, root: r.target, root_start: r.target_start, depth };
}
