/**
 * What every command needs: global options, the repository location, and the
 * credentials (key file, or a password from the environment, a file or a
 * prompt on a terminal).
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Command } from 'commander';
import { usageError, wrongKey } from '../errors.js';
import { Repository, type RemoteOptions } from '../repo/repository.js';
import { defaultCacheDir } from '../storage/cache.js';
import { locate } from '../storage/location.js';
import { type Credentials } from '../repo/unlock.js';
import { promptHidden } from './prompt.js';

export interface GlobalOptions {
  repo?: string;
  token?: string;
  caCert?: string;
  cacheDir?: string;
  cache?: boolean;
  s3Endpoint?: string;
  passwordFile?: string;
  keyFile?: string;
  json?: boolean;
  quiet?: boolean;
}

export function globals(cmd: Command): GlobalOptions {
  return cmd.optsWithGlobals() as GlobalOptions;
}

/** The environment variables that stand for the options naming a repository and its credentials. */
export interface RepoEnv {
  repo: string;
  password: string;
  passwordFile: string;
  keyFile: string;
  token: string;
  caCert: string;
  /** What the repository is called in messages ("repository", "source repository"). */
  what: string;
}

export const MAIN_ENV: RepoEnv = { repo: 'STRATA_REPO', password: 'STRATA_PASSWORD', passwordFile: 'STRATA_PASSWORD_FILE', keyFile: 'STRATA_KEY_FILE', token: 'STRATA_TOKEN', caCert: 'STRATA_CA_CERT', what: 'repository' };

/** `strata copy`'s source: the same options and variables with FROM in their names. */
export const FROM_ENV: RepoEnv = {
  repo: 'STRATA_FROM_REPO',
  password: 'STRATA_FROM_PASSWORD',
  passwordFile: 'STRATA_FROM_PASSWORD_FILE',
  keyFile: 'STRATA_FROM_KEY_FILE',
  token: 'STRATA_FROM_TOKEN',
  caCert: 'STRATA_FROM_CA_CERT',
  what: 'source repository',
};

export function repoPath(g: GlobalOptions, env: RepoEnv = MAIN_ENV): string {
  const repo = g.repo ?? process.env[env.repo];
  if (!repo) {
    if (env === MAIN_ENV) throw usageError('no repository given: use --repo DIR|URL|s3://BUCKET/PREFIX or set STRATA_REPO');
    throw usageError(`no ${env.what} given: use --from-repo DIR|URL|s3://BUCKET/PREFIX or set ${env.repo}`);
  }
  return repo;
}

/**
 * The directory a server keeps (serve, token): the repository directory; for
 * a repository in a bucket, a directory of the server's own under the cache
 * directory, one per bucket and prefix (its tokens, and each running
 * server's catalog cache). Never a server's URL.
 */
export function serverDir(g: GlobalOptions): string {
  const where = repoPath(g);
  const at = locate(where);
  if (at.kind === 's3') {
    const name = createHash('sha256').update(`s3://${at.bucket}/${at.prefix}`).digest('hex').slice(0, 32);
    return path.join(g.cacheDir ?? defaultCacheDir(), 'servers', name);
  }
  if (at.kind !== 'directory') throw usageError(`strata serve keeps a repository directory or a bucket, not ${where}`);
  return where;
}

/** Reads the password from STRATA_PASSWORD, a password file, or a terminal prompt. */
export async function readPassword(g: GlobalOptions, prompt = 'repository password: ', env: RepoEnv = MAIN_ENV): Promise<string> {
  // An explicit option beats the environment; a password in the environment beats a file named there.
  const file = g.passwordFile ?? (process.env[env.password] ? undefined : process.env[env.passwordFile]);
  if (!g.passwordFile && process.env[env.password]) return process.env[env.password]!;
  if (file) {
    try {
      return fs.readFileSync(file, 'utf8').replace(/\r?\n$/, '');
    } catch (e) {
      throw usageError(`cannot read password file ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
  }
  if (process.stdin.isTTY) return promptHidden(prompt);
  if (env !== MAIN_ENV) throw wrongKey(`no password given for the ${env.what}: set ${env.password} or ${env.passwordFile}, use --from-password-file or --from-key-file, or run on a terminal`);
  throw wrongKey('no password given: set STRATA_PASSWORD or STRATA_PASSWORD_FILE, use --password-file or --key-file, or run on a terminal');
}

/**
 * A key file or a password: options first (--key-file, then --password-file),
 * then the environment (STRATA_KEY_FILE, then STRATA_PASSWORD, then
 * STRATA_PASSWORD_FILE), then a prompt.
 */
export function credentials(g: GlobalOptions, env: RepoEnv = MAIN_ENV): Credentials {
  const keyFile = g.keyFile ?? (g.passwordFile ? undefined : process.env[env.keyFile]);
  if (keyFile) return { keyFile };
  return { password: () => readPassword(g, `${env.what} password: `, env) };
}

/** How to reach a server, when the repository is one (the token never goes in a URL or a log). */
export function remoteOptions(g: GlobalOptions, env: RepoEnv = MAIN_ENV): RemoteOptions {
  const token = g.token ?? process.env[env.token];
  const caFile = g.caCert ?? process.env[env.caCert];
  const cacheDir = g.cache === false ? null : (g.cacheDir ?? undefined);
  return { ...(token ? { token } : {}), ...(caFile ? { caFile } : {}), ...(cacheDir !== undefined ? { cacheDir } : {}), ...(g.s3Endpoint ? { s3: { endpoint: g.s3Endpoint } } : {}) };
}

export async function openRepo(cmd: Command, opts: { readonly?: boolean; warm?: (repo: Repository) => Promise<unknown> } = {}): Promise<Repository> {
  return openRepository(globals(cmd), opts);
}

/**
 * Opens the repository `g` and `env` name; one in a bucket has its catalog
 * cache brought up to date first. `warm`, for a bucket, runs on the cache
 * as it is while the bucket's packs are listed (two requests at once, not
 * one after the other): a read whose snapshot is named fetches its blocks
 * meanwhile, and the command then finds them decoded. What it does is only
 * a head start: the command itself runs on the cache once it is up to date.
 */
export async function openRepository(g: GlobalOptions, opts: { readonly?: boolean; warm?: (repo: Repository) => Promise<unknown> } = {}, env: RepoEnv = MAIN_ENV): Promise<Repository> {
  const where = repoPath(g, env);
  const repo = await Repository.open(where, credentials(g, env), { readonly: opts.readonly, drift: true }, remoteOptions(g, env));
  if (!repo.cachedCatalog) return repo;
  // A repository in a bucket: its catalog here is a cache, brought up to date first.
  try {
    const { refreshCatalog } = await import('../engine/rebuild.js');
    const drift = repo.catalogDrift();
    if (opts.warm) await Promise.all([drift.catch(() => {}), opts.warm(repo).catch(() => {})]);
    return (await refreshCatalog(repo, undefined, drift)).repo;
  } catch (e) {
    repo.close();
    throw e;
  }
}
