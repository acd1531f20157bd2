import type { Command } from 'commander';
import { ExitCode, usageError } from '../../errors.js';
import { backup } from '../../engine/backup.js';
import { splitTags } from '../../engine/filter.js';
import { formatBytes } from '../../util/size.js';
import { parseIsoTime } from '../../util/when.js';
import { globals, openRepo } from '../context.js';
import { interruptSignal } from '../signals.js';
import { chalk, line, plural, printJson, Progress, shortId, wantsProgress, warn } from '../output.js';

export function register(program: Command): void {
  program
    .command('backup')
    .description('back up files and directories (stored by absolute path) as a new snapshot')
    .argument('<path...>', 'files or directories to back up')
    .option('--tag <tag[,tag...]>', 'tag the snapshot (repeatable; a comma separates tags)', collect)
    .option('--time <iso8601>', "the snapshot's time (default: now)")
    .option('--exclude <glob>', 'skip matching paths (repeatable)', collect)
    .option('--parent <snapshot>', 'compare against this snapshot instead of the latest one of the same host and paths')
    .option('--host <name>', 'host name to record (default: this machine)')
    .option('--force', 'read every file, even if its size, times and inode are unchanged')
    .action(async (paths: string[], opts: { tag?: string[]; time?: string; exclude?: string[]; parent?: string; host?: string; force?: boolean }, cmd: Command) => {
      const g = globals(cmd);
      let time: number | undefined;
      if (opts.time !== undefined) {
        time = parseIsoTime(opts.time, 'start');
        if (time === undefined) throw usageError(`malformed --time "${opts.time}" (use ISO 8601, e.g. 2026-03-01T12:00:00Z)`);
      }
      const repo = await openRepo(cmd);
      const progress = new Progress(wantsProgress(g), 'scanning');
      const signal = interruptSignal();
      try {
        const r = await backup(repo, {
          paths,
          tags: [...new Set((opts.tag ?? []).flatMap(splitTags))],
          time,
          excludes: opts.exclude ?? [],
          parent: opts.parent,
          host: opts.host,
          force: opts.force,
          signal,
          estimate: wantsProgress(g),
          onProgress: (p) => progress.update(p.bytesDone, p.bytesTotal, `${p.files}${p.filesTotal ? `/${p.filesTotal}` : ''} files`),
          onWarning: (m) => progress.warn(m),
        });
        progress.stop();
        if (g.json) printJson({ ...r, ...repo.traffic });
        else if (g.quiet) line(r.snapshot);
        else {
          line(`Files: ${r.filesNew} new, ${r.filesChanged} changed, ${r.filesUnchanged} unchanged; ${plural(r.dirs, 'directory', 'directories')}`);
          line(
            `Data:  ${formatBytes(r.bytesRead)} read, ${formatBytes(r.bytesAdded)} added (${plural(r.blocksNew, 'new block')}, ${r.blocksReused} reused; ${plural(r.dataEntries, 'data entry', 'data entries')} + ${plural(r.refEntries, 'ref entry', 'ref entries')})`,
          );
          line(`snapshot ${chalk.bold(shortId(r.snapshot))} saved (${r.snapshot}) in ${(r.durationMs / 1000).toFixed(1)}s`);
        }
        if (r.incomplete) {
          if (!g.json) warn(`${plural(r.warnings.filter((w) => !w.startsWith('skipping')).length, 'source')} could not be read; the snapshot is incomplete`);
          process.exitCode = ExitCode.incomplete;
        }
      } finally {
        progress.stop();
        repo.close();
      }
    });
}

function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}
