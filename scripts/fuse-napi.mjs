#!/usr/bin/env node
// npm's postinstall: makes sure the FUSE binding `strata mount` uses is built,
// and never fails the install when it cannot be.
//
// fuse-napi is an optional dependency pinned in package.json and
// package-lock.json. It declares Node >= 22 but builds and runs on Node 20,
// and npm leaves out any optional dependency whose "engines" do not match the
// running Node. Where npm left it out, this installs the same locked versions
// (fuse-napi and its dependencies, with their integrity hashes taken from
// package-lock.json) into node_modules/.fuse-napi with `npm ci`, from the npm
// registry like everything else. Building it needs libfuse 3's headers
// (Debian: apt-get install fuse3 libfuse3-dev pkg-config); without them the
// install goes on, and `strata mount` says how to get FUSE.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { createRequire } from 'node:module';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const NAME = 'fuse-napi';
/** Where the binding goes when npm left it out (strata looks there too: src/mount/binding.ts). */
const PREFIX = path.join(root, 'node_modules', '.fuse-napi');

function note(message) {
  process.stderr.write(`strata: ${message}\n`);
}

function loads(from) {
  try {
    createRequire(path.join(from, 'package.json'))(NAME);
    return true;
  } catch {
    return false;
  }
}

/** fuse-napi's entry in package-lock.json and those of everything it needs, as a lockfile of their own. */
function lockOf(lock, pinned) {
  const packages = lock.packages;
  const out = {};
  const visit = (name, from) => {
    // Node's resolution: the nearest node_modules up from the package that needs it.
    for (let dir = from; ; dir = dir.includes('/node_modules/') ? dir.slice(0, dir.lastIndexOf('/node_modules/')) : '') {
      const key = dir ? `${dir}/node_modules/${name}` : `node_modules/${name}`;
      const entry = packages[key];
      if (entry) {
        if (out[key]) return;
        const { optional: _o, dev: _d, devOptional: _do, peer: _p, ...kept } = entry;
        out[key] = kept;
        for (const dep of Object.keys(entry.dependencies ?? {})) visit(dep, key);
        return;
      }
      if (!dir) throw new Error(`package-lock.json has no entry for ${name}`);
    }
  };
  visit(NAME, '');
  if (out[`node_modules/${NAME}`].version !== pinned) throw new Error(`package-lock.json has ${NAME} ${out[`node_modules/${NAME}`].version}, package.json pins ${pinned}`);
  return {
    name: 'strata-fuse-napi',
    lockfileVersion: 3,
    requires: true,
    packages: { '': { name: 'strata-fuse-napi', dependencies: { [NAME]: pinned } }, ...out },
  };
}

function main() {
  if (process.platform !== 'linux') return;
  if (loads(root) || loads(PREFIX)) return;
  const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'));
  const pinned = pkg.optionalDependencies?.[NAME];
  if (!pinned) return;
  const lock = lockOf(JSON.parse(fs.readFileSync(path.join(root, 'package-lock.json'), 'utf8')), pinned);
  fs.rmSync(PREFIX, { recursive: true, force: true });
  fs.mkdirSync(PREFIX, { recursive: true });
  fs.writeFileSync(path.join(PREFIX, 'package.json'), `${JSON.stringify({ name: lock.name, private: true, dependencies: { [NAME]: pinned } }, null, 2)}\n`);
  fs.writeFileSync(path.join(PREFIX, 'package-lock.json'), `${JSON.stringify(lock, null, 2)}\n`);
  const npm = process.env.npm_execpath;
  const [cmd, args] = npm ? [process.execPath, [npm]] : ['npm', []];
  const r = spawnSync(cmd, [...args, 'ci', '--prefix', PREFIX, '--no-audit', '--no-fund', '--loglevel', 'error'], {
    cwd: PREFIX,
    // Compiled here against libfuse 3, as .npmrc has the other addons compiled: no prebuilt binary is used.
    env: { ...process.env, npm_config_build_from_source: 'true' },
    stdio: ['ignore', 'ignore', 'pipe'],
    encoding: 'utf8',
  });
  if (r.status === 0 && loads(PREFIX)) return;
  fs.rmSync(PREFIX, { recursive: true, force: true });
  const why = /fuse3|fuse\.h|pkg-config/i.test(r.stderr ?? '') ? "libfuse 3's headers were not found" : `npm ci of ${NAME} failed (${(r.stderr ?? '').trim().split('\n').pop() ?? r.error?.message})`;
  note(`${NAME} was not built (${why}): strata works, but without "strata mount".`);
  note('For mount support install FUSE 3 first (Debian/Ubuntu: apt-get install fuse3 libfuse3-dev pkg-config), then run npm ci again.');
}

try {
  main();
} catch (e) {
  note(`${NAME} was not built (${e.message}): strata works, but without "strata mount".`);
}
