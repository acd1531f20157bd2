import type { Command } from 'commander';
import * as path from 'node:path';
import { usageError } from '../../errors.js';
import type { CommitResult } from '../../engine/commit.js';
import { SnapshotTree } from '../../engine/snapshot-tree.js';
import type { Repository } from '../../repo/repository.js';
import { defaultCacheDir } from '../../storage/cache.js';
import { formatBytes } from '../../util/size.js';
import { parseWhen } from '../../util/when.js';
import { askMount, serveControl } from '../../mount/control.js';
import { mount, type MountHandle } from '../../mount/fuse.js';
import { Layout } from '../../mount/layout.js';
import { keepYoungGenerationSmall, logMemory } from '../../mount/memory.js';
import { Overlay } from '../../mount/overlay.js';
import { mountWritable } from '../../mount/writable.js';
import { globals, openRepo, type GlobalOptions } from '../context.js';
import { line, plural, printJson, shortId } from '../output.js';

function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}

/** Where the overlays of a repository's writable mounts live: under the cache directory. */
function overlayRoot(g: GlobalOptions, repo: Repository): string {
  return path.join(g.cacheDir ?? defaultCacheDir(), 'overlays', repo.config.id);
}

function tagsOf(tags: string[] | undefined): string[] {
  return [...new Set((tags ?? []).flatMap((t) => t.split(',')).filter((t) => t.length > 0))];
}

/** A commit as lines of text, or JSON (`oneLine`: as one line, after a mount's ready line). */
function reportCommit(json: boolean | undefined, r: CommitResult | undefined | null, oneLine = false): void {
  if (json) return oneLine ? line(JSON.stringify(r ?? { snapshot: null })) : printJson(r ?? { snapshot: null });
  if (!r) return line('nothing to commit: no changes since the snapshot was mounted');
  line(`committed snapshot ${r.snapshot} (parent ${shortId(r.parent)})`);
  line(
    `Files: ${r.filesNew} new, ${r.filesChanged} changed, ${r.filesRemoved} removed; ${formatBytes(r.bytesAdded)} added (${plural(r.dataEntries, 'data entry', 'data entries')} + ${plural(r.refEntries, 'ref entry', 'ref entries')})`,
  );
}

/** Waits for SIGINT or SIGTERM to unmount; a second signal ends the process (the kernel's mount goes with it). */
function onSignals(m: MountHandle): () => void {
  let signalled = false;
  const onSignal = () => {
    if (signalled) process.exit(0);
    signalled = true;
    void m.stop();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  return () => {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  };
}

export function register(program: Command): void {
  program
    .command('mount')
    .description('show snapshots as a file system at MOUNTPOINT (FUSE), read-only or with --writable, until Ctrl-C, SIGTERM or fusermount3 -u')
    .argument('<mountpoint>', 'an empty directory')
    .option('--at <when>', 'mount only this snapshot (latest, an id or prefix, or an ISO 8601 date/time) as the whole tree')
    .option('--host <name>', 'only snapshots of this host')
    .option('--writable', 'mount one snapshot (--at, else the latest) writable: changes go to a local overlay and become a new snapshot on "strata commit MOUNTPOINT" and at unmount')
    .option('--discard', 'with --writable: throw away the changes an earlier writable mount of the snapshot left uncommitted')
    .action(async (mountpoint: string, opts: { at?: string; host?: string; writable?: boolean; discard?: boolean }, cmd: Command) => {
      const g = globals(cmd);
      if (opts.discard && !opts.writable) throw usageError('--discard goes with --writable');
      keepYoungGenerationSmall();
      const when = opts.at !== undefined ? parseWhen(opts.at) : undefined;
      const repo = await openRepo(cmd, { readonly: !opts.writable });
      try {
        if (opts.writable) return await mountWritableTree(g, repo, mountpoint, opts.at ?? 'latest', opts.host, opts.discard === true);
        const trees = when ? [await SnapshotTree.open(repo, { at: when, host: opts.host })] : await SnapshotTree.all(repo, { host: opts.host });
        const layout = when ? Layout.single(trees[0]!) : Layout.of(trees);
        const m = await mount(mountpoint, layout, {
          onError: (message) => process.stderr.write(`strata mount: ${message}\n`),
          // The whole repository: snapshots made and forgotten while mounted come and go.
          // In a bucket, that is other clients' too: the catalog cache is brought up to date at each look.
          ...(when ? {} : { snapshots: (shown: readonly SnapshotTree[]) => SnapshotTree.all(repo, { host: opts.host, reuse: shown, follow: true }) }),
        });
        const off = onSignals(m);
        // For measuring: the process's memory, a JSON line every 200 ms (a file outside the mount: the mounting process never touches the mount).
        const memoryLog = process.env.STRATA_MOUNT_MEMORY_LOG;
        const stopLog = memoryLog ? logMemory(path.resolve(memoryLog), m.files) : undefined;
        if (g.json) {
          // One line, as soon as the mount is there: a script reads it to know it may go on.
          line(JSON.stringify({ mountpoint: m.mountpoint, snapshots: trees.length, ...(when ? { snapshot: trees[0]!.id } : {}), pid: process.pid }));
        } else {
          const what = when ? `snapshot ${trees[0]!.id.slice(0, 8)}` : `${trees.length} snapshot${trees.length === 1 ? '' : 's'}`;
          line(`mounted ${what} read-only at ${m.mountpoint} (unmount: Ctrl-C or fusermount3 -u ${m.mountpoint})`);
        }
        await m.done;
        stopLog?.();
        off();
      } finally {
        repo.close();
      }
    });

  program
    .command('commit')
    .description('make the changes of a writable mount a new snapshot whose parent is the mounted one; the mount goes on from the new snapshot')
    .argument('[mountpoint]', 'where "strata mount --writable" runs')
    .option('--at <when>', 'without MOUNTPOINT: commit the changes a writable mount of this snapshot left when it ended (killed, or its commit failed)')
    .option('--host <name>', 'with --at: only snapshots of this host')
    .option('--tag <tag[,tag...]>', 'tag the new snapshot (repeatable; a comma separates tags)', collect)
    .action(async (mountpoint: string | undefined, opts: { at?: string; host?: string; tag?: string[] }, cmd: Command) => {
      const g = globals(cmd);
      const tags = tagsOf(opts.tag);
      if (mountpoint !== undefined) {
        if (opts.at !== undefined) throw usageError('give MOUNTPOINT or --at, not both');
        return reportCommit(g.json, (await askMount(mountpoint, { op: 'commit', tags })) as CommitResult | null);
      }
      if (opts.at === undefined) throw usageError('give the MOUNTPOINT of a writable mount, or --at SNAPSHOT for the changes one left');
      const repo = await openRepo(cmd);
      try {
        const tree = await SnapshotTree.open(repo, { at: parseWhen(opts.at), host: opts.host });
        const overlay = await Overlay.open({ root: overlayRoot(g, repo), repository: repo.config.id, tree });
        try {
          if (overlay.committedBefore && !overlay.changed && !g.json) line(`the changes were committed before, as snapshot ${overlay.committedBefore}`);
          reportCommit(g.json, await overlay.commit({ tags }));
        } finally {
          await overlay.close();
        }
      } finally {
        repo.close();
      }
    });
}

/** `strata mount --writable`: one snapshot's tree over its overlay, committed on demand and at unmount. */
async function mountWritableTree(g: GlobalOptions, repo: Repository, mountpoint: string, at: string, host: string | undefined, discard: boolean): Promise<void> {
  const tree = await SnapshotTree.open(repo, { at: parseWhen(at), host });
  const overlay = await Overlay.open({ root: overlayRoot(g, repo), repository: repo.config.id, tree, discard });
  let m: MountHandle;
  try {
    // While mounted, forget keeps the snapshot the mount stands on.
    await overlay.pin();
    m = await mountWritable(mountpoint, overlay, { onError: (message) => process.stderr.write(`strata mount: ${message}\n`) });
  } catch (e) {
    await overlay.close();
    throw e;
  }
  const control = await serveControl(m.mountpoint, async (req) => {
    if (req.op !== 'commit') throw usageError(`unknown request ${JSON.stringify(req.op)}`);
    return (await overlay.commit({ tags: Array.isArray(req.tags) ? req.tags.filter((t) => typeof t === 'string') : [] })) ?? null;
  });
  const off = onSignals(m);
  const ready = { mountpoint: m.mountpoint, snapshot: tree.id, writable: true, overlay: overlay.dir, resumed: overlay.resumed, ...(overlay.committedBefore ? { committedBefore: overlay.committedBefore } : {}), pid: process.pid };
  if (g.json) line(JSON.stringify(ready));
  else {
    if (overlay.committedBefore) line(`the changes an earlier mount made were committed as snapshot ${overlay.committedBefore}`);
    const resumed = overlay.resumed > 0 ? `; ${plural(overlay.resumed, 'change')} of an earlier mount resumed` : '';
    line(`mounted snapshot ${tree.id.slice(0, 8)} writable at ${m.mountpoint} (changes kept in ${overlay.dir}${resumed}; commit: strata commit ${m.mountpoint}; unmount, which commits: Ctrl-C or fusermount3 -u ${m.mountpoint})`);
  }
  await m.done;
  off();
  await control.close();
  // Unmounted cleanly: the changes become a snapshot.
  try {
    reportCommit(g.json, await overlay.commit(), true);
  } catch (e) {
    process.stderr.write(`strata mount: the changes were not committed, and are kept in ${overlay.dir}: commit them with "strata commit --at ${overlay.tree.id}" once the cause is fixed\n`);
    throw e;
  } finally {
    await overlay.close();
  }
}
