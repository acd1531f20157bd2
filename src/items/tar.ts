/**
 * Entries of a tar archive, found by walking its headers: each 512-byte
 * header gives the size of the data after it, so the next header's offset
 * is known without reading the data (the walk itself, shared with the
 * backup's item index, is engine/item-scan.ts). A snapshot whose backup
 * sealed an item index for the archive is read from that instead
 * (dataset.ts).
 */
import { notFound } from '../errors.js';
import { plainTarName, TAR_BLOCK, TarWalk, type TarEntry } from '../engine/snapshot-tree.js';
import type { RangeReader } from './reader.js';

export type { TarEntry };

export async function* tarEntries(reader: RangeReader): AsyncGenerator<TarEntry> {
  const walk = new TarWalk(reader.path);
  let at = 0;
  while (at + TAR_BLOCK <= reader.size) {
    const step = walk.header(await reader.read(at, TAR_BLOCK), at);
    if (step.end) return;
    if ('meta' in step) walk.meta(await reader.read(at + TAR_BLOCK, step.meta));
    else yield step.entry;
    at = step.next;
  }
}

/** The entry named `name` (a leading "./" or "/" aside); the last one wins, as tar extracts. */
export async function findTarEntry(reader: RangeReader, name: string): Promise<TarEntry> {
  const want = plainTarName(name);
  let found: TarEntry | undefined;
  for await (const e of tarEntries(reader)) if (plainTarName(e.name) === want) found = e;
  if (!found) throw notFound(`${reader.path} has no entry ${name}`);
  return found;
}
