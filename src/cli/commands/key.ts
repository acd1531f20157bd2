import * as fs from 'node:fs';
import type { Command } from 'commander';
import { StrataError, usageError } from '../../errors.js';
import { addKey, changePassword, listKeys, removeKey } from '../../repo/keys.js';
import { globals, openRepo } from '../context.js';
import { formatTime, line, printJson, table } from '../output.js';
import { promptHidden } from '../prompt.js';

/** The new password: from --new-password-file, or typed twice on a terminal. */
async function newPassword(file: string | undefined): Promise<string> {
  let pw: string;
  if (file !== undefined) {
    try {
      pw = fs.readFileSync(file, 'utf8').replace(/\r?\n$/, '');
    } catch (e) {
      throw usageError(`cannot read password file ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
  } else if (process.stdin.isTTY) {
    pw = await promptHidden('new password: ');
    if (pw.length > 0 && (await promptHidden('repeat password: ')) !== pw) throw new StrataError('password_mismatch', 'the passwords do not match');
  } else {
    throw usageError('no new password: use --new-password-file FILE, or run on a terminal');
  }
  if (pw.length === 0) throw usageError('the password is empty');
  return pw;
}

export function register(program: Command): void {
  const key = program.command('key').description('manage keys');
  key
    .command('export')
    .description('write the unwrapped master key to FILE (mode 0600), for --key-file / STRATA_KEY_FILE')
    .argument('<file>', 'where to write the key (must not exist)')
    .action(async (file: string, _opts: unknown, cmd: Command) => {
      const g = globals(cmd);
      const repo = await openRepo(cmd, { readonly: true });
      try {
        const body = JSON.stringify(repo.exportKey(), null, 2) + '\n';
        try {
          fs.writeFileSync(file, body, { mode: 0o600, flag: 'wx' });
        } catch (e) {
          const code = (e as NodeJS.ErrnoException).code;
          throw new StrataError('key_export', code === 'EEXIST' ? `${file} already exists; not overwriting a key file` : `cannot write ${file}: ${code ?? (e as Error).message}`);
        }
        if (g.json) printJson({ file, repository: repo.config.id });
        else if (!g.quiet) line(`key written to ${file}; anyone with this file can read the repository: keep it safe`);
      } finally {
        repo.close();
      }
    });

  key
    .command('list')
    .description('list the key files: id, when, where and by whom each was made, and which one the password opened')
    .action(async (_opts: unknown, cmd: Command) => {
      const g = globals(cmd);
      const repo = await openRepo(cmd, { readonly: true });
      try {
        const keys = await listKeys(repo);
        if (g.json) return printJson(keys);
        const rows = [[' ', 'ID', 'Created', 'Host', 'User']];
        for (const k of keys) rows.push([k.current ? '*' : ' ', k.id, k.created ? formatTime(Date.parse(k.created)) : '', k.host ?? '', (k.user ?? '') + (k.problem ? ` (unusable: ${k.problem})` : '')]);
        line(table(rows));
        if (!g.quiet) line(keys.some((k) => k.current) ? '*: the key in use' : 'opened with an exported key: no key file in use');
      } finally {
        repo.close();
      }
    });

  key
    .command('add')
    .description('add a key file: another password for the same repository')
    .option('--new-password-file <file>', 'read the new password from FILE (else it is asked twice on the terminal)')
    .action(async (opts: { newPasswordFile?: string }, cmd: Command) => {
      const g = globals(cmd);
      const repo = await openRepo(cmd);
      try {
        const added = await addKey(repo, await newPassword(opts.newPasswordFile));
        if (g.json) printJson(added);
        else if (!g.quiet) line(`added key ${added.id}`);
      } finally {
        repo.close();
      }
    });

  key
    .command('remove')
    .description('remove a key file (never the last usable one; the one in use only with --force)')
    .argument('<id>', 'the key id, or a unique prefix of it')
    .option('--force', 'also remove the key the password given opened')
    .action(async (id: string, opts: { force?: boolean }, cmd: Command) => {
      const g = globals(cmd);
      const repo = await openRepo(cmd);
      try {
        const removed = await removeKey(repo, id, opts.force);
        if (g.json) printJson({ removed: removed.id });
        else if (!g.quiet) line(`removed key ${removed.id}`);
      } finally {
        repo.close();
      }
    });

  key
    .command('passwd')
    .description('change the password of the key in use (a new key file is written before the old one goes)')
    .option('--new-password-file <file>', 'read the new password from FILE (else it is asked twice on the terminal)')
    .action(async (opts: { newPasswordFile?: string }, cmd: Command) => {
      const g = globals(cmd);
      const repo = await openRepo(cmd);
      try {
        const r = await changePassword(repo, await newPassword(opts.newPasswordFile));
        if (g.json) printJson({ added: r.added.id, removed: r.removed });
        else if (!g.quiet) line(`password changed: key ${r.removed} replaced by ${r.added.id}`);
      } finally {
        repo.close();
      }
    });
}
