/**
 * The strata command line: parses options, runs one command, maps errors to
 * one line on stderr and a documented exit code. Never a stack trace for
 * anything a user can cause (set STRATA_DEBUG=1 to see one).
 */
import { Command, CommanderError } from 'commander';
import { ERRORS, EXIT_MEANINGS, StrataError, type ErrorCode, type ExitCodeValue } from '../errors.js';
import { chalk, printJson } from './output.js';
import { commandFinished } from './signals.js';
import { VERSION } from '../version.js';

const ENVIRONMENT = `
Environment (an option given on the command line wins over its variable):
  STRATA_REPO           the repository (--repo)
  STRATA_PASSWORD       the password (before STRATA_PASSWORD_FILE)
  STRATA_PASSWORD_FILE  a file holding the password (--password-file)
  STRATA_KEY_FILE       a key from "strata key export" (--key-file)
  STRATA_TOKEN          a server's bearer token (--token)
  STRATA_CA_CERT        a certificate to trust for a server's TLS (--ca-cert)
  STRATA_FROM_REPO, STRATA_FROM_PASSWORD, STRATA_FROM_PASSWORD_FILE,
  STRATA_FROM_KEY_FILE, STRATA_FROM_TOKEN, STRATA_FROM_CA_CERT
                        copy's source repository and its credentials
                        (--from-repo and the other --from-* options)
  STRATA_CACHE_DIR      the block cache and S3 catalogs (--cache-dir; else
                        $XDG_CACHE_HOME/strata or ~/.cache/strata)
  AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID,
  AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_PROFILE
                        an s3:// repository's endpoint, region and credentials
                        (else the profile in ~/.aws/credentials)
  STRATA_DEBUG          print a stack trace with errors
  STRATA_MOUNT_MEMORY_LOG
                        a file strata mount logs its memory to (measuring)
  NO_COLOR              no colours`;

/** The exit codes a command can end with (help lists only these). */
function exitCodesOf(command: string | undefined): ExitCodeValue[] {
  switch (command) {
    case undefined:
      return Object.keys(EXIT_MEANINGS).map(Number) as ExitCodeValue[];
    case 'backup':
      return [0, 1, 2, 3, 10, 11, 12, 130];
    case 'restore':
      return [0, 1, 2, 3, 10, 12, 130];
    case 'forget':
    case 'tag':
    case 'copy':
    case 'prune':
    case 'check':
    case 'rebuild-catalog':
    case 'unlock':
    case 'commit':
      return [0, 1, 2, 10, 11, 12, 130];
    case 'mount':
      // 11: a writable mount's commit at unmount found the repository locked.
      return [0, 1, 2, 10, 11, 12];
    case 'serve':
    case 'token add':
    case 'token list':
    case 'token revoke':
    case 'version':
    case 'completion':
      return [0, 1, 2, 130];
    default:
      return [0, 1, 2, 10, 12, 130];
  }
}

function exitCodes(command: string | undefined): string {
  return `\nExit codes:\n${exitCodesOf(command).map((c) => `  ${String(c).padEnd(4)} ${EXIT_MEANINGS[c]}`).join('\n')}\n${ENVIRONMENT}`;
}

type Registrar = () => Promise<{ register: (program: Command) => void }>;

/**
 * The modules that define the commands, in the order help lists them. A run
 * loads only the one it needs: loading every command's code (the server,
 * maintenance) cost a third of a short command's time.
 */
const MODULES: [names: string[], load: Registrar][] = [
  [['init'], () => import('./commands/init.js')],
  [['backup'], () => import('./commands/backup.js')],
  [['snapshots'], () => import('./commands/snapshots.js')],
  [['ls'], () => import('./commands/ls.js')],
  [['cat'], () => import('./commands/cat.js')],
  [['restore'], () => import('./commands/restore.js')],
  [['mount', 'commit'], () => import('./commands/mount.js')],
  [['toc'], () => import('./commands/toc.js')],
  [['items', 'item', 'sql', 'manifest'], () => import('./commands/items.js')],
  [['diff'], () => import('./commands/diff.js')],
  [['blame'], () => import('./commands/blame.js')],
  [['find', 'stats'], () => import('./commands/find.js')],
  [['tag'], () => import('./commands/tag.js')],
  [['copy'], () => import('./commands/copy.js')],
  [['key'], () => import('./commands/key.js')],
  [['check', 'forget', 'prune', 'rebuild-catalog', 'unlock'], () => import('./commands/maintenance.js')],
  [['serve'], () => import('./commands/serve.js')],
  [['ui'], () => import('./commands/ui.js')],
  [['token'], () => import('./commands/token.js')],
  [['version'], () => import('./commands/version.js')],
  [['completion'], () => import('./commands/completion.js')],
];

/** Global options that take a value: the word after one is not the command. */
const VALUE_OPTIONS = new Set(['-r', '--repo', '--token', '--ca-cert', '--cache-dir', '--password-file', '--key-file']);

/** The command word of a command line (the first word that is neither an option nor its value). */
export function commandWord(args: readonly string[]): string | undefined {
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === '--') return args[i + 1];
    if (VALUE_OPTIONS.has(a)) i++;
    else if (!a.startsWith('-')) return a;
  }
  return undefined;
}

/** The program with the commands `argv` may run: just its command's module when it names one, else all (help, errors). */
export async function buildProgram(argv: readonly string[] = []): Promise<Command> {
  const word = commandWord(argv.slice(2));
  // completion prints every command's options: it needs them all, as help does.
  const wanted = word === 'completion' ? [] : MODULES.filter(([names]) => word !== undefined && names.includes(word));
  const modules = await Promise.all((wanted.length > 0 ? wanted : MODULES).map(([, load]) => load()));
  const program = new Command('strata')
    .description('backups as a baseline plus incrementals: any byte range of any file at any point in time')
    .version(VERSION)
    .option('-r, --repo <dir|url>', 'repository directory, http(s)://HOST:PORT of a strata server, or s3://BUCKET/PREFIX (or STRATA_REPO)')
    .option('--token <token>', 'bearer token for a server (or STRATA_TOKEN)')
    .option('--ca-cert <file>', "trust this certificate (PEM) for a server's TLS (or STRATA_CA_CERT)")
    .option('--s3-endpoint <url>', 'the endpoint of an s3:// repository (else AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL, the profile, AWS)')
    .option('--cache-dir <dir>', 'block cache for a server, catalogs of S3 repositories (or STRATA_CACHE_DIR; default ~/.cache/strata)')
    .option('--no-cache', "do not cache blocks from a server, nor an S3 repository's trees and TOCs")
    .option('--password-file <file>', 'read the password from FILE (or STRATA_PASSWORD_FILE)')
    .option('--key-file <file>', 'use an exported key instead of a password (or STRATA_KEY_FILE)')
    .option('--json', 'print one JSON document on stdout')
    .option('-q, --quiet', 'print only results: no progress, no summaries')
    .showHelpAfterError('(run "strata help" for usage)')
    .configureHelp({ showGlobalOptions: true })
    .addHelpText('after', exitCodes(undefined))
    .exitOverride();
  for (const m of modules) m.register(program);
  const all = (c: Command): Command[] => [c, ...c.commands.flatMap(all)];
  for (const cmd of all(program).slice(1)) {
    cmd.exitOverride();
    const name = cmd.parent && cmd.parent !== program ? `${cmd.parent.name()} ${cmd.name()}` : cmd.name();
    if (cmd.commands.length === 0) cmd.addHelpText('after', exitCodes(name));
  }
  return program;
}

export async function main(argv: string[]): Promise<void> {
  process.stdout.on('error', (e: NodeJS.ErrnoException) => {
    if (e.code === 'EPIPE') process.exit(process.exitCode ?? 0);
    throw e;
  });
  const program = await buildProgram(argv);
  const json = argv.includes('--json');
  // Node exits once nothing is left to wait on, even while a command still awaits a promise no one
  // will settle: that must never pass for success (a restore cut short would exit 0).
  let settled = false;
  const unfinished = () => {
    if (settled) return;
    process.stderr.write(`${chalk.red('strata: internal error:')} stopped before the command finished; what it did may be incomplete\n`);
    process.exitCode = ERRORS.internal.exit;
  };
  // Not 'exit': that comes for process.exit() too (a second Ctrl-C), whose code stands.
  process.on('beforeExit', unfinished);
  try {
    await program.parseAsync(argv);
  } catch (e) {
    if (e instanceof CommanderError) {
      // Help and version are "errors" to commander; their exit code is 0.
      process.exitCode = e.exitCode === 0 ? 0 : ERRORS.usage.exit;
      if (json && e.exitCode !== 0) printJson({ error: 'usage' satisfies ErrorCode, message: e.message.replace(/^error: /, '') });
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
    // --json names only codes of the error table.
    let code: ErrorCode = 'internal';
    if (err?.code === 'ENOSPC' || err?.code === 'SQLITE_FULL') {
      code = 'no_space';
      process.stderr.write(`${chalk.red('strata:')} no space left on device; nothing was committed\n`);
    } else if (err?.code === 'EACCES' || err?.code === 'EPERM' || err?.code === 'EROFS') {
      code = 'io';
      process.stderr.write(`${chalk.red('strata:')} permission denied: ${err.path ?? err.message}\n`);
    } else {
      process.stderr.write(`${chalk.red('strata: internal error:')} ${err?.message ?? String(e)}\n`);
      if (process.env.STRATA_DEBUG) process.stderr.write(`${err?.stack}\n`);
    }
    if (json) printJson({ error: code, message: err?.message ?? String(e) });
    process.exitCode = ERRORS[code].exit;
  } finally {
    settled = true;
    process.off('beforeExit', unfinished);
    commandFinished();
  }
}
