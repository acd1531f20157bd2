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
import { resealTocs } from './forget.js';
import { treeIds } from './tree.js';
import type { KeylessRepository, Repository } from '../repo/repository.js';

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
 * Snapshots made before the catalog recorded their trees (schema 1) get that
 * list now: otherwise their subtrees would look unused.
 */
async function listOldTrees(repo: Repository): Promise<void> {
  for (const s of repo.catalog.snapshotsWithoutBlobList()) {
    let ids: Buffer[] = [];
    try {
      if (s.root) ids = await treeIds(repo, s.root.toString('hex'), true);
    } catch (e) {
      throw new StrataError('integrity', `cannot list the directories of snapshot ${s.id.slice(0, 8)} (${(e as Error).message}); run "strata check" before pruning`);
    }
    if (s.record) ids.push(s.record);
    repo.catalog.setBlobList(s.seq, ids);
  }
}
