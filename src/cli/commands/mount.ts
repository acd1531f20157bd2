import type { Command } from 'commander';
import { SnapshotTree } from '../../engine/snapshot-tree.js';
import { parseWhen } from '../../util/when.js';
import { mount } from '../../mount/fuse.js';
import { Layout } from '../../mount/layout.js';
import { globals, openRepo } from '../context.js';
import { line } from '../output.js';

export function register(program: Command): void {
  program
    .command('mount')
    .description('show snapshots as a read-only file system at MOUNTPOINT (FUSE), until Ctrl-C, SIGTERM or fusermount3 -u')
    .argument('<mountpoint>', 'an empty directory')
    .option('--at <when>', 'mount only this snapshot (latest, an id or prefix, or an ISO 8601 date/time) as the whole tree')
    .option('--host <name>', 'only snapshots of this host')
    .action(async (mountpoint: string, opts: { at?: string; host?: string }, cmd: Command) => {
      const g = globals(cmd);
      const when = opts.at !== undefined ? parseWhen(opts.at) : undefined;
      const repo = await openRepo(cmd, { readonly: true });
      try {
        const trees = when ? [await SnapshotTree.open(repo, { at: when, host: opts.host })] : await SnapshotTree.all(repo, { host: opts.host });
        const layout = when ? Layout.single(trees[0]!) : Layout.of(trees);
        const m = await mount(mountpoint, layout, { onError: (message) => process.stderr.write(`strata mount: ${message}\n`) });
        let signalled = false;
        const onSignal = () => {
          // A second signal while unmounting: the mount goes with the process (auto_unmount).
          if (signalled) process.exit(0);
          signalled = true;
          void m.stop();
        };
        process.on('SIGINT', onSignal);
        process.on('SIGTERM', onSignal);
        if (g.json) {
          // One line, as soon as the mount is there: a script reads it to know it may go on.
          line(JSON.stringify({ mountpoint: m.mountpoint, snapshots: trees.length, ...(when ? { snapshot: trees[0]!.id } : {}), pid: process.pid }));
        } else {
          const what = when ? `snapshot ${trees[0]!.id.slice(0, 8)}` : `${trees.length} snapshot${trees.length === 1 ? '' : 's'}`;
          line(`mounted ${what} read-only at ${m.mountpoint} (unmount: Ctrl-C or fusermount3 -u ${m.mountpoint})`);
        }
        await m.done;
        process.off('SIGINT', onSignal);
        process.off('SIGTERM', onSignal);
      } finally {
        repo.close();
      }
    });
}
