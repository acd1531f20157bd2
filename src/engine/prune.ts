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
import { Lease, liveLeases } from '../repo/lease.js';
import { treeIds } from './tree.js';
import { BLOB_KINDS } from '../repo/catalog.js';
import type { Repository } from '../repo/repository.js';

export interface PruneOptions {
  dryRun?: boolean;
  waitMs?: number;
  onWait?: (message: string) => void;
  onProgress?: (message: string) => void;
  /** Already holding the maintenance lease (forget --prune). */
  leased?: boolean;
}

export interface PruneResult {
  abandonedSnapshots: number;
  unusedBlocks: number;
  /** Unused blocks kept for now because a running backup began before they were found unused. */
  deferredBlocks: number;
  deletedBlocks: number;
  deletedPacks: number;
  repackedPacks: number;
  orphanPacks: number;
  bytesFreed: number;
  dryRun: boolean;
}

const LIVE = `(
  EXISTS (SELECT 1 FROM toc t WHERE t.block = blocks.id)
  OR EXISTS (SELECT 1 FROM versions v WHERE v.toc = blocks.id)
  OR EXISTS (SELECT 1 FROM snapshot_blobs sb WHERE sb.block = blocks.id)
  OR EXISTS (SELECT 1 FROM snapshots s WHERE s.record = blocks.id OR s.root = blocks.id)
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

export async function prune(repo: Repository, opts: PruneOptions = {}): Promise<PruneResult> {
  const lease = opts.leased ? undefined : (await Lease.acquire(repo.catalog, 'maintenance', { waitMs: opts.waitMs, onWait: opts.onWait })).lease;
  try {
    return await pruneLeased(repo, opts);
  } finally {
    lease?.release();
  }
}

async function pruneLeased(repo: Repository, opts: PruneOptions): Promise<PruneResult> {
  const { catalog } = repo;
  const db = catalog.db;
  const started = Date.now();
  const r: PruneResult = { abandonedSnapshots: 0, unusedBlocks: 0, deferredBlocks: 0, deletedBlocks: 0, deletedPacks: 0, repackedPacks: 0, orphanPacks: 0, bytesFreed: 0, dryRun: opts.dryRun ?? false };

  // Snapshots whose backup died before committing: nothing reads them.
  const live = liveLeases(catalog);
  const liveIds = new Set(live.map((l) => l.id));
  const abandoned = catalog.pendingSnapshots().filter((p) => p.lease === null || !liveIds.has(p.lease));
  r.abandonedSnapshots = abandoned.length;
  if (opts.dryRun) {
    r.unusedBlocks = db.prepare(`SELECT COUNT(*) FROM blocks WHERE NOT ${LIVE}`).pluck().get() as number;
    return r;
  }
  catalog.transaction(() => abandoned.forEach((p) => catalog.deleteSnapshot(p.seq)));
  await listOldTrees(repo);

  // Phase one: mark what is unused now, and unmark what became used again.
  catalog.transaction(() => {
    // Stamped inside the transaction: it orders the mark against backups' lease starts.
    db.prepare(`UPDATE blocks SET condemned = ? WHERE condemned IS NULL AND NOT ${LIVE}`).run(Date.now());
    db.prepare(`UPDATE blocks SET condemned = NULL WHERE condemned IS NOT NULL AND ${LIVE}`).run();
  });
  r.unusedBlocks = db.prepare('SELECT COUNT(*) FROM blocks WHERE condemned IS NOT NULL').pluck().get() as number;

  // Phase two: delete what was condemned before every running backup began.
  const touchedPacks = catalog.transaction(() => {
    const backups = liveLeases(catalog).filter((l) => l.kind === 'backup');
    const horizon = backups.length > 0 ? Math.min(...backups.map((l) => l.started)) : Number.MAX_SAFE_INTEGER;
    const doomed = db
      .prepare(`SELECT id, pack, length FROM blocks WHERE condemned IS NOT NULL AND condemned < ? AND NOT ${LIVE}`)
      .all(horizon) as { id: Buffer; pack: number; length: number }[];
    const del = db.prepare('DELETE FROM blocks WHERE id = ?');
    for (const d of doomed) del.run(d.id);
    r.deletedBlocks = doomed.length;
    return new Set(doomed.map((d) => d.pack));
  });
  r.deferredBlocks = r.unusedBlocks - r.deletedBlocks;
  opts.onProgress?.(`${r.deletedBlocks} unused blocks removed from the index, ${touchedPacks.size} packs affected`);

  // Packs: drop the empty ones, repack the partly used ones.
  const packer = repo.newPacker(true);
  const emptied: { id: number; name: string; size: number }[] = [];
  for (const packId of touchedPacks) {
    const pack = db.prepare('SELECT id, name, size FROM packs WHERE id = ?').get(packId) as { id: number; name: string; size: number } | undefined;
    if (!pack) continue;
    const blobs = db.prepare('SELECT id, kind, offset, length, size FROM blocks WHERE pack = ? ORDER BY offset').all(packId) as {
      id: Buffer;
      kind: number;
      offset: number;
      length: number;
      size: number;
    }[];
    if (blobs.length > 0) {
      for (const b of blobs) {
        const sealed = await repo.storage.read({ kind: 'pack', name: pack.name }, b.offset, b.length);
        await packer.add(b.id, BLOB_KINDS[b.kind]!, sealed, b.size);
      }
      r.repackedPacks++;
    }
    emptied.push(pack);
  }
  await packer.flush();
  for (const pack of emptied) {
    const gone = catalog.transaction(() => {
      if (db.prepare('SELECT 1 FROM blocks WHERE pack = ? LIMIT 1').get(pack.id)) return false;
      db.prepare('DELETE FROM packs WHERE id = ?').run(pack.id);
      return true;
    });
    if (!gone) continue;
    await repo.storage.delete({ kind: 'pack', name: pack.name });
    r.deletedPacks++;
    r.bytesFreed += pack.size;
  }
  r.bytesFreed -= packer.bytesWritten;

  // Packs no catalog row names: left by an interrupted backup or prune. Only
  // old ones go, and only when no backup runs (a running one may index its
  // newest pack any moment).
  const quiet = liveLeases(catalog).every((l) => l.kind !== 'backup');
  // Partial pack files of killed writers: an hour old, or a minute when no backup runs.
  r.bytesFreed += await repo.storage.sweepTemporary(quiet ? 60_000 : 3_600_000);
  if (quiet) {
    const known = new Set(db.prepare('SELECT name FROM packs').pluck().all() as string[]);
    for await (const name of repo.storage.list('pack')) {
      if (known.has(name)) continue;
      const st = await repo.storage.stat({ kind: 'pack', name });
      if (st.mtimeMs >= started - 1000) continue;
      await repo.storage.delete({ kind: 'pack', name });
      r.orphanPacks++;
      r.bytesFreed += st.size;
    }
  }
  return r;
}
