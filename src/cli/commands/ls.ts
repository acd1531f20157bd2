import type { Command } from 'commander';
import { absolutePath } from '../../engine/read.js';
import { findSnapshot, type Snapshot } from '../../engine/snapshot.js';
import type { TreeEntry } from '../../engine/tree.js';
import { notFound } from '../../errors.js';
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
        const snap = await findSnapshot(repo, when, p === undefined ? undefined : abs, opts.host);
        const entry = await snap.lookup(abs);
        if (!entry) throw notFound(`${abs} is not in snapshot ${snap.id.slice(0, 8)}`);
        const items: { path: string; entry: TreeEntry }[] = [];
        if (entry.type !== 'dir') items.push({ path: abs, entry });
        else if (p === undefined || opts.recursive) for await (const it of snap.walk(abs, entry)) items.push(it);
        else for (const e of (await snap.tree(entry.tree!)).entries) items.push({ path: abs === '/' ? `/${e.name}` : `${abs}/${e.name}`, entry: e });
        if (g.json) return printJson({ snapshot: snap.id, path: abs, entries: items.map((i) => toJson(i.path, i.entry)) });
        lines(items.map((i) => (opts.long ? longLine(i.path, i.entry) : i.entry.type === 'dir' ? displayName(i.path) + '/' : displayName(i.path))));
      } finally {
        repo.close();
      }
    });
}

function toJson(p: string, e: TreeEntry) {
  return {
    path: p,
    name: e.name,
    type: e.type,
    mode: e.mode & 0o7777,
    size: e.size,
    mtime: new Date(Number(BigInt(e.mtimeNs) / 1_000_000n)).toISOString(),
    uid: e.uid,
    gid: e.gid,
    ...(e.type === 'symlink' ? { target: e.target } : {}),
  };
}

function longLine(p: string, e: TreeEntry): string {
  const type = e.type === 'dir' ? 'd' : e.type === 'symlink' ? 'l' : '-';
  const perms = [6, 3, 0].map((s) => ((e.mode >> s) & 4 ? 'r' : '-') + ((e.mode >> s) & 2 ? 'w' : '-') + ((e.mode >> s) & 1 ? 'x' : '-')).join('');
  const time = formatTime(Number(BigInt(e.mtimeNs) / 1_000_000n));
  const name = e.type === 'symlink' ? `${displayName(p)} -> ${displayName(e.target ?? '')}` : displayName(p);
  return `${type}${perms} ${String(e.uid).padStart(5)} ${String(e.gid).padStart(5)} ${String(e.size).padStart(12)} ${time} ${name}`;
}

export type { Snapshot };
