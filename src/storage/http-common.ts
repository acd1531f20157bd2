/** What the HTTP clients of stores (a strata server, S3) share: writing a body, reading a HEAD answer. */
import type * as http from 'node:http';
import { StorageError, type Handle } from './storage.js';

export { drained } from '../util/drained.js';

/** An object's size and time from a HEAD answer's headers; `where` names the store in the error. */
export function headStat(headers: http.IncomingHttpHeaders, where: string, h: Handle): { size: number; mtimeMs: number } {
  const size = Number(headers['content-length']);
  const mtimeMs = Date.parse(String(headers['last-modified']));
  if (!Number.isSafeInteger(size) || Number.isNaN(mtimeMs)) throw new StorageError('io', `${where}: no size or time for ${h.kind} ${h.name}`);
  return { size, mtimeMs };
}
