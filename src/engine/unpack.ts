/**
 * Writing a whole version into an open file with worker threads doing the
 * work: this thread resolves the version to block pieces and finds each
 * block's pack and place; workers read runs of blocks, authenticate, decode
 * and write them at their offsets (see workers/unpacker.ts). From a bucket
 * this thread fetches each batch's sealed bytes (its reads of many files
 * merge into few requests, storage/coalesce.ts) and hands them over with it.
 * Only for a repository this process reads itself; over a server, blocks
 * come through readRange.
 */
import { writeSync } from 'node:fs';
import { integrity, interrupted } from '../errors.js';
import type { Repository } from '../repo/repository.js';
import { ID_BYTES, MADE, PIECE_FIELDS, type UnpackAnswer, type UnpackBatch } from '../workers/unpacker.js';
import type { UnpackPool } from '../workers/unpack-pool.js';
import type { Piece } from '../catalog/resolve.js';
import type { BlockLocation } from '../catalog/catalog.js';
import { verifiedPieces, type BoundVersion } from './verify.js';
import { HOLE_MIN } from '../util/holes.js';

/**
 * Pieces per message to a worker at most, and the bytes that end a batch
 * sooner: about 64 blocks, less for a small file, so even a file of a few
 * blocks keeps every worker busy.
 */
const BATCH_PIECES = 64;
const BATCH_BYTES = 2 * 1024 * 1024;
const MIN_BATCH_BYTES = 128 * 1024;
/** Sealed bytes under which a block may be one of zeros (128 KiB of zeros seal to about 60). */
const TINY_SEALED = 512;

/** Batches handed out and not yet answered, per worker: enough to keep each busy, few enough to bound memory. */
const IN_FLIGHT_PER_WORKER = 2;

class Batch {
  readonly packs: string[] = [];
  /** Each pack's size as the catalog has it (a hint for the reads; see Handle.size). */
  private readonly packSizes: (number | undefined)[] = [];
  private readonly packIndex = new Map<string, number>();
  readonly pieces: Piece[] = [];
  /** The output of each piece. */
  readonly fds: number[] = [];
  private numbers = new Float64Array(BATCH_PIECES * PIECE_FIELDS);
  private ids = new Uint8Array(BATCH_PIECES * ID_BYTES);
  /** Files the worker creates (see UnpackBatch.files). */
  private readonly files: number[] = [];
  private readonly names: Buffer[] = [];
  bytes = 0;

  constructor(private readonly limit: number) {}

  add(p: Piece, { pack, offset, length, packSize }: BlockLocation, fd: number, fileSize: number): void {
    let f = this.packIndex.get(pack);
    if (f === undefined) {
      f = this.packs.push(pack) - 1;
      this.packSizes.push(packSize);
      this.packIndex.set(pack, f);
    }
    const i = this.pieces.length;
    if (i === this.numbers.length / PIECE_FIELDS) {
      // Small files are added whole: a batch may end a few pieces past BATCH_PIECES.
      const numbers = new Float64Array(this.numbers.length * 2);
      numbers.set(this.numbers);
      this.numbers = numbers;
      const ids = new Uint8Array(this.ids.length * 2);
      ids.set(this.ids);
      this.ids = ids;
    }
    this.pieces.push(p);
    this.fds.push(fd);
    this.numbers.set([f, offset, length, p.blockSize, p.from, p.length, p.at, fd, fileSize], i * PIECE_FIELDS);
    this.ids.set(p.block, i * ID_BYTES);
    this.bytes += p.length;
  }

  /** A file for the worker to create; its pieces are added with the descriptor this returns. */
  addFile(f: NewFile): number {
    this.files.push(f.dir, f.mode, f.chmod, f.uid, f.gid, f.mtime);
    this.names.push(f.name);
    return -this.names.length;
  }

  /** Where each piece's sealed bytes are: pack, offset, length. */
  *places(): Generator<{ pack: string; packSize?: number; offset: number; length: number }> {
    for (let i = 0; i < this.pieces.length; i++) {
      const at = i * PIECE_FIELDS;
      const f = this.numbers[at]!;
      yield { pack: this.packs[f]!, packSize: this.packSizes[f], offset: this.numbers[at + 1]!, length: this.numbers[at + 2]! };
    }
  }

  get full(): boolean {
    return this.pieces.length >= BATCH_PIECES || this.bytes >= this.limit;
  }

  message(): Omit<UnpackBatch, 'seq'> {
    const n = this.pieces.length;
    const m = { packs: this.packs, pieces: this.numbers.slice(0, n * PIECE_FIELDS), ids: this.ids.slice(0, n * ID_BYTES) };
    if (this.names.length === 0) return m;
    let end = 0;
    const nameEnds = Uint32Array.from(this.names, (name) => (end += name.length));
    return { ...m, files: Float64Array.from(this.files), names: new Uint8Array(Buffer.concat(this.names)), nameEnds };
  }
}

/** A version's pieces, each checked against the sealed TOCs (engine/verify.ts) before a worker writes it. */
function checkedPieces(repo: Repository, version: BoundVersion): AsyncIterable<Piece> {
  const end = version.size - 1;
  return verifiedPieces(repo, version, 0, end, repo.service.pieces(version.id, 0, end));
}

/**
 * Writes all of `version` into the file open as `fd` (which must stay open until this
 * settles); returns the bytes written. Pieces a worker could not restore
 * are read again here, so a damaged block fails with the same error as any
 * other read, and a block that moved (prune repacked it) is found anew.
 */
export async function unpackVersion(repo: Repository, version: BoundVersion, fd: number, signal?: AbortSignal, onBytes?: (n: number) => void): Promise<number> {
  const pool = await repo.unpackers();
  const catalog = repo.catalog;
  const limit = pool.size * IN_FLIGHT_PER_WORKER;
  const batchBytes = Math.min(BATCH_BYTES, Math.max(MIN_BATCH_BYTES, Math.ceil(version.size / limit)));
  const inFlight: Promise<void>[] = [];
  let written = 0;
  let failure: unknown;

  const send = (batch: Batch) => {
    const done = runBatch(repo, pool, batch)
      .catch((e: unknown): UnpackAnswer => ({ seq: -1, bytes: 0, failed: 0, error: String(e) }))
      .then(async (a) => {
        repo.blocksRead += a.failed ?? batch.pieces.length;
        const more = a.failed !== undefined ? await writeHere(repo, fd, batch.pieces.slice(a.failed)) : 0;
        written += a.bytes + more;
        onBytes?.(a.bytes + more);
      })
      .catch((e: unknown) => void (failure ??= e));
    inFlight.push(done);
  };

  try {
    if (version.size > 0) {
      let batch = new Batch(batchBytes);
      // Locations are looked up a batch at a time: one catalog read for all.
      let pending: Piece[] = [];
      const place = async () => {
        const locations = catalog.blockLocations(pending.map((p) => p.block));
        for (const [i, p] of pending.entries()) {
          const loc = locations[i];
          if (!loc) throw integrity(`block ${p.block.toString('hex').slice(0, 16)} is not in the repository`, { block: p.block.toString('hex') });
          // A hole: a block of zeros before the file's end (its id says so, and it seals to a few dozen
          // bytes, which spares the check for others) is neither read nor written, as a worker would not write it.
          if (loc.length < TINY_SEALED && p.length >= HOLE_MIN && p.at + p.length < version.size && repo.keyring.isZeroBlock(p.block, p.blockSize)) {
            written += p.length;
            onBytes?.(p.length);
            continue;
          }
          batch.add(p, loc, fd, version.size);
          if (!batch.full) continue;
          send(batch);
          batch = new Batch(batchBytes);
          if (inFlight.length >= limit) await inFlight.shift();
          if (failure !== undefined) throw failure;
          if (signal?.aborted) throw interrupted();
        }
        pending = [];
      };
      // Each piece is checked against the sealed TOCs before a worker writes it (engine/verify.ts).
      for await (const p of checkedPieces(repo, version)) {
        pending.push(p);
        if (pending.length === BATCH_PIECES) await place();
      }
      await place();
      if (batch.pieces.length > 0) send(batch);
    }
  } finally {
    // Workers write through this file's descriptor: none may still be at it once the caller closes it.
    await Promise.all(inFlight);
  }
  if (failure !== undefined) throw failure;
  if (written !== version.size) throw integrity(`version ${version.id}: wrote ${written} bytes of ${version.size}`, { version: version.id });
  return written;
}

/** Has a worker do `batch`, its sealed bytes fetched here first when the workers read no store. */
async function runBatch(repo: Repository, pool: UnpackPool, batch: Batch): Promise<UnpackAnswer> {
  return pool.run(pool.reads ? batch.message() : { ...batch.message(), ...(await fetchSealed(repo, batch)) });
}

/**
 * A batch's sealed bytes, fetched here for workers that read no store: all
 * asked for in one turn, so reads of neighbouring blocks are joined. Read
 * into shared memory (a bucket's packs, storage/s3.ts), they go to the
 * worker as views of it, and the few read into memory of their own (short
 * ranges) are copied into one shared buffer beside them; read into none
 * (a directory, a server), they are copied into one buffer of their own,
 * which moves to the worker.
 */
export async function fetchSealed(repo: Pick<Repository, 'storage'>, batch: Pick<Batch, 'places'>): Promise<{ sealed: Uint8Array } | { parts: Uint8Array[] }> {
  const places = Array.from(batch.places());
  const parts = await Promise.all(places.map((p) => repo.storage.read({ kind: 'pack', name: p.pack, size: p.packSize }, p.offset, p.length)));
  let total = 0;
  parts.forEach((p, i) => {
    // Each piece's bytes must lie where the worker looks for them: a short read is left to the reads here (writeHere).
    if (p.length !== places[i]!.length) throw new Error(`short read of pack ${places[i]!.pack}`);
    total += p.length;
  });
  const shared = (p: Uint8Array) => p.buffer instanceof SharedArrayBuffer;
  if (parts.some(shared)) {
    const copies = new Uint8Array(new SharedArrayBuffer(parts.reduce((n, p) => (shared(p) ? n : n + p.length), 0)));
    let at = 0;
    return {
      parts: parts.map((p) => {
        if (shared(p)) return p;
        const view = copies.subarray(at, at + p.length);
        view.set(p);
        at += p.length;
        return view;
      }),
    };
  }
  const sealed = Buffer.allocUnsafeSlow(total);
  let at = 0;
  for (const p of parts) at += p.copy(sealed, at);
  return { sealed: new Uint8Array(sealed.buffer, 0, total) };
}

/** Pieces read and written by this thread (a worker failed on the first of them). */
async function writeHere(repo: Repository, fd: number, pieces: readonly Piece[]): Promise<number> {
  let bytes = 0;
  for (const p of pieces) {
    const block = await repo.readBlob(p.block);
    if (block.length !== p.blockSize) {
      throw integrity(`block ${p.block.toString('hex').slice(0, 16)} is ${block.length} bytes, its TOC entry says ${p.blockSize}`);
    }
    let done = 0;
    while (done < p.length) done += writeSync(fd, block, p.from + done, p.length - done, p.at + done);
    bytes += p.length;
  }
  return bytes;
}

/** Small files gathered for one message: a message per small file costs this thread more than the file's block. */
const SMALL_BATCH_PIECES = 64;
const SMALL_BATCH_BYTES = 2 * 1024 * 1024;
/** How long a small file may wait for others: a tree of small files makes several in this time, and a lone file is hardly held up. */
const SMALL_BATCH_WAIT_MS = 8;

/** A file for a worker to create, write and close (see UnpackBatch.files). */
export interface NewFile {
  /** Its directory, open (the caller keeps it open until the file is settled). */
  dir: number;
  name: Buffer;
  /** The mode to create it with; the mode to set afterwards (-1: none). */
  mode: number;
  chmod: number;
  /** Owner and group to set (-1: leave them). */
  uid: number;
  gid: number;
  /** Modification (and access) time, seconds. */
  mtime: number;
}

/**
 * What became of a file given to create(): made whole with its metadata;
 * not made (something is at its name, or it could not be created); or made
 * but not whole (the caller removes it).
 */
export type Made = 'done' | 'not-made' | 'failed';

interface Queued {
  size: number;
  pieces: Piece[];
  /** The file's descriptor, or what the worker is to create. */
  to: number | NewFile;
  resolve: (r: number | Made) => void;
  reject: (e: unknown) => void;
}

/**
 * Writes small files on the workers, many to a message (see unpacker.ts).
 * write() fills a file open here and resolves once it is written whole;
 * create() has the worker create the file too, write it, set its metadata
 * and close it: for a tree of small files, that is most of the system calls
 * a file costs, off this thread. Files wait for others until a batch is
 * full, SMALL_BATCH_WAIT_MS have passed, or flush().
 */
export class SmallFileWriter {
  private files: Queued[] = [];
  private pieces = 0;
  private bytes = 0;
  private pool?: UnpackPool;
  private timer?: NodeJS.Timeout;

  constructor(private readonly repo: Repository) {}

  /** Writes all of `version` into the file open as `fd` (which must stay open until this settles); returns the bytes written. */
  async write(version: BoundVersion, fd: number): Promise<number> {
    return (await this.queue(version, fd)) as number;
  }

  /** Creates `file` with all of `version` in it, its mode, owner and times. */
  async create(version: BoundVersion, file: NewFile): Promise<Made> {
    return (await this.queue(version, file)) as Made;
  }

  private async queue(version: BoundVersion, to: number | NewFile): Promise<number | Made> {
    this.pool ??= await this.repo.unpackers();
    const pieces: Piece[] = [];
    for await (const p of checkedPieces(this.repo, version)) pieces.push(p);
    const done = new Promise<number | Made>((resolve, reject) => this.files.push({ to, size: version.size, pieces, resolve, reject }));
    this.pieces += pieces.length;
    this.bytes += version.size;
    if (this.pieces >= SMALL_BATCH_PIECES || this.bytes >= SMALL_BATCH_BYTES) this.flush();
    // Sent at the latest a moment later, so files made meanwhile share the message and no file waits on a caller's flush.
    else this.timer ??= setTimeout(() => this.flush(), SMALL_BATCH_WAIT_MS);
    return done;
  }

  /** Sends the files gathered so far. */
  flush(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    if (this.files.length === 0) return;
    const files = this.files;
    this.files = [];
    this.pieces = 0;
    this.bytes = 0;
    // Where their blocks are, in one catalog read for all.
    const locations = this.repo.catalog.blockLocations(files.flatMap((f) => f.pieces.map((p) => p.block)));
    const located = new Map<Queued, number>();
    let k = 0;
    for (const f of files) {
      located.set(f, k);
      k += f.pieces.length;
    }
    // Files open here and files the worker creates go in messages of their own: they fail differently.
    this.send(files.filter((f) => typeof f.to === 'number'), locations, located);
    this.send(files.filter((f) => typeof f.to !== 'number'), locations, located);
  }

  private send(files: Queued[], locations: ReturnType<Repository['catalog']['blockLocations']>, located: Map<Queued, number>): void {
    const { repo } = this;
    const batch = new Batch(Infinity);
    const sent: { f: Queued; fd: number; first: number }[] = [];
    for (const f of files) {
      const at = located.get(f)!;
      const missing = f.pieces.findIndex((_, i) => !locations[at + i]);
      if (missing >= 0) {
        const block = f.pieces[missing]!.block.toString('hex');
        f.reject(integrity(`block ${block.slice(0, 16)} is not in the repository`, { block }));
        continue;
      }
      const fd = typeof f.to === 'number' ? f.to : batch.addFile(f.to);
      sent.push({ f, fd, first: batch.pieces.length });
      f.pieces.forEach((p, i) => {
        const loc = locations[at + i]!;
        batch.add(p, loc, fd, f.size);
      });
    }
    if (sent.length === 0) return;
    void runBatch(repo, this.pool!, batch)
      .catch((e: unknown): UnpackAnswer => ({ seq: -1, bytes: 0, failed: 0, error: String(e) }))
      .then(async (a) => {
        repo.blocksRead += a.failed ?? batch.pieces.length;
        for (const [n, { f, fd, first }] of sent.entries()) {
          if (typeof f.to !== 'number') {
            // Created by the worker: its answer says how each went. A worker that failed as a whole
            // may have made any of them: each is taken as made but not whole.
            const made = a.made ? a.made[-fd - 1] : MADE.failed;
            f.resolve(made === MADE.done ? 'done' : made === MADE.failed ? 'failed' : 'not-made');
            continue;
          }
          const end = sent[n + 1]?.first ?? batch.pieces.length;
          // Pieces a worker could not write are read here, so a damaged block fails as any read would.
          try {
            if (a.failed !== undefined && a.failed < end) await writeHere(repo, f.to, batch.pieces.slice(Math.max(a.failed, first), end));
            f.resolve(f.size);
          } catch (e) {
            f.reject(e);
          }
        }
      });
  }
}
