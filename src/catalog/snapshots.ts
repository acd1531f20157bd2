/**
 * Snapshot rows: a snapshot pending until its backup commits it, its sealed
 * record and metadata, the blobs (trees, record, TOC segments) it keeps
 * alive, and its link to its parent. A snapshot that inherits holds rows only
 * for what changed since its parent (see SCHEMA_5 in schema.ts); the chain of
 * parents a version is looked up in is kept here, built once per snapshot and
 * dropped when any process changes the links.
 */
import { StrataError } from '../errors.js';
import { BlockIndex } from './blocks.js';

export interface SnapshotRow {
  seq: number;
  id: string;
  time: number;
  lineage: Buffer;
  meta: Buffer;
  root: Buffer | null;
  parent: number | null;
}

interface Chain {
  /** The snapshot, then each parent it inherits from. */
  order: number[];
  /** Position in `order` of each (made when first needed). */
  at?: Map<number, number>;
}

const SNAPSHOT_SQL = {
  insertSnapshot: 'INSERT INTO snapshots(seq, id, time, lineage, meta, parent, committed, pid, lease) VALUES (?, ?, ?, ?, ?, ?, 0, ?, ?)',
  lastSeq: "SELECT max(coalesce((SELECT CAST(value AS INTEGER) FROM info WHERE key = 'last_snapshot_seq'), 0), coalesce((SELECT max(seq) FROM snapshots), 0))",
  setLastSeq: "INSERT OR REPLACE INTO info(key, value) VALUES ('last_snapshot_seq', ?)",
  inherit: 'UPDATE snapshots SET inherits = 1 WHERE seq = ?',
  inheritance: 'SELECT parent, inherits FROM snapshots WHERE seq = ?',
  commitSnapshot: 'UPDATE snapshots SET committed = 1, root = ?, record = ?, meta = ? WHERE seq = ? AND committed = 0',
  insertSnapshotBlob: 'INSERT OR IGNORE INTO snapshot_blobs(snapshot, block) VALUES (?, ?)',
  // Ties in time go by id, not by seq: each catalog over a bucket numbers its snapshots in the order it learnt them, and all must list them alike.
  snapshots: 'SELECT seq, id, time, lineage, meta, root, parent FROM snapshots WHERE committed = 1 ORDER BY time, id',
  snapshotBySeq: 'SELECT seq, id, time, lineage, meta, root, parent FROM snapshots WHERE seq = ?',
  snapshotCount: 'SELECT count(*) FROM snapshots WHERE committed = 1',
  snapshotsNewest: 'SELECT seq, id, time, lineage, meta, root, parent FROM snapshots WHERE committed = 1 ORDER BY time DESC, id DESC LIMIT ? OFFSET ?',
  snapshotById: 'SELECT seq, id, time, lineage, meta, root, parent FROM snapshots WHERE committed = 1 AND id = ?',
  // Where a snapshot stands in the list oldest first: the committed ones before it in (time, id).
  snapshotsBeforeOne: 'SELECT count(*) FROM snapshots WHERE committed = 1 AND (time < ? OR (time = ? AND id < ?))',
  snapshotsByPrefix: "SELECT seq, id, time, lineage, meta, root, parent FROM snapshots WHERE committed = 1 AND id >= ? AND id < ? || 'g' ORDER BY time, id",
  parentCandidate: 'SELECT seq, id, time, lineage, meta, root, parent FROM snapshots WHERE committed = 1 AND lineage = ? AND time <= ? ORDER BY time DESC, seq DESC LIMIT 1',
  dataVersion: 'PRAGMA data_version',
};

/** The block index with the snapshots' rows (see BlockIndex). */
export class SnapshotTable extends BlockIndex {
  protected readonly snapshotSt = this.statements(SNAPSHOT_SQL);

  /** A pending snapshot, invisible to readers until committed; `lease` is its backup's. */
  /** With `inherits`, the snapshot will hold rows only for what changed since `parent` (see SCHEMA_5). */
  beginSnapshot(id: string, time: number, lineage: Buffer, meta: Buffer, parent: number | null, lease: string | null = null, inherits = false): number {
    return this.transaction(() => {
      // A number is never given twice: a backup whose pending row a prune dropped must not write into the next one's.
      const seq = (this.snapshotSt.lastSeq.pluck().get() as number) + 1;
      this.snapshotSt.insertSnapshot.run(seq, id, time, lineage, meta, parent, process.pid, lease);
      this.snapshotSt.setLastSeq.run(String(seq));
      if (inherits && parent !== null) this.snapshotSt.inherit.run(seq);
      this.forgetChains();
      return seq;
    });
  }

  /** Makes a snapshot visible, with the blobs (trees, record) it uses. */
  commitSnapshot(seq: number, root: Buffer, record: Buffer, meta: Buffer, blobs: readonly Buffer[] = []): void {
    this.transaction(() => {
      if (this.snapshotSt.commitSnapshot.run(root, record, meta, seq).changes !== 1) {
        throw new StrataError('not_pending', `snapshot ${seq} is no longer being written (a prune took it for abandoned, or it was committed already): start the backup again`);
      }
      for (const id of blobs) this.snapshotSt.insertSnapshotBlob.run(seq, id);
    });
  }

  snapshots(): SnapshotRow[] {
    return this.snapshotSt.snapshots.all() as SnapshotRow[];
  }

  /** Up to `limit` committed snapshots, newest first, from the `offset`-th, and how many there are (one read). */
  snapshotPage(offset: number, limit: number): { total: number; rows: SnapshotRow[] } {
    return this.reading(() => ({
      total: this.snapshotSt.snapshotCount.pluck().get() as number,
      rows: this.snapshotSt.snapshotsNewest.all(limit, offset) as SnapshotRow[],
    }));
  }

  /** The committed snapshots of these full ids, each with its place in the list oldest first (0: the oldest); ids not there are left out. */
  snapshotPositions(ids: readonly string[]): { row: SnapshotRow; position: number }[] {
    return this.reading(() => {
      const out: { row: SnapshotRow; position: number }[] = [];
      for (const id of ids) {
        const row = this.snapshotSt.snapshotById.get(id) as SnapshotRow | undefined;
        if (row) out.push({ row, position: this.snapshotSt.snapshotsBeforeOne.pluck().get(row.time, row.time, row.id) as number });
      }
      return out;
    });
  }

  snapshotBySeq(seq: number): SnapshotRow | undefined {
    return this.snapshotSt.snapshotBySeq.get(seq) as SnapshotRow | undefined;
  }

  snapshotsByPrefix(prefix: string): SnapshotRow[] {
    return this.snapshotSt.snapshotsByPrefix.all(prefix, prefix) as SnapshotRow[];
  }

  /** Committed snapshots at or before `time`, newest first, at most `limit`. */
  snapshotsBefore(time: number, limit: number): SnapshotRow[] {
    return this.db
      .prepare('SELECT seq, id, time, lineage, meta, root, parent FROM snapshots WHERE committed = 1 AND time <= ? ORDER BY time DESC, seq DESC LIMIT ?')
      .all(time, limit) as SnapshotRow[];
  }

  parentCandidate(lineage: Buffer, time: number): SnapshotRow | undefined {
    return this.snapshotSt.parentCandidate.get(lineage, time) as SnapshotRow | undefined;
  }

  /** Pending snapshots (not committed), with the lease of the backup writing each. */
  pendingSnapshots(): { seq: number; id: string; lease: string | null; pid: number | null }[] {
    return this.db.prepare('SELECT seq, id, lease, pid FROM snapshots WHERE committed = 0').all() as { seq: number; id: string; lease: string | null; pid: number | null }[];
  }

  /** Committed snapshots whose blobs (trees, record) were never listed: made before schema 3 recorded them. */
  snapshotsWithoutBlobList(): { seq: number; id: string; root: Buffer | null; record: Buffer | null }[] {
    return this.db.prepare('SELECT seq, id, root, record FROM snapshots WHERE blobs_known = 0 AND committed = 1').all() as { seq: number; id: string; root: Buffer | null; record: Buffer | null }[];
  }

  /** Records a snapshot's blobs, found by walking its trees (see snapshotsWithoutBlobList). */
  setBlobList(seq: number, ids: readonly Buffer[]): void {
    this.transaction(() => {
      const insert = this.db.prepare('INSERT OR IGNORE INTO snapshot_blobs(snapshot, block) VALUES (?, ?)');
      for (const id of ids) insert.run(seq, id);
      this.db.prepare('UPDATE snapshots SET blobs_known = 1 WHERE seq = ?').run(seq);
    });
  }

  /** The id of a snapshot's sealed record (null before it is committed). */
  snapshotRecord(seq: number): Buffer | null {
    return (this.db.prepare('SELECT record FROM snapshots WHERE seq = ?').pluck().get(seq) as Buffer | null | undefined) ?? null;
  }

  /** Points a snapshot at a new revision of its record, with its sealed metadata; the old record is left to prune. */
  setSnapshotRecord(seq: number, record: Buffer, meta: Buffer): void {
    this.transaction(() => {
      const old = this.snapshotRecord(seq);
      this.db.prepare('UPDATE snapshots SET record = ?, meta = ? WHERE seq = ?').run(record, meta, seq);
      this.db.prepare('INSERT OR IGNORE INTO snapshot_blobs(snapshot, block) VALUES (?, ?)').run(seq, record);
      if (old && !old.equals(record)) this.db.prepare('DELETE FROM snapshot_blobs WHERE snapshot = ? AND block = ?').run(seq, old);
    });
  }

  /** Where versions of a snapshot are looked for: itself, then its parents while each inherits. */
  protected chain(snapshot: number): Chain {
    // Another process may have forgotten snapshots (and a seq can be reused): its commits change data_version.
    const version = this.snapshotSt.dataVersion.pluck().get() as number;
    if (version !== this.chainsVersion) {
      this.forgetChains();
      this.chainsVersion = version;
    }
    let chain = this.chains.get(snapshot);
    if (chain) return chain;
    chain = { order: [] };
    for (let seq: number | null = snapshot, seen = new Set<number>(); seq !== null && !seen.has(seq); ) {
      seen.add(seq);
      chain.order.push(seq);
      const row = this.inheritance(seq);
      seq = row?.inherits ? row.parent : null;
    }
    if (this.chains.size >= 64) this.chains.clear();
    this.chains.set(snapshot, chain);
    return chain;
  }

  private readonly chains = new Map<number, Chain>();
  /** Each snapshot's link to its parent, as chains were built (a chain of N shares N-1 links with its parent's). */
  private readonly links = new Map<number, { parent: number | null; inherits: number } | undefined>();
  private chainsVersion = -1;

  protected forgetChains(): void {
    this.chains.clear();
    this.links.clear();
  }

  /** A snapshot's parent and whether it inherits from it (a catalog older than schema 5, read-only here, has no inheritance). */
  protected inheritance(seq: number): { parent: number | null; inherits: number } | undefined {
    if (this.links.has(seq)) return this.links.get(seq);
    let link: { parent: number | null; inherits: number } | undefined;
    try {
      link = this.snapshotSt.inheritance.get(seq) as { parent: number | null; inherits: number } | undefined;
    } catch {
      link = undefined;
    }
    if (this.links.size >= 100_000) this.links.clear();
    this.links.set(seq, link);
    return link;
  }

  /**
   * Committed snapshots whose parent is `seq`, and whether each inherits. (A
   * pending one is either running, and then its parent is not forgotten, or
   * abandoned, and then prune removes it.)
   */
  children(seq: number): { seq: number; inherits: number }[] {
    return this.db.prepare('SELECT seq, inherits FROM snapshots WHERE parent = ? AND committed = 1').all(seq) as { seq: number; inherits: number }[];
  }

  /**
   * A snapshot is going: its children now descend from its parent, and one
   * inherits only if it did too (a child of a snapshot with every row got
   * every row it lacked handed down, see forget's passOn).
   */
  relink(seq: number): void {
    const row = this.inheritance(seq);
    const parent = row?.parent ?? null;
    this.db.prepare('UPDATE snapshots SET parent = ?, inherits = inherits * ? WHERE parent = ?').run(parent, parent !== null && row?.inherits ? 1 : 0, seq);
    this.forgetChains();
  }
}
