/** strata completion bash|zsh: scripts generated from the program, run here in bash. */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { cliEnv, strata, tempDir } from './helpers.js';

const env = cliEnv('', { STRATA_REPO: undefined });
const hasZsh = spawnSync('sh', ['-c', 'command -v zsh']).status === 0;

describe('completion', () => {
  let script: string;
  beforeAll(() => {
    const r = strata(['completion', 'bash'], env);
    expect(r.status, r.stderr).toBe(0);
    script = path.join(tempDir(), 'strata.bash');
    fs.writeFileSync(script, r.stdout);
  });

  /** What bash completes for a command line (the last word is the one being typed). */
  const complete = (line: string): string[] => {
    const words = line.split(' ');
    const program = `source ${script}; COMP_WORDS=(${words.map((w) => `'${w}'`).join(' ')}); COMP_CWORD=${words.length - 1}; _strata; printf '%s\\n' "\${COMPREPLY[@]}"`;
    const r = spawnSync('bash', ['-c', program], { encoding: 'utf8', cwd: tempDir() });
    expect(r.status, r.stderr).toBe(0);
    return r.stdout.split('\n').filter((x) => x !== '');
  };

  it('completes every command help lists, subcommands, options and their choices', () => {
    const listed = [...strata(['--help'], env).stdout.split('Commands:')[1]!.matchAll(/^ {2}([a-z-]+)/gm)].map((m) => m[1]!).filter((c) => c !== 'help');
    expect(listed).toContain('restore');
    expect(complete('strata ').sort()).toEqual(listed.sort());
    expect(complete('strata re')).toEqual(['restore', 'rebuild-catalog']);
    expect(complete('strata restore --ov')).toEqual(['--overwrite']);
    expect(complete('strata restore --overwrite ')).toEqual(['always', 'if-changed', 'never']);
    expect(complete('strata key ')).toEqual(['export', 'list', 'add', 'remove', 'passwd']);
    // The value of a global option is not taken for the command.
    expect(complete('strata --repo key key p')).toEqual(['passwd']);
    expect(complete('strata key remove --f')).toEqual(['--force']);
    expect(complete('strata forget --keep-t')).toEqual(['--keep-tag']);
    expect(complete('strata completion ')).toEqual(['bash', 'zsh']);
    // Every option restore --help shows is offered.
    const shown = [...strata(['restore', '--help'], env).stdout.matchAll(/^ {2}(?:-\w, )?(--[a-z0-9-]+)/gm)].map((m) => m[1]!);
    const offered = complete('strata restore --');
    for (const o of shown) expect(offered, o).toContain(o);
  });

  it('zsh: a #compdef script with the same commands and options', () => {
    const r = strata(['completion', 'zsh'], env);
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/^#compdef strata\n/);
    expect(r.stdout).toContain("'passwd:change the password of the key in use");
    expect(r.stdout).toMatch(/^ {4}--overwrite\) compadd -- always if-changed never; return ;;$/m);
    // zsh parses the script without running it (.ci/run installs zsh; elsewhere the check is skipped, said once).
    if (hasZsh) expect(spawnSync('zsh', ['-n'], { input: r.stdout }).status).toBe(0);
    else console.warn('zsh is not installed: the zsh completion script was not parsed (apt-get install zsh)');
    expect(strata(['completion', 'fish'], env).status).toBe(2);
  });
});
