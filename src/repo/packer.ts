/**
 * Collects sealed blobs into packs and stores them. A pack is written to the
 * store first, then indexed in the catalog in one transaction, so the catalog
 * never names a block that is not stored. Blobs waiting in the open pack are
 * known to `has`, so a block seen twice in one backup is stored once.
 *
 * A server answers `has` only for blocks this client has heard of; before a
 * pack goes up, the server is asked which of its blobs it lacks (one round
 * trip per pack), and the others are left out.
 *
 * Memory is fixed: blobs are copied into one of two pack buffers; one fills
 * while the other is written.
 */
import type { Keyring } from '../crypto/keyring.js';
import type { BlobKind } from '../catalog/catalog.js';
import { encodePack } from './pack.js';
import { PACK_MAGIC } from '../catalog/packs.js';
import type { CatalogService } from '../catalog/service.js';

// 8 MiB: a writer holds two pack buffers, and at 16 MiB they alone were a sixth of
// a backup's memory; larger packs measured no faster here.
export const DEFAULT_PACK_SIZE = 8 * 1024 * 1024;
/** Room past the target size, so a pack rarely closes early for one more blob, and its index fits. */
const SLACK = 1024 * 1024;

interface Entry {
  id: Buffer;
  kind: BlobKind;
  offset: number;
  length: number;
  size: number;
}

interface PackBuffer {
  bytes: Buffer;
  used: number;
  entries: Entry[];
  /** The write of this buffer's last pack, while it runs. */
  writing?: Promise<void>;
}

export class Packer {
  private readonly buffers: PackBuffer[] = [];
  private active: PackBuffer;
  private readonly pendingIds = new Set<string>();
  private readonly capacity: number;
  private failure: unknown;
  private queue: Promise<void> = Promise.resolve();
  /** Bytes written to the store by this packer (what the repository grew by). */
  bytesWritten = 0;
  packsWritten = 0;

  /** Sealed blobs left out of packs because the server had them already. */
  blobsSkipped = 0;

  constructor(
    private readonly service: CatalogService,
    private readonly keyring: Keyring,
    private readonly targetSize = DEFAULT_PACK_SIZE,
    /** Repacking: blocks already indexed move to the new packs. */
    private readonly relocate = false,
    /** Binary pack indexes (format 2); JSON for a format 1 repository. */
    private readonly binaryIndex = true,
  ) {
    this.capacity = targetSize + SLACK;
    this.active = this.newBuffer();
  }

  private newBuffer(): PackBuffer {
    const b: PackBuffer = { bytes: Buffer.allocUnsafe(0), used: PACK_MAGIC.length, entries: [] };
    this.buffers.push(b);
    return b;
  }

  /** True when the block is stored or waiting to be (rescuing it from prune if condemned). */
  has(id: Buffer): boolean {
    return this.pendingIds.has(id.toString('hex')) || this.service.hasBlock(id);
  }

  /** has() for many blocks, with one catalog read for all. */
  hasMany(ids: readonly Buffer[]): boolean[] {
    const stored = this.service.hasBlocks(ids);
    return ids.map((id, i) => stored[i]! || this.pendingIds.has(id.toString('hex')));
  }

  markPending(id: Buffer): void {
    this.pendingIds.add(id.toString('hex'));
  }

  /** Adds a sealed blob (copied: `sealed` may be reused once this resolves). */
  add(id: Buffer, kind: BlobKind, sealed: Uint8Array, size: number): Promise<void> {
    // One add at a time: a buffer must not change while it is being closed.
    const run = this.queue.then(() => this.addNow(id, kind, sealed, size));
    this.queue = run.catch(() => {});
    return run;
  }

  private async addNow(id: Buffer, kind: BlobKind, sealed: Uint8Array, size: number): Promise<void> {
    if (this.failure) throw this.failure;
    this.pendingIds.add(id.toString('hex'));
    if (sealed.length > this.capacity) {
      // Too big for a pack buffer (a huge tree): a pack of its own.
      await this.rotate();
      const bytes = Buffer.concat([PACK_MAGIC, sealed]);
      const own: PackBuffer = { bytes, used: bytes.length, entries: [{ id, kind, offset: PACK_MAGIC.length, length: sealed.length, size }] };
      await this.write(own);
      return;
    }
    if (this.active.used + sealed.length > this.capacity) await this.rotate();
    const b = this.active;
    if (b.bytes.length < this.capacity) {
      b.bytes = Buffer.allocUnsafe(this.capacity);
      PACK_MAGIC.copy(b.bytes, 0);
    }
    b.bytes.set(sealed, b.used);
    b.entries.push({ id, kind, offset: b.used, length: sealed.length, size });
    b.used += sealed.length;
    if (b.used >= this.targetSize) await this.rotate();
  }

  /** Writes the open pack (if any) and waits for every write to finish. */
  async flush(): Promise<void> {
    await this.queue;
    await this.rotate();
    await Promise.all(this.buffers.map((b) => b.writing));
    if (this.failure) throw this.failure;
  }

  /** Starts writing the active buffer and switches to the other, once it is free. */
  private async rotate(): Promise<void> {
    const full = this.active;
    if (full.entries.length > 0) full.writing = this.write(full).catch((e: unknown) => void (this.failure ??= e));
    const next = this.buffers.find((b) => b !== full) ?? this.newBuffer();
    await next.writing;
    if (this.failure) throw this.failure;
    this.active = next;
  }

  private async write(b: PackBuffer): Promise<void> {
    const entries = b.entries;
    if (this.service.remote && !this.relocate) await this.leaveOutStored(b);
    if (b.entries.length > 0) {
      const pack = await encodePack(this.keyring, b.bytes, b.used, b.entries, this.binaryIndex);
      await this.service.putPack(pack.name, pack.bytes, pack.entries, this.relocate);
      this.bytesWritten += pack.bytes.length;
      this.packsWritten++;
    }
    for (const e of entries) this.pendingIds.delete(e.id.toString('hex'));
    b.used = PACK_MAGIC.length;
    b.entries = [];
    b.writing = undefined;
  }

  /** Drops the blobs the server already has from a pack buffer, moving the rest together. */
  private async leaveOutStored(b: PackBuffer): Promise<void> {
    const lacking = new Set((await this.service.missing(b.entries.map((e) => e.id))).map((id) => id.toString('hex')));
    if (lacking.size === b.entries.length) return;
    let at = PACK_MAGIC.length;
    const kept: Entry[] = [];
    for (const e of b.entries) {
      if (!lacking.has(e.id.toString('hex'))) {
        this.blobsSkipped++;
        continue;
      }
      if (e.offset !== at) b.bytes.copy(b.bytes, at, e.offset, e.offset + e.length);
      kept.push({ ...e, offset: at });
      at += e.length;
    }
    b.entries = kept;
    b.used = at;
  }
}
