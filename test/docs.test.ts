/**
 * The help, the man page and the README say the same things as the code: every
 * option of every command, every environment variable the code reads, each
 * command's exit codes, and the defaults they quote.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { DEFAULT_AVG } from '../src/chunker/fastcdc.js';
import { EXIT_MEANINGS } from '../src/errors.js';
import { cliEnv, ROOT, strata } from './helpers.js';

const README = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8');
const MAN = fs.readFileSync(path.join(ROOT, 'man', 'strata.1'), 'utf8');
const env = cliEnv('', { STRATA_REPO: undefined });
const help = (...words: string[]) => {
  const r = strata([...words, '--help'], env);
  expect(r.status, r.stderr).toBe(0);
  return r.stdout;
};
/** How groff source writes an option: every "-" escaped. */
const roff = (text: string) => text.replace(/-/g, '\\-');

const COMMANDS = [
  ['init'], ['backup'], ['snapshots'], ['ls'], ['cat'], ['restore'], ['mount'], ['toc'], ['blame'], ['key', 'export'], ['key', 'list'], ['key', 'add'], ['key', 'remove'], ['key', 'passwd'], ['diff'], ['find'], ['stats'], ['tag'], ['copy'], ['check'], ['forget'], ['prune'],
  ['rebuild-catalog'], ['unlock'], ['serve'], ['ui'], ['items'], ['item'], ['sql'], ['manifest'], ['token', 'add'], ['token', 'list'], ['token', 'revoke'], ['version'], ['completion'],
];

function envVarsInCode(): string[] {
  const found = new Set<string>();
  const walk = (dir: string) => {
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (p.endsWith('.ts')) for (const m of fs.readFileSync(p, 'utf8').matchAll(/process\.env\.([A-Z_]+)|'(STRATA_[A-Z_]+)'/g)) found.add((m[1] ?? m[2])!);
    }
  };
  walk(path.join(ROOT, 'src'));
  return [...found].sort();
}

describe('help, man page and README agree with the code', () => {
  it('every option of every command is in the man page and the README', () => {
    for (const words of COMMANDS) {
      const own = help(...words).split('Global Options:')[0]!;
      const options = [...own.matchAll(/^ {2}(?:-\w, )?(--[a-z0-9-]+)/gm)].map((m) => m[1]!);
      expect(options.length, words.join(' ')).toBeGreaterThan(0);
      for (const o of options) {
        expect(MAN.includes(roff(o)), `man: ${words.join(' ')} ${o}`).toBe(true);
        expect(README.includes(o), `README: ${words.join(' ')} ${o}`).toBe(true);
      }
    }
  });

  it('every environment variable the code reads is in --help, the man page and the README', () => {
    const vars = envVarsInCode();
    expect(vars).toEqual(expect.arrayContaining(['STRATA_DEBUG', 'STRATA_TOKEN', 'STRATA_CA_CERT', 'STRATA_CACHE_DIR']));
    const top = help();
    const manEnv = MAN.slice(MAN.indexOf('.SH ENVIRONMENT'), MAN.indexOf('.SH EXIT STATUS'));
    for (const v of vars) {
      expect(top, `--help: ${v}`).toContain(v);
      expect(help('ls'), `ls --help: ${v}`).toContain(v);
      expect(manEnv, `man ENVIRONMENT: ${v}`).toContain(v);
      expect(README, `README: ${v}`).toContain(v);
    }
  });

  it("a command's help lists the global options and only the exit codes it can end with", () => {
    const codes = (text: string) => [...text.split('Exit codes:')[1]!.split('Environment')[0]!.matchAll(/^ {2}(\d+)/gm)].map((m) => Number(m[1]));
    const ls = help('ls');
    expect(ls).toMatch(/Global Options:[\s\S]*--repo[\s\S]*--password-file[\s\S]*--json/);
    expect(codes(ls)).not.toContain(3);
    expect(codes(ls)).toContain(12);
    expect(codes(help('backup'))).toContain(3);
    expect(codes(help('forget'))).toContain(11);
    expect(codes(help('token', 'add'))).not.toContain(12);
    expect(codes(help())).toEqual([0, 1, 2, 3, 10, 11, 12, 130]);
    // The README's table and the man page's EXIT STATUS list the same codes.
    const table = [...README.split('## Exit codes')[1]!.split('\n## ')[0]!.matchAll(/^\| (\d+) \|/gm)].map((m) => Number(m[1]));
    expect(table).toEqual(codes(help()));
    const status = MAN.slice(MAN.indexOf('.SH EXIT STATUS'), MAN.indexOf('.SH', MAN.indexOf('.SH EXIT STATUS') + 1));
    expect([...status.matchAll(/^\.TP\n\.B (\d+)$/gm)].map((m) => Number(m[1]))).toEqual(codes(help()));
    // Help says what the error table's exit codes mean, in its words.
    for (const [code, meaning] of Object.entries(EXIT_MEANINGS)) expect(help()).toContain(`  ${code.padEnd(4)} ${meaning}`);
  });

  it('the man page and README quote the default block size the code uses', () => {
    const kib = DEFAULT_AVG / 1024;
    expect(MAN).toContain(`FastCDC, ${kib}\\~KiB average`);
    expect(MAN).toContain(`The default is ${kib}K.`);
    expect(README).toContain(`Default \`${kib}K\``);
    expect(MAN).not.toMatch(/64\\~KiB average/);
  });

  it('the man page synopsis names forget and prune --no-key and serve --*-timeout', () => {
    const synopsis = MAN.slice(MAN.indexOf('.SH SYNOPSIS'), MAN.indexOf('.SH DESCRIPTION'));
    const section = (cmd: string) => synopsis.slice(synopsis.indexOf(`.B strata ${cmd}`)).split('.br')[0]!;
    expect(section('forget')).toContain('\\-\\-no\\-key');
    expect(section('prune')).toContain('\\-\\-no\\-key');
    for (const o of ['headers', 'idle', 'drain']) expect(section('serve')).toContain(`\\-\\-${o}\\-timeout`);
  });
});
