/**
 * A file in a backup: inherited from the parent snapshot when its stats are
 * those of the parent's (not read), read and found the same (no row, no
 * sealed TOC), or stored as a new version: a baseline, or an incremental of
 * data entries for new blocks and reference blocks into the parent version.
 */
import * as fsSync from 'node:fs';
import { addAbortSignal } from 'node:stream';
import { constants } from 'node:fs';
import type { Chunker } from '../chunker/fastcdc.js';
import { interrupted, StrataError } from '../errors.js';
import type { VersionRow } from '../catalog/catalog.js';
import { GcPacer } from '../util/gc.js';
import { osPath } from '../util/names.js';
import type { EntryStat } from '../util/stat.js';
import type { SealPool } from '../workers/pool.js';
import { sameFile, type ReadBuffer } from '../workers/same-file.js';
import { diffBlocks } from '../catalog/toc.js';
import { alignedBlocks, freshChunks, SourceReadError, streamChunks } from './aligned.js';
import { BlockList, contentMark, ID_BYTES } from '../catalog/blocklist.js';
import { entryOfStat, type TreeEntry } from './tree.js';
import type { SealedEntry, VersionWriter } from './versions.js';
import type { TargetVersion } from '../catalog/toc-rows.js';
import { verifier } from './verify.js';
import { BackupPart, describe, type BackupContext } from './backup-context.js';
import type { BlockSink } from './block-sink.js';
import { DatasetCollector } from './manifest.js';
import { HEAD_BYTES } from './datasets.js';

/**
 * A small file the scan read whole, cut and hashed (workers/scanner.ts),
 * unchanged while it was read: its bytes, and each block's length and id.
 */
export interface PreRead {
  bytes: Buffer;
  lengths: Uint32Array;
  /** ID_BYTES per block. */
  ids: Uint8Array;
}

/** Whether the scan's read of a file found exactly the blocks of `list`, a version of `size` bytes. */
export function preReadIs(pre: PreRead, list: BlockList, size: number): boolean {
  if (pre.bytes.length !== size || list.size !== size || list.length !== pre.lengths.length) return false;
  for (let j = 0; j < list.length; j++) {
    const id = list.id(j);
    if (!id || list.end(j) - list.start(j) + 1 !== pre.lengths[j] || !id.equals(pre.ids.subarray(j * ID_BYTES, (j + 1) * ID_BYTES))) return false;
  }
  return true;
}

/** A file's path id and its parent version, looked up with its directory's other files. */
export interface KnownVersion {
  /** Its path's keyed id; none when named by the parent's entry (see entrySize), until the file turns out changed. */
  pathId?: Buffer;
  row: VersionRow | undefined;
  /** The row's blocks, when looked up with others (a small file's). */
  blocks?: BlockList;
  /** Whether the file holds exactly those blocks, when a worker was asked (see askSame). */
  same?: Promise<boolean>;
  /**
   * The parent's tree entry names the version's one block (format 3), of
   * this size: `blocks` is that block, and `row` was not looked up (it is,
   * if the file turns out changed).
   */
  entrySize?: number;
}

/**
 * Files checked together (askSame). A group of less than SAME_BYTES is read
 * here: a round trip to a worker costs this thread more than reading a
 * dozen small files (a source tree unpacked afresh, 5,500 such files: 1.39 s
 * against 1.62 s, medians of 6 alternating runs). A group that reached
 * SAME_BYTES goes to a worker, so a long read never holds this thread up.
 */
const SAME_FILES = 64;
const SAME_BYTES = 1024 * 1024;
/**
 * New files up to this size are hashed here: a worker would hash them off
 * this thread, but the file's TOC would then wait a round trip for the ids,
 * and in a tree of small files those waits add up to most of the time.
 */
const HASH_HERE = 4 * 1024 * 1024;

export class FileSaver extends BackupPart {
  constructor(
    ctx: BackupContext,
    private readonly sink: BlockSink,
    private readonly pool: SealPool,
    private readonly versions: VersionWriter,
    /** Its read window is shared by every file (they are read one at a time). */
    private readonly chunker: Chunker,
  ) {
    super(ctx);
  }

  private readonly gc = new GcPacer(4 * 1024 * 1024);
  private readonly scratch: ReadBuffer = { buf: Buffer.allocUnsafe(0) };

  /** True when the parent has this file as it is now (same size, times and inode): it is inherited as it was. */
  unchangedSince(prev: TreeEntry | undefined, st: EntryStat): boolean {
    return (
      !this.opts.force &&
      prev?.type === 'file' &&
      st.isFile() &&
      prev.size === Number(st.size) &&
      prev.mtimeNs === st.mtimeNs.toString() &&
      prev.ctimeNs === st.ctimeNs.toString() &&
      prev.ino === st.ino.toString()
    );
  }

  /** Counts files inherited unread from the parent snapshot (`sized` of them not empty, each one ref). */
  inherited(files: number, sized: number, bytes: number): void {
    this.r.filesUnchanged += files;
    this.r.refEntries += sized;
    this.r.bytesTotal += bytes;
    this.progress.bytesDone += bytes;
    this.progress.files += files;
    this.report();
  }

  /**
   * The path ids of files and their parent versions, in one question to the
   * catalog (sorted lookups in one read transaction; over a network, one
   * round trip) instead of one per file.
   */
  /** The parent version of a file whose parent entry names its one block (see KnownVersion.entrySize): no catalog lookup. */
  fromEntry(abs: string, prev: TreeEntry & { block: string }): KnownVersion {
    const blocks = new BlockList(1);
    blocks.push(Buffer.from(prev.block, 'hex'), prev.size);
    return { row: undefined, blocks, entrySize: prev.size };
  }

  async parentVersions(paths: readonly string[]): Promise<KnownVersion[]> {
    const pathIds = paths.map((p) => this.repo.keyring.pathId(p));
    const rows = this.parent && paths.length > 0 ? await this.repo.service.parentVersions(this.parent.row.seq, pathIds) : [];
    return pathIds.map((pathId, i) => ({ pathId, row: rows[i] }));
  }

  /** `pre`: the file as the scan read it, if it did. */
  async save(abs: string, name: string, st: EntryStat, prev: TreeEntry | undefined, known?: KnownVersion, pre?: PreRead): Promise<TreeEntry | undefined> {
    const { repo } = this;
    const entry = entryOfStat(name, 'file', st);
    if (this.unchangedSince(prev, st)) {
      // Inherited from the parent snapshot: no row in the catalog, nothing sealed.
      this.inherited(1, entry.size > 0 ? 1 : 0, entry.size);
      // Its block, content mark and TOC id go along: readers check an inherited version by them or by stats.
      // The entry is this file's own, made above: completed in place (a copy per file costs a tree of small files).
      if (prev?.block) {
        entry.block = prev.block;
        return entry;
      }
      if (prev?.parentContent) entry.parentContent = prev.parentContent;
      if (prev?.toc) entry.toc = prev.toc;
      return entry;
    }
    if (known?.same && (await known.same)) return this.sameAsParent(entry, known.blocks!, true, prev);
    // Not the parent's bytes after all: its version is looked up as any changed file's.
    const looked = known?.pathId ? known : (await this.parentVersions([abs]))[0]!;
    // Every version parentVersions looks up has its path id.
    const { row: prevRow, blocks: prevBlocks } = looked;
    const pathId = looked.pathId!;
    const target: TargetVersion | undefined = prevRow && this.parent ? { id: prevRow.id, snapshotId: this.parent.id, depth: prevRow.depth } : undefined;
    const previous = prevRow && prevRow.size > 0 ? (prevBlocks ?? (await repo.service.blockList(prevRow.id, prevRow.size))) : new BlockList(1);
    if (abs === this.opts.stdinPath) this.ctx.datasets?.replaced(abs);
    const blocks =
      abs === this.opts.stdinPath
        ? await this.readStdin(abs)
        : pre && !DatasetCollector.detects(pre.bytes.subarray(0, HEAD_BYTES))
          ? await this.storePre(abs, pre)
          : await this.readFile(abs, prevRow ? previous : undefined);
    if (!blocks) return undefined;
    entry.size = blocks.size;
    let entries = diffBlocks(previous, blocks);
    if (prevRow && this.parent && !this.opts.force && blocks.size === prevRow.size && entries.dataEntries === 0 && entries.refEntries <= 1) {
      return this.sameAsParent(entry, blocks, false, prev);
    }
    // Refs are sealed for good: they are made against the parent as its sealed TOC says, not as the catalog does.
    const sealed = entries.refEntries > 0 && prevRow ? await this.sealedParent(abs, pathId, prevRow, prev) : undefined;
    if (sealed) entries = diffBlocks(sealed.blocks, blocks);
    else if (entries.refEntries > 0) entries = diffBlocks(new BlockList(1), blocks);
    if (prevRow) this.r.filesChanged++;
    else this.r.filesNew++;
    this.opts.onFile?.(prevRow ? 'changed' : 'new', abs);
    this.r.dataEntries += entries.dataEntries;
    this.r.refEntries += entries.refEntries;
    this.r.bytesTotal += entry.size;
    this.progress.files++;
    this.report();
    // One block: the entry names it and is the file's truth; no sealed TOC (format 3).
    const one = this.repo.blocksInEntries && entries.length === 1 && entries.dataEntries === 1 ? blocks.id(0) : null;
    const toc = await this.versions.add({
      snapshotSeq: this.seq,
      snapshotId: this.id,
      pathId,
      size: entry.size,
      entries,
      target: entries.refEntries > 0 ? target : undefined,
      targetEntries: entries.refEntries > 0 ? sealed?.entries : undefined,
      targetOwner: entries.refEntries > 0 ? sealed?.owner : undefined,
      where: abs,
      blocks,
      inEntry: one !== null,
    });
    if (one) entry.block = one.toString('hex');
    else if (toc && this.repo.blocksInEntries) entry.toc = toc.toString('hex');
    return entry;
  }

  /**
   * A file read again (its stats changed: a new inode, a touch) that holds
   * its parent version's blocks: that version serves, with no row and no
   * sealed TOC. Its entry carries the content mark readers check it by.
   */
  private sameAsParent(entry: TreeEntry & { size: number }, blocks: BlockList, readElsewhere: boolean, prev?: TreeEntry): TreeEntry {
    this.r.filesUnchanged++;
    if (entry.size > 0) this.r.refEntries++;
    this.r.bytesTotal += entry.size;
    if (readElsewhere) {
      this.r.bytesRead += entry.size;
      this.r.blocksReused += blocks.length;
      this.progress.bytesRead += entry.size;
      this.progress.bytesDone += entry.size;
    }
    this.progress.files++;
    this.report();
    const one = this.repo.blocksInEntries && blocks.length === 1 ? blocks.id(0) : null;
    if (one) {
      entry.block = one.toString('hex');
      return entry;
    }
    // The mark proves the version this file's whatever becomes of its sealed TOC; the TOC id, when the parent's entry names it, spares readers the mark's walk.
    entry.parentContent = contentMark(this.repo.keyring, blocks);
    if (prev?.toc && this.repo.blocksInEntries) entry.toc = prev.toc;
    return entry;
  }

  /**
   * Files whose stats changed but not their size (unpacked afresh, touched)
   * are read and hashed along their parent versions' blocks, a group at a
   * time, here or on a worker (see SAME_BYTES): each file's `same` says
   * whether it holds exactly those bytes (workers/same-file.ts). One that does
   * not (or could not be checked) is read as any changed file is.
   */
  askSame(files: readonly { abs: string; st: EntryStat; known?: KnownVersion; pre?: PreRead }[]): void {
    const asked: { abs: string; st: EntryStat; known: KnownVersion & { blocks: BlockList } }[] = [];
    let bytes = 0;
    let blocks = 0;
    const send = () => {
      // Flat typed arrays: a message of many small objects costs this thread more to clone than the worker saves it.
      const stats = new BigInt64Array(asked.length * 4);
      const counts = new Uint32Array(asked.length);
      const lengths = new Uint32Array(blocks);
      const ids = new Uint8Array(blocks * ID_BYTES);
      let k = 0;
      asked.forEach(({ st, known }, i) => {
        stats.set([st.size, st.mtimeNs, st.ctimeNs, st.ino], i * 4);
        const list = known.blocks;
        counts[i] = list.length;
        for (let j = 0; j < list.length; j++, k++) {
          lengths[k] = list.end(j) - list.start(j) + 1;
          ids.set(list.id(j)!, k * ID_BYTES);
        }
      });
      if (bytes < SAME_BYTES) {
        // The same check as a worker's, here.
        let first = 0;
        asked.forEach((a, i) => {
          const end = first + counts[i]!;
          const r = sameFile(this.repo.keyring.idKey, a.abs, stats.subarray(i * 4, i * 4 + 4), lengths.subarray(first, end), ids.subarray(first * ID_BYTES, end * ID_BYTES), this.scratch);
          a.known.same = Promise.resolve(r.same);
          first = end;
        });
      } else {
        const answer = this.pool.same({ paths: asked.map((a) => a.abs), stats, counts, lengths, ids });
        asked.forEach((a, i) => (a.known.same = answer.then((res) => res.results[i] === 1, () => false)));
      }
      asked.length = 0;
      bytes = 0;
      blocks = 0;
    };
    for (const { abs, st, known, pre } of files) {
      if (abs === this.opts.stdinPath) continue;
      const list = known?.blocks;
      const size = known?.row?.size ?? known?.entrySize;
      if (size === undefined || !list || size !== Number(st.size) || list.size !== size) continue;
      let complete = true;
      for (let i = 0; i < list.length && complete; i++) complete = list.hasId(i);
      if (!complete) continue;
      // Read by the scan already: its blocks say.
      if (pre) {
        known!.same = Promise.resolve(preReadIs(pre, list, size));
        continue;
      }
      asked.push({ abs, st, known: known as KnownVersion & { blocks: BlockList } });
      bytes += size;
      blocks += list.length;
      if (asked.length >= SAME_FILES || bytes >= SAME_BYTES) send();
    }
    if (asked.length > 0) send();
  }

  /**
   * The parent version as its sealed TOCs say (checked as a read checks
   * them): its entries, from which the refs sealed now take their roots, and
   * its blocks, against which they are made (a piece of a block has no id, and
   * is not matched). Undefined if that cannot be had: the file is then
   * stored without refs.
   */
  private async sealedParent(abs: string, pathId: Buffer, row: VersionRow, prev: TreeEntry | undefined): Promise<{ entries: readonly SealedEntry[]; blocks: BlockList; owner: string | null } | undefined> {
    if (!this.parent) return undefined;
    try {
      const v = verifier(this.repo);
      const bound = await v.bind(this.parent, abs, pathId, row, prev?.type === 'file' ? prev : undefined);
      const blocks = new BlockList();
      for await (const p of v.expected(bound, 0, bound.truth.size - 1)) blocks.push(p.from === 0 && p.length === p.blockSize ? p.block : null, p.length);
      return { entries: await bound.truth.entries.all(), blocks, owner: bound.truth.owner };
    } catch (e) {
      if (e instanceof StrataError && e.code === 'integrity') {
        this.warn(`${abs}: its version in the parent snapshot cannot be checked against its sealed TOC (${e.message}); stored without references to it`, false);
        return undefined;
      }
      throw e;
    }
  }

  /**
   * Reads and chunks a file, sending new blocks to be sealed; undefined if
   * unreadable. A file seen before is hashed here, so its unchanged blocks
   * cost no compression; a new file is hashed in the workers, off this thread.
   */
  private async readFile(abs: string, previous: BlockList | undefined): Promise<BlockList | undefined> {
    // Synchronous calls: a tree of small files is otherwise bound by the
    // round trips of open, fstat, read and close through the thread pool.
    let fd: number;
    try {
      fd = fsSync.openSync(osPath(abs), constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
    } catch (e) {
      this.warn(`cannot read ${abs}: ${describe(e)}`, true);
      return undefined;
    }
    try {
      const st = fsSync.fstatSync(fd, { bigint: true });
      if (!st.isFile()) {
        this.warn(`skipping ${abs}: no longer a regular file`, false);
        return undefined;
      }
      let blocks: BlockList | undefined;
      try {
        if (previous) blocks = await this.alignedWith(fd, st, previous);
        else blocks = await this.storeFresh(freshChunks(fd, this.chunker, this.counted), Number(st.size) <= HASH_HERE);
      } catch (e) {
        if (!(e instanceof SourceReadError)) throw e;
        this.warn(`cannot read ${abs}: ${describe(e.cause)}`, true);
        return undefined;
      }
      this.checkUnchangedWhileRead(fd, st, abs);
      await this.ctx.datasets?.stored(abs, fd, blocks, st, previous);
      return blocks;
    } finally {
      fsSync.closeSync(fd);
    }
  }

  /**
   * A file the scan read (no dataset: those are read here, to be indexed):
   * its blocks stored as they were cut there.
   */
  private async storePre(abs: string, pre: PreRead): Promise<BlockList> {
    const blocks = new BlockList(pre.lengths.length);
    let at = 0;
    for (let j = 0; j < pre.lengths.length; j++) {
      this.checkAbort();
      const length = pre.lengths[j]!;
      const id = Buffer.from(pre.ids.buffer, pre.ids.byteOffset + j * ID_BYTES, ID_BYTES);
      blocks.push(await this.sink.storeChunk(pre.bytes.subarray(at, at + length), id), length);
      at += length;
    }
    this.counted(at, false);
    this.report();
    this.ctx.datasets?.storedPlain(abs);
    return blocks;
  }

  /** Bytes read: counted, and paced for the collector when read on this thread. */
  private readonly counted = (bytesRead: number, here = true) => {
    this.r.bytesRead += bytesRead;
    // Bytes a worker read cost this thread no memory.
    if (here) this.gc.add(bytesRead);
    this.progress.bytesRead += bytesRead;
    this.progress.bytesDone += bytesRead;
  };

  /** A file seen before, read along its previous version's cuts (aligned.ts): unchanged runs are confirmed, not chunked. */
  private async alignedWith(fd: number, st: fsSync.BigIntStats, previous: BlockList): Promise<BlockList> {
    const ids = this.repo.keyring;
    // Unchanged runs of a large file are read and hashed on the workers, several at once.
    const confirmer = Number(st.size) > HASH_HERE ? { confirm: (start: number, lengths: number[], want: Uint8Array, last: boolean) => this.pool.confirm(fd, start, lengths, want, last, this.repo.chunker), stored: (want: Buffer[]) => this.sink.hasMany(want) } : undefined;
    const blocks = new BlockList();
    for await (const b of alignedBlocks(fd, this.chunker, previous, (d) => ids.blockId(d), this.counted, confirmer)) {
      this.checkAbort();
      if ('run' in b) {
        blocks.pushFrom(previous, b.run.first, b.run.count);
        this.r.blocksReused += b.run.count;
        this.report();
        continue;
      }
      blocks.push(b.id, b.length);
      if (b.data) await this.sink.storeChunk(b.data, b.id);
      else this.r.blocksReused++;
      this.report();
    }
    return blocks;
  }

  /**
   * New chunks, each stored unless the repository has it: hashed here
   * (`hashHere`: a small file, whose TOC would otherwise wait a round trip
   * for its ids) or on the workers, whose ids arrive in any order.
   */
  private async storeFresh(chunks: AsyncIterable<Buffer>, hashHere: boolean): Promise<BlockList> {
    const blocks = new BlockList();
    let waiting = 0;
    let allKnown: (() => void) | undefined;
    const known = (i: number, id: Buffer) => {
      blocks.setId(i, id);
      if (--waiting === 0) allKnown?.();
    };
    for await (const chunk of chunks) {
      this.checkAbort();
      if (hashHere) {
        blocks.push(await this.sink.storeChunk(chunk), chunk.length);
      } else {
        const i = blocks.push(null, chunk.length);
        waiting++;
        await this.sink.storeNewChunk(chunk, (id) => known(i, id));
      }
      this.report();
    }
    // A failed block fails the whole backup (drain rethrows it); until then, wait for the rest.
    while (waiting > 0) {
      await Promise.race([new Promise<void>((resolve) => (allKnown = resolve)), this.sink.failed]);
      this.checkAbort();
    }
    return blocks;
  }

  /**
   * Standard input (--stdin), read once front to back as a stream: Node's,
   * so a pipe, a socket or a file all read without blocking this thread,
   * and an interrupt ends a wait for a slow writer. No alignment with the
   * previous version: its refs come from the two block lists.
   */
  private async readStdin(abs: string): Promise<BlockList | undefined> {
    const signal = this.opts.signal;
    const input = signal ? addAbortSignal(signal, process.stdin) : process.stdin;
    try {
      return await this.storeFresh(streamChunks(input, this.chunker, this.counted), false);
    } catch (e) {
      if (signal?.aborted) throw interrupted();
      this.warn(`cannot read ${abs} from standard input: ${describe(e)}`, true);
      return undefined;
    }
  }


  /**
   * A file written to while it was read may be stored as a prefix or a mix of
   * old and new bytes: what was read is kept (it is all there is), but the
   * backup says so and ends with exit 3.
   */
  private checkUnchangedWhileRead(fd: number, before: fsSync.BigIntStats, abs: string): void {
    const after = fsSync.fstatSync(fd, { bigint: true });
    if (after.size !== before.size || after.mtimeNs !== before.mtimeNs || after.ctimeNs !== before.ctimeNs) {
      this.warn(`${abs} changed while it was read: the stored copy may mix old and new contents; back it up again`, true);
    }
  }
}

