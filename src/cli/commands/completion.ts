import { Argument, type Command } from 'commander';
import { bashScript, zshScript } from '../completion.js';

export function register(program: Command): void {
  program
    .command('completion')
    .description('print a shell completion script (commands, options and their choices) for bash or zsh')
    .addArgument(new Argument('<shell>', 'bash or zsh').choices(['bash', 'zsh']))
    .action((shell: 'bash' | 'zsh', _opts: unknown, command: Command) => {
      // The program this command is part of, built with every command (see buildProgram).
      const full = command.parent!;
      process.stdout.write(shell === 'bash' ? bashScript(full) : zshScript(full));
    });
}
