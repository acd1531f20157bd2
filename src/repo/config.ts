/**
 * A repository's config: its id, format version, chunker and pack
 * parameters, written once by init and read before anything else.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { noRepository, StrataError } from '../errors.js';

/**
 * 2: blocks may be compressed with a dictionary (repo/dictionary.ts) and pack
 * indexes are binary. 3: a file of one block has its block id in its tree
 * entry and no sealed TOC. Writers keep an older repository readable by the
 * strata that made it: version 1 gets no dictionaries and JSON pack indexes,
 * versions 1 and 2 a sealed TOC for every version.
 */
export const FORMAT_VERSION = 3;

export interface RepoConfig {
  strata: 'repository';
  version: number;
  id: string;
  created: string;
  /** `-zeros` (repositories made since): runs of `zeros` zero bytes are cut out (chunker/fastcdc.ts). */
  chunker: { algorithm: 'fastcdc-gear32' | 'fastcdc-gear32-zeros'; min: number; avg: number; max: number; zeros?: number };
  compression: { algorithm: 'zstd'; level: number };
  cipher: 'aes-256-gcm';
  packSize: number;
}

export function readConfig(dir: string): RepoConfig {
  let text: string;
  try {
    text = fs.readFileSync(path.join(dir, 'config'), 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') throw noRepository(`no repository at ${dir} (create one with "strata init")`);
    if (code === 'EACCES') throw noRepository(`cannot read repository at ${dir}: permission denied`);
    throw e;
  }
  return parseConfig(text, dir);
}

export function parseConfig(text: string, dir: string): RepoConfig {
  let config: RepoConfig;
  try {
    config = JSON.parse(text) as RepoConfig;
  } catch {
    throw noRepository(`${dir} is not a strata repository (config is not valid JSON)`);
  }
  if (config?.strata !== 'repository') throw noRepository(`${dir} is not a strata repository`);
  if (typeof config.version !== 'number' || config.version > FORMAT_VERSION) {
    throw new StrataError('format', `repository format version ${config.version} is newer than this strata supports (${FORMAT_VERSION}); upgrade strata`);
  }
  return config;
}
