/**
 * Real trees: thousands of small files in hundreds of directories, symlinks,
 * names that are not UTF-8, empty and sparse files. Every restore must exit
 * once it has written everything (locally and from a server), count exactly,
 * and give back the same bytes and names.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { BIN, initCliRepo, Rng, strata, tempDir } from './helpers.js';
import { client, serve, token } from './server-helpers.js';

/** Runs the CLI; a run that has not exited within `ms` is killed and reported as hung (code null). */
function runBounded(args: string[], env: NodeJS.ProcessEnv, ms = 30_000, onStart?: (p: ReturnType<typeof spawn>) => void) {
  return new Promise<{ code: number | null; stdout: string; stderr: string; hung: boolean }>((resolve) => {
    const p = spawn(process.execPath, [BIN, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let hung = false;
    p.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    p.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    const timer = setTimeout(() => {
      hung = true;
      p.kill('SIGKILL');
    }, ms);
    p.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr, hung });
    });
    onStart?.(p);
  });
}

const raw = (s: string) => Buffer.from(s, 'latin1');

/** What a tree holds, by byte name: type, mode, size, content digest or link target, mtime. */
function describeTree(root: string): Map<string, string> {
  const out = new Map<string, string>();
  const walk = (dir: Buffer, rel: string) => {
    for (const name of fs.readdirSync(dir, { encoding: 'buffer' })) {
      const p = Buffer.concat([dir, raw('/'), name]);
      const key = `${rel}/${name.toString('hex')}`;
      const st = fs.lstatSync(p);
      const mode = (st.mode & 0o7777).toString(8);
      if (st.isDirectory()) {
        out.set(key, `dir ${mode}`);
        walk(p, key);
      } else if (st.isSymbolicLink()) {
        out.set(key, `link ${fs.readlinkSync(p, { encoding: 'buffer' }).toString('hex')}`);
      } else {
        out.set(key, `file ${mode} ${st.size} ${Math.floor(st.mtimeMs)} ${fs.readFileSync(p).toString('base64')}`);
      }
    }
  };
  walk(raw(root), '');
  return out;
}

const WORDS = ['const', 'return', 'if', 'for', 'while', 'function', 'value', 'buffer', 'length', 'index', 'error', 'result', '=', '+', '{', '}', '(', ')', ';', 'let', 'await', 'async', 'import', 'export', 'from'];

/** Text that compresses like source code (so the first backup makes a dictionary, as on real trees). */
function sourceText(rng: Rng, size: number): Buffer {
  const parts: string[] = [];
  let n = 0;
  while (n < size) {
    const word = rng.int(4) === 0 ? `x${rng.int(1000)}` : rng.pick(WORDS);
    const sep = rng.int(8) === 0 ? '\n' : ' ';
    parts.push(word, sep);
    n += word.length + 1;
  }
  return Buffer.from(parts.join('')).subarray(0, size);
}

interface Tree {
  root: string;
  files: number;
  dirs: number;
  symlinks: number;
  bytes: number;
}

/** A source tree shaped like a project checkout: many small files, some larger, links, odd names. */
function makeTree(root: string, seed: number, dirs = 200, filesPerDir = 15): Tree {
  const rng = new Rng(seed);
  const t: Tree = { root, files: 0, dirs: 1, symlinks: 0, bytes: 0 };
  fs.mkdirSync(root, { recursive: true });
  const made: string[] = [root];
  for (let d = 0; d < dirs; d++) {
    const parent = rng.pick(made);
    const dir = path.join(parent, `d${d}${d % 17 === 0 ? ' with space' : ''}`);
    fs.mkdirSync(dir);
    made.push(dir);
    t.dirs++;
    for (let f = 0; f < filesPerDir; f++) {
      const size = f === 0 && d % 50 === 0 ? 300_000 + rng.int(100_000) : rng.int(f % 3 === 0 ? 12_000 : 3000);
      const data = f % 3 === 0 ? sourceText(rng, size) : rng.bytes(size);
      fs.writeFileSync(path.join(dir, `f${f}.${f % 2 ? 'c' : 'txt'}`), data);
      t.files++;
      t.bytes += data.length;
    }
    if (d % 40 === 0) {
      fs.symlinkSync(`f1.c`, path.join(dir, 'link'));
      t.symlinks++;
    }
  }
  // Names are bytes: a directory and a file whose names are not UTF-8, a link to one, a newline.
  const odd = Buffer.concat([raw(root), raw('/dir\xff')]);
  fs.mkdirSync(odd);
  fs.writeFileSync(Buffer.concat([odd, raw('/caf\xe9.txt')]), 'latin-1 name\n');
  fs.writeFileSync(Buffer.concat([odd, raw('/caf\xc3\xa9.txt')]), 'utf-8 name\n');
  fs.symlinkSync(raw('caf\xe9.txt'), Buffer.concat([odd, raw('/to\xfe')]));
  fs.writeFileSync(path.join(root, 'new\nline'), '');
  t.dirs++;
  t.files += 3;
  t.symlinks++;
  t.bytes += 'latin-1 name\n'.length + 'utf-8 name\n'.length;
  return t;
}

describe('restores of real trees', () => {
  let env: NodeJS.ProcessEnv;
  let tree: Tree;

  beforeAll(() => {
    ({ env } = initCliRepo());
    tree = makeTree(path.join(tempDir(), 'src'), 11);
    const r = strata(['backup', tree.root, '-q'], env);
    expect(r.status, r.stderr).toBe(0);
  });

  it('a whole tree of thousands of files exits once written, with exact counts and the same bytes and names', async () => {
    for (let round = 0; round < 3; round++) {
      const target = tempDir();
      const r = await runBounded(['restore', tree.root, '--target', target, '--json'], env);
      expect(r.hung, 'restore never exited').toBe(false);
      expect(r.code, r.stderr).toBe(0);
      // The parents of the source (tempdir and above) are directories of the snapshot too.
      const parents = tree.root.split('/').length - 1;
      expect(JSON.parse(r.stdout)).toMatchObject({ files: tree.files, dirs: tree.dirs + parents - 1, symlinks: tree.symlinks, bytes: tree.bytes });
      expect(describeTree(path.join(target, tree.root))).toEqual(describeTree(tree.root));
    }
  }, 120_000);

  it('ls shows names that are not UTF-8 escaped', () => {
    const r = strata(['ls', '-R', tree.root], env);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toContain(`${tree.root}/dir\\xff/caf\\xe9.txt\n`);
    expect(r.stdout).toContain(`${tree.root}/dir\\xff/café.txt\n`);
    expect(r.stdout).toContain(`${tree.root}/new\\nline\n`);
  });

  it('several selected paths that share parents count each directory once', async () => {
    const target = tempDir();
    const a = path.join(tree.root, 'd0 with space');
    const r = await runBounded(['restore', a, path.join(tree.root, 'new\nline'), '--target', target, '--json'], env);
    expect(r.code, r.stderr).toBe(0);
    const j = JSON.parse(r.stdout);
    let dirs = 0;
    const count = (d: string) => {
      for (const e of fs.readdirSync(d, { withFileTypes: true })) {
        if (!e.isDirectory()) continue;
        dirs++;
        count(path.join(d, e.name));
      }
    };
    count(target);
    expect(j.dirs).toBe(dirs);
  });

  it('SIGTERM during a restore stops it, and the process exits with 130', async () => {
    const target = tempDir();
    let sent = false;
    const r = await runBounded(['restore', tree.root, '--target', target], env, 30_000, (p) => {
      // Once the first file is written, the restore is under way.
      const poll = setInterval(() => {
        if (sent || !fs.existsSync(path.join(target, tree.root))) return;
        sent = true;
        clearInterval(poll);
        p.kill('SIGTERM');
      }, 2);
      p.on('exit', () => clearInterval(poll));
    });
    expect(r.hung, 'interrupted restore never exited').toBe(false);
    if (sent) expect([0, 130]).toContain(r.code);
  });

  it('a file of mostly zeros is restored sparse, byte-exact', async () => {
    const { env: env2 } = initCliRepo();
    const src = tempDir();
    const img = path.join(src, 'disk.img');
    const fd = fs.openSync(img, 'w');
    fs.writeSync(fd, Buffer.from('boot'), 0, 4, 0);
    fs.writeSync(fd, new Rng(5).bytes(10_000), 0, 10_000, 20 * 1024 * 1024);
    fs.ftruncateSync(fd, 50 * 1024 * 1024);
    fs.closeSync(fd);
    expect(strata(['backup', src, '-q'], env2).status).toBe(0);
    const target = tempDir();
    const r = await runBounded(['restore', src, '--target', target, '--json'], env2);
    expect(r.code, r.stderr).toBe(0);
    const out = path.join(target, img);
    expect(fs.readFileSync(out).equals(fs.readFileSync(img))).toBe(true);
    // Written in full, 50 MiB would take 102,400 blocks of 512 bytes.
    expect(fs.statSync(out).blocks).toBeLessThan(4096);
    expect(JSON.parse(r.stdout).bytes).toBe(50 * 1024 * 1024);
  });

  it('a file written to while it is read is named in a warning, exit 3', async () => {
    const { env: env2 } = initCliRepo();
    const src = tempDir();
    const log = path.join(src, 'growing.log');
    fs.writeFileSync(log, new Rng(9).bytes(64 * 1024 * 1024));
    const writer = spawn('sh', ['-c', `while :; do echo more >> '${log}'; done`], { stdio: 'ignore' });
    try {
      const r = await runBounded(['backup', src], env2);
      expect(r.code, r.stderr).toBe(3);
      expect(r.stderr).toContain(`${log} changed while it was read`);
    } finally {
      writer.kill('SIGKILL');
    }
  });
});

describe('small files rewritten while a backup reads them', () => {
  it('each is stored as one whole state it had, or named in a warning (exit 3): never a torn copy', async () => {
    const { env } = initCliRepo();
    const src = tempDir();
    const states = ['A'.repeat(6000), 'B'.repeat(9000), ''];
    // What a file held at one instant or another: a state written, or a prefix of one in whole pages (within
    // one write the kernel extends a file a page at a time, and dash's printf writes 8 KiB at a time).
    const held = states.flatMap((s) => [s, ...Array.from({ length: Math.ceil(s.length / 4096) - 1 }, (_, i) => s.slice(0, (i + 1) * 4096))]);
    // Files around them, so the scan has a tree to go through; the rewritten ones both early and late in it.
    const tree = makeTree(path.join(src, 'tree'), 21, 20, 20);
    const busy = ['a0', 'a1', 'a2', 'z0', 'z1', 'z2'].map((n) => path.join(src, n));
    for (const f of busy) fs.writeFileSync(f, states[0]!);
    const writers = busy.map((f) => spawn('sh', ['-c', `while :; do printf '${states[0]}' > '${f}'; printf '${states[1]}' > '${f}'; done`], { stdio: 'ignore' }));
    try {
      for (let round = 0; round < 3; round++) {
        const r = await runBounded(['backup', src, '--json'], env);
        expect([0, 3], r.stderr).toContain(r.code);
        const warned = new Set(busy.filter((f) => r.stderr.includes(`${f} changed while it was read`)));
        const snapshot = JSON.parse(r.stdout).snapshot as string;
        for (const f of busy) {
          if (warned.has(f)) continue;
          const c = strata(['cat', f, '--at', snapshot], env);
          expect(c.status, c.stderr).toBe(0);
          expect(held, `${f} in round ${round}: ${c.stdout.length} bytes`).toContain(c.stdout);
        }
      }
    } finally {
      for (const w of writers) w.kill('SIGKILL');
    }
    expect(tree.files).toBeGreaterThan(0);
  });
});

describe('restores of real trees from a server', () => {
  it('a tree of thousands of files restored through strata serve exits, counts exactly and is byte-exact', async () => {
    const dir = path.join(tempDir(), 'served');
    const srv = await serve(dir);
    const env = client(srv.url, token(dir, 'admin', 'admin'));
    expect(strata(['init', '--scrypt-n', '1024'], env).status).toBe(0);
    const tree = makeTree(path.join(tempDir(), 'src'), 12, 120, 12);
    const b = strata(['backup', tree.root, '-q'], env);
    expect(b.status, b.stderr).toBe(0);
    const target = tempDir();
    const r = await runBounded(['restore', tree.root, '--target', target, '--json'], env);
    expect(r.hung, 'restore never exited').toBe(false);
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ files: tree.files, symlinks: tree.symlinks, bytes: tree.bytes });
    expect(describeTree(path.join(target, tree.root))).toEqual(describeTree(tree.root));
  });
});
