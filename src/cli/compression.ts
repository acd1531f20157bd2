/** --compression: a zstd level by name or number. */
import { usageError } from '../errors.js';
import { MAX_LEVEL } from '../engine/backup.js';

/** The zstd level `spec` names (`off`, `fast`, `max` or 1–19); undefined for `auto` (the repository's own). */
export function parseCompression(spec: string, auto = true): number | undefined {
  const s = spec.trim().toLowerCase();
  if (s === 'auto' && auto) return undefined;
  if (s === 'off' || s === '0') return 0;
  if (s === 'fast') return 1;
  if (s === 'max') return MAX_LEVEL;
  const n = Number(s);
  if (/^[0-9]+$/.test(s) && n >= 1 && n <= MAX_LEVEL) return n;
  throw usageError(`--compression "${spec}": use ${auto ? 'auto, ' : ''}off, fast, max or a level from 1 to ${MAX_LEVEL}`);
}
