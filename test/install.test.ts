/**
 * Installing: the native addons are compiled here, never downloaded, and npm
 * has nothing in the project's configuration to warn about on every run.
 */
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';

const ROOT = path.resolve(__dirname, '..');

describe('install', () => {
  it.each(['better-sqlite3', 'zstd-napi'])('%s is built from source: its install step does not try to download a prebuilt binary', (pkg) => {
    const dir = path.join(ROOT, 'node_modules', pkg);
    const r = spawnSync(process.execPath, [require.resolve('prebuild-install/bin.js', { paths: [dir] }), '--verbose'], { cwd: dir, encoding: 'utf8', timeout: 30_000 });
    expect(r.stderr).toMatch(/--build-from-source specified, not attempting download/);
    expect(r.stderr).not.toMatch(/http request/);
  });

  it('npm commands in the checkout print no warning about its configuration', () => {
    const r = spawnSync('npm', ['pkg', 'get', 'name'], { cwd: ROOT, encoding: 'utf8', timeout: 60_000 });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stderr).not.toMatch(/npm warn/i);
  });
});
