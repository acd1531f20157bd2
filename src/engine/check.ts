/**
 * Check: does the repository hold what its catalog says, and does every
 * snapshot still read back?
 *
 * Structure (always): every pack the catalog names exists with its size;
 * every snapshot's trees decode and every file in them has a version whose
 * rows agree with its sealed TOC (engine/verify.ts); every
 * version's TOC covers it exactly; every data entry names a stored block of
 * the right size; every ref points at an older version (so chains end) and
 * inside it. With readData, every block (or a subset of packs) is read,
 * authenticated and decoded; progress is remembered per pack, so an
 * interrupted or repeated run continues its pass.
 *
 * Damage is reported as what a user needs: which files of which snapshots,
 * which byte ranges of them, following refs from damaged blocks to every
 * later version that reads through them.
 */
import { BLOB_KINDS, type Catalog, type TocRow } from '../repo/catalog.js';
import type { PackEntry } from '../repo/pack.js';
import type { Repository } from '../repo/repository.js';
import type { Storage } from '../storage/storage.js';
import { StrataError } from '../errors.js';
import { fetchDictionary, openDictionary } from '../repo/dictionary.js';
import { Snapshot } from './snapshot.js';
import { sealedDisagreement } from './verify.js';

export type Subset = { kind: 'percent'; percent: number } | { kind: 'part'; part: number; of: number };

export interface CheckOptions {
  readData?: boolean;
  subset?: Subset;
  reset?: boolean;
  /**
   * Drop damaged and missing blocks from the index, so the next backup of a
   * source that still has their data stores them again. Blocks are named by
   * content, so that heals every snapshot that uses them.
   */
  repair?: boolean;
  onProgress?: (message: string) => void;
}

export interface DamagedFile {
  snapshot: string;
  path: string;
  ranges: [number, number][];
}

export interface CheckResult {
  ok: boolean;
  snapshots: number;
  versions: number;
  packs: number;
  packsRead: number;
  packsAlreadyVerified: number;
  errors: string[];
  warnings: string[];
  damagedBlocks: string[];
  damagedFiles: DamagedFile[];
  /** Blocks dropped from the index by repair. */
  repaired: number;
  /**
   * Catalog rows that disagree with the sealed truth (a snapshot's root or
   * time, a file's version or TOC): each is in `errors`; `rebuild-catalog`
   * recomputes them from the packs.
   */
  catalogDisagreements: number;
}

/** A pack as the catalog knows it. */
export interface PackInfo {
  name: string;
  size: number;
  /** When it was last read clean (ms), if ever. */
  checked: number | null;
}

/** A problem with one version's TOC; the client, which knows paths, names the file. */
export interface VersionProblem {
  version: number;
  message: string;
}

export async function check(repo: Repository, opts: CheckOptions = {}): Promise<CheckResult> {
  const { service } = repo;
  const r: CheckResult = { ok: true, snapshots: 0, versions: 0, packs: 0, packsRead: 0, packsAlreadyVerified: 0, errors: [], warnings: [], damagedBlocks: [], damagedFiles: [], repaired: 0, catalogDisagreements: 0 };
  const say = opts.onProgress ?? (() => {});

  // Packs: present, the right size, and nothing the catalog does not know.
  say('checking packs');
  const packCheck = await service.checkPacks();
  const packs = packCheck.packs;
  r.packs = packs.length;
  r.errors.push(...packCheck.errors);
  r.warnings.push(...packCheck.warnings);
  const bad = new Set<string>(packCheck.bad);

  // Dictionaries: each opens under its name (every block compressed with one needs it whole).
  for await (const name of repo.storage.list('dict')) {
    try {
      openDictionary(repo.keyring, name, await fetchDictionary(repo.storage, name));
    } catch (e) {
      r.errors.push(e instanceof StrataError ? e.message : `dictionary ${name}: ${(e as Error).message}`);
    }
  }

  // Blocks: read and decode, pack by pack, remembering progress.
  if (opts.readData) {
    let pass = await service.checkPass(opts.reset ? 'new' : 'current');
    const inScope = opts.subset?.kind === 'percent' ? packs : packs.filter((p) => inSubset(p.name, opts.subset));
    if (inScope.length > 0 && inScope.every((p) => p.checked !== null && p.checked >= pass)) {
      // The last pass finished: this run starts a new one.
      pass = await service.checkPass('new');
    }
    let todo = inScope.filter((p) => !(p.checked !== null && p.checked >= pass));
    r.packsAlreadyVerified = inScope.length - todo.length;
    if (opts.subset?.kind === 'percent') {
      // A random share each run: repeated runs cover the packs not yet verified in this pass.
      const share = Math.max(1, Math.ceil((packs.length * opts.subset.percent) / 100));
      todo = shuffle(todo).slice(0, share);
    }
    for (const [i, p] of todo.entries()) {
      say(`reading pack ${i + 1}/${todo.length}`);
      const blobs = await service.packBlobs(p.name);
      let bytes: Buffer;
      try {
        bytes = await repo.storage.read({ kind: 'pack', name: p.name }, 0, p.size);
      } catch {
        blobs.forEach((b) => bad.add(b.id.toString('hex')));
        continue;
      }
      let clean = true;
      for (const b of blobs) {
        try {
          const plain = await repo.decode(b.id, bytes.subarray(b.offset, b.offset + b.length), Number.MAX_SAFE_INTEGER);
          if (plain.length !== b.size) throw new StrataError('integrity', 'wrong size');
        } catch (e) {
          bad.add(b.id.toString('hex'));
          clean = false;
          // A missing or damaged dictionary is named: it is one object to restore, not a damaged pack.
          const why = e instanceof StrataError && /dictionary/.test(e.message) ? `: ${e.message}` : '';
          r.errors.push(`block ${b.id.toString('hex').slice(0, 16)} (${b.kind}) in pack ${p.name.slice(0, 16)} fails authentication or decoding${why}`);
        }
      }
      if (clean) await service.markChecked(p.name);
      r.packsRead++;
    }
  }

  // Snapshots and trees: every file has a version; remember paths for reports.
  // A row whose root or time is not the sealed one is named, and the others are still checked.
  const rows = await service.snapshots();
  r.snapshots = rows.length;
  const snaps: Snapshot[] = [];
  for (const row of rows) {
    try {
      snaps.push(new Snapshot(repo, row));
    } catch (e) {
      if (!(e instanceof StrataError && e.code === 'integrity')) throw e;
      r.errors.push(e.message);
      r.catalogDisagreements++;
    }
  }
  const pathOf = new Map<number, { snapshot: string; path: string }>();
  // A version inherited by many snapshots is compared once for the same file.
  const compared = new Set<string>();
  for (const s of snaps) {
    say(`checking snapshot ${s.id.slice(0, 8)}`);
    await walkSnapshot(repo, s, r, bad, pathOf, compared);
  }

  // TOCs: coverage, blocks, and refs that point inside older versions.
  say('checking tables of contents');
  const tocs = await service.checkTocs();
  r.versions = tocs.versions;
  const name = (v: number) => (pathOf.has(v) ? `${pathOf.get(v)!.path} in snapshot ${pathOf.get(v)!.snapshot.slice(0, 8)}` : `version ${v}`);
  for (const p of tocs.problems) r.errors.push(`${name(p.version)}: ${p.message}`);
  for (const b of tocs.bad) bad.add(b);

  r.damagedBlocks = [...bad];
  if (bad.size > 0) {
    r.damagedFiles = (await service.damage(r.damagedBlocks))
      .filter((d) => pathOf.has(d.version))
      .map((d) => ({ snapshot: pathOf.get(d.version)!.snapshot, path: pathOf.get(d.version)!.path, ranges: d.ranges }))
      .sort((a, b) => a.path.localeCompare(b.path) || a.snapshot.localeCompare(b.snapshot));
  }
  if (opts.repair && bad.size > 0) r.repaired = await service.repair(r.damagedBlocks);
  r.ok = r.errors.length === 0 && bad.size === 0;
  return r;
}

/** The catalog's half of check, packs: each present with its size; any the catalog does not know. */
export async function checkPacks(catalog: Catalog, storage: Storage): Promise<{ packs: PackInfo[]; errors: string[]; warnings: string[]; bad: string[] }> {
  const db = catalog.db;
  const out = { packs: [] as PackInfo[], errors: [] as string[], warnings: [] as string[], bad: [] as string[] };
  const rows = db.prepare('SELECT id, name, size, checked FROM packs').all() as { id: number; name: string; size: number; checked: number | null }[];
  out.packs = rows.map(({ name, size, checked }) => ({ name, size, checked }));
  const blocksOfPack = db.prepare('SELECT id FROM blocks WHERE pack = ?').pluck();
  const markPackBad = (packId: number) => {
    for (const id of blocksOfPack.all(packId) as Buffer[]) out.bad.push(id.toString('hex'));
  };
  for (const p of rows) {
    try {
      const st = await storage.stat({ kind: 'pack', name: p.name });
      if (st.size !== p.size) {
        out.errors.push(`pack ${p.name.slice(0, 16)} is ${st.size} bytes, the catalog says ${p.size} (truncated or damaged)`);
        markPackBad(p.id);
      }
    } catch {
      // A prune may have replaced it since we listed the packs.
      if (!db.prepare('SELECT 1 FROM packs WHERE id = ?').get(p.id)) continue;
      out.errors.push(`pack ${p.name.slice(0, 16)} is missing`);
      markPackBad(p.id);
    }
  }
  const known = new Set(rows.map((p) => p.name));
  for await (const name of storage.list('pack')) {
    if (!known.has(name)) out.warnings.push(`pack ${name.slice(0, 16)} is not in the catalog (left by an interruption; prune removes it)`);
  }
  return out;
}

/** The blobs the catalog places in a pack (check reads and decodes them). */
export function packBlobs(catalog: Catalog, name: string): PackEntry[] {
  const rows = catalog.db
    .prepare('SELECT b.id, b.kind, b.offset, b.length, b.size FROM blocks b JOIN packs p ON p.id = b.pack WHERE p.name = ? ORDER BY b.offset')
    .all(name) as { id: Buffer; kind: number; offset: number; length: number; size: number }[];
  return rows.map((b) => ({ ...b, kind: BLOB_KINDS[b.kind]! }));
}

/** The current verification pass (started now if there is none, or when a new one is asked for). */
export function checkPass(catalog: Catalog, which: 'current' | 'new'): number {
  const info = catalog.db.prepare("SELECT value FROM info WHERE key = 'check_pass'").pluck();
  if (which === 'new' || info.get() === undefined) catalog.guard(() => catalog.db.prepare("INSERT OR REPLACE INTO info(key, value) VALUES ('check_pass', ?)").run(String(Date.now())));
  return Number(info.get());
}

export function markChecked(catalog: Catalog, name: string): void {
  catalog.guard(() => catalog.db.prepare('UPDATE packs SET checked = ? WHERE name = ?').run(Date.now(), name));
}

/** The catalog's half of check, TOCs: every committed version covered exactly, its blocks stored at their size, its refs inside older versions. */
export function checkTocs(catalog: Catalog): { versions: number; problems: VersionProblem[]; bad: string[] } {
  const db = catalog.db;
  const versions = db
    .prepare('SELECT v.id, v.size, v.snapshot FROM versions v JOIN snapshots s ON s.seq = v.snapshot WHERE s.committed = 1 AND v.size >= 0 ORDER BY v.id')
    .all() as { id: number; size: number; snapshot: number }[];
  const sizeOf = new Map(versions.map((v) => [v.id, v.size]));
  const blockSize = db.prepare('SELECT size FROM blocks WHERE id = ?').pluck();
  const problems: VersionProblem[] = [];
  const bad: string[] = [];
  for (const v of versions) {
    const say = (message: string) => problems.push({ version: v.id, message });
    let cursor = 0;
    for (const row of catalog.tocPages(v.id)) {
      if (row.start !== cursor) say(`TOC ${row.start > cursor ? 'has a gap' : 'overlaps'} at ${cursor}`);
      cursor = row.end + 1;
      if (row.block) {
        const size = blockSize.get(row.block) as number | undefined;
        if (size === undefined) {
          say(`block ${row.block.toString('hex').slice(0, 16)} at ${row.start}-${row.end} is not stored`);
          bad.push(row.block.toString('hex'));
        } else if (size !== row.end - row.start + 1) say(`block at ${row.start} is ${size} bytes, the TOC says ${row.end - row.start + 1}`);
      } else checkRef(row, v.id, sizeOf, say);
    }
    if (cursor !== v.size) say(`TOC covers ${cursor} bytes of ${v.size}`);
  }
  return { versions: versions.length, problems, bad };
}

/** Drops damaged or missing blocks from the index (and packs left with none), so the next backup stores them again. */
export function repairBlocks(catalog: Catalog, bad: readonly string[]): number {
  const db = catalog.db;
  const drop = db.prepare('DELETE FROM blocks WHERE id = ?');
  // A block with a spare copy (schema 7) gets the newest spare in its place; the next check reads it.
  const spare = db.prepare('DELETE FROM spares WHERE id = ? AND pack = (SELECT MAX(pack) FROM spares WHERE id = ?) RETURNING id, pack, offset, length, size, kind');
  const promote = db.prepare('INSERT INTO blocks(id, pack, offset, length, size, kind) VALUES (?, ?, ?, ?, ?, ?)');
  const n = catalog.transaction(() =>
    bad.reduce((count, hex) => {
      const id = Buffer.from(hex, 'hex');
      const dropped = drop.run(id).changes;
      const s = spare.get(id, id) as { id: Buffer; pack: number; offset: number; length: number; size: number; kind: number } | undefined;
      if (s) promote.run(s.id, s.pack, s.offset, s.length, s.size, s.kind);
      return count + dropped;
    }, 0),
  );
  catalog.transaction(() => db.prepare('DELETE FROM packs WHERE NOT EXISTS (SELECT 1 FROM blocks WHERE blocks.pack = packs.id) AND NOT EXISTS (SELECT 1 FROM spares WHERE spares.pack = packs.id)').run());
  return n;
}

function checkRef(row: TocRow, version: number, sizeOf: Map<number, number>, say: (message: string) => void): void {
  for (const [t, ts] of [
    [row.target, row.target_start],
    [row.root, row.root_start],
  ] as const) {
    if (t === null || ts === null) continue;
    if (t >= version) say(`ref at ${row.start} points at a version that is not older (a cycle?)`);
    const size = sizeOf.get(t);
    if (size === undefined) say(`ref at ${row.start} points at a missing version`);
    else if (ts < 0 || ts + (row.end - row.start) >= size) say(`ref at ${row.start} points past the end of its target`);
  }
}

async function walkSnapshot(repo: Repository, s: Snapshot, r: CheckResult, bad: Set<string>, pathOf: Map<number, { snapshot: string; path: string }>, compared: Set<string>): Promise<void> {
  const stack: { path: string; tree: string }[] = [];
  try {
    stack.push({ path: '/', tree: s.root.tree! });
  } catch (e) {
    r.errors.push(`snapshot ${s.id.slice(0, 8)}: ${(e as Error).message}`);
    return;
  }
  while (stack.length > 0) {
    const dir = stack.pop()!;
    let entries;
    try {
      entries = (await s.tree(dir.tree)).entries;
    } catch (e) {
      bad.add(dir.tree);
      r.errors.push(`snapshot ${s.id.slice(0, 8)}: directory ${dir.path} cannot be read (${(e as Error).message})`);
      continue;
    }
    for (const e of entries) {
      const p = dir.path === '/' ? `/${e.name}` : `${dir.path}/${e.name}`;
      if (e.type === 'dir' && e.tree) stack.push({ path: p, tree: e.tree });
      if (e.type !== 'file') continue;
      const v = await repo.service.version(s.row.seq, repo.keyring.pathId(p));
      if (!v) r.errors.push(`snapshot ${s.id.slice(0, 8)}: ${p} has no stored version`);
      else {
        pathOf.set(v.id, { snapshot: s.id, path: p });
        if (v.size !== e.size) r.errors.push(`snapshot ${s.id.slice(0, 8)}: ${p} is ${e.size} bytes, its version ${v.size}`);
        // The catalog's rows against the sealed TOCs, as every read checks them (engine/verify.ts).
        else if (!compared.has(`${v.id}/${p}/${e.mtimeNs}/${e.ctimeNs}/${e.ino}`)) {
          compared.add(`${v.id}/${p}/${e.mtimeNs}/${e.ctimeNs}/${e.ino}`);
          const why = await sealedDisagreement(repo, s, p, e, v);
          if (why) {
            r.errors.push(`snapshot ${s.id.slice(0, 8)}: ${why}`);
            r.catalogDisagreements++;
          }
        }
      }
    }
  }
}

/** Every version that reads a damaged block, directly or through refs, and which bytes. */
export function damageOf(catalog: Catalog, bad: readonly string[]): { version: number; ranges: [number, number][] }[] {
  const db = catalog.db;
  const damage = new Map<number, [number, number][]>();
  const add = (v: number, s: number, e: number) => damage.set(v, [...(damage.get(v) ?? []), [s, e]]);
  // One pass over the TOC rows for all the blocks (rows have no index by block).
  const byBlock = db.prepare("SELECT version, start, end FROM toc WHERE block IN (SELECT unhex(value) FROM json_each(?)) ORDER BY version, start");
  for (const row of byBlock.all(JSON.stringify(bad)) as { version: number; start: number; end: number }[]) add(row.version, row.start, row.end);
  // Refs point at older versions: walking upward in id order reaches every reader.
  const refsTo = db.prepare('SELECT version, start, end, target_start FROM toc WHERE target = ?');
  const queue = [...damage.keys()].sort((a, b) => a - b);
  const seen = new Set<number>();
  while (queue.length > 0) {
    const t = queue.shift()!;
    if (seen.has(t)) continue;
    seen.add(t);
    const ranges = damage.get(t) ?? [];
    for (const row of refsTo.all(t) as { version: number; start: number; end: number; target_start: number }[]) {
      const te = row.target_start + (row.end - row.start);
      for (const [s, e] of ranges) {
        const lo = Math.max(s, row.target_start);
        const hi = Math.min(e, te);
        if (lo > hi) continue;
        add(row.version, row.start + (lo - row.target_start), row.start + (hi - row.target_start));
        queue.push(row.version);
      }
    }
    queue.sort((a, b) => a - b);
  }
  return [...damage].map(([version, ranges]) => ({ version, ranges: merge(ranges) }));
}

function merge(ranges: [number, number][]): [number, number][] {
  const sorted = [...ranges].sort((a, b) => a[0] - b[0]);
  const out: [number, number][] = [];
  for (const [s, e] of sorted) {
    const last = out[out.length - 1];
    if (last && s <= last[1] + 1) last[1] = Math.max(last[1], e);
    else out.push([s, e]);
  }
  return out;
}

function inSubset(packName: string, subset: Subset | undefined): boolean {
  if (subset?.kind !== 'part') return true;
  return Number.parseInt(packName.slice(0, 8), 16) % subset.of === subset.part - 1;
}

function shuffle<T>(items: T[]): T[] {
  const out = [...items];
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}
