/**
 * Sparse restores: a piece of a file that is all zeros is not written, so a
 * file restored into a new, empty file keeps its holes (as restic's
 * --sparse does). Only runs of at least a file system block are worth it.
 */

/** The shortest run of zeros left as a hole. */
export const HOLE_MIN = 4096;

const ZEROS = Buffer.alloc(64 * 1024);

/** Whether `piece` is long enough to be a hole and all zeros. */
export function isHole(piece: Uint8Array): boolean {
  // Most pieces end here: data rarely starts and ends with zero bytes.
  if (piece.length < HOLE_MIN || piece[0] !== 0 || piece[piece.length - 1] !== 0) return false;
  for (let at = 0; at < piece.length; at += ZEROS.length) {
    const part = piece.subarray(at, Math.min(piece.length, at + ZEROS.length));
    if (Buffer.compare(part, ZEROS.subarray(0, part.length)) !== 0) return false;
  }
  return true;
}
