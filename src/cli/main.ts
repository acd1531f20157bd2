/**
 * The strata command line: parses options, runs one command, maps errors to
 * one line on stderr and a documented exit code. Never a stack trace for
 * anything a user can cause (set STRATA_DEBUG=1 to see one).
 */
import { Command, CommanderError } from 'commander';
import { ExitCode, StrataError } from '../errors.js';
import { register as backup } from './commands/backup.js';
import { register as cat } from './commands/cat.js';
import { register as init } from './commands/init.js';
import { register as key } from './commands/key.js';
import { register as ls } from './commands/ls.js';
import { register as maintenance } from './commands/maintenance.js';
import { register as restore } from './commands/restore.js';
import { register as serve } from './commands/serve.js';
import { register as snapshots } from './commands/snapshots.js';
import { register as toc } from './commands/toc.js';
import { register as token } from './commands/token.js';
import { chalk, printJson } from './output.js';
import { VERSION } from '../version.js';

const EXIT_CODES = `
Exit codes:
  0    success
  1    error
  2    usage error (bad option or argument)
  3    backup finished, but some sources could not be read
  10   no repository at the given location
  11   repository is locked
  12   wrong password or key
  130  interrupted

Environment:
  STRATA_REPO, STRATA_PASSWORD, STRATA_PASSWORD_FILE, STRATA_KEY_FILE, NO_COLOR`;

export function buildProgram(): Command {
  const program = new Command('strata')
    .description('backups as a baseline plus incrementals: any byte range of any file at any point in time')
    .version(VERSION)
    .option('-r, --repo <dir|url>', 'repository directory, or http(s)://HOST:PORT of a strata server (or STRATA_REPO)')
    .option('--token <token>', 'bearer token for a server (or STRATA_TOKEN)')
    .option('--ca-cert <file>', "trust this certificate (PEM) for a server's TLS (or STRATA_CA_CERT)")
    .option('--cache-dir <dir>', 'block cache for a server (or STRATA_CACHE_DIR; default ~/.cache/strata)')
    .option('--no-cache', 'do not cache blocks from a server')
    .option('--password-file <file>', 'read the password from FILE (or STRATA_PASSWORD_FILE)')
    .option('--key-file <file>', 'use an exported key instead of a password (or STRATA_KEY_FILE)')
    .option('--json', 'print one JSON document on stdout')
    .option('-q, --quiet', 'print only results: no progress, no summaries')
    .showHelpAfterError('(run "strata help" for usage)')
    .addHelpText('after', EXIT_CODES)
    .exitOverride();
  for (const register of [init, backup, snapshots, ls, cat, restore, toc, key, maintenance, serve, token]) register(program);
  const all = (c: Command): Command[] => [c, ...c.commands.flatMap(all)];
  for (const cmd of all(program).slice(1)) {
    cmd.exitOverride();
    if (cmd.commands.length === 0) cmd.addHelpText('after', EXIT_CODES);
  }
  return program;
}

export async function main(argv: string[]): Promise<void> {
  process.stdout.on('error', (e: NodeJS.ErrnoException) => {
    if (e.code === 'EPIPE') process.exit(process.exitCode ?? 0);
    throw e;
  });
  const program = buildProgram();
  const json = argv.includes('--json');
  try {
    await program.parseAsync(argv);
  } catch (e) {
    if (e instanceof CommanderError) {
      // Help and version are "errors" to commander; their exit code is 0.
      process.exitCode = e.exitCode === 0 ? 0 : ExitCode.usage;
      if (json && e.exitCode !== 0) printJson({ error: 'usage', message: e.message.replace(/^error: /, '') });
      return;
    }
    if (e instanceof StrataError) {
      if (json) printJson(e.toJSON());
      process.stderr.write(`${chalk.red('strata:')} ${e.message}\n`);
      if (process.env.STRATA_DEBUG) process.stderr.write(`${e.stack}\n`);
      process.exitCode = e.exitCode;
      return;
    }
    const err = e as NodeJS.ErrnoException;
    if (err?.code === 'ENOSPC' || err?.code === 'SQLITE_FULL') {
      process.stderr.write(`${chalk.red('strata:')} no space left on device; nothing was committed\n`);
    } else if (err?.code === 'EACCES' || err?.code === 'EPERM' || err?.code === 'EROFS') {
      process.stderr.write(`${chalk.red('strata:')} permission denied: ${err.path ?? err.message}\n`);
    } else {
      process.stderr.write(`${chalk.red('strata: internal error:')} ${err?.message ?? String(e)}\n`);
      if (process.env.STRATA_DEBUG) process.stderr.write(`${err?.stack}\n`);
    }
    if (json) printJson({ error: err?.code ?? 'internal', message: err?.message ?? String(e) });
    process.exitCode = ExitCode.error;
  }
}
