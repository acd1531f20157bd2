import type { Command } from 'commander';
import { check, type Subset } from '../../engine/check.js';
import { forget, forgetWithoutKey, type ForgetResult } from '../../engine/forget.js';
import { parseDuration, type Policy } from '../../engine/policy.js';
import { prune, type PruneResult } from '../../engine/prune.js';
import { journalCatalog, rebuildCatalog } from '../../engine/rebuild.js';
import { ExitCode, usageError } from '../../errors.js';
import { HOST_ID, removeLeases } from '../../catalog/lease.js';
import { KeylessRepository, Repository } from '../../repo/repository.js';
import { formatBytes } from '../../util/size.js';
import { credentials, globals, openRepo, remoteOptions, repoPath } from '../context.js';
import { addFilterOptions, filterOf, type FilterFlags } from '../filter.js';
import { chalk, line, plural, printJson, Progress, shortId, wantsProgress, warn } from '../output.js';

/** --lock-wait: seconds, or a number with s, m or h. */
export function parseWait(text: string | undefined): number {
  if (text === undefined) return 0;
  const m = /^(\d+(?:\.\d+)?)(s|m|h)?$/.exec(text.trim());
  if (!m) throw usageError(`invalid --lock-wait "${text}" (examples: 30, 30s, 5m)`);
  return Number(m[1]) * { s: 1000, m: 60_000, h: 3_600_000 }[m[2] ?? 's']!;
}

function count(v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) throw usageError(`expected a count, got "${v}"`);
  return n;
}

const collect = (v: string, prev: string[] = []) => [...prev, v];

export function register(program: Command): void {
  program
    .command('check')
    .description('verify the repository: structure always, every block with --read-data')
    .option('--read-data', 'read, authenticate and decode every block (or a --subset of packs)')
    .option('--subset <n%|k/n>', 'with --read-data: a share of the packs (e.g. 10% or 2/5)')
    .option('--reset', 'with --read-data: start a new verification pass instead of continuing the last one')
    .option('--repair', 'drop damaged or missing blocks from the index, so the next backup stores them again')
    .action(async (opts: { readData?: boolean; subset?: string; reset?: boolean; repair?: boolean }, cmd: Command) => {
      const g = globals(cmd);
      if ((opts.subset || opts.reset) && !opts.readData) throw usageError('--subset and --reset go with --read-data');
      const subset = opts.subset ? parseSubset(opts.subset) : undefined;
      const repo = await openRepo(cmd);
      const progress = new Progress(wantsProgress(g), 'checking');
      try {
        const r = await check(repo, { readData: opts.readData, subset, reset: opts.reset, repair: opts.repair, onProgress: (m) => progress.text(m) });
        progress.stop();
        if (g.json) printJson(r);
        else {
          for (const w of r.warnings) warn(w);
          for (const e of r.errors) process.stderr.write(`${chalk.red('error:')} ${e}\n`);
          for (const f of r.damagedFiles) {
            const ranges = f.ranges.map(([s, e]) => `${s}-${e}`).join(', ');
            line(`damaged: ${f.path} in snapshot ${shortId(f.snapshot)}, bytes ${ranges}`);
          }
          if (!g.quiet) {
            line(`${plural(r.snapshots, 'snapshot')}, ${plural(r.versions, 'file version')}, ${plural(r.packs, 'pack')} checked`);
            if (opts.readData) line(`read ${plural(r.packsRead, 'pack')}${r.packsAlreadyVerified ? `; ${r.packsAlreadyVerified} verified earlier in this pass` : ''}`);
            line(r.ok ? 'no errors found' : `${plural(r.errors.length, 'error')}, ${plural(r.damagedBlocks.length, 'damaged block')}, ${plural(r.damagedFiles.length, 'damaged file version')}`);
            if (r.catalogDisagreements > 0) {
              line(
                `the catalog disagrees with the sealed records in ${plural(r.catalogDisagreements, 'place')}: run "strata rebuild-catalog" on the repository's directory to rebuild it from the packs (reads refuse those rows until then)`,
              );
            }
            if (r.repaired > 0) line(`dropped ${plural(r.repaired, 'damaged block')} from the index: back up the affected files again to heal every snapshot that uses them`);
          }
        }
        if (!r.ok) process.exitCode = ExitCode.error;
      } finally {
        progress.stop();
        repo.close();
      }
    });

  const forgetCmd = program
    .command('forget')
    .description('remove snapshots by id or by a retention policy (refs of later snapshots are rewritten first)')
    .argument('[snapshot...]', 'snapshot ids or prefixes to remove');
  addFilterOptions(forgetCmd, 'only consider')
    .option('--keep-last <n>', 'keep the newest N snapshots', count)
    .option('--keep-hourly <n>', 'keep the newest snapshot of each of the last N hours', count)
    .option('--keep-daily <n>', 'keep the newest snapshot of each of the last N days', count)
    .option('--keep-weekly <n>', 'keep the newest snapshot of each of the last N weeks', count)
    .option('--keep-monthly <n>', 'keep the newest snapshot of each of the last N months', count)
    .option('--keep-yearly <n>', 'keep the newest snapshot of each of the last N years', count)
    .option('--keep-within <duration>', 'keep snapshots this close to the newest (e.g. 7d, 2w, 1y6m)')
    .option('--keep-tag <tag[,tag...]>', 'keep snapshots with all of these tags (repeatable: any of the lists)', collect)
    .option('--dry-run', 'only say what would be removed')
    .option('--prune', 'prune afterwards')
    .option('--lock-wait <duration>', 'wait this long for another forget/prune to finish (e.g. 30s, 5m)')
    .option('--no-key', "run without the key (a server's admin): by id or by counts and times, grouped by lineage")
    .action(async (ids: string[], opts: Record<string, unknown>, cmd: Command) => {
      const g = globals(cmd);
      const policy: Policy = {
        last: opts.keepLast as number | undefined,
        hourly: opts.keepHourly as number | undefined,
        daily: opts.keepDaily as number | undefined,
        weekly: opts.keepWeekly as number | undefined,
        monthly: opts.keepMonthly as number | undefined,
        yearly: opts.keepYearly as number | undefined,
        within: opts.keepWithin ? parseDuration(opts.keepWithin as string) : undefined,
        tags: (opts.keepTag as string[] | undefined) ?? [],
      };
      const waitMs = parseWait(opts.lockWait as string | undefined);
      const filter = filterOf(opts as FilterFlags);
      const forgetOpts = { ids, policy, filter, dryRun: opts.dryRun as boolean, waitMs, onWait: (m: string) => warn(m) };
      const repo = opts.key === false ? await KeylessRepository.open(repoPath(g), remoteOptions(g)) : await openRepo(cmd);
      try {
        const r = repo instanceof KeylessRepository ? await forgetWithoutKey(repo.service, forgetOpts) : await forget(repo, forgetOpts);
        let pruned: PruneResult | undefined;
        if (opts.prune && !r.dryRun) pruned = await prune(repo, { waitMs, onWait: (m) => warn(m) });
        if (g.json) return printJson({ ...r, ...(pruned ? { prune: pruned } : {}) });
        printForget(r, g.quiet ?? false);
        if (pruned && !g.quiet) printPrune(pruned);
      } finally {
        repo.close();
      }
    });

  program
    .command('prune')
    .description('reclaim the space of blocks no snapshot uses; repack partly used packs')
    .option('--dry-run', 'only count what could be reclaimed')
    .option('--lock-wait <duration>', 'wait this long for another forget/prune to finish (e.g. 30s, 5m)')
    .option('--no-key', "run without the key (a server's admin): only packs with nothing in use go")
    .action(async (opts: { dryRun?: boolean; lockWait?: string; key?: boolean }, cmd: Command) => {
      const g = globals(cmd);
      const repo = opts.key === false ? await KeylessRepository.open(repoPath(g), remoteOptions(g)) : await openRepo(cmd);
      const progress = new Progress(wantsProgress(g), 'pruning');
      try {
        const r = await prune(repo, { dryRun: opts.dryRun, waitMs: parseWait(opts.lockWait), onWait: (m) => progress.warn(m), onProgress: (m) => progress.text(m) });
        progress.stop();
        if (g.json) printJson(r);
        else if (!g.quiet) printPrune(r);
      } finally {
        progress.stop();
        repo.close();
      }
    });

  program
    .command('rebuild-catalog')
    .description('rebuild catalog.db from the packs alone (the old one is kept beside it)')
    .action(async (_opts: unknown, cmd: Command) => {
      const g = globals(cmd);
      const { repo, previous } = await Repository.openForRebuild(repoPath(g), credentials(g), remoteOptions(g));
      const progress = new Progress(wantsProgress(g), 'rebuilding');
      try {
        const r = await rebuildCatalog(repo, (m) => progress.text(m));
        // A repository in a bucket: what its catalog journal lacks is written there too, for servers over the bucket.
        const journal = await journalCatalog(repo, (m) => progress.text(m));
        progress.stop();
        if (r.damagedPacks.length > 0 || r.problems.length > 0) process.exitCode = ExitCode.error;
        if (g.json) return printJson({ ...r, previous: previous ?? null, ...(journal ? { journal } : {}) });
        for (const p of r.damagedPacks) warn(`pack ${p.slice(0, 16)} could not be read; its blocks are missing from the catalog`);
        for (const p of r.problems) warn(p);
        if (!g.quiet) {
          if (previous) line(`the old catalog is kept as ${previous}`);
          line(`rebuilt: ${plural(r.snapshots, 'snapshot')}, ${plural(r.versions, 'file version')}, ${plural(r.blocks, 'block')} in ${plural(r.packs, 'pack')}`);
          if (journal) line(`written into the bucket's catalog journal: ${plural(journal.packs, 'pack')}, ${plural(journal.snapshots, 'snapshot')}`);
        }
      } finally {
        progress.stop();
        repo.close();
      }
    });

  program
    .command('unlock')
    .description('remove leases of processes that are gone (never needed after a crash; stale leases expire on their own)')
    .option('--remove-all', 'also remove leases that look alive (only when you know no strata process is running)')
    .action(async (opts: { removeAll?: boolean }, cmd: Command) => {
      const g = globals(cmd);
      const repo = await openRepo(cmd);
      try {
        const { removed, held } = removeLeases(repo.catalog, opts.removeAll === true);
        const out = { removed: removed.length, remaining: held.length };
        if (g.json) return printJson(out);
        if (!g.quiet) {
          line(`removed ${plural(out.removed, 'lease')}`);
          for (const l of held) line(`still held: ${l.kind} pid ${l.pid}${l.host === HOST_ID ? ' (this host)' : ''} since ${new Date(l.started).toISOString()}`);
        }
      } finally {
        repo.close();
      }
    });
}

function parseSubset(text: string): Subset {
  const pct = /^(\d+(?:\.\d+)?)%$/.exec(text);
  if (pct && Number(pct[1]) > 0 && Number(pct[1]) <= 100) return { kind: 'percent', percent: Number(pct[1]) };
  const part = /^(\d+)\/(\d+)$/.exec(text);
  if (part && Number(part[1]) >= 1 && Number(part[1]) <= Number(part[2])) return { kind: 'part', part: Number(part[1]), of: Number(part[2]) };
  throw usageError(`invalid --subset "${text}" (examples: 10%, 2/5)`);
}

function printForget(r: ForgetResult, quiet: boolean): void {
  for (const g of r.groups) {
    if (!quiet) line(g.lineage ? `lineage ${g.lineage.slice(0, 16)}:` : `${g.host} ${g.paths.join(' ')}:`);
    for (const k of g.keep) if (!quiet) line(`  keep    ${shortId(k.id)}  ${k.time}  (${k.reasons.join(', ')})`);
    for (const k of g.remove) line(`  ${r.dryRun ? 'would remove' : 'remove'}  ${shortId(k.id)}  ${k.time}`);
  }
  if (!quiet) line(r.dryRun ? `${plural(r.removed.length, 'snapshot')} would be removed` : `removed ${plural(r.removed.length, 'snapshot')}; rewrote the refs of ${plural(r.rewrittenVersions, 'later file version')}`);
  if (!quiet && r.staleTocs > 0) line(`${plural(r.staleTocs, 'rewritten table')} of contents will be resealed by the next forget or prune with the key`);
}

function printPrune(r: PruneResult): void {
  if (r.dryRun) {
    line(`${plural(r.unusedBlocks, 'unused block')} could be reclaimed; ${plural(r.abandonedSnapshots, 'abandoned snapshot')}`);
    return;
  }
  if (r.resealedTocs > 0) line(`resealed ${plural(r.resealedTocs, 'table')} of contents a forget without the key had rewritten`);
  const kept = r.packsNeedingKey > 0 ? `kept for now (repacking ${plural(r.packsNeedingKey, 'partly used pack')} needs the key, or running backups)` : 'kept until running backups finish';
  line(`removed ${plural(r.deletedBlocks, 'unused block')} (${r.deferredBlocks} ${kept}), ${plural(r.deletedPacks, 'pack')} deleted, ${r.repackedPacks} repacked; ${formatBytes(Math.max(0, r.bytesFreed))} freed`);
}
