import type { Command } from 'commander';
import { splitTags } from '../../engine/filter.js';
import { tagSnapshots } from '../../engine/tag.js';
import { usageError } from '../../errors.js';
import { globals, openRepo } from '../context.js';
import { line, plural, printJson, shortId, warn } from '../output.js';
import { parseWait } from './maintenance.js';

const collect = (v: string, prev: string[] = []) => [...prev, ...splitTags(v)];

export function register(program: Command): void {
  program
    .command('tag')
    .description("change snapshots' tags (a new sealed record supersedes each one's old record)")
    .argument('<snapshot...>', 'snapshot ids or prefixes')
    .option('--add <tag[,tag...]>', 'add these tags (repeatable)', collect)
    .option('--remove <tag[,tag...]>', 'remove these tags (repeatable)', collect)
    .option('--set <tag[,tag...]>', 'replace all tags with these ("" for none; repeatable)', collect)
    .option('--lock-wait <duration>', 'wait this long for a running forget/prune to finish (e.g. 30s, 5m)')
    .action(async (ids: string[], opts: { add?: string[]; remove?: string[]; set?: string[]; lockWait?: string }, cmd: Command) => {
      const g = globals(cmd);
      if (!opts.add && !opts.remove && !opts.set) throw usageError('give --add, --remove or --set');
      const waitMs = parseWait(opts.lockWait);
      const repo = await openRepo(cmd);
      try {
        const r = await tagSnapshots(repo, ids, { add: opts.add, remove: opts.remove, set: opts.set }, { waitMs, onWait: (m) => warn(m) });
        if (g.json) return printJson(r);
        if (g.quiet) return;
        for (const c of r.changed) line(`${shortId(c.id)}  ${c.tags.length > 0 ? c.tags.join(',') : '(no tags)'}`);
        line(`changed ${plural(r.changed.length, 'snapshot')}${r.unchanged.length > 0 ? `; ${r.unchanged.length} already had those tags` : ''}`);
      } finally {
        repo.close();
      }
    });
}
