/** `strata blame PATH --range A-B`: which snapshot last changed each part of a byte range. */
import type { Command } from 'commander';
import { absolutePath, openFileAt, SnapshotTree } from '../../engine/snapshot-tree.js';
import { parseRange } from '../../util/range.js';
import { parseWhen } from '../../util/when.js';
import { globals, openRepo } from '../context.js';
import { line, printJson, shortId, table, formatTime } from '../output.js';

export function register(program: Command): void {
  program
    .command('blame')
    .description('show which snapshot last changed each part of a byte range, following reference blocks back')
    .argument('<path>', 'the file (absolute, or relative to the current directory)')
    .option('--range <range>', 'bytes START-END (inclusive), START+LENGTH, START-, or -SUFFIX (default: the whole file)')
    .option('--at <when>', 'latest, a snapshot id or prefix, or an ISO 8601 date/time', 'latest')
    .option('--host <name>', 'only consider snapshots of this host')
    .action(async (p: string, opts: { at: string; range?: string; host?: string }, cmd: Command) => {
      const g = globals(cmd);
      const when = parseWhen(opts.at);
      const spec = opts.range !== undefined ? parseRange(opts.range) : undefined;
      const repo = await openRepo(cmd, { readonly: true });
      try {
        const abs = absolutePath(p);
        const { tree, file, start, end } = await openFileAt(repo, abs, { at: when, host: opts.host }, spec);
        const spans = await file.blame(start, end);
        const times = new Map((await SnapshotTree.all(repo)).map((t) => [t.id, t.time]));
        const out = spans.map((s) => ({ ...s, length: s.end - s.start + 1, time: times.has(s.snapshot) ? new Date(times.get(s.snapshot)!).toISOString() : null }));
        if (g.json) return printJson({ snapshot: tree.id, path: abs, size: file.size, start, end, spans: out });
        const hex = (n: number) => '0x' + n.toString(16).toUpperCase();
        const rows = [['Start', 'End', 'Length', 'Snapshot', 'Time']];
        for (const s of out) rows.push([hex(s.start), hex(s.end), String(s.length), shortId(s.snapshot), s.time ? formatTime(Date.parse(s.time)) : '(forgotten)']);
        line(`${abs} in snapshot ${shortId(tree.id)}: bytes ${start}-${end} of ${file.size}`);
        if (out.length > 0) line(table(rows));
      } finally {
        repo.close();
      }
    });
}
