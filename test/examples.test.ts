/**
 * Every `strata` command line in the README's code blocks and the man page's
 * EXAMPLES runs, in order, against local repositories (and a `strata serve`
 * on loopback for the README's server session), so the examples cannot drift
 * from the code. Paths are moved into a sandbox; a snapshot id the text quotes
 * becomes the id of the snapshot the same command made here.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, describe, expect, it } from 'vitest';
import { BIN, ROOT, Rng, tempDir } from './helpers.js';

/** One line of an example: a command, or a change of environment or directory. */
interface Line {
  text: string;
  /** What the text shows the command printing (console blocks). */
  shown: string[];
  /** A crontab entry: the command follows five time fields. */
  cron?: boolean;
}

/** The command lines of the README's sh, console and crontab blocks, in order. */
function readmeLines(): Line[] {
  const readme = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8');
  const out: Line[] = [];
  for (const [, lang, body] of readme.matchAll(/```(\w*)\n([\s\S]*?)```/g)) {
    if (lang === 'console') {
      for (const raw of body!.split('\n')) {
        if (raw.startsWith('$ ')) out.push({ text: raw.slice(2), shown: [] });
        else if (out.length > 0) out[out.length - 1]!.shown.push(raw);
      }
    } else if (lang === 'sh') {
      for (const raw of body!.split('\n')) if (raw.trim() !== '') out.push({ text: raw, shown: [] });
    } else if (lang === 'crontab') {
      for (const raw of body!.split('\n')) if (raw.trim() !== '') out.push({ text: raw, shown: [], cron: /^\S+\s+\S+\s+\S+\s+\S+\s+\S+\s/.test(raw) && !/^\w+=/.test(raw) });
    }
  }
  return out;
}

/** The command lines of the man page's EXAMPLES, with roff escapes undone and continuations joined. */
function manLines(): Line[] {
  const man = fs.readFileSync(path.join(ROOT, 'man', 'strata.1'), 'utf8');
  const examples = man.slice(man.indexOf('.SH EXAMPLES'), man.indexOf('.SH SEE ALSO'));
  const out: Line[] = [];
  for (const [, body] of examples.matchAll(/^\.nf\n([\s\S]*?)^\.fi$/gm)) {
    const text = body!.replace(/\\-/g, '-').replace(/\\e\n\s*/g, ' ');
    for (const raw of text.split('\n')) if (raw.trim() !== '') out.push({ text: raw, shown: [], cron: /^[\d*]+\s+[\d*]+\s+\S+\s+\S+\s+\S+\s/.test(raw) });
  }
  return out;
}

const servers: ChildProcess[] = [];
afterAll(() => {
  for (const s of servers) if (s.exitCode === null) s.kill('SIGKILL');
});

/** Runs example lines one after another in a sandbox, as a reader would in a shell. */
class Session {
  readonly dir = tempDir('strata-examples-');
  private cwd: string;
  private readonly env: NodeJS.ProcessEnv;
  /** README paths and their places in the sandbox, longest first. */
  private readonly paths: [string, string][];
  /** Snapshot ids the text shows (8 hex digits) and the ids the same commands made here. */
  private readonly ids = new Map<string, string>();
  private readonly tokens = new Map<string, string>();
  private url?: string;
  ran = 0;

  constructor() {
    const d = this.dir;
    const home = path.join(d, 'home');
    const bin = path.join(d, 'bin');
    fs.mkdirSync(bin);
    fs.writeFileSync(path.join(bin, 'strata'), `#!/bin/sh\nexec '${process.execPath}' '${BIN}' "$@"\n`, { mode: 0o755 });
    this.paths = (
      [
        ['/srv/backup/strata', path.join(d, 'repo')],
        ['/srv/offsite', path.join(d, 'offsite')],
        ['/srv/strata/laptop', path.join(d, 'server')],
        ['/srv/big.img', path.join(d, 'big.img')],
        ['/tmp/demo-repo', path.join(d, 'demo-repo')],
        ['/tmp/demo', path.join(d, 'demo')],
        ['/tmp/restored', path.join(d, 'restored')],
        ['/tmp/restore', path.join(d, 'restore')],
        ['/root/.config/strata/key', path.join(d, 'key')],
        ['/opt/strata/bin/strata.js', path.join(bin, 'strata')],
        ['/home', home],
        ['/etc', path.join(d, 'etc')],
      ] as [string, string][]
    ).sort((a, b) => b[0].length - a[0].length);
    const rng = new Rng(22);
    const text = (n: number) => {
      const words = ['alpha', 'beta', 'gamma', 'delta', 'omicron', 'nu', 'tau', 'theta'];
      let s = '';
      while (s.length < n) s += rng.pick(words) + (rng.int(12) === 0 ? '\n' : ' ');
      return s.slice(0, n);
    };
    for (const [p, size] of [['Documents/report.txt', 50_000], ['Documents/notes/todo.txt', 3_000], ['Mail/inbox', 1_200_000]] as const) {
      fs.mkdirSync(path.dirname(path.join(home, p)), { recursive: true });
      fs.writeFileSync(path.join(home, p), text(size));
    }
    // Datasets the item readers open: a mailbox with the message the examples ask for, a
    // document that is a zip (by zip), a SQLite database.
    fs.mkdirSync(path.join(home, 'mail'));
    const messages = Array.from({ length: 600 }, (_, i) => `From a@example.org Sat Feb 28 12:00:00 2026\nFrom: a@example.org\nSubject: note ${i}\nMessage-ID: <${i === 300 ? 'id' : `m${i}`}@example.org>\n\n${text(400)}\n\n`);
    fs.writeFileSync(path.join(home, 'mail/inbox.mbox'), messages.join(''));
    const doc = path.join(d, 'doc');
    fs.mkdirSync(path.join(doc, 'word'), { recursive: true });
    fs.writeFileSync(path.join(doc, '[Content_Types].xml'), '<Types/>');
    fs.writeFileSync(path.join(doc, 'word/document.xml'), `<document>${text(5000)}</document>`);
    spawnSync('zip', ['-qr', path.join(home, 'Documents/report.docx'), '[Content_Types].xml', 'word'], { cwd: doc });
    const db = new Database(path.join(home, 'Documents/budget.sqlite'));
    db.exec('CREATE TABLE items (id INTEGER PRIMARY KEY, what TEXT, amount REAL)');
    const add = db.prepare('INSERT INTO items VALUES (?, ?, ?)');
    for (let i = 1; i <= 100; i++) add.run(i, `item ${i}`, i * 1.5);
    db.close();
    fs.mkdirSync(path.join(d, 'demo'));
    fs.writeFileSync(path.join(d, 'demo', 'notes.txt'), text(600_039));
    fs.writeFileSync(path.join(d, 'big.img'), rng.bytes(200_000));
    fs.mkdirSync(path.join(d, 'etc'));
    fs.writeFileSync(path.join(d, 'etc', 'hosts'), '127.0.0.1 localhost\n');
    this.cwd = d;
    const { STRATA_REPO: _r, STRATA_KEY_FILE: _k, STRATA_PASSWORD_FILE: _f, STRATA_TOKEN: _t, ...inherited } = process.env;
    this.env = { ...inherited, HOME: home, PATH: `${bin}:${process.env.PATH}`, STRATA_PASSWORD: 'pw', STRATA_CACHE_DIR: path.join(d, 'cache'), NO_COLOR: '1' };
  }

  private local(text: string): string {
    let t = text;
    for (const [from, to] of this.paths) t = t.replace(new RegExp(`${from.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}(?=[/\\s]|$)`, 'g'), to);
    if (this.url) t = t.replace(/https:\/\/backup\.example:8733/g, this.url);
    return t;
  }

  private sh(command: string) {
    const r = spawnSync('sh', ['-c', command], { cwd: this.cwd, env: this.env, encoding: 'utf8', timeout: 120_000 });
    return { status: r.status, stdout: r.stdout, stderr: r.stderr };
  }

  private newestId(): string {
    const r = this.sh('strata snapshots --json');
    const list = JSON.parse(r.stdout) as { id: string }[];
    return list[list.length - 1]!.id;
  }

  /** The id made here for an id (or prefix) the text shows. */
  private known(quoted: string): string | undefined {
    return [...this.ids].find(([shown]) => shown.startsWith(quoted) || quoted.startsWith(shown))?.[1];
  }

  /**
   * Quoted snapshot ids: the ones the same commands made here. An id after
   * --at that no command here made (the text's session made it) becomes the
   * newest snapshot.
   */
  private ids_(command: string): string {
    return command
      .replace(/--at ([0-9a-f]{4,64})(?=\s|$)/g, (whole, quoted: string) => (/^\d{8}$/.test(quoted) ? whole : `--at ${this.known(quoted) ?? this.newestId()}`))
      .replace(/(?<=\s)([0-9a-f]{4,64})(?=\s|$)/g, (quoted: string) => this.known(quoted) ?? quoted);
  }

  async run(line: Line): Promise<void> {
    let text = line.text.replace(/\s+#\s.*$/, '').trim();
    if (text.startsWith('#')) {
      // "# insert "NEW " at offset 200000": the edit the worked example makes between backups.
      const edit = /insert "(.+)" at offset (\d+)/.exec(text);
      if (edit) {
        const file = path.join(this.cwd, 'notes.txt');
        const data = fs.readFileSync(file);
        const at = Number(edit[2]);
        fs.writeFileSync(file, Buffer.concat([data.subarray(0, at), Buffer.from(edit[1]!), data.subarray(at)]));
      }
      return;
    }
    if (line.cron) text = text.replace(/^(\S+\s+){5}/, '');
    if (/^\w+=\S+$/.test(text) || text.startsWith('export ')) {
      for (const [, name, value] of text.matchAll(/(\w+)=(\S+)/g)) {
        if (name === 'STRATA_TOKEN') this.env[name] = this.tokens.get(/admin/.test(line.text) ? 'ops' : 'laptop') ?? value!;
        else this.env[name!] = this.local(value!);
      }
      return;
    }
    if (text.startsWith('cd ')) {
      this.cwd = this.local(text.slice(3).trim());
      return;
    }
    if (!/(^|\/)strata(\.js)? /.test(text)) return;
    let command = this.local(text);
    if (/^strata serve /.test(command)) return this.serve();
    if (/^strata ui\b/.test(command)) return this.ui(command);
    // A commit of a mountpoint needs the writable mount the text starts in the background: test/mount-writable.test.ts runs it.
    if (/^strata commit \//.test(command)) return;
    // Key derivation tuned for a test run; everything else is as written.
    if (/^strata init\b/.test(command) && !command.includes('--scrypt-n')) command = command.replace('strata init', 'strata init --scrypt-n 1024');
    command = this.ids_(command);
    const r = this.sh(command);
    this.ran++;
    expect(r.status, `${line.text}\n  ran as: ${command}\n${r.stderr}`).toBe(0);
    const token = /^strata token add (\S+)/.exec(command);
    if (token) this.tokens.set(token[1]!, r.stdout.trim());
    // The snapshot a backup shows saving is the one it saved here.
    const shown = line.shown.map((l) => /^snapshot ([0-9a-f]{8}) saved/.exec(l)?.[1]).find((x) => x);
    const made = /^snapshot ([0-9a-f]{8}) saved \(([0-9a-f]{64})\)/m.exec(r.stdout);
    if (shown && made) this.ids.set(shown, made[2]!);
    // A repository made by an example starts with one snapshot from before the dates the examples ask for.
    if (/^strata init\b/.test(command)) {
      const seed = this.sh('strata backup ~/Documents ~/mail ~/Mail --time 2026-02-28T12:00:00Z --tag daily,release --quiet');
      expect(seed.status, seed.stderr).toBe(0);
    }
  }

  /** `strata ui` as written, until it prints its link; then stopped as Ctrl-C would. */
  private async ui(command: string): Promise<void> {
    const proc = spawn('sh', ['-c', `exec ${command}`], { cwd: this.cwd, env: this.env, stdio: ['ignore', 'pipe', 'inherit'] });
    servers.push(proc);
    const exited = new Promise<number | null>((r) => proc.on('exit', (code) => r(code)));
    await new Promise<void>((resolve, reject) => {
      let out = '';
      proc.stdout!.on('data', (c: Buffer) => {
        out += c.toString();
        if (/strata ui: open http:\/\/127\.0\.0\.1:\d+\/\?token=\S+\n/.test(out)) resolve();
      });
      void exited.then((code) => reject(new Error(`${command} exited with ${code}`)));
    });
    proc.kill('SIGINT');
    expect(await exited).toBe(0);
    this.ran++;
  }

  /** `strata serve` on loopback instead of the example's address and certificate; its URL replaces the example's. */
  private async serve(): Promise<void> {
    const proc = spawn(process.execPath, [BIN, 'serve', '--listen', '127.0.0.1:0', '--quiet'], { env: { ...this.env, STRATA_PASSWORD: undefined }, stdio: ['ignore', 'pipe', 'inherit'] });
    servers.push(proc);
    this.url = await new Promise<string>((resolve, reject) => {
      let out = '';
      proc.stdout.on('data', (c: Buffer) => {
        out += c.toString();
        const m = /listening on (\S+)\n/.exec(out);
        if (m) resolve(m[1]!);
      });
      proc.on('exit', (code) => reject(new Error(`serve exited with ${code}`)));
    });
  }
}

/** A turn of the event loop between commands: a test worker blocked for a minute in a row misses its runner's messages. */
const turn = () => new Promise<void>((resolve) => setImmediate(resolve));

describe('the examples in the documentation run', () => {
  it("every strata command line in the README's code blocks", async () => {
    const lines = readmeLines();
    expect(lines.length).toBeGreaterThan(40);
    const s = new Session();
    for (const line of lines) {
      await s.run(line);
      await turn();
    }
    expect(s.ran).toBeGreaterThan(40);
  }, 300_000);

  it("every strata command line in the man page's EXAMPLES", async () => {
    const lines = manLines();
    const s = new Session();
    for (const line of lines) {
      await s.run(line);
      await turn();
    }
    expect(s.ran).toBe(lines.filter((l) => /strata /.test(l.text)).length);
  }, 300_000);
});
