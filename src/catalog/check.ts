/**
 * The catalog's halves of check: packs present at their size, every TOC
 * covering its version with stored blocks and refs into older versions, the
 * versions a damaged block reaches, and dropping damaged blocks so the next
 * backup stores them again. Keyless: a server runs them for its clients.
 */
import { BLOB_KINDS, type Catalog, type TocRow } from './catalog.js';
import type { PackEntry } from './packs.js';
import type { Storage } from '../storage/storage.js';

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
