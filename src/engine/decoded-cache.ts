/**
 * What readers decode, kept once for the whole process: decoded blocks, and
 * runs of pieces already checked against the sealed TOCs. Bounded by bytes,
 * least recently used dropped first. A mount reads 4-128 KiB at a time, and
 * a 32 KiB block read eight times over must not be fetched, opened and
 * decompressed eight times.
 *
 * Callers put a tag of the repository's id key in front of every key: a
 * block id names the same bytes only under the same key, so repositories
 * never see each other's entries.
 */

/** Unless set otherwise (setDecodedCacheBytes). */
export const DEFAULT_DECODED_CACHE_BYTES = 64 * 1024 * 1024;

export interface DecodedCacheStats {
  bytes: number;
  maxBytes: number;
  entries: number;
  hits: number;
  misses: number;
}

export class DecodedCache {
  private readonly kept = new Map<string, { value: unknown; bytes: number }>();
  /** Loads under way: concurrent reads of one block decode it once. */
  private readonly loading = new Map<string, Promise<unknown>>();
  private used = 0;
  private hits = 0;
  private misses = 0;

  constructor(private limit: number) {}

  /**
   * The value under `key`, else what `load` gives (kept unless `keep` is
   * false: a long stream reads each block once, and would only push out
   * what small reads come back to). A failed load is not kept.
   */
  get<T>(key: string, load: () => Promise<T>, bytes: (value: T) => number, keep = true): Promise<T> {
    const hit = this.peek<T>(key);
    if (hit !== undefined) return Promise.resolve(hit);
    const pending = this.loading.get(key);
    if (pending) {
      this.hits++;
      return pending as Promise<T>;
    }
    this.misses++;
    const p = load().then(
      (value) => {
        this.loading.delete(key);
        if (keep) this.add(key, value, bytes(value));
        return value;
      },
      (e: unknown) => {
        this.loading.delete(key);
        throw e;
      },
    );
    this.loading.set(key, p);
    return p;
  }

  /** The value under `key` if kept (counted as a hit), else undefined (not counted). */
  peek<T>(key: string): T | undefined {
    const hit = this.kept.get(key);
    if (!hit) return undefined;
    this.kept.delete(key);
    this.kept.set(key, hit);
    this.hits++;
    return hit.value as T;
  }

  private add(key: string, value: unknown, bytes: number): void {
    // One entry may take at most a quarter: a huge one would empty the cache for itself.
    if (!this.keeps(bytes) || this.kept.has(key)) return;
    this.kept.set(key, { value, bytes });
    this.used += bytes;
    for (const [oldest, e] of this.kept) {
      if (this.used <= this.limit) break;
      this.kept.delete(oldest);
      this.used -= e.bytes;
    }
  }

  /** Whether an entry of `bytes` would be kept at all. */
  keeps(bytes: number): boolean {
    return bytes <= this.limit / 4;
  }

  setLimit(bytes: number): void {
    this.limit = bytes;
    for (const [oldest, e] of this.kept) {
      if (this.used <= this.limit) break;
      this.kept.delete(oldest);
      this.used -= e.bytes;
    }
  }

  clear(): void {
    this.kept.clear();
    this.used = 0;
    this.hits = 0;
    this.misses = 0;
  }

  stats(): DecodedCacheStats {
    return { bytes: this.used, maxBytes: this.limit, entries: this.kept.size, hits: this.hits, misses: this.misses };
  }
}

/** The one cache of this process. */
export const decodedCache = new DecodedCache(DEFAULT_DECODED_CACHE_BYTES);
