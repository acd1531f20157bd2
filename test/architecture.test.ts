/**
 * Layers with a direction (docs/ARCHITECTURE.md): each module imports only
 * from its own layer or the ones below, and no chain of imports comes back
 * to where it started. Read from the sources, type-only imports included:
 * a type is a dependency too.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ROOT } from './helpers.js';

/** Lowest first. A directory not named here is an error: a new one needs a place. */
export const LAYERS: readonly (readonly string[])[] = [
  ['errors.ts', 'version.ts', 'util'],
  ['crypto', 'chunker'],
  ['storage'],
  ['catalog'],
  ['repo', 'workers'],
  ['engine'],
  ['cli', 'server', 'mount', 'ui', 'items'],
];

/** Front ends that must stand on less than their layer allows: the server serves storage and the catalog, never keys. */
const NARROWER: Record<string, number> = { server: 3 };

const SRC = path.join(ROOT, 'src');

function sources(dir = SRC): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) return sources(p);
    return e.name.endsWith('.ts') ? [p] : [];
  });
}

/** The top-level part of src a module belongs to: its directory, or the file itself. */
function part(file: string): string {
  return path.relative(SRC, file).split(path.sep)[0]!;
}

export function layerOf(file: string): number {
  const i = LAYERS.findIndex((l) => l.includes(part(file)));
  if (i < 0) throw new Error(`${path.relative(ROOT, file)}: ${part(file)} has no layer in test/architecture.test.ts`);
  return i;
}

/** Every relative import of a module (static, dynamic, type-only, re-export), as absolute .ts paths. */
export function importsOf(file: string, text = fs.readFileSync(file, 'utf8')): string[] {
  const specs = [...text.matchAll(/(?:from\s*|import\s*\(\s*|^import\s+)'(\.{1,2}\/[^']+)'/gm)].map((m) => m[1]!);
  return specs.map((s) => path.resolve(path.dirname(file), s.replace(/\.js$/, '.ts')));
}

export function wrongWay(files: readonly string[], imports: (f: string) => string[]): string[] {
  const out: string[] = [];
  for (const f of files) {
    const mine = NARROWER[part(f)] ?? layerOf(f);
    for (const t of imports(f)) if (part(t) !== part(f) && layerOf(t) > mine) out.push(`${path.relative(SRC, f)} -> ${path.relative(SRC, t)}`);
  }
  return out;
}

/**
 * Readers of a point in time reach the engine through engine/snapshot-tree.ts
 * alone (docs/ARCHITECTURE.md): the CLI's readers, with what else of the
 * engine each may import, and every front end in a directory of its own.
 */
const READERS: Record<string, readonly string[]> = {
  'cli/commands/cat.ts': [],
  'cli/commands/ls.ts': [],
  'cli/commands/toc.ts': [],
  'cli/commands/blame.ts': [],
  // A writable mount's changes become a snapshot through the engine's one way to make one from a change set.
  'cli/commands/mount.ts': ['engine/commit.ts'],
  'mount/overlay.ts': ['engine/commit.ts'],
  'cli/commands/items.ts': [],
  'cli/commands/restore.ts': ['engine/restore.ts'],
  // The web app's restore is the CLI's.
  'ui/restore-job.ts': ['engine/restore.ts'],
};

export function pastTheTree(files: readonly string[], imports: (f: string) => string[], layers = LAYERS): string[] {
  const out: string[] = [];
  const frontEnds = layers[layers.length - 1]!.filter((d) => d !== 'cli' && d !== 'server');
  for (const f of files) {
    const from = path.relative(SRC, f);
    const allowed = READERS[from] ?? (frontEnds.includes(part(f)) ? [] : undefined);
    if (!allowed) continue;
    for (const t of imports(f)) {
      const to = path.relative(SRC, t);
      if (part(t) === 'engine' && to !== 'engine/snapshot-tree.ts' && !allowed.includes(to)) out.push(`${from} -> ${to}`);
    }
  }
  return out;
}

/** Import cycles, each as the modules around it (one per strongly connected set). */
export function cycles(files: readonly string[], imports: (f: string) => string[]): string[][] {
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const on = new Set<string>();
  const out: string[][] = [];
  let n = 0;
  const visit = (v: string) => {
    index.set(v, n);
    low.set(v, n++);
    stack.push(v);
    on.add(v);
    for (const w of imports(v)) {
      if (!index.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (on.has(w)) low.set(v, Math.min(low.get(v)!, index.get(w)!));
    }
    if (low.get(v) === index.get(v)) {
      const set: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        on.delete(w);
        set.push(path.relative(SRC, w));
      } while (w !== v);
      if (set.length > 1 || imports(v).includes(v)) out.push(set.sort());
    }
  };
  for (const f of files) if (!index.has(f)) visit(f);
  return out;
}

describe('architecture', () => {
  const files = sources();
  const cache = new Map<string, string[]>();
  const imports = (f: string) => {
    let list = cache.get(f);
    if (!list) cache.set(f, (list = importsOf(f).filter((t) => t.startsWith(SRC))));
    return list;
  };

  it('every module imports only from its own layer or below (the server from storage and the catalog only)', () => {
    expect(wrongWay(files, imports)).toEqual([]);
  });

  it('no import cycles', () => {
    expect(cycles(files, imports)).toEqual([]);
  });

  it('cat, ls, toc and restore, and any new front end, read the engine through engine/snapshot-tree.ts', () => {
    expect(pastTheTree(files, imports)).toEqual([]);
  });

  it('the server answers through the catalog service, never the Catalog behind it (only the module that opens it names it)', () => {
    const bypasses = sources(path.join(SRC, 'server')).flatMap((f) => {
      const text = fs.readFileSync(f, 'utf8');
      const found = [...text.matchAll(/\.catalog\b(?!\.db'|\/)|\bCatalog\b(?!Service|Reader|Keeper|Options|Db)/g)].map((m) => m[0]);
      // catalog-routes.ts opens the catalog: one import and one construction.
      const allowed = path.basename(f) === 'catalog-routes.ts' ? 2 : 0;
      return found.filter((x) => x === 'Catalog').length > allowed || found.some((x) => x === '.catalog') ? [path.relative(SRC, f)] : [];
    });
    expect(bypasses).toEqual([]);
  });

  it('the checks catch what they are for: a wrong-way import and a cycle', () => {
    const a = path.join(SRC, 'catalog', 'a.ts');
    const b = path.join(SRC, 'catalog', 'b.ts');
    const fake: Record<string, string> = {
      [a]: "import { x } from '../engine/backup.js';\nimport type { Y } from './b.js';",
      [b]: "const m = () => import('./a.js');",
    };
    const fakeImports = (f: string) => importsOf(f, fake[f] ?? '');
    expect(wrongWay([a, b], fakeImports)).toEqual(['catalog/a.ts -> engine/backup.ts']);
    expect(cycles([a, b], fakeImports)).toEqual([['catalog/a.ts', 'catalog/b.ts']]);
    // A reader past the tree: the CLI's cat, and a mount in a front end of its own.
    const cat = path.join(SRC, 'cli', 'commands', 'cat.ts');
    const mount = path.join(SRC, 'mount', 'fuse.ts');
    const readers: Record<string, string> = {
      [cat]: "import { readRange } from '../../engine/read.js';\nimport { SnapshotTree } from '../../engine/snapshot-tree.js';",
      [mount]: "import { findSnapshot } from '../engine/snapshot.js';\nimport { SnapshotTree } from '../engine/snapshot-tree.js';",
    };
    const readerImports = (f: string) => importsOf(f, readers[f] ?? '');
    const withMount = [...LAYERS.slice(0, -1), [...LAYERS[LAYERS.length - 1]!, 'mount']];
    expect(pastTheTree([cat, mount], readerImports, withMount)).toEqual(['cli/commands/cat.ts -> engine/read.ts', 'mount/fuse.ts -> engine/snapshot.ts']);
  });
});
