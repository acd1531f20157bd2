/**
 * Whether a file seen before still holds exactly its parent version's bytes:
 * read whole (one byte more than expected, so a file that grew is caught)
 * and hashed along the parent version's blocks, between two fstats that must
 * show the stats the walk saw. Used by the sealing workers for groups of
 * files and by a backup's main thread for a group small enough that a round
 * trip to a worker would cost it more than the reading.
 */
import { closeSync, constants, fstatSync, openSync } from 'node:fs';
import { blockId } from '../crypto/keyring.js';
import { osPath } from '../util/names.js';
import { readInto } from '../util/read.js';

/** Bytes of a block id. */
export const ID_BYTES = 32;

/** A buffer reused from one file to the next (grown as needed). */
export interface ReadBuffer {
  buf: Buffer;
}

/**
 * File `path`, whose stats were `stats` ([size, mtimeNs, ctimeNs, ino]):
 * whether its bytes are exactly the blocks of `lengths` and `ids` (ID_BYTES
 * each), and how many bytes were read. Any failure is "not the same" (the
 * caller then reads the file as a changed one, and says what is wrong).
 */
export function sameFile(idKey: Uint8Array, path: string, stats: BigInt64Array, lengths: Uint32Array, ids: Uint8Array, scratch: ReadBuffer): { same: boolean; bytesRead: number } {
  const [size, mtimeNs, ctimeNs, ino] = stats;
  let fd: number | undefined;
  let bytesRead = 0;
  try {
    fd = openSync(osPath(path), constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
    const before = fstatSync(fd, { bigint: true });
    if (!before.isFile() || before.ino !== ino || before.size !== size || before.mtimeNs !== mtimeNs || before.ctimeNs !== ctimeNs) return { same: false, bytesRead };
    const n = Number(size);
    if (scratch.buf.length < n + 1) scratch.buf = Buffer.allocUnsafe(n + 1);
    bytesRead = readInto(fd, scratch.buf, n + 1, 0);
    if (bytesRead !== n) return { same: false, bytesRead };
    let at = 0;
    for (let k = 0; k < lengths.length; k++) {
      const length = lengths[k]!;
      if (at + length > n || !blockId(idKey, scratch.buf.subarray(at, at + length)).equals(ids.subarray(k * ID_BYTES, (k + 1) * ID_BYTES))) return { same: false, bytesRead };
      at += length;
    }
    const after = fstatSync(fd, { bigint: true });
    return { same: at === n && after.size === before.size && after.mtimeNs === before.mtimeNs && after.ctimeNs === before.ctimeNs, bytesRead };
  } catch {
    return { same: false, bytesRead };
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}
