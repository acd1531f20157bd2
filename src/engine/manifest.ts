/**
 * The manifest: the datasets a snapshot holds (mailboxes, archives,
 * databases, disk images), each with its type, told by content when it was
 * stored. It is sealed with the snapshot (its record and the catalog's
 * sealed meta carry it as `datasets`).
 *
 * At backup, each file stored (read) is shown to `DatasetCollector.stored`
 * once, with the descriptor it was read through: its first HEAD_BYTES are
 * read again from the page cache, nothing more. A file not read (unchanged
 * since the parent snapshot, or in a directory taken whole from it) keeps
 * the parent's entry. A file deleted since keeps its parent's entry in this
 * snapshot's list until the next backup drops it (the parent no longer has
 * it); readers look each path up (`manifestOf`), so it is never shown.
 */
import * as fs from 'node:fs';
import { detectDataset, HEAD_BYTES, type DatasetType } from './datasets.js';

export interface DatasetEntry {
  path: string;
  type: DatasetType;
  /** What it is, for a person ("zip archive (OpenDocument)"). */
  what: string;
  size: number;
}

/** Entries past this many are not kept: a snapshot's sealed meta is read whenever it is listed. */
export const MANIFEST_LIMIT = 20_000;

/** Detection needs at least this much of a file (an mbox's first line and header). */
const SMALLEST = 16;

export class DatasetCollector {
  private readonly found = new Map<string, DatasetEntry>();
  /** The parent's entries by path, and which of them this backup stored again (and so decided anew). */
  private readonly inherited: Map<string, DatasetEntry>;
  private readonly restored = new Set<string>();

  constructor(parent: readonly DatasetEntry[] | undefined) {
    this.inherited = new Map((parent ?? []).map((e) => [e.path, e]));
  }

  /** A file just stored, still open as `fd`: detected from its first bytes. Never throws: a manifest is no reason to fail a backup. */
  stored(abs: string, fd: number, size: number): void {
    if (this.inherited.has(abs)) this.restored.add(abs);
    if (size < SMALLEST) return;
    try {
      const head = Buffer.allocUnsafe(Math.min(HEAD_BYTES, size));
      const n = fs.readSync(fd, head, 0, head.length, 0);
      const d = detectDataset(head.subarray(0, n));
      if (d && this.found.size < MANIFEST_LIMIT) this.found.set(abs, { path: abs, type: d.type, what: d.what, size });
    } catch {
      // Unreadable now (it was read a moment ago): left out of the manifest.
    }
  }

  /**
   * The snapshot's datasets: those stored now, and the parent's that were
   * not stored again and that the parent still had (`inParent`).
   */
  async entries(inParent: (path: string) => Promise<boolean>): Promise<DatasetEntry[]> {
    const out = new Map(this.found);
    for (const [p, e] of this.inherited) {
      if (out.size >= MANIFEST_LIMIT) break;
      if (!this.restored.has(p) && !out.has(p) && (await inParent(p))) out.set(p, e);
    }
    return [...out.values()].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  }
}

/** A snapshot's sealed manifest, checked for shape (it is authenticated, but written by some version of strata). */
export function manifestEntries(datasets: unknown): DatasetEntry[] {
  if (!Array.isArray(datasets)) return [];
  return datasets.filter(
    (e): e is DatasetEntry =>
      typeof e === 'object' && e !== null && typeof (e as DatasetEntry).path === 'string' && typeof (e as DatasetEntry).type === 'string' && typeof (e as DatasetEntry).what === 'string' && Number.isSafeInteger((e as DatasetEntry).size),
  );
}
