/**
 * Writing a whole version into an open file with worker threads doing the
 * work: this thread resolves the version to block pieces and finds each
 * block's pack and place; workers read runs of blocks, authenticate, decode
 * and write them at their offsets (see workers/unpacker.ts). Only for a
 * repository this process reads itself; over a server, blocks come through
 * readRange.
 */
import { writeSync } from 'node:fs';
import { integrity, interrupted } from '../errors.js';
import type { Repository } from '../repo/repository.js';
import { ID_BYTES, PIECE_FIELDS, type UnpackAnswer } from '../workers/unpacker.js';
import type { UnpackPool } from '../workers/unpack-pool.js';
import type { Piece } from '../catalog/resolve.js';
import { verifiedPieces, type BoundVersion } from './verify.js';

/**
 * Pieces per message to a worker at most, and the bytes that end a batch
 * sooner: about 64 blocks, less for a small file, so even a file of a few
 * blocks keeps every worker busy.
 */
const BATCH_PIECES = 64;
const BATCH_BYTES = 2 * 1024 * 1024;
const MIN_BATCH_BYTES = 128 * 1024;
/** Batches handed out and not yet answered, per worker: enough to keep each busy, few enough to bound memory. */
const IN_FLIGHT_PER_WORKER = 2;

class Batch {
  readonly packs: string[] = [];
  private readonly packIndex = new Map<string, number>();
  readonly pieces: Piece[] = [];
  /** The output of each piece. */
  readonly fds: number[] = [];
  private numbers = new Float64Array(BATCH_PIECES * PIECE_FIELDS);
  private ids = new Uint8Array(BATCH_PIECES * ID_BYTES);
  bytes = 0;

  constructor(private readonly limit: number) {}

  add(p: Piece, pack: string, offset: number, length: number, fd: number, fileSize: number): void {
    let f = this.packIndex.get(pack);
    if (f === undefined) {
      f = this.packs.push(pack) - 1;
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

  get full(): boolean {
    return this.pieces.length >= BATCH_PIECES || this.bytes >= this.limit;
  }

  message() {
    const n = this.pieces.length;
    return { packs: this.packs, pieces: this.numbers.slice(0, n * PIECE_FIELDS), ids: this.ids.slice(0, n * ID_BYTES) };
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
    const done = pool
      .run(batch.message())
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
          batch.add(p, loc.pack, loc.offset, loc.length, fd, version.size);
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
const SMALL_BATCH_PIECES = 16;
const SMALL_BATCH_BYTES = 512 * 1024;
/** How long a small file may wait for others: a tree of small files makes several in this time, and a lone file is hardly held up. */
const SMALL_BATCH_WAIT_MS = 2;

/**
 * Writes small files on the workers, many to a message (see unpacker.ts):
 * write() resolves once its file is written whole. Files wait for others
 * until a batch is full, SMALL_BATCH_WAIT_MS have passed, or flush().
 */
export class SmallFileWriter {
  private files: { fd: number; size: number; pieces: Piece[]; resolve: (bytes: number) => void; reject: (e: unknown) => void }[] = [];
  private pieces = 0;
  private bytes = 0;
  private pool?: UnpackPool;
  private timer?: NodeJS.Timeout;

  constructor(private readonly repo: Repository) {}

  /** Writes all of `version` into the file open as `fd` (which must stay open until this settles); returns the bytes written. */
  async write(version: BoundVersion, fd: number): Promise<number> {
    this.pool ??= await this.repo.unpackers();
    const pieces: Piece[] = [];
    for await (const p of checkedPieces(this.repo, version)) pieces.push(p);
    const done = new Promise<number>((resolve, reject) => this.files.push({ fd, size: version.size, pieces, resolve, reject }));
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
    const { repo } = this;
    // Where their blocks are, in one catalog read for all.
    const locations = repo.catalog.blockLocations(files.flatMap((f) => f.pieces.map((p) => p.block)));
    const batch = new Batch(Infinity);
    const sent: { fd: number; size: number; first: number; resolve: (bytes: number) => void; reject: (e: unknown) => void }[] = [];
    let k = 0;
    for (const f of files) {
      const at = k;
      k += f.pieces.length;
      const missing = f.pieces.findIndex((_, i) => !locations[at + i]);
      if (missing >= 0) {
        const block = f.pieces[missing]!.block.toString('hex');
        f.reject(integrity(`block ${block.slice(0, 16)} is not in the repository`, { block }));
        continue;
      }
      sent.push({ ...f, first: batch.pieces.length });
      f.pieces.forEach((p, i) => {
        const loc = locations[at + i]!;
        batch.add(p, loc.pack, loc.offset, loc.length, f.fd, f.size);
      });
    }
    if (sent.length === 0) return;
    void this.pool!.run(batch.message())
      .catch((e: unknown): UnpackAnswer => ({ seq: -1, bytes: 0, failed: 0, error: String(e) }))
      .then(async (a) => {
        repo.blocksRead += a.failed ?? batch.pieces.length;
        for (const [n, f] of sent.entries()) {
          const end = sent[n + 1]?.first ?? batch.pieces.length;
          // Pieces a worker could not write are read here, so a damaged block fails as any read would.
          try {
            if (a.failed !== undefined && a.failed < end) await writeHere(repo, f.fd, batch.pieces.slice(Math.max(a.failed, f.first), end));
            f.resolve(f.size);
          } catch (e) {
            f.reject(e);
          }
        }
      });
  }
}
