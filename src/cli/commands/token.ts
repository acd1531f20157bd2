/**
 * `strata token`: access tokens of a server's repository directory. Works on
 * the directory alone; no password or key is involved.
 */
import type { Command } from 'commander';
import { usageError } from '../../errors.js';
import { isRole, ROLES, TokenStore, type Role } from '../../server/tokens.js';
import { prepareDir } from '../../server/serve.js';
import { globals, serverDir } from '../context.js';
import { line, printJson, table } from '../output.js';

export function register(program: Command): void {
  const token = program.command('token').description('manage the access tokens of a server (strata serve)');
  token
    .command('add')
    .description('create a token and print it (it is shown only this once)')
    .argument('<name>', 'a name for the token (letters, digits, ".", "_", "-", "@")')
    .requiredOption('--role <role>', `what the token may do: ${ROLES.join(', ')}`)
    .action((name: string, opts: { role: string }, cmd: Command) => {
      const g = globals(cmd);
      if (!isRole(opts.role)) throw usageError(`--role must be one of ${ROLES.join(', ')}`);
      const store = new TokenStore(prepareDir(serverDir(g)));
      const { entry, token: secret } = store.add(name, opts.role as Role);
      if (g.json) printJson({ name: entry.name, role: entry.role, token: secret });
      else {
        line(secret);
        if (!g.quiet) process.stderr.write(`token ${entry.name} (${entry.role}) created; it cannot be shown again\n`);
      }
    });
  token
    .command('list')
    .description('list tokens: name, role, creation time')
    .action((_opts: unknown, cmd: Command) => {
      const g = globals(cmd);
      const tokens = new TokenStore(serverDir(g)).list().map((t) => ({ name: t.name, role: t.role, created: t.created }));
      if (g.json) printJson(tokens);
      else if (tokens.length > 0) line(table([['Name', 'Role', 'Created'], ...tokens.map((t) => [t.name, t.role, t.created])]));
      else if (!g.quiet) process.stderr.write('no tokens\n');
    });
  token
    .command('revoke')
    .description('remove a token; a running server refuses it from the next request on')
    .argument('<name>', 'the token to revoke')
    .action((name: string, _opts: unknown, cmd: Command) => {
      const g = globals(cmd);
      const entry = new TokenStore(serverDir(g)).revoke(name);
      if (g.json) printJson({ name: entry.name, role: entry.role, revoked: true });
      else if (!g.quiet) line(`token ${entry.name} revoked`);
    });
}
