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
 * commander loads node:child_process (and with it net, dgram and streams) to
 * run subcommands as separate programs, which strata never does: it gets that
 * module on first use instead of at every start.
 */
const deferChildProcess = {
  name: 'defer-child-process',
  setup(build) {
    build.onResolve({ filter: /^node:child_process$/ }, (args) => (/[\\/]commander[\\/]/.test(args.importer) ? { path: 'child_process', namespace: 'deferred' } : undefined));
    build.onLoad({ filter: /.*/, namespace: 'deferred' }, () => ({
      contents: "let loaded; module.exports = new Proxy({}, { get: (_, key) => (loaded ??= require('node:child_process'))[key] });",
      loader: 'js',
    }));
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
  plugins: [deferChildProcess],
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
