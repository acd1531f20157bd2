#!/usr/bin/env node
// npm run build (after tsc): bundles the CLI and the worker scripts into
// CommonJS files, which is what bin/strata.js and the worker pools run.
//
// Why: a short command (a 4 KiB `cat --range`) spent most of its time in
// Node's ES module loader: resolving, linking and wrapping some 70 modules and
// the built-ins they name. One CommonJS file per entry loads in a fraction of
// that, and evaluates a command's modules only when the command runs.
import * as esbuild from 'esbuild';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

/**
 * Built-ins most commands never use, loaded on first use instead of at every
 * start (together some 10 ms of a 4 KiB `cat`): child_process (commander
 * runs subcommands as programs, which strata never does; the xattr and
 * special-file fallbacks spawn tools), http and https (remote and S3
 * repositories, the server, the UI). Each stands in the bundle as an object
 * with a getter per export (named when the build runs, by the Node that will
 * run it), so that a namespace import, which copies those getters, loads the
 * module only when one of them is read.
 */
const DEFERRED = ['child_process', 'http', 'https'];
const deferBuiltins = {
  name: 'defer-builtins',
  setup(build) {
    // The stand-in's own require is the real module.
    build.onResolve({ filter: new RegExp(`^node:(${DEFERRED.join('|')})$`) }, (args) =>
      args.namespace === 'deferred' ? { path: args.path, external: true } : { path: args.path.slice('node:'.length), namespace: 'deferred' },
    );
    build.onLoad({ filter: /.*/, namespace: 'deferred' }, async (args) => {
      const names = Object.keys(await import(`node:${args.path}`)).filter((n) => n !== 'default');
      return {
        contents: `let loaded; const load = () => (loaded ??= require('node:${args.path}'));
for (const name of ${JSON.stringify(names)}) Object.defineProperty(module.exports, name, { enumerable: true, get: () => load()[name] });`,
        loader: 'js',
      };
    });
  },
};

const common = {
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'cjs',
  // Native addons load their binaries from their own directories (fuse-napi, optional, only for strata mount).
  // The disk image readers (a WebAssembly build inlined in 370 KiB of JavaScript) load only when used.
  external: ['better-sqlite3', 'zstd-napi', 'fuse-napi', 'ext2fs', 'fatfs', 'partitioninfo', 'file-disk'],
  // import.meta has no CommonJS meaning: give it the bundle's own URL.
  define: { 'import.meta.url': '__bundleUrl' },
  banner: { js: "const __bundleUrl = require('node:url').pathToFileURL(__filename).href;" },
  plugins: [deferBuiltins],
  // Less to parse at every start; names are kept for stack traces.
  minifyWhitespace: true,
  minifySyntax: true,
  sourcemap: 'linked',
  logLevel: 'warning',
  absWorkingDir: root,
};

/**
 * Writes dist/strata.cjs.cache, the V8 code cache bin/strata.js compiles the
 * bundle with: made by one range read from a throwaway repository, so it holds
 * what opening a repository and reading from it compile, shared by most commands.
 */
function writeCodeCache() {
  const cache = path.join(root, 'dist/strata.cjs.cache');
  fs.rmSync(cache, { force: true });
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'strata-build-'));
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('STRATA_')));
  const strata = (args, extra = {}) =>
    execFileSync(process.execPath, [path.join(root, 'bin/strata.js'), '--repo', path.join(tmp, 'repo'), ...args], {
      env: { ...env, STRATA_PASSWORD: 'build', ...extra },
      stdio: ['ignore', 'ignore', 'inherit'],
    });
  try {
    const file = path.join(tmp, 'file');
    const key = path.join(tmp, 'key.json');
    fs.writeFileSync(file, randomBytes(300_000));
    strata(['init', '--scrypt-n', '1024', '-q']);
    strata(['key', 'export', key]);
    strata(['--key-file', key, 'backup', file, '-q']);
    strata(['--key-file', key, 'cat', file, '--range', '150000-154095'], { STRATA_WRITE_CODE_CACHE: '1' });
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

/** strata ui's web app: one script and one style sheet for the browser, which the ui server hands out from dist/web (src/ui/server.ts). */
const webApp = {
  entryPoints: { app: 'src/ui/web/app.ts' },
  outdir: 'dist/web',
  bundle: true,
  platform: 'browser',
  format: 'esm',
  target: 'es2020',
  minify: true,
  legalComments: 'none',
  logLevel: 'warning',
  absWorkingDir: root,
};

await Promise.all([
  esbuild.build(webApp).then(() => fs.copyFileSync(path.join(root, 'src/ui/web/app.css'), path.join(root, 'dist/web/app.css'))),
  esbuild.build({ ...common, entryPoints: ['src/cli/main.ts'], outfile: 'dist/strata.cjs' }),
  esbuild.build({ ...common, entryPoints: ['src/workers/sealer.ts', 'src/workers/unpacker.ts', 'src/workers/scanner.ts'], outdir: 'dist/workers', outExtension: { '.js': '.cjs' } }),
]);
writeCodeCache();
