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
 *
 * A mailbox or tar archive stored gets an item index (item-index.ts),
 * sealed now and named by its entry (`index`, with its `items`); one
 * inherited keeps its parent's, whose blobs this snapshot then uses too.
 */
import * as fs from 'node:fs';
import { contentMark, type BlockList } from '../catalog/blocklist.js';
import { detectDataset, HEAD_BYTES, type DatasetType } from './datasets.js';
import { buildItemIndex, INDEXED_TYPES, itemIndexBlobs, type IndexedType, type IndexStore } from './item-index.js';

export interface DatasetEntry {
  path: string;
  type: DatasetType;
  /** What it is, for a person ("zip archive (OpenDocument)"). */
  what: string;
  size: number;
  /** Hex id of the root of its sealed item index (mailboxes and tar archives). */
  index?: string;
  /** How many items it holds, when its index says. */
  items?: number;
}

/** What an item index needs of the backup: where its blobs go, and the key that marks a version's blocks. */
export interface IndexSink extends IndexStore {
  keyring: { blockId(data: Uint8Array): Buffer };
  /** Throws once the backup is interrupted: a long scan stops (and its index is dropped). */
  checkAbort?: () => void;
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

  constructor(
    parent: readonly DatasetEntry[] | undefined,
    /** Where item indexes go; without it, none is made. */
    private readonly sink?: IndexSink,
  ) {
    this.inherited = new Map((parent ?? []).map((e) => [e.path, e]));
  }

  /** Item indexes made, and the bytes of mailboxes and archives scanned for them (the rest came from their parents' indexes). */
  indexesMade = 0;
  indexScanned = 0;

  /** Whether a file that begins with `head` (its first bytes, all of it if shorter) would be taken for a dataset. */
  static detects(head: Uint8Array): boolean {
    return head.length >= SMALLEST && detectDataset(head.subarray(0, HEAD_BYTES)) !== undefined;
  }

  /** A file stored that is no dataset (detects() said so of its first bytes): stored() without the reading. */
  storedPlain(abs: string): void {
    if (this.inherited.has(abs)) this.restored.add(abs);
  }

  /**
   * A file just stored as `blocks`, still open as `fd` (whose stats were
   * `before` it was read): detected from its first bytes and, a mailbox or
   * tar archive, indexed. `previous` is its parent version's block list,
   * whose index's unchanged segments are reused. Never throws: a manifest
   * is no reason to fail a backup.
   */
  async stored(abs: string, fd: number, blocks: BlockList, before?: fs.BigIntStats, previous?: BlockList): Promise<void> {
    const size = blocks.size;
    const parent = this.inherited.get(abs);
    if (parent) this.restored.add(abs);
    if (size < SMALLEST) return;
    let entry: DatasetEntry;
    try {
      const head = Buffer.allocUnsafe(Math.min(HEAD_BYTES, size));
      const n = fs.readSync(fd, head, 0, head.length, 0);
      const d = detectDataset(head.subarray(0, n));
      if (!d || this.found.size >= MANIFEST_LIMIT) return;
      entry = { path: abs, type: d.type, what: d.what, size };
    } catch {
      // Unreadable now (it was read a moment ago): left out of the manifest.
      return;
    }
    this.found.set(abs, entry);
    if (!this.sink || !(INDEXED_TYPES as readonly string[]).includes(entry.type) || !complete(blocks)) return;
    try {
      const type = entry.type as IndexedType;
      const from = parent?.index && parent.type === type && previous && complete(previous) ? { root: Buffer.from(parent.index, 'hex'), mark: contentMark(this.sink.keyring, previous), firstChange: firstChange(blocks, previous) } : undefined;
      const read = (position: number, length: number) => {
        this.sink!.checkAbort?.();
        const b = Buffer.allocUnsafe(length);
        for (let got = 0; got < length; ) {
          const n = fs.readSync(fd, b, got, length - got, position + got);
          if (n === 0) throw new Error('the file is shorter than stored');
          got += n;
        }
        return b;
      };
      const built = await buildItemIndex({ type, path: abs, size, mark: contentMark(this.sink.keyring, blocks), read, store: this.sink, ...(from ? { parent: from } : {}) }).catch(async (e: unknown) => {
        // A parent index that cannot be read or used: the whole file is scanned instead.
        if (!from) throw e;
        return buildItemIndex({ type, path: abs, size, mark: contentMark(this.sink!.keyring, blocks), read, store: this.sink! });
      });
      // Indexed from what the file holds now: only if that is what was stored.
      const after = fs.fstatSync(fd, { bigint: true });
      if (before && (after.size !== before.size || after.mtimeNs !== before.mtimeNs || after.ctimeNs !== before.ctimeNs)) return;
      this.indexesMade++;
      this.indexScanned += built.scanned;
      entry.index = built.root.toString('hex');
      entry.items = built.count;
    } catch {
      // No index (a damaged tar header, a file that changed): readers scan the file instead.
    }
  }

  /** A file stored without being shown to `stored` (standard input): its parent's entry no longer says what it is. */
  replaced(abs: string): void {
    if (this.inherited.has(abs)) this.restored.add(abs);
  }

  /**
   * The snapshot's datasets: those stored now, and the parent's that were
   * not stored again and that the parent still had (`inParent`).
   */
  async entries(inParent: (path: string) => Promise<boolean>, uses?: (blobs: Buffer[]) => void): Promise<DatasetEntry[]> {
    const out = new Map(this.found);
    for (const [p, e] of this.inherited) {
      if (out.size >= MANIFEST_LIMIT) break;
      if (this.restored.has(p) || out.has(p) || !(await inParent(p))) continue;
      if (e.index && this.sink) {
        // An inherited index's blobs are this snapshot's too: they must outlive the parent.
        try {
          uses?.(await itemIndexBlobs((id) => this.sink!.read(id), e.index));
        } catch {
          const { index: _i, items: _n, ...rest } = e;
          out.set(p, rest);
          continue;
        }
      }
      out.set(p, e);
    }
    return [...out.values()].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  }
}

/** Whether every block of a list has its id (a piece of a block has none). */
function complete(blocks: BlockList): boolean {
  for (let i = 0; i < blocks.length; i++) if (!blocks.hasId(i)) return false;
  return true;
}

/** The first byte of `blocks` not in the same block at the same place in `previous`. */
function firstChange(blocks: BlockList, previous: BlockList): number {
  const n = Math.min(blocks.length, previous.length);
  for (let i = 0; i < n; i++) {
    if (!blocks.sameId(i, previous, i) || blocks.start(i) !== previous.start(i) || blocks.end(i) !== previous.end(i)) return blocks.start(i);
  }
  return n < blocks.length ? blocks.start(n) : Math.min(blocks.size, previous.size);
}

/** A snapshot's sealed manifest, checked for shape (it is authenticated, but written by some version of strata). */
export function manifestEntries(datasets: unknown): DatasetEntry[] {
  if (!Array.isArray(datasets)) return [];
  return datasets.filter(
    (e): e is DatasetEntry =>
      typeof e === 'object' &&
      e !== null &&
      typeof (e as DatasetEntry).path === 'string' &&
      typeof (e as DatasetEntry).type === 'string' &&
      typeof (e as DatasetEntry).what === 'string' &&
      Number.isSafeInteger((e as DatasetEntry).size) &&
      ((e as DatasetEntry).index === undefined || (typeof (e as DatasetEntry).index === 'string' && /^[0-9a-f]{64}$/.test((e as DatasetEntry).index!))) &&
      ((e as DatasetEntry).items === undefined || Number.isSafeInteger((e as DatasetEntry).items)),
  );
}

/** The blobs of the item indexes a manifest names (a rebuilt catalog lists them with the snapshot); an index that cannot be read is left out. */
export async function manifestBlobs(read: (id: Buffer) => Promise<Buffer>, datasets: unknown): Promise<Buffer[]> {
  const out: Buffer[] = [];
  for (const e of manifestEntries(datasets)) {
    if (e.index) out.push(...(await itemIndexBlobs(read, e.index).catch(() => [])));
  }
  return out;
}
