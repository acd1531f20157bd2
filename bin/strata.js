#!/usr/bin/env node
// Runs the CLI from its CommonJS bundle (npm run build: scripts/bundle.mjs),
// which loads in a fraction of the time its ES modules take. The bundle is
// compiled with the V8 code cache the build wrote beside it, so a short
// command does not spend a sixth of its time parsing. A cache for another
// bundle, or one this Node rejects, or none, only means a normal compile.
// This directory's package.json makes this file CommonJS, for the same reason.
'use strict';
// Before anything is compiled: the code cache below is valid only under
// the flags it was made with, and the build makes it through this file.
const v8 = require('node:v8');
const v8Flags = require('./v8-flags.js');
v8.setFlagsFromString(v8Flags.V8_FLAGS);
const { createHash } = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');
const vm = require('node:vm');
const { createRequire } = require('node:module');

const bundle = path.join(__dirname, '..', 'dist', 'strata.cjs');
const cacheFile = `${bundle}.cache`;
let text;
try {
  text = fs.readFileSync(bundle, 'utf8');
} catch (e) {
  process.stderr.write(`strata: cannot load ${bundle} (${e.code ?? e.message}); run "npm run build"\n`);
  process.exit(1);
}
// The cache starts with the SHA-256 of the bundle it was made from: V8 itself only compares lengths.
const digest = createHash('sha256').update(text).digest();
let cachedData;
try {
  const cache = fs.readFileSync(cacheFile);
  if (cache.subarray(0, 32).equals(digest)) cachedData = cache.subarray(32);
} catch {
  // No cache: compile from source.
}
const script = new vm.Script(`(function (exports, require, module, __filename, __dirname) {${text}\n})`, { filename: bundle, cachedData });
const loaded = { exports: {} };
script.runInThisContext()(loaded.exports, createRequire(bundle), loaded, bundle, path.dirname(bundle));
const done = loaded.exports.main(process.argv);
// The build runs one short command with this set, to cache what it compiled
// (under the first flags: V8 names the flags in the cache).
if (process.env.STRATA_WRITE_CODE_CACHE === '1') done.then(() => fs.writeFileSync(cacheFile, Buffer.concat([digest, script.createCachedData()])));
else setTimeout(() => v8.setFlagsFromString(v8Flags.LATER_FLAGS), v8Flags.LATER_MS).unref();
