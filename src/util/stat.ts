/**
 * What a backup needs of an lstat, packed as numbers so a worker thread can
 * stat a directory's entries while the main thread compares them with the
 * parent snapshot (100k entries: half a second of lstat calls).
 */
import { constants, type BigIntStats } from 'node:fs';

export type EntryStat = Pick<
  BigIntStats,
  'mode' | 'uid' | 'gid' | 'size' | 'mtimeNs' | 'ctimeNs' | 'ino' | 'nlink' | 'dev' | 'isFile' | 'isDirectory' | 'isSymbolicLink' | 'isFIFO' | 'isSocket' | 'isBlockDevice' | 'isCharacterDevice'
>;

/** Numbers per path: mode, uid, gid, size, mtimeNs, ctimeNs, ino, nlink, dev (as signed 64-bit). */
export const STAT_FIELDS = 9;

/** An lstat that failed, as it crosses threads. */
export interface StatFailure {
  code?: string;
  message: string;
}

export function packStat(st: BigIntStats, into: BigInt64Array, i: number): void {
  const at = i * STAT_FIELDS;
  into[at] = st.mode;
  into[at + 1] = st.uid;
  into[at + 2] = st.gid;
  into[at + 3] = st.size;
  into[at + 4] = st.mtimeNs;
  into[at + 5] = st.ctimeNs;
  into[at + 6] = BigInt.asIntN(64, st.ino);
  into[at + 7] = st.nlink;
  into[at + 8] = BigInt.asIntN(64, st.dev);
}

/** lstat of every path: the packed values, and a failure (or null) per path. */
export function lstatAll(paths: readonly string[], lstat: (p: string) => BigIntStats): { values: BigInt64Array; failures: (StatFailure | null)[] } {
  const values = new BigInt64Array(paths.length * STAT_FIELDS);
  const failures: (StatFailure | null)[] = paths.map((p, i) => {
    try {
      packStat(lstat(p), values, i);
      return null;
    } catch (e) {
      const { code, message } = e as NodeJS.ErrnoException;
      return { ...(code ? { code } : {}), message };
    }
  });
  return { values, failures };
}

/** One path's packed lstat, read back (each field made when asked for: a directory of 100k entries holds them all). */
export class PackedStat implements EntryStat {
  constructor(
    private readonly values: BigInt64Array,
    private readonly at: number,
  ) {}

  get mode(): bigint {
    return this.values[this.at]!;
  }
  get uid(): bigint {
    return this.values[this.at + 1]!;
  }
  get gid(): bigint {
    return this.values[this.at + 2]!;
  }
  get size(): bigint {
    return this.values[this.at + 3]!;
  }
  get mtimeNs(): bigint {
    return this.values[this.at + 4]!;
  }
  get ctimeNs(): bigint {
    return this.values[this.at + 5]!;
  }
  get ino(): bigint {
    return BigInt.asUintN(64, this.values[this.at + 6]!);
  }
  get nlink(): bigint {
    return this.values[this.at + 7]!;
  }
  get dev(): bigint {
    return BigInt.asUintN(64, this.values[this.at + 8]!);
  }

  private is(type: number): boolean {
    return (Number(this.values[this.at]!) & constants.S_IFMT) === type;
  }
  isFile(): boolean {
    return this.is(constants.S_IFREG);
  }
  isDirectory(): boolean {
    return this.is(constants.S_IFDIR);
  }
  isSymbolicLink(): boolean {
    return this.is(constants.S_IFLNK);
  }
  isFIFO(): boolean {
    return this.is(constants.S_IFIFO);
  }
  isSocket(): boolean {
    return this.is(constants.S_IFSOCK);
  }
  isBlockDevice(): boolean {
    return this.is(constants.S_IFBLK);
  }
  isCharacterDevice(): boolean {
    return this.is(constants.S_IFCHR);
  }
}

/** A failure as an Error again (its code kept, for the warning's wording). */
export function statError(f: StatFailure): NodeJS.ErrnoException {
  return Object.assign(new Error(f.message), f.code ? { code: f.code } : {});
}
