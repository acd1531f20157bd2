/**
 * Directory listings as the kernel is given them. A listing tells the kernel
 * only each name and its type (libfuse's high-level readdir passes on no
 * more than the type bits of st_mode: attributes come by getattr), so each
 * entry is given one of a few shared type-only stats instead of its own:
 * fuse-napi turns every stat given into a 26-number array through BigInt
 * arithmetic, which was most of a warm `ls -l` of 100,000 entries.
 *
 * The kernel does not keep listings of a FUSE mount (libfuse's high-level API
 * cannot ask it to): every `ls` lists the directory again. A snapshot's
 * directories never change, so a read-only mount keeps its last listings,
 * bounded by the number of entries held.
 */
import type { DirentStats } from './binding.js';

const S_IFMT = 0o170000;

const byType = new Map<number, DirentStats>();

/**
 * The stat a listing gives for an entry of this mode: its type, nothing else
 * (every other field left out, which the binding converts fastest).
 */
export function direntStats(mode: number): DirentStats {
  const type = mode & S_IFMT;
  let s = byType.get(type);
  if (!s) byType.set(type, (s = Object.freeze({ mode: type })));
  return s;
}

/** A listing as readdir answers it: names (with `.` and `..`) and their type-only stats. */
export interface Listing {
  names: string[];
  stats: DirentStats[];
}

/** Entries held in all listings kept together. */
export const LISTED_ENTRIES = 256 * 1024;

/** The last listings of directories that never change, by key (least recently used dropped first). */
export class Listings {
  private readonly kept = new Map<string, Listing>();
  private held = 0;
  /** Listings made (not found kept): for tests. */
  made = 0;

  constructor(private readonly bound = LISTED_ENTRIES) {}

  /** The listing kept under `key`, else the one `make` makes (kept when it fits the bound). */
  async get(key: string, make: () => Promise<Listing>): Promise<Listing> {
    const had = this.kept.get(key);
    if (had) {
      this.kept.delete(key);
      this.kept.set(key, had);
      return had;
    }
    const made = await make();
    this.made++;
    const size = made.names.length;
    if (size > this.bound) return made;
    // Made twice at once (two listings of one directory in flight): keep one.
    const other = this.kept.get(key);
    if (other) this.held -= other.names.length;
    this.kept.set(key, made);
    this.held += size;
    for (const [k, l] of this.kept) {
      if (this.held <= this.bound) break;
      this.kept.delete(k);
      this.held -= l.names.length;
    }
    return made;
  }
}
