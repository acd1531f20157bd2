import * as fs from 'node:fs';
import type { Command } from 'commander';
import { StrataError } from '../../errors.js';
import { globals, openRepo } from '../context.js';
import { line, printJson } from '../output.js';

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
}
