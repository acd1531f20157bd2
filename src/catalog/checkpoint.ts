/**
 * Checkpoints of a bucket's catalog journal (catalog/journal.ts): the whole
 * catalog of a follower as it stood once it had applied every record up to
 * a number, kept in the bucket so that a new server starts from it and the
 * records it covers can be removed. A starting server (or one that fell
 * behind a compaction) then reads the checkpoint and the records after it,
 * not the journal from its first record.
 *
 * A checkpoint is a manifest, `journal/k.<16 digits>` (the digits as a
 * record's: 9999999999999999 minus the number it covers, so the newest sorts
 * first), created once (If-None-Match: *) after its parts:
 * `journal/kp.<16 digits>.<nonce>.<n>`, pieces of at most 4 MiB of the
 * catalog's SQLite file, whose sizes and SHA-256 the manifest lists, so a
 * part damaged or cut short is found before anything of it is used. The
 * manifest also carries the commits that were still waiting for their
 * parent or blocks (their batches are kept), as commit records.
 *
 * What the catalog holds of its writer's own run is left out of the copy:
 * snapshots not committed, and leases. It may hold the effects of records
 * after the number it names (its writer's own, applied as they were
 * written): applying a record again changes nothing, so a follower that
 * starts from it and applies those records again builds the same catalog.
 */
import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import { StrataError } from '../errors.js';
import type { ConditionalObjects } from '../storage/storage.js';
import { Catalog } from './catalog.js';

export const MANIFEST = 'k.';
const PART = 'kp.';
const DIGITS = 16;
const TOP = 9_999_999_999_999_999n;
/** The largest part: each is one PUT, held in memory once. */
const PART_BYTES = 4 * 1024 * 1024;

export interface CheckpointPart {
  name: string;
  size: number;
  sha256: string;
}

export interface Checkpoint {
  /** The newest record whose effects it holds (with every one before it). */
  upTo: number;
  /** When it was made (ms). */
  time: number;
  /** The catalog schema of its file. */
  schema: number;
  size: number;
  parts: CheckpointPart[];
  /** Commit records that were waiting for their parent or blocks, as the journal holds them. */
  waiting: Record<string, unknown>[];
}

/** A follower whose next record was removed by a compaction: it starts again from the newest checkpoint. */
export class JournalCompacted extends StrataError {
  constructor(readonly checkpoint: Checkpoint) {
    super('io', `the catalog journal was compacted past this catalog: it is reloaded from the checkpoint of record ${checkpoint.upTo}`);
  }
}

function digits(seq: number): string {
  return (TOP - BigInt(seq)).toString().padStart(DIGITS, '0');
}

/** The manifest's name of the checkpoint covering records up to `upTo`. */
export function manifestName(upTo: number): string {
  return MANIFEST + digits(upTo);
}

function manifestSeq(name: string): number | undefined {
  if (!name.startsWith(MANIFEST) || name.length !== MANIFEST.length + DIGITS || !/^\d+$/.test(name.slice(MANIFEST.length))) return undefined;
  const seq = Number(TOP - BigInt(name.slice(MANIFEST.length)));
  return seq >= 1 && Number.isSafeInteger(seq) ? seq : undefined;
}

/** The checkpoints' manifests in the bucket, newest first (numbers only: nothing is read). */
export async function checkpointNumbers(objects: ConditionalObjects, firstPage?: number): Promise<number[]> {
  const out: number[] = [];
  for await (const name of objects.names({ prefix: MANIFEST, ...(firstPage ? { firstPage } : {}) })) {
    const seq = manifestSeq(name);
    if (seq !== undefined) out.push(seq);
    if (firstPage && out.length >= firstPage) break;
  }
  return out;
}

/** A checkpoint's manifest, checked; undefined when it is gone. */
export async function readCheckpoint(objects: ConditionalObjects, upTo: number): Promise<Checkpoint | undefined> {
  const got = await objects.read(manifestName(upTo));
  if (!got) return undefined;
  let j: Record<string, unknown>;
  try {
    j = JSON.parse(got.body.toString('utf8')) as Record<string, unknown>;
  } catch {
    throw new StrataError('integrity', `checkpoint ${upTo} of the catalog journal is not JSON`);
  }
  const bad = (what: string) => new StrataError('integrity', `checkpoint ${upTo} of the catalog journal has ${what}`);
  const int = (v: unknown) => Number.isSafeInteger(v) && (v as number) >= 0;
  if (j.upTo !== upTo || !int(j.time) || !int(j.schema) || !int(j.size)) throw bad('a malformed header');
  if (!Array.isArray(j.parts) || !Array.isArray(j.waiting)) throw bad('no parts');
  const parts = j.parts.map((p: unknown) => {
    const o = (typeof p === 'object' && p !== null ? p : {}) as Record<string, unknown>;
    if (typeof o.name !== 'string' || !o.name.startsWith(PART + digits(upTo) + '.') || !int(o.size) || typeof o.sha256 !== 'string' || !/^[0-9a-f]{64}$/.test(o.sha256)) throw bad('a malformed part');
    return { name: o.name, size: o.size as number, sha256: o.sha256 };
  });
  if (parts.reduce((s, p) => s + p.size, 0) !== j.size) throw bad('parts that do not add up to its size');
  if (!j.waiting.every((w) => typeof w === 'object' && w !== null && !Array.isArray(w))) throw bad('a malformed waiting commit');
  return { upTo, time: j.time as number, schema: j.schema as number, size: j.size as number, parts, waiting: j.waiting as Record<string, unknown>[] };
}

/** The newest checkpoint, or undefined when there is none: one listing of one name, and its manifest. */
export async function newestCheckpoint(objects: ConditionalObjects): Promise<Checkpoint | undefined> {
  for (let tries = 0; tries < 3; tries++) {
    const [upTo] = await checkpointNumbers(objects, 1);
    if (upTo === undefined) return undefined;
    const cp = await readCheckpoint(objects, upTo);
    // Gone between the listing and the read: a newer one replaced it.
    if (cp) return cp;
  }
  throw new StrataError('io', 'the checkpoints of the catalog journal kept changing while being read');
}

/**
 * A copy of `catalog` in `scratch` as a checkpoint holds it (without what is
 * its writer's own: snapshots not committed, leases); its schema. Made at
 * once (one transaction of SQLite), so it is the catalog at one moment.
 */
export function copyCatalog(catalog: Catalog, scratch: string): number {
  fs.rmSync(scratch, { force: true });
  catalog.copyTo(scratch);
  const copy = new Catalog(scratch);
  try {
    const pending = copy.db.prepare('SELECT seq FROM snapshots WHERE committed = 0').pluck().all() as number[];
    copy.transaction(() => {
      for (const seq of pending) copy.deleteSnapshot(seq);
      copy.db.exec('DELETE FROM leases');
    });
    return Number(copy.db.prepare("SELECT value FROM info WHERE key = 'schema'").pluck().get());
  } finally {
    copy.close();
  }
}

/**
 * Uploads `scratch` (made by copyCatalog, removed here) as the checkpoint
 * covering records up to `upTo`; false if another follower wrote one of that
 * number first (this one's parts are removed again).
 */
export async function uploadCheckpoint(objects: ConditionalObjects, scratch: string, upTo: number, schema: number, waiting: Record<string, unknown>[]): Promise<boolean> {
  const parts: CheckpointPart[] = [];
  let size = 0;
  try {
    const nonce = randomBytes(8).toString('hex');
    const fd = fs.openSync(scratch, 'r');
    try {
      const buf = Buffer.allocUnsafe(PART_BYTES);
      for (let n = 0; ; n++) {
        let got = 0;
        while (got < PART_BYTES) {
          const r = fs.readSync(fd, buf, got, PART_BYTES - got, null);
          if (r === 0) break;
          got += r;
        }
        if (got === 0 && n > 0) break;
        const body = Buffer.from(buf.subarray(0, got));
        const name = `${PART}${digits(upTo)}.${nonce}.${n}`;
        if ((await objects.create(name, body)) === undefined) throw new StrataError('integrity', `the catalog journal already holds a different ${name}`);
        parts.push({ name, size: got, sha256: createHash('sha256').update(body).digest('hex') });
        size += got;
        if (got < PART_BYTES) break;
      }
    } finally {
      fs.closeSync(fd);
    }
  } catch (e) {
    await removeParts(objects, parts);
    throw e;
  } finally {
    fs.rmSync(scratch, { force: true });
  }
  const manifest = Buffer.from(JSON.stringify({ upTo, time: Date.now(), schema, size, parts, waiting, nonce: randomBytes(8).toString('hex') }));
  if ((await objects.create(manifestName(upTo), manifest)) !== undefined) return true;
  await removeParts(objects, parts);
  return false;
}

async function removeParts(objects: ConditionalObjects, parts: readonly CheckpointPart[]): Promise<void> {
  for (const p of parts) await objects.remove(p.name).catch(() => {});
}

/**
 * The checkpoint's catalog, written to `file` (a new file), each part
 * checked against its size and SHA-256 as it comes. A part that is gone
 * means a newer checkpoint replaced this one: `not_found`.
 */
export async function loadCheckpoint(objects: ConditionalObjects, cp: Checkpoint, file: string): Promise<void> {
  fs.rmSync(file, { force: true });
  const fd = fs.openSync(file, 'wx', 0o600);
  try {
    let at = 0;
    for (const p of cp.parts) {
      const got = await objects.read(p.name);
      if (!got) throw new StrataError('not_found', `part ${p.name} of checkpoint ${cp.upTo} is gone (a newer checkpoint replaced it)`);
      if (got.body.length !== p.size || createHash('sha256').update(got.body).digest('hex') !== p.sha256) {
        throw new StrataError('integrity', `part ${p.name} of checkpoint ${cp.upTo} of the catalog journal is damaged`);
      }
      for (let done = 0; done < got.body.length; ) done += fs.writeSync(fd, got.body, done, got.body.length - done, at + done);
      at += got.body.length;
    }
  } catch (e) {
    fs.closeSync(fd);
    fs.rmSync(file, { force: true });
    throw e;
  }
  fs.closeSync(fd);
}

/** Removes a checkpoint: its manifest first (so nobody starts to read it), then its parts. */
export async function removeCheckpoint(objects: ConditionalObjects, upTo: number): Promise<void> {
  const cp = await readCheckpoint(objects, upTo).catch(() => undefined);
  await objects.remove(manifestName(upTo));
  if (cp) await removeParts(objects, cp.parts);
  // Parts a writer left without a manifest (it stopped half way) are left: they are named by the number, and found by it.
  for await (const name of objects.names({ prefix: `${PART}${digits(upTo)}.` })) await objects.remove(name).catch(() => {});
}
