/**
 * Prune: reclaim the space of blocks that no version, tree or snapshot uses,
 * and repack packs that hold some of them.
 *
 * Deletion is in two phases so prune can run beside backups. First, unused
 * blocks are marked condemned (with the time). A condemned block is deleted
 * only if it is still unused and was condemned before the oldest running
 * backup began: a backup that began later and reuses the block clears the mark
 * first (Catalog.hasBlock), and one that began earlier holds prune back until
 * it ends. Pack files are removed only after the catalog stops naming them;
 * readers that raced a repack look the block up again.
 */
import { StrataError } from '../errors.js';
import { liveLeases } from '../repo/lease.js';
import { resealTocs } from './forget.js';
import { treeIds } from './tree.js';
import { BLOB_KINDS, type Catalog } from '../repo/catalog.js';
import type { PackEntry } from '../repo/pack.js';
import type { KeylessRepository, Repository } from '../repo/repository.js';
import type { Storage } from '../storage/storage.js';

export interface PruneOptions {
  dryRun?: boolean;
  waitMs?: number;
  onWait?: (message: string) => void;
  onProgress?: (message: string) => void;
  /** Already holding the maintenance lease (forget --prune). */
  leased?: boolean;
}

export interface PruneResult {
  /** Resealed TOCs that a forget without the key had left stale. */
  resealedTocs: number;
  abandonedSnapshots: number;
  unusedBlocks: number;
  /** Unused blocks kept for now because a running backup began before they were found unused. */
  deferredBlocks: number;
  deletedBlocks: number;
  deletedPacks: number;
  repackedPacks: number;
  /** Packs with unused blocks left as they are, because repacking them needs the key (a prune without it). */
  packsNeedingKey: number;
  orphanPacks: number;
  bytesFreed: number;
  dryRun: boolean;
}

/**
 * A block in use. Each list is read once per statement into a temporary
 * index (the subqueries do not depend on the row): TOC rows have no index by
 * block, and one pass over them costs less than keeping one. No list holds a
 * NULL, which would make NOT IN unknown rather than true.
 */
const LIVE = `(
  blocks.id IN (SELECT block FROM toc WHERE block IS NOT NULL)
  OR blocks.id IN (SELECT toc FROM versions WHERE toc IS NOT NULL)
  OR blocks.id IN (SELECT block FROM snapshot_blobs)
  OR blocks.id IN (SELECT record FROM snapshots WHERE record IS NOT NULL)
  OR blocks.id IN (SELECT root FROM snapshots WHERE root IS NOT NULL)
  OR blocks.id IN (SELECT block FROM retained)
)`;

/**
 * Snapshots made before the catalog recorded their trees (schema 1) get that
 * list now: otherwise their subtrees would look unused.
 */
async function listOldTrees(repo: Repository): Promise<void> {
  const db = repo.catalog.db;
  const old = db.prepare('SELECT seq, id, root, record FROM snapshots WHERE blobs_known = 0 AND committed = 1').all() as { seq: number; id: string; root: Buffer | null; record: Buffer | null }[];
  for (const s of old) {
    let ids: Buffer[] = [];
    try {
      if (s.root) ids = await treeIds(repo, s.root.toString('hex'), true);
    } catch (e) {
      throw new StrataError('integrity', `cannot list the directories of snapshot ${s.id.slice(0, 8)} (${(e as Error).message}); run "strata check" before pruning`);
    }
    if (s.record) ids.push(s.record);
    repo.catalog.transaction(() => {
      const insert = db.prepare('INSERT OR IGNORE INTO snapshot_blobs(snapshot, block) VALUES (?, ?)');
      for (const id of ids) insert.run(s.seq, id);
      db.prepare('UPDATE snapshots SET blobs_known = 1 WHERE seq = ?').run(s.seq);
    });
  }
}

/** What the catalog's half of a prune decided: counts, and the packs the client repacks or the keeper drops. */
export interface PrunePlan {
  started: number;
  abandonedSnapshots: number;
  unusedBlocks: number;
  deletedBlocks: number;
  /** With wholePacks: packs whose unused blocks stay until a prune with the key repacks them. */
  packsNeedingKey: number;
  /** Packs that lost blocks: the live blobs of each go into new packs, then the pack goes. */
  packs: { name: string; blobs: PackEntry[] }[];
}

/**
 * Prune with the key: reseals what a forget without it left stale, then
 * repacks partly used packs. Without the key (a server's admin): only packs
 * with nothing left in use go, and what a rebuild needs is kept.
 */
export async function prune(repo: Repository | KeylessRepository, opts: PruneOptions = {}): Promise<PruneResult> {
  const { service } = repo;
  const keyed = 'keyring' in repo;
  const lease = opts.leased ? undefined : await service.startMaintenance(opts.waitMs, opts.onWait);
  try {
    let resealed = 0;
    if (keyed && !opts.dryRun) {
      // Trees of snapshots made before the catalog listed them are read with the key, here.
      if (!service.remote) await listOldTrees(repo);
      const stale = await service.staleTocs();
      await resealTocs(repo, stale);
      resealed = stale.length;
    }
    const plan = await service.pruneMark(opts.dryRun ?? false, !keyed);
    const r: PruneResult = {
      resealedTocs: resealed,
      abandonedSnapshots: plan.abandonedSnapshots,
      unusedBlocks: plan.unusedBlocks,
      deferredBlocks: plan.unusedBlocks - plan.deletedBlocks,
      deletedBlocks: plan.deletedBlocks,
      deletedPacks: 0,
      repackedPacks: 0,
      packsNeedingKey: plan.packsNeedingKey,
      orphanPacks: 0,
      bytesFreed: 0,
      dryRun: opts.dryRun ?? false,
    };
    if (opts.dryRun) return r;
    opts.onProgress?.(`${r.deletedBlocks} unused blocks removed from the index, ${plan.packs.length} packs affected`);
    // Packs: the live blobs of partly used ones move to new packs (sealed as they are).
    let written = 0;
    if (keyed) {
      const packer = repo.newPacker(true);
      for (const pack of plan.packs) {
        if (pack.blobs.length === 0) continue;
        for (const b of pack.blobs) await packer.add(b.id, b.kind, await repo.storage.read({ kind: 'pack', name: pack.name }, b.offset, b.length), b.size);
        r.repackedPacks++;
      }
      await packer.flush();
      written = packer.bytesWritten;
    }
    const swept = await service.pruneSweep(
      plan.packs.map((p) => p.name),
      plan.started,
    );
    r.deletedPacks = swept.deletedPacks;
    r.orphanPacks = swept.orphanPacks;
    r.bytesFreed = swept.bytesFreed - written;
    return r;
  } finally {
    if (lease) await service.endLease(lease);
  }
}

/**
 * The catalog's half of a prune, phase one: drops snapshots whose backup
 * died, marks what is unused now (and unmarks what became used again), and
 * removes from the index what was condemned before every running backup began.
 * With `wholePacks` (no key to repack with), only blocks of packs that keep
 * nothing in use are removed; the others stay condemned for a later prune.
 */
export function pruneMark(catalog: Catalog, dryRun: boolean, wholePacks = false): PrunePlan {
  const db = catalog.db;
  const started = Date.now();
  // Snapshots whose backup died before committing: nothing reads them.
  const live = liveLeases(catalog);
  const liveIds = new Set(live.map((l) => l.id));
  const abandoned = catalog.pendingSnapshots().filter((p) => p.lease === null || !liveIds.has(p.lease));
  const plan: PrunePlan = { started, abandonedSnapshots: abandoned.length, unusedBlocks: 0, deletedBlocks: 0, packsNeedingKey: 0, packs: [] };
  if (dryRun) {
    plan.unusedBlocks = db.prepare(`SELECT COUNT(*) FROM blocks WHERE NOT ${LIVE}`).pluck().get() as number;
    return plan;
  }
  if (db.prepare('SELECT 1 FROM snapshots WHERE blobs_known = 0 AND committed = 1 LIMIT 1').get()) {
    throw new StrataError('local_only', 'snapshots made by an older strata need their trees listed with the key: run prune once on the repository directory');
  }
  catalog.transaction(() => abandoned.forEach((p) => catalog.deleteSnapshot(p.seq)));

  catalog.transaction(() => {
    // Stamped inside the transaction: it orders the mark against backups' lease starts.
    db.prepare(`UPDATE blocks SET condemned = ? WHERE condemned IS NULL AND NOT ${LIVE}`).run(Date.now());
    db.prepare(`UPDATE blocks SET condemned = NULL WHERE condemned IS NOT NULL AND ${LIVE}`).run();
  });
  plan.unusedBlocks = db.prepare('SELECT COUNT(*) FROM blocks WHERE condemned IS NOT NULL').pluck().get() as number;

  // Phase two: delete what was condemned before every running backup began.
  const touchedPacks = catalog.transaction(() => {
    const backups = liveLeases(catalog).filter((l) => l.kind === 'backup');
    const horizon = backups.length > 0 ? Math.min(...backups.map((l) => l.started)) : Number.MAX_SAFE_INTEGER;
    let doomed = db
      .prepare(`SELECT id, pack, length FROM blocks WHERE condemned IS NOT NULL AND condemned < ? AND NOT ${LIVE}`)
      .all(horizon) as { id: Buffer; pack: number; length: number }[];
    if (wholePacks) {
      const perPack = new Map<number, number>();
      for (const d of doomed) perPack.set(d.pack, (perPack.get(d.pack) ?? 0) + 1);
      const total = db.prepare('SELECT COUNT(*) FROM blocks WHERE pack = ?').pluck();
      const whole = new Set([...perPack].filter(([pack, n]) => total.get(pack) === n).map(([pack]) => pack));
      plan.packsNeedingKey = perPack.size - whole.size;
      doomed = doomed.filter((d) => whole.has(d.pack));
    }
    const del = db.prepare('DELETE FROM blocks WHERE id = ?');
    // A block's spare copies (schema 7) go with it, and their packs are looked at too.
    const spareOf = db.prepare('DELETE FROM spares WHERE id = ? RETURNING pack').pluck();
    const packs = new Set(doomed.map((d) => d.pack));
    for (const d of doomed) {
      del.run(d.id);
      for (const p of spareOf.all(d.id) as number[]) packs.add(p);
    }
    plan.deletedBlocks = doomed.length;
    return packs;
  });
  for (const packId of touchedPacks) {
    const pack = db.prepare('SELECT name FROM packs WHERE id = ?').pluck().get(packId) as string | undefined;
    if (!pack) continue;
    const blobs = db.prepare('SELECT id, kind, offset, length, size FROM blocks WHERE pack = ? ORDER BY offset').all(packId) as {
      id: Buffer;
      kind: number;
      offset: number;
      length: number;
      size: number;
    }[];
    plan.packs.push({ name: pack, blobs: blobs.map((b) => ({ ...b, kind: BLOB_KINDS[b.kind]! })) });
  }
  return plan;
}

/**
 * Phase two, after the live blobs moved: drops the packs the catalog no
 * longer names, and packs no row names at all (left by an interrupted
 * backup or prune) once they are old and no backup runs.
 */
export async function pruneSweep(catalog: Catalog, storage: Storage, emptied: readonly string[], started: number): Promise<{ deletedPacks: number; orphanPacks: number; bytesFreed: number }> {
  const db = catalog.db;
  const out = { deletedPacks: 0, orphanPacks: 0, bytesFreed: 0 };
  for (const name of emptied) {
    const size = catalog.transaction(() => {
      const pack = db.prepare('SELECT id, size FROM packs WHERE name = ?').get(name) as { id: number; size: number } | undefined;
      if (!pack || db.prepare('SELECT 1 FROM blocks WHERE pack = ? LIMIT 1').get(pack.id) || db.prepare('SELECT 1 FROM spares WHERE pack = ? LIMIT 1').get(pack.id)) return undefined;
      db.prepare('DELETE FROM packs WHERE id = ?').run(pack.id);
      return pack.size;
    });
    if (size === undefined) continue;
    await storage.delete({ kind: 'pack', name });
    out.deletedPacks++;
    out.bytesFreed += size;
  }
  // Only old ones go, and only when no backup runs (a running one may index its newest pack any moment).
  const quiet = liveLeases(catalog).every((l) => l.kind !== 'backup');
  // Partial pack files of killed writers: an hour old, or a minute when no backup runs.
  out.bytesFreed += await storage.sweepTemporary(quiet ? 60_000 : 3_600_000);
  if (quiet) {
    const known = new Set(db.prepare('SELECT name FROM packs').pluck().all() as string[]);
    for await (const name of storage.list('pack')) {
      if (known.has(name)) continue;
      const st = await storage.stat({ kind: 'pack', name });
      if (st.mtimeMs >= started - 1000) continue;
      await storage.delete({ kind: 'pack', name });
      out.orphanPacks++;
      out.bytesFreed += st.size;
    }
  }
  return out;
}
