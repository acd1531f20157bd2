/**
 * Ctrl-C and SIGTERM: the first asks the running command to stop at a safe
 * point (it keeps what it stored and exits 130); a second one exits at once,
 * and so does the first once the command is over (nothing is left to stop
 * safely, so nothing may keep the process waiting).
 */
import { ExitCode } from '../errors.js';

let controller: AbortController | undefined;
let finished = false;

export function interruptSignal(): AbortSignal {
  if (!controller) {
    controller = new AbortController();
    const onSignal = () => {
      if (finished || controller!.signal.aborted) process.exit(ExitCode.interrupted);
      process.stderr.write('\ninterrupted: stopping safely (press Ctrl-C again to quit at once)\n');
      controller!.abort();
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
  }
  return controller.signal;
}

/** The command has returned: a signal from now on ends the process at once. */
export function commandFinished(): void {
  finished = true;
}
