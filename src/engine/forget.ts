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
import { ExitCode, integrity, StrataError, usageError } from '../errors.js';
import { GONE, type Catalog, type TocRow } from '../repo/catalog.js';
import { liveLeases } from '../repo/lease.js';
import type { Repository } from '../repo/repository.js';
import { isFilterEmpty, matchesFilter, type SnapshotFilter } from './filter.js';
import { applyPolicy, isEmpty, type Candidate, type Policy } from './policy.js';
import type { CatalogService } from '../repo/service.js';
import { listSnapshots, snapshotRowByPrefix, type Snapshot } from './snapshot.js';
import { checkTocRows, verifier } from './verify.js';
import { sealToc, shortcut, tocRows, type SealedEntry, type SealedToc, type SealedTocIds } from './versions.js';

export interface ForgetOptions {
  ids?: string[];
  policy?: Policy;
  /** Only these snapshots are considered (named ones always are). */
  filter?: SnapshotFilter;
  dryRun?: boolean;
  waitMs?: number;
  onWait?: (message: string) => void;
}

export interface ForgetGroup {
  host: string;
  paths: string[];
  /** Without the key: the group's keyed lineage id (host and paths are sealed). */
  lineage?: string;
  keep: { id: string; time: string; reasons: string[] }[];
  remove: { id: string; time: string }[];
}

export interface ForgetResult {
  groups: ForgetGroup[];
  removed: string[];
  rewrittenVersions: number;
  /** Rewritten versions whose sealed TOCs wait for a forget or prune with the key (0 when run with it). */
  staleTocs: number;
  dryRun: boolean;
}

/** Snapshots a policy chooses among: one group per host and paths (lineage). */
interface CandidateGroup {
  host: string;
  paths: string[];
  lineage?: string;
  /** `excluded`: left out by the filter, unless named. */
  snaps: (Candidate & { seq: number; excluded?: boolean })[];
}

export async function forget(repo: Repository, opts: ForgetOptions): Promise<ForgetResult> {
  const all = await listSnapshots(repo);
  const groups = new Map<string, CandidateGroup>();
  for (const s of all) {
    const paths = [...s.meta.paths].sort();
    const key = JSON.stringify([s.meta.host, paths]);
    if (!groups.has(key)) groups.set(key, { host: s.meta.host, paths, snaps: [] });
    const excluded = opts.filter ? !matchesFilter(s.meta, opts.filter) : false;
    groups.get(key)!.snaps.push({ id: s.id, seq: s.row.seq, time: s.time, tags: s.meta.tags, ...(excluded ? { excluded } : {}) });
  }
  return forgetGroups(repo.service, [...groups.values()], opts, (touched) => resealTocs(repo, touched));
}

/**
 * Forget run by a server's admin without the key: snapshots by id, or by a
 * policy of counts and times, grouped by their keyed lineage (the same groups
 * as host and paths). The rewritten TOCs are resealed by the next forget or
 * prune with the key; until then prune keeps what a rebuild needs of the
 * forgotten snapshots.
 */
export async function forgetWithoutKey(service: CatalogService, opts: ForgetOptions): Promise<ForgetResult> {
  if (opts.policy?.tags?.length) throw usageError('--keep-tag needs the key: tags are sealed');
  if (opts.filter && !isFilterEmpty(opts.filter)) throw usageError('--tag, --host and --path need the key: tags, hosts and paths are sealed');
  const groups = new Map<string, CandidateGroup>();
  for (const row of await service.snapshots()) {
    const lineage = row.lineage.toString('hex');
    if (!groups.has(lineage)) groups.set(lineage, { host: '', paths: [], lineage, snaps: [] });
    groups.get(lineage)!.snaps.push({ id: row.id, seq: row.seq, time: row.time, tags: [] });
  }
  return forgetGroups(service, [...groups.values()], opts);
}

async function forgetGroups(service: CatalogService, all: readonly CandidateGroup[], opts: ForgetOptions, reseal?: (touched: number[]) => Promise<void>): Promise<ForgetResult> {
  const ids = opts.ids ?? [];
  const policy = opts.policy ?? {};
  if (ids.length === 0 && isEmpty(policy)) throw usageError('forget needs snapshot ids or a policy (--keep-last, --keep-daily, ...); nothing to do');
  const chosen = new Set<string>();
  for (const i of ids) chosen.add((await snapshotRowByPrefix(service, i.toLowerCase())).id);
  const considered = all
    .map((g) => ({ ...g, snaps: g.snaps.filter((s) => !s.excluded || chosen.has(s.id)) }))
    .filter((g) => g.snaps.length > 0);
  const groups = considered.map(({ snaps, ...group }) => {
    const keep = isEmpty(policy) ? new Map(snaps.filter((s) => !chosen.has(s.id)).map((s) => [s.id, ['not named']])) : applyPolicy(snaps, policy);
    for (const s of snaps) if (chosen.has(s.id)) keep.delete(s.id);
    return {
      ...group,
      keep: snaps.filter((s) => keep.has(s.id)).map((s) => ({ id: s.id, time: iso(s), reasons: keep.get(s.id)! })),
      remove: snaps.filter((s) => !keep.has(s.id)).map((s) => ({ id: s.id, time: iso(s) })),
    };
  });
  const result: ForgetResult = { groups, removed: [], rewrittenVersions: 0, staleTocs: 0, dryRun: opts.dryRun ?? false };
  if (opts.dryRun) {
    result.removed = groups.flatMap((g) => g.remove.map((r) => r.id));
    return result;
  }

  const lease = await service.startMaintenance(opts.waitMs, opts.onWait);
  try {
    const seqOf = new Map(all.flatMap((g) => g.snaps.map((s) => [s.id, s.seq] as const)));
    const idOf = new Map([...seqOf].map(([id, seq]) => [seq, id]));
    const { removed, inUse, touched } = await service.forgetSnapshots(groups.flatMap((g) => g.remove.map((r) => seqOf.get(r.id)!)));
    const kept = new Set(inUse);
    for (const g of groups) {
      g.remove = g.remove.filter((r) => {
        if (!kept.has(seqOf.get(r.id)!)) return true;
        g.keep.push({ id: r.id, time: r.time, reasons: ['parent of a running backup'] });
        return false;
      });
    }
    result.removed = removed.map((seq) => idOf.get(seq)!);
    result.rewrittenVersions = touched.length;
    if (!reseal) result.staleTocs = touched.length;
    else {
      try {
        await reseal(touched);
      } catch (e) {
        // The snapshots are gone from the catalog already: say so, and what is left to do.
        if (!isNoSpace(e)) throw e;
        const n = removed.length;
        throw new StrataError(
          'no_space',
          `no space left on device: removed ${n} ${n === 1 ? 'snapshot' : 'snapshots'} (${result.removed.map((id) => id.slice(0, 8)).join(', ')}) and rewrote the refs of ${touched.length} later file ${touched.length === 1 ? 'version' : 'versions'} in the catalog, ` +
            `but could not write their new sealed tables of contents; the remaining snapshots read as before. Free some space and run "strata prune" (or forget again) to write them`,
          ExitCode.error,
          { removed: result.removed, rewrittenVersions: touched.length, staleTocs: touched.length },
        );
      }
    }
  } finally {
    await service.endLease(lease);
  }
  return result;
}

function isNoSpace(e: unknown): boolean {
  const code = (e as NodeJS.ErrnoException | undefined)?.code;
  return code === 'ENOSPC' || code === 'SQLITE_FULL' || code === 'EDQUOT';
}

/**
 * The catalog's half of a forget: removes the snapshots (but those a running
 * backup compares against), rewriting every ref into them first. Returns, as
 * `touched`, every version whose sealed TOC is stale: those this forget
 * rewrote, and those earlier forgets left for a client with the key.
 */
export function forgetInCatalog(catalog: Catalog, candidates: readonly number[]): { removed: number[]; inUse: number[]; touched: number[] } {
  return catalog.transaction(() => {
    // A snapshot a running backup compares against stays until that backup ends.
    const busy = new Set(liveLeases(catalog).map((l) => l.parent).filter((p): p is number => p !== null));
    const known = candidates.filter((seq) => catalog.snapshotBySeq(seq) !== undefined);
    const inUse = known.filter((seq) => busy.has(seq));
    const removed = known.filter((seq) => !busy.has(seq));
    const sealed = catalog.sealedBlobsOf(removed);
    const handed = new Set<number>();
    for (const seq of [...removed].sort((a, b) => a - b)) passOn(catalog, seq, handed);
    const touched = removeVersions(catalog, removed);
    for (const v of handed) if (catalog.versionById(v)) touched.add(v);
    catalog.markStale(touched, sealed);
    for (const seq of removed) catalog.deleteSnapshot(seq);
    return { removed, inUse, touched: catalog.staleTocs() };
  });
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

/**
 * Seals the rewritten TOCs into packs too, so a rebuilt catalog has them (the
 * key is only here). The catalog's rows become the sealed truth, so each
 * version's rows are first checked against its sealed TOC as it stands
 * (still pointing into the removed snapshots, which are kept until then):
 * a tampered row is an integrity error naming the file, and nothing is
 * resealed.
 */
export async function resealTocs(repo: Repository, versions: readonly number[]): Promise<void> {
  if (versions.length === 0) return;
  const { service } = repo;
  const check = rowChecker(repo);
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
    const rows = await service.toc(v);
    await check(v, row.snapshot, row.path, rows);
    for (const e of rows) entries.push(e.block ? [e.start, e.end, e.block.toString('hex')] : [e.start, e.end, await snapshotOf(e.target!), e.target_start!]);
    const head = { snapshot: await snapshotOf(v), path: row.path.toString('hex'), size: row.size, generation };
    const toc: SealedTocIds = await sealToc(repo.keyring, packer, repo.compressionLevel, head, entries, entries.length);
    resealed.push({ version: v, toc: toc.id, segments: toc.segments, old: row.toc ? await segmentsOf(repo, row.toc) : [] });
  }
  await packer.flush();
  await service.setVersionTocs(resealed);
}

/**
 * Checks a version's catalog rows against its sealed TOC (see checkTocRows).
 * Only path ids are in the catalog: each snapshot's tree is walked once for
 * the names, which the checks of inherited versions look up.
 */
function rowChecker(repo: Repository): (version: number, seq: number, pathId: Buffer, rows: readonly TocRow[]) => Promise<void> {
  const names = new Map<string, Promise<Map<string, string>>>();
  const namesIn = (snap: Snapshot) => {
    let m = names.get(snap.id);
    if (!m) {
      m = (async () => {
        const out = new Map<string, string>();
        for await (const { path, entry } of snap.walk('/', snap.root)) if (entry.type === 'file') out.set(repo.keyring.pathId(path).toString('hex'), path);
        return out;
      })();
      names.set(snap.id, m);
    }
    return m;
  };
  return async (version, seq, pathId, rows) => {
    const v = await repo.service.versionById(version);
    const id = (await repo.service.snapshotBySeq(seq))?.id;
    const snap = id === undefined ? undefined : await verifier(repo).snapshot(id);
    const absPath = snap && (await namesIn(snap)).get(pathId.toString('hex'));
    if (!v || !snap || !absPath) throw integrity(`version ${version}: its snapshot has no file of its path; not resealed (run "strata check")`, { version });
    const bound = await verifier(repo).bind(snap, absPath, pathId, v);
    await checkTocRows(repo, { ...v, bound }, rows);
  };
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

const iso = (s: { time: number }) => new Date(s.time).toISOString();
