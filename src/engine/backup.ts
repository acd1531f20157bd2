/**
 * Backup: walk the sources, store each file as a version (a baseline, or an
 * incremental against the same path in the parent snapshot), store a sealed
 * tree per directory, then commit the snapshot.
 *
 * The main thread reads, chunks and ids blocks; workers compress and seal the
 * new ones; the packer groups them into packs. A file whose size, mtime, ctime
 * and inode match the parent is not read: its version is one ref to the
 * previous version. Nothing is visible to readers until the snapshot commits;
 * blocks stored before an interruption are indexed and reused next time.
 */
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { Chunker } from '../chunker/fastcdc.js';
import { StrataError, usageError } from '../errors.js';
import type { Packer } from '../repo/packer.js';
import type { Repository } from '../repo/repository.js';
import { ExcludeMatcher } from '../util/glob.js';
import { osPath, readNames } from '../util/names.js';
import { SealPool } from '../workers/pool.js';
import { commitRecord, findSnapshot, metaAad, Snapshot, type SnapshotMeta } from './snapshot.js';
import { windowBytes } from './aligned.js';
import { NO_VERSIONS, VersionBatch } from './versions.js';
import { parseWhen } from '../util/when.js';
import { describe, emptyResult, type BackupContext, type BackupOptions, type BackupProgress, type BackupResult } from './backup-context.js';
import { BlockSink } from './block-sink.js';
import { FileSaver } from './backup-file.js';
import { SCAN_AFTER, TreeWalker } from './backup-walk.js';
import { TreeScan } from './backup-scan.js';
import { buildPlan, normalizeSources, parseMarker, symlinkOnTheWay, type Marker } from './backup-sources.js';
import { DatasetCollector, manifestEntries } from './manifest.js';

export type { BackupOptions, BackupProgress, BackupResult, FileChange } from './backup-context.js';
export { CACHEDIR_TAG } from './backup-sources.js';

const READ_SIZE = 1024 * 1024;
/** zstd's highest level. */
export const MAX_LEVEL = 19;

export async function backup(repo: Repository, opts: BackupOptions): Promise<BackupResult> {
  const run = new BackupRun(repo, opts);
  return run.run();
}

/** One backup: takes the lease, begins the snapshot, walks the sources, then seals and commits the record. */
/** Files up to this size are read, cut and hashed by the scan, off the main thread. */
const SCAN_READS = 128 * 1024;
/** Bytes of them read ahead of the walk at most. */
const SCAN_READ_AHEAD = 32 * 1024 * 1024;

class BackupRun {
  private readonly started = performance.now();
  private readonly host: string;
  private readonly sources: string[];
  private readonly excludes: ExcludeMatcher;
  private readonly markers: Marker[];
  private pool?: SealPool;
  private scan?: TreeScan;
  private sink?: BlockSink;
  private readonly packer: Packer;
  private parent?: Snapshot;
  private readonly id = randomBytes(32).toString('hex');
  private readonly time: number;
  private readonly r: BackupResult;
  private readonly progress: BackupProgress = { files: 0, bytesRead: 0, bytesDone: 0 };

  constructor(
    private readonly repo: Repository,
    private readonly opts: BackupOptions,
  ) {
    if (opts.paths.length === 0) throw usageError('backup needs at least one PATH');
    if (opts.compressionLevel !== undefined && !(Number.isInteger(opts.compressionLevel) && opts.compressionLevel >= 0 && opts.compressionLevel <= MAX_LEVEL)) {
      throw usageError(`compression level ${opts.compressionLevel}: use 0 (off) to ${MAX_LEVEL}`);
    }
    if (opts.stdinPath !== undefined && (!path.posix.isAbsolute(opts.stdinPath) || opts.stdinPath === '/' || opts.paths.length !== 1 || path.resolve(opts.paths[0]!) !== opts.stdinPath)) {
      throw usageError('standard input is backed up alone, as one file at an absolute path');
    }
    this.host = opts.host ?? os.hostname();
    this.sources = normalizeSources(opts.paths);
    this.excludes = new ExcludeMatcher(opts.excludes ?? [], opts.iexcludes ?? []);
    this.markers = (opts.excludeIfPresent ?? []).map(parseMarker);
    this.packer = repo.newPacker();
    this.time = opts.time ?? Date.now();
    this.r = emptyResult(this.id, null, this.time);
  }

  /** The zstd level of this backup's new blocks. */
  private get level(): number {
    return this.opts.compressionLevel ?? this.repo.compressionLevel;
  }

  /** Sources, files and directories that could not be read: the snapshot records how many. */
  private unreadable = 0;

  private warn(message: string, incomplete: boolean): void {
    this.r.warnings.push(message);
    if (incomplete) {
      this.r.incomplete = true;
      this.unreadable++;
    }
    this.opts.onWarning?.(message);
  }

  async run(): Promise<BackupResult> {
    const { repo, opts } = this;
    const present: string[] = [];
    for (const p of new Set(opts.paths.map((p) => path.resolve(p)))) {
      if (p === opts.stdinPath) {
        present.push(p);
        continue;
      }
      try {
        const st = await fs.lstat(p);
        // Paths are stored as given and walked from / without following links: a source
        // reached through a symlink would be stored as that link and nothing below it.
        const through = await symlinkOnTheWay(p);
        if (through) {
          this.warn(`skipping source ${p}: it is reached through the symlink ${through.link} (-> ${through.target}); back up ${await fs.realpath(p)} instead`, true);
          continue;
        }
        if (st.isSymbolicLink()) this.warn(`source ${p} is a symlink: stored as a link, not followed; back up ${await fs.realpath(p).catch(() => 'its target')} for what it points to`, true);
        if (this.sources.includes(p)) present.push(p);
      } catch (e) {
        this.warn(`cannot read source ${p}: ${describe(e)}`, true);
      }
    }
    if (present.length === 0) throw new StrataError('no_sources', 'none of the source paths can be read; nothing backed up');

    // The workers start first: they boot while the lease is taken and the snapshot begun. The scan
    // first of all: the walk begins with what it finds, the sealers are needed only later.
    this.scan = new TreeScan(present.filter((p) => p !== opts.stdinPath), {
      excludes: opts.excludes ?? [],
      iexcludes: opts.iexcludes ?? [],
      markers: this.markers,
      oneFileSystem: opts.oneFileSystem === true,
      xattrs: !opts.noXattrs,
      read: { idKey: repo.keyring.idKey, gear: repo.gear, chunker: repo.chunker, maxFile: SCAN_READS, aheadBytes: SCAN_READ_AHEAD },
      // A core goes to the scan while it runs (a tree of small files on 2 cores: 3 threads take 8% less
      // time than 4), then to the sealer in reserve if the others fall behind (large files: compression is the work).
      onStart: () => {
        this.pool?.reserve();
        void this.scan?.ended.then(() => this.pool?.spareCore());
      },
    });
    this.pool = new SealPool(repo.keyring, this.level, repo.chunker.max);
    try {
      this.sink = new BlockSink(repo, this.level, this.packer, this.pool, this.r, opts.signal, (m, incomplete) => this.warn(m, incomplete), opts.dryRun);
      const lineage = repo.keyring.lineageId(this.host, this.sources);
      // The parent is chosen as the lease is taken: a forget then sees it in use and keeps it.
      const chosen = opts.parent ? (await findSnapshot(repo, parseWhen(opts.parent))).row.seq : 'auto';
      const { lease, parent } = await repo.service.startBackup(lineage, this.time, chosen);
      if (parent) this.parent = new Snapshot(repo, parent);
      // Files changed since the parent began are read by the scan (a second early: clocks tick coarsely); with no parent, or --force, all.
      this.scan.readFrom(parent && !opts.force ? (BigInt(parent.time) - 1000n) * 1_000_000n : undefined);
      // A parent as large as a tree the scan pays for: the scan starts now, not once the walk has
      // gone SCAN_AFTER entries in (it skips what the walk entered, and the walk reads that itself).
      const parentStats = this.parent?.meta.stats;
      if (parentStats && parentStats.files + parentStats.dirs >= SCAN_AFTER) this.scan.start();
      try {
        return await this.runLeased(present, lineage, lease);
      } finally {
        await repo.service.endLease(lease);
      }
    } finally {
      await Promise.all([this.pool.close(), this.scan.close()]);
    }
  }

  private async runLeased(present: string[], lineage: Buffer, leaseId: string): Promise<BackupResult> {
    const { repo, opts } = this;
    const service = repo.service;
    this.r.parent = this.parent?.id ?? null;
    if (opts.estimate) await this.estimate(present);

    const meta: SnapshotMeta = { host: this.host, tags: opts.tags ?? [], paths: this.sources, ...(this.parent ? { parent: this.parent.id } : {}), ...(opts.noXattrs ? {} : { xattrs: true as const }) };
    // The snapshot inherits its parent's versions: only changed files get rows, and removed ones tombstones.
    const dry = opts.dryRun === true;
    const seq = dry ? 0 : await service.beginSnapshot(this.id, this.time, lineage, repo.keyring.sealJson(meta, metaAad(this.id)), this.parent?.row.seq ?? null, leaseId, this.parent !== undefined);
    const sink = this.sink!;
    const pool = this.pool!;
    const versions = dry
      ? NO_VERSIONS
      : new VersionBatch(service, repo.keyring, this.packer, this.level, {
          maxBlock: repo.chunker.max,
          seal: (id, plain) => sink.storeSealedElsewhere(id, 'toc', plain),
        });
    const ctx: BackupContext = {
      repo,
      opts,
      r: this.r,
      progress: this.progress,
      parent: this.parent,
      seq,
      id: this.id,
      warn: (m, incomplete) => this.warn(m, incomplete),
      report: () => this.report(),
      checkAbort: () => sink.checkAbort(),
      ...(dry ? {} : { datasets: new DatasetCollector(manifestEntries(this.parent?.meta.datasets), { keyring: repo.keyring, read: (id) => repo.readBlob(id, 'tree'), write: (plain) => sink.storeBlob('tree', plain), checkAbort: () => sink.checkAbort() }) }),
    };
    const chunker = new Chunker(repo.chunker, repo.gear, windowBytes(READ_SIZE, repo.chunker.max));
    const files = new FileSaver(ctx, sink, pool, versions, chunker);
    const walker = new TreeWalker(ctx, sink, files, versions, this.excludes, this.markers, this.scan);
    try {
      await sink.chooseDictionary();
      const plan = buildPlan(present);
      const rootStat = await fs.lstat('/', { bigint: true });
      const root = await walker.saveNode('/', '/', rootStat, this.parent?.root, plan);
      walker.finish();
      await sink.drain();
      if (dry) {
        this.r.dryRun = true;
        this.r.bytesAdded = sink.newBytes;
        this.r.durationMs = Math.round(performance.now() - this.started);
        return this.r;
      }
      await versions.flush();
      await this.packer.flush();
      // What the data, trees and TOCs added; the record's own small pack comes on top.
      const stats = { files: this.r.filesNew + this.r.filesChanged + this.r.filesUnchanged, dirs: this.r.dirs, bytes: this.r.bytesTotal, bytesAdded: this.packer.bytesWritten };
      const found = await ctx.datasets!.entries(
        async (p) => (await this.parent?.lookup(p))?.type === 'file',
        (ids) => ids.forEach((id) => sink.blobs.add(id.toString('hex'))),
      );
      if (ctx.datasets!.indexesMade > 0) this.r.itemIndexes = { made: ctx.datasets!.indexesMade, bytesScanned: ctx.datasets!.indexScanned };
      // What the record and the sealed meta add when there is any: the count of what could not be read, and the manifest.
      const extra = { ...(this.unreadable > 0 ? { unreadable: this.unreadable } : {}), ...(found.length > 0 ? { datasets: found } : {}) };
      await commitRecord(repo, { seq, record: { id: this.id, time: this.r.time, root: root!.tree!, ...meta, stats, ...extra }, sink, packer: this.packer });
      this.r.bytesAdded = this.packer.bytesWritten;
    } catch (e) {
      await sink.keepStored();
      throw e;
    }
    this.r.durationMs = Math.round(performance.now() - this.started);
    return this.r;
  }

  private async estimate(sources: string[]): Promise<void> {
    let bytes = 0;
    let files = 0;
    const visit = async (p: string): Promise<void> => {
      if (this.opts.signal?.aborted) return;
      let st;
      try {
        st = await fs.lstat(osPath(p));
      } catch {
        return;
      }
      if (st.isFile()) {
        bytes += st.size;
        files++;
      } else if (st.isDirectory()) {
        let names: string[] = [];
        try {
          names = await readNames(p);
        } catch {
          return;
        }
        for (const n of names) {
          const child = path.join(p, n);
          if (!this.excludes.excludes(child, n)) await visit(child);
        }
      }
    };
    for (const s of sources) await visit(s);
    this.progress.bytesTotal = bytes;
    this.progress.filesTotal = files;
  }

  private report(): void {
    this.opts.onProgress?.(this.progress);
  }
}
