import type { Command } from 'commander';
import { matchesFilter } from '../../engine/filter.js';
import { listSnapshots, type Snapshot } from '../../engine/snapshot.js';
import { usageError } from '../../errors.js';
import { addFilterOptions, filterOf, type FilterFlags } from '../filter.js';
import { formatBytes } from '../../util/size.js';
import { globals, openRepo } from '../context.js';
import { formatTime, line, plural, printJson, shortId, table } from '../output.js';

export function register(program: Command): void {
  const cmd = program.command('snapshots').description('list snapshots, oldest first');
  addFilterOptions(cmd, 'only')
    .option('--latest <n>', 'only the newest N snapshots of each host and set of paths', count)
    .action(async (opts: FilterFlags & { latest?: number }, cmd: Command) => {
      const g = globals(cmd);
      const filter = filterOf(opts);
      const repo = await openRepo(cmd, { readonly: true });
      try {
        let snaps = (await listSnapshots(repo)).filter((s) => matchesFilter(s.meta, filter));
        if (opts.latest !== undefined) snaps = newestOfEachGroup(snaps, opts.latest);
        const out = snaps.map((s) => ({
          id: s.id,
          shortId: shortId(s.id),
          time: new Date(s.time).toISOString(),
          host: s.meta.host,
          tags: s.meta.tags,
          paths: s.meta.paths,
          parent: s.meta.parent ?? null,
          files: s.meta.stats?.files ?? 0,
          bytesTotal: s.meta.stats?.bytes ?? 0,
          bytesAdded: s.meta.stats?.bytesAdded ?? 0,
          partial: (s.meta.unreadable ?? 0) > 0,
          unreadable: s.meta.unreadable ?? 0,
          copiedFrom: s.meta.copiedFrom ?? null,
        }));
        if (g.json) return printJson(out);
        if (out.length === 0) return line('no snapshots');
        const rows = [['ID', 'Time', 'Host', 'Tags', 'Size', 'Added', 'Paths']];
        // A partial snapshot (its backup exited 3) is marked after its id.
        for (const s of out) rows.push([s.shortId + (s.partial ? '*' : ''), formatTime(Date.parse(s.time)), s.host, s.tags.join(','), formatBytes(s.bytesTotal), formatBytes(s.bytesAdded), s.paths.join(' ')]);
        line(table(rows));
        if (!g.quiet) {
          const partial = out.filter((s) => s.partial).length;
          line(plural(out.length, 'snapshot') + (partial > 0 ? `, ${partial} partial (*: some sources could not be read)` : ''));
        }
      } finally {
        repo.close();
      }
    });
}

function count(v: string): number {
  const n = Number(v);
  if (!/^\d+$/.test(v) || n < 1) throw usageError(`--latest needs a count of 1 or more, got "${v}"`);
  return n;
}

/** The newest `n` snapshots of each host and set of source paths, still oldest first (as restic's --latest). */
function newestOfEachGroup(snaps: Snapshot[], n: number): Snapshot[] {
  const seen = new Map<string, number>();
  const keep = new Set<Snapshot>();
  for (let i = snaps.length - 1; i >= 0; i--) {
    const s = snaps[i]!;
    const key = JSON.stringify([s.meta.host, [...s.meta.paths].sort()]);
    const had = seen.get(key) ?? 0;
    if (had < n) keep.add(s);
    seen.set(key, had + 1);
  }
  return snaps.filter((s) => keep.has(s));
}
