/**
 * Restore: recreate stored absolute paths under a target directory, with
 * contents, modes, times and symlinks. Names come from validated trees, so a
 * path can only land below the target; existing files are replaced, never
 * written through (a symlink in the way is removed, not followed).
 */
import { constants } from 'node:fs';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { interrupted, notFound } from '../errors.js';
import type { Repository } from '../repo/repository.js';
import { readRange } from './read.js';
import { isWithin, splitPath, type Snapshot } from './snapshot.js';
import type { TreeEntry } from './tree.js';

export interface RestoreOptions {
  target: string;
  /** Absolute paths inside the snapshot (default: everything). */
  paths?: string[];
  signal?: AbortSignal;
  onProgress?: (p: { files: number; bytes: number }) => void;
}

export interface RestoreResult {
  snapshot: string;
  target: string;
  files: number;
  dirs: number;
  symlinks: number;
  bytes: number;
  durationMs: number;
}

export async function restore(repo: Repository, snapshot: Snapshot, opts: RestoreOptions): Promise<RestoreResult> {
  const started = performance.now();
  const target = path.resolve(opts.target);
  const result: RestoreResult = { snapshot: snapshot.id, target, files: 0, dirs: 0, symlinks: 0, bytes: 0, durationMs: 0 };
  const dirTimes: { dest: string; entry: TreeEntry }[] = [];
  const asRoot = process.getuid?.() === 0;
  await fs.mkdir(target, { recursive: true });

  const selected = (opts.paths && opts.paths.length > 0 ? opts.paths : ['/']).map((p) => path.posix.resolve(p));
  const roots = selected.filter((p) => !selected.some((q) => q !== p && isWithin(p, q)));

  const place = async (abs: string, entry: TreeEntry): Promise<void> => {
    if (opts.signal?.aborted) throw interrupted();
    const dest = path.join(target, ...splitPath(abs));
    if (!isWithin(dest, target)) throw new Error(`refusing to write outside the target: ${dest}`);
    if (entry.type === 'dir') {
      await ensureDir(dest);
      dirTimes.push({ dest, entry });
      result.dirs++;
    } else if (entry.type === 'symlink') {
      await removeExisting(dest);
      await fs.symlink(entry.target ?? '', dest);
      if (asRoot) await fs.lchown(dest, entry.uid, entry.gid).catch(() => {});
      const t = seconds(entry.mtimeNs);
      await fs.lutimes(dest, t, t).catch(() => {});
      result.symlinks++;
    } else {
      await removeExisting(dest);
      const fh = await fs.open(dest, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
      try {
        const file = snapshot.repo.catalog.version(snapshot.row.seq, repo.keyring.pathId(abs));
        if (!file) throw notFound(`${abs}: no stored version`);
        if (file.size > 0) {
          for await (const piece of readRange(repo, file, 0, file.size - 1)) {
            if (opts.signal?.aborted) throw interrupted();
            await fh.write(piece);
            result.bytes += piece.length;
          }
        }
        if (asRoot) await fh.chown(entry.uid, entry.gid).catch(() => {});
        await fh.chmod(entry.mode & 0o7777);
        const t = seconds(entry.mtimeNs);
        await fh.utimes(t, t);
      } finally {
        await fh.close();
      }
      result.files++;
      opts.onProgress?.({ files: result.files, bytes: result.bytes });
    }
  };

  for (const root of roots) {
    const entry = await snapshot.lookup(root);
    if (!entry) throw notFound(`${root} is not in snapshot ${snapshot.id.slice(0, 8)}`);
    // Parents of a selected path are created; a real directory's metadata is restored too.
    let parentAbs = '/';
    for (const name of splitPath(root).slice(0, -1)) {
      parentAbs = path.posix.join(parentAbs, name);
      const parent = await snapshot.lookup(parentAbs);
      if (parent?.type === 'dir') await place(parentAbs, parent);
    }
    if (root !== '/') await place(root, entry);
    for await (const { path: p, entry: e } of snapshot.walk(root, entry)) await place(p, e);
  }

  // Directory modes and times last (writing inside a directory changes its mtime).
  for (let i = dirTimes.length - 1; i >= 0; i--) {
    const { dest, entry } = dirTimes[i]!;
    if (asRoot) await fs.chown(dest, entry.uid, entry.gid).catch(() => {});
    await fs.chmod(dest, entry.mode & 0o7777).catch(() => {});
    const t = seconds(entry.mtimeNs);
    await fs.utimes(dest, t, t).catch(() => {});
  }
  result.durationMs = Math.round(performance.now() - started);
  return result;
}

function seconds(ns: string): number {
  return Number(BigInt(ns) / 1000n) / 1e6;
}

async function ensureDir(dest: string): Promise<void> {
  try {
    const st = await fs.lstat(dest);
    if (st.isDirectory()) {
      // Stays writable while we fill it; its stored mode is applied at the end.
      await fs.chmod(dest, (st.mode & 0o7777) | 0o700);
      return;
    }
    await fs.rm(dest, { force: true });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
  await fs.mkdir(dest, { mode: 0o700 });
}

async function removeExisting(dest: string): Promise<void> {
  try {
    const st = await fs.lstat(dest);
    await fs.rm(dest, { recursive: st.isDirectory(), force: true });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
}
