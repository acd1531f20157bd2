import * as path from 'node:path';
import { Option, type Command } from 'commander';
import { OVERWRITE_POLICIES, restore, type OverwritePolicy, type RestoreResult } from '../../engine/restore.js';
import { SnapshotTree } from '../../engine/snapshot-tree.js';
import { ExitCode } from '../../errors.js';
import { displayName } from '../../util/names.js';
import { formatBytes } from '../../util/size.js';
import { parseWhen } from '../../util/when.js';
import { globals, openRepo } from '../context.js';
import { line, lines, plural, printJson, Progress, shortId, wantsProgress } from '../output.js';
import { interruptSignal } from '../signals.js';

const collect = (v: string, prev: string[] = []) => [...prev, v];

interface RestoreFlags {
  target: string;
  at: string;
  host?: string;
  overwrite: OverwritePolicy;
  delete?: boolean;
  dryRun?: boolean;
  include?: string[];
  exclude?: string[];
  strip?: boolean;
  xattrs?: boolean;
}

export function register(program: Command): void {
  program
    .command('restore')
    .description('recreate files as they were at WHEN under a target directory')
    .argument('[path...]', 'paths in the snapshot to restore (default: everything)')
    .requiredOption('--target <dir>', 'directory to restore into (stored absolute paths are recreated below it)')
    .option('--at <when>', 'latest, a snapshot id or prefix, or an ISO 8601 date/time', 'latest')
    .option('--host <name>', 'only consider snapshots of this host')
    .addOption(new Option('--overwrite <policy>', 'what to do with a file already at a destination: replace it, replace it unless size and mtime match, or keep it').choices(OVERWRITE_POLICIES).default('always'))
    .option('--delete', 'remove files below the restored directories that the snapshot does not have')
    .option('--dry-run', 'only say what would be created, replaced and deleted')
    .option('--include <glob>', 'restore only entries matching GLOB, and everything below a matching directory (repeatable)', collect)
    .option('--exclude <glob>', 'leave out entries matching GLOB, and everything below them (repeatable)', collect)
    .option('--strip', "restore the one PATH's contents straight into the target, without PATH's own directories")
    .option('--no-xattrs', 'do not set extended attributes (user.*, security.*, trusted.*, POSIX ACLs)')
    .action(async (paths: string[], opts: RestoreFlags, cmd: Command) => {
      const g = globals(cmd);
      const when = parseWhen(opts.at);
      const repo = await openRepo(cmd, { readonly: true });
      const showProgress = wantsProgress(g) && !opts.dryRun;
      const progress = new Progress(showProgress, 'restoring');
      try {
        const abs = paths.map((p) => path.resolve(p));
        const tree = await SnapshotTree.open(repo, { at: when, host: opts.host, covering: abs });
        let total: number | undefined;
        const r = await restore(repo, tree, {
          target: opts.target,
          paths: abs,
          overwrite: opts.overwrite,
          delete: opts.delete,
          dryRun: opts.dryRun,
          include: opts.include,
          exclude: opts.exclude,
          strip: opts.strip,
          noXattrs: opts.xattrs === false,
          signal: interruptSignal(),
          onTotal: showProgress ? (bytes) => (total = bytes) : undefined,
          onProgress: (p) => progress.update(p.bytes + p.skippedBytes, total, `${p.files} files`),
          onConflict: g.json ? undefined : (c) => progress.warn(`${displayName(c.path)}: ${c.reason}`),
          onNotRestored: g.json ? undefined : (n) => progress.warn(`${displayName(n.path)}: ${n.what} not restored: ${n.reason}`),
        });
        progress.stop();
        if (r.conflicts.length > 0 || r.notRestored.length > 0) process.exitCode = ExitCode.incomplete;
        if (g.json) printJson(r);
        else printRestore(r, g.quiet ?? false);
      } finally {
        progress.stop();
        repo.close();
      }
    });
}

function printRestore(r: RestoreResult, quiet: boolean): void {
  if (r.actions) {
    const verb = { create: 'would create', replace: 'would replace', delete: 'would delete', conflict: 'would leave' } as const;
    lines(r.actions.map((a) => `${verb[a.action].padEnd(13)} ${displayName(a.path)}${a.type === 'dir' ? '/' : ''}`));
  }
  if (quiet) return;
  const specials = r.specials > 0 ? `, ${plural(r.specials, 'FIFO or device node', 'FIFOs and device nodes')}` : '';
  const what = `${plural(r.files, 'file')}, ${plural(r.dirs, 'directory', 'directories')}, ${plural(r.symlinks, 'symlink')}${specials} (${formatBytes(r.bytes)})`;
  const extra = [
    r.skipped > 0 ? `${r.skipped} left as they were (--overwrite ${r.overwrite})` : '',
    r.deleted > 0 || r.actions ? `${r.deleted} ${r.dryRun ? 'to delete' : 'deleted'}` : '',
    r.conflicts.length > 0 ? `${plural(r.conflicts.length, 'directory', 'directories')} in the way left alone` : '',
    r.notRestored.length > 0 ? `${r.notRestored.length} not restored (named above)` : '',
  ].filter((x) => x);
  const tail = extra.length > 0 ? `; ${extra.join(', ')}` : '';
  if (r.dryRun) line(`would restore ${what} from snapshot ${shortId(r.snapshot)} to ${r.target}${tail}; nothing was written`);
  else line(`restored ${what} from snapshot ${shortId(r.snapshot)} to ${r.target}${tail}`);
}
