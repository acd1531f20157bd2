/**
 * Where a repository is, from `--repo`: the one place a location picks its
 * driver (and so where the catalog lives: in the directory, or on the
 * server). A directory path, file:///path, or http(s)://HOST:PORT of a
 * strata server; s3:// is refused with a clear message until its driver
 * exists.
 */
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { usageError } from '../errors.js';

export type Location = { kind: 'directory'; dir: string } | { kind: 'server'; url: string };

export function locate(where: string): Location {
  const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(where)?.[1]?.toLowerCase();
  if (scheme === undefined) return { kind: 'directory', dir: path.resolve(where) };
  if (scheme === 'http' || scheme === 'https') return { kind: 'server', url: where };
  if (scheme === 'file') {
    try {
      return { kind: 'directory', dir: fileURLToPath(where) };
    } catch (e) {
      throw usageError(`${where} is not a file URL of a local directory (${(e as Error).message})`);
    }
  }
  if (scheme === 's3') throw usageError(`${where}: S3 repositories are not supported yet; use a directory or a strata server (http(s)://HOST:PORT)`);
  throw usageError(`${where}: unknown kind of repository location ${scheme}://; use a directory or a strata server (http(s)://HOST:PORT)`);
}
