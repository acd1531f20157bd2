/**
 * The catalog's half of prune: which blocks no snapshot needs, which packs to
 * rewrite or delete, and the sweep once live blobs have moved. Keyless: a
 * server runs it for a client that holds the key, or for an admin without.
 */
import { BLOB_KINDS, type Catalog } from './catalog.js';
import { liveLeases } from './lease.js';
import type { PackEntry } from './packs.js';
import type { Storage } from '../storage/storage.js';
import { StrataError } from '../errors.js';

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
 * Snapshots whose backup died before committing: nothing reads them. One
 * without a lease is being written by a process that keeps this catalog for
 * itself (a journal's replay, rebuild-catalog): it is abandoned unless that
 * process is this one.
 */
function abandonedSnapshots(catalog: Catalog): { seq: number }[] {
  const live = new Set(liveLeases(catalog).map((l) => l.id));
  return catalog.pendingSnapshots().filter((p) => (p.lease === null ? p.pid !== process.pid : !live.has(p.lease)));
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
  const plan: PrunePlan = { started, abandonedSnapshots: 0, unusedBlocks: 0, deletedBlocks: 0, packsNeedingKey: 0, packs: [] };
  if (dryRun) {
    plan.abandonedSnapshots = abandonedSnapshots(catalog).length;
    plan.unusedBlocks = db.prepare(`SELECT COUNT(*) FROM blocks WHERE NOT ${LIVE}`).pluck().get() as number;
    return plan;
  }
  if (db.prepare('SELECT 1 FROM snapshots WHERE blobs_known = 0 AND committed = 1 LIMIT 1').get()) {
    throw new StrataError('local_only', 'snapshots made by an older strata need their trees listed with the key: run prune once on the repository directory');
  }
  // Leases and pending snapshots read in the one transaction that drops them: a backup that
  // took its lease and began between two separate reads would look abandoned.
  plan.abandonedSnapshots = catalog.transaction(() => {
    const abandoned = abandonedSnapshots(catalog);
    for (const p of abandoned) catalog.deleteSnapshot(p.seq);
    return abandoned.length;
  });

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
 * backup or prune) once they are old and no backup runs. `record` (a
 * repository in a bucket: its journal) is told which packs go before their
 * files are deleted, so that no other keeper of the catalog reads them.
 */
export async function pruneSweep(
  catalog: Catalog,
  storage: Storage,
  emptied: readonly string[],
  started: number,
  record?: (packs: readonly string[]) => Promise<void>,
): Promise<{ deletedPacks: number; orphanPacks: number; bytesFreed: number }> {
  const db = catalog.db;
  const out = { deletedPacks: 0, orphanPacks: 0, bytesFreed: 0 };
  const gone: { name: string; size: number }[] = [];
  for (const name of emptied) {
    const size = catalog.transaction(() => {
      const pack = db.prepare('SELECT id, size FROM packs WHERE name = ?').get(name) as { id: number; size: number } | undefined;
      if (!pack || db.prepare('SELECT 1 FROM blocks WHERE pack = ? LIMIT 1').get(pack.id) || db.prepare('SELECT 1 FROM spares WHERE pack = ? LIMIT 1').get(pack.id)) return undefined;
      db.prepare('DELETE FROM packs WHERE id = ?').run(pack.id);
      return pack.size;
    });
    if (size !== undefined) gone.push({ name, size });
  }
  await record?.(gone.map((p) => p.name));
  for (const { name, size } of gone) {
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
    const orphans: { name: string; size: number }[] = [];
    for await (const name of storage.list('pack')) {
      if (known.has(name)) continue;
      const st = await storage.stat({ kind: 'pack', name });
      if (st.mtimeMs < started - 1000) orphans.push({ name, size: st.size });
    }
    await record?.(orphans.map((p) => p.name));
    for (const { name, size } of orphans) {
      await storage.delete({ kind: 'pack', name });
      out.orphanPacks++;
      out.bytesFreed += size;
    }
  }
  return out;
}
