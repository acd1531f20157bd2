import type { Command } from 'commander';
import { ExitCode, usageError } from '../../errors.js';
import * as fs from 'node:fs';
import { backup, CACHEDIR_TAG, type FileChange } from '../../engine/backup.js';
import { displayName } from '../../util/names.js';
import { parseCompression } from '../compression.js';
import { splitTags } from '../../engine/filter.js';
import { formatBytes, parseSize } from '../../util/size.js';
import { parseIsoTime } from '../../util/when.js';
import { globals, openRepo } from '../context.js';
import { interruptSignal } from '../signals.js';
import { chalk, line, plural, printJson, Progress, shortId, wantsProgress, warn } from '../output.js';

export function register(program: Command): void {
  program
    .command('backup')
    .description('back up files and directories (stored by absolute path) as a new snapshot')
    .argument('[path...]', 'files or directories to back up')
    .option('--tag <tag[,tag...]>', 'tag the snapshot (repeatable; a comma separates tags)', collect)
    .option('--time <iso8601>', "the snapshot's time (default: now)")
    .option('--exclude <glob>', 'skip matching paths (repeatable)', collect)
    .option('--exclude-file <file>', 'skip paths matching the patterns in FILE, one a line (repeatable)', collect)
    .option('--iexclude <glob>', 'like --exclude, ignoring case (repeatable)', collect)
    .option('--iexclude-file <file>', 'like --exclude-file, ignoring case (repeatable)', collect)
    .option('--exclude-if-present <name[:text]>', 'skip a directory holding a file NAME (that starts with TEXT, if given) (repeatable)', collect)
    .option('--exclude-caches', 'skip directories marked as caches (a CACHEDIR.TAG file)')
    .option('--exclude-larger-than <size>', 'skip files larger than SIZE (e.g. 500M)')
    .option('-x, --one-file-system', 'do not cross into other file systems: a mount point is stored as an empty directory')
    .option('--files-from <file>', 'back up the paths listed in FILE, one a line, besides those given (repeatable)', collect)
    .option('--parent <snapshot>', 'compare against this snapshot instead of the latest one of the same host and paths')
    .option('--host <name>', 'host name to record (default: this machine)')
    .option('--force', 'read every file, even if its size, times and inode are unchanged')
    .option('--compression <level>', "how hard to compress new blocks: auto (the repository's setting), off, fast, max or a zstd level 1-19", 'auto')
    .option('--stdin', 'back up what is piped in on standard input, as one file (a database dump, say)')
    .option('--stdin-filename <name>', 'the name that file gets in the snapshot, right below / (default: stdin)')
    .option('-n, --dry-run', 'read and compare as a backup does, but store nothing; say what would be added')
    .option('--list', 'name each file stored anew (new, changed) and each file gone since the parent snapshot (removed)')
    .option('--no-xattrs', 'do not store extended attributes (user.*, security.*, trusted.*, POSIX ACLs)')
    .action(async (given: string[], opts: BackupFlags, cmd: Command) => {
      const g = globals(cmd);
      const stdinPath = stdinSource(opts, given);
      const compressionLevel = parseCompression(opts.compression ?? 'auto');
      const paths = stdinPath ? [stdinPath] : [...given, ...(opts.filesFrom ?? []).flatMap((f) => listFile(f, '--files-from'))];
      if (paths.length === 0) throw usageError('backup needs at least one PATH (or --files-from FILE, or --stdin)');
      const excludeLargerThan = opts.excludeLargerThan === undefined ? undefined : parseSize(opts.excludeLargerThan);
      let time: number | undefined;
      if (opts.time !== undefined) {
        time = parseIsoTime(opts.time, 'start');
        if (time === undefined) throw usageError(`malformed --time "${opts.time}" (use ISO 8601, e.g. 2026-03-01T12:00:00Z)`);
      }
      const repo = await openRepo(cmd);
      const progress = new Progress(wantsProgress(g), 'scanning');
      const signal = interruptSignal();
      // Listed as found; with --json, in the summary (as restore --dry-run lists its actions).
      const changes: { change: FileChange; path: string }[] = [];
      const onFile = !opts.list ? undefined : g.json ? (change: FileChange, p: string) => void changes.push({ change, path: p }) : (change: FileChange, p: string) => progress.line(`${change.padEnd(8)} ${displayName(p)}`);
      try {
        const r = await backup(repo, {
          paths,
          tags: [...new Set((opts.tag ?? []).flatMap(splitTags))],
          time,
          excludes: [...(opts.exclude ?? []), ...(opts.excludeFile ?? []).flatMap((f) => listFile(f, '--exclude-file'))],
          iexcludes: [...(opts.iexclude ?? []), ...(opts.iexcludeFile ?? []).flatMap((f) => listFile(f, '--iexclude-file'))],
          excludeIfPresent: [...(opts.excludeIfPresent ?? []), ...(opts.excludeCaches ? [CACHEDIR_TAG] : [])],
          excludeLargerThan,
          oneFileSystem: opts.oneFileSystem,
          parent: opts.parent,
          host: opts.host,
          force: opts.force,
          noXattrs: opts.xattrs === false,
          dryRun: opts.dryRun,
          compressionLevel,
          stdinPath,
          onFile,
          signal,
          estimate: wantsProgress(g),
          onProgress: (p) => progress.update(p.bytesDone, p.bytesTotal, `${p.files}${p.filesTotal ? `/${p.filesTotal}` : ''} files`),
          onWarning: (m) => progress.warn(m),
        });
        progress.stop();
        if (g.json) printJson({ ...r, ...repo.traffic, ...(opts.list ? { changes } : {}) });
        else if (g.quiet) {
          if (!r.dryRun) line(r.snapshot);
        }
        else {
          line(`Files: ${r.filesNew} new, ${r.filesChanged} changed, ${r.filesUnchanged} unchanged; ${plural(r.dirs, 'directory', 'directories')}${r.specials > 0 ? `; ${plural(r.specials, 'FIFO or device node', 'FIFOs and device nodes')}` : ''}`);
          if (r.filesExcluded + r.dirsExcluded > 0) line(`Left out: ${plural(r.filesExcluded, 'file')} larger than ${opts.excludeLargerThan}, ${plural(r.dirsExcluded, 'directory', 'directories')} with a marker file`);
          line(
            `Data:  ${formatBytes(r.bytesRead)} read, ${formatBytes(r.bytesAdded)} ${r.dryRun ? 'to add before compression' : 'added'} (${plural(r.blocksNew, 'new block')}, ${r.blocksReused} reused; ${plural(r.dataEntries, 'data entry', 'data entries')} + ${plural(r.refEntries, 'ref entry', 'ref entries')})`,
          );
          if (r.dryRun) line(`dry run: nothing was stored (${(r.durationMs / 1000).toFixed(1)}s)`);
          else line(`snapshot ${chalk.bold(shortId(r.snapshot))} saved (${r.snapshot}) in ${(r.durationMs / 1000).toFixed(1)}s`);
        }
        if (r.incomplete) {
          if (!g.json) {
            const sources = r.warnings.filter((w) => !w.startsWith('skipping')).length - r.xattrsLeftOut;
            const what = [sources > 0 ? `${plural(sources, 'source')} could not be read` : '', r.xattrsLeftOut > 0 ? `${plural(r.xattrsLeftOut, 'extended attribute')} could not be kept` : ''].filter((x) => x);
            warn(`${what.join(', ')}; the snapshot is incomplete`);
          }
          process.exitCode = ExitCode.incomplete;
        }
      } finally {
        progress.stop();
        repo.close();
      }
    });
}

interface BackupFlags {
  tag?: string[];
  time?: string;
  exclude?: string[];
  excludeFile?: string[];
  iexclude?: string[];
  iexcludeFile?: string[];
  excludeIfPresent?: string[];
  excludeCaches?: boolean;
  excludeLargerThan?: string;
  oneFileSystem?: boolean;
  filesFrom?: string[];
  parent?: string;
  host?: string;
  force?: boolean;
  dryRun?: boolean;
  list?: boolean;
  xattrs?: boolean;
  stdin?: boolean;
  stdinFilename?: string;
  compression?: string;
}

/** Where --stdin's file goes in the snapshot, or undefined without --stdin; refuses what cannot work. */
function stdinSource(opts: BackupFlags, given: string[]): string | undefined {
  if (!opts.stdin) {
    if (opts.stdinFilename !== undefined) throw usageError('--stdin-filename needs --stdin');
    return undefined;
  }
  if (given.length > 0 || opts.filesFrom) throw usageError('--stdin backs up standard input alone: give no PATH and no --files-from');
  if (process.stdin.isTTY) throw usageError('--stdin needs data piped in (e.g. pg_dump db | strata backup --stdin --stdin-filename db.sql)');
  // One name, stored right below /: the directories above a longer path would have no stats of their own.
  const name = opts.stdinFilename ?? 'stdin';
  if (name === '' || name === '.' || name === '..' || name.includes('/') || name.includes('\0')) throw usageError(`--stdin-filename "${name}": give one file name, without "/"`);
  return `/${name}`;
}

/** The lines of a list file (patterns, paths): blank lines and lines starting with # are skipped. */
function listFile(file: string, option: string): string[] {
  let text: string;
  try {
    text = file === '-' ? fs.readFileSync(0, 'utf8') : fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw usageError(`${option}: cannot read ${file} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  return text
    .split(/\r?\n/)
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('#'));
}

function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}
