/** `strata ui`: the web app, on loopback, for this repository (local or served); see src/ui/. */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Command } from 'commander';
import { usageError } from '../../errors.js';
import { isLoopback } from '../../server/serve.js';
import { startUi } from '../../ui/server.js';
import { globals, openRepo } from '../context.js';
import { parseListen } from './serve.js';

export function register(program: Command): void {
  program
    .command('ui')
    .description('browse snapshots in a web browser: timeline, files, history, change maps, blame, downloads and restores (until Ctrl-C)')
    .option('--listen <host:port>', 'address to listen on (port 0 picks a free port)', '127.0.0.1:0')
    .option('--open', 'open the printed address in the default browser (xdg-open)')
    .option('--insecure-listen', 'allow an address other than loopback (the app is plain HTTP)')
    .action(async (opts: { listen: string; open?: boolean; insecureListen?: boolean }, cmd: Command) => {
      const g = globals(cmd);
      const { host, port } = parseListen(opts.listen);
      if (!isLoopback(host) && !opts.insecureListen) {
        throw usageError(`refusing to listen on ${host}: strata ui holds the repository key and speaks plain HTTP; it listens on loopback unless --insecure-listen is given`);
      }
      const repo = await openRepo(cmd, { readonly: true });
      try {
        const ui = await startUi({ repo, host, port, assets: assetsDir() });
        await new Promise<void>((resolve) => {
          const stop = () => {
            process.off('SIGTERM', stop);
            process.off('SIGINT', stop);
            void ui.close().then(resolve);
          };
          process.on('SIGTERM', stop);
          process.on('SIGINT', stop);
          // Announced once signals are handled: whoever reads this line may send one at once.
          process.stdout.write(g.json ? JSON.stringify({ url: ui.url, origin: ui.origin }) + '\n' : `strata ui: open ${ui.url}\n(the link works once; Ctrl-C stops)\n`);
          if (opts.open) openBrowser(ui.url);
        });
      } finally {
        repo.close();
      }
    });
}

/** The bundled web app: dist/web beside the CLI's bundle (dist/strata.cjs), or from tsc's output or the sources, the checkout's. */
function assetsDir(): string {
  const here = path.dirname(fileURLToPath(import.meta.url));
  const candidates = [path.join(here, 'web'), path.resolve(here, '../../web'), path.resolve(here, '../../../dist/web')];
  return candidates.find((d) => fs.existsSync(path.join(d, 'app.js'))) ?? candidates[0]!;
}

function openBrowser(url: string): void {
  try {
    const child = spawn('xdg-open', [url], { stdio: 'ignore', detached: true });
    child.on('error', () => process.stderr.write('strata ui: could not start xdg-open; open the address above yourself\n'));
    child.unref();
  } catch {
    process.stderr.write('strata ui: could not start a browser; open the address above yourself\n');
  }
}
