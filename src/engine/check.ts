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
import type { Repository } from '../repo/repository.js';
import { StrataError } from '../errors.js';
import { fetchDictionary } from '../catalog/service.js';
import { openDictionary } from '../repo/dictionary.js';
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
