/**
 * How the CLI starts: bin/strata.js sets its V8 flags (bin/v8-flags.js) and
 * runs the CommonJS bundle of the build, compiled with the code cache the
 * build wrote for exactly that bundle under those flags.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as vm from 'node:vm';
import { describe, expect, it } from 'vitest';
import { sqliteAddon } from '../src/catalog/catalog.js';
import { VERSION } from '../src/version.js';
import { BIN, cliEnv, ROOT, strata, tempDir } from './helpers.js';

const BUNDLE = path.join(ROOT, 'dist', 'strata.cjs');
const wrapped = (text: string) => `(function (exports, require, module, __filename, __dirname) {${text}\n})`;

/** bin/ and the bundle copied elsewhere, with the packages beside them, to try other bundles and caches. */
function copyOfCli(): { bin: string; bundle: string; cache: string } {
  const dir = tempDir();
  fs.mkdirSync(path.join(dir, 'bin'));
  fs.mkdirSync(path.join(dir, 'dist'));
  for (const f of ['strata.js', 'v8-flags.js', 'package.json']) fs.copyFileSync(path.join(ROOT, 'bin', f), path.join(dir, 'bin', f));
  fs.copyFileSync(BUNDLE, path.join(dir, 'dist', 'strata.cjs'));
  fs.symlinkSync(path.join(ROOT, 'node_modules'), path.join(dir, 'node_modules'));
  return { bin: path.join(dir, 'bin', 'strata.js'), bundle: path.join(dir, 'dist', 'strata.cjs'), cache: path.join(dir, 'dist', 'strata.cjs.cache') };
}

describe('the bundled CLI', () => {
  it("the build's code cache names this bundle, and V8 takes it", () => {
    const text = fs.readFileSync(BUNDLE, 'utf8');
    const cache = fs.readFileSync(`${BUNDLE}.cache`);
    expect(cache.subarray(0, 32).equals(createHash('sha256').update(text).digest())).toBe(true);
    // Under the CLI's V8 flags, as bin/strata.js compiles it (V8 rejects a cache made under other flags).
    const probe = `require('node:v8').setFlagsFromString(require(${JSON.stringify(path.join(ROOT, 'bin', 'v8-flags.js'))}).V8_FLAGS);
      const fs = require('node:fs'), vm = require('node:vm');
      const text = fs.readFileSync(${JSON.stringify(BUNDLE)}, 'utf8');
      const script = new vm.Script(${JSON.stringify(wrapped('@'))}.replace('@', () => text), { filename: ${JSON.stringify(BUNDLE)}, cachedData: fs.readFileSync(${JSON.stringify(`${BUNDLE}.cache`)}).subarray(32) });
      process.stdout.write(String(script.cachedDataRejected));`;
    expect(execFileSync(process.execPath, ['-e', probe], { encoding: 'utf8' })).toBe('false');
    // Without them the same cache is rejected: the flags are what it was made under.
    const script = new vm.Script(wrapped(text), { filename: BUNDLE, cachedData: cache.subarray(32) });
    expect(script.cachedDataRejected).toBe(true);
  });

  it('a cache made for another bundle, a damaged one, or none: the CLI still runs, from its own source', () => {
    const { bin, bundle, cache } = copyOfCli();
    const version = () => execFileSync(process.execPath, [bin, '--version'], { encoding: 'utf8' }).trim();
    expect(version()).toBe(VERSION);
    // Another bundle of the same length with this one's cache: V8 only compares
    // lengths and would run the cached code, which says the old version.
    const text = fs.readFileSync(bundle, 'utf8');
    expect(text).toContain(`"${VERSION}"`);
    const other = text.replaceAll(`"${VERSION}"`, `"${'9'.repeat(VERSION.length)}"`);
    fs.writeFileSync(bundle, other);
    fs.copyFileSync(`${BUNDLE}.cache`, cache);
    expect(version()).toBe('9'.repeat(VERSION.length));
    // The right digest over bytes that are no cache at all.
    fs.writeFileSync(cache, Buffer.concat([createHash('sha256').update(other).digest(), Buffer.alloc(4096, 7)]));
    expect(version()).toBe('9'.repeat(VERSION.length));
    fs.rmSync(cache);
    expect(version()).toBe('9'.repeat(VERSION.length));
  });

  it('without its bundle, the CLI says to build it, in one line', () => {
    const { bin, bundle } = copyOfCli();
    fs.rmSync(bundle);
    const r = spawnSync(process.execPath, [bin, '--version'], { encoding: 'utf8' });
    expect(r.status).toBe(1);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/cannot load .*strata\.cjs \(ENOENT\); run "npm run build"/);
  });

  it('loading it leaves out what no command needs at start (commander would load child_process)', () => {
    const loaded = execFileSync(process.execPath, ['-e', `require(${JSON.stringify(BUNDLE)}); console.log(JSON.stringify(process.moduleLoadList))`], { encoding: 'utf8' });
    const list = JSON.parse(loaded) as string[];
    expect(list).not.toContain('NativeModule child_process');
  });

  it('a command on a local repository never loads http, https or child_process; they load when used', () => {
    const dir = tempDir();
    const repo = path.join(dir, 'repo');
    const file = path.join(dir, 'file');
    fs.writeFileSync(file, 'a file read back whole\n');
    const env = cliEnv(repo);
    expect(strata(['init', '--scrypt-n', '1024', '-q'], env).status).toBe(0);
    expect(strata(['backup', '-q', file], env).status).toBe(0);
    const out = path.join(dir, 'modules.json');
    const preload = path.join(dir, 'modules.cjs');
    fs.writeFileSync(preload, `process.on('exit', () => require('node:fs').writeFileSync(${JSON.stringify(out)}, JSON.stringify(process.moduleLoadList)));`);
    const r = spawnSync(process.execPath, ['-r', preload, BIN, 'cat', file], { env, encoding: 'utf8' });
    expect(r.stdout).toBe('a file read back whole\n');
    const loaded = JSON.parse(fs.readFileSync(out, 'utf8')) as string[];
    for (const m of ['http', 'https', 'child_process']) expect(loaded).not.toContain(`NativeModule ${m}`);
    // The stand-ins answer with the real modules: a server's URL goes through http or https.
    for (const scheme of ['http', 'https']) {
      const refused = strata(['--repo', `${scheme}://127.0.0.1:9`, '--token', 't', 'snapshots'], env);
      expect(refused.stderr).toContain(`GET ${scheme}://127.0.0.1:9/v1/objects/config/config: connection refused`);
    }
  });

  it("SQLite's addon is named outright, not searched for at every start", () => {
    const addon = sqliteAddon();
    expect(addon).toMatch(/better_sqlite3\.node$/);
    expect(fs.existsSync(addon!)).toBe(true);
  });
});
