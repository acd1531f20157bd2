/**
 * The catalog journal of a repository in a bucket: what each writer (a
 * `strata serve` over the bucket, or a client using it directly) changes in
 * its catalog, kept in the bucket in the clear form the catalog itself
 * holds (keyed ids, sizes, offsets, sealed metadata), so that a keeper of
 * the catalog without the key (a server) can follow the others' writes.
 * A pack's own index and a snapshot's record are sealed: only a key holder
 * can read them (engine/rebuild.ts), so a keyless server could never learn
 * another writer's backup from the packs alone.
 *
 * The journal is a log of records, each an object created once
 * (ConditionalObjects) under a name that holds its sequence number:
 * `l.` and 16 digits, 9999999999999999 minus the number, so a listing (in
 * name order) gives the newest first. A writer creates number n+1 only once
 * it knows n exists (it made n, or found the name taken and listed the
 * newest), so the numbers have no gaps, and a follower that has applied up
 * to n finds what is new by listing until it meets n: when nothing is new,
 * that is one request answered with a few names.
 *
 * Records (JSON, each with a random `nonce` so that no two are the same
 * bytes), by `kind`:
 * - `pack`: a pack's name, size and index as the catalog got it (written
 *   once the pack is stored, before the catalog indexes it);
 * - `commit`: a snapshot's row, its parent (by id), how many batches of
 *   versions it has and its commit, written once the catalog checked every
 *   block the snapshot uses is stored, before the catalog commits it. The
 *   batches are objects of their own, `v.SNAPSHOT.N`, written as the
 *   versions are stored and read through the commit;
 * - `forget`: the snapshots a forget removes (by id), before it does;
 * - `tag`: a snapshot's new sealed record and metadata (a tag);
 * - `tocs`: the sealed TOCs of versions (by snapshot id and path id) that a
 *   forget rewrote, resealed by a client with the key;
 * - `prune`: packs a prune removes, before their files are deleted;
 * - `repair`: blocks `check --repair` drops from the index (damaged or
 *   missing), each with the pack of the copy dropped, before it does.
 *
 * Following (follow()) applies the new records in order through the same
 * catalog calls the writer made, so the follower builds the same catalog.
 * A process passes over the records it wrote (it applies each itself once
 * written), and stops short of a number it is creating; applying a record
 * twice changes nothing besides. A commit whose parent or blocks are not there (yet) waits, and is
 * tried again after each record that may bring them; a damaged record is
 * left out and said once.
 */
import { randomBytes } from 'node:crypto';
import { StrataError } from '../errors.js';
import type { ConditionalObjects } from '../storage/storage.js';
import { newSnapshot, packIndex, snapshotCommit, versionUploads, type NewSnapshot, type SnapshotCommit } from './messages.js';
import { PACK_MAGIC, type PackEntry } from './packs.js';
import { base64, checkPackLayout, hexId } from './wire.js';
import { BlockList } from './blocklist.js';
import * as fs from 'node:fs';
import { Catalog, GONE } from './catalog.js';
import { blocksOf } from './resolve.js';
import { JournalCompacted, checkpointNumbers, loadCheckpoint, newestCheckpoint, readCheckpoint, removeCheckpoint, uploadCheckpoint, type Checkpoint } from './checkpoint.js';
import type { FollowResult, Journal, JournalTarget, JournaledToc, VersionUpload } from './service.js';

const LOG = 'l.';
const DIGITS = 16;
const TOP = 9_999_999_999_999_999n;
/** Names a follow asks for first: when nothing is new, the answer holds the newest it knows. */
const FIRST_PAGE = 4;
/** Versions in a batch the seeding of a journal writes. */
const SEED_BATCH = 2000;
/** Records read ahead of the one applied, on a follow with many to apply. */
const READ_AHEAD = 16;

/** The name of record number `seq` (1, 2, ...): newer records sort first. */
export function logName(seq: number): string {
  return LOG + (TOP - BigInt(seq)).toString().padStart(DIGITS, '0');
}

/** The number a record's name holds, or undefined for another name. */
export function logSeq(name: string): number | undefined {
  if (!name.startsWith(LOG) || name.length !== LOG.length + DIGITS || !/^\d+$/.test(name.slice(LOG.length))) return undefined;
  const seq = Number(TOP - BigInt(name.slice(LOG.length)));
  return seq >= 1 && Number.isSafeInteger(seq) ? seq : undefined;
}

interface CommitRecord {
  id: string;
  begin: NewSnapshot & { parentId: string | null };
  batches: number;
  commit: SnapshotCommit;
  /** The record's number, where known (a commit carried by a checkpoint has none). */
  at?: number;
}

type LogRecord =
  | { kind: 'pack'; name: string; size: number; entries: PackEntry[]; relocate: boolean; replaces: string[] }
  | ({ kind: 'commit' } & CommitRecord)
  | { kind: 'forget'; snapshots: string[] }
  | { kind: 'tag'; snapshot: string; record: Buffer; meta: Buffer }
  | { kind: 'tocs'; tocs: JournaledToc[] }
  | { kind: 'prune'; packs: string[] }
  | { kind: 'repair'; blocks: { block: string; pack: string }[] };

/** A snapshot being written here: its batches so far. */
interface Writing {
  id: string;
  inherits: boolean;
  batches: number;
}

export class CatalogJournal implements Journal {
  private readonly writing = new Map<number, Writing>();
  /** The number this writer takes next (undefined: the newest is to be found first). */
  private next?: number;
  /** Appends from this process, one at a time (a number is taken only once the one before exists). */
  private appending: Promise<unknown> = Promise.resolve();
  /** The newest record this follower applied. */
  private applied = 0;
  /**
   * Records this process wrote and applies itself (after writing each): a
   * follow running meanwhile passes over them rather than apply one before
   * the writer does.
   */
  private readonly own = new Set<number>();
  /** Numbers this process is creating now: a follow stops short of them (the name may yet be another writer's). */
  private readonly claiming = new Set<number>();
  /** Commits whose parent or blocks were not there yet, tried again as records come. */
  private readonly waiting = new Map<string, CommitRecord>();

  constructor(private readonly objects: ConditionalObjects) {}

  /** The newest record's number (0 when the journal is empty): one listing of one name. */
  async newest(): Promise<number> {
    for await (const name of this.objects.names({ prefix: LOG, firstPage: 1 })) {
      const seq = logSeq(name);
      if (seq !== undefined) return seq;
    }
    return 0;
  }

  /** The newest record this follower applied (what followers call their place in the journal). */
  get position(): number {
    return this.applied;
  }

  /** Adds a record at the end of the log; its number. */
  private append(record: Record<string, unknown>): Promise<number> {
    const body = Buffer.from(JSON.stringify({ ...record, nonce: randomBytes(8).toString('hex') }));
    const run = this.appending.catch(() => {}).then(async () => {
      for (let tries = 0; tries < 64; tries++) {
        this.next ??= Math.max(await this.newest(), this.applied) + 1;
        const seq = this.next;
        this.claiming.add(seq);
        let made: string | undefined;
        try {
          made = await this.objects.create(logName(seq), body);
        } finally {
          // In the same turn as the record becomes this process's own: no follow sees it as neither.
          this.claiming.delete(seq);
        }
        if (made !== undefined) {
          this.next = seq + 1;
          if (seq > this.applied) this.own.add(seq);
          return seq;
        }
        // Taken by another writer: the newest is looked up again.
        this.next = undefined;
      }
      throw new StrataError('io', 'the catalog journal is too busy: other writers took every number this one tried');
    });
    this.appending = run;
    return run;
  }

  private async create(name: string, body: Buffer): Promise<void> {
    // Undefined: the name is taken by other bytes. Each batch is made once by
    // the one writer of its snapshot, so that is a journal tampered with.
    if ((await this.objects.create(name, body)) === undefined) {
      const there = await this.objects.read(name);
      if (!there?.body.equals(body)) throw new StrataError('integrity', `the catalog journal already holds a different ${name}`);
    }
  }

  /** Before the catalog indexes a stored pack. */
  async recordPack(name: string, size: number, entries: readonly PackEntry[], relocate: boolean, replaces: readonly string[] = []): Promise<void> {
    await this.append({ kind: 'pack', name, size, ...(packIndex.encode({ entries, relocate, replaces: [...replaces] }) as object) });
  }

  /** A snapshot begun here. */
  began(seq: number, id: string, inherits: boolean): void {
    this.writing.set(seq, { id, inherits, batches: 0 });
  }

  /** Before the catalog stores a batch of a snapshot's versions. */
  async recordVersions(seq: number, list: readonly VersionUpload[]): Promise<void> {
    const w = this.writing.get(seq);
    if (!w) throw new StrataError('not_pending', `snapshot ${seq} was not begun here (the process keeping the catalog restarted): start the backup again`);
    if (list.length === 0) return;
    await this.create(`v.${w.id}.${w.batches}`, versionUploads.encode(list) as Buffer);
    w.batches++;
  }

  /** Once the snapshot's blocks are checked, before the catalog commits it. */
  async recordCommit(seq: number, row: Omit<NewSnapshot, 'inherits'>, parentId: string | null, commit: SnapshotCommit): Promise<void> {
    const w = this.writing.get(seq);
    if (!w) throw new StrataError('not_pending', `snapshot ${seq} was not begun here (the process keeping the catalog restarted): start the backup again`);
    const begin = { ...(newSnapshot.encode({ ...row, inherits: w.inherits }) as object), parentId };
    await this.append({ kind: 'commit', id: w.id, begin, batches: w.batches, commit: snapshotCommit.encode(commit) });
  }

  /** The snapshot is committed (or abandoned): nothing more is written for it. */
  done(seq: number): void {
    this.writing.delete(seq);
  }

  /** Before a forget removes these snapshots (by id). */
  async recordForget(snapshots: readonly string[]): Promise<void> {
    if (snapshots.length > 0) await this.append({ kind: 'forget', snapshots });
  }

  /** Before a snapshot's record is replaced (a tag). */
  async recordTag(snapshot: string, record: Buffer, meta: Buffer): Promise<void> {
    await this.append({ kind: 'tag', snapshot, record: record.toString('hex'), meta: meta.toString('base64') });
  }

  /** Before the catalog takes resealed TOCs. */
  async recordTocs(tocs: readonly JournaledToc[]): Promise<void> {
    if (tocs.length === 0) return;
    const hexes = (l: readonly Buffer[]) => l.map((b) => b.toString('hex'));
    await this.append({
      kind: 'tocs',
      tocs: tocs.map((t) => ({ snapshot: t.snapshot, path: t.path.toString('hex'), toc: t.toc.toString('hex'), segments: hexes(t.segments), old: hexes(t.old) })),
    });
  }

  /** Before check --repair drops these blocks (hex ids, each with the pack of the copy dropped) from the catalog's index. */
  async recordRepair(blocks: readonly { block: string; pack: string }[]): Promise<void> {
    if (blocks.length > 0) await this.append({ kind: 'repair', blocks });
  }

  /** Before a prune deletes these packs' files (their rows are gone from the catalog). */
  async recordPrune(packs: readonly string[]): Promise<void> {
    if (packs.length > 0) await this.append({ kind: 'prune', packs });
  }

  /**
   * Writes into the journal what `catalog` holds and the journal lacks: the
   * packs, and the committed snapshots (parents first), with their versions
   * as block lists. For a repository written before the journal: a client
   * with the key rebuilds its catalog from the packs, then writes it here, so
   * that servers (which have no key) can follow. Snapshots a journal from
   * before the numbered log committed (`c.SNAPSHOT` with its batches) are
   * taken as they are. Reads every record first.
   */
  async seed(catalog: Catalog, onProgress: (m: string) => void = () => {}): Promise<{ packs: number; snapshots: number }> {
    const packs = new Set<string>();
    const snapshots = new Set<string>();
    const names: string[] = [];
    for await (const name of this.objects.names({ prefix: LOG })) if (logSeq(name) !== undefined) names.push(name);
    for (const [i, name] of names.entries()) {
      if (i % 100 === 0) onProgress(`reading the catalog journal: ${i} of ${names.length} records`);
      const got = await this.objects.read(name);
      let r: LogRecord;
      try {
        if (!got) continue;
        r = readRecord(got.body);
      } catch {
        continue;
      }
      if (r.kind === 'pack') packs.add(r.name);
      else if (r.kind === 'commit') snapshots.add(r.id);
    }
    // What a checkpoint holds was in records a compaction removed since.
    const cp = await newestCheckpoint(this.objects);
    if (cp) {
      onProgress(`reading the catalog journal's checkpoint of record ${cp.upTo}`);
      const file = `${catalog.db.name}.checkpoint-${randomBytes(4).toString('hex')}`;
      await loadCheckpoint(this.objects, cp, file);
      try {
        const there = new Catalog(file, { readonly: true });
        try {
          for (const name of there.packNames()) packs.add(name);
          for (const id of there.db.prepare('SELECT id FROM snapshots').pluck().all() as string[]) snapshots.add(id);
        } finally {
          there.close();
        }
      } finally {
        for (const f of [file, `${file}-wal`, `${file}-shm`]) fs.rmSync(f, { force: true });
      }
      for (const w of cp.waiting) if (typeof w.id === 'string') snapshots.add(w.id);
    }
    const out = { packs: 0, snapshots: 0 };
    const blocksIn = catalog.db.prepare('SELECT id, kind, offset, length, size FROM blocks WHERE pack = ? ORDER BY offset');
    for (const p of catalog.db.prepare('SELECT id, name, size FROM packs ORDER BY id').all() as { id: number; name: string; size: number }[]) {
      if (packs.has(p.name)) continue;
      const entries = (blocksIn.all(p.id) as (Omit<PackEntry, 'kind'> & { kind: number })[]).map((b) => ({ ...b, kind: (['data', 'tree', 'toc', 'snapshot'] as const)[b.kind]! }));
      // A pack whose every block is indexed in another has nothing to say.
      if (entries.length === 0) continue;
      await this.recordPack(p.name, p.size, entries, false);
      out.packs++;
      if (out.packs % 100 === 0) onProgress(`writing the catalog journal: ${out.packs} packs`);
    }
    const rows = catalog.db.prepare('SELECT seq, id, time, lineage, meta, root, record, parent, inherits FROM snapshots WHERE committed = 1 ORDER BY seq').all() as {
      seq: number;
      id: string;
      time: number;
      lineage: Buffer;
      meta: Buffer;
      root: Buffer;
      record: Buffer;
      parent: number | null;
      inherits: number;
    }[];
    const ownVersions = catalog.db.prepare('SELECT id, path, size, toc FROM versions WHERE snapshot = ? ORDER BY path');
    const blobsOf = catalog.db.prepare('SELECT block FROM snapshot_blobs WHERE snapshot = ?').pluck();
    for (const s of rows) {
      if (snapshots.has(s.id)) continue;
      onProgress(`writing the catalog journal: snapshot ${s.id.slice(0, 8)}`);
      const legacy = await this.objects.read(`c.${s.id}`);
      if (legacy) {
        try {
          const j = JSON.parse(legacy.body.toString('utf8')) as Record<string, unknown>;
          const record = readRecord(Buffer.from(JSON.stringify({ ...j, kind: 'commit', id: s.id })));
          if (record.kind === 'commit') {
            await this.append({ kind: 'commit', id: s.id, begin: j.begin, batches: j.batches, commit: j.commit });
            out.snapshots++;
            continue;
          }
        } catch {
          // Written again below from the catalog.
        }
      }
      const parentId = s.parent === null ? null : (catalog.snapshotBySeq(s.parent)?.id ?? null);
      this.began(s.seq, s.id, s.inherits === 1);
      const versions = ownVersions.all(s.seq) as { id: number; path: Buffer; size: number; toc: Buffer | null }[];
      for (let i = 0; i < versions.length; i += SEED_BATCH) {
        await this.recordVersions(
          s.seq,
          versions.slice(i, i + SEED_BATCH).map((v) =>
            v.size === GONE
              ? { path: v.path, size: GONE, toc: null, segments: [] }
              : { path: v.path, size: v.size, toc: v.toc, segments: [], blocks: v.size === 0 ? new BlockList(1) : blocksOf(catalog, v.id, v.size) },
          ),
        );
      }
      await this.recordCommit(s.seq, { id: s.id, time: s.time, lineage: s.lineage, meta: s.meta, parent: s.parent, lease: '' }, parentId, {
        root: s.root,
        record: s.record,
        meta: s.meta,
        blobs: blobsOf.all(s.seq) as Buffer[],
      });
      this.done(s.seq);
      out.snapshots++;
    }
    return out;
  }

  /** Brings `target`'s catalog up to date with the journal (see the module comment). */
  async follow(target: JournalTarget): Promise<FollowResult> {
    const r: FollowResult = { records: 0, packs: 0, snapshots: 0, changes: 0, problems: [] };
    // Newest first, down to the last one applied.
    const fresh: number[] = [];
    for await (const name of this.objects.names({ prefix: LOG, firstPage: FIRST_PAGE })) {
      const seq = logSeq(name);
      if (seq === undefined) continue;
      if (seq <= this.applied) break;
      fresh.push(seq);
    }
    fresh.reverse();
    // Records after the newest applied that are no longer there: removed by a compaction (or lost).
    if (fresh.length > 0 && fresh[0]! > this.applied + 1) await this.compactedPast(fresh[0]! - 1);
    this.gone = 0;
    const reads = new Map<number, Promise<{ body: Buffer } | undefined>>();
    const read = (i: number) => {
      for (let k = i; k < Math.min(fresh.length, i + READ_AHEAD); k++) {
        if (reads.has(k)) continue;
        const p = this.objects.read(logName(fresh[k]!));
        // Awaited in turn; one that fails before its turn is not left unhandled meanwhile.
        p.catch(() => {});
        reads.set(k, p);
      }
      const p = reads.get(i)!;
      reads.delete(i);
      return p;
    };
    for (let i = 0; i < fresh.length; i++) {
      const seq = fresh[i]!;
      if (this.claiming.has(seq)) break;
      if (seq !== this.applied + 1) r.problems.push(`records ${this.applied + 1} to ${seq - 1} are missing`);
      if (this.own.delete(seq)) {
        this.applied = seq;
        continue;
      }
      const got = await read(i);
      this.applied = seq;
      r.records++;
      let record: LogRecord;
      if (!got) await this.compactedPast(seq);
      try {
        if (!got) throw new StrataError('not_found', 'it is gone');
        record = readRecord(got.body);
      } catch (e) {
        // A damaged record: left out (and the snapshots that need it wait).
        if (!(e instanceof SyntaxError) && !(e instanceof StrataError)) throw e;
        r.problems.push(`record ${seq}: ${(e as Error).message}`);
        continue;
      }
      try {
        if (record.kind === 'commit') record.at = seq;
        await this.apply(target, record, r);
      } catch (e) {
        if (!(e instanceof StrataError)) throw e;
        // A failure that may pass: this record is applied again at the next follow.
        if (e.code === 'io') {
          this.applied = seq - 1;
          throw e;
        }
        r.problems.push(`record ${seq}: ${e.message}`);
      }
    }
    // Commits still waiting (a failure to read their batches, say) are tried again each time.
    if (this.waiting.size > 0) await this.retryWaiting(target, r);
    // A commit whose batches went: a compaction removed them after this follow listed its record.
    if (this.gone > 0) await this.compactedPast(this.gone);
    return r;
  }

  /** The number of the newest commit record found without its batches in this follow (0: none). */
  private gone = 0;

  /**
   * Records up to `seq` are not all there: if a checkpoint covers them, a
   * compaction removed them, and this follower must start again from it
   * (JournalCompacted); if none does, they are lost, and the follow goes on
   * without them (saying so).
   */
  private async compactedPast(seq: number): Promise<void> {
    const [newest] = await checkpointNumbers(this.objects, 1);
    if (newest === undefined || newest < seq) return;
    const cp = await newestCheckpoint(this.objects);
    if (cp && cp.upTo >= seq) throw new JournalCompacted(cp);
  }

  /**
   * Takes `cp` as where this follower stands: its catalog was just loaded
   * from it (loadCheckpoint). What this process was writing into the
   * catalog it replaces is forgotten.
   */
  adopt(cp: Checkpoint): string[] {
    const problems: string[] = [];
    this.applied = cp.upTo;
    this.next = undefined;
    this.writing.clear();
    // Records this process wrote after the checkpoint went into the catalog it replaces: the new one takes them from the journal.
    this.own.clear();
    this.waiting.clear();
    for (const w of cp.waiting) {
      try {
        const record = readRecord(Buffer.from(JSON.stringify({ ...w, kind: 'commit' })));
        if (record.kind === 'commit') this.waiting.set(record.id, record);
      } catch (e) {
        problems.push(`checkpoint ${cp.upTo}: a waiting commit: ${(e as Error).message}`);
      }
    }
    return problems;
  }

  /** The commits waiting for their parent or blocks, as records (for a checkpoint). */
  waitingRecords(): Record<string, unknown>[] {
    return [...this.waiting.values()].map((c) => ({
      id: c.id,
      begin: { ...(newSnapshot.encode(c.begin) as object), parentId: c.begin.parentId },
      batches: c.batches,
      commit: snapshotCommit.encode(c.commit),
    }));
  }

  /** The newest checkpoint's number, without reading it; undefined when there is none. */
  async newestCheckpointNumber(): Promise<number | undefined> {
    return (await checkpointNumbers(this.objects, 1))[0];
  }

  /** The newest checkpoint (see checkpoint.ts), or undefined. */
  newestCheckpoint(): Promise<Checkpoint | undefined> {
    return newestCheckpoint(this.objects);
  }

  /** Writes a checkpoint's catalog to `file`. */
  loadCheckpoint(cp: Checkpoint, file: string): Promise<void> {
    return loadCheckpoint(this.objects, cp, file);
  }

  /**
   * Uploads `copy` (a copy of the follower's catalog made when it had applied
   * `upTo`, with `waiting` still waiting) as a checkpoint, then compacts: the
   * records the checkpoint before it covered are removed, with the batches of
   * the commits among them, and every checkpoint but the two newest. A
   * follower that has not got past them yet starts again from the newest
   * checkpoint (JournalCompacted). False when another follower wrote a
   * checkpoint of the same number first.
   */
  async checkpoint(copy: string, upTo: number, schema: number, waiting: Record<string, unknown>[]): Promise<{ written: boolean; removed: number }> {
    const known = await checkpointNumbers(this.objects);
    if (known.includes(upTo)) return { written: false, removed: 0 };
    const written = await uploadCheckpoint(this.objects, copy, upTo, schema, waiting);
    if (!written) return { written, removed: 0 };
    const all = [upTo, ...known].sort((a, b) => b - a);
    const previous = all[all.indexOf(upTo) + 1];
    let removed = 0;
    if (previous !== undefined) {
      const keep = new Set(waiting.map((w) => String(w.id)));
      const before = await readCheckpoint(this.objects, previous).catch(() => undefined);
      for (const w of before?.waiting ?? []) keep.add(String(w.id));
      removed = await this.removeRecords(previous, keep);
    }
    for (const old of all.slice(2)) await removeCheckpoint(this.objects, old);
    return { written, removed };
  }

  /** Removes records up to `upTo`, oldest first, and the batches of the commits among them (but those of `keep`). */
  private async removeRecords(upTo: number, keep: ReadonlySet<string>): Promise<number> {
    const names: string[] = [];
    for await (const name of this.objects.names({ prefix: LOG })) {
      const seq = logSeq(name);
      if (seq !== undefined && seq <= upTo) names.push(name);
    }
    names.reverse();
    let removed = 0;
    for (const name of names) {
      const got = await this.objects.read(name);
      try {
        const record = got && readRecord(got.body);
        if (record && record.kind === 'commit' && !keep.has(record.id)) {
          for (let i = 0; i < record.batches; i++) await this.objects.remove(`v.${record.id}.${i}`);
        }
      } catch {
        // A damaged record: removed all the same.
      }
      await this.objects.remove(name);
      removed++;
    }
    return removed;
  }

  private async apply(target: JournalTarget, record: LogRecord, r: FollowResult): Promise<void> {
    const { catalog } = target;
    const seqOf = (id: string) => catalog.snapshotsByPrefix(id).find((s) => s.id === id)?.seq;
    switch (record.kind) {
      case 'pack':
        if (catalog.packIndexed(record.name)) return;
        try {
          checkPackLayout(record.entries, record.size, PACK_MAGIC.length);
        } catch (e) {
          r.problems.push(`pack ${record.name.slice(0, 16)}: ${(e as Error).message}`);
          return;
        }
        target.indexPack(record.name, record.size, record.entries, record.relocate, new Set(record.replaces));
        r.packs++;
        if (this.waiting.size > 0) await this.retryWaiting(target, r);
        return;
      case 'commit':
        if (seqOf(record.id) !== undefined) return;
        this.waiting.set(record.id, record);
        await this.retryWaiting(target, r);
        return;
      case 'forget': {
        for (const id of record.snapshots) this.waiting.delete(id);
        const seqs = record.snapshots.map(seqOf).filter((s): s is number => s !== undefined);
        if (seqs.length === 0) return;
        await this.retryWaiting(target, r);
        await target.forget(seqs);
        r.changes++;
        return;
      }
      case 'tag': {
        const seq = seqOf(record.snapshot);
        const w = this.waiting.get(record.snapshot);
        if (w) {
          // Not in the catalog yet: it will be committed with its new record.
          const blobs = w.commit.blobs.filter((b) => !b.equals(w.commit.record));
          w.commit = { ...w.commit, record: record.record, meta: record.meta, blobs: [...blobs, record.record] };
        }
        if (seq === undefined || catalog.snapshotRecord(seq)?.equals(record.record)) return;
        catalog.setSnapshotRecord(seq, record.record, record.meta);
        r.changes++;
        return;
      }
      case 'tocs': {
        const list = record.tocs.flatMap((t) => {
          const seq = seqOf(t.snapshot);
          const v = seq === undefined ? undefined : catalog.ownVersion(seq, t.path);
          return v ? [{ version: v.id, toc: t.toc, segments: t.segments, old: t.old }] : [];
        });
        if (list.length === 0) return;
        target.setVersionTocs(list);
        r.changes++;
        return;
      }
      case 'prune':
        if (target.dropPacks(record.packs) > 0) r.changes++;
        return;
      case 'repair':
        if ((await target.repair(record.blocks)) > 0) r.changes++;
        return;
    }
  }

  /** Replays the commits waiting, parents first; those still lacking their parent or blocks wait on. */
  private async retryWaiting(target: JournalTarget, r: FollowResult): Promise<void> {
    const { catalog } = target;
    const known = (id: string) => catalog.snapshotsByPrefix(id).some((s) => s.id === id);
    for (let progress = true; progress && this.waiting.size > 0; ) {
      progress = false;
      for (const [id, c] of [...this.waiting]) {
        const parent = c.begin.parentId;
        if (parent !== null && !known(parent) && this.waiting.has(parent)) continue;
        try {
          await this.replay(target, c);
          this.waiting.delete(id);
          r.snapshots++;
          progress = true;
        } catch (e) {
          if (!(e instanceof StrataError) || e.code === 'io') throw e;
          // Its parent or blocks may come with a later record (one a key holder writes for an older bucket).
          if (e.code === 'not_found' || e.code === 'missing_blocks') continue;
          this.waiting.delete(id);
          r.problems.push(`snapshot ${id.slice(0, 8)}: ${e.message}`);
        }
      }
    }
  }

  /** Snapshots whose commits are in the journal but not (yet) in the catalog, with why. */
  get waitingSnapshots(): string[] {
    return [...this.waiting.keys()];
  }

  private async replay(target: JournalTarget, e: CommitRecord): Promise<void> {
    const { catalog } = target;
    const b = e.begin;
    const parent = b.parentId === null ? null : (catalog.snapshotsByPrefix(b.parentId).find((s) => s.id === b.parentId)?.seq ?? null);
    if (b.parentId !== null && parent === null && b.inherits) throw new StrataError('not_found', `its parent ${b.parentId.slice(0, 8)} is not in the catalog`);
    const blobs = [e.commit.root, e.commit.record, ...e.commit.blobs];
    const lacking = catalog.hasBlocks(blobs).filter((has) => !has).length;
    if (lacking > 0) throw new StrataError('missing_blocks', `${lacking} blocks it uses are not stored`);
    // The batches first: a transient failure to read one leaves the catalog as it was.
    const batches: VersionUpload[][] = [];
    for (let i = 0; i < e.batches; i++) {
      const batch = await this.objects.read(`v.${e.id}.${i}`);
      if (!batch) {
        if (e.at !== undefined) this.gone = Math.max(this.gone, e.at);
        throw new StrataError('integrity', `journal entry v.${e.id.slice(0, 8)}.${i} is missing`);
      }
      batches.push(versionUploads.decode(batch.body, `journal entry v.${e.id.slice(0, 8)}.${i}`));
    }
    const seq = catalog.beginSnapshot(e.id, b.time, b.lineage, b.meta, parent, null, b.inherits);
    try {
      for (const list of batches) await target.storeVersions(seq, list);
      await target.commitSnapshot(seq, e.commit.root, e.commit.record, e.commit.meta, e.commit.blobs);
    } catch (err) {
      catalog.transaction(() => catalog.deleteSnapshot(seq));
      throw err;
    }
  }
}

const ID = /^[0-9a-f]{64}$/;

function idList(v: unknown, what: string): string[] {
  if (!Array.isArray(v) || !v.every((x) => typeof x === 'string' && ID.test(x))) throw new StrataError('integrity', `${what} must be a list of ids`);
  return v as string[];
}

/** A record as its bytes say, checked: anything malformed is an integrity error. */
function readRecord(body: Buffer): LogRecord {
  const j = JSON.parse(body.toString('utf8')) as Record<string, unknown>;
  const bad = (what: string) => new StrataError('integrity', `a ${String(j.kind)} record with ${what}`);
  switch (j.kind) {
    case 'pack': {
      if (typeof j.name !== 'string' || !ID.test(j.name)) throw bad('no pack name');
      if (!Number.isSafeInteger(j.size) || (j.size as number) < 0) throw bad('no size');
      const index = packIndex.decode(j, `journal record of pack ${j.name.slice(0, 16)}`);
      return { kind: 'pack', name: j.name, size: j.size as number, entries: index.entries as PackEntry[], relocate: index.relocate, replaces: [...index.replaces] };
    }
    case 'commit': {
      if (typeof j.id !== 'string' || !ID.test(j.id)) throw bad('no snapshot id');
      const where = `journal record of snapshot ${j.id.slice(0, 8)}`;
      const raw = j.begin as Record<string, unknown> | undefined;
      const begin = newSnapshot.decode(raw, where);
      const parentId = raw?.parentId;
      if (begin.id !== j.id || (parentId !== null && (typeof parentId !== 'string' || !ID.test(parentId)))) throw bad('a malformed row');
      if (!Number.isSafeInteger(j.batches) || (j.batches as number) < 0) throw bad('no batch count');
      return { kind: 'commit', id: j.id, begin: { ...begin, parentId: parentId as string | null }, batches: j.batches as number, commit: snapshotCommit.decode(j.commit, where) };
    }
    case 'forget':
      return { kind: 'forget', snapshots: idList(j.snapshots, 'snapshots') };
    case 'tag':
      if (typeof j.snapshot !== 'string' || !ID.test(j.snapshot)) throw bad('no snapshot id');
      return { kind: 'tag', snapshot: j.snapshot, record: hexId(j.record, 'record'), meta: base64(j.meta, 'meta') };
    case 'tocs': {
      if (!Array.isArray(j.tocs)) throw bad('no list of TOCs');
      const tocs = j.tocs.map((t: unknown) => {
        const o = (typeof t === 'object' && t !== null ? t : {}) as Record<string, unknown>;
        if (typeof o.snapshot !== 'string' || !ID.test(o.snapshot)) throw bad('a TOC of no snapshot');
        if (typeof o.path !== 'string' || !ID.test(o.path)) throw bad('a TOC of no path');
        const ids = (v: unknown, what: string) => idList(v, what).map((h) => Buffer.from(h, 'hex'));
        return { snapshot: o.snapshot, path: Buffer.from(o.path, 'hex'), toc: hexId(o.toc, 'toc'), segments: ids(o.segments, 'segments'), old: ids(o.old, 'old') };
      });
      return { kind: 'tocs', tocs };
    }
    case 'prune':
      if (!Array.isArray(j.packs) || !j.packs.every((p) => typeof p === 'string' && ID.test(p))) throw bad('no list of packs');
      return { kind: 'prune', packs: j.packs as string[] };
    case 'repair': {
      if (!Array.isArray(j.blocks)) throw bad('no list of blocks');
      const blocks = j.blocks.map((b: unknown) => {
        const o = (typeof b === 'object' && b !== null ? b : {}) as Record<string, unknown>;
        if (typeof o.block !== 'string' || !ID.test(o.block) || typeof o.pack !== 'string' || !ID.test(o.pack)) throw bad('a malformed block');
        return { block: o.block, pack: o.pack };
      });
      return { kind: 'repair', blocks };
    }
    default:
      throw new StrataError('integrity', `a record of unknown kind ${JSON.stringify(j.kind)?.slice(0, 20)}`);
  }
}
