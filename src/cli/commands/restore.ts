import * as path from 'node:path';
import type { Command } from 'commander';
import { restore } from '../../engine/restore.js';
import { findSnapshot } from '../../engine/snapshot.js';
import { formatBytes } from '../../util/size.js';
import { parseWhen } from '../../util/when.js';
import { globals, openRepo } from '../context.js';
import { line, plural, printJson, Progress, shortId, wantsProgress } from '../output.js';
import { interruptSignal } from '../signals.js';

export function register(program: Command): void {
  program
    .command('restore')
    .description('recreate files as they were at WHEN under a target directory')
    .argument('[path...]', 'paths in the snapshot to restore (default: everything)')
    .requiredOption('--target <dir>', 'directory to restore into (stored absolute paths are recreated below it)')
    .option('--at <when>', 'latest, a snapshot id or prefix, or an ISO 8601 date/time', 'latest')
    .option('--host <name>', 'only consider snapshots of this host')
    .action(async (paths: string[], opts: { target: string; at: string; host?: string }, cmd: Command) => {
      const g = globals(cmd);
      const when = parseWhen(opts.at);
      const repo = await openRepo(cmd, { readonly: true });
      const progress = new Progress(wantsProgress(g), 'restoring');
      try {
        const abs = paths.map((p) => path.resolve(p));
        const snap = await findSnapshot(repo, when, abs, opts.host);
        const total = snap.meta.stats?.bytes;
        const r = await restore(repo, snap, {
          target: opts.target,
          paths: abs,
          signal: interruptSignal(),
          onProgress: (p) => progress.update(p.bytes, abs.length === 0 ? total : undefined, `${p.files} files`),
        });
        progress.stop();
        if (g.json) printJson(r);
        else if (!g.quiet) line(`restored ${plural(r.files, 'file')}, ${plural(r.dirs, 'directory', 'directories')}, ${plural(r.symlinks, 'symlink')} (${formatBytes(r.bytes)}) from snapshot ${shortId(r.snapshot)} to ${r.target}`);
      } finally {
        progress.stop();
        repo.close();
      }
    });
}
