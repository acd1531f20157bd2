/**
 * Rebuilding catalog.db from the block store alone. Every pack carries a
 * sealed index of its blobs; snapshot records, trees and TOCs are sealed blobs
 * themselves. The old catalog (if any) is kept beside the new one.
 *
 * A snapshot forgotten but not yet pruned still has its record in a pack and
 * comes back; prune makes a forget final.
 */
import { integrity } from '../errors.js';
import { decodePackIndex } from '../repo/pack.js';
import type { Repository } from '../repo/repository.js';
import { contentMark } from '../catalog/blocklist.js';
import { metaAad, type SnapshotRecord } from './snapshot.js';
import { manifestBlobs } from './manifest.js';
import { decodeTree, findEntry, MAX_TREE_DEPTH, treeIds, type Tree, type TreeEntry } from './tree.js';
import { sealedTocEntries, type SealedToc, type SealedTocSegment } from './versions.js';
import { tocRows, type TargetVersion } from '../catalog/toc-rows.js';
import { CatalogJournal } from '../catalog/journal.js';
import { LocalService } from '../catalog/service.js';

export interface RebuildResult {
  packs: number;
  blocks: number;
  snapshots: number;
  versions: number;
  damagedPacks: string[];
  /** File versions left out, and why (their TOC names a snapshot no pack holds). */
  problems: string[];
  previous?: string;
}

/** Rebuilds the catalog of `repo` (opened on a fresh, empty catalog file). */
export async function rebuildCatalog(repo: Repository, onProgress: (m: string) => void = () => {}): Promise<RebuildResult> {
  const r: RebuildResult = { packs: 0, blocks: 0, snapshots: 0, versions: 0, damagedPacks: [], problems: [] };
  const names: string[] = [];
  for await (const name of repo.storage.list('pack')) names.push(name);
  const { records, tocs } = await indexPacks(repo, names, r, onProgress);
  await restoreSnapshots(repo, latestRecords(records), tocs, new Map(), r, onProgress);
  return r;
}

/**
 * Indexes the packs `names` (each pack's sealed index) in the catalog, and
 * returns the snapshot records and sealed TOCs they hold.
 */
async function indexPacks(
  repo: Repository,
  names: readonly string[],
  r: RebuildResult,
  onProgress: (m: string) => void,
): Promise<{ records: SnapshotRecord[]; tocs: Map<string, SealedToc> }> {
  const { catalog, storage, keyring } = repo;
  const records: SnapshotRecord[] = [];
  const tocs = new Map<string, SealedToc>();
  for (const [i, name] of names.entries()) {
    onProgress(`reading pack ${i + 1}/${names.length}`);
    try {
      const { size } = await storage.stat({ kind: 'pack', name });
      const tailLength = Math.min(size, 4 * 1024 * 1024);
      let tail = await storage.read({ kind: 'pack', name }, size - tailLength, tailLength);
      const indexLength = tail.readUInt32LE(tail.length - 12) + 12;
      if (indexLength > tail.length) tail = await storage.read({ kind: 'pack', name }, size - indexLength, indexLength);
      const entries = decodePackIndex(keyring, tail, size);
      catalog.addPack(name, size, entries);
      r.packs++;
      r.blocks += entries.length;
      for (const e of entries) {
        if (e.kind !== 'snapshot' && e.kind !== 'toc') continue;
        const plain = await repo.decode(e.id, await storage.read({ kind: 'pack', name }, e.offset, e.length), Number.MAX_SAFE_INTEGER);
        const value = JSON.parse(plain.toString('utf8'));
        if (e.kind === 'snapshot') records.push({ ...(value as SnapshotRecord), recordId: e.id.toString('hex') } as SnapshotRecord);
        else {
          const t = value as SealedToc | SealedTocSegment;
          if ('segment' in t) continue; // read with the TOC that lists it
          const key = `${t.snapshot}/${t.path}`;
          if (!tocs.has(key) || (tocs.get(key)!.generation ?? 0) < (t.generation ?? 0)) tocs.set(key, { ...t, tocId: e.id.toString('hex') } as SealedToc);
        }
      }
    } catch (e) {
      r.damagedPacks.push(name);
      onProgress(`pack ${name.slice(0, 16)} is damaged: ${(e as Error).message}`);
    }
  }

  return { records, tocs };
}

/** The sealed meta the catalog keeps for a snapshot, from its record. */
function sealedMetaOf(repo: Repository, s: SnapshotRecord): Buffer {
  const meta = { host: s.host, tags: s.tags, paths: s.paths, ...(s.parent ? { parent: s.parent } : {}), ...(s.xattrs ? { xattrs: s.xattrs } : {}), ...(s.stats ? { stats: s.stats } : {}), ...(s.unreadable ? { unreadable: s.unreadable } : {}), ...(s.datasets ? { datasets: s.datasets } : {}), ...(s.copiedFrom ? { copiedFrom: s.copiedFrom } : {}), ...(s.original ? { original: s.original } : {}), root: s.root, time: s.time };
  return repo.keyring.sealJson(meta, metaAad(s.id));
}

/** A snapshot whose tags changed has several records: the highest revision is the one in force. */
function latestRecords(records: readonly SnapshotRecord[]): SnapshotRecord[] {
  const latest = new Map<string, SnapshotRecord>();
  for (const s of records) if ((latest.get(s.id)?.revision ?? -1) < (s.revision ?? 0)) latest.set(s.id, s);
  return [...latest.values()];
}

/**
 * Puts the snapshots of `records` in the catalog with their versions, from
 * their sealed TOCs. `seqOf` holds the snapshots the catalog has already (by
 * id), which new ones may have as parents; it gains the new ones.
 */
async function restoreSnapshots(
  repo: Repository,
  records: SnapshotRecord[],
  tocs: ReadonlyMap<string, SealedToc>,
  seqOf: Map<string, number>,
  r: RebuildResult,
  onProgress: (m: string) => void,
): Promise<void> {
  const { catalog, keyring } = repo;
  // Parents before children, so every ref finds its target version.
  const byId = new Map(records.map((s) => [s.id, s]));
  /** A parent's record: one being restored, or (when adding to a catalog) one it has, read from the store. */
  const parentOf = async (s: SnapshotRecord): Promise<SnapshotRecord | undefined> => {
    if (!s.parent) return undefined;
    const here = byId.get(s.parent);
    if (here) return here;
    const seq = seqOf.get(s.parent);
    const record = seq === undefined ? null : catalog.snapshotRecord(seq);
    if (!record) return undefined;
    return JSON.parse((await repo.readBlob(record, 'snapshot')).toString('utf8')) as SnapshotRecord;
  };
  const ordered: SnapshotRecord[] = [];
  const placed = new Set<string>();
  const place = (s: SnapshotRecord, depth = 0) => {
    if (placed.has(s.id) || depth > records.length) return;
    if (s.parent && byId.has(s.parent)) place(byId.get(s.parent)!, depth + 1);
    placed.add(s.id);
    ordered.push(s);
  };
  [...records].sort((a, b) => Date.parse(a.time) - Date.parse(b.time)).forEach((s) => place(s));

  const tocsBySnapshot = new Map<string, SealedToc[]>();
  for (const t of tocs.values()) tocsBySnapshot.set(t.snapshot, [...(tocsBySnapshot.get(t.snapshot) ?? []), t]);
  const seenByLineage = new Map<string, Seen>();
  for (const s of ordered) {
    onProgress(`restoring snapshot ${s.id.slice(0, 8)}`);
    const sealedMeta = sealedMetaOf(repo, s);
    const seq = catalog.beginSnapshot(s.id, Date.parse(s.time), keyring.lineageId(s.host, s.paths), sealedMeta, s.parent ? (seqOf.get(s.parent) ?? null) : null);
    seqOf.set(s.id, seq);
    for (const t of tocsBySnapshot.get(s.id) ?? []) {
      // Each ref names its target snapshot; the path is the same. A version
      // whose target is lost is left out (check then names the file), the rest goes on.
      try {
        const raw = await sealedTocEntries(repo, t);
        const path = Buffer.from(t.path, 'hex');
        const targets = new Map<string, TargetVersion>();
        const targetOf = (snapshot: string): TargetVersion => {
          let target = targets.get(snapshot);
          if (!target) {
            const targetSeq = seqOf.get(snapshot);
            const row = targetSeq === undefined ? undefined : catalog.version(targetSeq, path);
            if (!row) throw integrity(`a file of snapshot ${s.id.slice(0, 8)} refers to its version in snapshot ${snapshot.slice(0, 8)}, which could not be restored`);
            targets.set(snapshot, (target = { id: row.id, snapshotId: snapshot, depth: row.depth }));
          }
          return target;
        };
        function* rows() {
          for (const e of raw) {
            if (e.length === 3) yield* tocRows(catalog, [{ kind: 'data', start: e[0], end: e[1], block: Buffer.from(e[2], 'hex') }], undefined);
            else yield* tocRows(catalog, [{ kind: 'ref', start: e[0], end: e[1], targetStart: e[3], targetEnd: e[3] + (e[1] - e[0]) }], targetOf(e[2]));
          }
        }
        const segments = (t.segments ?? []).map((hex) => Buffer.from(hex, 'hex'));
        catalog.insertVersion(seq, path, t.size, Buffer.from((t as SealedToc & { tocId: string }).tocId, 'hex'), rows(), segments);
        r.versions++;
      } catch (e) {
        r.problems.push((e as Error).message);
      }
    }
    const sealed = (pathHex: string) => tocs.has(`${s.id}/${pathHex}`);
    const lineage = keyring.lineageId(s.host, s.paths).toString('hex');
    if (!seenByLineage.has(lineage)) seenByLineage.set(lineage, new Map());
    r.versions += await unchangedVersions(repo, s, seq, await parentOf(s), seqOf, sealed, seenByLineage.get(lineage)!, r.problems);
    const blobs = [Buffer.from((s as SnapshotRecord & { recordId: string }).recordId, 'hex'), ...(await treeIds(repo, s.root, false)), ...(await manifestBlobs((id) => repo.readBlob(id, 'tree'), s.datasets))];
    catalog.commitSnapshot(seq, Buffer.from(s.root, 'hex'), blobs[0]!, sealedMeta, blobs);
    r.snapshots++;
  }
}


/**
 * Per lineage, each path's latest restored version: the snapshot holding it
 * and its tree entry's size, times and inode. A file unchanged since a parent
 * that a forget removed is found here (see unchangedVersions).
 */
type Seen = Map<string, { key: string; seq: number }>;
const entryKey = (e: TreeEntry) => `${e.size}/${e.mtimeNs}/${e.ctimeNs}/${e.ino}`;

/**
 * A file unchanged since the parent snapshot has no sealed TOC: its version
 * is one ref to the parent's version of the same path. It is recreated for
 * every file of the snapshot that still has no version, but only where the
 * parent's tree holds the same file (size, times and inode, the test backup
 * applied), so a lost TOC of a changed file is never mistaken for one.
 *
 * The parent may be gone: a forget hands a snapshot's own versions down to
 * its children (resealed there), but not those its children inherited
 * through it from further back. Those are found as the lineage's latest
 * version of the path, under the same test.
 */
async function unchangedVersions(
  repo: Repository,
  s: SnapshotRecord,
  seq: number,
  parent: SnapshotRecord | undefined,
  seqOf: ReadonlyMap<string, number>,
  /** Whether a sealed TOC was found for this path (its failure is reported already). */
  sealed: (pathHex: string) => boolean,
  seen: Seen,
  problems: string[],
): Promise<number> {
  const { catalog, keyring } = repo;
  const trees = new Map<string, Tree | null>();
  const tree = async (id: string): Promise<Tree | null> => {
    if (!trees.has(id)) trees.set(id, await repo.readBlob(Buffer.from(id, 'hex'), 'tree').then((b) => decodeTree(b, id), () => null));
    if (trees.size > 64) trees.delete(trees.keys().next().value!);
    return trees.get(id) ?? null;
  };
  const inParent = async (names: string[]): Promise<TreeEntry | undefined> => {
    let id: string | undefined = parent?.root;
    for (const [i, name] of names.entries()) {
      const t = id ? await tree(id) : null;
      const e = t ? findEntry(t, name) : undefined;
      if (!e || i === names.length - 1) return e;
      id = e.type === 'dir' ? e.tree : undefined;
    }
    return undefined;
  };
  let made = 0;
  const stack: { id: string; names: string[] }[] = [{ id: s.root, names: [] }];
  while (stack.length > 0) {
    const { id, names } = stack.pop()!;
    const t = names.length > MAX_TREE_DEPTH ? null : await tree(id);
    if (!t) continue; // check names what a damaged tree hides
    for (const e of t.entries) {
      const path = [...names, e.name];
      if (e.type === 'dir' && e.tree) stack.push({ id: e.tree, names: path });
      if (e.type !== 'file') continue;
      const abs = '/' + path.join('/');
      const pathId = keyring.pathId(abs);
      const pathHex = pathId.toString('hex');
      const remember = () => seen.set(pathHex, { key: entryKey(e), seq });
      if (catalog.version(seq, pathId)) {
        remember();
        continue;
      }
      if (sealed(pathHex)) continue;
      if (e.block) {
        // A file of one block (format 3): its tree entry names the block, and that is the version.
        catalog.insertVersion(seq, pathId, e.size, null, tocRows(catalog, [{ kind: 'data', start: 0, end: e.size - 1, block: Buffer.from(e.block, 'hex') }], undefined));
        remember();
        made++;
        continue;
      }
      if (e.size === 0) {
        // An empty file needs no parent to be read back.
        catalog.insertVersion(seq, pathId, 0, null, []);
        remember();
        made++;
        continue;
      }
      const before = await inParent(path);
      const parentSeq = parent ? seqOf.get(parent.id) : undefined;
      let target = parentSeq === undefined ? undefined : catalog.version(parentSeq, pathId);
      // Unchanged since the parent: by its stats, or (marked at backup) by its content.
      if (!((e.parentContent || (before?.type === 'file' && entryKey(before) === entryKey(e))) && target)) {
        const last = seen.get(pathHex);
        target = last?.key === entryKey(e) ? catalog.version(last.seq, pathId) : undefined;
        if (!target && e.parentContent && last) {
          // The parent is gone: the version seen last in this lineage serves if it holds the same content.
          const candidate = catalog.version(last.seq, pathId);
          if (candidate && contentMark(keyring, await repo.service.blockList(candidate.id, candidate.size)) === e.parentContent) target = candidate;
        }
      }
      if (!target || target.size !== e.size) {
        problems.push(`${abs} in snapshot ${s.id.slice(0, 8)} has no TOC in any pack`);
        continue;
      }
      const rows = tocRows(catalog, [{ kind: 'ref', start: 0, end: e.size - 1, targetStart: 0, targetEnd: e.size - 1 }], { id: target.id, snapshotId: '', depth: target.depth });
      catalog.insertVersion(seq, pathId, e.size, null, rows);
      remember();
      made++;
    }
  }
  return made;
}

/**
 * For a repository in a bucket: writes into its catalog journal what the
 * catalog (rebuilt from the packs, with the key) holds and the journal
 * lacks, so that servers over the bucket, which have no key, serve it too: a
 * bucket written before the journal has none. Undefined for other
 * repositories.
 */
export async function journalCatalog(repo: Repository, onProgress: (m: string) => void = () => {}): Promise<{ packs: number; snapshots: number } | undefined> {
  const journal = repo.service instanceof LocalService ? repo.service.journal : undefined;
  if (!repo.cachedCatalog || !(journal instanceof CatalogJournal)) return undefined;
  return journal.seed(repo.catalog, onProgress);
}

/**
 * A repository whose catalog is a local cache (one in a bucket) with that
 * cache brought up to date, as found by one listing of the packs: packs it
 * does not know (another client's backup or tag, a crash between a pack's
 * upload and its indexing) are added (`added`); when packs it knows are gone
 * (another client's prune), or adding them meets a problem, it is rebuilt
 * from every pack (`rebuilt`); left as it is while another process here
 * holds a lease on it. Returns the repository to go on with: a new one when
 * the cache changed. Other repositories are returned as they are.
 */
export async function refreshCatalog(
  repo: Repository,
  onProgress: (m: string) => void = () => {},
  /** The listing's answer, when the caller asked for it already (catalogDrift). */
  asked?: Promise<{ added: string[]; removed: string[] }>,
): Promise<{ repo: Repository; rebuilt?: RebuildResult; added?: RebuildResult }> {
  if (!repo.cachedCatalog) return { repo };
  const drift = await (asked ?? repo.catalogDrift());
  if (drift.added.length === 0 && drift.removed.length === 0) return { repo };
  // Another process here is working on this cache (its packs may be the new ones): it is not swapped
  // under it. This command goes on with the cache as it is; the leases keep a maintenance from acting on it.
  if (repo.catalogBusy()) return { repo };
  if (drift.removed.length === 0) {
    // Only packs added (other clients' backups, tags): they are indexed into a copy of the cache.
    const next = repo.rebuilding('copy');
    try {
      const added = await addPacks(next.repo, drift.added, onProgress);
      if (added.damagedPacks.length === 0 && added.problems.length === 0) return { repo: next.install(), added };
    } catch {
      // A rebuild from every pack is the reference: it decides.
    }
    next.discard();
  }
  const next = repo.rebuilding();
  let rebuilt: RebuildResult;
  try {
    rebuilt = await rebuildCatalog(next.repo, onProgress);
  } catch (e) {
    next.discard();
    throw e;
  }
  return { repo: next.install(), rebuilt };
}

/**
 * For a process that goes on with one repository object (a mount of a
 * bucket's repository, following other clients' backups): its catalog cache
 * brought up to date as refreshCatalog does, and taken on by `repo` itself.
 * True when the catalog changed. Other repositories are left as they are.
 */
export async function followCatalog(repo: Repository): Promise<boolean> {
  if (!repo.cachedCatalog) return false;
  const { repo: next } = await refreshCatalog(repo);
  if (next === repo) return false;
  repo.adopt(next);
  return true;
}

/**
 * Indexes packs the catalog lacks, and restores the snapshots whose records
 * they hold (a new record of a snapshot it has, a tag's, replaces the one in
 * force if its revision is higher), as a rebuild would, without reading the
 * packs it knows.
 */
async function addPacks(repo: Repository, names: readonly string[], onProgress: (m: string) => void): Promise<RebuildResult> {
  const { catalog } = repo;
  const r: RebuildResult = { packs: 0, blocks: 0, snapshots: 0, versions: 0, damagedPacks: [], problems: [] };
  const { records, tocs } = await indexPacks(repo, names, r, onProgress);
  const seqOf = new Map(catalog.snapshots().map((row) => [row.id, row.seq]));
  const latest = latestRecords(records);
  for (const s of latest.filter((x) => seqOf.has(x.id))) {
    const seq = seqOf.get(s.id)!;
    const current = catalog.snapshotRecord(seq);
    const inForce = current ? (JSON.parse((await repo.readBlob(current, 'snapshot')).toString('utf8')) as SnapshotRecord) : undefined;
    if ((s.revision ?? 0) > (inForce?.revision ?? 0)) catalog.setSnapshotRecord(seq, Buffer.from((s as SnapshotRecord & { recordId: string }).recordId, 'hex'), sealedMetaOf(repo, s));
  }
  await restoreSnapshots(repo, latest.filter((x) => !seqOf.has(x.id)), tocs, seqOf, r, onProgress);
  return r;
}
