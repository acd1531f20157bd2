/**
 * Reading files out of snapshots: find a path's entry and version, then stream
 * any byte range of it by resolving the range to block pieces and fetching
 * only those blocks (the "virtual synthetic": never stored whole).
 */
import * as path from 'node:path';
import { integrity, notFound, StrataError } from '../errors.js';
import type { Repository } from '../repo/repository.js';
import type { Piece } from '../catalog/resolve.js';
import { Snapshot } from './snapshot.js';
import type { When } from '../util/when.js';
import { resolveRange as resolveByteRange, type RangeSpec } from '../util/range.js';
import { entryVersion, verifiedPieces, verifier, type BoundVersion } from './verify.js';
import { TYPE_NAMES, type TreeEntry } from './tree.js';

export interface StoredFile {
  path: string;
  entry: TreeEntry;
  version: BoundVersion;
}

/** Absolute form of a path given on the command line (relative to cwd, like backup). */
export function absolutePath(p: string): string {
  return path.resolve(p);
}

export async function openFile(snapshot: Snapshot, absPath: string): Promise<StoredFile> {
  const entry = await snapshot.lookup(absPath);
  if (!entry) throw notFound(`${absPath} is not in snapshot ${snapshot.id.slice(0, 8)}`);
  return openEntry(snapshot, absPath, entry);
}

/** openFile() of an entry already looked up. */
export async function openEntry(snapshot: Snapshot, absPath: string, entry: TreeEntry): Promise<StoredFile> {
  if (entry.type === 'dir') throw new StrataError('is_directory', `${absPath} is a directory`);
  if (entry.type !== 'file') throw new StrataError('not_file', `${absPath} is a ${TYPE_NAMES[entry.type]}, not a file: it holds no data`);
  // A file of one block is read by its entry alone: no catalog lookup down the snapshot's chain.
  if (entry.block && entry.size > 0) return { path: absPath, entry, version: entryVersion(snapshot, absPath, { ...entry, block: entry.block }, snapshot.repo) };
  return { path: absPath, entry, version: await storedVersion(snapshot, absPath, entry) };
}

/**
 * The stored version of a file entry, checked before any byte is read: its
 * size must be the entry's, its TOC must reach that size, and it must be the
 * version the sealed TOCs give this file in this snapshot (engine/verify.ts).
 * So a forged size or a swapped version fails up front rather than after
 * part of a file went out.
 */
export async function storedVersion(snapshot: Snapshot, absPath: string, entry: TreeEntry): Promise<BoundVersion> {
  const { service, keyring } = snapshot.repo;
  const pathId = keyring.pathId(absPath);
  const version = await service.version(snapshot.row.seq, pathId);
  if (!version) throw integrity(`${absPath} has no stored version in snapshot ${snapshot.id.slice(0, 8)}`);
  if (version.size !== entry.size) throw integrity(`${absPath}: its tree entry says ${entry.size} bytes, its stored version ${version.size}`);
  if (version.size > 0 && version.end !== version.size - 1) {
    throw integrity(`${absPath}: the TOC of version ${version.id} does not end at its size, ${version.size} bytes`, { version: version.id });
  }
  const bound = await verifier(snapshot.repo).bind(snapshot, absPath, pathId, version, entry);
  return { id: version.id, snapshot: version.snapshot, size: version.size, depth: version.depth, bound };
}

/** The pieces a read plan brought, then the rest of the range page by page. */
async function* planned(repo: Repository, version: BoundVersion, end: number, first: { pieces: Piece[]; next: number | null }): AsyncGenerator<Piece> {
  yield* first.pieces;
  if (first.next !== null) yield* repo.service.pieces(version.id, first.next, end);
}

export interface PlannedRead {
  snapshot: Snapshot;
  file: { path: string; version: BoundVersion };
  start: number;
  end: number;
  first: { pieces: Piece[]; next: number | null };
}

/**
 * A range read found with one question to the catalog's keeper instead of a
 * walk down the trees (over a network, each tree is a round trip): the
 * snapshot WHEN names that holds the path, its version and the first pieces.
 * Undefined whenever the answer could differ from the walk's (another host,
 * a newer snapshot that covers the path without holding it), so the caller
 * walks the trees and reports exactly what it would have.
 */
export async function planRead(repo: Repository, when: When, absPath: string, host: string | undefined, spec: RangeSpec | undefined): Promise<PlannedRead | undefined> {
  const choice = when.kind === 'id' ? { prefix: when.prefix } : { until: when.kind === 'time' ? when.time : Number.MAX_SAFE_INTEGER };
  const plan = await repo.service.planRead(repo.keyring.pathId(absPath), choice, spec);
  if (!plan) return undefined;
  const snapshot = new Snapshot(repo, plan.snapshot);
  const mine = (s: Snapshot) => (!host || s.meta.host === host) && s.covers(absPath);
  if (when.kind !== 'id' && (!mine(snapshot) || plan.newer.some((row) => mine(new Snapshot(repo, row))))) return undefined;
  const v = plan.version;
  if (v.size > 0 && v.end !== v.size - 1) throw integrity(`${absPath}: the TOC of version ${v.id} does not end at its size, ${v.size} bytes`, { version: v.id });
  // The server's size and range are checked against the sealed TOC before anything is read.
  const bound = await verifier(repo).bind(snapshot, absPath, repo.keyring.pathId(absPath), v);
  const range = v.size === 0 && !spec ? { start: 0, end: -1 } : resolveByteRange(spec, bound.truth.size);
  if (range.start !== plan.start || range.end !== plan.end) throw integrity(`${absPath}: the server's read plan is for bytes ${plan.start}-${plan.end}, not ${range.start}-${range.end}`, { path: absPath });
  const version: BoundVersion = { id: v.id, snapshot: v.snapshot, size: v.size, depth: v.depth, bound };
  return { snapshot, file: { path: absPath, version }, start: plan.start, end: plan.end, first: { pieces: plan.pieces, next: plan.next } };
}


/**
 * The bytes of [start, end] (inclusive) of a version, block piece by block
 * piece. `readBlock` fetches and decodes a block (a cache may stand in front).
 */
export async function* readRange(
  repo: Repository,
  version: BoundVersion,
  start: number,
  end: number,
  first?: { pieces: Piece[]; next: number | null },
  readBlock: (id: Buffer) => Promise<Buffer> = (id) => repo.readBlob(id),
): AsyncGenerator<Buffer> {
  if (end >= version.size) throw integrity(`read past the end of version ${version.id}`);
  // Reads of the next few blocks start early, so the store works while we decode and write.
  const ahead: { p: Piece; block: Promise<Buffer> }[] = [];
  const source = first ? planned(repo, version, end, first) : repo.service.pieces(version.id, start, end);
  // Each piece is checked against the sealed TOCs before its block is even fetched.
  const pieces = verifiedPieces(repo, version, start, end, source)[Symbol.asyncIterator]();
  const readAhead = repo.readAhead;
  const fill = async () => {
    if (ahead.length > readAhead / 2) return;
    // Pieces are checked one await at a time: the reads start together, in one turn, so a server gets them in one request.
    const due: Piece[] = [];
    while (ahead.length + due.length < readAhead) {
      const next = await pieces.next();
      if (next.done) break;
      due.push(next.value);
    }
    for (const p of due) {
      const block = readBlock(p.block);
      block.catch(() => {});
      ahead.push({ p, block });
    }
  };
  for (await fill(); ahead.length > 0; await fill()) {
    const { p, block: pending } = ahead.shift()!;
    const block = await pending;
    if (block.length !== p.blockSize) {
      throw integrity(`block ${p.block.toString('hex').slice(0, 16)} is ${block.length} bytes, its TOC entry says ${p.blockSize}`);
    }
    yield block.subarray(p.from, p.from + p.length);
  }
}
