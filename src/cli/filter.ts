/** The snapshot filters `snapshots` and `forget` share: --host, --path, --tag (as restic has them). */
import * as path from 'node:path';
import type { Command } from 'commander';
import { splitTags, type SnapshotFilter } from '../engine/filter.js';

export interface FilterFlags {
  host?: string[];
  path?: string[];
  tag?: string[];
}

const collect = (value: string, previous: string[] = []) => [...previous, value];

export function addFilterOptions(cmd: Command, what: string): Command {
  return cmd
    .option('--host <name>', `${what} snapshots of this host (repeatable: any of them)`, collect)
    .option('--path <path>', `${what} snapshots with this source path (repeatable: all of them)`, collect)
    .option('--tag <tag[,tag...]>', `${what} snapshots with all of these tags (repeatable: any of the lists)`, collect);
}

export function filterOf(flags: FilterFlags): SnapshotFilter {
  return {
    hosts: flags.host ?? [],
    paths: (flags.path ?? []).map((p) => path.resolve(p)),
    tags: (flags.tag ?? []).map(splitTags),
  };
}
