/**
 * A store's reader for another thread: the store says how (Storage.threadReader),
 * the thread opens its own here. Only stores whose objects are files here have one.
 */
import { DirectoryThreadReader } from './local.js';
import type { ThreadReader, ThreadReaderSpec } from './storage.js';

export function openThreadReader(spec: ThreadReaderSpec): ThreadReader {
  switch (spec.driver) {
    case 'directory':
      return new DirectoryThreadReader(spec.root);
  }
}
