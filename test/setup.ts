/**
 * Every test file: a turn of the event loop after each test. A file of
 * tests that spend their time in synchronous child processes (spawnSync,
 * execFileSync) would otherwise hold its worker's loop for the whole file,
 * and a minute of that makes vitest's own calls to its runner time out
 * ("Timeout calling onTaskUpdate") although every test passed.
 */
import { afterEach } from 'vitest';

// Node parses every certificate this names at each start (40-50 ms here); the
// tests spawn thousands of strata processes and reach nothing but loopback.
delete process.env.NODE_EXTRA_CA_CERTS;

afterEach(() => new Promise<void>((resolve) => setImmediate(resolve)));
