/**
 * The block index: which pack holds each block (data, trees, TOCs, snapshot
 * records), where in it and how long, the packs themselves, the spare copies
 * of blocks whose first copy was found forged, and the claims a client with
 * the key checks against a pack's sealed index. A block prune has condemned
 * is rescued when a backup asks for it.
 */
import { CatalogDb } from './schema.js';

export type BlobKind = 'data' | 'tree' | 'toc' | 'snapshot';
export const BLOB_KINDS: readonly BlobKind[] = ['data', 'tree', 'toc', 'snapshot'];

export interface BlockLocation {
  pack: string;
  offset: number;
  length: number;
  size: number;
  /** 0 data, 1 tree, 2 TOC, 3 snapshot record (PackEntry's kinds in order). */
  kind: number;
  /** The pack's size as the catalog has it (given by blockLocations): a hint for reads, which the store's answer overrules. */
  packSize?: number;
}

const BLOCK_SQL = {
  blockState: 'SELECT condemned FROM blocks WHERE id = ?',
  rescueBlock: 'UPDATE blocks SET condemned = NULL WHERE id = ?',
  insertPack: 'INSERT INTO packs(name, size) VALUES (?, ?)',
  insertBlock: 'INSERT OR IGNORE INTO blocks(id, pack, offset, length, size, kind) VALUES (?, ?, ?, ?, ?, ?)',
  relocateBlock: 'INSERT INTO blocks(id, pack, offset, length, size, kind) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET pack = excluded.pack, offset = excluded.offset, length = excluded.length, condemned = NULL',
  insertSpare: 'INSERT OR IGNORE INTO spares(id, pack, offset, length, size, kind) SELECT ?, ?, ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM blocks WHERE id = ? AND pack <> ?)',
  blockLocation: 'SELECT p.name AS pack, b.offset, b.length, b.size, b.kind FROM blocks b JOIN packs p ON p.id = b.pack WHERE b.id = ?',
  blockPlace: 'SELECT pack, offset, length, size, kind FROM blocks WHERE id = ?',
  packOf: 'SELECT name, size FROM packs WHERE id = ?',
  blockWhere: 'SELECT p.name AS pack, p.size AS packSize, b.offset, b.length, b.condemned FROM blocks b JOIN packs p ON p.id = b.pack WHERE b.id = ?',
  spares: 'SELECT p.name AS pack, s.offset, s.length, s.size FROM spares s JOIN packs p ON p.id = s.pack WHERE s.id = ? ORDER BY s.pack DESC',
};

/** The catalog's database with its block index (see CatalogDb). */
export class BlockIndex extends CatalogDb {
  private readonly blockSt = this.statements(BLOCK_SQL);

  /**
   * True when the block is stored. A block that prune has condemned is
   * rescued here (its mark cleared), so prune will not delete a block that a
   * running backup has just decided to reuse.
   */
  hasBlock(id: Uint8Array): boolean {
    const row = this.windowRead(() => this.blockSt.blockState.get(id)) as { condemned: number | null } | undefined;
    if (!row) return false;
    if (row.condemned === null) return true;
    return this.guard(() => this.blockSt.rescueBlock.run(id).changes > 0);
  }

  /**
   * hasBlock for many blocks at once. The lookups share one read
   * transaction: each statement on its own begins and ends one, which costs
   * more than the lookup. Condemned blocks are rescued after it.
   */
  hasBlocks(ids: readonly Uint8Array[]): boolean[] {
    const states = this.reading(() => ids.map((id) => this.blockSt.blockState.get(id) as { condemned: number | null } | undefined));
    return states.map((row, i) => (row === undefined ? false : row.condemned === null ? true : this.hasBlock(ids[i]!)));
  }

  /**
   * blockLocation for many blocks, in one read transaction. A batch's blocks
   * share a few packs: each pack's name is read once (a restore of a tree
   * asks this for every block of every file).
   */
  blockLocations(ids: readonly Uint8Array[]): (BlockLocation | undefined)[] {
    const place = this.blockSt.blockPlace.raw();
    const packOf = this.blockSt.packOf.raw();
    return this.reading(() => {
      const packs = new Map<number, [name: string, size: number]>();
      return ids.map((id) => {
        const row = place.get(id) as [pack: number, offset: number, length: number, size: number, kind: number] | undefined;
        if (!row) return undefined;
        let pack = packs.get(row[0]);
        if (pack === undefined) {
          pack = packOf.get(row[0]) as [string, number] | undefined;
          // As the join would: a block of no known pack is nowhere.
          if (pack === undefined) return undefined;
          packs.set(row[0], pack);
        }
        return { pack: pack[0], offset: row[1], length: row[2], size: row[3], kind: row[4], packSize: pack[1] };
      });
    });
  }

  /** The names of every pack the catalog knows (for a cache held against a store's listing). */
  packNames(): string[] {
    return this.db.prepare('SELECT name FROM packs').pluck().all() as string[];
  }

  packIndexed(name: string): boolean {
    return this.db.prepare('SELECT 1 FROM packs WHERE name = ?').get(name) !== undefined;
  }

  blockLocation(id: Uint8Array): BlockLocation | undefined {
    return this.blockSt.blockLocation.get(id) as BlockLocation | undefined;
  }

  /**
   * Indexes a stored pack. With `relocate`, blocks already indexed elsewhere
   * move to this pack (prune's repacking); otherwise the first copy stays.
   */
  addPack(name: string, size: number, blobs: readonly { id: Buffer; kind: BlobKind; offset: number; length: number; size: number }[], relocate = false, spares?: ReadonlySet<string>): void {
    const insert = relocate ? this.blockSt.relocateBlock : this.blockSt.insertBlock;
    this.transaction(() => {
      const pack = Number(this.blockSt.insertPack.run(name, size).lastInsertRowid);
      for (const b of blobs) {
        const kind = BLOB_KINDS.indexOf(b.kind);
        // Already indexed elsewhere, and the client says that copy fails for it: kept as a spare.
        if (insert.run(b.id, pack, b.offset, b.length, b.size, kind).changes === 0 && spares?.has(b.id.toString('hex'))) this.blockSt.insertSpare.run(b.id, pack, b.offset, b.length, b.size, kind, b.id, pack);
      }
    });
  }

  /**
   * Where each block is, for a client that checks the claim before it leaves
   * the block out of a backup (condemned ones are rescued, as by hasBlock).
   */
  blockClaims(ids: readonly Uint8Array[]): ({ pack: string; packSize: number; offset: number; length: number } | undefined)[] {
    const rows = this.reading(() => ids.map((id) => this.blockSt.blockWhere.get(id) as { pack: string; packSize: number; offset: number; length: number; condemned: number | null } | undefined));
    return rows.map((r, i) => {
      if (!r) return undefined;
      if (r.condemned !== null && !this.hasBlock(ids[i]!)) return undefined;
      return { pack: r.pack, packSize: r.packSize, offset: r.offset, length: r.length };
    });
  }

  /**
   * Drops packs another catalog's prune removed (a follower of a bucket's
   * journal), with every block and spare copy they still held: what it
   * moved out is indexed in its new packs already. Returns how many it knew.
   */
  dropPacks(names: readonly string[]): number {
    return this.transaction(() => {
      let dropped = 0;
      for (const name of names) {
        const id = this.db.prepare('SELECT id FROM packs WHERE name = ?').pluck().get(name) as number | undefined;
        if (id === undefined) continue;
        this.db.prepare('DELETE FROM blocks WHERE pack = ?').run(id);
        this.db.prepare('DELETE FROM spares WHERE pack = ?').run(id);
        this.db.prepare('DELETE FROM packs WHERE id = ?').run(id);
        dropped++;
      }
      return dropped;
    });
  }

  /** The spare copies of a block (see SCHEMA_7), newest first. */
  spareLocations(id: Uint8Array): BlockLocation[] {
    return this.blockSt.spares.all(id) as BlockLocation[];
  }
}
