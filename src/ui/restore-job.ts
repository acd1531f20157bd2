/**
 * Restore from the web app: the restore `strata restore` runs, started by a
 * request and followed by polling. The request names snapshot paths and a
 * target directory on this machine; everything written lands below the
 * target (stored absolute paths are recreated below it, as the CLI does).
 */
import { randomUUID } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { restore, OVERWRITE_POLICIES, type OverwritePolicy, type RestoreResult } from '../engine/restore.js';
import type { SnapshotTree } from '../engine/snapshot-tree.js';
import { StrataError, usageError } from '../errors.js';
import type { Repository } from '../repo/repository.js';

export interface RestoreRequest {
  at: string;
  paths: string[];
  target: string;
  overwrite: OverwritePolicy;
}

export interface RestoreJob {
  id: string;
  state: 'running' | 'done' | 'failed';
  snapshot: string;
  target: string;
  files: number;
  bytes: number;
  total: number | null;
  result?: RestoreResult;
  error?: { code: string; message: string };
}

/** Jobs remembered for the page to poll (the newest ones). */
const KEPT = 16;

/** Checks a request's body: each field of the type it must be, every path absolute and plain, the target a directory of this machine or a new one. */
export function restoreRequest(body: unknown): RestoreRequest {
  const b = (body ?? {}) as Record<string, unknown>;
  if (typeof b.at !== 'string' || b.at === '') throw usageError('a restore names its snapshot (at)');
  if (!Array.isArray(b.paths) || b.paths.length === 0 || b.paths.length > 10_000) throw usageError('a restore names the paths to restore');
  const paths = b.paths.map((p) => {
    // Plain absolute paths only: "..", "." and empty segments could mean another place than they show.
    if (typeof p !== 'string' || !p.startsWith('/') || p.includes('\0') || (p !== '/' && path.posix.normalize(p) !== p) || p.endsWith('/') && p !== '/') {
      throw usageError(`not a plain absolute path in the snapshot: ${JSON.stringify(p)}`);
    }
    return p;
  });
  const overwrite = (b.overwrite ?? 'never') as OverwritePolicy;
  if (!OVERWRITE_POLICIES.includes(overwrite)) throw usageError(`overwrite is one of ${OVERWRITE_POLICIES.join(', ')}`);
  return { at: b.at, paths, target: restoreTarget(b.target), overwrite };
}

/** The target: an absolute path on this machine, not the root, a directory if it exists (its parent must, if not). */
export function restoreTarget(t: unknown): string {
  if (typeof t !== 'string' || !path.isAbsolute(t) || t.includes('\0')) throw usageError('the restore target is an absolute path on this machine');
  const abs = path.resolve(t);
  if (abs === path.parse(abs).root) throw usageError('refusing to restore into the root directory');
  const st = fs.statSync(abs, { throwIfNoEntry: false });
  if (st && !st.isDirectory()) throw new StrataError('not_directory', `${abs} is not a directory`);
  if (!st && !fs.statSync(path.dirname(abs), { throwIfNoEntry: false })?.isDirectory()) throw usageError(`${path.dirname(abs)} is not a directory`);
  return abs;
}

export class RestoreJobs {
  private readonly jobs = new Map<string, RestoreJob>();
  private readonly running = new Set<AbortController>();

  constructor(private readonly repo: Repository) {}

  /** Starts a restore; its job is returned at once and updated as it goes. */
  async start(tree: SnapshotTree, r: RestoreRequest): Promise<RestoreJob> {
    for (const p of r.paths) await tree.stat(p);
    const job: RestoreJob = { id: randomUUID(), state: 'running', snapshot: tree.id, target: r.target, files: 0, bytes: 0, total: null };
    this.jobs.set(job.id, job);
    if (this.jobs.size > KEPT) for (const [id, j] of this.jobs) if (j.state !== 'running' && this.jobs.size > KEPT) this.jobs.delete(id);
    const abort = new AbortController();
    this.running.add(abort);
    restore(this.repo, tree, {
      target: r.target,
      paths: r.paths,
      overwrite: r.overwrite,
      signal: abort.signal,
      onTotal: (bytes) => (job.total = bytes),
      onProgress: (p) => {
        job.files = p.files;
        job.bytes = p.bytes + p.skippedBytes;
      },
    }).then(
      (result) => Object.assign(job, { state: 'done', result, files: result.files, bytes: job.total ?? job.bytes }),
      (e: unknown) => Object.assign(job, { state: 'failed', error: e instanceof StrataError ? { code: e.code, message: e.message } : { code: 'internal', message: 'the restore failed' } }),
    ).finally(() => this.running.delete(abort));
    return job;
  }

  get(id: string): RestoreJob | undefined {
    return this.jobs.get(id);
  }

  /** Stops restores under way (the server is closing). */
  abortAll(): void {
    for (const a of this.running) a.abort();
  }
}
