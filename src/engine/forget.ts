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
import { integrity, locked, StrataError, usageError } from '../errors.js';
import { type TocRow } from '../catalog/catalog.js';
import type { Repository } from '../repo/repository.js';
import { isFilterEmpty, matchesFilter, type SnapshotFilter } from './filter.js';
import { applyPolicy, isEmpty, type Candidate, type Policy } from './policy.js';
import type { CatalogService } from '../catalog/service.js';
import { listSnapshots, snapshotRowByPrefix, type Snapshot } from './snapshot.js';
import { checkTocRows, verifier } from './verify.js';
import { sealToc, type SealedEntry, type SealedToc, type SealedTocIds } from './versions.js';

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

  /** Named snapshots kept because a writable mount is based on them or a copy reads them: the forget then fails, saying so. */
  const refused: { id: string; pid: number; thisHost: boolean }[] = [];
  const lease = await service.startMaintenance(opts.waitMs, opts.onWait);
  try {
    const seqOf = new Map(all.flatMap((g) => g.snaps.map((s) => [s.id, s.seq] as const)));
    const idOf = new Map([...seqOf].map(([id, seq]) => [seq, id]));
    const { removed, inUse, mounted, touched } = await service.forgetSnapshots(groups.flatMap((g) => g.remove.map((r) => seqOf.get(r.id)!)));
    const kept = new Set(inUse);
    const mounts = new Map((mounted ?? []).map((m) => [m.snapshot, m]));
    for (const g of groups) {
      g.remove = g.remove.filter((r) => {
        if (!kept.has(seqOf.get(r.id)!)) return true;
        const mount = mounts.get(seqOf.get(r.id)!);
        g.keep.push({ id: r.id, time: r.time, reasons: [mount ? `held by a writable mount or a copy (leased by process ${mount.pid}${mount.thisHost ? ' on this host' : ''})` : 'parent of a running backup'] });
        if (mount && chosen.has(r.id)) refused.push({ id: r.id, pid: mount.pid, thisHost: mount.thisHost });
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
          { removed: result.removed, rewrittenVersions: touched.length, staleTocs: touched.length },
        );
      }
    }
  } finally {
    await service.endLease(lease);
  }
  if (refused.length > 0) {
    // The lease's holder: the mount's process, or the server a mount through `strata serve` holds it through.
    const which = refused.map((r) => `${r.id.slice(0, 8)} (leased by process ${r.pid}${r.thisHost ? ' on this host' : ''})`).join(', ');
    const done = result.removed.length > 0 ? `; the other snapshots named were removed (${result.removed.map((id) => id.slice(0, 8)).join(', ')})` : '; nothing was removed';
    throw locked(
      `not forgetting ${refused.length === 1 ? 'snapshot' : 'snapshots'} ${which}: a writable mount (strata mount --writable) is based on ${refused.length === 1 ? 'it' : 'them'}, or a copy (strata copy) is reading ${refused.length === 1 ? 'it' : 'them'}${done}. ` +
        "Commit the mount's changes (strata commit MOUNTPOINT: the mount then stands on the new snapshot) or unmount it, or let the copy end, then forget again",
    );
  }
  return result;
}

function isNoSpace(e: unknown): boolean {
  const code = (e as NodeJS.ErrnoException | undefined)?.code;
  return code === 'ENOSPC' || code === 'SQLITE_FULL' || code === 'EDQUOT';
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
