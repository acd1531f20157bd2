/**
 * The catalog: a SQLite database (WAL) that answers every question about
 * structure — which packs hold which blocks, which snapshots exist, and each
 * file version's table of contents (TOC). It holds no plaintext: paths and
 * lineages are keyed ids, snapshot metadata is sealed. Everything in it is
 * also sealed into the packs, so it can be rebuilt from the block store.
 *
 * One concept a module, each adding its tables to the one below:
 * - schema.ts: the database, its schema and migrations, pragmas, statements
 *   prepared once, transactions and typed errors (CatalogDb);
 * - blocks.ts: the block index, packs, spares and claims (BlockIndex);
 * - snapshots.ts: snapshot rows, parent links, records (SnapshotTable);
 * - version-rows.ts: versions and their TOC rows (VersionTable).
 * Callers take `Catalog`, which is all of them.
 */
import { VersionTable } from './version-rows.js';

export { sqliteAddon, type CatalogOptions } from './schema.js';
export { BLOB_KINDS, type BlobKind, type BlockLocation } from './blocks.js';
export type { SnapshotRow } from './snapshots.js';
export { GONE, retryStale, type NewVersionRows, type TocRow, type TocSpan, type VersionRow } from './version-rows.js';

export class Catalog extends VersionTable {}
