import type { Command } from 'commander';
import { absolutePath, SnapshotTree } from '../../engine/snapshot-tree.js';
import { parseWhen } from '../../util/when.js';
import { globals, openRepo } from '../context.js';
import { line, printJson, shortId, table } from '../output.js';

export function register(program: Command): void {
  program
    .command('toc')
    .description("show a file version's table of contents: data entries and reference blocks with their offsets")
    .argument('<path>', 'the file (absolute, or relative to the current directory)')
    .option('--at <when>', 'latest, a snapshot id or prefix, or an ISO 8601 date/time', 'latest')
    .option('--blocks', "one reference block per unchanged block of the target (the seed's FIG. 6 view)")
    .option('--host <name>', 'only consider snapshots of this host')
    .action(async (p: string, opts: { at: string; blocks?: boolean; host?: string }, cmd: Command) => {
      const g = globals(cmd);
      const when = parseWhen(opts.at);
      const repo = await openRepo(cmd, { readonly: true });
      try {
        const abs = absolutePath(p);
        const tree = await SnapshotTree.open(repo, { at: when, host: opts.host, covering: abs });
        const file = await tree.open(abs);
        const toc = await file.toc({ blocks: opts.blocks });
        const out = toc.entries;
        if (g.json) return printJson(out);
        const hex = (n: number) => '0x' + n.toString(16).toUpperCase();
        const table_ = [['#', 'Start', 'End', 'Kind', 'Points at']];
        out.forEach((e, i) => {
          if (e.kind === 'data') table_.push([String(i + 1), hex(e.start), hex(e.end), 'data', `block ${e.block.slice(0, 16)} (${e.size} B)`]);
          else {
            const sign = e.offset >= 0 ? '+' : '-';
            table_.push([String(i + 1), hex(e.start), hex(e.end), 'ref', `snapshot ${shortId(e.target.snapshot)} ${hex(e.target.start)}-${hex(e.target.end)} (offset ${sign}${hex(Math.abs(e.offset))})`]);
          }
        });
        line(`${abs} in snapshot ${shortId(tree.id)}: ${toc.size} bytes, ${out.length} entries${toc.since ? ` (unchanged since snapshot ${shortId(toc.since)})` : ''}`);
        line(table(table_));
      } finally {
        repo.close();
      }
    });
}
