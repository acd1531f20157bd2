/** `strata diff SNAP1 SNAP2`: files added, removed and changed, with the changed byte ranges from the TOCs. */
import type { Command } from 'commander';
import { diffSnapshots, type Range } from '../../engine/diff.js';
import { findSnapshot } from '../../engine/snapshot.js';
import { TYPE_NAMES } from '../../engine/snapshot-tree.js';
import { deviceParts } from '../../util/nodes.js';
import { formatBytes } from '../../util/size.js';
import { parseWhen } from '../../util/when.js';
import { globals, openRepo } from '../context.js';
import { line, lines, plural, printJson, shortId } from '../output.js';

export function register(program: Command): void {
  program
    .command('diff')
    .description('show files added, removed and changed between two snapshots, and the byte ranges that changed')
    .argument('<snapshot1>', 'the older snapshot: an id or prefix, latest, or an ISO 8601 date/time')
    .argument('<snapshot2>', 'the newer snapshot, likewise')
    .option('--host <name>', 'for latest and dates, only consider snapshots of this host')
    .action(async (w1: string, w2: string, opts: { host?: string }, cmd: Command) => {
      const g = globals(cmd);
      const [when1, when2] = [parseWhen(w1), parseWhen(w2)];
      const repo = await openRepo(cmd, { readonly: true });
      try {
        const a = await findSnapshot(repo, when1, undefined, opts.host);
        const b = await findSnapshot(repo, when2, undefined, opts.host);
        const r = await diffSnapshots(repo, a, b);
        if (g.json) return printJson(r);
        const show = (p: string, type: string) => (type === 'dir' ? p + '/' : p);
        const ranges = (list: Range[]) => list.map(([s, e]) => `${s}-${e}`).join(', ');
        const out: string[] = [];
        for (const e of r.added) out.push(`+ ${show(e.path, e.type)}`);
        for (const e of r.removed) out.push(`- ${show(e.path, e.type)}`);
        for (const c of r.changed) {
          if (c.type === 'symlink') out.push(`M ${c.path} -> ${c.target2} (was -> ${c.target1})`);
          else if (c.rdev1 !== undefined) out.push(`M ${c.path} (${TYPE_NAMES[c.type]} ${device(c.rdev1)} -> ${device(c.rdev2!)})`);
          else {
            out.push(`M ${c.path} (${c.size1} -> ${c.size2} bytes)`);
            if (c.ranges.length > 0) out.push(`    changed bytes ${ranges(c.ranges)}`);
            if (c.replaced.length > 0) out.push(`    replaced bytes of ${shortId(a.id)}: ${ranges(c.replaced)}`);
          }
        }
        for (const e of r.metadata) out.push(`U ${e.path}`);
        lines(out);
        if (!g.quiet) {
          line(
            `${shortId(a.id)} -> ${shortId(b.id)}: ${r.added.length} added, ${r.removed.length} removed, ${r.changed.length} changed (${formatBytes(r.bytesChanged)} in changed ranges), ${plural(r.metadata.length, 'metadata change')}`,
          );
        }
      } finally {
        repo.close();
      }
    });
}

/** A device number as ls -l shows it: major, minor. */
function device(rdev: string): string {
  const { major, minor } = deviceParts(BigInt(rdev));
  return `${major},${minor}`;
}
