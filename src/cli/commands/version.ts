/** `strata version`: this strata, the Node.js running it, and the repository format it writes. */
import type { Command } from 'commander';
import { FORMAT_VERSION } from '../../repo/config.js';
import { VERSION } from '../../version.js';
import { globals } from '../context.js';
import { line, printJson } from '../output.js';

export function register(program: Command): void {
  program
    .command('version')
    .description("print strata's version, the Node.js version and the repository format version")
    .action((_opts: unknown, cmd: Command) => {
      const g = globals(cmd);
      const out = { version: VERSION, node: process.versions.node, format: FORMAT_VERSION };
      if (g.json) return printJson(out);
      line(`strata ${out.version}`);
      if (!g.quiet) {
        line(`node ${out.node}`);
        line(`repository format ${out.format}`);
      }
    });
}
