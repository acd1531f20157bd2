// Command-line helpers shared by the benchmark scripts.
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

/** The checkout, and its strata executable. */
export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const STRATA = path.join(ROOT, 'bin', 'strata.js');

/** The value after --name, or the fallback. */
export function arg(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : fallback;
}

export const flag = (name) => process.argv.includes(`--${name}`);

/** "1G", "256M", "4096": bytes. */
export function size(text) {
  const m = /^(\d+(?:\.\d+)?)([KMG]?)i?B?$/i.exec(text);
  if (!m) throw new Error(`bad size ${text}`);
  return Math.round(Number(m[1]) * { '': 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3 }[m[2].toUpperCase()]);
}

export const log = (...a) => process.stderr.write(a.join(' ') + '\n');
