import type { Command } from 'commander';
import { scryptProblem } from '../../crypto/password.js';
import { StrataError, usageError } from '../../errors.js';
import { Repository } from '../../repo/repository.js';
import { parseSize } from '../../util/size.js';
import { globals, readPassword, remoteOptions, repoPath } from '../context.js';
import { line, printJson } from '../output.js';
import { promptHidden } from '../prompt.js';
import { parseCompression } from '../compression.js';

export function register(program: Command): void {
  program
    .command('init')
    .description('create a repository')
    .option('--chunk-avg <size>', 'average block size, a power of two (default 32K)')
    .option('--scrypt-n <N>', 'scrypt cost N (default: calibrated to about 0.5 s on this machine)')
    .option('--pack-size <size>', 'target pack file size (default 8M)')
    .option('--compression <level>', 'how hard backups compress new blocks by default: off, fast, max or a zstd level 1-19 (default 3)')
    .action(async (opts: { chunkAvg?: string; scryptN?: string; packSize?: string; compression?: string }, cmd: Command) => {
      const g = globals(cmd);
      const where = repoPath(g);
      const password = await newPassword(g);
      let scrypt;
      if (opts.scryptN !== undefined) {
        const N = Number(opts.scryptN);
        scrypt = { N, r: 8, p: 1 };
        const problem = scryptProblem(scrypt);
        if (problem) throw usageError(`--scrypt-n: ${problem}`);
      }
      const repo = await Repository.init(where, password, {
        chunkAvg: opts.chunkAvg ? parseSize(opts.chunkAvg) : undefined,
        packSize: opts.packSize ? packSize(parseSize(opts.packSize)) : undefined,
        scrypt,
        compressionLevel: opts.compression === undefined ? undefined : parseCompression(opts.compression, false),
      }, remoteOptions(g));
      const out = { repository: repo.root, id: repo.config.id, chunker: repo.config.chunker };
      repo.close();
      if (g.json) printJson(out);
      else if (!g.quiet) line(`created strata repository ${out.id.slice(0, 8)} at ${out.repository}`);
    });
}

function packSize(n: number): number {
  if (n < 64 * 1024 || n > 1024 * 1024 * 1024) throw usageError('--pack-size must be between 64K and 1G');
  return n;
}

async function newPassword(g: ReturnType<typeof globals>): Promise<string> {
  const fromEnv = process.env.STRATA_PASSWORD || g.passwordFile || process.env.STRATA_PASSWORD_FILE;
  if (fromEnv || !process.stdin.isTTY) {
    const pw = await readPassword(g);
    if (pw.length === 0) throw usageError('the password is empty');
    return pw;
  }
  const a = await promptHidden('new repository password: ');
  if (a.length === 0) throw usageError('the password is empty');
  const b = await promptHidden('repeat password: ');
  if (a !== b) throw new StrataError('password_mismatch', 'the passwords do not match');
  return a;
}
