/**
 * find and stats: questions about what snapshots hold, answered from their
 * trees and tables of contents (no data block is read).
 */
import * as path from 'node:path';
import { ExcludeMatcher } from '../util/glob.js';
import type { Repository } from '../repo/repository.js';
import { storedVersion } from './read.js';
import type { Snapshot } from './snapshot.js';

export interface Found {
  snapshot: string;
  time: string;
  path: string;
  type: string;
  size: number;
  mtime: string;
}

/** Entries of `snapshots` whose path matches the glob (a pattern without "/" matches base names), in walk order. */
export async function find(snapshots: readonly Snapshot[], pattern: string): Promise<Found[]> {
  const matcher = new ExcludeMatcher([pattern]);
  const out: Found[] = [];
  for (const snap of snapshots) {
    for await (const { path: p, entry } of snap.walk('/', snap.root)) {
      if (!matcher.excludes(p, path.posix.basename(p))) continue;
      out.push({
        snapshot: snap.id,
        time: new Date(snap.time).toISOString(),
        path: p,
        type: entry.type,
        size: entry.type === 'file' ? entry.size : 0,
        mtime: new Date(Number(BigInt(entry.mtimeNs) / 1_000_000n)).toISOString(),
      });
    }
  }
  return out;
}

export interface RepoStats {
  snapshots: number;
  /** Files and their bytes, counted once per snapshot that holds them (what restoring each would write). */
  files: number;
  bytes: number;
  /** Distinct data blocks those files are made of, and their size before compression. */
  uniqueBlocks: number;
  uniqueBytes: number;
  /** The size of every pack file in the repository (compressed, encrypted; trees and TOCs too). */
  repositoryBytes: number;
  /** bytes / uniqueBytes: how many times over deduplication stores the data (null when there is none). */
  dedupRatio: number | null;
}

/** Totals over `snapshots`; every file's table of contents is read. */
export async function stats(repo: Repository, snapshots: readonly Snapshot[]): Promise<RepoStats> {
  const blocks = new Map<string, number>();
  let files = 0;
  let bytes = 0;
  for (const snap of snapshots) {
    for await (const { path: p, entry } of snap.walk('/', snap.root)) {
      if (entry.type !== 'file') continue;
      files++;
      bytes += entry.size;
      if (entry.size === 0) continue;
      const version = await storedVersion(snap, p, entry);
      for await (const piece of repo.service.pieces(version.id, 0, version.size - 1)) blocks.set(piece.block.toString('hex'), piece.blockSize);
    }
  }
  let uniqueBytes = 0;
  for (const size of blocks.values()) uniqueBytes += size;
  let repositoryBytes = 0;
  for await (const name of repo.storage.list('pack')) repositoryBytes += (await repo.storage.stat({ kind: 'pack', name })).size;
  return {
    snapshots: snapshots.length,
    files,
    bytes,
    uniqueBlocks: blocks.size,
    uniqueBytes,
    repositoryBytes,
    dedupRatio: uniqueBytes > 0 ? Math.round((bytes / uniqueBytes) * 100) / 100 : null,
  };
}
