/**
 * What a backup starts from: its sources (absolute, none inside another),
 * the plan of directories leading to them, and the marker files that leave a
 * directory out (--exclude-if-present, --exclude-caches).
 */
import * as fsSync from 'node:fs';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { usageError } from '../errors.js';
import { osPath } from '../util/names.js';
import type { Marker } from '../util/marker.js';

export { hasMarker, type Marker } from '../util/marker.js';

export interface PlanNode {
  children: Map<string, PlanNode>;
  /** A source path: everything below it is backed up. */
  source: boolean;
}

/** The first directory above `abs` that is a symlink, if any. */
export async function symlinkOnTheWay(abs: string): Promise<{ link: string; target: string } | undefined> {
  const parts = abs.split('/').filter(Boolean);
  let at = '';
  for (const name of parts.slice(0, -1)) {
    at += `/${name}`;
    if ((await fs.lstat(at)).isSymbolicLink()) return { link: at, target: await fs.readlink(at) };
  }
  return undefined;
}

/** Absolute, normalised, without paths already inside another source. */
export function normalizeSources(paths: readonly string[]): string[] {
  const abs = [...new Set(paths.map((p) => path.resolve(p)))].sort();
  return abs.filter((p) => !abs.some((q) => q !== p && (q === '/' || p.startsWith(q + '/'))));
}

export function buildPlan(sources: readonly string[]): PlanNode {
  const root: PlanNode = { children: new Map(), source: false };
  for (const s of sources) {
    let node = root;
    if (s === '/') {
      root.source = true;
      continue;
    }
    for (const part of s.split('/').filter(Boolean)) {
      let next = node.children.get(part);
      if (!next) node.children.set(part, (next = { children: new Map(), source: false }));
      node = next;
    }
    node.source = true;
  }
  return root;
}

/** The marker of a cache directory (https://bford.info/cachedir/). */
export const CACHEDIR_TAG = 'CACHEDIR.TAG:Signature: 8a477f597d28d172789f06886806bc55';

export function parseMarker(spec: string): Marker {
  const colon = spec.indexOf(':');
  const name = colon < 0 ? spec : spec.slice(0, colon);
  if (name === '' || name.includes('/')) throw usageError(`--exclude-if-present needs a file name (NAME or NAME:TEXT), not "${spec}"`);
  return colon < 0 ? { name } : { name, header: Buffer.from(spec.slice(colon + 1)) };
}

export function deviceOf(dir: string): bigint | undefined {
  try {
    return fsSync.lstatSync(osPath(dir), { bigint: true }).dev;
  } catch {
    return undefined;
  }
}
