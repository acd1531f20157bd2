/**
 * What the parts of a backup share: the repository, the options, the result
 * being counted, the parent snapshot and the snapshot being made, and how to
 * warn, report progress and stop.
 */
import type { Repository } from '../repo/repository.js';
import type { Snapshot } from './snapshot.js';
import type { DatasetCollector } from './manifest.js';

export interface BackupOptions {
  paths: string[];
  tags?: string[];
  /** Snapshot time in ms since the epoch (default: now). */
  time?: number;
  excludes?: string[];
  /** Exclude patterns matched without regard to case. */
  iexcludes?: string[];
  /** A directory holding a file of one of these names is left out ("NAME", or "NAME:TEXT" when the file must start with TEXT). */
  excludeIfPresent?: string[];
  /** Files larger than this many bytes are left out. */
  excludeLargerThan?: number;
  /** Directories on another file system than their parent's (mount points) are stored empty. */
  oneFileSystem?: boolean;
  /** Snapshot id (or prefix) to compare against instead of the automatic parent. */
  parent?: string;
  host?: string;
  signal?: AbortSignal;
  onProgress?: (p: BackupProgress) => void;
  onWarning?: (message: string) => void;
  /** Walk the sources once first to know the total (for an ETA). */
  estimate?: boolean;
  /** Read every file, even those whose metadata says unchanged (after check --repair). */
  force?: boolean;
  /** zstd level for this backup's new blocks (0: stored uncompressed); default, the repository's. */
  compressionLevel?: number;
  /** Back up standard input as the file at this absolute path (then the only path). */
  stdinPath?: string;
  /** Read and compare as a backup does, but store nothing: no block, no tree, no snapshot. */
  dryRun?: boolean;
  /** Extended attributes are not read (nor kept from the parent). */
  noXattrs?: boolean;
  /** Each file stored anew (new or changed) and each file of the parent no longer there (removed), as found. */
  onFile?: (change: FileChange, path: string) => void;
}

export type FileChange = 'new' | 'changed' | 'removed';

export interface BackupProgress {
  files: number;
  bytesRead: number;
  bytesDone: number;
  bytesTotal?: number;
  filesTotal?: number;
}

/** A run's result before anything is counted. */
export function emptyResult(snapshot: string, parent: string | null, time: number): BackupResult {
  return {
    snapshot,
    parent,
    time: new Date(time).toISOString(),
    filesNew: 0,
    filesChanged: 0,
    filesUnchanged: 0,
    filesExcluded: 0,
    dirsExcluded: 0,
    dirs: 0,
    specials: 0,
    xattrsLeftOut: 0,
    bytesRead: 0,
    bytesAdded: 0,
    bytesTotal: 0,
    blocksNew: 0,
    blocksReused: 0,
    dataEntries: 0,
    refEntries: 0,
    warnings: [],
    incomplete: false,
    durationMs: 0,
  };
}

export interface BackupResult {
  snapshot: string;
  parent: string | null;
  time: string;
  filesNew: number;
  filesChanged: number;
  filesUnchanged: number;
  dirs: number;
  /** Files left out by --exclude-larger-than, and directories by --exclude-if-present or --exclude-caches. */
  filesExcluded: number;
  dirsExcluded: number;
  /** FIFOs and device nodes stored. */
  specials: number;
  /** Extended attributes that could not be read or were over the bound of one entry (each a warning; exit 3). */
  xattrsLeftOut: number;
  bytesRead: number;
  /** Bytes the repository grew by (packs written). */
  bytesAdded: number;
  /** Logical size of all files in the snapshot. */
  bytesTotal: number;
  blocksNew: number;
  blocksReused: number;
  dataEntries: number;
  refEntries: number;
  warnings: string[];
  /** True when some source could not be read (exit code 3). */
  incomplete: boolean;
  durationMs: number;
  /** Item indexes sealed for mailboxes and tar archives stored, and the bytes of them scanned (what their parents' indexes did not cover). Absent when none was made. */
  itemIndexes?: { made: number; bytesScanned: number };
  /** A dry run: nothing was stored, `snapshot` is the id it would have had, and `bytesAdded` counts new blocks before compression. */
  dryRun?: true;
}

export interface BackupContext {
  readonly repo: Repository;
  readonly opts: BackupOptions;
  /** Counted as the backup goes. */
  readonly r: BackupResult;
  readonly progress: BackupProgress;
  /** The snapshot compared against, if any. */
  readonly parent: Snapshot | undefined;
  /** The snapshot being made: its number in the catalog, and its id. */
  readonly seq: number;
  readonly id: string;
  /** A source that could not be read (`incomplete`: exit 3), or something to say. */
  warn(message: string, incomplete: boolean): void;
  report(): void;
  /** Throws if the backup was interrupted or a block failed. */
  checkAbort(): void;
  /** Told of each file stored, for the manifest (absent in a dry run). */
  readonly datasets?: DatasetCollector;
}

/** A part of a backup: the context's members, as its own. */
export abstract class BackupPart {
  protected readonly repo: Repository;
  protected readonly opts: BackupOptions;
  protected readonly r: BackupResult;
  protected readonly progress: BackupProgress;
  protected readonly parent: Snapshot | undefined;
  protected readonly seq: number;
  protected readonly id: string;

  constructor(protected readonly ctx: BackupContext) {
    ({ repo: this.repo, opts: this.opts, r: this.r, progress: this.progress, parent: this.parent, seq: this.seq, id: this.id } = ctx);
  }

  protected warn(message: string, incomplete: boolean): void {
    this.ctx.warn(message, incomplete);
  }

  protected report(): void {
    this.ctx.report();
  }

  protected checkAbort(): void {
    this.ctx.checkAbort();
  }
}

export function describe(e: unknown): string {
  const code = (e as NodeJS.ErrnoException).code;
  if (code === 'ENOENT') return 'no such file or directory (vanished?)';
  if (code === 'EACCES' || code === 'EPERM') return 'permission denied';
  if (code === 'ELOOP') return 'is a symlink now';
  return (e as Error).message;
}