/**
 * Password-wrapped master keys. The master key is random; each key file holds
 * it sealed under a key derived from a password with scrypt. Parameters are
 * stored beside it and calibrated at creation to take about half a second.
 */
import { createHmac, hkdfSync, randomBytes, scrypt as scryptCb } from 'node:crypto';
import * as os from 'node:os';
import { promisify } from 'node:util';
import { StrataError } from '../errors.js';
import { open, seal } from './keyring.js';

const scrypt = promisify(scryptCb) as (pw: string, salt: Buffer, len: number, opts: object) => Promise<Buffer>;

export interface ScryptParams {
  N: number;
  r: number;
  p: number;
}

export interface WrappedKey {
  version: 1;
  kdf: 'scrypt';
  N: number;
  r: number;
  p: number;
  salt: string;
  wrapped: string;
  created: string;
  /**
   * Binds the file to one repository: base64 of the first 16 bytes of
   * HMAC-SHA-256(derive(master, "key file"), config id). A file whose master
   * key does not give this value (one copied from another repository) is
   * skipped. Absent in key files written before it existed.
   */
  repository?: string;
  /** Where and by whom the key was made (absent in older key files). */
  host?: string;
  user?: string;
}

const AAD = Buffer.from('strata master key');

/**
 * The scrypt parameters a key file may ask for. Anyone who can add a key
 * file chooses them, and every client that tries the file pays for them:
 * outside these bounds a file is skipped, never derived (Node refuses some
 * values outright, and large ones take minutes or gigabytes).
 */
export const SCRYPT_BOUNDS = {
  minN: 2 ** 10,
  maxN: 2 ** 20,
  maxR: 32,
  maxP: 16,
  /** 128 * N * r: the memory one derivation needs. */
  maxMemory: 1024 * 1024 * 1024,
  /** N * r * p: the work of one derivation (2^20 * 8 * 2). */
  maxWork: 2 ** 24,
} as const;

const isPowerOfTwo = (n: number) => Number.isSafeInteger(n) && n > 0 && (n & (n - 1)) === 0;

/** Why scrypt parameters are out of bounds, or undefined when they are fine. */
export function scryptProblem(params: { N?: unknown; r?: unknown; p?: unknown }): string | undefined {
  const { N, r, p } = params;
  const b = SCRYPT_BOUNDS;
  if (typeof N !== 'number' || !isPowerOfTwo(N) || N < b.minN || N > b.maxN) return `N must be a power of two from ${b.minN} to ${b.maxN} (got ${String(N)})`;
  if (typeof r !== 'number' || !Number.isSafeInteger(r) || r < 1 || r > b.maxR) return `r must be a whole number from 1 to ${b.maxR} (got ${String(r)})`;
  if (typeof p !== 'number' || !Number.isSafeInteger(p) || p < 1 || p > b.maxP) return `p must be a whole number from 1 to ${b.maxP} (got ${String(p)})`;
  if (128 * N * r > b.maxMemory) return `N * r needs more than ${b.maxMemory / 2 ** 30} GiB of memory`;
  if (N * r * p > b.maxWork) return `N * r * p is above ${b.maxWork}`;
  return undefined;
}

/** Why a parsed key file cannot be used, or undefined when it is well formed and within bounds. */
export function keyFileProblem(key: unknown): string | undefined {
  const k = key as Partial<WrappedKey> | null;
  if (typeof k !== 'object' || k === null) return 'not a JSON object';
  if (k.version !== 1 || k.kdf !== 'scrypt') return 'not a version 1 scrypt key file';
  const params = scryptProblem(k);
  if (params) return `scrypt parameters out of bounds: ${params}`;
  if (typeof k.salt !== 'string' || typeof k.wrapped !== 'string') return 'salt or wrapped key missing';
  const salt = Buffer.from(k.salt, 'base64');
  if (salt.length < 16 || salt.length > 64) return 'salt must be 16 to 64 bytes';
  if (Buffer.from(k.wrapped, 'base64').length !== 12 + 32 + 16) return 'wrapped key must be 60 bytes';
  return undefined;
}

export async function deriveWrappingKey(password: string, salt: Buffer, params: ScryptParams): Promise<Buffer> {
  const problem = scryptProblem(params);
  if (problem) throw new StrataError('bad_key_file', `scrypt parameters out of bounds: ${problem}`);
  return scrypt(password, salt, 32, { N: params.N, r: params.r, p: params.p, maxmem: 256 * params.N * params.r + 1024 * 1024 });
}

/** Picks N (a power of two, r=8, p=1) so one derivation takes about `targetMs`. */
export async function calibrateScrypt(targetMs = 500): Promise<ScryptParams> {
  const r = 8;
  const p = 1;
  const probeN = 2 ** 14;
  const t0 = performance.now();
  await deriveWrappingKey('calibration', randomBytes(16), { N: probeN, r, p });
  const ms = Math.max(performance.now() - t0, 1);
  let N = probeN;
  while (N < 2 ** 20 && (ms * (N * 2)) / probeN <= targetMs) N *= 2;
  return { N, r, p };
}

export async function wrapKey(master: Buffer, password: string, params: ScryptParams, repositoryId?: string): Promise<WrappedKey> {
  const salt = randomBytes(32);
  const kek = await deriveWrappingKey(password, salt, params);
  return {
    version: 1,
    kdf: 'scrypt',
    ...params,
    salt: salt.toString('base64'),
    wrapped: seal(kek, master, AAD).toString('base64'),
    created: new Date().toISOString(),
    ...(repositoryId ? { repository: keyFileBinding(master, repositoryId) } : {}),
    host: os.hostname(),
    ...userName(),
  };
}

function userName(): { user?: string } {
  try {
    return { user: os.userInfo().username };
  } catch {
    // No entry in the password database (a container's arbitrary uid).
    return {};
  }
}

/** The `repository` field of a key file for this master key and repository id. */
export function keyFileBinding(master: Buffer, repositoryId: string): string {
  const k = Buffer.from(hkdfSync('sha256', master, Buffer.alloc(0), 'strata key file', 32));
  return createHmac('sha256', k).update(repositoryId, 'utf8').digest().subarray(0, 16).toString('base64');
}

/** Returns the master key, or undefined when the password does not open this key. */
export async function unwrapKey(key: WrappedKey, password: string): Promise<Buffer | undefined> {
  const kek = await deriveWrappingKey(password, Buffer.from(key.salt, 'base64'), key);
  try {
    return open(kek, Buffer.from(key.wrapped, 'base64'), AAD, 'key');
  } catch {
    return undefined;
  }
}
