/**
 * Changing a snapshot's tags. The sealed record in a pack cannot be edited:
 * a new record with the new tags and a higher `revision` is written, the
 * catalog's sealed metadata and `record` are pointed at it, and the old
 * record is left to prune. rebuild-catalog keeps the highest revision of each
 * snapshot's record (docs/FORMAT.md §8.4).
 */
import { encodeBlock } from '../repo/blockcodec.js';
import type { Repository } from '../repo/repository.js';
import { metaAad, Snapshot, snapshotRowByPrefix, type SnapshotRecord } from './snapshot.js';

export interface TagChange {
  add?: readonly string[];
  remove?: readonly string[];
  /** Replaces every tag (then add and remove apply). */
  set?: readonly string[];
}

export interface TagResult {
  changed: { id: string; tags: string[] }[];
  unchanged: string[];
}

export function newTags(old: readonly string[], change: TagChange): string[] {
  const tags = [...(change.set ?? old)];
  for (const t of change.add ?? []) if (!tags.includes(t)) tags.push(t);
  return [...new Set(tags.filter((t) => !(change.remove ?? []).includes(t)))];
}

/** Applies `change` to each snapshot named (ids or unique prefixes), holding the maintenance lease. */
export async function tagSnapshots(repo: Repository, ids: readonly string[], change: TagChange, opts: { waitMs?: number; onWait?: (m: string) => void } = {}): Promise<TagResult> {
  const { service } = repo;
  const snaps = await Promise.all(ids.map(async (id) => new Snapshot(repo, await snapshotRowByPrefix(repo.service, id))));
  const result: TagResult = { changed: [], unchanged: [] };
  const lease = await service.startMaintenance(opts.waitMs, opts.onWait);
  try {
    for (const snap of snaps) {
      const tags = newTags(snap.meta.tags, change);
      if (JSON.stringify(tags) === JSON.stringify(snap.meta.tags)) {
        result.unchanged.push(snap.id);
        continue;
      }
      const oldId = await service.snapshotRecord(snap.row.seq);
      if (!oldId) continue;
      const old = JSON.parse((await repo.readBlob(oldId, 'snapshot')).toString('utf8')) as SnapshotRecord;
      const record: SnapshotRecord = { ...old, tags, revision: (old.revision ?? 0) + 1 };
      const plain = Buffer.from(JSON.stringify(record), 'utf8');
      const id = repo.keyring.blockId(plain);
      const packer = repo.newPacker();
      await packer.add(id, 'snapshot', encodeBlock(repo.keyring.encKey, id, plain, repo.compressionLevel), plain.length);
      await packer.flush();
      await service.setSnapshotRecord(snap.row.seq, id, repo.keyring.sealJson({ ...snap.meta, tags }, metaAad(snap.id)));
      result.changed.push({ id: snap.id, tags });
    }
  } finally {
    await service.endLease(lease);
  }
  return result;
}
