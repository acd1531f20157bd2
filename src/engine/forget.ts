/**
 * Forget: remove snapshots from the repository's history, by id or by a
 * retention policy, without breaking any later incremental.
 *
 * A surviving version's ref may point into a version being forgotten (the
 * seed's chains). Before that version goes, each such ref is rewritten to
 * point where the forgotten version's own entries pointed: its data blocks
 * (the survivor now names them directly) or the older versions its refs
 * reached. Versions are processed newest first, so a ref that lands on another
 * forgotten version is rewritten again when that one's turn comes. The blocks
 * themselves are reclaimed later by prune.
 */
import { integrity, usageError } from '../errors.js';
import type { Catalog, TocRow } from '../repo/catalog.js';
import { liveLeases } from '../repo/lease.js';
import type { Repository } from '../repo/repository.js';
import { applyPolicy, isEmpty, type Policy } from './policy.js';
import { findSnapshot, listSnapshots, type Snapshot } from './snapshot.js';
import { sealToc, shortcut, type SealedEntry, type SealedToc, type SealedTocIds } from './versions.js';

export interface ForgetOptions {
  ids?: string[];
  policy?: Policy;
  dryRun?: boolean;
  waitMs?: number;
  onWait?: (message: string) => void;
}

export interface ForgetGroup {
  host: string;
  paths: string[];
  keep: { id: string; time: string; reasons: string[] }[];
  remove: { id: string; time: string }[];
}

export interface ForgetResult {
  groups: ForgetGroup[];
  removed: string[];
  rewrittenVersions: number;
  dryRun: boolean;
}

export async function forget(repo: Repository, opts: ForgetOptions): Promise<ForgetResult> {
  const ids = opts.ids ?? [];
  const policy = opts.policy ?? {};
  if (ids.length === 0 && isEmpty(policy)) throw usageError('forget needs snapshot ids or a policy (--keep-last, --keep-daily, ...); nothing to do');
  const all = await listSnapshots(repo);
  const chosen = new Set<string>();
  for (const i of ids) chosen.add((await findSnapshot(repo, { kind: 'id', prefix: i.toLowerCase() })).id);
  const groups = groupSnapshots(all).map(({ host, paths, snaps }) => {
    const keep = isEmpty(policy) ? new Map(snaps.filter((s) => !chosen.has(s.id)).map((s) => [s.id, ['not named']])) : applyPolicy(snaps.map((s) => ({ id: s.id, time: s.time, tags: s.meta.tags })), policy);
    for (const s of snaps) if (chosen.has(s.id)) keep.delete(s.id);
    return {
      host,
      paths,
      keep: snaps.filter((s) => keep.has(s.id)).map((s) => ({ id: s.id, time: iso(s), reasons: keep.get(s.id)! })),
      remove: snaps.filter((s) => !keep.has(s.id)).map((s) => ({ id: s.id, time: iso(s) })),
      snaps,
    };
  });
  const result: ForgetResult = { groups: groups.map(({ snaps: _s, ...g }) => g), removed: [], rewrittenVersions: 0, dryRun: opts.dryRun ?? false };
  if (opts.dryRun) {
    result.removed = groups.flatMap((g) => g.remove.map((r) => r.id));
    return result;
  }

  const lease = await repo.service.startMaintenance(opts.waitMs, opts.onWait);
  try {
    const bySeq = new Map(all.map((s) => [s.row.seq, s]));
    const seqOf = new Map(all.map((s) => [s.id, s.row.seq]));
    const { removed, inUse, touched } = await repo.service.forgetSnapshots(result.groups.flatMap((g) => g.remove.map((r) => seqOf.get(r.id)!)));
    const kept = new Set(inUse);
    for (const g of result.groups) {
      g.remove = g.remove.filter((r) => {
        if (!kept.has(seqOf.get(r.id)!)) return true;
        g.keep.push({ id: r.id, time: r.time, reasons: ['parent of a running backup'] });
        return false;
      });
    }
    result.removed = removed.map((seq) => bySeq.get(seq)!.id);
    result.rewrittenVersions = touched.length;
    await resealTocs(repo, touched);
  } finally {
    await repo.service.endLease(lease);
  }
  return result;
}

/**
 * The catalog's half of a forget: removes the snapshots (but those a running
 * backup compares against), rewriting every ref into them first. Returns the
 * surviving versions whose rows changed: their sealed TOCs need resealing.
 */
export function forgetInCatalog(catalog: Catalog, candidates: readonly number[]): { removed: number[]; inUse: number[]; touched: number[] } {
  return catalog.transaction(() => {
    // A snapshot a running backup compares against stays until that backup ends.
    const busy = new Set(liveLeases(catalog).map((l) => l.parent).filter((p): p is number => p !== null));
    const known = candidates.filter((seq) => catalog.snapshotBySeq(seq) !== undefined);
    const inUse = known.filter((seq) => busy.has(seq));
    const removed = known.filter((seq) => !busy.has(seq));
    const touched = removeVersions(catalog, removed);
    for (const seq of removed) catalog.deleteSnapshot(seq);
    return { removed, inUse, touched: [...touched] };
  });
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

/** Seals the rewritten TOCs into packs too, so a rebuilt catalog has them (the key is only here). */
async function resealTocs(repo: Repository, versions: readonly number[]): Promise<void> {
  if (versions.length === 0) return;
  const { service } = repo;
  const packer = repo.newPacker();
  const snapshotIds = new Map<number, string>();
  const versionSnapshot = new Map<number, number>();
  const snapshotOf = async (versionId: number): Promise<string> => {
    let seq = versionSnapshot.get(versionId);
    if (seq === undefined) {
      const v = await service.versionById(versionId);
      if (!v) throw integrity(`version ${versionId} is gone`);
      versionSnapshot.set(versionId, (seq = v.snapshot));
    }
    if (!snapshotIds.has(seq)) snapshotIds.set(seq, (await service.snapshotBySeq(seq))?.id ?? '?');
    return snapshotIds.get(seq)!;
  };
  const generation = Date.now();
  const resealed: { version: number; toc: Buffer; segments: Buffer[]; old: Buffer[] }[] = [];
  for (const v of versions) {
    const row = await service.versionRecord(v);
    if (!row) continue;
    const entries: SealedEntry[] = [];
    for (const e of await service.toc(v)) entries.push(e.block ? [e.start, e.end, e.block.toString('hex')] : [e.start, e.end, await snapshotOf(e.target!), e.target_start!]);
    const head = { snapshot: await snapshotOf(v), path: row.path.toString('hex'), size: row.size, generation };
    const toc: SealedTocIds = await sealToc(repo.keyring, packer, repo.compressionLevel, head, entries, entries.length);
    resealed.push({ version: v, toc: toc.id, segments: toc.segments, old: row.toc ? await segmentsOf(repo, row.toc) : [] });
  }
  await packer.flush();
  await service.setVersionTocs(resealed);
}

/** The segments a sealed TOC lists (none for a short one, or if it cannot be read: prune then keeps them until the snapshot goes). */
async function segmentsOf(repo: Repository, toc: Buffer): Promise<Buffer[]> {
  try {
    const t = JSON.parse((await repo.readBlob(toc, 'toc')).toString('utf8')) as SealedToc;
    return (t.segments ?? []).map((hex) => Buffer.from(hex, 'hex'));
  } catch {
    return [];
  }
}

function groupSnapshots(all: readonly Snapshot[]): { host: string; paths: string[]; snaps: Snapshot[] }[] {
  const groups = new Map<string, { host: string; paths: string[]; snaps: Snapshot[] }>();
  for (const s of all) {
    const paths = [...s.meta.paths].sort();
    const key = JSON.stringify([s.meta.host, paths]);
    if (!groups.has(key)) groups.set(key, { host: s.meta.host, paths, snaps: [] });
    groups.get(key)!.snaps.push(s);
  }
  return [...groups.values()];
}

const iso = (s: Snapshot) => new Date(s.time).toISOString();
