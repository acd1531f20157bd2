/**
 * The memory of a mount's process: kept low while a long file is read
 * through it, and reported when asked (STRATA_MOUNT_MEMORY_LOG), to see where
 * it goes on a real mount.
 */
import * as fs from 'node:fs';
import * as v8 from 'node:v8';
import type { OpenFiles } from './handles.js';

/**
 * Keeps V8's young generation at its first size. By default it grows to
 * 16 MiB a half (32 MiB resident) as soon as a read allocates steadily,
 * which a mount reading a large file does; at 1 MiB a half it is collected
 * more often, cheaply (little survives), and the buffers that died young go
 * sooner. The growth factor is read at each growth, so it takes effect here,
 * after start (--max-semi-space-size is read only at start).
 */
export function keepYoungGenerationSmall(): void {
  v8.setFlagsFromString('--semi-space-growth-factor=1');
}

const MIB = 1024 * 1024;

/** One line of the memory log, in MiB. */
export interface MemoryLine {
  t: number;
  rss: number;
  heapTotal: number;
  heapUsed: number;
  newSpace: number;
  oldSpace: number;
  external: number;
  arrayBuffers: number;
  /** Chunk buffers the open files' pool has made, and of them lent now. */
  poolMade: number;
  poolInUse: number;
}

/** Appends a JSON line of the process's memory to `file` every `ms` until the returned function is called. */
export function logMemory(file: string, files: OpenFiles, ms = 200): () => void {
  const mib = (n: number) => Math.round((n / MIB) * 10) / 10;
  const write = () => {
    const u = process.memoryUsage();
    const space = (name: string) => mib(v8.getHeapSpaceStatistics().find((s) => s.space_name === name)?.space_size ?? 0);
    const line: MemoryLine = {
      t: Date.now(),
      rss: mib(u.rss),
      heapTotal: mib(u.heapTotal),
      heapUsed: mib(u.heapUsed),
      newSpace: space('new_space'),
      oldSpace: space('old_space'),
      external: mib(u.external),
      arrayBuffers: mib(u.arrayBuffers),
      poolMade: files.pool.made,
      poolInUse: files.pool.inUse,
    };
    fs.appendFileSync(file, JSON.stringify(line) + '\n');
  };
  write();
  const timer = setInterval(write, ms);
  timer.unref();
  return () => clearInterval(timer);
}
