/**
 * Opening a repository's master key: from an exported key file, or from a
 * password and the key files in the repository (the cheapest first; files
 * out of bounds or damaged are skipped before any derivation).
 */
import * as fs from 'node:fs';
import { Keyring } from '../crypto/keyring.js';
import { keyFileBinding, keyFileProblem, unwrapKey, type WrappedKey } from '../crypto/password.js';
import { noRepository, usageError, wrongKey } from '../errors.js';
import type { Storage } from '../storage/storage.js';
import type { RepoConfig } from './config.js';

export interface ExportedKey {
  strata: 'key';
  repository: string;
  key: string;
}

export interface Credentials {
  /** Path of an exported key file: skips key derivation. */
  keyFile?: string;
  /** Asked only when no key file is given. */
  password?: () => Promise<string>;
}

export async function unlock(storage: Storage, config: RepoConfig, creds: Credentials): Promise<Keyring> {
  if (creds.keyFile) return new Keyring(readExportedKey(creds.keyFile, config.id));
  if (!creds.password) throw wrongKey('no password given: set STRATA_PASSWORD, use --password-file or --key-file, or run on a terminal');
  // Whoever can add a key file chooses its scrypt parameters: files out of bounds (or damaged) are
  // skipped before any derivation, so one bad file never stops the good ones from opening.
  const keys: (WrappedKey & { name: string })[] = [];
  const skipped: string[] = [];
  for await (const name of storage.list('key')) {
    let parsed: unknown;
    try {
      parsed = JSON.parse((await storage.get({ kind: 'key', name })).toString('utf8'));
    } catch {
      skipped.push(`${name}: not valid JSON`);
      continue;
    }
    const problem = keyFileProblem(parsed);
    if (problem) skipped.push(`${name}: ${problem}`);
    else keys.push({ ...(parsed as WrappedKey), name });
  }
  if (keys.length === 0 && skipped.length === 0) throw noRepository(`repository at ${storage.location} has no keys`);
  const password = await creds.password();
  // Cheapest first: a file with a high cost is tried only when the others fail.
  keys.sort((a, b) => a.N * a.r * a.p - b.N * b.r * b.p);
  for (const k of keys) {
    const master = await unwrapKey(k, password);
    if (!master) continue;
    // A file copied from another repository may open with the same password: it is not ours.
    if (k.repository !== undefined && k.repository !== keyFileBinding(master, config.id)) continue;
    const keyring = new Keyring(master);
    keyring.keyFile = k.name;
    return keyring;
  }
  const why = skipped.length > 0 ? ` (${skipped.length} unusable key ${skipped.length === 1 ? 'file was' : 'files were'} skipped: ${skipped.slice(0, 3).join('; ')})` : '';
  throw wrongKey(`wrong password: no key in this repository opens with it${why}`);
}

function readExportedKey(file: string, repoId: string): Buffer {
  let parsed: ExportedKey;
  try {
    parsed = JSON.parse(fs.readFileSync(file, 'utf8')) as ExportedKey;
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code) throw usageError(`cannot read key file ${file}: ${code === 'ENOENT' ? 'no such file' : code}`);
    throw wrongKey(`${file} is not a strata key file`);
  }
  if (parsed?.strata !== 'key' || typeof parsed.key !== 'string') throw wrongKey(`${file} is not a strata key file`);
  if (parsed.repository !== repoId) throw wrongKey(`key file ${file} belongs to another repository`);
  const master = Buffer.from(parsed.key, 'base64');
  if (master.length !== 32) throw wrongKey(`key file ${file} is damaged`);
  return master;
}
