import { Argument, type Command } from 'commander';
import { bashScript, zshScript } from '../completion.js';

export function register(program: Command): void {
  program
    .command('completion')
    .description('print a shell completion script (commands, options and their choices) for bash or zsh')
    .addArgument(new Argument('<shell>', 'bash or zsh').choices(['bash', 'zsh']))
    .action(async (shell: 'bash' | 'zsh') => {
      // Every command's options: the program with all of them, not just this one's module.
      const { buildProgram } = await import('../main.js');
      const full = await buildProgram();
      process.stdout.write(shell === 'bash' ? bashScript(full) : zshScript(full));
    });
}
