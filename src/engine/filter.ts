/**
 * Which snapshots a command considers, as restic filters them: by host, by
 * source paths and by tags. A tag list "a,b" asks for every tag in it; several
 * lists ask for any one of them.
 */
import type { SnapshotMeta } from './snapshot.js';

export interface SnapshotFilter {
  /** Any of these hosts (none: every host). */
  hosts?: readonly string[];
  /** Every one of these among the snapshot's source paths (absolute). */
  paths?: readonly string[];
  /** Any of these lists, each a set of tags the snapshot must all have. */
  tags?: readonly (readonly string[])[];
}

/** Tags of a comma-separated list, trimmed, without empty ones or repeats. */
export function splitTags(text: string): string[] {
  return [...new Set(text.split(',').map((t) => t.trim()).filter((t) => t.length > 0))];
}

/** True when the snapshot has every tag of some list (or no lists are given). */
export function hasTagList(tags: readonly string[], lists: readonly (readonly string[])[] | undefined): boolean {
  return !lists || lists.length === 0 || lists.some((l) => l.every((t) => tags.includes(t)));
}

export function isFilterEmpty(f: SnapshotFilter): boolean {
  return !f.hosts?.length && !f.paths?.length && !f.tags?.length;
}

export function matchesFilter(meta: SnapshotMeta, f: SnapshotFilter): boolean {
  if (f.hosts && f.hosts.length > 0 && !f.hosts.includes(meta.host)) return false;
  if (f.paths && !f.paths.every((p) => meta.paths.includes(p))) return false;
  return hasTagList(meta.tags, f.tags);
}
