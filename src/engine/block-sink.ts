/**
 * Where a backup's blocks go: each new block is sealed on a worker and
 * packed, as many at a time as the pool has slots and bytes for (see
 * SealPool.slots and budget); one already stored (or on its way) is only
 * counted. The walk's trees go to the workers too when they fit a slot;
 * larger trees and the snapshot record are sealed here. A block
 * that fails fails the backup: `failed` settles, and `drain` rethrows it.
 */
import { interrupted } from '../errors.js';
import { encodeBlock } from '../repo/blockcodec.js';
import { DictionaryBuilder } from '../repo/dictionary.js';
import type { BlobKind } from '../catalog/catalog.js';
import type { Packer } from '../repo/packer.js';
import type { Repository } from '../repo/repository.js';
import type { SealPool } from '../workers/pool.js';
import { describe, type BackupResult } from './backup-context.js';

export class BlockSink {
  private readonly inFlight = new Set<Promise<void>>();
  /** Plain bytes of the blocks in flight. */
  private inFlightBytes = 0;
  /** Callers waiting for room: woken, each looks again, as a block lands. */
  private roomWaiters: (() => void)[] = [];
  private failure: unknown;
  private signalFailure!: () => void;
  /** Settles when a block fails (so nothing waits for ids that will never come). */
  readonly failed = new Promise<void>((resolve) => (this.signalFailure = resolve));
  /** Trees and the record this snapshot uses (hex ids). */
  readonly blobs = new Set<string>();
  /** While a new dictionary is being stored. */
  private dictionaryStored?: Promise<void>;

  constructor(
    private readonly repo: Repository,
    /** zstd level of new blocks (0: none). */
    private readonly level: number,
    private readonly packer: Packer,
    private readonly pool: SealPool,
    private readonly r: BackupResult,
    private readonly signal: AbortSignal | undefined,
    private readonly warn: (message: string, incomplete: boolean) => void,
    /** A dry run: blocks are counted (`newBytes`, before compression), nothing is sealed or written. */
    private readonly dryRun = false,
  ) {}

  /** Of a dry run: the bytes of the new blocks, as they would go to the workers (before compression). */
  newBytes = 0;

  /** Throws if the backup was interrupted or a block failed. */
  checkAbort(): void {
    if (this.signal?.aborted) throw interrupted();
    if (this.failure) throw this.failure;
  }

  /** Whether the repository has the block, or it is on its way there. */
  has(id: Buffer): boolean {
    return this.packer.has(id);
  }

  hasMany(ids: readonly Buffer[]): boolean[] {
    return this.packer.hasMany(ids);
  }

  /**
   * Blocks are compressed with the repository's dictionary; a repository
   * without one gets one made from this backup's first text-like blocks.
   */
  async chooseDictionary(): Promise<void> {
    const { repo } = this;
    // A repository's dictionary is made from and for compressed blocks.
    if (!repo.dictionariesAllowed || this.level === 0 || this.dryRun) return;
    const dict = await repo.dictionary();
    if (dict) return this.pool.useDictionary(dict);
    this.pool.sampleFor(new DictionaryBuilder(), (bytes) => {
      // Workers get it only once it is stored: no block may name a dictionary the repository lacks.
      const stored = repo.addDictionary(bytes).then(
        (d) => this.pool.useDictionary(d),
        (e: unknown) => this.warn(`no compression dictionary stored (blocks are compressed without one): ${describe(e)}`, false),
      );
      // New blocks wait for it (one short pause in a repository's life), or most of a small first backup would go without.
      this.dictionaryStored = stored.finally(() => (this.dictionaryStored = undefined));
      this.track(stored);
    });
  }

  async storeBlob(kind: 'tree' | 'snapshot', plain: Buffer): Promise<Buffer> {
    const id = this.repo.keyring.blockId(plain);
    this.blobs.add(id.toString('hex'));
    if (this.dryRun) return id;
    if (!this.packer.has(id)) await this.packer.add(id, kind, encodeBlock(this.repo.keyring.encKey, id, plain, this.level), plain.length);
    return id;
  }

  /**
   * A directory's tree of the walk: sealed on a worker like a block when it
   * fits a slot (the walk's trees all come before drain), here otherwise.
   */
  async storeTree(plain: Buffer): Promise<Buffer> {
    if (plain.length > this.pool.maxBlock) return this.storeBlob('tree', plain);
    const id = this.repo.keyring.blockId(plain);
    this.blobs.add(id.toString('hex'));
    if (!this.dryRun) await this.storeSealedElsewhere(id, 'tree', plain);
    return id;
  }

  /** Ids a block and, if the repository lacks it, has it sealed and packed. */
  async storeChunk(chunk: Buffer, id: Buffer = this.repo.keyring.blockId(chunk)): Promise<Buffer> {
    if (this.packer.has(id)) {
      this.r.blocksReused++;
      return id;
    }
    this.r.blocksNew++;
    this.packer.markPending(id);
    if (this.dryRun) {
      this.newBytes += chunk.length;
      return id;
    }
    const size = chunk.length;
    await this.room(size);
    this.track(this.pool.seal(id, chunk, 'data', (_id, sealed) => this.packer.add(id, 'data', sealed, size)), size);
    return id;
  }

  /** Has a worker compress and seal a blob whose id is known, unless stored; returns once it is on its way. */
  async storeSealedElsewhere(id: Buffer, kind: BlobKind, plain: Buffer): Promise<void> {
    if (this.dryRun || this.packer.has(id)) return;
    this.packer.markPending(id);
    await this.room(plain.length);
    this.track(this.pool.seal(id, plain, kind, (_id, sealed) => this.packer.add(id, kind, sealed, plain.length)), plain.length);
  }

  /**
   * Has a worker id, compress and seal a block, which is stored unless the
   * repository (or this run) already has it. Returns once the block is on
   * its way; its id comes later, with the worker's answer.
   */
  async storeNewChunk(chunk: Buffer, onId: (id: Buffer) => void): Promise<void> {
    if (this.dryRun) return onId(await this.storeChunk(chunk));
    const size = chunk.length;
    await this.room(size);
    this.track(
      this.pool.seal(null, chunk, 'data', async (blockId, sealed) => {
        onId(blockId);
        if (this.packer.has(blockId)) {
          this.r.blocksReused++;
          return;
        }
        this.r.blocksNew++;
        this.packer.markPending(blockId);
        await this.packer.add(blockId, 'data', sealed, size);
      }),
      size,
    );
  }

  /**
   * After a failed snapshot: the blocks already sealed are packed and
   * indexed all the same (errors of its own swallowed, the first one is the
   * caller's), so the next backup or copy reuses them.
   */
  async keepStored(): Promise<void> {
    await this.drain().catch(() => {});
    await this.packer.flush().catch(() => {});
  }

  /**
   * Waits until a block of `bytes` may go to the workers: the pool has a slot
   * for it and the bytes in flight stay within its budget (one block always
   * goes), and no new dictionary is being stored.
   */
  private async room(bytes: number): Promise<void> {
    while (this.inFlight.size >= this.pool.slots || (this.inFlight.size > 0 && this.inFlightBytes + bytes > this.pool.budget)) {
      this.pool.behind();
      await new Promise<void>((resolve) => this.roomWaiters.push(resolve));
    }
    if (this.dictionaryStored) await this.dictionaryStored;
    this.checkAbort();
  }

  /** Holds `work` (a block of `bytes` on its way, or other work the sink must wait for) until it settles. */
  track(work: Promise<void>, bytes = 0): void {
    this.inFlightBytes += bytes;
    const task: Promise<void> = work
      .catch((e: unknown) => {
        this.failure ??= e;
        this.signalFailure();
      })
      .finally(() => {
        this.inFlight.delete(task);
        this.inFlightBytes -= bytes;
        const waiters = this.roomWaiters;
        this.roomWaiters = [];
        for (const wake of waiters) wake();
      });
    this.inFlight.add(task);
  }

  async drain(): Promise<void> {
    // Tasks never reject (track catches): all of them, then any added meanwhile.
    while (this.inFlight.size > 0) await Promise.all(this.inFlight);
    if (this.failure) throw this.failure;
  }
}
