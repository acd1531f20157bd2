/**
 * Marker files: a directory holding one (--exclude-if-present,
 * --exclude-caches) is left out of a backup.
 */
import * as fsSync from 'node:fs';
import { constants } from 'node:fs';
import { osPath } from './names.js';

/** A file whose presence leaves its directory out (--exclude-if-present, --exclude-caches). */
export interface Marker {
  name: string;
  /** What the file must start with, if anything. */
  header?: Buffer;
}

/** Whether the marker file is there (a regular file) and starts as it must. */
export function hasMarker(file: string, m: Marker): boolean {
  let fd: number | undefined;
  try {
    fd = fsSync.openSync(osPath(file), constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
    if (!fsSync.fstatSync(fd).isFile()) return false;
    if (!m.header) return true;
    const head = Buffer.alloc(m.header.length);
    return fsSync.readSync(fd, head, 0, head.length, 0) === head.length && head.equals(m.header);
  } catch {
    return false;
  } finally {
    if (fd !== undefined) fsSync.closeSync(fd);
  }
}
