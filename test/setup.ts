/**
 * Every test file: a turn of the event loop after each test. A file of
 * tests that spend their time in synchronous child processes (spawnSync,
 * execFileSync) would otherwise hold its worker's loop for the whole file,
 * and a minute of that makes vitest's own calls to its runner time out
 * ("Timeout calling onTaskUpdate") although every test passed.
 */
import { afterEach } from 'vitest';

afterEach(() => new Promise<void>((resolve) => setImmediate(resolve)));
