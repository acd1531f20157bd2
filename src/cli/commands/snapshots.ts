import type { Command } from 'commander';
import { matchesFilter, splitTags } from '../../engine/filter.js';
import { listSnapshots } from '../../engine/snapshot.js';
import { formatBytes } from '../../util/size.js';
import { globals, openRepo } from '../context.js';
import { formatTime, line, plural, printJson, shortId, table } from '../output.js';

export function register(program: Command): void {
  program
    .command('snapshots')
    .description('list snapshots, oldest first')
    .option('--host <name>', 'only snapshots of this host')
    .option('--tag <tag[,tag...]>', 'only snapshots with all of these tags (repeatable: any of the lists)', collect)
    .action(async (opts: { host?: string; tag?: string[] }, cmd: Command) => {
      const g = globals(cmd);
      const filter = { hosts: opts.host ? [opts.host] : [], tags: (opts.tag ?? []).map(splitTags) };
      const repo = await openRepo(cmd, { readonly: true });
      try {
        const snaps = (await listSnapshots(repo)).filter((s) => matchesFilter(s.meta, filter));
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

function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}
