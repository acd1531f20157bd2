import type { Command } from 'commander';
import { absolutePath, SnapshotTree, type Entry, type EntryType } from '../../engine/snapshot-tree.js';
import { deviceParts as splitDevice } from '../../util/nodes.js';
import { displayName } from '../../util/names.js';
import { parseWhen } from '../../util/when.js';
import { globals, openRepo } from '../context.js';
import { formatTime, lines, printJson } from '../output.js';

export function register(program: Command): void {
  program
    .command('ls')
    .description('list files in a snapshot (everything, or one directory)')
    .argument('[path]', 'a directory or file in the snapshot (absolute, or relative to the current directory)')
    .option('--at <when>', 'latest, a snapshot id or prefix, or an ISO 8601 date/time', 'latest')
    .option('-l, --long', 'long listing: type, mode, size, time')
    .option('-R, --recursive', 'list below PATH recursively (the default without PATH)')
    .option('--host <name>', 'only consider snapshots of this host')
    .action(async (p: string | undefined, opts: { at: string; long?: boolean; recursive?: boolean; host?: string }, cmd: Command) => {
      const g = globals(cmd);
      const when = parseWhen(opts.at);
      const repo = await openRepo(cmd, { readonly: true });
      try {
        const abs = p === undefined ? '/' : absolutePath(p);
        const tree = await SnapshotTree.open(repo, { at: when, host: opts.host, covering: p === undefined ? undefined : abs });
        const entry = await tree.stat(abs);
        const items: Entry[] = [];
        if (entry.type !== 'dir') items.push(entry);
        else if (p === undefined || opts.recursive) for await (const e of tree.walk(entry)) items.push(e);
        else for (const e of await tree.list(entry)) items.push(e);
        if (g.json) return printJson({ snapshot: tree.id, path: abs, entries: items.map(toJson) });
        lines(items.map((e) => (opts.long ? longLine(e) : e.type === 'dir' ? displayName(e.path) + '/' : displayName(e.path))));
      } finally {
        repo.close();
      }
    });
}

function toJson(e: Entry) {
  return {
    path: e.path,
    name: e.name,
    type: e.type,
    mode: e.mode & 0o7777,
    size: e.size,
    mtime: e.mtime.toISOString(),
    uid: e.uid,
    gid: e.gid,
    ...(e.type === 'symlink' ? { target: e.target } : {}),
    ...(e.rdev !== undefined ? deviceParts(e.rdev) : {}),
    ...(e.xattrs.length > 0 ? { xattrs: e.xattrs.map(([name]) => name) } : {}),
  };
}

function longLine(e: Entry): string {
  const type = TYPE_LETTERS[e.type];
  const perms = [6, 3, 0].map((s) => ((e.mode >> s) & 4 ? 'r' : '-') + ((e.mode >> s) & 2 ? 'w' : '-') + ((e.mode >> s) & 1 ? 'x' : '-')).join('');
  const time = formatTime(e.mtime.getTime());
  const name = e.type === 'symlink' ? `${displayName(e.path)} -> ${displayName(e.target ?? '')}` : displayName(e.path);
  // A device's numbers where its size would be, as ls -l shows them.
  const dev = e.rdev !== undefined ? deviceParts(e.rdev) : undefined;
  const size = dev ? `${dev.major}, ${dev.minor}` : String(e.size);
  return `${type}${perms} ${String(e.uid).padStart(5)} ${String(e.gid).padStart(5)} ${size.padStart(12)} ${time} ${name}`;
}

const TYPE_LETTERS: Record<EntryType, string> = { file: '-', dir: 'd', symlink: 'l', fifo: 'p', chardev: 'c', blockdev: 'b' };

/** A device number as JSON: its major and minor parts. */
function deviceParts(rdev: bigint): { major: number; minor: number } {
  const { major, minor } = splitDevice(rdev);
  return { major: Number(major), minor: Number(minor) };
}
