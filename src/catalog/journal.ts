/**
 * The catalog journal of a repository in a bucket: what each writer (a
 * `strata serve` over the bucket, or a client using it directly) adds to
 * its catalog, kept in the bucket in the clear form the catalog itself
 * holds (keyed ids, sizes, offsets, sealed metadata), so that a keeper of
 * the catalog without the key (a server) can follow the others' writes.
 * A pack's own index and a snapshot's record are sealed: only a key holder
 * can read them (engine/rebuild.ts), so a keyless server could never learn
 * another writer's backup from the packs alone.
 *
 * Entries are objects created once (ConditionalObjects), named:
 * - `p.PACK`: a pack's index as the catalog got it (written before the
 *   catalog indexes the pack);
 * - `v.SNAPSHOT.N`: the Nth batch of a snapshot's versions (as stored);
 * - `c.SNAPSHOT`: the snapshot's row, its parent (by id), its batch count
 *   and its commit: written once the catalog checked every block the
 *   snapshot uses is stored, before the catalog commits it. A commit entry
 *   is the one a follower looks for; the others are read through it.
 *
 * Following (follow()) is one listing of the journal: packs the catalog
 * does not have and the bucket holds are indexed, then snapshots it does not
 * have are replayed (parents first) through the same service calls a backup
 * makes, so the follower builds the same TOCs. A snapshot whose blocks are
 * not all found is left out (and tried again at the next follow).
 *
 * What the journal does not carry: forget, prune and tag (a maintenance);
 * see docs/ARCHITECTURE.md.
 */
import { StrataError } from '../errors.js';
import type { ConditionalObjects } from '../storage/storage.js';
import { newSnapshot, packIndex, snapshotCommit, versionUploads, type NewSnapshot, type SnapshotCommit } from './messages.js';
import { PACK_MAGIC, type PackEntry } from './packs.js';
import { checkPackLayout } from './wire.js';
import type { FollowResult, Journal, JournalTarget, VersionUpload } from './service.js';

interface CommitEntry {
  begin: NewSnapshot & { parentId: string | null };
  batches: number;
  commit: SnapshotCommit;
}

/** A snapshot being written here: its batches so far. */
interface Writing {
  id: string;
  inherits: boolean;
  batches: number;
}

export class CatalogJournal implements Journal {
  private readonly writing = new Map<number, Writing>();

  constructor(private readonly objects: ConditionalObjects) {}

  private async create(name: string, body: Buffer): Promise<void> {
    // Undefined: the name is taken by other bytes. Each entry is made once by
    // the one writer of its pack or snapshot, so that is a journal tampered with.
    if ((await this.objects.create(name, body)) === undefined) {
      const there = await this.objects.read(name);
      if (!there?.body.equals(body)) throw new StrataError('integrity', `the catalog journal already holds a different ${name}`);
    }
  }

  /** Before the catalog indexes a pack. */
  async recordPack(name: string, entries: readonly PackEntry[], relocate: boolean): Promise<void> {
    await this.create(`p.${name}`, json(packIndex.encode({ entries, relocate, replaces: [] })));
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
    const entry = { begin: { ...(newSnapshot.encode({ ...row, inherits: w.inherits }) as object), parentId }, batches: w.batches, commit: snapshotCommit.encode(commit) };
    await this.create(`c.${w.id}`, json(entry));
  }

  /** The snapshot is committed (or abandoned): nothing more is written for it. */
  done(seq: number): void {
    this.writing.delete(seq);
  }

  /** Brings `target`'s catalog up to date with the journal (see the module comment). */
  async follow(target: JournalTarget): Promise<FollowResult> {
    const r: FollowResult = { packs: 0, snapshots: 0, problems: [] };
    const { catalog } = target;
    const packs: string[] = [];
    const commits: string[] = [];
    for await (const name of this.objects.names()) {
      if (name.startsWith('p.')) packs.push(name.slice(2));
      else if (name.startsWith('c.')) commits.push(name.slice(2));
    }
    const knownPacks = new Set(catalog.packNames());
    for (const name of packs.filter((p) => !knownPacks.has(p))) {
      const size = await target.storage.stat({ kind: 'pack', name }).then(
        (s) => s.size,
        () => undefined,
      );
      // Not stored (yet, or any more: its upload failed, or a prune removed it).
      if (size === undefined) continue;
      try {
        const entry = await this.objects.read(`p.${name}`);
        if (!entry) continue;
        const index = packIndex.decode(JSON.parse(entry.body.toString('utf8')), `journal entry p.${name}`);
        checkPackLayout(index.entries, size, PACK_MAGIC.length);
        target.indexPack(name, size, index.entries, index.relocate);
        r.packs++;
      } catch (e) {
        // A damaged entry: its pack stays unknown here (and so do snapshots that need it).
        if (!(e instanceof SyntaxError) && !(e instanceof StrataError)) throw e;
        r.problems.push(`pack ${name.slice(0, 16)}: ${(e as Error).message}`);
      }
    }

    const known = new Set(catalog.snapshots().map((s) => s.id));
    let todo = commits.filter((id) => !known.has(id));
    const entries = new Map<string, CommitEntry>();
    for (const id of todo) {
      const e = await this.objects.read(`c.${id}`);
      try {
        if (e) entries.set(id, readCommit(e.body, id));
      } catch (err) {
        if (!(err instanceof SyntaxError) && !(err instanceof StrataError)) throw err;
        r.problems.push(`snapshot ${id.slice(0, 8)}: ${(err as Error).message}`);
      }
    }
    todo = todo.filter((id) => entries.has(id));
    // Parents first: a snapshot waits for its parent while the parent is still to come.
    for (let progress = true; progress && todo.length > 0; ) {
      progress = false;
      for (const id of [...todo]) {
        const { begin } = entries.get(id)!;
        if (begin.parentId !== null && !known.has(begin.parentId) && todo.includes(begin.parentId)) continue;
        todo = todo.filter((x) => x !== id);
        progress = true;
        try {
          await this.replay(target, id, entries.get(id)!);
          known.add(id);
          r.snapshots++;
        } catch (e) {
          r.problems.push(`snapshot ${id.slice(0, 8)}: ${(e as Error).message}`);
        }
      }
    }
    return r;
  }

  private async replay(target: JournalTarget, id: string, e: CommitEntry): Promise<void> {
    const { catalog } = target;
    const b = e.begin;
    const parent = b.parentId === null ? null : (catalog.snapshotsByPrefix(b.parentId).find((s) => s.id === b.parentId)?.seq ?? null);
    if (b.parentId !== null && parent === null && b.inherits) throw new StrataError('not_found', `its parent ${b.parentId.slice(0, 8)} is not in the catalog`);
    const seq = catalog.beginSnapshot(id, b.time, b.lineage, b.meta, parent, null, b.inherits);
    try {
      for (let i = 0; i < e.batches; i++) {
        const batch = await this.objects.read(`v.${id}.${i}`);
        if (!batch) throw new StrataError('not_found', `journal entry v.${id.slice(0, 8)}.${i} is missing`);
        await target.storeVersions(seq, versionUploads.decode(batch.body, `journal entry v.${id.slice(0, 8)}.${i}`));
      }
      await target.commitSnapshot(seq, e.commit.root, e.commit.record, e.commit.meta, e.commit.blobs);
    } catch (err) {
      catalog.transaction(() => catalog.deleteSnapshot(seq));
      throw err;
    }
  }
}

function json(value: unknown): Buffer {
  return Buffer.from(JSON.stringify(value));
}

function readCommit(body: Buffer, id: string): CommitEntry {
  const where = `journal entry c.${id.slice(0, 8)}`;
  const j = JSON.parse(body.toString('utf8')) as { begin?: Record<string, unknown>; batches?: unknown; commit?: unknown };
  const begin = newSnapshot.decode(j.begin, where);
  const parentId = j.begin?.parentId;
  if (begin.id !== id || (parentId !== null && (typeof parentId !== 'string' || !/^[0-9a-f]{64}$/.test(parentId)))) throw new StrataError('integrity', `${where} is malformed`);
  if (!Number.isSafeInteger(j.batches) || (j.batches as number) < 0) throw new StrataError('integrity', `${where} is malformed`);
  return { begin: { ...begin, parentId: parentId as string | null }, batches: j.batches as number, commit: snapshotCommit.decode(j.commit, where) };
}
