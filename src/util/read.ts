/** Synchronous positioned reads that do not stop short of what the file has. */
import { readSync } from 'node:fs';

/** Reads up to `length` bytes at `position` into the start of `buf`; returns how many the file had (fewer only at its end). */
export function readInto(fd: number, buf: Uint8Array, length: number, position: number): number {
  let got = 0;
  while (got < length) {
    const n = readSync(fd, buf, got, length - got, position + got);
    if (n === 0) break;
    got += n;
  }
  return got;
}
