/**
 * Retention policies: which snapshots `forget` keeps, and why. Like restic:
 * the newest N; the newest in each of the last N hours/days/weeks/months/
 * years that have snapshots; everything within a duration of the newest; and
 * everything with a given tag (or with every tag of a list "a,b").
 */
import { usageError } from '../errors.js';
import { splitTags } from './filter.js';

export interface Policy {
  last?: number;
  hourly?: number;
  daily?: number;
  weekly?: number;
  monthly?: number;
  yearly?: number;
  /** Milliseconds before the newest snapshot. */
  within?: number;
  /** Tag lists: a snapshot with every tag of one list ("a,b") is kept. */
  tags?: string[];
}

export interface Candidate {
  id: string;
  time: number;
  tags: string[];
}

export function isEmpty(p: Policy): boolean {
  return !p.last && !p.hourly && !p.daily && !p.weekly && !p.monthly && !p.yearly && p.within === undefined && !(p.tags && p.tags.length > 0);
}

const pad = (n: number) => String(n).padStart(2, '0');

function isoWeek(d: Date): string {
  const t = new Date(d.getFullYear(), d.getMonth(), d.getDate());
  const day = (t.getDay() + 6) % 7;
  t.setDate(t.getDate() - day + 3);
  const firstThursday = new Date(t.getFullYear(), 0, 4);
  const week = 1 + Math.round(((t.getTime() - firstThursday.getTime()) / 86_400_000 - 3 + ((firstThursday.getDay() + 6) % 7)) / 7);
  return `${t.getFullYear()}-W${pad(week)}`;
}

const BUCKETS: [keyof Policy, string, (d: Date) => string][] = [
  ['hourly', 'hourly', (d) => `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}`],
  ['daily', 'daily', (d) => `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`],
  ['weekly', 'weekly', isoWeek],
  ['monthly', 'monthly', (d) => `${d.getFullYear()}-${pad(d.getMonth() + 1)}`],
  ['yearly', 'yearly', (d) => `${d.getFullYear()}`],
];

/** Reasons to keep each snapshot of one group (absent: remove it). */
export function applyPolicy(snaps: readonly Candidate[], policy: Policy): Map<string, string[]> {
  const newestFirst = [...snaps].sort((a, b) => b.time - a.time);
  const keep = new Map<string, string[]>();
  const because = (id: string, reason: string) => keep.set(id, [...(keep.get(id) ?? []), reason]);
  newestFirst.slice(0, policy.last ?? 0).forEach((s, i) => because(s.id, `last ${i + 1} of ${policy.last}`));
  for (const [field, name, key] of BUCKETS) {
    let left = (policy[field] as number | undefined) ?? 0;
    let lastKey: string | undefined;
    for (const s of newestFirst) {
      if (left <= 0) break;
      const k = key(new Date(s.time));
      if (k === lastKey) continue;
      lastKey = k;
      because(s.id, `${name} ${k}`);
      left--;
    }
  }
  if (policy.within !== undefined && newestFirst.length > 0) {
    const since = newestFirst[0]!.time - policy.within;
    for (const s of newestFirst) if (s.time >= since) because(s.id, 'within');
  }
  for (const list of policy.tags ?? []) {
    const need = splitTags(list);
    for (const s of newestFirst) if (need.length > 0 && need.every((t) => s.tags.includes(t))) because(s.id, `tag ${need.join(',')}`);
  }
  return keep;
}

/** Durations like restic's: "1y6m", "2w", "36h", "10d". */
export function parseDuration(text: string): number {
  const m = /^(?:(\d+)y)?(?:(\d+)m)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?$/.exec(text.trim());
  if (!m || text.trim() === '') throw usageError(`invalid duration "${text}" (examples: 7d, 2w, 1y6m, 36h)`);
  const [, y, mo, w, d, h] = m.map((v) => Number(v ?? 0));
  return (((y! * 365 + mo! * 30 + w! * 7 + d!) * 24 + h!) * 3600 * 1000);
}
