/**
 * Where a repository is, from `--repo`: the one place a location picks its
 * driver (and so where the catalog lives: in the directory, on the server,
 * or for a bucket in a local cache rebuilt from it). A directory path,
 * file:///path, http(s)://HOST:PORT of a strata server, or s3://BUCKET/PREFIX
 * on an S3-compatible store.
 */
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { usageError } from '../errors.js';
import { parseS3Url } from './s3.js';

export type Location = { kind: 'directory'; dir: string } | { kind: 'server'; url: string } | { kind: 's3'; url: string; bucket: string; prefix: string };

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
  if (scheme === 's3') {
    const s3 = parseS3Url(where);
    if (!s3) throw usageError(`${where} is not an S3 location: use s3://BUCKET/PREFIX (a bucket name of 3-63 lowercase letters, digits, dots and hyphens)`);
    return { kind: 's3', url: where, ...s3 };
  }
  throw usageError(`${where}: unknown kind of repository location ${scheme}://; use a directory, a strata server (http(s)://HOST:PORT) or s3://BUCKET/PREFIX`);
}
