import type { Command } from 'commander';
import { findSnapshot, listSnapshots, type Snapshot } from '../../engine/snapshot.js';
import { find, stats } from '../../engine/stats.js';
import { usageError } from '../../errors.js';
import type { Repository } from '../../repo/repository.js';
import { displayName } from '../../util/names.js';
import { formatBytes } from '../../util/size.js';
import { parseWhen } from '../../util/when.js';
import { globals, openRepo } from '../context.js';
import { formatTime, line, lines, plural, printJson, shortId } from '../output.js';

async function chosen(repo: Repository, opts: { at?: string; all?: boolean; host?: string }, byDefault: 'latest' | 'all'): Promise<Snapshot[]> {
  if (opts.at !== undefined && opts.all) throw usageError('--at and --all exclude each other');
  if (opts.all || (opts.at === undefined && byDefault === 'all')) return (await listSnapshots(repo)).filter((s) => !opts.host || s.meta.host === opts.host);
  return [await findSnapshot(repo, parseWhen(opts.at ?? 'latest'), undefined, opts.host)];
}

export function register(program: Command): void {
  program
    .command('find')
    .description('list the paths that match a glob, in one snapshot or all of them')
    .argument('<pattern>', 'a glob: without "/" it matches names anywhere, with "/" paths (as --exclude)')
    .option('--at <when>', 'latest, a snapshot id or prefix, or an ISO 8601 date/time (default latest)')
    .option('--all', 'search every snapshot')
    .option('--host <name>', 'only consider snapshots of this host')
    .action(async (pattern: string, opts: { at?: string; all?: boolean; host?: string }, cmd: Command) => {
      const g = globals(cmd);
      const repo = await openRepo(cmd, { readonly: true });
      try {
        const found = await find(await chosen(repo, opts, 'latest'), pattern);
        if (g.json) return printJson(found);
        lines(found.map((f) => `${shortId(f.snapshot)}  ${formatTime(Date.parse(f.time))}  ${formatBytes(f.size).padStart(10)}  ${formatTime(Date.parse(f.mtime))}  ${displayName(f.path)}${f.type === 'dir' ? '/' : ''}`));
        if (!g.quiet) line(plural(found.length, 'match', 'matches'));
      } finally {
        repo.close();
      }
    });

  program
    .command('stats')
    .description('files, bytes, unique blocks, repository size and deduplication ratio, of all snapshots or one')
    .option('--at <when>', 'only this snapshot (default: every snapshot)')
    .option('--host <name>', 'only consider snapshots of this host')
    .action(async (opts: { at?: string; host?: string }, cmd: Command) => {
      const g = globals(cmd);
      const repo = await openRepo(cmd, { readonly: true });
      try {
        const s = await stats(repo, await chosen(repo, opts, 'all'));
        if (g.json) return printJson(s);
        line(`snapshots:        ${s.snapshots}`);
        line(`files:            ${s.files}`);
        line(`size:             ${formatBytes(s.bytes)} (what restoring ${s.snapshots === 1 ? 'it' : 'each'} would write)`);
        line(`unique blocks:    ${s.uniqueBlocks} (${formatBytes(s.uniqueBytes)} before compression)`);
        line(`repository size:  ${formatBytes(s.repositoryBytes)} (every pack, compressed and encrypted)`);
        line(`deduplication:    ${s.dedupRatio === null ? '-' : `${s.dedupRatio.toFixed(2)}x`}`);
      } finally {
        repo.close();
      }
    });
}
