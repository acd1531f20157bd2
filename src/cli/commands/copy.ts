import type { Command } from 'commander';
import { copySnapshots, type CopiedSnapshot } from '../../engine/copy.js';
import { StrataError } from '../../errors.js';
import type { Repository } from '../../repo/repository.js';
import { formatBytes } from '../../util/size.js';
import { FROM_ENV, globals, openRepository, type GlobalOptions } from '../context.js';
import { addFilterOptions, filterOf, type FilterFlags } from '../filter.js';
import { chalk, line, plural, printJson, Progress, shortId, wantsProgress } from '../output.js';
import { interruptSignal } from '../signals.js';

interface CopyFlags extends FilterFlags {
  fromRepo?: string;
  fromPasswordFile?: string;
  fromKeyFile?: string;
  fromToken?: string;
  fromCaCert?: string;
  dryRun?: boolean;
}

export function register(program: Command): void {
  const cmd = program
    .command('copy')
    .description('copy snapshots from another repository (--from-repo) into this one; a snapshot copied before is skipped')
    .argument('[snapshot...]', 'source snapshot ids or prefixes (default: every snapshot the filters keep)')
    .option('--from-repo <dir|url>', 'the source repository: a directory, http(s)://HOST:PORT of a strata server, or s3://BUCKET/PREFIX (or STRATA_FROM_REPO)')
    .option('--from-password-file <file>', "read the source repository's password from FILE (or STRATA_FROM_PASSWORD_FILE; STRATA_FROM_PASSWORD)")
    .option('--from-key-file <file>', 'use an exported key of the source repository (or STRATA_FROM_KEY_FILE)')
    .option('--from-token <token>', "bearer token for the source's server (or STRATA_FROM_TOKEN)")
    .option('--from-ca-cert <file>', "trust this certificate (PEM) for the source server's TLS (or STRATA_FROM_CA_CERT)")
    .option('--dry-run', 'list what would be copied; store nothing');
  addFilterOptions(cmd, 'copy only').action(async (ids: string[], opts: CopyFlags, cmd: Command) => {
    const g = globals(cmd);
    const from: GlobalOptions = {
      repo: opts.fromRepo,
      passwordFile: opts.fromPasswordFile,
      keyFile: opts.fromKeyFile,
      token: opts.fromToken,
      caCert: opts.fromCaCert,
      cacheDir: g.cacheDir,
      cache: g.cache,
      s3Endpoint: g.s3Endpoint,
    };
    const source = await openSource(from);
    let dest: Repository | undefined;
    const progress = new Progress(wantsProgress(g), 'copying');
    try {
      dest = await openRepository(g);
      const signal = interruptSignal();
      const each = (c: CopiedSnapshot) => {
        if (g.json || g.quiet) return;
        if (!c.snapshot) return progress.line(`would copy snapshot ${shortId(c.source)} (${c.time}, ${c.host})${c.parent ? ` on top of ${shortId(c.parent)}` : ''}`);
        progress.line(
          `snapshot ${shortId(c.source)} copied as ${chalk.bold(shortId(c.snapshot))}${c.parent ? ` on top of ${shortId(c.parent)}` : ''}: files ${c.filesNew} new, ${c.filesChanged} changed, ${c.filesUnchanged} unchanged; ${formatBytes(c.bytesRead)} read, ${formatBytes(c.bytesAdded)} added`,
        );
      };
      const r = await copySnapshots(source, dest, {
        ids,
        filter: filterOf(opts),
        dryRun: opts.dryRun,
        signal,
        onSnapshot: each,
        onProgress: (p) => progress.update(p.bytesDone, p.bytesTotal, `snapshot ${p.snapshot}/${p.snapshots}, ${p.files} files`),
      });
      progress.stop();
      if (g.json) return printJson({ copied: r.copied.length, skipped: r.skipped.length, bytesRead: r.bytesRead, bytesAdded: r.bytesAdded, ...(r.dryRun ? { dryRun: true } : {}), snapshots: r.copied, skippedSnapshots: r.skipped, durationMs: r.durationMs });
      if (g.quiet) return;
      const skipped = r.skipped.length > 0 ? `; ${plural(r.skipped.length, 'snapshot')} already there` : '';
      if (r.dryRun) line(`dry run: ${plural(r.copied.length, 'snapshot')} would be copied${skipped}; nothing was stored`);
      else line(`${plural(r.copied.length, 'snapshot')} copied${skipped}: ${formatBytes(r.bytesRead)} read, ${formatBytes(r.bytesAdded)} added in ${(r.durationMs / 1000).toFixed(1)}s`);
    } finally {
      progress.stop();
      dest?.close();
      source.close();
    }
  });
}

/** The source repository, read only; its errors say they are the source's. */
async function openSource(from: GlobalOptions): Promise<Repository> {
  try {
    return await openRepository(from, { readonly: true }, FROM_ENV);
  } catch (e) {
    if (e instanceof StrataError && !e.message.includes('source repository')) throw new StrataError(e.code, `source repository: ${e.message}`, e.data);
    throw e;
  }
}
