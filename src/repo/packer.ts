/**
 * Collects sealed blobs into packs and stores them. A pack is written to the
 * store first, then indexed in the catalog in one transaction, so the catalog
 * never names a block that is not stored. Blobs waiting in the open pack are
 * known to `has`, so a block seen twice in one backup is stored once.
 */
import type { Keyring } from '../crypto/keyring.js';
import type { Storage } from '../storage/storage.js';
import type { BlobKind, Catalog } from './catalog.js';
import { encodePack } from './pack.js';

export const DEFAULT_PACK_SIZE = 16 * 1024 * 1024;

interface Pending {
  id: Buffer;
  kind: BlobKind;
  sealed: Buffer;
  size: number;
}

export class Packer {
  private pending: Pending[] = [];
  private pendingBytes = 0;
  private readonly pendingIds = new Set<string>();
  private flushing: Promise<void> = Promise.resolve();
  /** Pack writes started and not yet finished, oldest first. */
  private readonly writes: Promise<void>[] = [];
  /** Bytes written to the store by this packer (what the repository grew by). */
  bytesWritten = 0;
  packsWritten = 0;

  constructor(
    private readonly storage: Storage,
    private readonly keyring: Keyring,
    private readonly catalog: Catalog,
    private readonly targetSize = DEFAULT_PACK_SIZE,
  ) {}

  /** True when the block is stored or waiting to be. */
  has(id: Buffer): boolean {
    return this.pendingIds.has(id.toString('hex')) || this.catalog.hasBlock(id);
  }

  markPending(id: Buffer): void {
    this.pendingIds.add(id.toString('hex'));
  }

  async add(id: Buffer, kind: BlobKind, sealed: Buffer, size: number): Promise<void> {
    this.pendingIds.add(id.toString('hex'));
    this.pending.push({ id, kind, sealed, size });
    this.pendingBytes += sealed.length;
    if (this.pendingBytes >= this.targetSize) this.startFlush();
    // One pack may be written while the next fills; beyond that, callers wait.
    while (this.writes.length > 1) await this.writes[0];
  }

  /** Writes the open pack (if any) and waits for every write to finish. */
  async flush(): Promise<void> {
    this.startFlush();
    await this.flushing;
  }

  private startFlush(): void {
    const blobs = this.pending;
    this.pending = [];
    this.pendingBytes = 0;
    const previous = this.flushing;
    this.flushing = (async () => {
      await previous;
      if (blobs.length === 0) return;
      const pack = encodePack(this.keyring, blobs);
      await this.storage.put({ kind: 'pack', name: pack.name }, pack.bytes);
      this.catalog.addPack(pack.name, pack.bytes.length, pack.entries);
      for (const b of blobs) this.pendingIds.delete(b.id.toString('hex'));
      this.bytesWritten += pack.bytes.length;
      this.packsWritten++;
    })();
    const write = this.flushing.finally(() => this.writes.splice(this.writes.indexOf(write), 1));
    write.catch(() => {});
    this.writes.push(write);
  }
}
