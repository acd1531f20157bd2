import * as fs from 'node:fs';
import type { Command } from 'commander';
import { absolutePath, openFileAt } from '../../engine/snapshot-tree.js';
import { usageError } from '../../errors.js';
import { parseRange } from '../../util/range.js';
import { parseWhen } from '../../util/when.js';
import type { Repository } from '../../repo/repository.js';
import { globals, openRepo } from '../context.js';
import { printJson } from '../output.js';

const JSON_DATA_LIMIT = 64 * 1024 * 1024;
/** A range read ahead of a bucket's freshness check is at most this long (its blocks stay in the decoded cache). */
const WARM_LIMIT = 256 * 1024;

export function register(program: Command): void {
  program
    .command('cat')
    .description('write a file, or a byte range of it, as it was at WHEN, to stdout')
    .argument('<path>', 'the file (absolute, or relative to the current directory)')
    .option('--at <when>', 'latest, a snapshot id or prefix, or an ISO 8601 date/time', 'latest')
    .option('--range <range>', 'bytes START-END (inclusive), START+LENGTH, START-, or -SUFFIX; decimal, 0x hex, or sizes like 4K, 1MiB')
    .option('-o, --output <file>', 'write to FILE instead of stdout')
    .option('--host <name>', 'only consider snapshots of this host')
    .action(async (p: string, opts: { at: string; range?: string; output?: string; host?: string }, cmd: Command) => {
      const g = globals(cmd);
      const when = parseWhen(opts.at);
      const spec = opts.range !== undefined ? parseRange(opts.range) : undefined;
      const abs = absolutePath(p);
      // A small range of a named snapshot: its blocks are fetched while a bucket's packs are listed.
      const warm =
        when.kind === 'id' && spec !== undefined
          ? async (r: Repository) => {
              const { file, ...range } = await openFileAt(r, abs, { at: when, host: opts.host }, spec);
              if (range.end - range.start + 1 > WARM_LIMIT) return;
              for await (const _ of file.stream(range.start, range.end, { shared: true }));
            }
          : undefined;
      const repo = await openRepo(cmd, { readonly: true, ...(warm ? { warm } : {}) });
      try {
        const { tree, file, ...range } = await openFileAt(repo, abs, { at: when, host: opts.host }, spec);
        const size = file.size;
        const length = Math.max(0, range.end - range.start + 1);
        if (g.json && !opts.output && length > JSON_DATA_LIMIT) throw usageError(`range too large for --json (${length} bytes); add --output FILE`);
        const chunks: Buffer[] = [];
        const out = opts.output ? fs.createWriteStream(opts.output) : g.json ? undefined : process.stdout;
        if (length > 0) {
          // Pieces only go out (or are copied for --json): views of cached blocks will do.
          for await (const piece of file.stream(range.start, range.end, { shared: true })) {
            if (out) {
              if (!out.write(piece)) await new Promise<void>((r) => out.once('drain', () => r()));
            } else chunks.push(Buffer.from(piece));
          }
        }
        if (out && out !== process.stdout) await new Promise<void>((resolve, reject) => (out as fs.WriteStream).end((e?: Error | null) => (e ? reject(e) : resolve())));
        if (g.json) {
          printJson({
            snapshot: tree.id,
            path: abs,
            size,
            start: range.start,
            end: range.end,
            length,
            blocksRead: repo.blocksRead,
            ...repo.traffic,
            ...(opts.output ? { output: opts.output } : { data: Buffer.concat(chunks).toString('base64') }),
          });
        }
      } finally {
        repo.close();
      }
    });
}
