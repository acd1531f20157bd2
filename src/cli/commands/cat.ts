import * as fs from 'node:fs';
import type { Command } from 'commander';
import { absolutePath, openFile, planRead, readRange } from '../../engine/read.js';
import { findSnapshot } from '../../engine/snapshot.js';
import { usageError } from '../../errors.js';
import { parseRange, resolveRange } from '../../util/range.js';
import { parseWhen } from '../../util/when.js';
import { globals, openRepo } from '../context.js';
import { printJson } from '../output.js';

const JSON_DATA_LIMIT = 64 * 1024 * 1024;

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
      const repo = await openRepo(cmd, { readonly: true });
      try {
        const abs = absolutePath(p);
        // From a server, one question finds snapshot, version and pieces, where walking
        // the trees costs a round trip each; a local read walks them (and checks sizes against them).
        const plan = repo.remote ? await planRead(repo, when, abs, opts.host, spec) : undefined;
        const snap = plan?.snapshot ?? (await findSnapshot(repo, when, abs, opts.host));
        const file = plan?.file ?? (await openFile(snap, abs));
        const size = file.version.size;
        const range = plan ? { start: plan.start, end: plan.end } : size === 0 && !spec ? { start: 0, end: -1 } : resolveRange(spec, size);
        const length = Math.max(0, range.end - range.start + 1);
        if (g.json && !opts.output && length > JSON_DATA_LIMIT) throw usageError(`range too large for --json (${length} bytes); add --output FILE`);
        const chunks: Buffer[] = [];
        const out = opts.output ? fs.createWriteStream(opts.output) : g.json ? undefined : process.stdout;
        if (length > 0) {
          for await (const piece of readRange(repo, file.version, range.start, range.end, plan?.first)) {
            if (out) {
              if (!out.write(piece)) await new Promise<void>((r) => out.once('drain', () => r()));
            } else chunks.push(Buffer.from(piece));
          }
        }
        if (out && out !== process.stdout) await new Promise<void>((resolve, reject) => (out as fs.WriteStream).end((e?: Error | null) => (e ? reject(e) : resolve())));
        if (g.json) {
          printJson({
            snapshot: snap.id,
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
