/**
 * Key files: each wraps the one master key under a password (see
 * crypto/password.ts). Adding one gives another password to the same
 * repository; removing one takes a password away. Nothing else changes: the
 * master key, and so every block and snapshot, stays as it was.
 */
import { randomBytes } from 'node:crypto';
import { calibrateScrypt, keyFileProblem, wrapKey, type ScryptParams, type WrappedKey } from '../crypto/password.js';
import { notFound, StrataError, usageError } from '../errors.js';
import type { Repository } from './repository.js';

export interface KeyInfo {
  id: string;
  created: string | null;
  host: string | null;
  user: string | null;
  /** The key the password given opened (none with an exported key). */
  current: boolean;
  /** Why a file cannot be used (out of bounds, damaged), or null. */
  problem: string | null;
}

async function readKey(repo: Repository, name: string): Promise<{ key?: WrappedKey; problem: string | null }> {
  try {
    const parsed: unknown = JSON.parse((await repo.storage.get({ kind: 'key', name })).toString('utf8'));
    const problem = keyFileProblem(parsed);
    return problem ? { problem } : { key: parsed as WrappedKey, problem: null };
  } catch {
    return { problem: 'not valid JSON' };
  }
}

/** Every key file, oldest first. */
export async function listKeys(repo: Repository): Promise<KeyInfo[]> {
  const out: KeyInfo[] = [];
  for await (const id of repo.storage.list('key')) {
    const { key, problem } = await readKey(repo, id);
    out.push({ id, created: key?.created ?? null, host: key?.host ?? null, user: key?.user ?? null, current: id === repo.keyring.keyFile, problem });
  }
  return out.sort((a, b) => (a.created ?? '').localeCompare(b.created ?? '') || a.id.localeCompare(b.id));
}

/** A new key file wrapping the master key under `password`, at the cost of the key in use (else calibrated). */
export async function addKey(repo: Repository, password: string): Promise<KeyInfo> {
  if (password.length === 0) throw usageError('the password is empty');
  let params: ScryptParams | undefined;
  if (repo.keyring.keyFile) {
    const { key } = await readKey(repo, repo.keyring.keyFile);
    if (key) params = { N: key.N, r: key.r, p: key.p };
  }
  const wrapped = await wrapKey(repo.keyring.master, password, params ?? (await calibrateScrypt()), repo.config.id);
  const id = randomBytes(8).toString('hex');
  await repo.storage.put({ kind: 'key', name: id }, Buffer.from(JSON.stringify(wrapped, null, 2)));
  return { id, created: wrapped.created, host: wrapped.host ?? null, user: wrapped.user ?? null, current: false, problem: null };
}

/**
 * Removes the key file whose id starts with `prefix`. Never the last one a
 * password can use; the one in use only with `force` (the password given
 * stops working).
 */
export async function removeKey(repo: Repository, prefix: string, force = false): Promise<KeyInfo> {
  const keys = await listKeys(repo);
  const matches = keys.filter((k) => k.id.startsWith(prefix.toLowerCase()));
  if (matches.length === 0) throw notFound(`no key with id ${prefix}`);
  if (matches.length > 1) throw new StrataError('ambiguous', `key id prefix ${prefix} is ambiguous (${matches.length} keys match; give more characters)`);
  const k = matches[0]!;
  if (k.problem === null && !keys.some((o) => o.id !== k.id && o.problem === null)) {
    throw new StrataError('last_key', `key ${k.id} is the only usable key: removing it would lock everyone out (add another first)`);
  }
  if (k.current && !force) throw new StrataError('key_in_use', `key ${k.id} is the one this password opened; add --force to remove it (the password stops working), or use "key passwd"`);
  await repo.storage.delete({ kind: 'key', name: k.id });
  return k;
}

/**
 * Changes the password of the key in use: a new key file is written first
 * (atomically), then the old one removed. A crash in between leaves both,
 * and either password opens the repository.
 */
export async function changePassword(repo: Repository, password: string): Promise<{ added: KeyInfo; removed: string }> {
  const old = repo.keyring.keyFile;
  if (!old) throw usageError('no key file is in use (the repository was opened with an exported key): use "key add", then "key remove"');
  const added = await addKey(repo, password);
  await repo.storage.delete({ kind: 'key', name: old });
  repo.keyring.keyFile = added.id;
  return { added, removed: old };
}
