/**
 * Password-wrapped master keys. The master key is random; each key file holds
 * it sealed under a key derived from a password with scrypt. Parameters are
 * stored beside it and calibrated at creation to take about half a second.
 */
import { randomBytes, scrypt as scryptCb } from 'node:crypto';
import { promisify } from 'node:util';
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
}

const AAD = Buffer.from('strata master key');

export async function deriveWrappingKey(password: string, salt: Buffer, params: ScryptParams): Promise<Buffer> {
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

export async function wrapKey(master: Buffer, password: string, params: ScryptParams): Promise<WrappedKey> {
  const salt = randomBytes(32);
  const kek = await deriveWrappingKey(password, salt, params);
  return {
    version: 1,
    kdf: 'scrypt',
    ...params,
    salt: salt.toString('base64'),
    wrapped: seal(kek, master, AAD).toString('base64'),
    created: new Date().toISOString(),
  };
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
