/**
 * WHEN: "latest", a snapshot id or unique prefix, or an ISO-8601 date/time
 * meaning "as it was then" (the newest snapshot at or before it).
 */
import { usageError } from '../errors.js';

/**
 * An id prefix of eight digits that is also a compact date (YYYYMMDD) carries
 * that date's reading as `time`: it applies when no snapshot id starts so.
 */
export type When = { kind: 'latest' } | { kind: 'id'; prefix: string; time?: number } | { kind: 'time'; time: number };

export function parseWhen(text: string | undefined): When {
  if (text === undefined || text === 'latest') return { kind: 'latest' };
  const t = text.trim();
  if (/^\d{4}-\d{2}(-\d{2})?([T ].*)?$/.test(t) || /^\d{8}T/i.test(t)) {
    const time = parseIsoTime(t);
    if (time === undefined) throw usageError(`malformed date "${text}" (use ISO 8601, e.g. 2026-03-01, 2026-03-01T12:00:00Z or 20260301T120000Z)`);
    return { kind: 'time', time };
  }
  if (/^[0-9a-f]{1,64}$/i.test(t)) {
    const time = /^\d{8}$/.test(t) ? parseIsoTime(t) : undefined;
    return { kind: 'id', prefix: t.toLowerCase(), ...(time !== undefined ? { time } : {}) };
  }
  throw usageError(`malformed WHEN "${text}" (use latest, a snapshot id or prefix, or an ISO 8601 date/time)`);
}

/** ISO 8601's basic format (20260301, 20260301T1200, 20260301T120000Z) in the extended one. */
function expandCompact(t: string): string {
  const m = /^(\d{4})(\d{2})(\d{2})(?:T(\d{2})(\d{2})(\d{2})?(Z|[+-]\d{4})?)?$/i.exec(t);
  if (!m) return t;
  const [, y, mo, d, h, mi, sec, zone] = m;
  if (h === undefined) return `${y}-${mo}-${d}`;
  return `${y}-${mo}-${d}T${h}:${mi}${sec !== undefined ? `:${sec}` : ''}${zone ?? ''}`;
}

/**
 * ISO 8601 date or date-time (extended, or basic as 20260301T120000Z); a date alone means the end of that day (as it was
 * "on" that day) for reads and its start for a snapshot's time; a time without
 * zone is local time.
 */
export function parseIsoTime(text: string, dateMeans: 'start' | 'end' = 'end'): number | undefined {
  const t = expandCompact(text.trim());
  const dateOnly = /^(\d{4})-(\d{2})(?:-(\d{2}))?$/.exec(t);
  if (dateOnly) {
    const y = Number(dateOnly[1]);
    const m = Number(dateOnly[2]);
    const d = dateOnly[3] ? Number(dateOnly[3]) : undefined;
    if (m < 1 || m > 12) return undefined;
    const endDay = d ?? new Date(y, m, 0).getDate();
    if (endDay < 1 || endDay > new Date(y, m, 0).getDate()) return undefined;
    if (dateMeans === 'start') return new Date(y, m - 1, d ?? 1).getTime();
    return new Date(y, m - 1, endDay, 23, 59, 59, 999).getTime();
  }
  if (!/^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?$/i.test(t)) return undefined;
  const ms = Date.parse(t.replace(' ', 'T'));
  return Number.isNaN(ms) ? undefined : ms;
}
